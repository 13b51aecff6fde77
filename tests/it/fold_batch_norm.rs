//! Snapshot tests of `fold-batch-norm`: an inference-mode BatchNormalization folds into the
//! Conv, ConvTranspose or Gemm before it, or becomes a per-channel Mul and Add; the cases it
//! keeps say why. Every rewritten case also runs in tract before and after and must compute
//! the same function (up to f32 rounding).

use intone::ir::{Array, DataType, Model};
use intone::onnx::text::model_to_text;
use intone::pass::PassReport;
use intone::runner::Runner;

use crate::build::*;
use crate::lowerings::{count, data};
use crate::passes::run;

const SPEC: &str = "fold-batch-norm";

/// One run of the pass: the model it wrote, its report and the snapshot text.
struct Folded {
    after: Model,
    report: PassReport,
    snapshot: String,
}

impl Folded {
    fn counts(&self) -> (usize, usize, usize) {
        let r = &self.report;
        (r.matched, r.rewritten, r.skipped)
    }

    fn remarked(&self, needle: &str) -> bool {
        self.report
            .remarks
            .iter()
            .any(|r| r.message.contains(needle))
    }

    fn count(&self, op_type: &str) -> usize {
        count(&self.after, op_type)
    }
}

fn fold(model: Model) -> Folded {
    let before = model_to_text(&model).unwrap();
    let (after, mut reports) = run(model, SPEC, &Default::default());
    let report = reports.pop().unwrap();
    let mut snapshot = format!(
        "--- before\n{before}--- after {SPEC}\n{}",
        model_to_text(&after).unwrap()
    );
    snapshot.push_str(&format!(
        "--- {}: matched {}, rewritten {}, skipped {}\n",
        report.pass, report.matched, report.rewritten, report.skipped
    ));
    for remark in &report.remarks {
        snapshot.push_str(&format!("  {}: {}\n", remark.node, remark.message));
    }
    Folded {
        after,
        report,
        snapshot,
    }
}

/// Runs both models in tract; every output of `after` must equal the original's up to f32
/// rounding: 10⁻⁶ of the output's largest magnitude (a few ulps of f32 after a sum of tens of
/// products). Returns the worst error.
fn assert_same_function(before: &Model, after: &Model, inputs: &[Array]) -> f64 {
    let expected = Runner::new(before).unwrap().run(inputs, None).unwrap();
    let got = Runner::new(after).unwrap().run(inputs, None).unwrap();
    assert_eq!(expected.len(), got.len());
    let mut worst = 0f64;
    for ((name, e), (_, g)) in expected.iter().zip(&got) {
        assert_eq!(e.shape(), g.shape(), "output {name} changed shape");
        let err = crate::lowerings::relative_to_peak(e, g);
        assert!(err < 1e-6, "output {name} changed by {err:e} of its peak");
        worst = worst.max(err);
    }
    worst
}

/// γ, β, mean and a positive variance for `c` channels, with distinct seeds.
fn norm_params(b: ModelBuilder, c: usize, seed: u64) -> ModelBuilder {
    let var: Vec<f32> = data(&[c], seed + 3, 1.0)
        .to_f64_vec()
        .iter()
        .map(|v| (v.abs() + 0.25) as f32)
        .collect();
    b.init("gamma", data(&[c], seed, 1.5))
        .init("beta", data(&[c], seed + 1, 0.5))
        .init("mean", data(&[c], seed + 2, 0.5))
        .init("var", Array::from_vec(&[c], var).unwrap())
}

fn batch_norm(
    b: ModelBuilder,
    x: &str,
    y: &str,
    attrs: Vec<intone::schema::AttributeProto>,
) -> ModelBuilder {
    b.node_with(
        "BatchNormalization",
        &[x, "gamma", "beta", "mean", "var"],
        &[y],
        attrs,
    )
}

fn image(channels: i64) -> ModelBuilder {
    ModelBuilder::new(18).input("x", F32, &[D::S("n"), D::N(channels), D::N(6), D::N(6)])
}

fn images(channels: usize) -> Array {
    data(&[2, channels, 6, 6], 0, 2.0)
}

