//! `lower-linear-to-integer`: one test per lowering family it dispatches, and the cases it
//! leaves in float with their remarks.

use intone::ir::{Array, DataType};

use super::*;
use crate::build::*;

const SPEC: &str = "lower-linear-to-integer";

fn x_input(features: i64) -> ModelBuilder {
    ModelBuilder::new(18).input("x", F32, &[D::S("n"), D::N(features)])
}

fn weight(rows: usize, cols: usize, seed: u64) -> Array {
    data(&[rows, cols], seed, 0.5)
}

/// `0.5·I + noise`: a residual branch that mostly grows the stream.
fn growing(n: usize, seed: u64) -> Array {
    let noise = data(&[n, n], seed, 0.1).to_f64_vec();
    let v: Vec<f32> = (0..n * n)
        .map(|i| noise[i] as f32 + if i / n == i % n { 0.5 } else { 0.0 })
        .collect();
    Array::from_vec(&[n, n], v).unwrap()
}

fn x_samples(features: usize) -> Array {
    data(&[6, features], 0, 2.0)
}

/// A 0/1 int64 mask [n, len]: the first `1 + row % len` positions are 1.
fn mask(rows: usize, len: usize) -> Array {
    let v: Vec<i64> = (0..rows * len)
        .map(|i| i64::from(i % len <= (i / len) % len))
        .collect();
    Array::from_vec(&[rows, len], v).unwrap()
}

#[test]
fn matmul_with_constant_weight_becomes_matmul_integer() {
    let model = x_input(8)
        .init("w", weight(8, 4, 1))
        .node("MatMul", &["x", "w"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let x = x_samples(8);
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x.clone())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(case.after_count("MatMul"), 0);
    assert_eq!(case.after_count("MatMulInteger"), 1);
    case.assert_close(&[x], 0.03);
}

#[test]
fn matmul_of_two_activations_quantizes_both_operands() {
    let model = ModelBuilder::new(18)
        .input("a", F32, &[D::S("n"), D::N(4), D::N(8)])
        .input("b", F32, &[D::S("n"), D::N(8), D::N(4)])
        .node("MatMul", &["a", "b"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4), D::N(4)])
        .model();
    let (a, b) = (data(&[3, 4, 8], 0, 2.0), data(&[3, 8, 4], 1, 1.0));
    let case = lower(
        model,
        PLANNED,
        SPEC,
        &calibrated(&[("a", a.clone()), ("b", b.clone())]),
    );
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(case.after_count("MatMulInteger"), 1);
    assert_eq!(case.after_count("MatMul"), 0);
    case.assert_close(&[a, b], 0.03);
}

#[test]
fn gemm_with_transposed_weight_and_bias_becomes_matmul_integer_plus_int32_bias() {
    let model = x_input(8)
        .init("w", weight(4, 8, 2))
        .init("c", data(&[4], 3, 0.5))
        .node_with(
            "Gemm",
            &["x", "w", "c"],
            &["y"],
            vec![attr::int("transB", 1), attr::float("alpha", 0.5)],
        )
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let x = x_samples(8);
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x.clone())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(case.after_count("Gemm"), 0);
    assert_eq!(case.after_count("MatMulInteger"), 1);
    assert_eq!(
        case.after_count("Add"),
        2,
        "input zero point shift and the bias"
    );
    case.assert_close(&[x], 0.03);
}

#[test]
fn gemm_with_negative_alpha_stays_float() {
    let model = x_input(8)
        .init("w", weight(8, 4, 2))
        .node_with(
            "Gemm",
            &["x", "w"],
            &["y"],
            vec![attr::float("alpha", -1.0)],
        )
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x_samples(8))]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 0, 1));
    assert!(
        case.remarked("alpha=-1 is not positive"),
        "{:?}",
        case.remarks()
    );
    assert_eq!(case.after_count("Gemm"), 1);
    assert_eq!(case.after_count("MatMulInteger"), 0);
}

