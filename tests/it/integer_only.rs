//! The integer-only pipelines (`ivit`, `ivit-relu`, `ibert`) end to end: no float value between
//! the input quantization and the output dequantization, the ONNX full checker passes, tract
//! and onnxruntime give bit-identical outputs, and the lowered Shiftmax and I-LayerNorm equal
//! the reference kernels bit for bit on real activations.

use std::path::{Path, PathBuf};

use intone::ir::{Array, Model, ValueId};
use intone::quant::kernels::{LayerNormPlan, softmax_row_shifted};
use intone::runner::Runner;
use intone::runner::exact_f32::IntegerMatmul;

use crate::linear::{compile, digits, fixture_inputs, run_ort_on, values_in_both_engines};
use crate::{Cpu, fixture, oracle, root, tempdir};

/// Compiles with a pipeline and returns the output and its report's `float_between`.
fn compile_with_report(
    model: &Path,
    out: &Path,
    pipeline: &str,
    calibrate: &[(String, PathBuf)],
    extra: &[&str],
) -> (PathBuf, Vec<String>) {
    let report = out.with_extension("json");
    let mut args = vec![
        "--pipeline".to_string(),
        pipeline.to_string(),
        "--report".into(),
        report.display().to_string(),
        "--calibration-batch".into(),
        "1".into(),
    ];
    for (name, path) in calibrate {
        args.push("--calibrate".into());
        args.push(format!("{name}={}", path.display()));
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = compile(model, out, &refs);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let between = report["float_between"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (out, between)
}

/// Compiles fixture `stem` with `ivit` into `dir`, requires no float value between the input
/// quantization and the output dequantization, and lists the output in `written` (for the
/// checker).
fn compile_integer_only(
    stem: &str,
    calibrate: &[(String, PathBuf)],
    dir: &Path,
    written: &mut String,
) -> PathBuf {
    let (out, between) = compile_with_report(
        &fixture(&format!("{stem}.onnx")),
        &dir.join(format!("{stem}.ivit.onnx")),
        "ivit",
        calibrate,
        &[],
    );
    assert!(between.is_empty(), "{stem}: float values {between:?}");
    written.push_str(&format!("{}\n", out.display()));
    out
}

/// Proves the saturation rule on a compiled model, runs it in tract (its integer matmuls as they
/// are, and as the exact f32 matmuls the runner uses on CPUs without VNNI) and in onnxruntime,
/// on this CPU and on an emulated AVX2-only one, and requires identical outputs (type and bits).
pub fn assert_bit_identical(model: &Path, inputs: &[(&str, &Array)], dir: &Path) -> Vec<Array> {
    let compiled = intone::onnx::load(model).unwrap();
    // The saturation rule, proven again on the file as written.
    intone::lower::range::verify(&compiled, 4096, Default::default()).unwrap();
    let arrays: Vec<Array> = inputs.iter().map(|(_, a)| (*a).clone()).collect();
    let tract = Runner::with_integer_matmul(&compiled, IntegerMatmul::Native)
        .unwrap()
        .run(&arrays, None)
        .unwrap();
    let as_f32 = Runner::with_integer_matmul(&compiled, IntegerMatmul::ExactF32)
        .unwrap()
        .run(&arrays, None)
        .unwrap();
    assert_eq!(
        tract,
        as_f32,
        "{}: tract's integer matmuls and their exact f32 form differ",
        model.display()
    );
    for cpu in Cpu::all() {
        let ort = run_ort_on(cpu, model, inputs, dir);
        assert_eq!(tract.len(), ort.len());
        for ((name, t), (_, o)) in tract.iter().zip(&ort) {
            assert_eq!(
                t,
                o,
                "{}: tract and onnxruntime ({cpu:?} CPU) differ on {name}",
                model.display()
            );
        }
    }
    tract.into_iter().map(|(_, a)| a).collect()
}

fn rows(a: &Array, n: usize) -> Array {
    Array::F32(
        a.as_array::<f32>()
            .unwrap()
            .slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..n))
            .to_owned(),
    )
}

fn argmax_rows(a: &Array) -> Vec<usize> {
    let v = a.to_f64_vec();
    let cols = a.shape()[1];
    v.chunks(cols)
        .map(|r| (0..cols).fold(0, |b, j| if r[j] > r[b] { j } else { b }))
        .collect()
}

