//! `split-residual-groups` and the linear lowering of its plans: K weight terms of b bits as K
//! integer matmuls aligned in int32, terms ≥ 2 on the kept channels only (gathered back),
//! depthwise Convs with the aligned terms as one tap weight, terms dropped where int32 could
//! overflow; and the property that every expansion's realized error stays within its bound.

use intone::ir::{Array, Model};
use intone::lower::residual::{
    channels_by_residual, ensemble_branch, ensemble_error, expand_weight, expansion_error,
    magnitude_of_bits, term_ratio,
};
use proptest::prelude::*;

use super::*;
use crate::build::*;

const SPEC: &str = "lower-linear-to-integer";

fn images() -> Array {
    data(&[3, 4, 6, 6], 0, 2.0)
}

/// A 3×3 convolution 4 → 4 channels (pads 1) of random weights, n×4×6×6 images.
fn conv_model() -> Model {
    conv_model_with(data(&[4, 4, 3, 3], 1, 0.5), 1)
}

/// The 3×3 convolution with weights `w` [4, 4/group, 3, 3] in `group` groups.
fn conv_model_with(w: Array, group: i64) -> Model {
    let mut attrs = vec![
        attr::ints("kernel_shape", &[3, 3]),
        attr::ints("pads", &[1, 1, 1, 1]),
    ];
    if group != 1 {
        attrs.push(attr::int("group", group));
    }
    ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
        .init("w", w)
        .node_with("Conv", &["x", "w"], &["y"], attrs)
        .output("y", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
        .model()
}

/// The weight shapes of the `ConvInteger`s of a model, in graph order.
fn conv_integer_weight_shapes(model: &Model) -> Vec<Vec<i64>> {
    let g = &model.graph;
    g.node_ids()
        .filter(|&id| g.op(id).is_some_and(|op| op.is("ConvInteger")))
        .map(|id| g.constant(g.input(id, 1).unwrap()).unwrap().dims().to_vec())
        .collect()
}

fn planned(split: &str) -> String {
    format!("{PLANNED},{split}")
}

fn options() -> CompileOptions {
    calibrated(&[("x", images())])
}

#[test]
fn split_residual_groups_plans_the_terms_and_reports_each_weights_bound() {
    let case = lower(
        conv_model(),
        PLANNED,
        "split-residual-groups(bits=4,order=2,sparsity=0.5)",
        &options(),
    );
    let mut snapshot = case.snapshot();
    snapshot.push_str(&serde_json::to_string_pretty(&case.report.weights).unwrap());
    insta::assert_snapshot!(snapshot);
    assert_eq!(case.counts(), (1, 1, 0));
    let [w] = &case.report.weights[..] else {
        panic!("one weight")
    };
    assert_eq!((w.bits, w.magnitude, w.terms), (4, 7, 2));
    assert_eq!((w.channels, w.residual_channels), (4, 2));
    assert_eq!(w.cost, 1.5);
    assert!(w.max_error <= w.bound, "{w:?}");
    // The plan is all that changed.
    assert_eq!(
        case.before,
        intone::onnx::text::model_to_text(&case.after).unwrap()
    );
}

/// Lowers the conv model after `split`, in tract against float; returns the case and its error.
fn lowered(split: &str, tolerance: f64) -> (Case, f64) {
    let case = lower(conv_model(), &planned(split), SPEC, &options());
    let error = case.assert_close(&[images()], tolerance);
    (case, error)
}

#[test]
fn weight_terms_are_integer_matmuls_aligned_in_int32() {
    let (one, e1) = lowered("split-residual-groups(bits=4,order=1)", 0.2);
    let (case, e3) = lowered("split-residual-groups(bits=4,order=3)", 0.05);
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(one.after_count("ConvInteger"), 1);
    assert_eq!(case.after_count("ConvInteger"), 3);
    // The input's quantization, then Horner: (P2·r + P3), P1·r² plus that; no scatter when
    // every channel is kept.
    assert_eq!(case.after_count("Mul"), 1 + 2);
    assert_eq!(case.after_count("Gather"), 0);
    // int4 alone is coarse; three terms are finer than int8's grid (15² times int4's).
    assert!(e3 < e1 / 4.0, "K=3 {e3} vs K=1 {e1}");
    intone::lower::range::verify(&case.after, 4096, Default::default()).unwrap();
}

#[test]
fn a_sparse_residual_runs_on_the_kept_channels_and_is_gathered_back() {
    let (dense, e_dense) = lowered("split-residual-groups(bits=4,order=2)", 0.1);
    let (case, e_sparse) = lowered("split-residual-groups(bits=4,order=2,sparsity=0.5)", 0.2);
    let (_, e_one) = lowered("split-residual-groups(bits=4,order=1)", 0.2);
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.after_count("ConvInteger"), 2);
    assert_eq!(case.after_count("Pad"), 1);
    assert_eq!(case.after_count("Gather"), 1);
    assert_eq!(dense.after_count("Gather"), 0);
    // The residual conv's weight holds the two kept channels only.
    let shapes = conv_integer_weight_shapes(&case.after);
    assert_eq!(shapes, [vec![4, 4, 3, 3], vec![2, 4, 3, 3]]);
    // The worst output may sit on a channel without residual terms.
    assert!(
        e_dense < e_sparse && e_sparse <= e_one,
        "{e_dense} {e_sparse} {e_one}"
    );
}

