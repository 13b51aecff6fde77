//! `lower-gelu-to-shiftgelu` and `lower-gelu-to-ibert-erf`: GELU of dequantized integers becomes
//! a requantization to int8 indices and a 256-entry table.

use intone::ir::Array;

use super::*;
use crate::build::*;

/// `Gelu(x·W + b)` (opset 20), with the GELU attributes given.
fn fc_gelu(attrs: Vec<intone::schema::AttributeProto>) -> intone::ir::Model {
    ModelBuilder::new(20)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[8, 8], 1, 0.5))
        .init("b", data(&[8], 2, 0.5))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Add", &["h", "b"], &["hb"])
        .node_with("Gelu", &["hb"], &["y"], attrs)
        .output("y", F32, &[D::S("n"), D::N(8)])
        .model()
}

fn x() -> Array {
    data(&[6, 8], 0, 2.0)
}

#[test]
fn shiftgelu_lowers_gelu_to_a_table() {
    let case = lower(
        fc_gelu(vec![]),
        LINEAR,
        "lower-gelu-to-shiftgelu",
        &calibrated(&[("x", x())]),
    );
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(case.after_count("Gelu"), 0);
    let text = model_to_text(&case.after).unwrap();
    assert!(text.contains("Gelu_2/gelu_table = i32[256]"), "{text}");
    assert!(
        text.contains("Gelu_2/gelu = Gather(Gelu_2/gelu_table, Gelu_2/index)"),
        "{text}"
    );
    case.assert_close(&[x()], 0.05);
}

#[test]
fn shiftgelu_leaves_a_gelu_of_a_float_input() {
    let model = ModelBuilder::new(20)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[8, 4], 1, 0.5))
        .node("Gelu", &["x"], &["g"])
        .node("MatMul", &["g", "w"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let case = lower(
        model,
        LINEAR,
        "lower-gelu-to-shiftgelu",
        &calibrated(&[("x", x())]),
    );
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 0, 1));
    assert!(
        case.remarked("input is not dequantized from integers with a calibration plan"),
        "{:?}",
        case.remarks()
    );
    assert_eq!(case.after_count("Gelu"), 1);
}

#[test]
fn ibert_erf_lowers_the_tanh_approximation_to_a_table() {
    let case = lower(
        fc_gelu(vec![attr::string("approximate", "tanh")]),
        LINEAR,
        "lower-gelu-to-ibert-erf",
        &calibrated(&[("x", x())]),
    );
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(case.after_count("Gelu"), 0);
    assert_eq!(case.after_count("Gather"), 1);
    case.assert_close(&[x()], 0.03);
}

#[test]
fn ibert_erf_leaves_a_gelu_behind_a_float_op() {
    // Sin has no integer form: its output is float, not dequantized integers.
    let model = ModelBuilder::new(20)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[8, 8], 1, 0.5))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Sin", &["h"], &["s"])
        .node("Gelu", &["s"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(8)])
        .model();
    let case = lower(
        model,
        LINEAR,
        "lower-gelu-to-ibert-erf",
        &calibrated(&[("x", x())]),
    );
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 0, 1));
    assert!(
        case.remarked("input is not dequantized from integers"),
        "{:?}",
        case.remarks()
    );
    assert_eq!(case.after_count("Gelu"), 1);
}

#[test]
fn exact_gelu_tables_hold_the_function_itself_and_beat_shiftgelu() {
    // erf GELU, its tanh form: the table holds round(f(i·S)·128/S), no kernel approximation.
    for attrs in [vec![], vec![attr::string("approximate", "tanh")]] {
        let options = calibrated(&[("x", x())]);
        let case = lower(
            fc_gelu(attrs.clone()),
            LINEAR,
            "lower-gelu-to-table",
            &options,
        );
        if attrs.is_empty() {
            insta::assert_snapshot!(case.snapshot());
        }
        assert_eq!(case.counts(), (1, 1, 0));
        assert_eq!(case.after_count("Gelu"), 0);
        assert_eq!(case.after_count("Gather"), 1);
        let exact = case.assert_close(&[x()], 0.05);
        let shift = lower(fc_gelu(attrs), LINEAR, "lower-gelu-to-shiftgelu", &options)
            .assert_close(&[x()], 0.05);
        assert!(exact <= shift, "exact table {exact} vs ShiftGELU {shift}");
    }
}

#[test]
fn exact_gelu_table_entries_are_the_rounded_function() {
    use intone::quant::kernels::{GeluKernel, gelu, gelu_table};
    let s = 0.05;
    let (table, scale) = gelu_table(GeluKernel::Exact(gelu), s);
    assert_eq!(scale, s / 128.0);
    assert_eq!(table.len(), 256);
    for (i, &t) in table.iter().enumerate() {
        let want = gelu((i as f64 - 128.0) * s) / scale;
        assert!((t as f64 - want).abs() <= 0.5, "entry {i}: {t} vs {want}");
    }
    // The minimum, −0.17, at x ≈ −0.75: entry 128 − 15.
    assert_eq!(table[113], (gelu(-0.75) / scale).round() as i64);
}