/// The fixtures' 360 digits test images (the CNN's input) and their labels.
fn digits_cnn_test_set() -> (Array, Vec<i64>) {
    let data = fixture("data");
    let test = intone::npy::read(&data.join("digits_test.npy")).unwrap();
    let labels = intone::npy::read(&data.join("digits_test_labels.npy"))
        .unwrap()
        .to_i64_vec()
        .unwrap();
    (test, labels)
}

/// The fraction of rows of `logits` whose argmax is the label.
fn top1_of(logits: &Array, labels: &[i64]) -> f64 {
    let right = argmax_rows(logits)
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p as i64 == **l)
        .count();
    right as f64 / labels.len() as f64
}

#[test]
fn digits_vits_compile_to_integer_only_models_that_both_engines_run_bit_identically() {
    let (calib, test, labels) = digits();
    let dir = tempdir();
    let calib_path = dir.path().join("calib.npy");
    intone::npy::write(&calib_path, &calib).unwrap();
    let test = rows(&test, 96);
    let mut written = String::new();
    for stem in ["digits_vit_opset13", "digits_vit_opset17"] {
        for pipeline in ["ivit", "ivit-relu", "ibert"] {
            let (out, between) = compile_with_report(
                &fixture(&format!("{stem}.onnx")),
                &dir.path().join(format!("{stem}.{pipeline}.onnx")),
                pipeline,
                &[("pixels".into(), calib_path.clone())],
                &[],
            );
            assert!(
                between.is_empty(),
                "{stem} {pipeline}: float values {between:?}"
            );
            written.push_str(&format!("{}\n", out.display()));
            let outputs = assert_bit_identical(&out, &[("pixels", &test)], dir.path());
            // A smoke bound (accuracy is measured by the benchmark): most test images right.
            let correct = argmax_rows(&outputs[0])
                .iter()
                .zip(&labels)
                .filter(|(p, l)| **p as i64 == **l)
                .count();
            assert!(correct > 80, "{stem} {pipeline}: {correct}/96 correct");
        }
    }
    let report = oracle("check_models.py", &[], &written);
    assert!(report.contains(" 0 failed"), "{report}");
}

#[test]
fn tiny_vit_swin_bert_and_gpt2_exports_compile_to_integer_only_models() {
    let dir = tempdir();
    let mut written = String::new();
    for stem in [
        "vit_tiny_opset13",
        "deit_tiny_opset17",
        "gelu_opset20",
        // Attention mask from int64 input, pooler Tanh, classifier.
        "bert_tiny_opset13",
        "bert_tiny_opset17",
        // Shifted windows (Slice/Concat rolls, Pad, window reshapes), global mean pool.
        "swin_tiny_opset13",
        "swin_tiny_opset17",
        // tanh GELU, causal mask, float casts of dequantized values.
        "gpt2_tiny_opset13",
        "gpt2_tiny_opset17",
    ] {
        let float = intone::onnx::load(&fixture(&format!("{stem}.onnx"))).unwrap();
        let inputs = fixture_inputs(stem, &float);
        let calibrate: Vec<(String, PathBuf)> = inputs
            .iter()
            .map(|(n, p, _)| (n.clone(), p.clone()))
            .collect();
        let out = compile_integer_only(stem, &calibrate, dir.path(), &mut written);
        let named: Vec<(&str, &Array)> = inputs.iter().map(|(n, _, a)| (n.as_str(), a)).collect();
        assert_bit_identical(&out, &named, dir.path());
        // Every integer matmul's input at 16 bits, as two 8-bit terms: exact on every CPU too.
        if stem.ends_with("opset17") {
            let (wide, between) = compile_with_report(
                &fixture(&format!("{stem}.onnx")),
                &dir.path().join(format!("{stem}.wide.onnx")),
                "ivit",
                &calibrate,
                &["--wide-operands", "all"],
            );
            assert!(
                between.is_empty(),
                "{stem} (wide): float values {between:?}"
            );
            written.push_str(&format!("{}\n", wide.display()));
            assert_bit_identical(&wide, &named, dir.path());
        }
    }
    let report = oracle("check_models.py", &[], &written);
    assert!(report.contains(" 0 failed"), "{report}");
}

