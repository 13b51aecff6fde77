//! Snapshot tests of the canonicalization fusers (GELU, LayerNorm, Softmax, attention mask):
//! each form an exporter emits, with a negative case beside it. Every positive case also runs
//! in tract before and after, and must compute the same function.

use intone::ir::{Array, DataType, Model};
use intone::runner::Runner;

use crate::build::*;
use crate::passes::run;

/// Before/after text and remarks (the snapshot), after checking the function is unchanged.
fn fused(model: Model, spec: &str, inputs: &[Array], fires: bool) -> String {
    let before_text = intone::onnx::text::model_to_text(&model).unwrap();
    let expected = Runner::new(&model).unwrap().run(inputs, None).unwrap();
    let (after, reports) = run(model, spec, &Default::default());
    let got = Runner::new(&after).unwrap().run(inputs, None).unwrap();
    for ((name, e), (_, g)) in expected.iter().zip(&got) {
        let (e, g) = (e.to_f64_vec(), g.to_f64_vec());
        let worst = e
            .iter()
            .zip(&g)
            .map(|(a, b)| (a - b).abs() / (1.0 + a.abs()))
            .fold(0.0, f64::max);
        assert!(worst < 1e-5, "{spec}: output {name} changed by {worst}");
    }
    let rewritten: usize = reports.iter().map(|r| r.rewritten).sum();
    assert_eq!(rewritten > 0, fires, "{spec}: {reports:?}");
    let mut out = format!(
        "--- before\n{before_text}--- after {spec}\n{}",
        intone::onnx::text::model_to_text(&after).unwrap()
    );
    for r in reports {
        out.push_str(&format!(
            "--- {}: matched {}, rewritten {}, skipped {}\n",
            r.pass, r.matched, r.rewritten, r.skipped
        ));
        for remark in r.remarks {
            out.push_str(&format!("  {}: {}\n", remark.node, remark.message));
        }
    }
    out
}

fn ramp(shape: &[usize]) -> Array {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    Array::from_vec(shape, v).unwrap()
}

fn unary(opset: i64) -> ModelBuilder {
    ModelBuilder::new(opset).input("x", F32, &[D::S("n"), D::N(8)])
}

#[test]
fn fuse_gelu_erf_with_div_and_products_in_exporter_order() {
    let model = unary(20)
        .init("sqrt2", scalar_f32(std::f32::consts::SQRT_2))
        .init("one", scalar_f32(1.0))
        .init("half", scalar_f32(0.5))
        .node("Div", &["x", "sqrt2"], &["u"])
        .node("Erf", &["u"], &["e"])
        .node("Add", &["e", "one"], &["a"])
        .node("Mul", &["x", "a"], &["p"])
        .node("Mul", &["p", "half"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(8)])
        .model();
    insta::assert_snapshot!(fused(model, "fuse-gelu", &[ramp(&[3, 8])], true));
}

#[test]
fn fuse_gelu_erf_with_mul_and_half_first() {
    let model = unary(20)
        .init("inv_sqrt2", scalar_f32(std::f32::consts::FRAC_1_SQRT_2))
        .init("one", scalar_f32(1.0))
        .init("half", scalar_f32(0.5))
        .node("Mul", &["x", "half"], &["h"])
        .node("Mul", &["inv_sqrt2", "x"], &["u"])
        .node("Erf", &["u"], &["e"])
        .node("Add", &["one", "e"], &["a"])
        .node("Mul", &["h", "a"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(8)])
        .model();
    insta::assert_snapshot!(fused(model, "fuse-gelu", &[ramp(&[3, 8])], true));
}

#[test]
fn fuse_gelu_tanh_form_of_gpt2() {
    let model = unary(20)
        .init("three", scalar_f32(3.0))
        .init("k", scalar_f32(0.044715))
        .init("c", scalar_f32(0.797_884_6))
        .init("one", scalar_f32(1.0))
        .init("half", scalar_f32(0.5))
        .node("Pow", &["x", "three"], &["cube"])
        .node("Mul", &["k", "cube"], &["kc"])
        .node("Add", &["x", "kc"], &["s"])
        .node("Mul", &["c", "s"], &["u"])
        .node("Tanh", &["u"], &["t"])
        .node("Add", &["one", "t"], &["a"])
        .node("Mul", &["half", "x"], &["h"])
        .node("Mul", &["h", "a"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(8)])
        .model();
    insta::assert_snapshot!(fused(model, "fuse-gelu", &[ramp(&[3, 8])], true));
}

#[test]
fn fuse_gelu_sigmoid_form_becomes_quick_gelu() {
    let model = unary(20)
        .init("k", scalar_f32(1.702))
        .node("Mul", &["x", "k"], &["u"])
        .node("Sigmoid", &["u"], &["s"])
        .node("Mul", &["x", "s"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(8)])
        .model();
    insta::assert_snapshot!(fused(model, "fuse-gelu", &[ramp(&[3, 8])], true));
}

#[test]
fn fuse_gelu_reads_microsoft_bias_gelu() {
    let mut b = unary(20)
        .init("bias", ramp(&[8]))
        .node("BiasGelu", &["x", "bias"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(8)]);
    b.graph().node.last_mut().unwrap().domain = Some("com.microsoft".into());
    b.proto
        .opset_import
        .push(intone::schema::OperatorSetIdProto {
            domain: Some("com.microsoft".into()),
            version: Some(1),
        });
    let (after, _) = run(b.model(), "fuse-gelu", &Default::default());
    let text = intone::onnx::text::model_to_text(&after).unwrap();
    assert!(
        text.contains("= Gelu(") && text.contains("= Add(x, bias)"),
        "{text}"
    );
    assert!(!text.contains("= BiasGelu("), "{text}");
}

