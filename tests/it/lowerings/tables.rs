//! `lower-activations-to-table`: Tanh and Sigmoid of dequantized integers become an int8
//! index and a 256-entry table.

use intone::ir::Array;

use super::*;
use crate::build::*;

const SPEC: &str = "lower-activations-to-table";

fn x() -> Array {
    data(&[6, 8], 0, 2.0)
}

#[test]
fn tanh_and_sigmoid_become_tables() {
    // BERT's pooler (tanh of a dense layer), and a sigmoid gate beside it.
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[8, 4], 1, 1.0))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Tanh", &["h"], &["t"])
        .node("Sigmoid", &["h"], &["s"])
        .output("t", F32, &[D::S("n"), D::N(4)])
        .output("s", F32, &[D::S("n"), D::N(4)])
        .model();
    let case = lower(model, LINEAR, SPEC, &calibrated(&[("x", x())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (2, 2, 0));
    assert_eq!(case.after_count("Tanh"), 0);
    assert_eq!(case.after_count("Sigmoid"), 0);
    assert_eq!(case.after_count("Gather"), 2, "one table each");
    case.assert_close(&[x()], 0.03);
}

#[test]
fn tanh_of_a_float_input_stays_float() {
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[8, 4], 1, 1.0))
        .node("Tanh", &["x"], &["t"])
        .node("MatMul", &["t", "w"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let case = lower(model, LINEAR, SPEC, &calibrated(&[("x", x())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 0, 1));
    assert!(
        case.remarked("input is not dequantized from integers"),
        "{:?}",
        case.remarks()
    );
    assert_eq!(case.after_count("Tanh"), 1);
}
