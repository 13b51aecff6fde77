//! `smooth-layer-norm`: a LayerNorm output's outlier channels move into the weights of the
//! MatMuls that read it (SmoothQuant), exactly in float.

use intone::ir::Array;
use intone::quant::Observer;

use super::*;
use crate::build::*;

const SPEC: &str = "smooth-layer-norm";

fn x() -> Array {
    data(&[3, 4, 8], 0, 2.0)
}

/// γ with one outlier channel (20× the others).
fn gamma() -> Array {
    let mut g = vec![1.0f32; 8];
    g[5] = 20.0;
    Array::from_vec(&[8], g).unwrap()
}

/// `LayerNorm(x)·W1` and `LayerNorm(x)·W2` (an attention block's projections), or with
/// `residual` also `LayerNorm(x) + x` (a post-LN transformer's residual stream).
fn layer_norm_into_matmuls(residual: bool) -> intone::ir::Model {
    let mut b = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(4), D::N(8)])
        .init("gamma", gamma())
        .init("beta", data(&[8], 3, 0.5))
        .init("w1", data(&[8, 6], 1, 0.3))
        .init("w2", data(&[8, 6], 2, 0.3))
        .node_with(
            "LayerNormalization",
            &["x", "gamma", "beta"],
            &["y"],
            vec![attr::int("axis", -1)],
        )
        .node("MatMul", &["y", "w1"], &["q"])
        .node("MatMul", &["y", "w2"], &["k"])
        .output("q", F32, &[D::S("n"), D::N(4), D::N(6)])
        .output("k", F32, &[D::S("n"), D::N(4), D::N(6)]);
    if residual {
        b = b
            .node("Add", &["y", "x"], &["r"])
            .output("r", F32, &[D::S("n"), D::N(4), D::N(8)]);
    }
    b.model()
}

fn outputs(model: &intone::ir::Model, inputs: &[Array]) -> Vec<(String, Array)> {
    Runner::new(model).unwrap().run(inputs, None).unwrap()
}

#[test]
fn smooth_layer_norm_moves_outlier_channels_into_the_matmul_weights() {
    let model = layer_norm_into_matmuls(false);
    let case = lower(model.clone(), "calibrate", SPEC, &calibrated(&[("x", x())]));
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 1, 0));
    // Exact in float: the same outputs up to f32 rounding, on other inputs too.
    let inputs = [data(&[2, 4, 8], 7, 3.0)];
    for ((name, want), (_, got)) in outputs(&model, &inputs)
        .iter()
        .zip(outputs(&case.after, &inputs))
    {
        let err = relative_to_peak(want, &got);
        assert!(err < 1e-5, "{name}: {err}");
    }
    // The LayerNorm output's range shrank, and its statistics say so.
    // It has a new name: it no longer stands for the float model's y.
    let g = &case.after.graph;
    assert!(g.find_value("y").is_none());
    let y = g.find_value("y/smoothed").unwrap();
    let stats = g.value(y).stats.clone().unwrap();
    let plain = lower(model, "", "calibrate", &calibrated(&[("x", x())]));
    let g = &plain.after.graph;
    let original = g.value(g.find_value("y").unwrap()).stats.clone().unwrap();
    assert!(
        stats.abs_max() < 0.5 * original.abs_max(),
        "{} vs {}",
        stats.abs_max(),
        original.abs_max()
    );
}

#[test]
fn smooth_layer_norm_leaves_a_layer_norm_whose_output_is_also_summed() {
    // A residual Add reads y as it is: its channels cannot be rescaled.
    let case = lower(
        layer_norm_into_matmuls(true),
        "calibrate",
        SPEC,
        &calibrated(&[("x", x())]),
    );
    insta::assert_snapshot!(case.snapshot());
    assert_eq!(case.counts(), (1, 0, 1));
    assert!(
        case.report
            .remarks
            .iter()
            .any(|r| r.message.contains("not only by MatMuls")),
        "{:?}",
        case.report.remarks
    );
}

#[test]
fn per_channel_statistics_divided_equal_the_statistics_of_the_divided_values() {
    let rows: Vec<f32> = data(&[5, 4], 9, 3.0)
        .to_f64_vec()
        .iter()
        .map(|&v| v as f32)
        .collect();
    let divisors = [0.5, 2.0, 4.0, 1.0];
    let mut observed = Observer::per_channel(false);
    observed.observe_rows(&rows[..8], 4);
    let mut rest = Observer::per_channel(false);
    rest.observe_rows(&rows[8..], 4);
    observed.merge(&rest);
    let divided: Vec<f32> = rows
        .iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 / divisors[i % 4]) as f32)
        .collect();
    let mut direct = Observer::per_channel(false);
    direct.observe_rows(&divided, 4);
    let derived = observed.divided_per_channel(&divisors).unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(1.0);
    assert!(
        close(derived.min, direct.min),
        "{} {}",
        derived.min,
        direct.min
    );
    assert!(close(derived.max, direct.max));
    assert!(close(derived.sum, direct.sum));
    assert!(close(derived.sum_squares, direct.sum_squares));
    assert_eq!(derived.count, direct.count);
    // A flat observer keeps no channels, and an observer that missed rows has none to give.
    let mut flat = Observer::new(false);
    flat.observe_rows(&rows, 4);
    assert!(flat.divided_per_channel(&divisors).is_none());
}
