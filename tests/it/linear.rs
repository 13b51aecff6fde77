//! The `linear` pipeline end to end: fixtures compile, pass the ONNX checker, run in tract and
//! onnxruntime, keep no float matmul with a constant weight, agree with float; requantizations
//! equal the reference kernel on real activations; `intone check` finds a broken layer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use intone::ir::{Array, Model, NodeKind};
use intone::quant::requant::RequantParams;
use intone::runner::Runner;

use crate::{Cpu, fixture, intone, oracle, oracle_on, root, tempdir};

/// Digits data from `../shared/models/data`: (calibration: 256 training images, test images,
/// test labels).
pub fn digits() -> (Array, Array, Vec<i64>) {
    let data = root().join("../shared/models/data");
    let x = intone::npy::read(&data.join("digits_norm_f32_1x8x8.npy")).unwrap();
    let perm = intone::npy::read(&data.join("digits_split_perm_seed0.npy"))
        .unwrap()
        .to_i64_vec()
        .unwrap();
    let labels = intone::npy::read(&data.join("digits_labels.npy"))
        .unwrap()
        .to_i64_vec()
        .unwrap();
    let Array::F32(x) = x else {
        panic!("digits are f32")
    };
    let rows = |idx: &[i64]| {
        let idx: Vec<usize> = idx.iter().map(|&i| i as usize).collect();
        Array::F32(x.select(ndarray::Axis(0), &idx))
    };
    let test = &perm[perm.len() - 360..];
    (
        rows(&perm[..256]),
        rows(test),
        test.iter().map(|&i| labels[i as usize]).collect(),
    )
}

/// Compiles with the CLI; returns the output path (and fails on error).
pub fn compile(model: &Path, out: &Path, extra: &[&str]) -> PathBuf {
    let o = intone()
        .arg("compile")
        .arg(model)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}: {}",
        model.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    out.to_path_buf()
}

fn argmax_rows(a: &Array) -> Vec<usize> {
    let v = a.to_f64_vec();
    let cols = a.shape()[1];
    v.chunks(cols)
        .map(|r| (0..cols).fold(0, |b, j| if r[j] > r[b] { j } else { b }))
        .collect()
}

/// Ops that are float matmuls with a constant weight (there must be none).
fn float_weight_matmuls(model: &Model) -> Vec<String> {
    let g = &model.graph;
    g.node_ids()
        .filter(|&id| {
            g.op(id)
                .is_some_and(|op| op.is("MatMul") || op.is("Gemm") || op.is("Conv"))
        })
        .filter(|&id| g.input(id, 1).is_some_and(|w| g.constant(w).is_some()))
        .map(|id| g.describe(id))
        .collect()
}

/// The named (intermediate) values of `model` on one input, computed by tract and by
/// onnxruntime (which sees them as extra graph outputs).
pub fn values_in_both_engines(
    model: &mut Model,
    names: &[String],
    input: (&str, &Array),
    dir: &Path,
) -> (HashMap<String, Array>, HashMap<String, Array>) {
    let tract = Runner::new(model)
        .unwrap()
        .run(std::slice::from_ref(input.1), Some(names))
        .unwrap()
        .into_iter()
        .collect();
    for name in names {
        let v = model
            .graph
            .find_value(name)
            .unwrap_or_else(|| panic!("no value {name} in the compiled model"));
        if !model.graph.is_graph_output(v) {
            model.graph.add_output(v);
        }
    }
    let exposed = dir.join("exposed.onnx");
    intone::onnx::save(model, &exposed).unwrap();
    let ort = run_ort(&exposed, &[input], dir).into_iter().collect();
    (tract, ort)
}

/// Runs a saved model in onnxruntime; returns its outputs by name.
pub fn run_ort(model: &Path, inputs: &[(&str, &Array)], dir: &Path) -> Vec<(String, Array)> {
    run_ort_on(Cpu::Native, model, inputs, dir)
}

