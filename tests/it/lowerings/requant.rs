//! `fold-dyadic-requant`: one requantization per edge. Biases fold into offsets, a table lookup
//! absorbs its reader's requantization, data movement and means move before dequantizations,
//! float islands close into one requantization, chains merge, and a requantization followed by
//! a dequantization becomes one dequantization.

use intone::ir::{Array, DataType, Model};

use super::*;
use crate::build::*;

const SPEC: &str = "fold-dyadic-requant";

fn x2() -> Array {
    data(&[6, 8], 0, 2.0)
}

fn x3() -> Array {
    data(&[3, 4, 8], 0, 2.0)
}

fn planned_x(dims: &[D]) -> ModelBuilder {
    ModelBuilder::new(20).input("x", F32, dims)
}

#[test]
fn a_bias_folds_into_the_requantization_offset() {
    // The Reshape moves 8-bit integers: the bias sum is requantized first.
    let model = planned_x(&[D::S("n"), D::N(8)])
        .init("w", data(&[8, 8], 1, 0.5))
        .init("b", data(&[8], 2, 0.5))
        .init("shape", vec_i64(&[0, 2, 4]))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Add", &["h", "b"], &["hb"])
        .node("Reshape", &["hb", "shape"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(2), D::N(4)])
        .model();
    let case = lower(model, LINEAR, SPEC, &calibrated(&[("x", x2())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert!(
        case.before.contains("intone.Requant(Add_1/bias)"),
        "{}",
        case.before
    );
    let text = model_to_text(&case.after).unwrap();
    assert!(text.contains("intone.Requant(MatMul_0/matmul)"), "{text}");
    assert!(!text.contains("Add_1/bias_i32"), "{text}");
    case.assert_close(&[x2()], 0.03);
}

#[test]
fn a_table_lookup_absorbs_the_requantization_after_it() {
    let model = planned_x(&[D::S("n"), D::N(8)])
        .init("w1", data(&[8, 8], 1, 0.5))
        .init("w2", data(&[8, 4], 3, 0.5))
        .node("MatMul", &["x", "w1"], &["h"])
        .node("Gelu", &["h"], &["g"])
        .node("MatMul", &["g", "w2"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let prep = format!("{LINEAR},lower-gelu-to-shiftgelu");
    let case = lower(model, &prep, SPEC, &calibrated(&[("x", x2())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert!(case.before.contains("intone.Requant(Gelu_1/gelu)"));
    let text = model_to_text(&case.after).unwrap();
    assert!(text.contains("Gelu_1/requant/table = u8[256]"), "{text}");
    assert_eq!(
        case.after_count("intone.Requant"),
        1,
        "only the table index"
    );
    case.assert_close(&[x2()], 0.05);
}

#[test]
fn a_mean_of_dequantized_integers_is_an_integer_sum() {
    let model = planned_x(&[D::S("n"), D::N(4), D::N(8)])
        .init("w", data(&[8, 8], 1, 0.3))
        .init("axes", vec_i64(&[1]))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Add", &["h", "x"], &["r"])
        .node("ReduceMean", &["r", "axes"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(1), D::N(8)])
        .model();
    let case = lower(model, LINEAR, SPEC, &calibrated(&[("x", x3())]));
    insta::assert_snapshot!(case.snapshot());
    // lower-linear-to-integer already sums in integers: nothing is left to move.
    assert_eq!(case.counts(), (0, 0, 0));
    assert_eq!(case.after_count("ReduceMean"), 0);
    assert_eq!(case.after_count("ReduceSum"), 1);
    case.assert_close(&[x3()], 0.03);
}

#[test]
fn a_mean_of_a_value_also_read_as_float_is_still_an_integer_sum() {
    // The residual sum is also read by a float op; the mean is lowered with the linear ops,
    // before any dequantization exists.
    let model = planned_x(&[D::S("n"), D::N(4), D::N(8)])
        .init("w", data(&[8, 8], 1, 0.3))
        .init("axes", vec_i64(&[1]))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Add", &["h", "x"], &["r"])
        .node("ReduceMean", &["r", "axes"], &["y"])
        .node("Sin", &["r"], &["z"])
        .output("y", F32, &[D::S("n"), D::N(1), D::N(8)])
        .output("z", F32, &[D::S("n"), D::N(4), D::N(8)])
        .model();
    let case = lower(model, LINEAR, SPEC, &calibrated(&[("x", x3())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (0, 0, 0));
    assert_eq!(case.after_count("ReduceMean"), 0);
    assert_eq!(case.after_count("ReduceSum"), 1);
    assert_eq!(case.after_count("Sin"), 1);
    case.assert_close(&[x3()], 0.03);
}

#[test]
fn data_movement_and_concat_move_before_the_dequantization() {
    // Slices and a Concat of a lowered GELU's output (which lower-linear-to-integer saw as
    // float): they end up moving the integers, with one dequantization after them.
    let model = planned_x(&[D::S("n"), D::N(8)])
        .init("w", data(&[8, 8], 1, 0.5))
        .init("zero", vec_i64(&[0]))
        .init("four", vec_i64(&[4]))
        .init("eight", vec_i64(&[8]))
        .init("axis", vec_i64(&[1]))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Gelu", &["h"], &["g"])
        .node("Slice", &["g", "zero", "four", "axis"], &["lo"])
        .node("Slice", &["g", "four", "eight", "axis"], &["hi"])
        .node_with("Concat", &["hi", "lo"], &["y"], vec![attr::int("axis", 1)])
        .output("y", F32, &[D::S("n"), D::N(8)])
        .model();
    let prep = format!("{LINEAR},lower-gelu-to-shiftgelu");
    let case = lower(model, &prep, SPEC, &calibrated(&[("x", x2())]));
    insta::assert_snapshot!(case.snapshot());
    // The Concat of two outputs of GELU (a table later) is lowered with the linear ops.
    assert_eq!(
        case.counts(),
        (4, 4, 0),
        "two slices moved, two quantizations of their dequantized values merged"
    );
    assert_eq!(case.after_count("DequantizeLinear"), 1);
    assert!(
        model_to_text(&case.after)
            .unwrap()
            .contains("y = DequantizeLinear(Concat_4/int"),
    );
    case.assert_close(&[x2()], 0.03);
}

#[test]
fn a_float_cast_between_integer_ops_closes_into_one_requantization() {
    let model = planned_x(&[D::S("n"), D::N(8)])
        .init("w1", data(&[8, 8], 1, 0.5))
        .init("w2", data(&[8, 4], 3, 0.5))
        .node("MatMul", &["x", "w1"], &["h"])
        .node_with(
            "Cast",
            &["h"],
            &["c"],
            vec![attr::int("to", DataType::Float as i32 as i64)],
        )
        .node("MatMul", &["c", "w2"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let case = lower(model, LINEAR, SPEC, &calibrated(&[("x", x2())]));
    insta::assert_snapshot!(case.snapshot());
    // The Cast dropped, then the dequantize → quantize island closed.
    assert_eq!(case.counts(), (2, 2, 0));
    assert_eq!(case.after_count("Cast"), 1, "only the input quantization");
    assert_eq!(case.after_count("DequantizeLinear"), 1, "only the output");
    assert_eq!(case.after_count("intone.Requant"), 1);
    case.assert_close(&[x2()], 0.05);
}

#[test]
fn a_float_op_between_integer_ops_keeps_its_island() {
    let model = planned_x(&[D::S("n"), D::N(8)])
        .init("w1", data(&[8, 8], 1, 0.5))
        .init("w2", data(&[8, 4], 3, 0.5))
        .node("MatMul", &["x", "w1"], &["h"])
        .node("Sin", &["h"], &["s"])
        .node("MatMul", &["s", "w2"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let case = lower(model, LINEAR, SPEC, &calibrated(&[("x", x2())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (0, 0, 0));
    assert_eq!(model_to_text(&case.after).unwrap(), case.before);
}

/// Every integer in [−1000, 1000), as a [n, 2] int32 input.
fn thousand() -> Array {
    Array::from_vec(&[1000, 2], (-1000..1000).collect::<Vec<i32>>()).unwrap()
}

/// A hand-built model legalized and run in tract on [`thousand`].
fn legalized(model: &Model) -> Vec<f64> {
    let (legal, _) = run(model.clone(), "legalize", &Default::default());
    Runner::new(&legal)
        .unwrap()
        .run(&[thousand()], None)
        .unwrap()[0]
        .1
        .to_f64_vec()
}

#[test]
fn a_chain_of_requantizations_merges_into_one() {
    // ·3/4 into int32 (never clamps on ±1000), then ·5/8 into int8.
    let case = apply(chain(-32767, 32767), SPEC, &Default::default());
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(case.after_count("intone.Requant"), 1);
    // One rounding fewer: within one unit of the chain, computed here with half-up shifts.
    let half_up = |x: i64, m: i64, c: u32| (x * m + (1 << (c - 1))) >> c;
    let merged = legalized(&case.after);
    for (q, y) in (-1000..1000).zip(&merged) {
        let chained = half_up(half_up(q, 3, 2), 5, 3).clamp(-127, 127);
        assert!(
            (chained as f64 - y).abs() <= 1.0,
            "q={q}: {y}, chain {chained}"
        );
    }
}

#[test]
fn a_chain_whose_inner_clamp_binds_stays() {
    // The inner requantization clamps to ±100 what reaches ±750.
    let case = apply(chain(-100, 100), SPEC, &Default::default());
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (0, 0, 1));
    assert!(
        case.remarked("the inner clamp can bind"),
        "{:?}",
        case.remarks()
    );
    assert_eq!(case.after_count("intone.Requant"), 2);
}

#[test]
fn a_requantization_before_a_dequantization_folds_into_its_scale() {
    let b = ModelBuilder::new(18)
        .input("q", DataType::Int32, &[D::S("n"), D::N(2)])
        .init("s", scalar_f32(0.25));
    let b = requant(
        b,
        "q",
        "r",
        requant_attrs(1, 1, -32767, 32767, DataType::Int32),
    );
    let mut model = b
        .node("DequantizeLinear", &["r", "s"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(2)])
        .model();
    prove(&mut model, "q", (-1000, 1000));
    prove(&mut model, "r", (-500, 500));
    let case = apply(model.clone(), SPEC, &Default::default());
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(case.after_count("intone.Requant"), 0);
    // The halving's rounding is gone: within half a unit of 0.25.
    let (before, after) = (legalized(&model), legalized(&case.after));
    let worst = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst <= 0.125 + 1e-6, "{worst}");
}