#[test]
fn fuse_gelu_leaves_a_look_alike_with_the_wrong_constant() {
    let model = unary(20)
        .init("two", scalar_f32(2.0))
        .init("one", scalar_f32(1.0))
        .init("half", scalar_f32(0.5))
        .node("Div", &["x", "two"], &["u"])
        .node("Erf", &["u"], &["e"])
        .node("Add", &["e", "one"], &["a"])
        .node("Mul", &["x", "a"], &["p"])
        .node("Mul", &["p", "half"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(8)])
        .model();
    insta::assert_snapshot!(fused(model, "fuse-gelu", &[ramp(&[3, 8])], false));
}

/// The decomposed LayerNorm of opset < 17 exports (here at 17 so that the fused op exists).
fn decomposed_layer_norm(axis: i64, square: &str) -> Model {
    let b = unary(17)
        .init("two", scalar_f32(2.0))
        .init("eps", scalar_f32(1e-12))
        .init("gamma", ramp(&[8]))
        .init("beta", ramp(&[8]))
        .node_with(
            "ReduceMean",
            &["x"],
            &["mean"],
            vec![attr::ints("axes", &[axis])],
        )
        .node("Sub", &["x", "mean"], &["d"]);
    let b = if square == "pow" {
        b.node("Pow", &["d", "two"], &["sq"])
    } else {
        b.node("Mul", &["d", "d"], &["sq"])
    };
    b.node_with(
        "ReduceMean",
        &["sq"],
        &["var"],
        vec![attr::ints("axes", &[axis])],
    )
    .node("Add", &["var", "eps"], &["ve"])
    .node("Sqrt", &["ve"], &["std"])
    .node("Div", &["d", "std"], &["n"])
    .node("Mul", &["n", "gamma"], &["g"])
    .node("Add", &["g", "beta"], &["y"])
    .output("y", F32, &[D::S("n"), D::N(8)])
    .model()
}

#[test]
fn fuse_layer_norm_reads_the_decomposition() {
    insta::assert_snapshot!(fused(
        decomposed_layer_norm(-1, "pow"),
        "fuse-layer-norm",
        &[ramp(&[3, 8])],
        true
    ));
}

#[test]
fn fuse_layer_norm_reads_a_square_as_a_product() {
    let (after, _) = run(
        decomposed_layer_norm(1, "mul"),
        "fuse-layer-norm",
        &Default::default(),
    );
    let text = intone::onnx::text::model_to_text(&after).unwrap();
    assert!(text.contains("LayerNormalization"), "{text}");
}

#[test]
fn fuse_layer_norm_leaves_a_normalisation_over_another_axis() {
    insta::assert_snapshot!(fused(
        decomposed_layer_norm(0, "pow"),
        "fuse-layer-norm",
        &[ramp(&[3, 8])],
        false
    ));
}

/// Exp / ReduceSum(Exp) over axis 1; with `exp_is_output` the exponentials are also a graph
/// output, so they must stay.
fn decomposed_softmax(exp_is_output: bool) -> Model {
    let b = unary(18)
        .init("axes", vec_i64(&[1]))
        .node("ReduceMax", &["x", "axes"], &["m"])
        .node("Sub", &["x", "m"], &["d"])
        .node("Exp", &["d"], &["e"])
        .node("ReduceSum", &["e", "axes"], &["s"])
        .node("Div", &["e", "s"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(8)]);
    if exp_is_output {
        b.output("e", F32, &[D::S("n"), D::N(8)]).model()
    } else {
        b.model()
    }
}

#[test]
fn fuse_softmax_reads_exp_over_sum() {
    insta::assert_snapshot!(fused(
        decomposed_softmax(false),
        "fuse-softmax",
        &[ramp(&[3, 8])],
        true
    ));
}

#[test]
fn fuse_softmax_leaves_exponentials_that_something_else_reads() {
    insta::assert_snapshot!(fused(
        decomposed_softmax(true),
        "fuse-softmax",
        &[ramp(&[3, 8])],
        false
    ));
}

/// `scores + (1 − mask)·k` with mask int64 [n, 8] unsqueezed to [n, 1, 8].
fn masked_scores(one: f32, k: f32) -> Model {
    ModelBuilder::new(18)
        .input("scores", F32, &[D::S("n"), D::N(2), D::N(8)])
        .input("mask", DataType::Int64, &[D::S("n"), D::N(8)])
        .init("axis", vec_i64(&[1]))
        .init("one", scalar_f32(one))
        .init("k", scalar_f32(k))
        .node("Unsqueeze", &["mask", "axis"], &["m3"])
        .node_with(
            "Cast",
            &["m3"],
            &["mf"],
            vec![attr::int("to", DataType::Float as i32 as i64)],
        )
        .node("Sub", &["one", "mf"], &["inv"])
        .node("Mul", &["inv", "k"], &["bias"])
        .node("Add", &["scores", "bias"], &["y"])
        .output("y", F32, &[D::S("n"), D::N(2), D::N(8)])
        .model()
}

fn mask_inputs() -> Vec<Array> {
    let mask: Vec<i64> = (0..24).map(|i| i64::from(i % 8 < 5)).collect();
    vec![ramp(&[3, 2, 8]), Array::from_vec(&[3, 8], mask).unwrap()]
}

#[test]
fn fuse_attention_mask_turns_the_additive_mask_into_a_select() {
    insta::assert_snapshot!(fused(
        masked_scores(1.0, f32::MIN),
        "fuse-attention-mask",
        &mask_inputs(),
        true
    ));
}

#[test]
fn fuse_attention_mask_leaves_a_bias_that_is_not_zero_where_kept() {
    insta::assert_snapshot!(fused(
        masked_scores(2.0, -10000.0),
        "fuse-attention-mask",
        &mask_inputs(),
        false
    ));
}
