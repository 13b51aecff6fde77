//! `legalize(target=integer|integer-opset28)`: intone's internal requantizations become standard
//! ONNX (Div-based shifts, or signed BitShift at opset 28), and the range proof runs.

use intone::ir::{Array, Model};
use intone::pass::{Manager, Pipeline};
use intone::passes::PASSES;

use super::*;
use crate::build::*;

/// Lowered and folded: what legalize reads.
const LOWERED: &str = "calibrate,quantize,lower-linear-to-integer,fold-dyadic-requant";

fn x() -> Array {
    data(&[6, 8], 0, 2.0)
}

/// `x + x·W`: the residual sum aligns the accumulator with one requantization.
fn residual() -> Model {
    let w: Vec<f32> = data(&[8, 8], 1, 0.1)
        .to_f64_vec()
        .iter()
        .enumerate()
        .map(|(i, v)| *v as f32 + if i / 8 == i % 8 { 0.5 } else { 0.0 })
        .collect();
    ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", Array::from_vec(&[8, 8], w).unwrap())
        .node("MatMul", &["x", "w"], &["h"])
        .node("Add", &["h", "x"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(8)])
        .model()
}

/// One MatMul: nothing to requantize between it and the output.
fn single_matmul() -> Model {
    ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[8, 4], 1, 0.5))
        .node("MatMul", &["x", "w"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model()
}

#[test]
fn integer_target_expands_requantizations_into_div_recipes() {
    let case = lower(
        residual(),
        LOWERED,
        "legalize(target=integer)",
        &calibrated(&[("x", x())]),
    );
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(count(&case.after, "intone.*"), 0);
    assert_eq!(case.after_count("BitShift"), 0);
    assert!(case.after_count("Div") >= 1);
    assert!(case.remarked("integer ops checked: no overflow possible"));
    case.assert_close(&[x()], 0.01);
}

#[test]
fn integer_target_with_nothing_to_expand_only_proves_ranges() {
    let case = lower(
        single_matmul(),
        LOWERED,
        "legalize(target=integer)",
        &calibrated(&[("x", x())]),
    );
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (0, 0, 0));
    assert_eq!(model_to_text(&case.after).unwrap(), case.before);
    assert!(
        case.remarked("1 integer ops checked"),
        "{:?}",
        case.remarks()
    );
}

#[test]
fn opset28_target_expands_requantizations_into_bit_shifts() {
    let case = lower(
        residual(),
        LOWERED,
        "legalize(target=integer-opset28)",
        &calibrated(&[("x", x())]),
    );
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(count(&case.after, "intone.*"), 0);
    assert_eq!(case.after_count("BitShift"), 1);
    assert_eq!(case.after.opset(""), Some(28));
    case.assert_close(&[x()], 0.01);
}

#[test]
fn opset28_target_with_nothing_to_expand_still_moves_the_opset() {
    let case = lower(
        single_matmul(),
        LOWERED,
        "legalize(target=integer-opset28)",
        &calibrated(&[("x", x())]),
    );
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (0, 0, 0));
    assert_eq!(case.after_count("BitShift"), 0);
    assert_eq!(case.after.opset(""), Some(28));
}

#[test]
fn an_unknown_target_is_refused_before_anything_runs() {
    let pipeline = Pipeline::parse("legalize(target=tensorrt)", PASSES).unwrap();
    let err = Manager::new(&pipeline, PASSES).err().expect("an error");
    assert!(
        err.to_string().contains("unknown target 'tensorrt'"),
        "{err}"
    );
}

#[test]
fn a_model_below_opset_15_is_refused() {
    let mut model = ModelBuilder::new(13)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[8, 8], 1, 0.5))
        .init("w2", data(&[8, 4], 2, 0.5))
        .node("MatMul", &["x", "w"], &["h"])
        .node("MatMul", &["h", "w2"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let pipeline = Pipeline::parse(&format!("{LOWERED},legalize"), PASSES).unwrap();
    let manager = Manager::new(&pipeline, PASSES).unwrap();
    let err = manager
        .run(&mut model, &calibrated(&[("x", x())]))
        .expect_err("an error");
    assert!(err.to_string().contains("need 15 or more"), "{err}");
}

/// `r − 256·(r / 256)` cast to uint8, `r` a requantization of `q` clamped to `r_range`: the
/// low byte of a two-term activation.
fn low_byte(r_range: (i64, i64)) -> Model {
    let b = ModelBuilder::new(18).input("q", DataType::Int32, &[D::S("n"), D::N(2)]);
    let b = requant(
        b,
        "q",
        "r",
        requant_attrs(1, 0, r_range.0, r_range.1, DataType::Int32),
    );
    let mut model = b
        .init("base", Array::scalar(256i32))
        .node("Div", &["r", "base"], &["hi"])
        .node("Mul", &["hi", "base"], &["high"])
        .node("Sub", &["r", "high"], &["lo"])
        .node_with(
            "Cast",
            &["lo"],
            &["y"],
            vec![attr::int("to", DataType::Uint8 as i32 as i64)],
        )
        .output("y", DataType::Uint8, &[D::S("n"), D::N(2)])
        .model();
    prove(&mut model, "q", (-100_000, 100_000));
    prove(&mut model, "r", r_range);
    model
}

#[test]
fn the_remainder_of_a_non_negative_value_is_proven_within_its_divisor() {
    let case = apply(
        low_byte((0, 65535)),
        "legalize(target=integer)",
        &Default::default(),
    );
    assert!(case.remarked("integer ops checked: no overflow possible"));
}

#[test]
fn the_remainder_of_a_possibly_negative_value_is_not() {
    // Truncating Div is no floor below 0: the remainder could be negative.
    let pipeline = Pipeline::parse("legalize(target=integer)", PASSES).unwrap();
    let manager = Manager::new(&pipeline, PASSES).unwrap();
    let err = manager
        .run(&mut low_byte((-1, 65535)), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("would wrap in the cast"), "{err}");
}

#[test]
fn a_requantization_reading_another_keeps_the_inner_ones_proven_range() {
    // The inner clamp binds, so nothing merges them: legalize expands both, and the outer
    // one needs the range of the inner one's expansion.
    let case = apply(
        chain(-100, 100),
        "legalize(target=integer)",
        &Default::default(),
    );
    assert_eq!(case.counts(), (2, 2, 0));
    assert_eq!(count(&case.after, "intone.*"), 0);
}