#[test]
fn convnets_compile_to_integer_only_models_that_both_engines_run_bit_identically() {
    let data = |name: &str| fixture("data").join(name);
    let dir = tempdir();
    let mut written = String::new();
    // The trained digits CNN: top-1 within half a point of the float model's.
    let (test, labels) = digits_cnn_test_set();
    let accuracy = |logits: &Array| top1_of(logits, &labels);
    for stem in ["digits_cnn_opset13", "digits_cnn_opset17"] {
        let model = fixture(&format!("{stem}.onnx"));
        let calibrate = [("pixels".to_string(), data("digits_calibration.npy"))];
        let out = compile_integer_only(stem, &calibrate, dir.path(), &mut written);
        let int = assert_bit_identical(&out, &[("pixels", &test)], dir.path());
        let float = Runner::new(&intone::onnx::load(&model).unwrap())
            .unwrap()
            .run(std::slice::from_ref(&test), None)
            .unwrap();
        let (a_float, a_int) = (accuracy(&float[0].1), accuracy(&int[0]));
        assert!(
            a_int >= a_float - 0.005,
            "{stem}: top-1 {a_float} → {a_int}"
        );
    }
    // Random-weight ConvNets: residuals, squeeze-and-excitation gates of HardSigmoid and
    // Sigmoid, HardSwish and SiLU tables, depthwise convolutions, pooling, a U-Net decoder
    // (ConvTranspose, nearest and linear Resize, channel Concat).
    for stem in [
        "resnet18_tiny_opset13",
        "resnet18_tiny_opset17",
        "mobilenetv3_tiny_opset13",
        "mobilenetv3_tiny_opset17",
        "efficientnet_b0_tiny_opset13",
        "efficientnet_b0_tiny_opset17",
        "unet_tiny_opset13",
        "unet_tiny_opset17",
    ] {
        let inputs = fixture_inputs(
            stem,
            &intone::onnx::load(&fixture(&format!("{stem}.onnx"))).unwrap(),
        );
        let calibrate = [("pixels".to_string(), data("image32_calibration.npy"))];
        let out = compile_integer_only(stem, &calibrate, dir.path(), &mut written);
        let named: Vec<(&str, &Array)> = inputs.iter().map(|(n, _, a)| (n.as_str(), a)).collect();
        assert_bit_identical(&out, &named, dir.path());
        // Every integer matmul's input at 16 bits, as two 8-bit terms: exact on every CPU too.
        if stem.ends_with("opset17") {
            let (wide, between) = compile_with_report(
                &fixture(&format!("{stem}.onnx")),
                &dir.path().join(format!("{stem}.wide.onnx")),
                "ivit",
                &calibrate,
                &["--wide-operands", "all"],
            );
            assert!(
                between.is_empty(),
                "{stem} (wide): float values {between:?}"
            );
            written.push_str(&format!("{}\n", wide.display()));
            assert_bit_identical(&wide, &named, dir.path());
        }
    }
    let report = oracle("check_models.py", &[], &written);
    assert!(report.contains(" 0 failed"), "{report}");
}

#[test]
fn sentence_encoder_with_attention_mask_is_integer_only_and_bit_identical() {
    let data = root().join("../shared/models/data");
    let dir = tempdir();
    let calibrate = vec![
        (
            "input_ids".to_string(),
            data.join("wordsim353_word_input_ids.npy"),
        ),
        (
            "attention_mask".to_string(),
            data.join("wordsim353_word_attention_mask.npy"),
        ),
    ];
    let (out, between) = compile_with_report(
        &root().join("../shared/models/paraphrase_minilm_l3_v2_opset17.onnx"),
        &dir.path().join("l3.ivit.onnx"),
        "ivit",
        &calibrate,
        &[],
    );
    assert!(between.is_empty(), "float values {between:?}");
    let take = |p: &Path| {
        let a = intone::npy::read(p).unwrap();
        let Array::I64(a) = a else {
            panic!("int64 ids")
        };
        Array::I64(
            a.slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..48))
                .to_owned(),
        )
    };
    let (ids, mask) = (take(&calibrate[0].1), take(&calibrate[1].1));
    let compiled = intone::onnx::load(&out).unwrap();
    // Integer inputs stay integer: the compiled model reads the int64 ids and mask.
    let facts = intone::ops::analyze(&compiled, &Default::default(), 1 << 16).unwrap();
    for id in compiled.graph.inputs() {
        let v = ValueId { node: *id, slot: 0 };
        let t = facts.get(v).and_then(|f| f.dtype).expect("a typed input");
        assert_eq!(t, intone::ir::DataType::Int64);
    }
    assert_bit_identical(
        &out,
        &[("input_ids", &ids), ("attention_mask", &mask)],
        dir.path(),
    );
    let report = oracle("check_models.py", &[], &format!("{}\n", out.display()));
    assert!(report.contains(" 0 failed"), "{report}");
}