#[test]
fn conv_with_bias_becomes_conv_integer_plus_int32_bias() {
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(2), D::N(5), D::N(5)])
        .init("w", data(&[3, 2, 3, 3], 1, 0.5))
        .init("b", data(&[3], 2, 0.5))
        .node_with(
            "Conv",
            &["x", "w", "b"],
            &["y"],
            vec![
                attr::ints("kernel_shape", &[3, 3]),
                attr::ints("pads", &[1, 1, 1, 1]),
            ],
        )
        .output("y", F32, &[D::S("n"), D::N(3), D::N(5), D::N(5)])
        .model();
    let x = data(&[3, 2, 5, 5], 0, 2.0);
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x.clone())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(case.after_count("Conv"), 0);
    assert_eq!(case.after_count("ConvInteger"), 1);
    case.assert_close(&[x], 0.03);
}

#[test]
fn relu_and_max_pool_run_on_the_integers() {
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(2), D::N(4), D::N(4)])
        .init("w", data(&[3, 2, 1, 1], 1, 0.5))
        .node_with(
            "Conv",
            &["x", "w"],
            &["c"],
            vec![attr::ints("kernel_shape", &[1, 1])],
        )
        .node("Relu", &["c"], &["r"])
        .node_with(
            "MaxPool",
            &["r"],
            &["y"],
            vec![
                attr::ints("kernel_shape", &[2, 2]),
                attr::ints("strides", &[2, 2]),
            ],
        )
        .output("y", F32, &[D::S("n"), D::N(3), D::N(2), D::N(2)])
        .model();
    let x = data(&[3, 2, 4, 4], 0, 2.0);
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x.clone())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (3, 3, 0));
    assert_eq!(case.after_count("Relu"), 0);
    assert_eq!(case.after_count("Max"), 1);
    assert_eq!(case.after_count("MaxPool"), 1);
    case.assert_close(&[x], 0.03);
}

#[test]
fn bias_add_after_matmul_is_an_int32_add() {
    let model = x_input(8)
        .init("w", weight(8, 4, 1))
        .init("b", data(&[4], 5, 0.5))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Add", &["h", "b"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let x = x_samples(8);
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x.clone())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (2, 2, 0));
    assert!(
        model_to_text(&case.after)
            .unwrap()
            .contains("= Add(MatMul_0/matmul, Add_1/bias_i32)"),
        "the bias is added to the int32 accumulator"
    );
    case.assert_close(&[x], 0.03);
}

#[test]
fn residual_add_aligns_both_operands_to_the_planned_scale() {
    let model = x_input(8)
        .init("w", growing(8, 1))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Add", &["h", "x"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(8)])
        .model();
    let x = x_samples(8);
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x.clone())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (2, 2, 0));
    assert_eq!(
        case.after_count("intone.Requant"),
        1,
        "the accumulator aligned"
    );
    assert!(
        model_to_text(&case.after)
            .unwrap()
            .contains("= Add(Add_1/align"),
        "the residual sum is an integer Add"
    );
    case.assert_close(&[x], 0.01);
}

#[test]
fn a_difference_of_two_activations_aligns_both_over_the_widest_clip() {
    // (x·W + 40) − x·W': two values near 40 whose difference is near 0, as a detector's box
    // width is of its two corners. At the difference's own clip the operands would saturate.
    let model = x_input(8)
        .init("w", weight(8, 4, 1))
        .init("v", weight(8, 4, 2))
        .init("c", Array::scalar(40.0f32))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Add", &["h", "c"], &["a"])
        .node("MatMul", &["x", "v"], &["g"])
        .node("Add", &["g", "c"], &["b"])
        .node("Sub", &["a", "b"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let x = x_samples(8);
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x.clone())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (5, 5, 0));
    assert_eq!(case.after_count("Sub"), 1);
    case.assert_close(&[x], 0.05);
}

