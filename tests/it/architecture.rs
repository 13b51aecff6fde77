//! The architecture's rules, checked: layers import only downward, passes declare phases the
//! manager enforces, presets are ordered stages, the op table drives data movement, and
//! cloning a subgraph keeps the value map right.

use std::collections::HashMap;
use std::path::Path;

use intone::ir::quant::{QuantFacts, Scale};
use intone::ir::{Array, DataType};
use intone::pass::{CompileOptions, Manager, Pipeline, Rewriter};
use intone::passes::{PASSES, PRESETS};

use crate::build::*;

/// The layers, bottom first; a module may use only modules of a lower rank (and its own).
/// The same order is drawn in the crate docs (`src/lib.rs`).
const LAYERS: &[(&str, usize)] = &[
    ("schema", 0),
    ("error", 0),
    ("quant", 1),
    ("ir", 2),
    ("onnx", 3),
    ("npy", 3),
    ("ops", 4),
    ("pass", 5),
    ("lower", 6),
    ("runner", 7),
    ("passes", 8),
    ("cli", 9),
    ("main", 9),
    ("lib", 9),
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules named after `crate::` in non-comment source, with their line:
/// `crate::ir::Graph`, and each first segment of a group `crate::{ir, ops::table}` (groups may
/// span lines).
fn crate_paths(source: &str) -> Vec<(usize, String)> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect()
    };
    let code: Vec<&str> = source
        .lines()
        .map(|l| match l.trim_start().starts_with("//") {
            true => "",
            false => l,
        })
        .collect();
    let text = code.join("\n");
    let line_of = |at: usize| text[..at].matches('\n').count() + 1;
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let tail = &text[at + "crate::".len()..];
        if let Some(group) = tail.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for part in group.split(',') {
                let name = ident(part.trim_start());
                if !name.is_empty() {
                    found.push((line_of(at), name));
                }
            }
        } else {
            let name = ident(tail);
            if !name.is_empty() {
                found.push((line_of(at), name));
            }
        }
    }
    found
}

