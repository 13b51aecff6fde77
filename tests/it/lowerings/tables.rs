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

/// `h = x·w` read by each activation of `ops` (op type, attributes), one output each.
fn activations_of_a_matmul(ops: &[(&str, Vec<intone::schema::AttributeProto>)]) -> Model {
    let mut b = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[8, 4], 1, 1.0))
        .node("MatMul", &["x", "w"], &["h"]);
    let names: Vec<String> = ops.iter().map(|(op, _)| op.to_lowercase()).collect();
    for ((op, attrs), name) in ops.iter().zip(&names) {
        b = b.node_with(op, &["h"], &[name], attrs.clone()).output(
            name,
            F32,
            &[D::S("n"), D::N(4)],
        );
    }
    b.model()
}

#[test]
fn convnet_activations_become_one_table_each() {
    let model = activations_of_a_matmul(&[
        ("HardSwish", vec![]),
        (
            "HardSigmoid",
            vec![attr::float("alpha", 0.25), attr::float("beta", 0.4)],
        ),
        ("LeakyRelu", vec![attr::float("alpha", 0.1)]),
        ("Softplus", vec![]),
        ("Mish", vec![]),
    ]);
    let case = lower(model, LINEAR, SPEC, &calibrated(&[("x", x())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (5, 5, 0));
    for op in ["HardSwish", "HardSigmoid", "LeakyRelu", "Softplus", "Mish"] {
        assert_eq!(case.after_count(op), 0, "{op}");
    }
    assert_eq!(case.after_count("Gather"), 5, "one table each");
    // The int8 index (±s/2 on h, |f'| ≤ 1.1) after h's own 8-bit quantization.
    case.assert_close(&[x()], 0.02);
}

#[test]
fn silu_and_hard_sigmoid_gates_become_one_table_each() {
    // x · Sigmoid(x) (SiLU) and x · HardSigmoid(x): the product is in the table.
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[8, 4], 1, 1.0))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Sigmoid", &["h"], &["s"])
        .node("Mul", &["h", "s"], &["silu"])
        .node("HardSigmoid", &["h"], &["hs"])
        .node("Mul", &["hs", "h"], &["gated"])
        .output("silu", F32, &[D::S("n"), D::N(4)])
        .output("gated", F32, &[D::S("n"), D::N(4)])
        .model();
    let case = lower(model, LINEAR, SPEC, &calibrated(&[("x", x())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (2, 2, 0));
    assert_eq!(case.after_count("Sigmoid"), 0);
    assert_eq!(case.after_count("HardSigmoid"), 0);
    assert_eq!(case.after_count("Gather"), 2, "one table per gate");
    let text = model_to_text(&case.after).unwrap();
    assert!(text.contains("gated_sigmoid_table"), "{text}");
    assert!(text.contains("gated_hardsigmoid_table"), "{text}");
    assert!(
        !text.contains("= Mul(h"),
        "the float products are gone: {text}"
    );
    case.assert_close(&[x()], 0.02);
}

#[test]
fn a_product_with_the_sigmoid_of_another_value_is_not_a_gate() {
    // h · Sigmoid(g), g ≠ h: Sigmoid's own table; the product is the linear lowering's.
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[8, 4], 1, 1.0))
        .init("v", data(&[8, 4], 2, 1.0))
        .node("MatMul", &["x", "w"], &["h"])
        .node("MatMul", &["x", "v"], &["g"])
        .node("Sigmoid", &["g"], &["s"])
        .node("Mul", &["h", "s"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let case = lower(model, LINEAR, SPEC, &calibrated(&[("x", x())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(case.after_count("Sigmoid"), 0);
    assert_eq!(case.after_count("Gather"), 1);
    let text = model_to_text(&case.after).unwrap();
    assert!(text.contains("sigmoid_table"), "{text}");
    assert!(!text.contains("gated_"), "{text}");
    assert!(text.contains("Mul_3/product = Mul("), "{text}");
    case.assert_close(&[x()], 0.02);
}