#[test]
fn a_constant_minus_an_activation_is_a_negation_plus_an_int32_bias() {
    let model = x_input(8)
        .init("w", weight(8, 4, 1))
        .init("c", data(&[1, 4], 3, 10.0))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Sub", &["c", "h"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let x = x_samples(8);
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x.clone())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (2, 2, 0));
    assert_eq!(case.after_count("Neg"), 1);
    assert_eq!(case.after_count("Sub"), 0);
    case.assert_close(&[x], 0.01);
}

const PLANNED_THEN_LOWERED: &str = "calibrate,quantize,lower-linear-to-integer";

#[test]
fn residual_sums_are_planned_at_a_power_of_two_times_their_stream_operand() {
    // Two blocks: r1 = x + x·W1, r2 = r1 + r1·W2; the stream operand is the one read twice.
    let model = x_input(8)
        .init("w1", growing(8, 1))
        .init("w2", growing(8, 2))
        .node("MatMul", &["x", "w1"], &["h1"])
        .node("Add", &["h1", "x"], &["r1"])
        .node("MatMul", &["r1", "w2"], &["h2"])
        .node("Add", &["r1", "h2"], &["r2"])
        .output("r2", F32, &[D::S("n"), D::N(8)])
        .model();
    let options = calibrated(&[("x", x_samples(8))]);
    let (planned, _) = run(model.clone(), "calibrate,quantize", &options);
    let g = &planned.graph;
    let scale = |name: &str| match &g.value(g.find_value(name).unwrap()).plan {
        Some(intone::ir::quant::ActivationPlan {
            floor: None,
            scale: intone::ir::quant::Scale::PerTensor(s),
            ..
        }) => *s,
        other => panic!("{name}: {other:?}"),
    };
    for (sum, stream) in [("r1", "x"), ("r2", "r1")] {
        let ratio = (scale(sum) / scale(stream)).log2();
        assert_eq!(ratio, ratio.round(), "{sum} / {stream} = 2^{ratio}");
        assert!(ratio >= 0.0, "the sum's range covers its calibrated clip");
    }
    // The stream operand of r2 then aligns by a shift alone: multiplier 1, int32.
    let (lowered, _) = run(model, PLANNED_THEN_LOWERED, &options);
    let text = model_to_text(&lowered).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("align = intone.Requant(Add_1/residual) {multiplier: [1],")),
        "{text}"
    );
}

#[test]
fn add_of_an_attention_mask_like_operand_stays_float() {
    // m is −1e30 where the (float) key mask is 0: calibration sees it as an additive mask.
    let model = ModelBuilder::new(18)
        .input("a", F32, &[D::S("n"), D::N(4), D::N(8)])
        .input("b", F32, &[D::S("n"), D::N(8), D::N(4)])
        .input("m", F32, &[D::S("n"), D::N(4), D::N(4)])
        .node("MatMul", &["a", "b"], &["s"])
        .node("Add", &["s", "m"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4), D::N(4)])
        .model();
    let m: Vec<f32> = (0..48)
        .map(|i| if i % 4 == 3 { -1e30 } else { 0.0 })
        .collect();
    let m = Array::from_vec(&[3, 4, 4], m).unwrap();
    let options = calibrated(&[
        ("a", data(&[3, 4, 8], 0, 2.0)),
        ("b", data(&[3, 8, 4], 1, 1.0)),
        ("m", m),
    ]);
    let case = lower(model, PLANNED, SPEC, &options);
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (2, 1, 1));
    assert!(
        case.remarked("looks like an additive attention mask"),
        "{:?}",
        case.remarks()
    );
    assert!(
        model_to_text(&case.after)
            .unwrap()
            .contains("y = Add(MatMul_0/dequantized, m)"),
        "the float Add stays"
    );
}