#[test]
fn a_matmul_residual_is_gathered_back_along_the_last_axis() {
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[8, 6], 3, 0.5))
        .node("MatMul", &["x", "w"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(6)])
        .model();
    let x = data(&[5, 8], 4, 1.0);
    let case = lower(
        model,
        &planned("split-residual-groups(bits=3,order=2,sparsity=0.5)"),
        SPEC,
        &calibrated(&[("x", x.clone())]),
    );
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.after_count("MatMulInteger"), 2);
    assert_eq!(case.after_count("Gather"), 1);
    case.assert_close(&[x], 0.1);
}

#[test]
fn a_depthwise_conv_sums_the_aligned_terms_as_one_tap_weight() {
    let model = conv_model_with(data(&[4, 1, 3, 3], 5, 0.5), 4);
    let run = |split: &str| {
        let case = lower(model.clone(), &planned(split), SPEC, &options());
        let e = case.assert_close(&[images()], 0.5);
        (case, e)
    };
    let (ternary, e1) = run("split-residual-groups(bits=2,order=1)");
    let (case, e4) = run("split-residual-groups(bits=2,order=4)");
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.after_count("ConvInteger"), 0);
    // Nine taps either way: the terms add up in the tap weights, not in more products.
    assert_eq!(case.after_count("Mul"), ternary.after_count("Mul"));
    assert!(e4 < e1 / 8.0, "ternary K=4 {e4} vs K=1 {e1}");
    // The tap weights are the aligned sums, up to 1 + 3 + 9 + 27 = 40 (ternary terms, ratio 3).
    let g = &case.after.graph;
    let largest = g
        .node_ids()
        .filter(|&id| g.op(id).is_some_and(|op| op.is("Mul")))
        .filter_map(|id| g.constant(g.input(id, 1)?))
        .filter_map(|t| match t.decode().unwrap() {
            Array::I32(w) => Some(w.iter().map(|&v| v as f64).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .fold(0f64, |m, v| m.max(v.abs()));
    assert!(largest > 1.0 && largest <= 40.0, "{largest}");
}

#[test]
fn terms_that_could_overflow_int32_are_dropped_and_reported() {
    // 8-bit terms (ratio 129 on the portable grid) over 512 inputs: a third term would need
    // 2^(7+7+7+8+9) of int32.
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(512)])
        .init("w", data(&[512, 4], 6, 0.5))
        .node("MatMul", &["x", "w"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let x = data(&[3, 512], 7, 1.0);
    let options = calibrated(&[("x", x.clone())]);
    let split = lower(
        model.clone(),
        PLANNED,
        "split-residual-groups(bits=8,order=3)",
        &options,
    );
    let [w] = &split.report.weights[..] else {
        panic!("one weight")
    };
    assert_eq!(w.terms, 2, "{w:?}");
    assert!(w.why.contains("2 of 3 terms"), "{}", w.why);
    let case = lower(
        model,
        &planned("split-residual-groups(bits=8,order=3)"),
        SPEC,
        &options,
    );
    assert_eq!(case.after_count("MatMulInteger"), 2);
    intone::lower::range::verify(&case.after, 4096, Default::default()).unwrap();
    case.assert_close(&[x], 0.02);
}

#[test]
fn the_default_expansion_lowers_to_the_same_graph() {
    let split = lower(conv_model(), PLANNED, "split-residual-groups", &options());
    assert_eq!(split.counts(), (1, 0, 0));
    let text = |case: &Case| intone::onnx::text::model_to_text(&case.after).unwrap();
    let with = lower(
        conv_model(),
        &planned("split-residual-groups"),
        SPEC,
        &options(),
    );
    let without = lower(conv_model(), PLANNED, SPEC, &options());
    assert_eq!(text(&with), text(&without));
}

/// The default flags reproduce the int8 model of a pipeline without the pass, byte for byte.
#[test]
fn default_flags_compile_the_digits_cnn_byte_for_byte_as_without_the_pass() {
    let ivit = intone::passes::PRESETS
        .iter()
        .find(|p| p.name == "ivit")
        .unwrap()
        .passes();
    let without = ivit.replace(",split-residual-groups", "");
    assert_ne!(ivit, without);
    let dir = crate::tempdir();
    let model = crate::fixture("digits_cnn_opset17.onnx");
    let data = crate::fixture("data").join("digits_calibration.npy");
    let calibrate = format!("pixels={}", data.display());
    let compile = |pipeline: &str, name: &str| {
        let out = dir.path().join(name);
        let flag = if pipeline == "ivit" {
            "--pipeline"
        } else {
            "--passes"
        };
        crate::linear::compile(&model, &out, &[flag, pipeline, "--calibrate", &calibrate]);
        std::fs::read(out).unwrap()
    };
    assert!(compile("ivit", "a.onnx") == compile(&without, "b.onnx"));
}

#[test]
fn expansion_settings_outside_what_is_built_are_refused() {
    for (spec, needle) in [
        ("split-residual-groups(bits=1)", "weight bits 1"),
        ("split-residual-groups(bits=9)", "weight bits 9"),
        ("split-residual-groups(order=0)", "residual order 0"),
        (
            "split-residual-groups(sparsity=1.5)",
            "residual sparsity 1.5",
        ),
        ("split-residual-groups(ensemble=0)", "ensemble 0"),
        (
            "split-residual-groups(ensemble=2,order=2)",
            "single-term networks",
        ),
        ("split-residual-groups(budget=2)", "residual budget 2"),
    ] {
        let pipeline = Pipeline::parse(&format!("{PLANNED},{spec}"), PASSES).unwrap();
        let err = match Manager::new(&pipeline, PASSES) {
            Ok(_) => panic!("{spec} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(needle), "{spec}: {err}");
    }
}

#[test]
fn an_ensemble_copies_the_network_into_branches_averaged_at_the_outputs() {
    let split = lower(
        conv_model(),
        PLANNED,
        "split-residual-groups(bits=4,ensemble=2)",
        &options(),
    );
    insta::assert_snapshot!(split.snapshot());
    assert_eq!(split.counts(), (2, 2, 0));
    let branches: Vec<_> = split
        .report
        .weights
        .iter()
        .map(|w| w.ensemble_branch)
        .collect();
    assert_eq!(branches, [Some((0, 2)), Some((1, 2))]);
    // Both branches, then the Mean that keeps the output's name.
    assert_eq!(split.after_count("Conv"), 2);
    assert_eq!(split.after_count("Mean"), 1);
    let ensemble = planned("split-residual-groups(bits=4,ensemble=2)");
    let mean = lower(conv_model(), &ensemble, SPEC, &options());
    let one = lower(
        conv_model(),
        &planned("split-residual-groups(bits=4)"),
        SPEC,
        &options(),
    );
    assert_eq!(mean.after_count("ConvInteger"), 2);
    let (e2, e1) = (
        mean.assert_close(&[images()], 0.2),
        one.assert_close(&[images()], 0.2),
    );
    // One conv is linear: the mean of the branches is the weight on the grid twice as fine.
    assert!(e2 < 0.75 * e1, "ensemble {e2} vs one network {e1}");
}

#[test]
fn an_ensemble_of_a_model_with_integer_outputs_is_refused() {
    let mut model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[8, 6], 3, 0.5))
        .node("MatMul", &["x", "w"], &["y"])
        .node_with("ArgMax", &["y"], &["k"], vec![attr::int("axis", 1)])
        .output("k", intone::ir::DataType::Int64, &[D::S("n"), D::N(1)])
        .model();
    let pipeline = Pipeline::parse(&planned("split-residual-groups(ensemble=2)"), PASSES).unwrap();
    let manager = Manager::new(&pipeline, PASSES).unwrap();
    let err = manager
        .run(&mut model, &calibrated(&[("x", data(&[5, 8], 4, 1.0))]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("graph output 0 'k'"), "{err}");
}

#[test]
fn an_ensemble_leaves_outputs_no_weight_reaches_as_they_are() {
    let mut model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[8, 6], 3, 0.5))
        .node("MatMul", &["x", "w"], &["y"])
        .node("Shape", &["x"], &["s"])
        .output("y", F32, &[D::S("n"), D::N(6)])
        .output("s", intone::ir::DataType::Int64, &[D::N(2)])
        .model();
    let pipeline = Pipeline::parse(&planned("split-residual-groups(ensemble=2)"), PASSES).unwrap();
    let manager = Manager::new(&pipeline, PASSES).unwrap();
    manager
        .run(&mut model, &calibrated(&[("x", data(&[5, 8], 4, 1.0))]))
        .unwrap();
    let g = &model.graph;
    let producers: Vec<String> = g
        .outputs()
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                g.value_name(o.value),
                g.op(o.value.node).unwrap().op_type()
            )
        })
        .collect();
    assert_eq!(producers, ["y Mean", "s Shape"]);
}

