//! Snapshot tests of the cleanup passes: the text form before and after, and the remarks.
//! Each positive case has a negative one beside it.

use intone::ir::{Array, Model};
use intone::onnx::text::model_to_text;
use intone::pass::{CompileOptions, Manager, PassReport, Pipeline};
use intone::passes::PASSES;
use intone::runner::Runner;

use crate::build::*;

/// Runs `spec` with the verifier on and returns the model and reports.
pub fn run(mut model: Model, spec: &str, options: &CompileOptions) -> (Model, Vec<PassReport>) {
    let pipeline = match intone::passes::PRESETS.iter().find(|p| p.name == spec) {
        Some(preset) => Pipeline::parse(&preset.passes(), PASSES).unwrap(),
        None => Pipeline::parse(spec, PASSES).unwrap(),
    };
    let manager = Manager::new(&pipeline, PASSES).unwrap();
    assert!(manager.verify_each);
    let reports = manager.run(&mut model, options).unwrap();
    (model, reports)
}

/// Before, after, and what the passes said: the snapshot body.
fn before_after(model: Model, spec: &str, options: &CompileOptions) -> String {
    let before = model_to_text(&model).unwrap();
    let (after, reports) = run(model, spec, options);
    let mut out = format!(
        "--- before\n{before}--- after {spec}\n{}",
        model_to_text(&after).unwrap()
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

fn pinned(pairs: &[(&str, &[i64])]) -> CompileOptions {
    let mut o = CompileOptions::default();
    for (name, dims) in pairs {
        o.input_shapes.insert(name.to_string(), dims.to_vec());
    }
    o
}

#[test]
fn eliminate_identity_reads_through() {
    let model = ModelBuilder::new(17)
        .input("x", F32, &[D::S("n")])
        .node("Identity", &["x"], &["a"])
        .node("Relu", &["a"], &["r"])
        .node("Identity", &["r"], &["y"])
        .output("y", F32, &[D::S("n")])
        .model();
    insta::assert_snapshot!(before_after(
        model,
        "eliminate-identity",
        &Default::default()
    ));
}

#[test]
fn eliminate_identity_keeps_an_identity_between_graph_input_and_output() {
    let model = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2)])
        .node("Identity", &["x"], &["y"])
        .node("Relu", &["x"], &["z"])
        .output("y", F32, &[D::N(2)])
        .output("z", F32, &[D::N(2)])
        .model();
    insta::assert_snapshot!(before_after(
        model,
        "eliminate-identity",
        &Default::default()
    ));
}

#[test]
fn eliminate_dead_nodes_removes_unread_ops_and_initializers() {
    let model = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2)])
        .input("unused", F32, &[D::N(2)])
        .init("w", Array::from_vec(&[2], vec![1f32, 2.0]).unwrap())
        .init("w_dead", Array::from_vec(&[2], vec![3f32, 4.0]).unwrap())
        .node("Add", &["x", "w"], &["y"])
        .node("Mul", &["x", "w_dead"], &["dead1"])
        .node("Relu", &["dead1"], &["dead2"])
        .output("y", F32, &[D::N(2)])
        .model();
    insta::assert_snapshot!(before_after(
        model,
        "eliminate-dead-nodes",
        &Default::default()
    ));
}

/// The shape arithmetic of a dynamic export: y = Reshape(x, [batch, -1]).
fn dynamic_flatten() -> ModelBuilder {
    ModelBuilder::new(17)
        .input("x", F32, &[D::S("batch"), D::N(3), D::N(4)])
        .init("zero", vec_i64(&[0]))
        .init("minus_one", vec_i64(&[-1]))
        .node("Shape", &["x"], &["shape"])
        .node_with(
            "Gather",
            &["shape", "zero"],
            &["batch"],
            vec![attr::int("axis", 0)],
        )
        .node_with(
            "Concat",
            &["batch", "minus_one"],
            &["target2"],
            vec![attr::int("axis", 0)],
        )
        .node("Reshape", &["x", "target2"], &["y"])
        .output("y", F32, &[D::S("batch"), D::N(12)])
}

#[test]
fn fold_constants_folds_shape_arithmetic_once_inputs_are_pinned() {
    let options = pinned(&[("x", &[2, 3, 4])]);
    insta::assert_snapshot!(before_after(
        dynamic_flatten().model(),
        "fold-constants,eliminate-dead-nodes",
        &options
    ));
}