#[test]
fn mul_and_div_by_positive_constants_fold_into_the_scale() {
    let model = x_input(8)
        .init("w", weight(8, 4, 1))
        .init("k", scalar_f32(0.125))
        .init("layer_scale", data(&[4], 7, 1.0))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Div", &["h", "k"], &["d"])
        .node("Mul", &["d", "layer_scale"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let x = x_samples(8);
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x.clone())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (3, 3, 0));
    assert_eq!(case.after_count("Div"), 0);
    // The input quantization, and the signs of the negative per-channel factors applied to the
    // float output (DequantizeLinear takes positive scales).
    assert_eq!(case.after_count("Mul"), 2);
    assert!(
        model_to_text(&case.after)
            .unwrap()
            .contains("y = Mul(Mul_2/dequantized, Mul_2/signs)"),
    );
    case.assert_close(&[x], 0.03);
}

#[test]
fn mul_by_a_negative_scalar_stays_float() {
    let model = x_input(8)
        .init("w", weight(8, 4, 1))
        .init("k", scalar_f32(-2.0))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Mul", &["h", "k"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x_samples(8))]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (2, 1, 1));
    assert!(case.remarked("negative scalar"), "{:?}", case.remarks());
    assert!(
        model_to_text(&case.after)
            .unwrap()
            .contains("y = Mul(MatMul_0/dequantized, k)"),
        "the float Mul reads the dequantized product"
    );
}

#[test]
fn reshape_and_transpose_move_the_integers() {
    let model = x_input(8)
        .init("w", weight(8, 8, 1))
        .init("shape", vec_i64(&[-1, 2, 4]))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Reshape", &["h", "shape"], &["r"])
        .node_with(
            "Transpose",
            &["r"],
            &["y"],
            vec![attr::ints("perm", &[0, 2, 1])],
        )
        .output("y", F32, &[D::S("n"), D::N(4), D::N(2)])
        .model();
    let x = x_samples(8);
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x.clone())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (3, 3, 0));
    let text = model_to_text(&case.after).unwrap();
    assert!(text.contains("Reshape_1/int = Reshape("), "{text}");
    assert!(
        text.contains("Transpose_2/int = Transpose(Reshape_1/int)"),
        "{text}"
    );
    case.assert_close(&[x], 0.03);
}

#[test]
fn pad_with_a_nonzero_value_stays_float() {
    let model = x_input(8)
        .init("w", weight(8, 4, 1))
        .init("pads", vec_i64(&[0, 1, 0, 1]))
        .init("value", scalar_f32(1.0))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Pad", &["h", "pads", "value"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(6)])
        .model();
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x_samples(8))]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (2, 1, 1));
    assert!(
        case.remarked("Pad other than with zeros"),
        "{:?}",
        case.remarks()
    );
    assert_eq!(case.after_count("Pad"), 1);
}

#[test]
fn concat_requantizes_every_part_to_the_result_scale() {
    let model = x_input(8)
        .init("w1", weight(8, 4, 1))
        .init("w2", data(&[8, 4], 4, 2.0))
        .node("MatMul", &["x", "w1"], &["h1"])
        .node("MatMul", &["x", "w2"], &["h2"])
        .node_with("Concat", &["h1", "h2"], &["c"], vec![attr::int("axis", -1)])
        .node("Relu", &["c"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(8)])
        .model();
    let x = x_samples(8);
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x.clone())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (4, 4, 0));
    assert_eq!(case.after_count("Concat"), 1);
    assert_eq!(case.after_count("intone.Requant"), 2, "one per part");
    case.assert_close(&[x], 0.03);
}

