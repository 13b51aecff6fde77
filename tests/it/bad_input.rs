//! Bad input: each case gives a one-line error naming the problem, exit code 2, no panic, and
//! no output file (nor a leftover temporary).

use std::path::{Path, PathBuf};

use intone::ir::Array;
use intone::schema::{StringStringEntryProto, TensorProto, tensor_proto::DataLocation};

use crate::build::*;
use crate::{fixture, intone, tempdir};

/// Compiles `model` with extra arguments and checks the failure contract; returns stderr.
fn fails(model: &Path, extra: &[&str], expected: &str) -> String {
    let out_dir = tempdir();
    let output = out_dir.path().join("out.onnx");
    let out = intone()
        .arg("compile")
        .arg(model)
        .arg("-o")
        .arg(&output)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{}: {stderr}", model.display());
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains(expected),
        "expected '{expected}' in: {stderr}"
    );
    let left: Vec<PathBuf> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    stderr
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn unreadable_files() {
    let dir = tempdir();
    fails(
        &write(dir.path(), "empty.onnx", b""),
        &[],
        "the file is empty",
    );
    let real = std::fs::read(fixture("vit_tiny_opset17.onnx")).unwrap();
    fails(
        &write(dir.path(), "cut.onnx", &real[..real.len() / 2]),
        &[],
        "is not a valid ONNX model",
    );
    // Deterministic pseudo-random bytes.
    let mut state = 0x2545F4914F6CDD1Du64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    fails(
        &write(dir.path(), "noise.onnx", &noise),
        &[],
        "is not a valid ONNX model",
    );
    fails(&dir.path().join("missing.onnx"), &[], "missing.onnx");
}

#[test]
fn broken_graphs() {
    let dir = tempdir();
    let cycle = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2)])
        .node("Add", &["x", "b"], &["a"])
        .node("Relu", &["a"], &["b"])
        .output("b", F32, &[D::N(2)]);
    fails(
        &cycle.write(dir.path(), "cycle.onnx"),
        &[],
        "cycle through node 'Add_0' (Add)",
    );

    let dangling = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2)])
        .node("Add", &["x", "nowhere"], &["y"])
        .output("y", F32, &[D::N(2)]);
    fails(
        &dangling.write(dir.path(), "dangling.onnx"),
        &[],
        "node 'Add_0' (Add) reads 'nowhere' (input 1)",
    );

    let duplicate = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2)])
        .node("Relu", &["x"], &["y"])
        .node("Neg", &["x"], &["y"])
        .output("y", F32, &[D::N(2)]);
    fails(
        &duplicate.write(dir.path(), "duplicate.onnx"),
        &[],
        "value name 'y' is produced twice",
    );

    let missing_output = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2)])
        .node("Relu", &["x"], &["y"])
        .output("z", F32, &[D::N(2)]);
    fails(
        &missing_output.write(dir.path(), "output.onnx"),
        &[],
        "graph output #0 'z' is not produced",
    );
}

#[test]
fn tensors_with_impossible_dims() {
    let dir = tempdir();
    let mut huge = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2)])
        .node("Add", &["x", "w"], &["y"])
        .output("y", F32, &[D::N(2)]);
    huge.graph().initializer.push(TensorProto {
        name: Some("w".into()),
        data_type: Some(1),
        dims: vec![1 << 40, 1 << 40],
        ..Default::default()
    });
    fails(
        &huge.write(dir.path(), "huge.onnx"),
        &[],
        "tensor 'w' with dims [1099511627776, 1099511627776]: element count overflows",
    );

    let mut negative = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2)])
        .node("Add", &["x", "w"], &["y"])
        .output("y", F32, &[D::N(2)]);
    negative.graph().initializer.push(TensorProto {
        name: Some("w".into()),
        data_type: Some(1),
        dims: vec![-3],
        ..Default::default()
    });
    fails(
        &negative.write(dir.path(), "negative.onnx"),
        &[],
        "negative dimension",
    );

    let short = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2)])
        .init("w", Array::from_vec(&[2], vec![1f32, 2.0]).unwrap())
        .node("Add", &["x", "w"], &["y"])
        .output("y", F32, &[D::N(2)]);
    let mut short = short;
    short.graph().initializer[0].dims = vec![3];
    fails(
        &short.write(dir.path(), "short.onnx"),
        &[],
        "tensor 'w': 8 bytes of data, but dims [3] of f32 need 12",
    );
}