/// [`run_ort`] on a chosen (possibly emulated) CPU.
pub fn run_ort_on(
    cpu: Cpu,
    model: &Path,
    inputs: &[(&str, &Array)],
    dir: &Path,
) -> Vec<(String, Array)> {
    let out_dir = dir.join(format!("ort-{cpu:?}"));
    let mut args = vec![
        model.to_str().unwrap().to_string(),
        out_dir.to_str().unwrap().to_string(),
    ];
    for (name, a) in inputs {
        let p = dir.join(format!("{name}.npy"));
        intone::npy::write(&p, a).unwrap();
        args.push(format!("{name}={}", p.display()));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let names = oracle_on(cpu, "run_ort.py", &refs, "");
    names
        .lines()
        .map(|n| {
            let safe: String = n
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() || ".-_".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            (
                n.to_string(),
                intone::npy::read(&out_dir.join(format!("{safe}.npy"))).unwrap(),
            )
        })
        .collect()
}

#[test]
fn digits_vits_compile_to_integer_matmuls_that_agree_with_float() {
    let (calib, test, labels) = digits();
    let dir = tempdir();
    let calib_path = dir.path().join("calib.npy");
    intone::npy::write(&calib_path, &calib).unwrap();
    let mut written = String::new();
    for name in ["digits_vit_opset13", "digits_vit_opset17"] {
        let out = compile(
            &fixture(&format!("{name}.onnx")),
            &dir.path().join(format!("{name}.int.onnx")),
            &[
                "--pipeline",
                "linear",
                "--calibrate",
                &format!("pixels={}", calib_path.display()),
            ],
        );
        written.push_str(&format!("{}\n", out.display()));
        let float = intone::onnx::load(&fixture(&format!("{name}.onnx"))).unwrap();
        let compiled = intone::onnx::load(&out).unwrap();
        assert!(
            float_weight_matmuls(&compiled).is_empty(),
            "{name}: {:?}",
            float_weight_matmuls(&compiled)
        );
        let ints = compiled
            .graph
            .node_ids()
            .filter(|&id| compiled.graph.op(id).is_some_and(|o| o.is("MatMulInteger")))
            .count();
        assert_eq!(
            ints,
            28 + 1,
            "{name}: 4 blocks × (qkv, q·k, p·v as two terms of 16-bit probabilities, proj, fc1, fc2) + head"
        );

        let expected = Runner::new(&float)
            .unwrap()
            .run(std::slice::from_ref(&test), None)
            .unwrap();
        let tract = Runner::new(&compiled)
            .unwrap()
            .run(std::slice::from_ref(&test), None)
            .unwrap();
        let ort = run_ort(&out, &[("pixels", &test)], dir.path());
        let (f, t, o) = (
            argmax_rows(&expected[0].1),
            argmax_rows(&tract[0].1),
            argmax_rows(&ort[0].1),
        );
        let agree = |a: &[usize], b: &[usize]| {
            a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
        };
        // Correctness smoke checks; accuracy itself is measured by the benchmark.
        assert!(
            agree(&f, &t) >= 0.97,
            "{name}: int and float predictions agree on only {}",
            agree(&f, &t)
        );
        assert!(
            agree(&t, &o) >= 0.99,
            "{name}: tract and onnxruntime disagree: {}",
            agree(&t, &o)
        );
        let correct = t
            .iter()
            .zip(&labels)
            .filter(|(p, l)| **p as i64 == **l)
            .count();
        assert!(correct >= 340, "{name}: {correct}/360 correct");
    }
    let report = oracle("check_models.py", &[], &written);
    assert!(report.contains(" 0 failed"), "{report}");
}

/// Sample inputs of a fixture, as calibration data and as test inputs.
pub fn fixture_inputs(stem: &str, model: &Model) -> Vec<(String, PathBuf, Array)> {
    let g = &model.graph;
    g.inputs()
        .iter()
        .filter(|&&id| matches!(g.node(id).kind, NodeKind::Input(_)))
        .map(|&id| {
            let name = g.node(id).outputs[0].name.clone();
            let path = fixture("data").join(stem).join(format!("{name}.npy"));
            let a = intone::npy::read(&path).unwrap();
            (name, path, a)
        })
        .collect()
}

#[test]
fn tiny_transformer_exports_compile_and_run_in_both_engines() {
    let dir = tempdir();
    let mut written = String::new();
    for stem in [
        "vit_tiny_opset13",
        "deit_tiny_opset17",
        "swin_tiny_opset13",
        "bert_tiny_opset13",
        "bert_tiny_opset17",
        "gpt2_tiny_opset13",
        "gpt2_tiny_opset17",
        "gelu_opset20",
    ] {
        let float = intone::onnx::load(&fixture(&format!("{stem}.onnx"))).unwrap();
        let inputs = fixture_inputs(stem, &float);
        let mut args = vec![
            "--pipeline".to_string(),
            "linear".to_string(),
            "--calibration-batch".into(),
            "1".into(),
        ];
        for (name, path, _) in &inputs {
            args.push("--calibrate".into());
            args.push(format!("{name}={}", path.display()));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = compile(
            &fixture(&format!("{stem}.onnx")),
            &dir.path().join(format!("{stem}.int.onnx")),
            &refs,
        );
        written.push_str(&format!("{}\n", out.display()));
        let compiled = intone::onnx::load(&out).unwrap();
        assert!(
            float_weight_matmuls(&compiled).is_empty(),
            "{stem}: {:?}",
            float_weight_matmuls(&compiled)
        );
        let arrays: Vec<Array> = inputs.iter().map(|(_, _, a)| a.clone()).collect();
        let expected = Runner::new(&float).unwrap().run(&arrays, None).unwrap();
        let tract = Runner::new(&compiled).unwrap().run(&arrays, None).unwrap();
        let named: Vec<(&str, &Array)> = inputs.iter().map(|(n, _, a)| (n.as_str(), a)).collect();
        let ort = run_ort(&out, &named, dir.path());
        for ((name, e), ((_, t), (_, o))) in expected.iter().zip(tract.iter().zip(&ort)) {
            let cos = intone::runner::agreement(&e.to_f64_vec(), &t.to_f64_vec(), e.shape())
                .unwrap()
                .cosine;
            // Two calibration samples: a smoke test of the wiring, not of accuracy.
            assert!(
                cos > 0.9,
                "{stem}: output {name} cosine {cos} against float"
            );
            let engines =
                intone::runner::agreement(&t.to_f64_vec(), &o.to_f64_vec(), t.shape()).unwrap();
            assert!(
                engines.cosine > 0.999,
                "{stem}: tract and onnxruntime differ on {name}: {engines:?}"
            );
        }
    }
    let report = oracle("check_models.py", &[], &written);
    assert!(report.contains(" 0 failed"), "{report}");
}

#[test]
fn compiles_are_byte_identical_with_identical_reports() {
    let (calib, _, _) = digits();
    let dir = tempdir();
    let calib_path = dir.path().join("calib.npy");
    intone::npy::write(&calib_path, &calib).unwrap();
    let run_with = |tag: &str, pipeline: &str| {
        let out = dir.path().join(format!("{tag}.onnx"));
        let report = dir.path().join(format!("{tag}.json"));
        compile(
            &fixture("digits_vit_opset17.onnx"),
            &out,
            &[
                "--pipeline",
                pipeline,
                "--calibrate",
                &format!("pixels={}", calib_path.display()),
                "--report",
                report.to_str().unwrap(),
            ],
        );
        (
            std::fs::read(out).unwrap(),
            std::fs::read_to_string(report).unwrap().replace(tag, "RUN"),
        )
    };
    // The integer-only pipeline too (its tables, roots and folds are deterministic).
    let (a, ra) = run_with("first_ivit", "ivit");
    let (b, rb) = run_with("second_ivit", "ivit");
    assert!(a == b, "ivit: compiled models differ");
    assert_eq!(ra.replace("first", "X"), rb.replace("second", "X"));
    let run = |tag: &str| run_with(tag, "linear");
    let (a, ra) = run("first_run");
    let (b, rb) = run("second_run");
    assert!(a == b, "compiled models differ");
    assert_eq!(ra, rb);
    let report: serde_json::Value = serde_json::from_str(&ra).unwrap();
    let quantize = report["passes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pass"] == "quantize")
        .unwrap();
    let values = quantize["values"].as_array().unwrap();
    assert!(values.len() > 100);
    assert!(
        values
            .iter()
            .all(|v| v["scale"].as_f64().unwrap() > 0.0 && v["bits"].as_u64().is_some())
    );
    assert!(
        report["float_ops"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["op"] == "Softmax")
    );
}

#[test]
fn requantizations_equal_the_reference_kernel_on_real_activations() {
    let (calib, test, _) = digits();
    let dir = tempdir();
    let calib_path = dir.path().join("calib.npy");
    intone::npy::write(&calib_path, &calib).unwrap();
    let calibrate = format!("pixels={}", calib_path.display());
    // Before legalization the requantizations are intone.Requant nodes with their parameters;
    // after it they are standard ops, and keep their value names.
    let before = compile(
        &fixture("digits_vit_opset13.onnx"),
        &dir.path().join("a.onnx"),
        &[
            "--pipeline",
            "linear",
            "--calibrate",
            &calibrate,
            "--stop-after",
            "fold-dyadic-requant",
        ],
    );
    let after = compile(
        &fixture("digits_vit_opset13.onnx"),
        &dir.path().join("b.onnx"),
        &["--pipeline", "linear", "--calibrate", &calibrate],
    );
    let before = intone::onnx::load(&before).unwrap();
    let mut after = intone::onnx::load(&after).unwrap();
    let g = &before.graph;
    let requants: Vec<(RequantParams, String, String)> = g
        .topological_order()
        .unwrap()
        .into_iter()
        .filter_map(|id| {
            let op = g.op(id)?;
            (op.domain() == "intone").then(|| {
                let x = g.value_name(g.input(id, 0).unwrap()).to_string();
                let y = g
                    .value_name(intone::ir::ValueId { node: id, slot: 0 })
                    .to_string();
                (intone::ops::intone::requant::from_op(op).unwrap(), x, y)
            })
        })
        .collect();
    assert!(requants.len() > 20, "{} requantizations", requants.len());
    // Expose every input and output as graph outputs, for tract and onnxruntime alike.
    let names: Vec<String> = requants
        .iter()
        .flat_map(|(_, x, y)| [x.clone(), y.clone()])
        .collect();
    let batch = Array::F32(
        test.as_array::<f32>()
            .unwrap()
            .slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..16))
            .to_owned(),
    );
    let (tract, ort) = values_in_both_engines(&mut after, &names, ("pixels", &batch), dir.path());
    // Each engine's requantizations equal the reference kernel on that engine's own inputs
    // (the inputs themselves can differ by a unit where a float op precedes them).
    for (params, x, y) in &requants {
        for (engine, values) in [("tract", &tract), ("onnxruntime", &ort)] {
            let input = values[x].to_i64_vec().unwrap();
            let expected = params.apply_all(&input, values[x].shape());
            assert_eq!(
                values[y].to_i64_vec().unwrap(),
                expected,
                "{engine}: requantization {x} -> {y}"
            );
        }
    }
}

