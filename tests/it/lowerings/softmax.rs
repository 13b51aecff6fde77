//! `lower-softmax-to-shiftmax` and `lower-softmax-to-ibert-exp`: Softmax of dequantized integers
//! becomes an exponential table and an integer normalisation.

use intone::ir::Array;

use super::*;
use crate::build::*;

/// Attention scores `a·b` (an activation × activation MatMul, per-tensor int32) under Softmax.
fn scores_softmax() -> intone::ir::Model {
    ModelBuilder::new(18)
        .input("a", F32, &[D::S("n"), D::N(4), D::N(8)])
        .input("b", F32, &[D::S("n"), D::N(8), D::N(4)])
        .node("MatMul", &["a", "b"], &["s"])
        .node_with("Softmax", &["s"], &["y"], vec![attr::int("axis", -1)])
        .output("y", F32, &[D::S("n"), D::N(4), D::N(4)])
        .model()
}

fn scores_inputs() -> Vec<Array> {
    vec![data(&[3, 4, 8], 0, 1.5), data(&[3, 8, 4], 1, 1.0)]
}

fn scores_options() -> CompileOptions {
    let inputs = scores_inputs();
    calibrated(&[("a", inputs[0].clone()), ("b", inputs[1].clone())])
}

/// `Softmax(a·b)·v`, its inputs and its calibration.
fn attention_values() -> (intone::ir::Model, Vec<Array>, CompileOptions) {
    let model = ModelBuilder::new(18)
        .input("a", F32, &[D::S("n"), D::N(4), D::N(8)])
        .input("b", F32, &[D::S("n"), D::N(8), D::N(4)])
        .input("v", F32, &[D::S("n"), D::N(4), D::N(8)])
        .node("MatMul", &["a", "b"], &["s"])
        .node_with("Softmax", &["s"], &["p"], vec![attr::int("axis", -1)])
        .node("MatMul", &["p", "v"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4), D::N(8)])
        .model();
    let mut inputs = scores_inputs();
    inputs.push(data(&[3, 4, 8], 2, 1.0));
    let options = calibrated(&[
        ("a", inputs[0].clone()),
        ("b", inputs[1].clone()),
        ("v", inputs[2].clone()),
    ]);
    (model, inputs, options)
}

/// Softmax over a MatMul with a constant weight: the input has per-channel scales.
fn per_channel_softmax() -> (intone::ir::Model, CompileOptions) {
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[8, 4], 1, 0.5))
        .node("MatMul", &["x", "w"], &["s"])
        .node_with("Softmax", &["s"], &["y"], vec![attr::int("axis", -1)])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    (model, calibrated(&[("x", data(&[6, 8], 0, 2.0))]))
}

#[test]
fn shiftmax_lowers_softmax_of_attention_scores() {
    let spec = "lower-softmax-to-shiftmax";
    let case = lower(scores_softmax(), LINEAR, spec, &scores_options());
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(case.after_count("Softmax"), 0);
    assert_eq!(case.after_count("Gather"), 1, "the exponential table");
    assert!(
        model_to_text(&case.after)
            .unwrap()
            .contains("Softmax_1/exp_table = i32[")
    );
    case.assert_close(&scores_inputs(), 0.04);
}

#[test]
fn exp_table_softmax_holds_the_exponential_itself() {
    // The same integer normalisation as Shiftmax; the table is round(2^30·e^(−i·S)), shifted
    // to fit the row, so the probabilities err only by the scores' and the output's rounding.
    let spec = "lower-softmax-to-exp-table";
    let case = lower(scores_softmax(), LINEAR, spec, &scores_options());
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(case.after_count("Softmax"), 0);
    assert_eq!(case.after_count("Gather"), 1, "the exponential table");
    let exact = case.assert_close(&scores_inputs(), 0.04);
    let shift = lower(
        scores_softmax(),
        LINEAR,
        "lower-softmax-to-shiftmax",
        &scores_options(),
    )
    .assert_close(&scores_inputs(), 0.04);
    assert!(
        exact < shift,
        "exact exponential {exact} vs ShiftExp {shift}"
    );
}

#[test]
fn exact_exp_table_entries_are_the_rounded_exponential() {
    use intone::quant::kernels::{ExpKernel, exp_table};
    let s = 0.01;
    let table = exp_table(ExpKernel::Exact, s, 257);
    assert_eq!(*table.last().unwrap(), 0, "masked positions give 0");
    let first = table[0] as f64;
    assert!(first * 257.0 < 2f64.powi(31), "a row of 257 sums in int32");
    for (i, &t) in table.iter().enumerate().take(table.len() - 1) {
        let want = first * (-(i as f64) * s).exp();
        assert!((t as f64 - want).abs() <= 1.0, "entry {i}: {t} vs {want}");
    }
}