#[test]
fn unknown_pass_and_bad_options() {
    let m = fixture("gelu_opset20.onnx");
    fails(
        &m,
        &["--passes", "eliminate-identity,fold-constant"],
        "unknown pass 'fold-constant' at column 20; did you mean 'fold-constants'?",
    );
    fails(&m, &["--pipeline", "clenup"], "did you mean 'cleanup'?");
    fails(
        &m,
        &["--input-shape", "nope=1x2"],
        "'nope', which is not a graph input",
    );
    fails(&m, &["--input-shape", "x=1xq"], "'q' is not a dimension");
}

/// A copy of the external-data fixture in a fresh directory, with its `location` set.
fn external_model(dir: &Path, location: &str) -> PathBuf {
    let mut proto = intone::onnx::decode(
        std::fs::read(fixture("external/model.onnx"))
            .unwrap()
            .into(),
        "model",
    )
    .unwrap();
    for t in &mut proto.graph.as_mut().unwrap().initializer {
        assert_eq!(t.data_location, Some(DataLocation::External as i32));
        for e in &mut t.external_data {
            if e.key() == "location" {
                e.value = Some(location.into());
            }
        }
    }
    let path = dir.join("model.onnx");
    std::fs::write(&path, prost::Message::encode_to_vec(&proto)).unwrap();
    path
}

#[test]
fn external_data_problems() {
    let weights = std::fs::read(fixture("external/weights.bin")).unwrap();
    let dir = tempdir();
    let model = external_model(dir.path(), "weights.bin");
    fails(&model, &[], "cannot open");
    std::fs::write(
        dir.path().join("weights.bin"),
        &weights[..weights.len() - 10],
    )
    .unwrap();
    fails(
        &model,
        &[],
        "'weights.bin' has 111774 bytes, but the tensor needs bytes",
    );

    fails(
        &external_model(tempdir().path(), "/etc/passwd"),
        &[],
        "location '/etc/passwd' is an absolute path",
    );
    fails(
        &external_model(tempdir().path(), "../weights.bin"),
        &[],
        "location '../weights.bin' leaves the model's directory",
    );
    fails(
        &external_model(tempdir().path(), "sub/../../weights.bin"),
        &[],
        "leaves the model's directory",
    );

    // A symlink that points out of the model's directory.
    let outside = tempdir();
    std::fs::write(outside.path().join("secret.bin"), &weights).unwrap();
    let dir = tempdir();
    std::os::unix::fs::symlink(
        outside.path().join("secret.bin"),
        dir.path().join("weights.bin"),
    )
    .unwrap();
    fails(
        &external_model(dir.path(), "weights.bin"),
        &[],
        "resolves outside the model's directory (symlink)",
    );

    // Bad offset entry.
    let dir = tempdir();
    let mut proto = intone::onnx::decode(
        std::fs::read(external_model(dir.path(), "weights.bin"))
            .unwrap()
            .into(),
        "m",
    )
    .unwrap();
    proto.graph.as_mut().unwrap().initializer[0]
        .external_data
        .push(StringStringEntryProto {
            key: Some("offset".into()),
            value: Some("-5".into()),
        });
    std::fs::write(dir.path().join("weights.bin"), &weights).unwrap();
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, prost::Message::encode_to_vec(&proto)).unwrap();
    fails(&path, &[], "offset '-5' is not a non-negative integer");
}

#[test]
fn a_valid_external_model_still_compiles() {
    let dir = tempdir();
    let model = external_model(dir.path(), "weights.bin");
    std::fs::copy(
        fixture("external/weights.bin"),
        dir.path().join("weights.bin"),
    )
    .unwrap();
    let out = intone()
        .arg("compile")
        .arg(&model)
        .arg("-o")
        .arg(dir.path().join("out.onnx"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
