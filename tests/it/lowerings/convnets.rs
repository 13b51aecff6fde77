//! `lower-linear-to-integer` on the ops of ConvNets: averages over space (GlobalAveragePool,
//! ReduceMean, AveragePool) as integer sums, per-channel Clip/Relu bounds, products of two
//! activations (squeeze-and-excitation gates), MaxPool over an accumulator, and per-channel
//! constant scales. Images are `n×4×6×6`.

use intone::ir::{Array, Model};

use super::*;
use crate::build::*;

const SPEC: &str = "lower-linear-to-integer";

fn image() -> ModelBuilder {
    ModelBuilder::new(18).input("x", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
}

fn images() -> Array {
    data(&[3, 4, 6, 6], 0, 2.0)
}

/// A 3×3 convolution 4 → 4 channels with `pads` 1 (same size), weights `w`.
fn conv(b: ModelBuilder, x: &str, y: &str) -> ModelBuilder {
    conv_with(b, data(&[4, 4, 3, 3], 1, 0.5), x, y)
}

/// `conv` with the given weights [4, 4, 3, 3].
fn conv_with(b: ModelBuilder, w: Array, x: &str, y: &str) -> ModelBuilder {
    b.init("w", w).node_with(
        "Conv",
        &[x, "w"],
        &[y],
        vec![
            attr::ints("kernel_shape", &[3, 3]),
            attr::ints("pads", &[1, 1, 1, 1]),
        ],
    )
}

/// True when the model still has an op of this type under the builder's node name: the
/// original node was kept in float (lowered ops are named `<node>/<suffix>`).
fn kept(model: &Model, op_type: &str, name: &str) -> bool {
    let g = &model.graph;
    g.node_ids()
        .filter_map(|id| g.op(id))
        .any(|op| op.is(op_type) && op.name() == name)
}

/// The type of the first input of the ops of a type (the integer type an op reads).
fn input_types(model: &Model, op_type: &str) -> Vec<String> {
    let g = &model.graph;
    let facts = intone::ops::analyze(model, &Default::default(), 1 << 16).unwrap();
    g.node_ids()
        .filter(|&id| g.op(id).is_some_and(|op| op.is(op_type)))
        .map(|id| {
            let x = g.input(id, 0).unwrap();
            format!("{:?}", facts.get(x).and_then(|f| f.dtype))
        })
        .collect()
}

#[test]
fn global_average_pool_is_an_integer_sum_over_space() {
    let model = conv(image(), "x", "c")
        .node("GlobalAveragePool", &["c"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4), D::N(1), D::N(1)])
        .model();
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", images())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (2, 2, 0));
    assert_eq!(case.after_count("GlobalAveragePool"), 0);
    assert_eq!(case.after_count("ReduceSum"), 1);
    assert_eq!(case.after_count("ConvInteger"), 1);
    // The sum is exact: only the Conv's operand and weight quantization remain, which
    // averaging shrinks (one 8-bit step of the Conv's output is 1/127 of its range).
    case.assert_close(&[images()], 0.01);
}

#[test]
fn reduce_mean_over_space_keeps_a_dynamic_batch() {
    let model = conv(image(), "x", "c")
        .init("axes", vec_i64(&[2, 3]))
        .node_with(
            "ReduceMean",
            &["c", "axes"],
            &["y"],
            vec![attr::int("keepdims", 0)],
        )
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", images())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (2, 2, 0));
    assert_eq!(case.after_count("ReduceMean"), 0);
    assert_eq!(case.after_count("ReduceSum"), 1);
    case.assert_close(&[images()], 0.01);
}

#[test]
fn reduce_mean_over_the_dynamic_batch_stays_float() {
    let model = conv(image(), "x", "c")
        .init("axes", vec_i64(&[0]))
        .node("ReduceMean", &["c", "axes"], &["y"])
        .output("y", F32, &[D::N(1), D::N(4), D::N(6), D::N(6)])
        .model();
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", images())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (2, 1, 1));
    assert!(
        case.remarked("averages over a dynamic batch"),
        "{:?}",
        case.remarks()
    );
    assert!(kept(&case.after, "ReduceMean", "ReduceMean_1"));
    assert_eq!(case.after_count("ReduceSum"), 0);
}