/// The name of the input in `slot` of the only op of a type.
fn input_name(model: &Model, op_type: &str, slot: usize) -> String {
    let g = &model.graph;
    let ids: Vec<_> = g
        .node_ids()
        .filter(|&id| g.op(id).is_some_and(|op| op.is(op_type)))
        .collect();
    assert_eq!(ids.len(), 1, "one {op_type}");
    g.value_name(g.input(ids[0], slot).unwrap()).to_string()
}

#[test]
fn batch_norm_after_conv_folds_into_its_weights_and_bias() {
    let b = image(4)
        .init("w", data(&[4, 4, 3, 3], 1, 0.5))
        .init("bias", data(&[4], 2, 0.5))
        .node_with(
            "Conv",
            &["x", "w", "bias"],
            &["c"],
            vec![
                attr::ints("kernel_shape", &[3, 3]),
                attr::ints("pads", &[1, 1, 1, 1]),
            ],
        );
    let model = batch_norm(
        norm_params(b, 4, 10),
        "c",
        "y",
        vec![attr::float("epsilon", 1e-3)],
    )
    .output("y", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
    .model();
    let f = fold(model.clone());
    insta::assert_snapshot!(f.snapshot);
    assert_eq!(f.counts(), (1, 1, 0));
    assert_eq!(f.count("BatchNormalization"), 0);
    assert_eq!(f.count("Conv"), 1);
    assert_eq!(
        f.count("Mul") + f.count("Add"),
        0,
        "nothing left beside the Conv"
    );
    assert_ne!(
        input_name(&f.after, "Conv", 1),
        "w",
        "the weights are folded"
    );
    assert_ne!(
        input_name(&f.after, "Conv", 2),
        "bias",
        "the bias is folded"
    );
    assert_same_function(&model, &f.after, &[images(4)]);
}

#[test]
fn batch_norm_after_grouped_conv_transpose_folds_per_group() {
    // Weight [C_in = 4, C_out / group = 3, 3, 3], group 2: 6 output channels, the first 3
    // from input channels 0–1, the last 3 from 2–3. No bias: the shift becomes the bias.
    let b = image(4).init("w", data(&[4, 3, 3, 3], 1, 0.5)).node_with(
        "ConvTranspose",
        &["x", "w"],
        &["c"],
        vec![
            attr::ints("kernel_shape", &[3, 3]),
            attr::ints("pads", &[1, 1, 1, 1]),
            attr::int("group", 2),
        ],
    );
    let model = batch_norm(norm_params(b, 6, 20), "c", "y", vec![])
        .output("y", F32, &[D::S("n"), D::N(6), D::N(6), D::N(6)])
        .model();
    let f = fold(model.clone());
    insta::assert_snapshot!(f.snapshot);
    assert_eq!(f.counts(), (1, 1, 0));
    assert_eq!(f.count("BatchNormalization"), 0);
    assert_eq!(f.count("ConvTranspose"), 1);
    assert_eq!(f.count("Mul") + f.count("Add"), 0);
    let text = model_to_text(&f.after).unwrap();
    assert!(text.contains("group: 2"), "{text}");
    assert_same_function(&model, &f.after, &[images(4)]);
}

#[test]
fn batch_norm_after_gemm_with_trans_b_folds_alpha_and_beta_too() {
    let b = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[6, 8], 1, 0.5))
        .init("bias", data(&[6], 2, 0.5))
        .node_with(
            "Gemm",
            &["x", "w", "bias"],
            &["h"],
            vec![
                attr::int("transB", 1),
                attr::float("alpha", 0.5),
                attr::float("beta", 2.0),
            ],
        );
    let model = batch_norm(norm_params(b, 6, 30), "h", "y", vec![])
        .output("y", F32, &[D::S("n"), D::N(6)])
        .model();
    let f = fold(model.clone());
    insta::assert_snapshot!(f.snapshot);
    assert_eq!(f.counts(), (1, 1, 0));
    assert_eq!(f.count("BatchNormalization"), 0);
    assert_eq!(f.count("Gemm"), 1);
    let text = model_to_text(&f.after).unwrap();
    assert!(
        text.contains("transB: 1") && text.contains("alpha: 1.0") && text.contains("beta: 1.0"),
        "{text}"
    );
    assert_same_function(&model, &f.after, &[data(&[5, 8], 0, 2.0)]);
}

