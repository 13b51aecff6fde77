//! `runner::sensitivity`: one probe model measures the output noise of every perturbation
//! alone (a weight replaced, a value rounded onto a grid), as the float model would compute it.

use intone::ir::Array;
use intone::runner::sensitivity::{Perturbation, Probe, output_noise};
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
            zero_point: 0,
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
    let probe = |samples: usize| Probe {
        set: &set,
        samples,
        objective: &[],
        context: &[],
    };
    let measured = output_noise(&model, probe(16), &sites).unwrap();

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
    let first = output_noise(&model, probe(1), &sites[..1]).unwrap()[0].unwrap();
    let one = noise(
        &y.slice(ndarray::s![0..1, ..]).to_owned(),
        &(x.slice(ndarray::s![0..1, ..]).dot(&r1).dot(&w2) + &bias),
    );
    assert!((first - one).abs() <= 1e-4 * one, "{first} vs {one}");
    // With the rounding of h as context (in the reference too), w2's replacement adds its
    // noise on top of it.
    let r2 = data(&[4, 2], 10, 0.5);
    let context = [sites[1].clone()];
    let on_top = output_noise(
        &model,
        Probe {
            context: &context,
            ..probe(16)
        },
        &[Perturbation::Weight {
            value: value("w2"),
            replacement: r2.clone(),
        }],
    )
    .unwrap()[0]
        .unwrap();
    let base = rounded.dot(&w2) + &bias;
    let expected = noise(&base, &(rounded.dot(&matrix(&r2)) + &bias));
    assert!(
        (on_top - expected).abs() <= 1e-4 * expected,
        "{on_top} vs {expected}"
    );
    // An objective that is not an output is a usage error that names the outputs.
    let wrong = ["z2".to_string()];
    let err = output_noise(
        &model,
        Probe {
            objective: &wrong,
            ..probe(16)
        },
        &sites,
    )
    .unwrap_err();
    assert!(err.to_string().contains("outputs: y"), "{err}");
}

/// x → MatMul w1 → Relu → MatMul w2 → y, and six samples of x.
fn two_layer_model() -> (intone::ir::Model, Array, Array, Array) {
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
    (model, x, w1, w2)
}

#[test]
fn measure_sensitivity_ranks_every_planned_weight_by_its_output_noise() {
    let (model, x, _, _) = two_layer_model();
    let mut options = calibrated(&[("x", x)]);
    options.sensitivity = Some(16);
    let case = crate::lowerings::lower(
        model.clone(),
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
    let mut names: Vec<&str> = ranked.iter().map(|s| s.value.as_str()).collect();
    names.sort();
    assert_eq!(names, ["w1", "w2"]);
    assert!(
        ranked
            .iter()
            .all(|s| s.kind == "weight" && s.terms == 1 && s.bits == 8)
    );
    assert!(ranked[0].output_noise >= ranked[1].output_noise && ranked[1].output_noise > 0.0);
    assert!(
        case.report
            .remarks
            .iter()
            .any(|r| r.message.contains("all of them at once")),
        "{:?}",
        case.report.remarks
    );
    // Without the flag: nothing measured.
    options.sensitivity = None;
    let quiet = crate::lowerings::lower(
        model,
        "calibrate,quantize,split-residual-groups",
        "measure-sensitivity",
        &options,
    );
    assert!(quiet.report.sensitivity.is_empty() && quiet.report.remarks.is_empty());
}

#[test]
fn compile_with_sensitivity_ranks_activations_on_the_grids_the_compiled_model_uses() {
    let (model, x, w1, w2) = two_layer_model();
    let dir = crate::tempdir();
    let (input, calib, output, report) = (
        dir.path().join("m.onnx"),
        dir.path().join("x.npy"),
        dir.path().join("m.int.onnx"),
        dir.path().join("r.json"),
    );
    intone::onnx::save(&model, &input).unwrap();
    intone::npy::write(&calib, &x).unwrap();
    let out = crate::intone()
        .args([
            "compile",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ])
        .args([
            "--pipeline",
            "linear",
            "--sensitivity",
            "--report",
            report.to_str().unwrap(),
        ])
        .arg(format!("--calibrate=x={}", calib.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sensitivity on 6 samples"), "{stderr}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let ranked = json["sensitivity"]["ranked"].as_array().unwrap();
    let row = |name: &str| ranked.iter().find(|r| r["value"] == name).cloned();
    let kinds: Vec<(&str, &str)> = ranked
        .iter()
        .map(|r| (r["value"].as_str().unwrap(), r["kind"].as_str().unwrap()))
        .collect();
    for expected in [("x", "activation"), ("w1", "weight"), ("w2", "weight")] {
        assert!(kinds.contains(&expected), "{kinds:?}");
    }
    let noises: Vec<f64> = ranked
        .iter()
        .map(|r| r["output_noise"].as_f64().unwrap())
        .collect();
    assert!(noises.windows(2).all(|p| p[0] >= p[1]), "{noises:?}");
    // The input's row is the compiled model's own grid for it (the value map), applied alone.
    let compiled = intone::onnx::load(&output).unwrap();
    let map = intone::lower::value_map::read(&compiled).unwrap();
    let entry = map
        .iter()
        .filter(|e| e.source == "x" && e.bits <= 16)
        .max_by(|a, b| a.scale[0].total_cmp(&b.scale[0]))
        .unwrap();
    let (s, zp) = (entry.scale[0], entry.zero_point as f64);
    let (lo, hi) = if zp == 0.0 {
        (-127.0, 127.0)
    } else {
        (0.0, 255.0)
    };
    let (x, w1, w2) = (matrix(&x), matrix(&w1), matrix(&w2));
    let forward = |x: &Array2<f64>| x.dot(&w1).mapv(|v| v.max(0.0)).dot(&w2);
    let rounded = x.mapv(|v| ((v / s).round_ties_even() + zp).clamp(lo, hi) * s - zp * s);
    let expected = noise(&forward(&x), &forward(&rounded));
    let got = row("x").unwrap()["output_noise"].as_f64().unwrap();
    assert!(
        (got - expected).abs() <= 1e-3 * expected,
        "{got} vs {expected}"
    );
}

#[test]
fn a_model_that_fixes_its_batch_is_measured_in_batches_of_that_size() {
    // Batch 2 declared, 5 samples: batches (0, 1), (2, 3), (4, 0).
    let (x, w, r) = (
        data(&[5, 3], 11, 1.0),
        data(&[3, 2], 12, 0.5),
        data(&[3, 2], 13, 0.5),
    );
    let model = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2), D::N(3)])
        .init("w", w.clone())
        .node("MatMul", &["x", "w"], &["y"])
        .output("y", F32, &[D::N(2), D::N(2)])
        .model();
    let sites = [Perturbation::Weight {
        value: model.graph.find_value("w").unwrap(),
        replacement: r.clone(),
    }];
    let options = calibrated(&[("x", x.clone())]);
    let probe = Probe {
        set: options.calibration.as_ref().unwrap(),
        samples: 16,
        objective: &[],
        context: &[],
    };
    let got = output_noise(&model, probe, &sites).unwrap()[0].unwrap();
    let rows = x.to_f64_vec();
    let x = Array2::from_shape_fn((6, 3), |(i, j)| rows[(i % 5) * 3 + j]);
    let expected = noise(&x.dot(&matrix(&w)), &x.dot(&matrix(&r)));
    assert!(
        (got - expected).abs() <= 1e-4 * expected,
        "{got} vs {expected}"
    );
}
