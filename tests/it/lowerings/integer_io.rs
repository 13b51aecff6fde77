//! `expose-integer-io`: the compiled model's inputs and outputs become the integers around its
//! quantization, with their encodings in the `intone.io` metadata.

use intone::ir::Array;

use super::*;
use crate::build::*;

const SPEC: &str = "expose-integer-io";
/// A whole linear compilation, legalized.
const COMPILED: &str =
    "calibrate,quantize,lower-linear-to-integer,fold-dyadic-requant,legalize(target=integer)";

fn x() -> Array {
    data(&[6, 8], 0, 2.0)
}

/// The snapshot with the boundary metadata after it.
fn with_metadata(case: &Case) -> String {
    let mut out = case.snapshot();
    for p in &case.after.header.metadata_props {
        out.push_str(&format!("--- metadata {}\n{}\n", p.key(), p.value()));
    }
    out
}

/// The `intone.io` entry of a boundary value: (dtype, scales, zero point).
fn boundary(case: &Case, name: &str) -> (String, Vec<f64>, i64) {
    let json = case
        .after
        .header
        .metadata_props
        .iter()
        .find(|p| p.key() == "intone.io")
        .expect("intone.io metadata")
        .value()
        .to_string();
    let all: serde_json::Value = serde_json::from_str(&json).unwrap();
    let entry = all
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {json}"));
    (
        entry["dtype"].as_str().unwrap().to_string(),
        entry["scale"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_f64().unwrap())
            .collect(),
        entry["zero_point"].as_i64().unwrap(),
    )
}

#[test]
fn inputs_and_outputs_become_the_integers_around_the_quantization() {
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[8, 4], 1, 0.5))
        .init("b", data(&[4], 2, 0.5))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Add", &["h", "b"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(4)])
        .model();
    let case = lower(model, COMPILED, SPEC, &calibrated(&[("x", x())]));
    insta::assert_snapshot!(with_metadata(&case));
    assert_eq!(case.counts(), (2, 2, 0));
    let text = model_to_text(&case.after).unwrap();
    assert!(text.contains("input x: u8[n,8]"), "{text}");
    assert!(text.contains("output y: i32[n,4]"), "{text}");
    assert_eq!(case.after_count("DequantizeLinear"), 0);

    // The caller's side: quantize with the recorded encoding, dequantize per channel.
    let (dtype, s_x, zp) = boundary(&case, "x");
    assert_eq!(dtype, "uint8");
    let xf = x().to_f64_vec();
    let q: Vec<u8> = xf
        .iter()
        .map(|v| ((v / s_x[0]).round_ties_even() + zp as f64).clamp(0.0, 255.0) as u8)
        .collect();
    let q = Array::from_vec(&[6, 8], q).unwrap();
    let (dtype, s_y, _) = boundary(&case, "y");
    assert_eq!((dtype.as_str(), s_y.len()), ("int32", 4));
    let got = Runner::new(&case.after).unwrap().run(&[q], None).unwrap()[0]
        .1
        .to_f64_vec();
    let expected = Runner::new(&case.float).unwrap().run(&[x()], None).unwrap()[0]
        .1
        .to_f64_vec();
    let peak = expected.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        let y = g * s_y[i % 4];
        assert!((e - y).abs() <= 0.03 * peak, "y[{i}] = {y}, float {e}");
    }
}

#[test]
fn an_input_quantized_two_ways_stays_float() {
    // x feeds the MatMul as uint8 and the residual sum as 16 bits: no one integer input.
    let model = ModelBuilder::new(18)
        .input("x", F32, &[D::S("n"), D::N(8)])
        .init("w", data(&[8, 8], 1, 0.3))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Add", &["h", "x"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(8)])
        .model();
    let case = lower(model, COMPILED, SPEC, &calibrated(&[("x", x())]));
    insta::assert_snapshot!(with_metadata(&case));
    // x is looked at and kept; y becomes integers.
    assert_eq!(case.counts(), (2, 1, 1));
    assert!(
        case.remarked("read by other ops than one quantization: stays float"),
        "{:?}",
        case.remarks()
    );
    let text = model_to_text(&case.after).unwrap();
    assert!(text.contains("input x: f32[n,8]"), "{text}");
    assert_eq!(boundary(&case, "y").0, "int32");
}