#[test]
fn check_points_at_a_deliberately_broken_layer() {
    let (calib, test, _) = digits();
    let dir = tempdir();
    let calib_path = dir.path().join("calib.npy");
    let test_path = dir.path().join("test.npy");
    intone::npy::write(&calib_path, &calib).unwrap();
    intone::npy::write(&test_path, &test).unwrap();
    let good = compile(
        &fixture("digits_vit_opset17.onnx"),
        &dir.path().join("good.onnx"),
        &[
            "--pipeline",
            "linear",
            "--calibrate",
            &format!("pixels={}", calib_path.display()),
        ],
    );
    let check = |candidate: &Path, extra: &[&str]| {
        intone()
            .arg("check")
            .arg(fixture("digits_vit_opset17.onnx"))
            .arg(candidate)
            .arg(format!("--input=pixels={}", test_path.display()))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = check(
        &good,
        &[
            "--per-layer",
            "--json",
            "--min-cosine",
            "0.99",
            "--min-top1",
            "0.97",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["first_divergence"].is_null(),
        "{}",
        report["first_divergence"]
    );
    assert!(report["layers"].as_array().unwrap().len() > 100);

    // Break block 2's fc1: negate its int8 weights.
    let mut model = intone::onnx::load(&good).unwrap();
    // The value map says which integer value stands for block 2's fc1 product.
    let entry = intone::lower::value_map::read(&model)
        .unwrap()
        .into_iter()
        .find(|e| e.source == "/blocks/blocks.2/mlp/fc1/MatMul_output_0")
        .expect("fc1 of block 2 in the value map");
    let broken_value = entry.value.clone();
    let g = &model.graph;
    let target = g.find_value(&broken_value).unwrap().node;
    assert!(g.op(target).is_some_and(|o| o.is("MatMulInteger")));
    let weight = g.input(target, 1).unwrap();
    let NodeKind::Initializer(init) = &mut model.graph.node_mut(weight.node).kind else {
        panic!("weight initializer")
    };
    let Array::I8(w) = init.tensor.decode().unwrap() else {
        panic!("int8 weight")
    };
    let name = init.tensor.name().to_string();
    init.tensor = intone::ir::Tensor::from_array(name, &Array::I8(w.mapv(|v| v.saturating_neg())));
    let broken = dir.path().join("broken.onnx");
    intone::onnx::save(&model, &broken).unwrap();
    let out = check(&broken, &["--per-layer", "--json", "--min-cosine", "0.99"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a broken model must fail the threshold"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["first_divergence"], serde_json::json!(broken_value));
    // The human form says the same.
    let text = check(&broken, &["--per-layer"]);
    assert!(
        String::from_utf8_lossy(&text.stdout)
            .contains(&format!("first value below cosine 0.99: {broken_value}"))
    );
}

/// The calibrate pass's report entry and the observed range of every planned value.
fn calibration_of(report: &Path) -> (serde_json::Value, Vec<(String, f64, f64)>) {
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    let passes = r["passes"].as_array().unwrap();
    let calibrate = passes.iter().find(|p| p["pass"] == "calibrate").unwrap();
    let quantize = passes.iter().find(|p| p["pass"] == "quantize").unwrap();
    let ranges = quantize["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let o = v["observed"].as_array().unwrap();
            (
                v["value"].as_str().unwrap().to_string(),
                o[0].as_f64().unwrap(),
                o[1].as_f64().unwrap(),
            )
        })
        .collect();
    (calibrate.clone(), ranges)
}

#[test]
fn calibration_observes_every_sample_whatever_the_batch() {
    let data = root().join("../shared/models/data");
    let dir = tempdir();
    let l3 = root().join("../shared/models/paraphrase_minilm_l3_v2_opset17.onnx");
    let ids = data.join("wordsim353_word_input_ids.npy");
    let mask = data.join("wordsim353_word_attention_mask.npy");
    // 437 words: 13 batches of 32 and one of 21, or one batch of all of them.
    let mut ranges = Vec::new();
    for batch in ["32", "437", "1000"] {
        let report = dir.path().join(format!("l3.{batch}.json"));
        compile(
            &l3,
            &dir.path().join(format!("l3.{batch}.onnx")),
            &[
                "--pipeline",
                "linear",
                "--calibration-batch",
                batch,
                "--report",
                report.to_str().unwrap(),
                "--calibrate",
                &format!("input_ids={}", ids.display()),
                "--calibrate",
                &format!("attention_mask={}", mask.display()),
            ],
        );
        let (calibrate, observed) = calibration_of(&report);
        assert_eq!(calibrate["samples"], 437, "batch {batch}: {calibrate}");
        let remarks = calibrate["remarks"].to_string();
        let expected = match batch {
            "32" => "437 samples observed, in 13 batches of 32 and one of 21",
            _ => "437 samples observed, in 1 batch of 437",
        };
        assert!(remarks.contains(expected), "batch {batch}: {remarks}");
        if batch == "1000" {
            assert!(
                remarks.contains("437 samples, fewer than one batch of"),
                "{remarks}"
            );
        }
        ranges.push(observed);
    }
    // Min and max do not depend on how the samples were batched.
    assert_eq!(ranges[0], ranges[1]);
    assert_eq!(ranges[1], ranges[2]);

    // One and five samples, fewer than the default batch of 32.
    let (calib, _, _) = digits();
    for n in [1usize, 5] {
        let few = Array::F32(
            calib
                .as_array::<f32>()
                .unwrap()
                .slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..n))
                .to_owned(),
        );
        let path = dir.path().join(format!("calib{n}.npy"));
        intone::npy::write(&path, &few).unwrap();
        let report = dir.path().join(format!("digits{n}.json"));
        compile(
            &fixture("digits_vit_opset13.onnx"),
            &dir.path().join(format!("digits{n}.onnx")),
            &[
                "--pipeline",
                "ivit",
                "--report",
                report.to_str().unwrap(),
                "--calibrate",
                &format!("pixels={}", path.display()),
            ],
        );
        let (calibrate, _) = calibration_of(&report);
        assert_eq!(calibrate["samples"], n);
        let remarks = calibrate["remarks"].to_string();
        assert!(
            remarks.contains(&format!("{n} samples, fewer than one batch of 32")),
            "{remarks}"
        );
    }
}

#[test]
fn a_model_with_a_fixed_batch_calibrates_its_last_samples_too() {
    use crate::build::{D, F32, ModelBuilder};
    let dir = tempdir();
    let w = Array::from_vec(&[8, 3], (0..24).map(|i| i as f32 / 10.0 - 1.0).collect()).unwrap();
    let model = ModelBuilder::new(17)
        .input("x", F32, &[D::N(4), D::N(8)])
        .init("w", w)
        .node("MatMul", &["x", "w"], &["y"])
        .output("y", F32, &[D::N(4), D::N(3)])
        .write(dir.path(), "fixed.onnx");
    // Six samples; the last two hold the extremes.
    let mut x: Vec<f32> = (0..48).map(|i| (i % 7) as f32 / 7.0).collect();
    x[40] = -9.0;
    x[47] = 9.0;
    let path = dir.path().join("x.npy");
    intone::npy::write(&path, &Array::from_vec(&[6, 8], x).unwrap()).unwrap();
    let report = dir.path().join("r.json");
    compile(
        &model,
        &dir.path().join("fixed.int.onnx"),
        &[
            "--pipeline",
            "linear",
            "--report",
            report.to_str().unwrap(),
            "--calibrate",
            &format!("x={}", path.display()),
        ],
    );
    let (calibrate, observed) = calibration_of(&report);
    assert_eq!(calibrate["samples"], 6);
    let remarks = calibrate["remarks"].to_string();
    assert!(remarks.contains("fixes its batch at 4"), "{remarks}");
    let x_range = observed.iter().find(|(n, _, _)| n == "x").unwrap();
    assert_eq!((x_range.1, x_range.2), (-9.0, 9.0));
}

#[test]
fn one_rounding_policy_reaches_every_lowering() {
    let (calib, _, _) = digits();
    let dir = tempdir();
    let calib_path = dir.path().join("calib.npy");
    intone::npy::write(&calib_path, &calib).unwrap();
    for rounding in ["floor", "half-up"] {
        let out = compile(
            &fixture("digits_vit_opset13.onnx"),
            &dir.path().join(format!("{rounding}.onnx")),
            &[
                "--pipeline",
                "ivit",
                "--rounding",
                rounding,
                "--stop-after",
                "fold-dyadic-requant",
                "--calibrate",
                &format!("pixels={}", calib_path.display()),
            ],
        );
        let model = intone::onnx::load(&out).unwrap();
        let g = &model.graph;
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        for id in g.node_ids() {
            let Some(op) = g.op(id) else { continue };
            if op.domain() == intone::ops::intone::DOMAIN && op.op_type() == "Requant" {
                let r = op.attr_string("rounding").unwrap().unwrap();
                *seen.entry(r).or_default() += 1;
            }
        }
        // Requantizations of the linear layers, Shiftmax, ShiftGELU and I-LayerNorm alike.
        assert_eq!(seen.len(), 1, "{rounding}: {seen:?}");
        assert!(seen[rounding] > 20, "{rounding}: {seen:?}");
    }
}