/// The initializer whose name is `prefix/suffix` (the lowering names its constants so).
fn constant(model: &Model, name: &str) -> Array {
    let g = &model.graph;
    let v = g
        .find_value(name)
        .unwrap_or_else(|| panic!("no value {name}"));
    g.constant(v).unwrap().decode().unwrap()
}

fn input_name(model: &Model, node_value: &str, slot: usize) -> String {
    let g = &model.graph;
    let v = g.find_value(node_value).unwrap();
    g.value_name(g.input(v.node, slot).unwrap()).to_string()
}

#[test]
fn lowered_shiftmax_and_layer_norm_equal_the_reference_kernels_on_real_activations() {
    let (calib, test, _) = digits();
    let dir = tempdir();
    let calib_path = dir.path().join("calib.npy");
    intone::npy::write(&calib_path, &calib).unwrap();
    let (out, _) = compile_with_report(
        &fixture("digits_vit_opset13.onnx"),
        &dir.path().join("ivit.onnx"),
        "ivit",
        &[("pixels".into(), calib_path)],
        &[],
    );
    let mut model = intone::onnx::load(&out).unwrap();
    let softmax = "/blocks/blocks.1/attn/Softmax";
    let norm = "/blocks/blocks.2/norm2/ReduceMean/layer_norm";
    let ln_input = input_name(&model, &format!("{norm}/reduce"), 0);
    // The softmax reads the attention scores' int32 accumulator directly.
    let scores = input_name(&model, &format!("{softmax}/reduce"), 0);
    let names: Vec<String> = vec![
        scores,
        format!("{softmax}/probability"),
        ln_input.clone(),
        format!("{norm}/bounded"),
    ];
    let batch = rows(&test, 24);
    let (tract, ort) = values_in_both_engines(&mut model, &names, ("pixels", &batch), dir.path());

    let table: Vec<i32> = constant(&model, &format!("{softmax}/exp_table"))
        .to_i64_vec()
        .unwrap()
        .into_iter()
        .map(|v| v as i32)
        .collect();
    // The index: the distance below the row maximum, rounded half up by 2^k.
    let shift = constant(&model, &format!("{softmax}/index_shift"))
        .to_i64_vec()
        .unwrap()[0];
    assert_eq!(shift.count_ones(), 1);
    let k = shift.trailing_zeros();
    let h = constant(&model, &format!("{softmax}/index_half"))
        .to_i64_vec()
        .unwrap()[0];
    assert_eq!(h, shift / 2);
    // The final division: by 2^30 times the attention·V operand's scale, rounded half up.
    let divisor = constant(&model, &format!("{softmax}/shift"))
        .to_i64_vec()
        .unwrap()[0];
    // The LayerNorm's constants, read back from the graph.
    let first = |name: &str| {
        constant(&model, &format!("{norm}/{name}"))
            .to_i64_vec()
            .unwrap()[0]
    };
    let log2 = |v: i64| v.trailing_zeros();
    let table_of = |name: &str| -> Vec<i32> {
        constant(&model, &format!("{norm}/{name}"))
            .to_i64_vec()
            .unwrap()
            .into_iter()
            .map(|v| v as i32)
            .collect()
    };
    let iterations = model
        .graph
        .node_ids()
        .filter(|&id| {
            model
                .graph
                .op(id)
                .is_some_and(|o| o.name().starts_with(&format!("{norm}/newton_root")))
        })
        .count() as u32;
    let plan = LayerNormPlan {
        d: first("row_length"),
        square_shift: log2(first("square_shift")),
        numerator_shift: log2(first("numerator_shift")),
        epsilon: model
            .graph
            .find_value(&format!("{norm}/epsilon"))
            .map_or(0, |_| first("epsilon")),
        coarse: table_of("sqrt_coarse"),
        coarse_shift: log2(first("sqrt_coarse_bucket_width")),
        fine: table_of("sqrt_fine"),
        fine_shift: log2(first("sqrt_fine_bucket_width")),
        iterations,
        bound: first("bound_hi"),
    };
    for (engine, values) in [("tract", &tract), ("onnxruntime", &ort)] {
        let x = &values[&names[0]];
        let row = *x.shape().last().unwrap();
        let expected: Vec<i64> = x
            .to_i64_vec()
            .unwrap()
            .chunks(row)
            .flat_map(|r| softmax_row_shifted(r, k, h, &table, 1 << 30, divisor, true))
            .collect();
        assert_eq!(
            values[&names[1]].to_i64_vec().unwrap(),
            expected,
            "{engine}: Shiftmax"
        );
        let x = &values[&names[2]];
        let d = plan.d as usize;
        let expected: Vec<i64> = x
            .to_i64_vec()
            .unwrap()
            .chunks(d)
            .flat_map(|r| plan.normalize(r))
            .collect();
        assert_eq!(
            values[&names[3]].to_i64_vec().unwrap(),
            expected,
            "{engine}: I-LayerNorm"
        );
    }
}