#[test]
fn shiftmax_indexes_the_table_by_the_rounded_distance_below_the_row_maximum() {
    let case = lower(
        scores_softmax(),
        LINEAR,
        "lower-softmax-to-shiftmax",
        &scores_options(),
    );
    let text = model_to_text(&case.after).unwrap();
    // Straight from the int32 scores: no requantization to the index scale.
    assert!(text.contains("ReduceMax(MatMul_0/matmul"), "{text}");
    assert!(
        text.contains("Softmax_1/index = Div(Softmax_1/capped"),
        "{text}"
    );
    assert!(!text.contains("Softmax_1/index = intone.Requant"), "{text}");
    // Half-even rounding has no shift form: the scores are requantized to the index scale.
    let mut options = scores_options();
    options.rounding = intone::quant::Rounding::HalfEven;
    let case = lower(
        scores_softmax(),
        LINEAR,
        "lower-softmax-to-shiftmax",
        &options,
    );
    let text = model_to_text(&case.after).unwrap();
    assert!(
        text.contains("Softmax_1/index = intone.Requant(MatMul_0/matmul)"),
        "{text}"
    );
    assert!(text.contains("Softmax_1/table_index = Min("), "{text}");
}

#[test]
fn shiftmax_writes_probabilities_straight_into_the_next_matmul_operand() {
    // p·v: the only reader of the probabilities quantizes them; the division lands on its
    // scale with no requantization after.
    let (model, inputs, options) = attention_values();
    let case = lower(model, LINEAR, "lower-softmax-to-shiftmax", &options);
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    let text = model_to_text(&case.after).unwrap();
    assert!(text.contains("Softmax_1/rounded = Add("), "{text}");
    // 16-bit probabilities (the default): their two bytes are split off the division's result.
    assert!(
        text.contains("MatMul_2/high = Div(Softmax_1/quantized_1"),
        "the probabilities feed the matmul's two terms directly: {text}"
    );
    assert_eq!(
        case.after_count("intone.Requant"),
        0,
        "the index is a shift of the scores' distance, the output lands on the reader's scale"
    );
    case.assert_close(&inputs, 0.05);
}

#[test]
fn wide_probabilities_enter_the_attention_matmul_as_two_8_bit_terms() {
    // p·v with p planned at 16 bits (`--wide-operands measured`, objective the output): the
    // high and the low byte of p, each times v, summed as 256·hi·v + lo·v in int32.
    let (model, inputs, narrow) = attention_values();
    let narrow = CompileOptions {
        probability_bits: 8,
        ..narrow
    };
    // The whole budget: a (of the scores' matmul) and p are both wide.
    let wide = CompileOptions {
        wide_operands: "measured=1".parse().unwrap(),
        ..narrow.clone()
    };
    let case = lower(model.clone(), LINEAR, "lower-softmax-to-shiftmax", &wide);
    insta::assert_snapshot!(case.snapshot());
    let text = model_to_text(&case.after).unwrap();
    // p is the softmax's 16-bit output, split by p·v's lowering (MatMul_2).
    assert!(
        text.contains("MatMul_2/high = Div(Softmax_1/quantized_1"),
        "{text}"
    );
    for byte in ["high_u8", "low_u8"] {
        assert!(
            text.contains(&format!("= MatMulInteger(MatMul_2/{byte}, ")),
            "{byte} of p times v: {text}"
        );
    }
    let e16 = case.assert_close(&inputs, 0.05);
    let e8 = lower(model, LINEAR, "lower-softmax-to-shiftmax", &narrow).assert_close(&inputs, 0.05);
    assert!(e16 < e8, "16-bit probabilities {e16} vs 8-bit {e8}");
}

/// `Softmax(a·b)·v` over rows of `k` tokens (`None`: a symbolic length).
fn attention_of_length(k: Option<usize>) -> (intone::ir::Model, CompileOptions) {
    let len = || match k {
        Some(k) => D::N(k as i64),
        None => D::S("k"),
    };
    let model = ModelBuilder::new(18)
        .input("a", F32, &[D::N(1), D::N(2), D::N(8)])
        .input("b", F32, &[D::N(1), D::N(8), len()])
        .input("v", F32, &[D::N(1), len(), D::N(4)])
        .node("MatMul", &["a", "b"], &["s"])
        .node_with("Softmax", &["s"], &["p"], vec![attr::int("axis", -1)])
        .node("MatMul", &["p", "v"], &["y"])
        .output("y", F32, &[D::N(1), D::N(2), D::N(4)])
        .model();
    let n = k.unwrap_or(40);
    let options = calibrated(&[
        ("a", data(&[1, 2, 8], 0, 1.0)),
        ("b", data(&[1, 8, n], 1, 1.0)),
        ("v", data(&[1, n, 4], 2, 1.0)),
    ]);
    (model, options)
}

