//! `lower-layer-norm-to-int`: LayerNormalization of dequantized integers over the last axis
//! becomes I-LayerNorm in int32 (integer mean, variance and Newton square root).

use intone::ir::Array;

use super::*;
use crate::build::*;

const SPEC: &str = "lower-layer-norm-to-int";

fn x() -> Array {
    data(&[3, 4, 8], 0, 2.0)
}

/// `LayerNorm(x + x·W)` over `axis`: the residual stream of a transformer block.
fn residual_layer_norm(axis: i64) -> intone::ir::Model {
    ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(4), D::N(8)])
        .init("w", data(&[8, 8], 1, 0.3))
        .init("gamma", data(&[8], 2, 1.0))
        .init("beta", data(&[8], 3, 0.5))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Add", &["x", "h"], &["r"])
        .node_with(
            "LayerNormalization",
            &["r", "gamma", "beta"],
            &["y"],
            vec![attr::int("axis", axis)],
        )
        .output("y", F32, &[D::S("n"), D::N(4), D::N(8)])
        .model()
}

#[test]
fn layer_norm_over_the_last_axis_becomes_i_layernorm() {
    let case = lower(
        residual_layer_norm(-1),
        LINEAR,
        SPEC,
        &calibrated(&[("x", x())]),
    );
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(case.after_count("LayerNormalization"), 0);
    let text = model_to_text(&case.after).unwrap();
    assert!(text.contains("LayerNormalization_2/newton_root"), "{text}");
    assert!(text.contains("LayerNormalization_2/beta_i32"), "{text}");
    case.assert_close(&[x()], 0.03);
}

#[test]
fn layer_norm_over_another_axis_stays_float() {
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(4), D::N(8)])
        .init("w", data(&[8, 8], 1, 0.3))
        .init("gamma", data(&[4, 8], 2, 1.0))
        .init("beta", data(&[4, 8], 3, 0.5))
        .node("MatMul", &["x", "w"], &["h"])
        .node_with(
            "LayerNormalization",
            &["h", "gamma", "beta"],
            &["y"],
            vec![attr::int("axis", 1)],
        )
        .output("y", F32, &[D::S("n"), D::N(4), D::N(8)])
        .model();
    let case = lower(model, LINEAR, SPEC, &calibrated(&[("x", x())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 0, 1));
    assert!(
        case.remarked("normalises from axis 1, not the last"),
        "{:?}",
        case.remarks()
    );
    assert_eq!(case.after_count("LayerNormalization"), 1);
}
