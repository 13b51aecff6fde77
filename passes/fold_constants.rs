//! `fold-constants`: replaces ops whose results are known at compile time by initializers.
//!
//! Rewrite: `y = f(c1, .., cn)` with constant `ci` -> `y = const f(c1, .., cn)`; likewise
//! `Shape(x)` when x's shape is known, and the `Shape → Gather → Concat` arithmetic of dynamic
//! exports once `--input-shape` pins the inputs (see `ops::facts`).
//! Preconditions: the op is deterministic and intone evaluates it (`ops::eval`); the result has
//! at most `max-elements` elements. `Constant` ops count as constants and stay as they are.
//! Exact: integer results are bit-exact; float results are computed in f64 and rounded once.

use super::prelude::*;

use crate::ir::Array;
use crate::ops::analyze;

pub struct FoldConstants {
    max_elements: usize,
}

impl FoldConstants {
    pub fn new(options: &PassOptions) -> Result<FoldConstants> {
        Ok(FoldConstants {
            max_elements: options.get("max-elements")?,
        })
    }
}

/// Ops never folded: expanding a quantized weight back to float would undo quantization.
/// intone's own ops are not folded either: legalize expands them with their proven ranges.
const KEEP: &[&str] = &[
    "Constant",
    "DequantizeLinear",
    "QuantizeLinear",
    "DynamicQuantizeLinear",
];

impl Pass for FoldConstants {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let facts = analyze(model, &cx.options.input_shapes, self.max_elements)?;
        for id in model.graph.topological_order()? {
            let g = &model.graph;
            let op = g.op(id).expect("op");
            let kept = KEEP.contains(&op.op_type()) && op.domain().is_empty();
            if kept || op.domain() == crate::ops::intone::DOMAIN {
                continue;
            }
            let outputs: Vec<ValueId> = g.outputs_of(id).collect();
            let values: Option<Vec<std::sync::Arc<Array>>> = outputs
                .iter()
                .map(|v| facts.get(*v).and_then(|f| f.value.clone()))
                .collect();
            let Some(values) = values else {
                let first = ValueId { node: id, slot: 0 };
                if let Some(note) = facts.notes.get(&first) {
                    cx.report.skipped += 1;
                    let who = g.describe(id);
                    cx.remark(who, format!("not folded: {note}"));
                } else if op.is("Shape") {
                    let symbols = facts
                        .get(first)
                        .and_then(|f| f.elements.as_ref())
                        .map(|el| {
                            el.iter()
                                .filter(|d| d.known().is_none())
                                .map(|d| d.to_string())
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default();
                    let who = g.describe(id);
                    if !symbols.is_empty() {
                        cx.report.skipped += 1;
                        cx.remark(who, format!("not folded: dimensions {} are dynamic; pin the inputs with --input-shape", symbols.join(", ")));
                    }
                }
                continue;
            };
            if outputs.is_empty() {
                continue;
            }
            cx.report.matched += 1;
            let mut rw = Rewriter::new(model, id);
            let mut folded = Vec::new();
            for (v, array) in outputs.iter().zip(values) {
                let name = rw.graph().value_name(*v).to_string();
                let c = rw.constant("folded", &array)?;
                rw.replace(*v, c)?;
                folded.push((c, name));
            }
            rw.finish()?;
            // The constant takes over the value's name, so downstream names stay put.
            for (c, name) in folded {
                if model.graph.find_value(&name).is_none() {
                    model.graph.rename_value(c, &name)?;
                }
            }
            cx.report.rewritten += 1;
        }
        Ok(())
    }
}