#[test]
fn attention_probabilities_get_the_widest_bits_int32_holds_at_the_inner_size() {
    // k·(2^b − 1)·128 < 2^31: 16 bits up to k = 255, 15 at DINOv2's 257 tokens, 12 for a
    // symbolic length bounded by 4096 (--max-dim); --probability-bits caps them.
    let bits_of_p = |k: Option<usize>, cap: u32| {
        let (model, options) = attention_of_length(k);
        let options = CompileOptions {
            probability_bits: cap,
            ..options
        };
        let case = lower(model, "calibrate", "quantize", &options);
        let g = &case.after.graph;
        let plan = g.value(g.find_value("p").unwrap()).plan.clone().unwrap();
        assert!(!plan.signed);
        plan.bits
    };
    assert_eq!(bits_of_p(Some(255), 16), 16);
    assert_eq!(bits_of_p(Some(257), 16), 15);
    assert_eq!(bits_of_p(None, 16), 12);
    assert_eq!(bits_of_p(Some(257), 12), 12);
    assert_eq!(bits_of_p(Some(257), 8), 8, "8 keeps one byte");
}

#[test]
fn wide_probabilities_at_257_tokens_lower_to_two_terms_within_int32() {
    let (model, options) = attention_of_length(Some(257));
    let case = lower(model, LINEAR, "lower-softmax-to-shiftmax", &options);
    let text = model_to_text(&case.after).unwrap();
    assert_eq!(
        case.after_count("MatMulInteger"),
        3,
        "a·b, then hi·v and lo·v: {text}"
    );
    // The 257-term averages of v are small, so the peak is too: judged on the calibration data
    // (the accuracy this buys is measured on DINOv2-S in benches/transformers).
    let inputs = vec![
        data(&[1, 2, 8], 0, 1.0),
        data(&[1, 8, 257], 1, 1.0),
        data(&[1, 257, 4], 2, 1.0),
    ];
    case.assert_close(&inputs, 0.05);
}

#[test]
fn shiftmax_requantizes_a_per_channel_input_to_one_index_scale() {
    // A classifier's softmax over Gemm logits, per output column.
    let (model, options) = per_channel_softmax();
    let case = lower(model, LINEAR, "lower-softmax-to-shiftmax", &options);
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(case.after_count("Softmax"), 0);
    assert_eq!(case.after_count("Gather"), 1, "the exponential table");
    case.assert_close(&[data(&[6, 8], 0, 2.0)], 0.04);
}

#[test]
fn ibert_exp_lowers_softmax_of_attention_scores() {
    let spec = "lower-softmax-to-ibert-exp(out-bits=8)";
    let case = lower(scores_softmax(), LINEAR, spec, &scores_options());
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(case.after_count("Softmax"), 0);
    assert_eq!(case.after_count("Gather"), 1, "the exponential table");
    // It runs, and keeps each row's order.
    let lowered = run(case.after.clone(), "legalize", &case.options).0;
    let float = Runner::new(&case.float)
        .unwrap()
        .run(&scores_inputs(), None)
        .unwrap();
    let got = Runner::new(&lowered)
        .unwrap()
        .run(&scores_inputs(), None)
        .unwrap();
    let argmax = |v: Vec<f64>| -> Vec<usize> {
        v.chunks(4)
            .map(|r| (0..4).fold(0, |b, j| if r[j] > r[b] { j } else { b }))
            .collect()
    };
    assert_eq!(
        argmax(float[0].1.to_f64_vec()),
        argmax(got[0].1.to_f64_vec())
    );
    // The table is shifted so that the normalising factor keeps bits: rows sum to 1 within
    // the 8-bit output's rounding (at full width they summed to 0.73–0.95).
    for row in got[0].1.to_f64_vec().chunks(4) {
        let sum: f64 = row.iter().sum();
        assert!(
            (sum - 1.0).abs() < 4.0 * 2f64.powi(-7),
            "row {row:?} sums to {sum}"
        );
    }
}

#[test]
fn ibert_exp_leaves_a_softmax_of_a_float_input() {
    // Softmax straight on the graph input: nothing was lowered before it.
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[8, 4], 1, 0.5))
        .node_with("Softmax", &["x"], &["p"], vec![attr::int("axis", -1)])
        .node("MatMul", &["p", "w"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let options = calibrated(&[("x", data(&[6, 8], 0, 2.0))]);
    let case = lower(model, LINEAR, "lower-softmax-to-ibert-exp", &options);
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 0, 1));
    assert!(
        case.remarked("input is not dequantized from integers"),
        "{:?}",
        case.remarks()
    );
    assert_eq!(case.after_count("Softmax"), 1);
}