#[test]
fn a_model_wide_budget_spends_the_residual_macs_where_they_remove_the_most_noise() {
    // Two convs; the second's weights are rough (one channel far coarser than the others), so
    // its residuals carry more of the noise.
    let rough = data(&[4, 4, 3, 3], 9, 0.5)
        .to_f64_vec()
        .iter()
        .enumerate()
        .map(|(i, v)| if i < 36 { (*v * 8.0) as f32 } else { *v as f32 })
        .collect();
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
        .init("w", data(&[4, 4, 3, 3], 1, 0.5))
        .init("w2", Array::from_vec(&[4, 4, 3, 3], rough).unwrap())
        .node_with(
            "Conv",
            &["x", "w"],
            &["c"],
            vec![
                attr::ints("kernel_shape", &[3, 3]),
                attr::ints("pads", &[1, 1, 1, 1]),
            ],
        )
        .node_with(
            "Conv",
            &["c", "w2"],
            &["y"],
            vec![
                attr::ints("kernel_shape", &[3, 3]),
                attr::ints("pads", &[1, 1, 1, 1]),
            ],
        )
        .output("y", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
        .model();
    let case = lower(
        model,
        PLANNED,
        "split-residual-groups(bits=4,order=2,budget=0.5)",
        &options(),
    );
    let weights = &case.report.weights;
    assert_eq!(weights.len(), 2);
    // Half of the residual MACs of the model (both layers have the same MACs per channel).
    let kept: usize = weights.iter().map(|w| w.residual_channels).sum();
    assert_eq!(kept, 4, "{weights:?}");
    assert!(
        weights.iter().all(|w| w.why.contains("residual budget")),
        "{weights:?}"
    );
    // The rough layer gets some of the budget.
    let costs: Vec<f64> = weights.iter().map(|w| w.cost).collect();
    assert!(weights[1].residual_channels >= 1, "{costs:?}");
}

#[test]
fn the_measured_budget_goes_to_the_layer_whose_noise_reaches_the_output() {
    // Two matmuls with the same weights on the same input; the first's output is scaled down a
    // thousandfold before it leaves the model. Each layer's own output noise is the same, so
    // the per-layer estimate splits the budget; the output noise measured on calibration
    // samples gives it all to the second.
    let w = data(&[6, 4], 3, 0.5);
    let model = ModelBuilder::new(17)
        .input("x", F32, &[D::S("n"), D::N(6)])
        .init("wa", w.clone())
        .init("wb", w)
        .init("small", scalar_f32(1e-3))
        .node("MatMul", &["x", "wa"], &["a"])
        .node("Mul", &["a", "small"], &["ya"])
        .node("MatMul", &["x", "wb"], &["yb"])
        .output("ya", F32, &[D::S("n"), D::N(4)])
        .output("yb", F32, &[D::S("n"), D::N(4)])
        .model();
    let mut options = calibrated(&[("x", data(&[8, 6], 4, 1.0))]);
    let kept = |by: &str, options: &CompileOptions| {
        let spec = format!("split-residual-groups(bits=4,order=2,budget=0.5,budget-by={by})");
        let case = lower(model.clone(), PLANNED, &spec, options);
        let weights = &case.report.weights;
        let by_name = |n: &str| weights.iter().find(|w| w.weight == n).unwrap().clone();
        (by_name("wa"), by_name("wb"))
    };
    let (a, b) = kept("layer", &options);
    assert_eq!((a.residual_channels, b.residual_channels), (2, 2));
    assert_eq!((a.output_noise, b.output_noise), (None, None));
    let (a, b) = kept("output", &options);
    assert_eq!((a.residual_channels, b.residual_channels), (0, 4));
    let (na, nb) = (a.output_noise.unwrap(), b.output_noise.unwrap());
    // Each weight's noise power reaches the outputs scaled by its own output's share.
    assert!(na > 0.0 && nb > 1e5 * na, "{na} vs {nb}");
    // Judged at the scaled output alone, the first layer is the one that matters.
    options.objective = vec!["ya".into()];
    let (a, b) = kept("output", &options);
    assert_eq!((a.residual_channels, b.residual_channels), (4, 0));
}

#[test]
fn a_grouped_conv_keeps_its_residual_terms_on_every_channel() {
    // Compact residual channels would not line up with the groups (channel 1 reads group 0).
    let model = conv_model_with(data(&[4, 2, 3, 3], 1, 0.5), 2);
    let split = "split-residual-groups(bits=4,order=2,sparsity=0.5)";
    let case = lower(model, &planned(split), SPEC, &options());
    let shapes = conv_integer_weight_shapes(&case.after);
    assert_eq!(shapes, [vec![4, 2, 3, 3], vec![4, 2, 3, 3]]);
    assert_eq!(case.after_count("Gather"), 0);
    case.assert_close(&[images()], 0.05);
}

/// Weights with the features that stress the bound: per-channel ranges over decades, a dead
/// channel, a channel exact on a power-of-two grid, and values on rounding ties.
fn weights() -> impl Strategy<Value = ndarray::ArrayD<f32>> {
    (
        1usize..6,
        1usize..24,
        proptest::collection::vec(-1.0f32..1.0, 6 * 24),
    )
        .prop_flat_map(|(c, n, v)| {
            (
                Just((c, n, v)),
                proptest::collection::vec(-3i32..3, c),
                0usize..c + 1,
            )
        })
        .prop_map(|((c, n, v), decades, special)| {
            let mut w = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[c, n]), |i| {
                v[i[0] * n + i[1]] * 10f32.powi(decades[i[0]])
            });
            if special < c {
                match special % 3 {
                    0 => w.index_axis_mut(ndarray::Axis(0), special).fill(1e-30),
                    1 => w
                        .index_axis_mut(ndarray::Axis(0), special)
                        .mapv_inplace(|x| (x * 4.0).round() / 4.0),
                    _ => w
                        .index_axis_mut(ndarray::Axis(0), special)
                        .mapv_inplace(|x| (x * 8.0).round() / 8.0 + 1.0 / 16.0),
                }
            }
            w
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn realized_error_stays_within_the_bound_for_every_bits_and_order(
        w in weights(),
        bits in 2u32..=8,
        order in 1usize..=4,
        sparse in any::<bool>(),
    ) {
        let magnitude = magnitude_of_bits(bits, 127);
        let channels = w.shape()[0];
        let kept = sparse.then(|| channels_by_residual(&w, 0, magnitude, channels.div_ceil(2)));
        let e = expand_weight(&w, 0, magnitude, order, kept.as_deref());
        let error = expansion_error(&w, &e);
        prop_assert_eq!(error.over_bound, 0, "{:?}", error);
        prop_assert!(error.max_abs <= error.bound * (1.0 + 1e-9));
        // Every term on the b-bit grid.
        for t in &e.terms {
            prop_assert!(t.iter().all(|&q| (q as i64).abs() <= magnitude));
        }
        // The bound shrinks by the ratio per term on the kept channels.
        let r = term_ratio(magnitude) as f64;
        let first = expand_weight(&w, 0, magnitude, 1, None).bound();
        for (c, b) in e.bound().iter().enumerate() {
            let expected = if e.kept[c] { first[c] / r.powi(order as i32 - 1) } else { first[c] };
            prop_assert!((b - expected).abs() <= expected * 1e-12);
        }
        // The aligned int32 weight is the approximation at the last term's scale.
        let aligned = e.aligned();
        let approx = e.approximation();
        for ((i, &a), &y) in aligned.indexed_iter().zip(approx.iter()) {
            let s = e.channel_scale(i[0]);
            prop_assert!((a as f64 * s - y).abs() <= 1e-9 * s.max(y.abs()));
        }
    }

    #[test]
    fn ensemble_branches_stay_on_the_grid_and_average_within_the_bound(
        w in weights(),
        bits in 2u32..=8,
        branches in 2usize..=5,
    ) {
        let magnitude = magnitude_of_bits(bits, 127);
        let error = ensemble_error(&w, 0, magnitude, branches);
        prop_assert_eq!(error.over_bound, 0, "{:?}", error);
        let single = expansion_error(&w, &expand_weight(&w, 0, magnitude, 1, None));
        prop_assert!(error.bound <= single.bound / branches as f64 * (1.0 + 1e-12));
        for j in 0..branches {
            let b = ensemble_branch(&w, 0, magnitude, j, branches);
            prop_assert!(b.terms[0].iter().all(|&q| (q as i64).abs() <= magnitude));
        }
    }
}
