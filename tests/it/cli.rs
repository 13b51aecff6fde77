//! The `intone` command as a user runs it.

use std::path::Path;
use std::process::Output;

use crate::{fixture, intone, tempdir};

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn passes_lists_every_pass_and_pipeline() {
    let text = ok(&intone().arg("passes").output().unwrap());
    for p in intone::passes::PASSES {
        assert!(
            text.contains(p.name) && text.contains(p.summary),
            "{} missing",
            p.name
        );
    }
    for p in intone::passes::PRESETS {
        assert!(text.contains(p.name), "{} missing", p.name);
    }
}

#[test]
fn every_flag_has_help() {
    for cmd in ["compile", "dump", "run", "passes"] {
        let text = ok(&intone().args([cmd, "--help"]).output().unwrap());
        for line in text
            .lines()
            .filter(|l| l.trim_start().starts_with("--") || l.trim_start().starts_with("-o"))
        {
            let words = line.split_whitespace().count();
            assert!(words >= 3, "{cmd}: flag without help: {line}");
        }
    }
}

#[test]
fn compile_is_deterministic_and_reports() {
    let dir = tempdir();
    let compile = |n: &str| {
        let out = dir.path().join(format!("{n}.onnx"));
        let report = dir.path().join(format!("{n}.json"));
        ok(&intone()
            .arg("compile")
            .arg(fixture("bert_tiny_opset13.onnx"))
            .arg("-o")
            .arg(&out)
            .args([
                "--pipeline",
                "cleanup",
                "--input-shape",
                "input_ids=2x8",
                "--input-shape",
                "attention_mask=2x8",
                "--report",
            ])
            .arg(&report)
            .output()
            .unwrap());
        (
            std::fs::read(out).unwrap(),
            std::fs::read_to_string(report).unwrap(),
        )
    };
    let (model_a, report_a) = compile("a");
    let (model_b, report_b) = compile("b");
    assert!(model_a == model_b, "two compiles differ");
    assert_eq!(report_a.replace("a.onnx", "b.onnx"), report_b);
    let report: serde_json::Value = serde_json::from_str(&report_a).unwrap();
    assert_eq!(
        report["pipeline"],
        "eliminate-identity,fold-constants,eliminate-dead-nodes"
    );
    assert_eq!(report["passes"].as_array().unwrap().len(), 3);
    assert!(report["passes"][1]["rewritten"].as_u64().unwrap() > 50);
    assert!(report["ops_after"]["MatMul"].as_u64().unwrap() == 16);
    assert!(
        report.get("timings").is_none(),
        "timings make reports differ between runs"
    );
}

#[test]
fn compile_with_timings_times_each_stage() {
    let dir = tempdir();
    let report = dir.path().join("r.json");
    ok(&intone()
        .arg("compile")
        .arg(fixture("vit_tiny_opset17.onnx"))
        .arg("-o")
        .arg(dir.path().join("o.onnx"))
        .args(["--timings", "--report"])
        .arg(&report)
        .output()
        .unwrap());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    let timings = report["timings"].as_object().unwrap();
    for stage in ["load", "passes", "save", "total"] {
        assert!(timings[stage].as_f64().is_some(), "{stage} missing");
    }
    assert_eq!(report["timings"]["per_pass"].as_array().unwrap().len(), 3);
}

#[test]
fn dump_after_and_stop_after_support_bisecting() {
    let dir = tempdir();
    let dumps = dir.path().join("dumps");
    let report = dir.path().join("r.json");
    ok(&intone()
        .arg("compile")
        .arg(fixture("vit_tiny_opset17.onnx"))
        .arg("-o")
        .arg(dir.path().join("o.onnx"))
        .args([
            "--dump-after",
            "all",
            "--stop-after",
            "fold-constants",
            "--dump-dir",
        ])
        .arg(&dumps)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap());
    let mut files: Vec<String> = std::fs::read_dir(&dumps)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "00-input.after.txt",
            "01-eliminate-identity.after.txt",
            "02-fold-constants.after.txt"
        ]
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    assert_eq!(report["passes"].as_array().unwrap().len(), 2);

    let out = intone()
        .arg("compile")
        .arg(fixture("vit_tiny_opset17.onnx"))
        .arg("-o")
        .arg(dir.path().join("o2.onnx"))
        .args(["--stop-after", "fold-constant"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean 'fold-constants'?"));
    assert!(!dir.path().join("o2.onnx").exists());
}

#[test]
fn run_prints_and_writes_outputs() {
    let dir = tempdir();
    let data = fixture("data/bert_tiny_opset13");
    let text = ok(&intone()
        .arg("run")
        .arg(fixture("bert_tiny_opset13.onnx"))
        .arg(format!(
            "--input=input_ids={}",
            data.join("input_ids.npy").display()
        ))
        .arg(format!(
            "--input=attention_mask={}",
            data.join("attention_mask.npy").display()
        ))
        .arg("--output-dir")
        .arg(dir.path())
        .output()
        .unwrap());
    assert!(text.starts_with("logits: f32[2, 3] min "), "{text}");
    let got = intone::npy::read(&dir.path().join("logits.npy")).unwrap();
    let expected = intone::npy::read(&data.join("expected/logits.npy")).unwrap();
    let diff = got
        .to_f64_vec()
        .iter()
        .zip(expected.to_f64_vec())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(diff < 1e-5, "tract and onnxruntime differ by {diff}");
}

#[test]
fn run_names_missing_and_unknown_inputs() {
    let data = fixture("data/bert_tiny_opset13");
    let out = intone()
        .arg("run")
        .arg(fixture("bert_tiny_opset13.onnx"))
        .arg(format!(
            "--input=input_ids={}",
            data.join("input_ids.npy").display()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing --input attention_mask=FILE.npy")
    );
    let out = intone()
        .arg("run")
        .arg(fixture("bert_tiny_opset13.onnx"))
        .arg(format!(
            "--input=input_id={}",
            data.join("input_ids.npy").display()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean 'input_ids'?"));
}

#[test]
fn npy_files_round_trip() {
    use intone::ir::Array;
    let dir = tempdir();
    for a in [
        Array::from_vec(
            &[2, 3],
            vec![1f32, -2.5, 3.0, 0.0, f32::MAX, f32::MIN_POSITIVE],
        )
        .unwrap(),
        Array::from_vec(&[4], vec![i64::MIN, -1, 0, i64::MAX]).unwrap(),
        Array::from_vec(&[1, 2], vec![true, false]).unwrap(),
        Array::scalar(7u8),
    ] {
        let p = dir.path().join("a.npy");
        intone::npy::write(&p, &a).unwrap();
        assert_eq!(intone::npy::read(&p).unwrap(), a);
    }
    // Fortran order is reordered on read.
    let fortran = crate::oracle(
        "write_npy.py",
        &[dir.path().join("f.npy").to_str().unwrap()],
        "",
    );
    assert!(fortran.contains("written"));
    let a = intone::npy::read(&dir.path().join("f.npy")).unwrap();
    assert_eq!(
        a,
        Array::from_vec(&[2, 3], vec![0i32, 1, 2, 3, 4, 5]).unwrap()
    );
}

#[test]
fn output_must_differ_from_input() {
    let dir = tempdir();
    let model = dir.path().join("m.onnx");
    std::fs::copy(fixture("gelu_opset20.onnx"), &model).unwrap();
    let before = std::fs::read(&model).unwrap();
    let out = intone()
        .current_dir(dir.path())
        .args(["compile", "m.onnx", "-o", "./m.onnx"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the input"));
    assert_eq!(std::fs::read(&model).unwrap(), before);
    let _ = Path::new("");
}