#[test]
fn concat_that_is_a_graph_output_keeps_each_parts_scale() {
    // Parts 100× apart (a detector's boxes beside its probabilities): one 8-bit scale would
    // leave the small part a few steps.
    let model = x_input(8)
        .init("w1", weight(8, 4, 1))
        .init("w2", data(&[8, 4], 4, 100.0))
        .node("MatMul", &["x", "w1"], &["h1"])
        .node("MatMul", &["x", "w2"], &["h2"])
        .node_with("Concat", &["h1", "h2"], &["y"], vec![attr::int("axis", -1)])
        .output("y", F32, &[D::S("n"), D::N(8)])
        .model();
    let x = x_samples(8);
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x.clone())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (3, 3, 0));
    assert_eq!(case.after_count("Concat"), 1);
    // Each part within its own 15-bit grid: the small part as close as the large one.
    let lowered = run(case.after.clone(), "legalize", &case.options).0;
    let got = Runner::new(&lowered)
        .unwrap()
        .run(std::slice::from_ref(&x), None)
        .unwrap();
    let want = Runner::new(&case.float)
        .unwrap()
        .run(std::slice::from_ref(&x), None)
        .unwrap();
    let (g, w) = (got[0].1.to_f64_vec(), want[0].1.to_f64_vec());
    for part in 0..2 {
        let pick = |v: &[f64]| -> Vec<f64> {
            v.chunks(8)
                .flat_map(|row| row[part * 4..part * 4 + 4].to_vec())
                .collect()
        };
        let (g, w) = (pick(&g), pick(&w));
        let peak = w.iter().fold(0f64, |m, v| m.max(v.abs()));
        let err = g
            .iter()
            .zip(&w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f64, f64::max);
        assert!(err <= 0.03 * peak, "part {part}: {err} of {peak}");
    }
}

#[test]
fn gather_from_an_embedding_table_reads_an_int8_table() {
    let model = ModelBuilder::new(18)
        .input("ids", DataType::Int64, &[D::S("n"), D::N(4)])
        .init("table", data(&[16, 8], 3, 1.0))
        .init("w", weight(8, 4, 1))
        .node_with(
            "Gather",
            &["table", "ids"],
            &["e"],
            vec![attr::int("axis", 0)],
        )
        .node("MatMul", &["e", "w"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4), D::N(4)])
        .model();
    let ids: Vec<i64> = (0..12).map(|i| (i * 5) % 16).collect();
    let ids = Array::from_vec(&[3, 4], ids).unwrap();
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("ids", ids.clone())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (2, 2, 0));
    let text = model_to_text(&case.after).unwrap();
    assert!(text.contains("table_i8 = i8[16,8]"), "{text}");
    case.assert_close(&[ids], 0.03);
}

#[test]
fn where_with_a_scalar_fill_selects_on_the_integers() {
    // fuse-attention-mask's form: Where(mask, scores, very negative).
    let model = ModelBuilder::new(18)
        .input("a", F32, &[D::S("n"), D::N(4), D::N(8)])
        .input("b", F32, &[D::S("n"), D::N(8), D::N(4)])
        .input("keep", DataType::Bool, &[D::S("n"), D::N(4), D::N(4)])
        .init("fill", scalar_f32(f32::MIN))
        .node("MatMul", &["a", "b"], &["s"])
        .node("Where", &["keep", "s", "fill"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4), D::N(4)])
        .model();
    let keep: Vec<bool> = (0..48).map(|i| i % 4 != 3).collect();
    let keep = Array::from_vec(&[3, 4, 4], keep).unwrap();
    let (a, b) = (data(&[3, 4, 8], 0, 2.0), data(&[3, 8, 4], 1, 1.0));
    let case = lower(
        model,
        PLANNED,
        SPEC,
        &calibrated(&[("a", a), ("b", b), ("keep", keep)]),
    );
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (2, 2, 0));
    let text = model_to_text(&case.after).unwrap();
    assert!(
        text.contains("= Where(keep, MatMul_0/matmul, Where_1/fill)"),
        "{text}"
    );
}

