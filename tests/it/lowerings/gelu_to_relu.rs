//! `replace-gelu-with-relu`: GELU becomes ReLU, and the next layer compensates, by its bias
//! (the Gaussian mean shift) or by a ridge least-squares refit of its weight and bias.

use intone::ir::{Array, Model};

use super::*;
use crate::build::*;

/// `Gelu(x·W1 + b1)·W2 + b2`, an MLP block (hidden 24, outputs 20: the biases print as counts).
fn mlp() -> Model {
    ModelBuilder::new(20)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w1", data(&[8, 24], 1, 0.6))
        .init("b1", data(&[24], 2, 0.5))
        .init("w2", data(&[24, 20], 3, 0.4))
        .init("b2", data(&[20], 4, 0.3))
        .node("MatMul", &["x", "w1"], &["h"])
        .node("Add", &["h", "b1"], &["hb"])
        .node("Gelu", &["hb"], &["g"])
        .node("MatMul", &["g", "w2"], &["o"])
        .node("Add", &["o", "b2"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(20)])
        .model()
}

fn calibration() -> Array {
    data(&[96, 8], 10, 2.0)
}

fn outputs(model: &Model, x: &Array) -> Array {
    let out = Runner::new(model).unwrap().run(&[x.clone()], None).unwrap();
    out.into_iter().next().unwrap().1
}

/// `Σ(a − b)² / Σa²`.
fn relative_error(want: &Array, got: &Array) -> f64 {
    let (w, g) = (want.to_f64_vec(), got.to_f64_vec());
    let noise: f64 = w.iter().zip(&g).map(|(a, b)| (a - b).powi(2)).sum();
    noise / w.iter().map(|a| a * a).sum::<f64>()
}

fn relu_model(spec: &str) -> Case {
    lower(
        mlp(),
        "calibrate",
        spec,
        &calibrated(&[("x", calibration())]),
    )
}

#[test]
fn relu_bias_correction_adds_the_mean_shift_to_the_next_bias() {
    let case = relu_model("replace-gelu-with-relu(correct-relu-bias=true)");
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    assert_eq!(case.after_count("Gelu"), 0);
    assert_eq!(case.after_count("Relu"), 1);
}

#[test]
fn relu_refit_fits_the_next_layer_to_the_gelu_model() {
    let refit = relu_model("replace-gelu-with-relu(refit=true)");
    insta::assert_snapshot!(refit.snapshot());
    assert_eq!(refit.counts(), (1, 1, 0));
    assert!(
        refit
            .remarks()
            .iter()
            .any(|r| r.contains("refitted by least squares: 480 weights, 20 bias values")),
        "{:?}",
        refit.remarks()
    );
    let corrected = relu_model("replace-gelu-with-relu(correct-relu-bias=true)");
    let plain = relu_model("replace-gelu-with-relu");
    // On the calibration rows (where it is the least-squares optimum, up to the ridge) and on
    // other rows, the refit is closer to the GELU model than the bias correction, and that
    // closer than the plain replacement.
    for x in [calibration(), data(&[64, 8], 11, 2.0)] {
        let want = outputs(&mlp(), &x);
        let [r, c, p] =
            [&refit, &corrected, &plain].map(|m| relative_error(&want, &outputs(&m.after, &x)));
        assert!(r < c && c < p, "refit {r:e}, bias {c:e}, plain {p:e}");
    }
}

#[test]
fn relu_refit_leaves_a_gelu_without_a_constant_next_layer() {
    // The GELU output is a graph output: nothing to refit (and no bias to correct).
    let model = ModelBuilder::new(20)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .node("Gelu", &["x"], &["g"])
        .output("g", F32, &[D::S("n"), D::N(8)])
        .model();
    let case = lower(
        model,
        "calibrate",
        "replace-gelu-with-relu(refit=true)",
        &calibrated(&[("x", calibration())]),
    );
    insta::assert_snapshot!(case.snapshot());
    assert!(
        case.remarks().iter().any(|r| r.contains("not refitted")),
        "{:?}",
        case.remarks()
    );
}

#[test]
fn relu_refit_needs_calibration_samples_and_a_positive_ridge() {
    let pipeline = Pipeline::parse("replace-gelu-with-relu(refit=true,ridge=0)", PASSES).unwrap();
    let err = Manager::new(&pipeline, PASSES).err().unwrap().to_string();
    assert!(err.contains("ridge=0 must be positive"), "{err}");
    let pipeline = Pipeline::parse("replace-gelu-with-relu(refit=true)", PASSES).unwrap();
    let mut manager = Manager::new(&pipeline, PASSES).unwrap();
    let err = manager
        .run(&mut mlp(), &CompileOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("refit needs calibration samples"), "{err}");
}