#[test]
fn fold_constants_leaves_dynamic_dimensions_alone() {
    insta::assert_snapshot!(before_after(
        dynamic_flatten().model(),
        "fold-constants,eliminate-dead-nodes",
        &Default::default()
    ));
}

#[test]
fn fold_constants_evaluates_constant_subgraphs_within_the_size_cap() {
    let model = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2), D::N(3)])
        .init(
            "w",
            Array::from_vec(&[2, 3], vec![1f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap(),
        )
        .init("two", scalar_f32(2.0))
        .init("big_shape", vec_i64(&[64, 64]))
        .node("Transpose", &["w"], &["wt"])
        .node("Mul", &["wt", "two"], &["w2"])
        .node("MatMul", &["x", "w2"], &["y"])
        .node("ConstantOfShape", &["big_shape"], &["big"])
        .node("ReduceSum", &["big"], &["total"])
        .output("y", F32, &[D::N(2), D::N(2)])
        .output("total", F32, &[D::N(1), D::N(1)])
        .model();
    let model_copy = model.clone();
    // Over the cap, ConstantOfShape (4096 elements) stays and says why.
    insta::assert_snapshot!(
        "fold_constants_size_cap",
        before_after(
            model,
            "fold-constants(max-elements=1000),eliminate-dead-nodes",
            &Default::default()
        )
    );
    insta::assert_snapshot!(
        "fold_constants_no_cap",
        before_after(
            model_copy,
            "fold-constants,eliminate-dead-nodes",
            &Default::default()
        )
    );
}

#[test]
fn dump_of_a_real_export() {
    let model = intone::onnx::load(&crate::fixture("gelu_opset20.onnx")).unwrap();
    insta::assert_snapshot!(model_to_text(&model).unwrap());
}

/// Runs `model` on the fixture's sample inputs in tract.
fn run_fixture(model: &Model, stem: &str) -> Vec<(String, Array)> {
    let runner = Runner::new(model).unwrap();
    let dir = crate::fixture("data").join(stem);
    let inputs: Vec<Array> = runner
        .input_names()
        .iter()
        .map(|n| intone::npy::read(&dir.join(format!("{n}.npy"))).unwrap())
        .collect();
    runner.run(&inputs, None).unwrap()
}

#[test]
fn cleanup_with_pinned_shapes_keeps_every_fixture_output() {
    for stem in [
        "vit_tiny_opset13",
        "vit_tiny_opset17",
        "deit_tiny_opset13",
        "swin_tiny_opset13",
        "swin_tiny_opset17",
        "bert_tiny_opset13",
        "bert_tiny_opset17",
        "gpt2_tiny_opset13",
        "gpt2_tiny_opset17",
        "digits_vit_opset13",
    ] {
        let original = intone::onnx::load(&crate::fixture(&format!("{stem}.onnx"))).unwrap();
        let expected = run_fixture(&original, stem);
        // Pin every input to the sample's shape.
        let runner = Runner::new(&original).unwrap();
        let mut options = CompileOptions::default();
        for n in runner.input_names() {
            let a = intone::npy::read(&crate::fixture("data").join(stem).join(format!("{n}.npy")))
                .unwrap();
            options
                .input_shapes
                .insert(n.clone(), a.shape().iter().map(|&d| d as i64).collect());
        }
        let ops_before = original.graph.node_count();
        let (cleaned, _) = run(original, "cleanup", &options);
        assert!(
            cleaned.graph.node_count() < ops_before,
            "{stem}: nothing folded"
        );
        let shape_ops = cleaned
            .graph
            .node_ids()
            .filter(|&id| cleaned.graph.op(id).is_some_and(|op| op.is("Shape")))
            .count();
        assert_eq!(shape_ops, 0, "{stem}: Shape ops remain with pinned inputs");
        let got = run_fixture(&cleaned, stem);
        for ((name, e), (_, g)) in expected.iter().zip(&got) {
            // Folded batch norms round their weights once more, and tract's conv kernels sum
            // in a CPU-dependent order: relative to the output.
            let size = e.to_f64_vec().iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let diff = e
                .to_f64_vec()
                .iter()
                .zip(g.to_f64_vec())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(diff <= 1e-4 * size, "{stem}: output {name} moved by {diff}");
        }
    }
}

#[test]
fn upgrade_opset_moves_attributes_into_inputs() {
    let model = ModelBuilder::new(10)
        .input("x", F32, &[D::S("n"), D::N(3), D::N(4)])
        .node_with(
            "ReduceMean",
            &["x"],
            &["m"],
            vec![attr::ints("axes", &[-1]), attr::int("keepdims", 1)],
        )
        .node_with("Squeeze", &["m"], &["s"], vec![attr::ints("axes", &[2])])
        .node_with("Softmax", &["x"], &["p"], vec![attr::int("axis", 1)])
        .node_with("Clip", &["s"], &["c"], vec![attr::float("max", 6.0)])
        .output("c", F32, &[D::S("n"), D::N(3)])
        .output("p", F32, &[D::S("n"), D::N(3), D::N(4)])
        .model();
    insta::assert_snapshot!(before_after(
        model,
        "upgrade-opset(to=18)",
        &Default::default()
    ));
}

#[test]
fn upgrade_opset_leaves_newer_models_alone() {
    let model = crate::build::ModelBuilder::new(18)
        .input("x", F32, &[D::N(2)])
        .node_with("Softmax", &["x"], &["y"], vec![attr::int("axis", 0)])
        .output("y", F32, &[D::N(2)])
        .model();
    let before = model_to_text(&model).unwrap();
    let (after, reports) = run(model, "upgrade-opset(to=18)", &Default::default());
    assert_eq!(model_to_text(&after).unwrap(), before);
    assert_eq!(reports[0].matched, 0);
}

#[test]
fn canonicalize_keeps_outputs_and_checks_clean_on_every_fixture() {
    let dir = crate::tempdir();
    let mut written = String::new();
    for path in crate::onnx_files(&crate::fixture("")) {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let data_stem = if path.parent().unwrap().ends_with("external") {
            "model".to_string()
        } else {
            stem.clone()
        };
        let original = intone::onnx::load(&path).unwrap();
        let expected = run_fixture(&original, &data_stem);
        let (canonical, _) = run(original, "canonicalize", &Default::default());
        assert!(canonical.opset("").unwrap() >= 18, "{stem}");
        let got = run_fixture(&canonical, &data_stem);
        for ((name, e), (_, g)) in expected.iter().zip(&got) {
            // Folded batch norms round their weights once more, and tract's conv kernels sum
            // in a CPU-dependent order: relative to the output.
            let size = e.to_f64_vec().iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let diff = e
                .to_f64_vec()
                .iter()
                .zip(g.to_f64_vec())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(diff <= 1e-4 * size, "{stem}: output {name} moved by {diff}");
        }
        let out = dir.path().join(format!("{stem}.onnx"));
        intone::onnx::save(&canonical, &out).unwrap();
        written.push_str(&format!("{}\n", out.display()));
    }
    let report = crate::oracle("check_models.py", &[], &written);
    assert!(report.contains(" 0 failed"), "{report}");
}

#[test]
fn dump_shows_inferred_symbolic_shapes() {
    let out = crate::intone()
        .args(["dump", "--types"])
        .arg(crate::fixture("opsets/bert_tiny_opset11.onnx"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} missing"))
            .to_string()
    };
    assert!(
        line("= Gather(m.bert.embeddings.token_type_embeddings.weight")
            .ends_with("f32[batch,seq,32]")
    );
    assert!(
        line("layer.0/attention/self/Softmax_output_0 = Softmax").ends_with("f32[batch,2,seq,seq]"),
        "{}",
        line("layer.0/attention/self/Softmax_output_0 = Softmax")
    );
}

#[test]
fn attributes_missing_their_value_print_instead_of_panicking() {
    // Found by the fuzzer: `type: TENSOR` without the `t` field.
    let mut b = ModelBuilder::new(17)
        .node_with("Constant", &[], &["c"], vec![])
        .output("c", F32, &[]);
    b.graph().node[0]
        .attribute
        .push(intone::schema::AttributeProto {
            name: Some("value".into()),
            r#type: Some(intone::schema::attribute_proto::AttributeType::Tensor as i32),
            ..Default::default()
        });
    let text = model_to_text(&b.model()).unwrap();
    assert!(text.contains("{value: <missing tensor>}"), "{text}");
}