#[test]
fn masked_mean_pooling_runs_in_int32() {
    // A sentence encoder's pooling: Σ(h · mask) / max(Σ mask, ε).
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(4), D::N(8)])
        .input("mask", DataType::Int64, &[D::S("n"), D::N(4)])
        .init("w", weight(8, 8, 1))
        .init("axis2", vec_i64(&[2]))
        .init("axis1", vec_i64(&[1]))
        .init("eps", scalar_f32(1e-9))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Unsqueeze", &["mask", "axis2"], &["m3"])
        .node_with(
            "Cast",
            &["m3"],
            &["mf"],
            vec![attr::int("to", DataType::Float as i32 as i64)],
        )
        .node("Mul", &["h", "mf"], &["masked"])
        .node_with(
            "ReduceSum",
            &["masked", "axis1"],
            &["sum"],
            vec![attr::int("keepdims", 0)],
        )
        .node_with(
            "ReduceSum",
            &["mf", "axis1"],
            &["count"],
            vec![attr::int("keepdims", 0)],
        )
        .node("Clip", &["count", "eps"], &["at_least"])
        .node("Div", &["sum", "at_least"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(8)])
        .model();
    let (x, m) = (data(&[4, 4, 8], 0, 2.0), mask(4, 4));
    let case = lower(
        model,
        PLANNED,
        SPEC,
        &calibrated(&[("x", x.clone()), ("mask", m.clone())]),
    );
    insta::assert_snapshot!(case.snapshot());
    // MatMul, Cast, Mul, both ReduceSums, Clip, Div (the Unsqueeze of the int64 mask is not a
    // float value).
    assert_eq!(case.counts(), (7, 7, 0));
    assert_eq!(case.after_count("ReduceSum"), 2);
    assert_eq!(case.after_count("DequantizeLinear"), 1, "only the result");
    case.assert_close(&[x, m], 0.03);
}

#[test]
fn an_op_without_a_plan_stays_float() {
    let model = x_input(8)
        .init("w", weight(8, 4, 1))
        .node("MatMul", &["x", "w"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let options = calibrated(&[("x", x_samples(8))]);
    let (mut planned, _) = run(model, PLANNED, &options);
    // As if calibration had never seen x: no plan for the MatMul's input (y keeps its plan,
    // so the model is still a planned one).
    let x = planned.graph.find_value("x").unwrap();
    planned.graph.value_mut(x).plan = None;
    let case = apply(planned, SPEC, &options);
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 0, 1));
    assert!(
        case.remarked("input 'x' has no calibration statistics"),
        "{:?}",
        case.remarks()
    );
    assert_eq!(case.after_count("MatMul"), 1);
    assert_eq!(case.after_count("MatMulInteger"), 0);
}

#[test]
fn constant_weight_of_rank_three_stays_float() {
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::N(2), D::N(3), D::N(8)])
        .init("w", data(&[2, 8, 4], 1, 0.5))
        .node("MatMul", &["x", "w"], &["y"])
        .output("y", F32, &[D::N(2), D::N(3), D::N(4)])
        .model();
    let x = data(&[2, 3, 8], 0, 2.0);
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x)]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 0, 1));
    assert!(
        case.remarked("constant weight of rank 3"),
        "{:?}",
        case.remarks()
    );
}

#[test]
fn an_op_with_no_integer_form_is_a_float_island_between_integer_ops() {
    let model = x_input(8)
        .init("w1", weight(8, 8, 1))
        .init("w2", weight(8, 4, 2))
        .node("MatMul", &["x", "w1"], &["h"])
        .node("Sin", &["h"], &["s"])
        .node("MatMul", &["s", "w2"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let x = x_samples(8);
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x.clone())]));
    insta::assert_snapshot!(case.snapshot());
    // Sin is no candidate: not counted, left in float between a dequantization and a
    // quantization.
    assert_eq!(case.counts(), (2, 2, 0));
    assert_eq!(case.after_count("Sin"), 1);
    assert_eq!(case.after_count("DequantizeLinear"), 2);
    assert!(
        case.remarked("2 values are dequantized"),
        "{:?}",
        case.remarks()
    );
    case.assert_close(&[x], 0.05);
}