#[test]
fn standalone_batch_norm_becomes_mul_and_add_by_channel_constants() {
    let model = batch_norm(norm_params(image(4), 4, 40), "x", "y", vec![])
        .output("y", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
        .model();
    let f = fold(model.clone());
    insta::assert_snapshot!(f.snapshot);
    assert_eq!(f.counts(), (1, 1, 0));
    assert_eq!(f.count("BatchNormalization"), 0);
    assert_eq!((f.count("Mul"), f.count("Add")), (1, 1));
    let text = model_to_text(&f.after).unwrap();
    assert!(text.contains("scale = f32[4,1,1]"), "{text}");
    assert!(text.contains("shift = f32[4,1,1]"), "{text}");
    assert_same_function(&model, &f.after, &[images(4)]);
}

#[test]
fn batch_norm_of_a_conv_output_read_elsewhere_is_not_folded_into_the_conv() {
    // The Conv's output is also a Relu's input: folding would change what the Relu reads,
    // so the normalization becomes Mul + Add and the Conv keeps its weights.
    let b = image(4)
        .init("w", data(&[4, 4, 1, 1], 1, 0.5))
        .node_with(
            "Conv",
            &["x", "w"],
            &["c"],
            vec![attr::ints("kernel_shape", &[1, 1])],
        )
        .node("Relu", &["c"], &["r"]);
    let model = batch_norm(norm_params(b, 4, 50), "c", "y", vec![])
        .output("y", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
        .output("r", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
        .model();
    let f = fold(model.clone());
    insta::assert_snapshot!(f.snapshot);
    assert_eq!(f.counts(), (1, 1, 0));
    assert_eq!(f.count("BatchNormalization"), 0);
    assert_eq!(
        input_name(&f.after, "Conv", 1),
        "w",
        "the Conv is unchanged"
    );
    assert_eq!((f.count("Mul"), f.count("Add")), (1, 1));
    assert_same_function(&model, &f.after, &[images(4)]);
}

#[test]
fn batch_norm_in_training_mode_is_kept() {
    let b = image(4).init("w", data(&[4, 4, 1, 1], 1, 0.5)).node_with(
        "Conv",
        &["x", "w"],
        &["c"],
        vec![attr::ints("kernel_shape", &[1, 1])],
    );
    let model = batch_norm(
        norm_params(b, 4, 60),
        "c",
        "y",
        vec![attr::int("training_mode", 1)],
    )
    .output("y", F32, &[D::S("n"), D::N(4), D::N(6), D::N(6)])
    .model();
    let f = fold(model);
    insta::assert_snapshot!(f.snapshot);
    assert_eq!(f.counts(), (0, 0, 1));
    assert!(
        f.remarked("training mode computes batch statistics"),
        "{:?}",
        f.report.remarks
    );
    assert_eq!(f.count("BatchNormalization"), 1);
    assert_eq!(input_name(&f.after, "Conv", 1), "w");
}

#[test]
fn batch_norm_of_unknown_rank_is_kept() {
    // An input declared without a shape: the Mul/Add constants' [C, 1, …] needs the rank.
    let mut b = norm_params(ModelBuilder::new(18), 4, 70);
    let mut x = value_info("x", DataType::Float, &[]);
    let mut y = value_info("y", DataType::Float, &[]);
    for v in [&mut x, &mut y] {
        if let Some(intone::schema::type_proto::Value::TensorType(t)) =
            v.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.shape = None;
        }
    }
    b.graph().input.push(x);
    b.graph().output.push(y);
    let model = batch_norm(b, "x", "y", vec![]).model();
    let f = fold(model);
    insta::assert_snapshot!(f.snapshot);
    assert_eq!(f.counts(), (0, 0, 1));
    assert!(
        f.remarked("the input's rank is unknown"),
        "{:?}",
        f.report.remarks
    );
    assert_eq!(f.count("BatchNormalization"), 1);
    assert_eq!(f.count("Mul"), 0);
}