#[test]
fn integer_io_keeps_integers_at_the_boundary_and_records_their_scales() {
    let (calib, test, _) = digits();
    let dir = tempdir();
    let calib_path = dir.path().join("calib.npy");
    intone::npy::write(&calib_path, &calib).unwrap();
    let calibrate = format!("pixels={}", calib_path.display());
    let model = fixture("digits_vit_opset13.onnx");
    let float_io = compile(
        &model,
        &dir.path().join("f.onnx"),
        &["--pipeline", "ivit", "--calibrate", &calibrate],
    );
    let int_io = compile(
        &model,
        &dir.path().join("i.onnx"),
        &[
            "--pipeline",
            "ivit",
            "--calibrate",
            &calibrate,
            "--integer-io",
        ],
    );
    let int_model = intone::onnx::load(&int_io).unwrap();
    let io: serde_json::Value = serde_json::from_str(
        int_model
            .header
            .metadata_props
            .iter()
            .find(|p| p.key() == "intone.io")
            .expect("intone.io metadata")
            .value(),
    )
    .unwrap();
    let (input, output) = (&io[0], &io[1]);
    assert_eq!(input["direction"], "input");
    assert_eq!(input["dtype"], "uint8");
    assert_eq!(output["direction"], "output");
    // Quantize as the float-io model does (multiply by the f32 reciprocal, round half to even).
    let inverse = (1.0 / input["scale"][0].as_f64().unwrap()) as f32;
    let zp = input["zero_point"].as_i64().unwrap() as f32;
    let x = rows(&test, 16);
    let q = x
        .as_array::<f32>()
        .unwrap()
        .mapv(|v| ((v * inverse).round_ties_even() + zp).clamp(0.0, 255.0) as u8);
    let ints = Runner::new(&int_model)
        .unwrap()
        .run(&[Array::U8(q.into_dyn())], None)
        .unwrap();
    let floats = Runner::new(&intone::onnx::load(&float_io).unwrap())
        .unwrap()
        .run(&[x], None)
        .unwrap();
    let scales: Vec<f64> = output["scale"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap())
        .collect();
    let logits = ints[0].1.to_i64_vec().unwrap();
    let expected = floats[0].1.to_f64_vec();
    for (i, (q, e)) in logits.iter().zip(&expected).enumerate() {
        let s = scales[i % scales.len()] as f32;
        assert_eq!((*q as f32 * s) as f64, *e, "logit {i}");
    }
}

