//! `--data-free`: activation statistics from the model itself (`ops::moments`): a folded
//! BatchNorm's output is `N(β, γ²)` per channel, functions and linear ops carry the moments on,
//! and a BatchNorm ConvNet compiles integer-only without calibration data.

use intone::ir::{Array, Model, ValueId};
use intone::pass::{CompileOptions, Manager, Pipeline};
use intone::passes::PASSES;

use crate::build::*;
use crate::lowerings::data;

/// Conv → BatchNorm (β = [1, −2], γ = [0.5, −3]) → Relu → Conv: the first conv's statistics
/// are the normalization's.
fn conv_bn_relu() -> Model {
    ModelBuilder::new(17)
        .input("x", F32, &[D::S("n"), D::N(3), D::N(5), D::N(5)])
        .init("w", data(&[2, 3, 3, 3], 1, 0.5))
        .init("gamma", Array::from_vec(&[2], vec![0.5f32, -3.0]).unwrap())
        .init("beta", Array::from_vec(&[2], vec![1.0f32, -2.0]).unwrap())
        .init("mean", Array::from_vec(&[2], vec![0.1f32, 0.2]).unwrap())
        .init("var", Array::from_vec(&[2], vec![2.0f32, 0.5]).unwrap())
        .init("w2", data(&[2, 2, 1, 1], 2, 0.5))
        .node_with(
            "Conv",
            &["x", "w"],
            &["c"],
            vec![attr::ints("kernel_shape", &[3, 3])],
        )
        .node(
            "BatchNormalization",
            &["c", "gamma", "beta", "mean", "var"],
            &["b"],
        )
        .node("Relu", &["b"], &["r"])
        .node_with(
            "Conv",
            &["r", "w2"],
            &["y"],
            vec![attr::ints("kernel_shape", &[1, 1])],
        )
        .output("y", F32, &[D::S("n"), D::N(2), D::N(3), D::N(3)])
        .model()
}

fn estimated(model: &Model, sigmas: f64) -> (Model, intone::pass::PassReport) {
    let pipeline = Pipeline::parse("fold-batch-norm,calibrate", PASSES).unwrap();
    let manager = Manager::new(&pipeline, PASSES).unwrap();
    let mut m = model.clone();
    let options = CompileOptions {
        data_free: Some(sigmas),
        ..Default::default()
    };
    let mut reports = manager.run(&mut m, &options).unwrap();
    (m, reports.pop().unwrap())
}

fn stats_of(model: &Model, name: &str) -> (f64, f64, f64) {
    let g = &model.graph;
    let v: ValueId = g
        .node_ids()
        .flat_map(|id| g.outputs_of(id).collect::<Vec<_>>())
        .find(|&v| g.value_name(v) == name || g.value(v).origin.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no value {name}"));
    let s = g.value(v).stats.as_ref().expect("estimated statistics");
    (s.min, s.max, s.sum / s.count as f64)
}

#[test]
fn a_folded_batch_norm_states_its_outputs_distribution() {
    let (model, report) = estimated(&conv_bn_relu(), 4.0);
    assert_eq!(report.samples, Some(0));
    assert!(report.remarks.is_empty(), "{:?}", report.remarks);
    // β ± 4|γ| per channel, hulled: [−2 − 12, −2 + 12].
    let (lo, hi, mean) = stats_of(&model, "b");
    assert_eq!((lo, hi), (-14.0, 10.0));
    assert!((mean - (1.0 - 2.0) / 2.0).abs() < 1e-12, "{mean}");
    // The ReLU of N(1, 0.25) and N(−2, 9): never negative; its mean is the rectified Gaussians'.
    let (lo, hi, mean) = stats_of(&model, "r");
    assert_eq!(lo, 0.0);
    let rectified = |m: f64, s: f64| {
        let z = m / s;
        let phi = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let cdf = 0.5 * (1.0 + libm::erf(z / std::f64::consts::SQRT_2));
        m * cdf + s * phi
    };
    let expected = (rectified(1.0, 0.5) + rectified(-2.0, 3.0)) / 2.0;
    // Simpson over ±8σ, with the kink at 0 inside a step.
    assert!(
        (mean - expected).abs() < 1e-4 * expected,
        "{mean} vs {expected}"
    );
    assert!(hi > 3.0 && hi < 10.0, "{hi}");
    // More sigmas, wider ranges.
    let (wide, _) = estimated(&conv_bn_relu(), 6.0);
    assert_eq!(stats_of(&wide, "b").0, -20.0);
}

#[test]
fn ops_without_a_rule_are_named_and_left_without_statistics() {
    let model = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2), D::N(4)])
        .node("Cos", &["x"], &["e"])
        .node("Relu", &["e"], &["y"])
        .output("y", F32, &[D::N(2), D::N(4)])
        .model();
    let (m, report) = estimated(&model, 6.0);
    let remark = &report.remarks[0].message;
    assert!(remark.contains("no data-free rule for Cos"), "{remark}");
    let g = &m.graph;
    let without: Vec<&str> = g
        .node_ids()
        .filter(|&id| g.op(id).is_some())
        .map(|id| ValueId { node: id, slot: 0 })
        .filter(|&v| g.value(v).stats.is_none())
        .map(|v| g.value_name(v))
        .collect();
    assert_eq!(without, ["e", "y"]);
}

#[test]
fn data_free_and_calibration_data_are_refused_together() {
    let out = crate::intone()
        .args([
            "compile",
            "m.onnx",
            "-o",
            "o.onnx",
            "--data-free",
            "--calibrate",
            "x=a.npy",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data-free"));
}

#[test]
fn a_concat_of_per_tensor_and_per_channel_parts_keeps_one_entry_per_channel() {
    // The graph input (one entry for 3 channels) next to 2 BatchNorm channels, into a conv
    // that reads all 5.
    let model = ModelBuilder::new(17)
        .input("x", F32, &[D::S("n"), D::N(3), D::N(5), D::N(5)])
        .init("w", data(&[2, 3, 1, 1], 1, 0.5))
        .init("gamma", Array::from_vec(&[2], vec![0.5f32, 2.0]).unwrap())
        .init("beta", Array::from_vec(&[2], vec![1.0f32, -2.0]).unwrap())
        .init("mean", Array::from_vec(&[2], vec![0.0f32, 0.0]).unwrap())
        .init("var", Array::from_vec(&[2], vec![1.0f32, 1.0]).unwrap())
        .init("w2", data(&[4, 5, 1, 1], 2, 0.5))
        .node_with(
            "Conv",
            &["x", "w"],
            &["c"],
            vec![attr::ints("kernel_shape", &[1, 1])],
        )
        .node(
            "BatchNormalization",
            &["c", "gamma", "beta", "mean", "var"],
            &["b"],
        )
        .node_with("Concat", &["x", "b"], &["cat"], vec![attr::int("axis", 1)])
        .node_with(
            "Conv",
            &["cat", "w2"],
            &["y"],
            vec![attr::ints("kernel_shape", &[1, 1])],
        )
        .output("y", F32, &[D::S("n"), D::N(4), D::N(5), D::N(5)])
        .model();
    let (m, report) = estimated(&model, 6.0);
    assert!(report.remarks.is_empty(), "{:?}", report.remarks);
    // x is N(0, 1) (±6); the BatchNorm's second channel is N(−2, 4), −2 ± 12.
    let (lo, hi, _) = stats_of(&m, "cat");
    assert_eq!((lo, hi), (-14.0, 10.0));
    assert!(stats_of(&m, "y").1.is_finite());
}
