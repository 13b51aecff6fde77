//! `runner::sensitivity`: one probe model measures the output noise of every perturbation
//! alone (a weight replaced, a value rounded onto a grid), as the float model would compute it.

use intone::ir::Array;
use intone::runner::sensitivity::{Perturbation, output_noise};
use ndarray::Array2;

use crate::build::*;
use crate::lowerings::{calibrated, data};

fn matrix(a: &Array) -> Array2<f64> {
    let v = a.to_f64_vec();
    Array2::from_shape_vec((a.shape()[0], a.shape()[1]), v).unwrap()
}

fn noise(reference: &Array2<f64>, perturbed: &Array2<f64>) -> f64 {
    (reference - perturbed).mapv(|d| d * d).sum() / reference.mapv(|y| y * y).sum()
}

#[test]
fn each_perturbation_alone_gives_the_output_noise_the_float_model_would_show() {
    let (x, w1, w2, r1) = (
        data(&[5, 3], 1, 1.0),
        data(&[3, 4], 2, 0.5),
        data(&[4, 2], 3, 0.5),
        data(&[3, 4], 4, 0.5),
    );
    let model = ModelBuilder::new(17)
        .input("x", F32, &[D::S("n"), D::N(3)])
        .init("w1", w1.clone())
        .init("w2", w2.clone())
        .init("bias", data(&[2], 5, 1.0))
        .node("MatMul", &["x", "w1"], &["h"])
        .node("MatMul", &["h", "w2"], &["z"])
        .node("Add", &["z", "bias"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(2)])
        .model();
    let g = &model.graph;
    let value = |name: &str| g.find_value(name).unwrap();
    let sites = vec![
        Perturbation::Weight {
            value: value("w1"),
            replacement: r1.clone(),
        },
        Perturbation::Grid {
            value: value("h"),
            scale: 0.25,
            lo: -3,
            hi: 3,
        },
        // The weight itself: no noise at all.
        Perturbation::Weight {
            value: value("w2"),
            replacement: w2.clone(),
        },
        // Read by an Add, not a matmul: nothing to perturb.
        Perturbation::Weight {
            value: value("bias"),
            replacement: data(&[2], 6, 1.0),
        },
    ];
    let options = calibrated(&[("x", x.clone())]);
    let set = options.calibration.as_ref().unwrap();
    // Two samples per run: the last batch is smaller (its own plan).
    let set = intone::pass::CalibrationSet {
        batch: 2,
        ..set.clone()
    };
    let measured = output_noise(&model, &set, &sites, 16).unwrap();

    let (x, w1, w2, r1) = (matrix(&x), matrix(&w1), matrix(&w2), matrix(&r1));
    let bias = ndarray::Array1::from(data(&[2], 5, 1.0).to_f64_vec());
    let h = x.dot(&w1);
    let y = h.dot(&w2) + &bias;
    let rounded = h.mapv(|v| ((v / 0.25).round_ties_even().clamp(-3.0, 3.0)) * 0.25);
    let expected = [
        noise(&y, &(x.dot(&r1).dot(&w2) + &bias)),
        noise(&y, &(rounded.dot(&w2) + &bias)),
    ];
    for (i, e) in expected.iter().enumerate() {
        let got = measured[i].unwrap();
        assert!(*e > 1e-3, "site {i}: the perturbation should matter");
        assert!((got - e).abs() <= 1e-4 * e, "site {i}: {got} vs {e}");
    }
    assert_eq!(measured[2], Some(0.0));
    assert_eq!(measured[3], None);
    // Fewer samples than the set holds: only those count.
    let first = output_noise(&model, &set, &sites[..1], 1).unwrap()[0].unwrap();
    let one = noise(
        &y.slice(ndarray::s![0..1, ..]).to_owned(),
        &(x.slice(ndarray::s![0..1, ..]).dot(&r1).dot(&w2) + &bias),
    );
    assert!((first - one).abs() <= 1e-4 * one, "{first} vs {one}");
}

#[test]
fn measure_sensitivity_ranks_every_planned_value_by_its_output_noise() {
    let (x, w1, w2) = (
        data(&[6, 3], 7, 1.0),
        data(&[3, 4], 8, 0.5),
        data(&[4, 2], 9, 0.5),
    );
    let model = ModelBuilder::new(17)
        .input("x", F32, &[D::S("n"), D::N(3)])
        .init("w1", w1.clone())
        .init("w2", w2.clone())
        .node("MatMul", &["x", "w1"], &["h"])
        .node("Relu", &["h"], &["r"])
        .node("MatMul", &["r", "w2"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(2)])
        .model();
    let mut options = calibrated(&[("x", x.clone())]);
    options.sensitivity = Some(16);
    let case = crate::lowerings::lower(
        model,
        "calibrate,quantize,split-residual-groups",
        "measure-sensitivity",
        &options,
    );
    // An analysis: the graph is as it was.
    assert_eq!(
        intone::onnx::text::model_to_text(&case.after).unwrap(),
        case.before
    );
    let ranked = &case.report.sensitivity;
    let names: Vec<(&str, &str)> = ranked
        .iter()
        .map(|s| (s.value.as_str(), s.kind.as_str()))
        .collect();
    for expected in [("x", "activation"), ("w1", "weight"), ("w2", "weight")] {
        assert!(names.contains(&expected), "{names:?}");
    }
    assert!(
        ranked
            .windows(2)
            .all(|p| p[0].output_noise >= p[1].output_noise),
        "{ranked:?}"
    );
    assert!(ranked.iter().all(|s| s.output_noise > 0.0), "{ranked:?}");
    assert!(
        case.report
            .remarks
            .iter()
            .any(|r| r.message.contains("all of them at once")),
        "{:?}",
        case.report.remarks
    );
    // The input's row is its planned grid applied to it alone.
    let g = &case.after.graph;
    let plan = g.value(g.find_value("x").unwrap()).plan.clone().unwrap();
    let intone::ir::quant::Scale::PerTensor(s) = plan.scale else {
        panic!("per-tensor input plan")
    };
    let levels = plan.levels() as f64;
    let lo = if plan.signed { -levels } else { 0.0 };
    let (x, w1, w2) = (matrix(&x), matrix(&w1), matrix(&w2));
    let forward = |x: &Array2<f64>| x.dot(&w1).mapv(|v| v.max(0.0)).dot(&w2);
    let rounded = x.mapv(|v| (v / s).round_ties_even().clamp(lo, levels) * s);
    let expected = noise(&forward(&x), &forward(&rounded));
    let got = ranked.iter().find(|r| r.value == "x").unwrap();
    assert!(
        (got.output_noise - expected).abs() <= 1e-3 * expected,
        "{} vs {expected}",
        got.output_noise
    );
    assert_eq!(got.output_sqnr_db, Some(-10.0 * got.output_noise.log10()));
}