/// Residual expansions (`split-residual-groups`): every configuration integer-only, checked by
/// the full checker and bit-identical in tract and onnxruntime on both CPUs — the digits CNN
/// (int4 with two terms within 0.3 pt top-1 of int8; an ensemble of two int4 branches), the digits ViT (sparse residual columns
/// gathered back along the last axis of 3-D MatMuls) and EfficientNet-B0 tiny (depthwise taps,
/// gates, two-term activations times two weight terms).
#[test]
fn residual_expansions_compile_to_integer_only_models_that_both_engines_run_bit_identically() {
    let data = |name: &str| fixture("data").join(name);
    let dir = tempdir();
    let mut written = String::new();
    let mut compiled = |stem: &str, tag: &str, calibrate: &[(String, PathBuf)], args: &[&str]| {
        let (out, between) = compile_with_report(
            &fixture(&format!("{stem}.onnx")),
            &dir.path().join(format!("{stem}.{tag}.onnx")),
            "ivit",
            calibrate,
            args,
        );
        assert!(between.is_empty(), "{stem} {tag}: float values {between:?}");
        written.push_str(&format!("{}\n", out.display()));
        out
    };
    let (test, labels) = digits_cnn_test_set();
    let top1 = |logits: &Array| top1_of(logits, &labels);
    let cnn = [("pixels".to_string(), data("digits_calibration.npy"))];
    let mut accuracy = std::collections::BTreeMap::new();
    for (tag, args) in [
        ("w8k1", &["--weight-bits", "8"][..]),
        ("w4k2", &["--weight-bits", "4", "--residual-order", "2"]),
        (
            "w4k2g5",
            &[
                "--weight-bits",
                "4",
                "--residual-order",
                "2",
                "--residual-sparsity",
                "0.5",
            ],
        ),
        ("w4e2", &["--weight-bits", "4", "--ensemble", "2"]),
    ] {
        let out = compiled("digits_cnn_opset17", tag, &cnn, args);
        let int = assert_bit_identical(&out, &[("pixels", &test)], dir.path());
        accuracy.insert(tag, top1(&int[0]));
    }
    assert!(
        accuracy["w4k2"] >= accuracy["w8k1"] - 0.003,
        "digits CNN top-1 {accuracy:?}"
    );
    let (calib, vit_test, _) = digits();
    let calib_path = dir.path().join("calib.npy");
    intone::npy::write(&calib_path, &calib).unwrap();
    let vit = [("pixels".to_string(), calib_path)];
    let args = [
        "--weight-bits",
        "3",
        "--residual-order",
        "2",
        "--residual-sparsity",
        "0.5",
    ];
    let out = compiled("digits_vit_opset17", "w3k2g5", &vit, &args);
    assert_bit_identical(&out, &[("pixels", &rows(&vit_test, 32))], dir.path());
    // Every matmul input wide, attention probabilities too: their bytes times V.
    let out = compiled(
        "digits_vit_opset17",
        "a2m1",
        &vit,
        &["--wide-operands", "measured=1"],
    );
    assert_bit_identical(&out, &[("pixels", &rows(&vit_test, 32))], dir.path());
    let model = intone::onnx::load(&out).unwrap();
    let g = &model.graph;
    let byte_times_activation = g
        .node_ids()
        .filter(|&id| {
            g.op(id).is_some_and(|op| op.is("MatMulInteger"))
                && g.value_name(g.input(id, 0).unwrap()).ends_with("/high_u8")
                && g.constant(g.input(id, 1).unwrap()).is_none()
        })
        .count();
    assert!(
        byte_times_activation > 0,
        "no two-term activation × activation matmul"
    );
    let stem = "efficientnet_b0_tiny_opset17";
    let inputs = fixture_inputs(
        stem,
        &intone::onnx::load(&fixture(&format!("{stem}.onnx"))).unwrap(),
    );
    let named: Vec<(&str, &Array)> = inputs.iter().map(|(n, _, a)| (n.as_str(), a)).collect();
    let image = [("pixels".to_string(), data("image32_calibration.npy"))];
    let args = [
        "--activation-order",
        "2",
        "--weight-bits",
        "4",
        "--residual-order",
        "2",
    ];
    let out = compiled(stem, "a2w4k2", &image, &args);
    assert_bit_identical(&out, &named, dir.path());
    let report = oracle("check_models.py", &[], &written);
    assert!(report.contains(" 0 failed"), "{report}");
}

/// `--data-free` on the BatchNorm digits CNN: no calibration data, integer-only, bit-identical
/// in both engines, top-1 within a point of the calibrated model's.
#[test]
fn a_batch_norm_convnet_compiles_integer_only_without_calibration_data() {
    let data = |name: &str| fixture("data").join(name);
    let dir = tempdir();
    let stem = "digits_cnn_opset17";
    let (test, labels) = digits_cnn_test_set();
    let top1 = |logits: &Array| top1_of(logits, &labels);
    let (free, between) = compile_with_report(
        &fixture(&format!("{stem}.onnx")),
        &dir.path().join("free.onnx"),
        "ivit",
        &[],
        &["--data-free"],
    );
    assert!(between.is_empty(), "float values {between:?}");
    let calibrated = compile_integer_only(
        stem,
        &[("pixels".to_string(), data("digits_calibration.npy"))],
        dir.path(),
        &mut String::new(),
    );
    let free_top1 = top1(&assert_bit_identical(&free, &[("pixels", &test)], dir.path())[0]);
    let runner = Runner::new(&intone::onnx::load(&calibrated).unwrap()).unwrap();
    let calibrated_top1 = top1(&runner.run(std::slice::from_ref(&test), None).unwrap()[0].1);
    assert!(
        free_top1 >= calibrated_top1 - 0.01,
        "data-free {free_top1} vs calibrated {calibrated_top1}"
    );
    let report = oracle("check_models.py", &[], &format!("{}\n", free.display()));
    assert!(report.contains(" 0 failed"), "{report}");
}
