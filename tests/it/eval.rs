//! The constant evaluator against the ONNX backend node tests: each test's inputs become
//! initializers, `ops::analyze` propagates constants through the graph, and every output it
//! evaluates must equal the test's expected output.

use std::collections::BTreeMap;

use intone::ir::{Array, DataTypeInfo, Tensor};
use intone::schema::ModelProto;

use crate::roundtrip::read_pb_tensor;
use crate::{node_tests, onnx_files};

/// Float results are computed in f64 and rounded once; numpy's reference computes in f32.
fn close(expected: &Array, got: &Array) -> bool {
    if expected.dtype() != got.dtype() || expected.shape() != got.shape() {
        return false;
    }
    if !expected.dtype().is_float() {
        return expected == got;
    }
    expected
        .to_f64_vec()
        .iter()
        .zip(got.to_f64_vec())
        .all(|(&e, g)| {
            (e.is_nan() && g.is_nan()) || e == g || (e - g).abs() <= 1e-5 * e.abs().max(1.0)
        })
}

/// The model with its graph inputs replaced by constant initializers holding the test inputs.
fn with_constant_inputs(mut proto: ModelProto, inputs: Vec<Array>) -> ModelProto {
    let graph = proto.graph.as_mut().unwrap();
    for (decl, value) in graph.input.drain(..).zip(inputs) {
        graph
            .initializer
            .push(Tensor::from_array(decl.name(), &value).into_proto());
    }
    proto
}

#[test]
fn evaluator_matches_backend_node_tests() {
    let mut evaluated: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for path in onnx_files(&node_tests()) {
        let dir = path.parent().unwrap();
        let set = dir.join("test_data_set_0");
        let read_all = |kind: &str, n: usize| -> Option<Vec<Array>> {
            (0..n)
                .map(|i| read_pb_tensor(&set.join(format!("{kind}_{i}.pb"))))
                .collect()
        };
        let proto = intone::onnx::read_proto(&path).unwrap();
        let graph = proto.graph.as_ref().unwrap();
        let (n_in, n_out) = (graph.input.len(), graph.output.len());
        let (Some(inputs), Some(expected)) = (read_all("input", n_in), read_all("output", n_out))
        else {
            continue;
        };
        let op_type = graph
            .node
            .first()
            .map(|n| n.op_type().to_string())
            .unwrap_or_default();
        let model = match intone::onnx::import(with_constant_inputs(proto, inputs)) {
            Ok(m) => m,
            Err(_) => continue,
        };
        let facts = intone::ops::analyze(&model, &Default::default(), 1 << 22).unwrap();
        for (out, want) in model.graph.outputs().iter().zip(&expected) {
            let Some(got) = facts.get(out.value).and_then(|f| f.value.clone()) else {
                continue;
            };
            if close(want, &got) {
                *evaluated.entry(op_type.clone()).or_default() += 1;
            } else {
                failures.push(format!(
                    "{}: output '{}' expected {} got {}",
                    dir.file_name().unwrap().to_string_lossy(),
                    out.info.name(),
                    want,
                    got
                ));
            }
        }
    }
    let total: usize = evaluated.values().sum();
    eprintln!(
        "evaluated {total} outputs of {} op types: {:?}",
        evaluated.len(),
        evaluated.keys().collect::<Vec<_>>()
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        evaluated.len() >= 60,
        "only {} op types evaluated",
        evaluated.len()
    );
}
