//! `load -> save` with no passes gives back the same model: equal decoded protos (checked by
//! intone's schema and, independently, by the official onnx protobuf classes), the same
//! external data, and the same tract outputs.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use intone::ir::{Array, Tensor};
use intone::runner::Runner;
use intone::schema::{ModelProto, TensorProto};

use crate::{node_tests, onnx_files, oracle, root, tempdir};

fn decode_file(path: &Path) -> ModelProto {
    intone::onnx::decode(
        Bytes::from(std::fs::read(path).unwrap()),
        &path.display().to_string(),
    )
    .unwrap()
}

/// Round-trips every model, checks equality with intone's schema, and returns the pairs for
/// the Python oracle.
fn round_trip_all(models: &[PathBuf], out_dir: &Path, base: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut pairs = Vec::new();
    for original in models {
        let relative = original.strip_prefix(base).unwrap();
        let copy = out_dir.join(relative);
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        let model =
            intone::onnx::load(original).unwrap_or_else(|e| panic!("{}: {e}", original.display()));
        intone::onnx::save(&model, &copy).unwrap_or_else(|e| panic!("{}: {e}", original.display()));
        // Compared through a canonical re-encoding, so NaN attributes compare equal.
        let canonical = |p: &Path| prost::Message::encode_to_vec(&decode_file(p));
        assert!(
            canonical(original) == canonical(&copy),
            "{} changed in the round trip",
            original.display()
        );
        pairs.push((original.clone(), copy));
    }
    pairs
}

fn check_with_oracle(pairs: &[(PathBuf, PathBuf)]) {
    let tsv: String = pairs
        .iter()
        .map(|(a, b)| format!("{}\t{}\n", a.display(), b.display()))
        .collect();
    let report = oracle("compare_models.py", &[], &tsv);
    assert!(
        report.contains(&format!("checked {} pairs, 0 differ", pairs.len())),
        "{report}"
    );
}

#[test]
fn fixtures_round_trip_unchanged() {
    let base = root().join("fixtures");
    let models = onnx_files(&base);
    assert!(models.len() >= 25, "fixtures missing: {}", models.len());
    let out = tempdir();
    let pairs = round_trip_all(&models, out.path(), &base);
    check_with_oracle(&pairs);
    // External data comes back too, byte for byte.
    let weights = std::fs::read(base.join("external/weights.bin")).unwrap();
    assert_eq!(
        std::fs::read(out.path().join("external/weights.bin")).unwrap(),
        weights
    );
}

#[test]
fn fixture_exports_cover_opsets_11_to_21() {
    let mut opsets: Vec<i64> = onnx_files(&root().join("fixtures/opsets"))
        .iter()
        .map(|p| intone::onnx::load(p).unwrap().opset("").unwrap())
        .collect();
    opsets.sort();
    assert_eq!(opsets, (11..=21).collect::<Vec<_>>());
}

#[test]
fn shared_models_round_trip_unchanged() {
    let base = root().join("../shared/models");
    let models = onnx_files(&base);
    assert!(models.len() >= 3);
    let out = tempdir();
    let pairs = round_trip_all(&models, out.path(), &base);
    check_with_oracle(&pairs);
    // Written by a canonical protobuf serializer, they also come back byte for byte.
    for (a, b) in &pairs {
        assert!(
            std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
            "{} bytes changed",
            a.display()
        );
    }
}

/// Reads a `test_data_set` `.pb` file as an array, when it holds a plain tensor.
pub fn read_pb_tensor(path: &Path) -> Option<Array> {
    let bytes = std::fs::read(path).ok()?;
    let proto: TensorProto = prost::Message::decode(&bytes[..]).ok()?;
    proto.data_type?;
    Tensor::from_proto(proto).decode().ok()
}

fn data_set(dir: &Path, kind: &str) -> Option<Vec<Array>> {
    let set = dir.join("test_data_set_0");
    let mut out = Vec::new();
    for i in 0.. {
        let p = set.join(format!("{kind}_{i}.pb"));
        if !p.exists() {
            break;
        }
        out.push(read_pb_tensor(&p)?);
    }
    Some(out)
}

/// Same arrays, bit for bit (NaN equals NaN).
fn identical(a: &[(String, Array)], b: &[(String, Array)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((na, x), (nb, y))| {
            na == nb
                && x.dtype() == y.dtype()
                && x.shape() == y.shape()
                && x.to_le_bytes() == y.to_le_bytes()
        })
}

#[test]
fn backend_node_tests_round_trip_unchanged() {
    let base = node_tests();
    let models = onnx_files(&base);
    assert!(models.len() > 1500, "only {} node tests", models.len());
    let out = tempdir();
    let pairs = round_trip_all(&models, out.path(), &base);
    check_with_oracle(&pairs);

    // Wherever tract runs the original on its test inputs, the copy gives the same outputs.
    let ran = std::sync::atomic::AtomicUsize::new(0);
    let chunks: Vec<&[(PathBuf, PathBuf)]> = pairs.chunks(pairs.len().div_ceil(2)).collect();
    std::thread::scope(|s| {
        for chunk in chunks {
            let ran = &ran;
            s.spawn(move || {
                for (original, copy) in chunk {
                    let Some(inputs) = data_set(original.parent().unwrap(), "input") else {
                        continue;
                    };
                    let run = |path: &Path| -> Option<Vec<(String, Array)>> {
                        let model = intone::onnx::load(path).ok()?;
                        let runner = Runner::new(&model).ok()?;
                        if runner.input_names().len() != inputs.len() {
                            return None;
                        }
                        runner.run(&inputs, None).ok()
                    };
                    let Some(expected) = run(original) else {
                        continue;
                    };
                    let got = run(copy)
                        .unwrap_or_else(|| panic!("{}: the copy no longer runs", copy.display()));
                    assert!(
                        identical(&expected, &got),
                        "{}: outputs changed",
                        original.display()
                    );
                    ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    let ran = ran.into_inner();
    eprintln!(
        "{} node tests round-tripped; tract ran {ran} of them before and after",
        pairs.len()
    );
    assert!(ran > 700, "tract ran only {ran} node tests");
}

#[test]
fn saving_is_deterministic_and_matches_prost_encoding() {
    for name in [
        "vit_tiny_opset13.onnx",
        "gpt2_tiny_opset17.onnx",
        "gelu_opset20.onnx",
    ] {
        let model = intone::onnx::load(&crate::fixture(name)).unwrap();
        let a = intone::onnx::encode(&model).unwrap();
        let b = intone::onnx::encode(&model).unwrap();
        assert_eq!(a, b, "{name}: two encodings differ");
        // The streaming writer emits exactly what prost's one-shot encoder does.
        let proto = intone::onnx::export(&model).unwrap();
        assert!(
            prost::Message::encode_to_vec(&proto) == a,
            "{name}: streaming encoding differs"
        );
    }
}

#[test]
fn decoding_does_not_copy_tensor_bytes() {
    let bytes = Bytes::from(std::fs::read(crate::fixture("bert_tiny_opset17.onnx")).unwrap());
    let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
    let proto = intone::onnx::decode(bytes.clone(), "bert").unwrap();
    let inits = &proto.graph.as_ref().unwrap().initializer;
    assert!(!inits.is_empty());
    for t in inits {
        let raw = t.raw_data.as_ref().expect("raw data");
        assert!(
            range.contains(&(raw.as_ptr() as usize)),
            "{} was copied",
            t.name()
        );
    }
}