#[test]
fn layers_import_only_downward() {
    let root = crate::root();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("passes"), &mut files);
    let mut violations = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let module = if rel.starts_with("passes/") {
            "passes".to_string()
        } else {
            let first = rel["src/".len()..].split('/').next().unwrap();
            first.trim_end_matches(".rs").to_string()
        };
        let own = rank(&module).unwrap_or_else(|| panic!("{rel}: module {module} has no layer"));
        for (line, used) in crate_paths(&std::fs::read_to_string(&file).unwrap()) {
            let Some(r) = rank(&used) else { continue };
            if used != module && r >= own {
                violations.push(format!("{rel}:{line}: {module} uses {used}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "upward imports:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_layer_check_sees_every_import_form() {
    let source = "use crate::passes::PASSES;\n// crate::runner in a comment\nuse crate::{\n    Error,\n    lower::engine,\n};";
    assert_eq!(
        crate_paths(source),
        vec![(1, "passes".to_string()), (3, "lower".to_string())]
    );
}

fn float_model() -> intone::ir::Model {
    ModelBuilder::new(17)
        .input("x", F32, &[D::N(2), D::N(4)])
        .init("w", Array::from_vec(&[4, 3], vec![0.5f32; 12]).unwrap())
        .node("MatMul", &["x", "w"], &["y"])
        .output("y", F32, &[D::N(2), D::N(3)])
        .model()
}

fn run(model: &mut intone::ir::Model, spec: &str) -> intone::Result<()> {
    let pipeline = Pipeline::parse(spec, PASSES)?;
    Manager::new(&pipeline, PASSES)?
        .run(model, &CompileOptions::default())
        .map(|_| ())
}

#[test]
fn a_lowering_before_quantize_names_what_is_missing() {
    let mut model = float_model();
    let before = intone::onnx::text::model_to_text(&model).unwrap();
    let err = run(&mut model, "eliminate-dead-nodes,lower-softmax-to-shiftmax").unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("pass lower-softmax-to-shiftmax runs on planned or lowered models")
            && message.contains("run calibrate and quantize before it"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
    // Checked before anything ran.
    assert_eq!(before, intone::onnx::text::model_to_text(&model).unwrap());
    let err = run(&mut model, "expose-integer-io")
        .unwrap_err()
        .to_string();
    assert!(err.contains("run legalize before it"), "{err}");
    // Legalizing needs something lowered.
    let err = run(&mut model, "legalize,quantize")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pass legalize runs on lowered or legal"),
        "{err}"
    );
}

#[test]
fn presets_are_stages_in_order() {
    for preset in PRESETS {
        let kinds: Vec<_> = preset.stages.iter().map(|s| s.kind).collect();
        assert!(
            kinds.windows(2).all(|w| w[0] <= w[1]),
            "{}: stages out of order: {kinds:?}",
            preset.name
        );
        let pipeline = Pipeline::preset(preset.name, PRESETS, PASSES).unwrap();
        assert_eq!(pipeline.to_text(), preset.passes(), "{}", preset.name);
    }
}

#[test]
fn option_defaults_come_from_the_registry() {
    // Every pass builds with no options written: its defaults are filled in from its entry.
    for info in PASSES {
        info.instantiate(&intone::pass::PassOptions::new(info.name))
            .unwrap_or_else(|e| panic!("{}: {e}", info.name));
    }
}

#[test]
fn data_movement_is_one_table_row() {
    use intone::ops::table::{IntervalRule, Movement, data_movement, info};
    let movement: Vec<&str> = data_movement().collect();
    for op in [
        "Reshape",
        "Transpose",
        "Slice",
        "Pad",
        "MaxPool",
        "Gather",
        "Split",
    ] {
        assert!(movement.contains(&op), "{op} is not data movement");
    }
    for op in ["Add", "MatMulInteger", "Concat", "Cast"] {
        assert!(!movement.contains(&op), "{op} moves no data");
    }
    for op in movement {
        let row = info(op).unwrap();
        assert_ne!(row.interval, IntervalRule::Arithmetic, "{op}");
        assert_ne!(row.movement, Movement::Computes, "{op}");
    }
    assert!(info("MaxPool").unwrap().integer.accepts(DataType::Uint8));
    assert!(!info("MaxPool").unwrap().integer.accepts(DataType::Int32));
}

/// An integer model `x → Abs → Neg → y` whose Abs output stands for a value `abs`.
fn integer_model() -> intone::ir::Model {
    let i32t = DataType::Int32;
    let mut model = ModelBuilder::new(17)
        .input("x", i32t, &[D::N(2), D::N(3)])
        .node("Abs", &["x"], &["abs"])
        .node("Neg", &["abs"], &["y"])
        .output("y", i32t, &[D::N(2), D::N(3)])
        .model();
    let abs = model.graph.find_value("abs").unwrap();
    model.graph.value_mut(abs).quant = Some(QuantFacts {
        scale: Scale::PerTensor(0.5),
        bits: 32,
        signed: true,
        zero_point: 0,
        range: Some((0, 100)),
    });
    model
}

#[test]
fn cloned_subgraphs_keep_the_value_map() {
    let reference = integer_model();
    let mut model = integer_model();
    let g = &model.graph;
    let abs = g.find_value("abs").unwrap();
    let y = g.find_value("y").unwrap();
    let facts = g.value(abs).quant.clone();
    let nodes = [abs.node, y.node];
    let (a, b) = {
        let mut rw = Rewriter::unanchored(&mut model);
        let a = rw.clone_subgraph(&nodes, &HashMap::new(), "a").unwrap();
        let b = rw.clone_subgraph(&nodes, &HashMap::new(), "b").unwrap();
        // y = Neg(Abs(x)) twice, summed: the originals die.
        let sum = rw.op("Add", "twice", &[a[&y], b[&y]], vec![]).unwrap();
        rw.replace(y, sum).unwrap();
        rw.finish().unwrap();
        (a, b)
    };
    let g = &model.graph;
    assert!(
        g.find_value("abs").is_none(),
        "the original is dead and removed"
    );
    for (copy, name) in [(a[&abs], "Abs_0/a"), (b[&abs], "Abs_0/b")] {
        assert_eq!(g.value_name(copy), name);
        assert_eq!(g.value(copy).origin.as_deref(), Some("abs"));
        assert_eq!(g.value(copy).quant, facts);
    }
    assert_eq!(
        g.input(a[&y].node, 0),
        Some(a[&abs]),
        "a copy reads its own copies"
    );
    // The value map lists both integer values for the one value `abs`, and the per-layer
    // check compares both with it.
    assert_eq!(intone::lower::value_map::record(&mut model).unwrap(), 2);
    let inputs = [Array::from_vec(&[2, 3], vec![-3i32, -1, 0, 1, 2, 7]).unwrap()];
    let report = intone::runner::check(&reference, &model, &inputs, true).unwrap();
    let compared: Vec<(&str, &str)> = report
        .layers
        .iter()
        .map(|c| (c.value.as_str(), c.reference.as_str()))
        .collect();
    assert!(compared.contains(&("Abs_0/a", "abs")), "{compared:?}");
    assert!(compared.contains(&("Abs_0/b", "abs")), "{compared:?}");
}