/// A 3×3 AveragePool with pads 1 (same size), and the extra attributes.
fn average_pool(extra: Vec<intone::schema::AttributeProto>) -> Model {
    let mut attrs = vec![
        attr::ints("kernel_shape", &[3, 3]),
        attr::ints("pads", &[1, 1, 1, 1]),
    ];
    attrs.extend(extra);
    image()
        .node_with("AveragePool", &["x"], &["y"], attrs)
        .output("y", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
        .model()
}

#[test]
fn average_pool_counting_pads_divides_every_window_by_its_size() {
    let model = average_pool(vec![attr::int("count_include_pad", 1)]);
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", images())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(case.after_count("AveragePool"), 0);
    assert_eq!(
        case.after_count("ConvInteger"),
        1,
        "a depthwise sum of ones"
    );
    // One divisor for every position: no per-position factors.
    assert_eq!(case.after_count("Mul"), 1, "only the input's quantization");
    // The input's 8-bit quantization (±s/2 of a ±2 range) relative to the pooled peak.
    case.assert_close(&[images()], 0.01);
}

#[test]
fn average_pool_not_counting_pads_divides_each_position_by_its_count() {
    let model = average_pool(vec![]);
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", images())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(case.after_count("AveragePool"), 0);
    assert_eq!(case.after_count("ConvInteger"), 1);
    // The input's quantization and the per-count factors round(2^p / count).
    assert_eq!(
        case.after_count("Mul"),
        2,
        "the quantization and the factors"
    );
    case.assert_close(&[images()], 0.01);
}

#[test]
fn average_pool_with_ceil_mode_or_auto_pad_same_stays_float() {
    let model = image()
        .node_with(
            "AveragePool",
            &["x"],
            &["a"],
            vec![
                attr::ints("kernel_shape", &[2, 2]),
                attr::ints("strides", &[2, 2]),
                attr::int("ceil_mode", 1),
            ],
        )
        .node_with(
            "AveragePool",
            &["x"],
            &["b"],
            vec![
                attr::ints("kernel_shape", &[3, 3]),
                attr::string("auto_pad", "SAME_UPPER"),
            ],
        )
        .output("a", F32, &[D::S("n"), D::N(4), D::N(3), D::N(3)])
        .output("b", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
        .model();
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", images())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (2, 0, 2));
    assert!(case.remarked("ceil_mode"), "{:?}", case.remarks());
    assert!(case.remarked("auto_pad SAME_UPPER"), "{:?}", case.remarks());
    assert_eq!(case.after_count("AveragePool"), 2);
    assert_eq!(case.after_count("ConvInteger"), 0);
}

#[test]
fn relu6_after_a_convolution_clips_each_channel_at_its_own_bounds() {
    // Inputs of ±4 so that some outputs pass 6.
    let x = data(&[3, 4, 6, 6], 0, 4.0);
    let model = conv(image(), "x", "c")
        .init("zero", scalar_f32(0.0))
        .init("six", scalar_f32(6.0))
        .node("Clip", &["c", "zero", "six"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
        .model();
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", x.clone())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (2, 2, 0));
    assert!(!kept(&case.after, "Clip", "Clip_1"));
    // Max with 0 and Min with ⌊6 / s_c⌋, one bound per channel of the accumulator.
    assert_eq!(case.after_count("Max"), 1);
    assert_eq!(case.after_count("Min"), 1);
    let text = model_to_text(&case.after).unwrap();
    assert!(text.contains("Clip_1/hi = i32[4,1,1]"), "{text}");
    case.assert_close(&[x], 0.03);
}

#[test]
fn relu_of_negative_per_channel_scales_bounds_those_channels_from_above() {
    // A per-channel factor with negative entries (a batch norm's γ < 0) makes the
    // accumulator's scales negative there: real ≥ 0 is q ≤ 0 in those channels.
    let factor = Array::from_vec(&[4, 1, 1], vec![1.5f32, -0.5, 2.0, -1.0]).unwrap();
    let model = conv(image(), "x", "c")
        .init("factor", factor)
        .node("Mul", &["c", "factor"], &["m"])
        .node("Relu", &["m"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
        .model();
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", images())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (3, 3, 0));
    assert!(!kept(&case.after, "Relu", "Relu_2"));
    assert!(!kept(&case.after, "Mul", "Mul_1"));
    // Both bounds per channel: 0 or the range's end.
    assert_eq!(case.after_count("Max"), 1);
    assert_eq!(case.after_count("Min"), 1);
    case.assert_close(&[images()], 0.02);
}

#[test]
fn squeeze_and_excitation_gate_multiplies_two_activations_in_int32() {
    let model = conv(image(), "x", "c")
        .node("GlobalAveragePool", &["c"], &["p"])
        .init("w_se", data(&[4, 4, 1, 1], 2, 1.0))
        .node_with(
            "Conv",
            &["p", "w_se"],
            &["z"],
            vec![attr::ints("kernel_shape", &[1, 1])],
        )
        .node("Sigmoid", &["z"], &["g"])
        .node("Mul", &["c", "g"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
        .model();
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", images())]));
    insta::assert_snapshot!(case.snapshot());
    // Conv, GlobalAveragePool, Conv and the product; the Sigmoid is the tables' (float here).
    assert_eq!(case.counts(), (4, 4, 0));
    assert!(!kept(&case.after, "Mul", "Mul_4"));
    assert!(kept(&case.after, "Sigmoid", "Sigmoid_3"));
    assert_eq!(case.after_count("ConvInteger"), 2);
    // Both operands are 8-bit at their plans, widened: the product of the 8-bit values.
    case.assert_close(&[images()], 0.03);
}

#[test]
fn a_gate_of_one_input_is_left_to_the_activation_tables() {
    // SiLU: x · Sigmoid(x) is one table of the activation lowering, not a product here.
    let model = conv(image(), "x", "c")
        .node("Sigmoid", &["c"], &["g"])
        .node("Mul", &["c", "g"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
        .model();
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", images())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0), "only the Conv");
    assert!(kept(&case.after, "Mul", "Mul_2"));
    assert!(kept(&case.after, "Sigmoid", "Sigmoid_1"));
}

/// A 1×1 convolution, a residual Add of the input (a per-tensor int32 sum) and a 2×2 MaxPool;
/// `indices` also writes (and outputs) the MaxPool's indices.
fn residual_max_pool(indices: bool) -> Model {
    let outputs: &[&str] = if indices { &["y", "i"] } else { &["y"] };
    let b = image()
        .init("w", data(&[4, 4, 1, 1], 1, 0.5))
        .node_with(
            "Conv",
            &["x", "w"],
            &["c"],
            vec![attr::ints("kernel_shape", &[1, 1])],
        )
        .node("Add", &["c", "x"], &["r"])
        .node_with(
            "MaxPool",
            &["r"],
            outputs,
            vec![
                attr::ints("kernel_shape", &[2, 2]),
                attr::ints("strides", &[2, 2]),
            ],
        )
        .output("y", F32, &[D::S("n"), D::N(4), D::N(3), D::N(3)]);
    let b = if indices {
        b.output(
            "i",
            intone::ir::DataType::Int64,
            &[D::S("n"), D::N(4), D::N(3), D::N(3)],
        )
    } else {
        b
    };
    b.model()
}

#[test]
fn max_pool_of_an_int32_sum_reads_its_8_bit_form() {
    let case = lower(
        residual_max_pool(false),
        PLANNED,
        SPEC,
        &calibrated(&[("x", images())]),
    );
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (3, 3, 0));
    assert!(!kept(&case.after, "MaxPool", "MaxPool_2"));
    assert_eq!(case.after_count("MaxPool"), 1);
    // MaxPool has 8-bit kernels only: the residual's int32 is requantized to its plan first.
    assert_eq!(input_types(&case.after, "MaxPool"), ["Some(Int8)"]);
    // Half an int8 step of the residual's plan (±s/2 of a ±4 range) and the Conv's error.
    case.assert_close(&[images()], 0.015);
}

/// Weights on the 2^-6 grid within ±1: exact, so the activations' error is the whole error.
fn exact_weights(dims: &[usize], seed: u64) -> Array {
    let w: Vec<f32> = data(dims, seed, 1.0)
        .to_f64_vec()
        .iter()
        .map(|v| (v * 64.0).round() as f32 / 64.0)
        .collect();
    Array::from_vec(dims, w).unwrap()
}

/// Conv, Relu and a 3×3 stride-2 MaxPool (`ceil_mode`, pads 1) into a second Conv: a ResNet
/// stem, with exact weights.
fn stem_max_pool(ceil_mode: i64) -> Model {
    let b = conv_with(image(), exact_weights(&[4, 4, 3, 3], 1), "x", "c")
        .node("Relu", &["c"], &["r"])
        .node_with(
            "MaxPool",
            &["r"],
            &["p"],
            vec![
                attr::ints("kernel_shape", &[3, 3]),
                attr::ints("strides", &[2, 2]),
                attr::ints("pads", &[1, 1, 1, 1]),
                attr::int("ceil_mode", ceil_mode),
            ],
        )
        .init("w2", exact_weights(&[4, 4, 1, 1], 2))
        .node_with(
            "Conv",
            &["p", "w2"],
            &["y"],
            vec![attr::ints("kernel_shape", &[1, 1])],
        );
    let side = if ceil_mode == 0 { 3 } else { 4 };
    b.output("y", F32, &[D::S("n"), D::N(4), D::N(side), D::N(side)])
        .model()
}

#[test]
fn max_pool_into_a_wide_operand_takes_the_max_of_int32_taps() {
    let narrow = lower(
        stem_max_pool(0),
        PLANNED,
        SPEC,
        &calibrated(&[("x", images())]),
    );
    let case = lower(stem_max_pool(0), PLANNED, SPEC, &wide("all"));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.after_count("MaxPool"), 0);
    // The Relu's Max(q, 0), then eight for nine taps.
    assert_eq!(case.after_count("Max"), 1 + 8);
    assert_eq!(input_types(&case.after, "Max"), vec!["Some(Int32)"; 9]);
    let (e8, e16) = (
        narrow.assert_close(&[images()], 0.03),
        case.assert_close(&[images()], 0.03),
    );
    assert!(e16 < 0.5 * e8, "int32 taps {e16} vs 8-bit MaxPool {e8}");
    // The 8-bit MaxPool stays where its output is read at 8 bits.
    assert_eq!(narrow.after_count("MaxPool"), 1);
    assert_eq!(narrow.after_count("Max"), 1);
}

#[test]
fn max_pool_with_ceil_mode_keeps_the_8_bit_kernel() {
    // ceil_mode adds partial windows at the end that strided slices would not read.
    let case = lower(stem_max_pool(1), PLANNED, SPEC, &wide("all"));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.after_count("MaxPool"), 1);
    assert_eq!(case.after_count("Max"), 1, "the Relu's");
    case.assert_close(&[images()], 0.03);
}

#[test]
fn max_pool_whose_indices_are_read_stays_float() {
    let case = lower(
        residual_max_pool(true),
        PLANNED,
        SPEC,
        &calibrated(&[("x", images())]),
    );
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (3, 2, 1));
    assert!(
        case.remarked("MaxPool indices are read"),
        "{:?}",
        case.remarks()
    );
    assert!(kept(&case.after, "MaxPool", "MaxPool_2"));
    assert_eq!(input_types(&case.after, "MaxPool"), ["Some(Float)"]);
}

#[test]
fn per_channel_mul_and_add_become_scales_and_an_int32_bias() {
    // An unfolded batch norm: Mul and Add by [C, 1, 1] constants.
    let scale = Array::from_vec(&[4, 1, 1], vec![0.5f32, 2.0, 1.25, 0.75]).unwrap();
    let shift = Array::from_vec(&[4, 1, 1], vec![0.1f32, -0.3, 0.2, 0.05]).unwrap();
    let model = conv(image(), "x", "c")
        .init("scale", scale)
        .init("shift", shift)
        .node("Mul", &["c", "scale"], &["m"])
        .node("Add", &["m", "shift"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
        .model();
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", images())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (3, 3, 0));
    assert!(!kept(&case.after, "Mul", "Mul_1"));
    assert!(!kept(&case.after, "Add", "Add_2"));
    // The Mul is no op at all: the scales absorb it.
    assert_eq!(case.after_count("Mul"), 1, "only the input's quantization");
    case.assert_close(&[images()], 0.02);
}

#[test]
fn mul_by_a_constant_varying_along_two_axes_stays_float() {
    let model = conv(image(), "x", "c")
        .init("factor", data(&[4, 1, 6], 3, 1.0))
        .node("Mul", &["c", "factor"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
        .model();
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", images())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (2, 1, 1));
    assert!(
        case.remarked("the constant is not a vector along one axis"),
        "{:?}",
        case.remarks()
    );
    assert!(kept(&case.after, "Mul", "Mul_1"));
}

/// A depthwise 3×3 convolution of the 4 channels with `attrs` (and a bias), after a 1×1 Conv
/// so that its input is an accumulator.
fn depthwise(attrs: Vec<intone::schema::AttributeProto>, channels_out: usize) -> Model {
    let mut all = vec![attr::ints("kernel_shape", &[3, 3]), attr::int("group", 4)];
    all.extend(attrs);
    image()
        .init("p", data(&[4, 4, 1, 1], 3, 0.5))
        .node("Conv", &["x", "p"], &["c"])
        .init("dw", data(&[channels_out, 1, 3, 3], 4, 0.5))
        .init("dwb", data(&[channels_out], 5, 0.1))
        .node_with("Conv", &["c", "dw", "dwb"], &["y"], all)
        .output(
            "y",
            F32,
            &[D::S("n"), D::N(channels_out as i64), D::N(3), D::N(3)],
        )
        .model()
}

#[test]
fn depthwise_conv_is_an_int32_tap_sum_over_a_16_bit_input() {
    // Stride 2, pads 1: 6×6 → 3×3, every tap a strided Slice of the padded input.
    let attrs = vec![
        attr::ints("pads", &[1, 1, 1, 1]),
        attr::ints("strides", &[2, 2]),
    ];
    let case = lower(
        depthwise(attrs, 4),
        PLANNED,
        SPEC,
        &calibrated(&[("x", images())]),
    );
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (2, 2, 0));
    assert_eq!(case.after_count("ConvInteger"), 1, "only the 1×1 Conv");
    assert_eq!(case.after_count("Slice"), 9);
    assert_eq!(case.after_count("Pad"), 1);
    // 16 bits into the taps and int8 weights: the 1×1 Conv's 8-bit input is most of the error.
    case.assert_close(&[images()], 0.015);
}

#[test]
fn depthwise_conv_with_auto_pad_or_a_channel_multiplier_stays_a_conv_integer() {
    for (attrs, channels_out) in [
        (
            vec![
                attr::string("auto_pad", "SAME_UPPER"),
                attr::ints("strides", &[2, 2]),
            ],
            4,
        ),
        (
            vec![
                attr::ints("pads", &[1, 1, 1, 1]),
                attr::ints("strides", &[2, 2]),
            ],
            8,
        ),
    ] {
        let case = lower(
            depthwise(attrs, channels_out),
            PLANNED,
            SPEC,
            &calibrated(&[("x", images())]),
        );
        assert_eq!(case.after_count("ConvInteger"), 2);
        assert_eq!(case.after_count("Slice"), 0);
        case.assert_close(&[images()], 0.03);
    }
}

fn wide(wide_operands: &str) -> CompileOptions {
    CompileOptions {
        wide_operands: wide_operands.parse().unwrap(),
        ..calibrated(&[("x", images())])
    }
}

#[test]
fn a_wide_operand_enters_its_conv_as_two_8_bit_terms() {
    let model = conv_with(image(), exact_weights(&[4, 4, 3, 3], 1), "x", "y")
        .output("y", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
        .model();
    let narrow = lower(
        model.clone(),
        PLANNED,
        SPEC,
        &calibrated(&[("x", images())]),
    );
    let case = lower(model, PLANNED, SPEC, &wide("all"));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(
        case.after_count("ConvInteger"),
        2,
        "the high and the low byte"
    );
    assert_eq!(case.after_count("Div"), 1);
    // The input's quantization error falls from 8 bits to 16.
    let (e8, e16) = (
        narrow.assert_close(&[images()], 0.02),
        case.assert_close(&[images()], 0.02),
    );
    assert!(e16 < 0.02 * e8, "two terms {e16} vs one {e8}");
    // The low byte is proven within [0, 255] by the remainder rule, so legalize accepts it.
    let (_, reports) = run(
        case.after.clone(),
        "fold-dyadic-requant,legalize",
        &case.options,
    );
    assert!(reports.iter().any(|r| r.pass == "legalize"));
}

#[test]
fn a_wide_operand_whose_sum_could_leave_int32_keeps_one_term() {
    // K = 4096 inputs: 256 · 128 · Σ|w| (about 4096 · 32) passes 2^31.
    let x = data(&[3, 4096], 0, 2.0);
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(4096)])
        .init("w", data(&[4096, 4], 1, 0.5))
        .node("MatMul", &["x", "w"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let options = CompileOptions {
        wide_operands: intone::quant::WideOperands::All,
        ..calibrated(&[("x", x.clone())])
    };
    let case = lower(model, PLANNED, SPEC, &options);
    assert_eq!(case.after_count("MatMulInteger"), 1);
    assert_eq!(case.after_count("Div"), 0);
    case.assert_close(&[x], 0.05);
}

#[test]
fn a_wide_operand_budget_takes_the_cheapest_matmuls_first() {
    // x·W1 (K = 4, 4 columns) then ·W2 (K = 4, 64 columns): W1 costs 16 MACs a row, W2 256.
    let x = data(&[3, 4], 0, 2.0);
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(4)])
        .init("w1", data(&[4, 4], 1, 0.5))
        .node("MatMul", &["x", "w1"], &["h"])
        .init("w2", data(&[4, 64], 2, 0.5))
        .node("MatMul", &["h", "w2"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(64)])
        .model();
    let with = |budget: &str| CompileOptions {
        wide_operands: budget.parse().unwrap(),
        ..calibrated(&[("x", x.clone())])
    };
    for (budget, matmuls) in [("budget=0", 2), ("budget=0.1", 3), ("budget=1", 4)] {
        let case = lower(model.clone(), PLANNED, SPEC, &with(budget));
        assert_eq!(case.after_count("MatMulInteger"), matmuls, "{budget}");
    }
    assert!("budget=2".parse::<intone::quant::WideOperands>().is_err());
}

/// Two activations: a fills its range; b is small but for one value 20, so its 8-bit step is
/// coarse.
fn loud_and_faint() -> (Array, Array) {
    let a = data(&[64, 4], 0, 2.0);
    let mut b = data(&[64, 4], 3, 0.02).to_f64_vec();
    b[17] = 20.0;
    let b = Array::from_vec(&[64, 4], b.iter().map(|&v| v as f32).collect()).unwrap();
    (a, b)
}

#[test]
fn auto_wide_operands_take_the_activations_whose_rounding_is_loud() {
    // a·W1 and b·W2: a fills its range (8 bits leave its matmul about 48 dB of signal to
    // noise); b is small but for one value 20, so its 8-bit step is coarse (about 29 dB).
    let (a, b) = loud_and_faint();
    let model = ModelBuilder::new(18)
        .input("a", F32, &[D::S("n"), D::N(4)])
        .input("b", F32, &[D::S("n"), D::N(4)])
        .init("w1", data(&[4, 4], 1, 0.5))
        .node("MatMul", &["a", "w1"], &["ya"])
        .init("w2", data(&[4, 4], 2, 0.5))
        .node("MatMul", &["b", "w2"], &["yb"])
        .output("ya", F32, &[D::S("n"), D::N(4)])
        .output("yb", F32, &[D::S("n"), D::N(4)])
        .model();
    let with = |which: &str| CompileOptions {
        wide_operands: which.parse().unwrap(),
        ..calibrated(&[("a", a.clone()), ("b", b.clone())])
    };
    let planned = |which: &str| {
        let (_, reports) = run(model.clone(), PLANNED, &with(which));
        let quantize = reports.iter().find(|r| r.pass == "quantize").unwrap();
        let db = |v: &str| {
            let r = quantize.values.iter().find(|r| r.value == v).unwrap();
            let (_, tail) = r.why.split_once("SQNR would be ").expect("an estimate");
            let db: f64 = tail.trim_end_matches(" dB").parse().unwrap();
            (r.bits, db)
        };
        (db("a"), db("b"))
    };
    let ((a_bits, a_db), (b_bits, b_db)) = planned("auto");
    assert!(
        (45.0..51.0).contains(&a_db) && (26.0..32.0).contains(&b_db),
        "{a_db} {b_db}"
    );
    assert_eq!((a_bits, b_bits), (8, 16), "only b is below 38 dB");
    // The threshold is the dial: below both estimates nothing is wide, above both everything.
    assert_eq!(planned("auto=20").0.0 + planned("auto=20").1.0, 16);
    assert_eq!(planned("auto=60").0.0 + planned("auto=60").1.0, 32);
    let case = lower(model.clone(), PLANNED, SPEC, &with("auto"));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(
        case.after_count("MatMulInteger"),
        3,
        "b's matmul in two terms"
    );
    // (What the second term gains is a_wide_operand_enters_its_conv_as_two_8_bit_terms.)
    case.assert_close(&[a.clone(), b.clone()], 0.02);
    for bad in ["auto=", "auto=x", "auto=inf"] {
        assert!(bad.parse::<intone::quant::WideOperands>().is_err(), "{bad}");
    }
}

#[test]
fn measured_wide_operands_take_the_activation_whose_rounding_reaches_the_output() {
    // As above, but b's matmul output leaves the model a thousandfold smaller: b's rounding is
    // loud at its own matmul (the estimate auto reads) and faint at the model's outputs.
    let (a, b) = loud_and_faint();
    let model = ModelBuilder::new(18)
        .input("a", F32, &[D::S("n"), D::N(4)])
        .input("b", F32, &[D::S("n"), D::N(4)])
        .init("w1", data(&[4, 4], 1, 0.5))
        .node("MatMul", &["a", "w1"], &["ya"])
        .init("w2", data(&[4, 4], 2, 0.5))
        .node("MatMul", &["b", "w2"], &["c"])
        .init("small", scalar_f32(1e-3))
        .node("Mul", &["c", "small"], &["yb"])
        .output("ya", F32, &[D::S("n"), D::N(4)])
        .output("yb", F32, &[D::S("n"), D::N(4)])
        .model();
    let with = |which: &str, objective: &[&str]| CompileOptions {
        wide_operands: which.parse().unwrap(),
        objective: objective.iter().map(|s| s.to_string()).collect(),
        ..calibrated(&[("a", a.clone()), ("b", b.clone())])
    };
    let bits = |options: &CompileOptions| {
        let (_, reports) = run(model.clone(), PLANNED, options);
        let quantize = reports.iter().find(|r| r.pass == "quantize").unwrap();
        let of = |v: &str| {
            quantize
                .values
                .iter()
                .find(|r| r.value == v)
                .unwrap()
                .clone()
        };
        (of("a"), of("b"))
    };
    // Half the MACs: one of the two.
    let (ra, rb) = bits(&with("measured=0.5", &[]));
    assert_eq!((ra.bits, rb.bits), (16, 8), "{} | {}", ra.why, rb.why);
    assert!(ra.why.contains("output SQNR measured"), "{}", ra.why);
    assert_eq!(
        (
            bits(&with("auto", &[])).0.bits,
            bits(&with("auto", &[])).1.bits
        ),
        (8, 16)
    );
    // Judged at yb alone, b is the one.
    let (ra, rb) = bits(&with("measured=0.5", &["yb"]));
    assert_eq!((ra.bits, rb.bits), (8, 16));
    let (ra, rb) = bits(&with("measured=1", &[]));
    assert_eq!((ra.bits, rb.bits), (16, 16));
    let (ra, rb) = bits(&with("measured=0", &[]));
    assert_eq!((ra.bits, rb.bits), (8, 8));
    assert!(
        "measured=1.5"
            .parse::<intone::quant::WideOperands>()
            .is_err()
    );
}

#[test]
fn a_constant_too_large_for_a_fine_per_channel_scale_adds_at_the_wide_form() {
    // A depthwise output (16-bit input, int8 weights) scaled per channel, one channel by
    // 1e-6, then shifted by 10: 10 at that channel's scale overflows int32.
    let mut scale = vec![1.0f32; 4];
    scale[2] = 1e-6;
    let attrs = vec![
        attr::ints("kernel_shape", &[3, 3]),
        attr::int("group", 4),
        attr::ints("pads", &[1, 1, 1, 1]),
        attr::ints("strides", &[2, 2]),
    ];
    let model = image()
        .init("p", data(&[4, 4, 1, 1], 3, 0.5))
        .node("Conv", &["x", "p"], &["c"])
        .init("dw", data(&[4, 1, 3, 3], 4, 0.5))
        .node_with("Conv", &["c", "dw"], &["y"], attrs)
        .init("s", Array::from_vec(&[1, 4, 1, 1], scale).unwrap())
        .node("Mul", &["y", "s"], &["z"])
        .init(
            "t",
            Array::from_vec(&[1, 4, 1, 1], vec![10.0f32; 4]).unwrap(),
        )
        .node("Add", &["z", "t"], &["out"])
        .output("out", F32, &[D::S("n"), D::N(4), D::N(3), D::N(3)])
        .model();
    let case = lower(model, PLANNED, SPEC, &calibrated(&[("x", images())]));
    assert!(!kept(&case.after, "Add", "Add_3"), "{:?}", case.remarks());
    case.assert_close(&[images()], 0.01);
}
