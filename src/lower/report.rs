//! What a compiled model still computes in float, and why: the compile report's `float_ops`.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::Result;
use crate::ir::{DataType, DataTypeInfo, Model, ValueId};

/// Float ops of one kind that remain, with the reason.
#[derive(Clone, Debug, Serialize)]
pub struct FloatOps {
    pub op: String,
    pub count: usize,
    pub reason: String,
    /// A few of the nodes, by name.
    pub examples: Vec<String>,
}

/// Ops with a float result in `model`, grouped by type and reason.
pub fn float_ops(model: &Model) -> Result<Vec<FloatOps>> {
    let facts = crate::ops::analyze(model, &Default::default(), crate::ops::EVALUATION_LIMIT)?;
    let g = &model.graph;
    let is_float = |v: ValueId| {
        facts
            .get(v)
            .and_then(|f| f.dtype)
            .is_some_and(|t| t.is_float())
    };
    let order = g.topological_order()?;
    // Float ops that only lead (through Mul/Add/Round/Clip) into a cast to integers: the
    // quantization of a float value (graph input, or the exit of a float island).
    let mut quantizing: HashSet<ValueId> = HashSet::new();
    for &id in order.iter().rev() {
        let Some(op) = g.op(id) else { continue };
        let v = ValueId { node: id, slot: 0 };
        if !is_float(v) || g.is_graph_output(v) {
            continue;
        }
        let uses = g.uses(v);
        let feeds_quantization = !uses.is_empty()
            && uses.iter().all(|u| {
                let consumer = ValueId {
                    node: u.node,
                    slot: 0,
                };
                match g.op(u.node) {
                    Some(c) if c.is("Cast") => facts
                        .get(consumer)
                        .and_then(|f| f.dtype)
                        .is_some_and(|t| t.is_integer() && t != DataType::Bool),
                    Some(_) => quantizing.contains(&consumer),
                    None => false,
                }
            });
        if feeds_quantization && ["Mul", "Add", "Round", "Clip"].contains(&op.op_type()) {
            quantizing.insert(v);
        }
    }
    let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for &id in &order {
        let op = g.op(id).expect("op");
        let v = ValueId { node: id, slot: 0 };
        if !is_float(v) || g.constant(v).is_some() {
            continue;
        }
        let reason = if op.is("DequantizeLinear") {
            "dequantizes integers for a float op or a graph output".to_string()
        } else if quantizing.contains(&v) {
            "quantizes a float value (a float graph input, or the result of a float op)".to_string()
        } else {
            match op.op_type() {
                "Softmax" | "LogSoftmax" => {
                    "no integer lowering in this pipeline (lower-softmax-to-shiftmax)".into()
                }
                "LayerNormalization" => {
                    "no integer lowering in this pipeline (lower-layer-norm-to-int)".into()
                }
                "Gelu" | "Erf" | "Tanh" | "Sigmoid" => {
                    "no integer lowering in this pipeline (lower-gelu-to-shiftgelu)".into()
                }
                _ => "float arithmetic between float ops (part of a float island)".into(),
            }
        };
        let name = if op.name().is_empty() {
            g.value_name(v).to_string()
        } else {
            op.name().to_string()
        };
        groups
            .entry((op.op_type().to_string(), reason))
            .or_default()
            .push(name);
    }
    Ok(groups
        .into_iter()
        .map(|((op, reason), names)| FloatOps {
            op,
            count: names.len(),
            reason,
            examples: names.into_iter().take(3).collect(),
        })
        .collect())
}

/// Float values computed *between* the input quantization and the output dequantization:
/// values that depend on an integer value the model computed and that some integer op later
/// reads. An integer-only model has none. (Float work before the first quantization of an
/// input, or after the last dequantization, is outside the integer part.)
pub fn float_between(model: &Model) -> Result<Vec<String>> {
    let facts = crate::ops::analyze(model, &Default::default(), crate::ops::EVALUATION_LIMIT)?;
    let g = &model.graph;
    let dtype = |v: ValueId| facts.get(v).and_then(|f| f.dtype);
    let is_float = |v: ValueId| dtype(v).is_some_and(|t| t.is_float());
    // Shapes and indices are integers too, but not the model's numbers: only values that
    // descend from a computed integer tensor count as the integer part's.
    let order = g.topological_order()?;
    let mut after_integer: HashSet<ValueId> = HashSet::new();
    for &id in &order {
        let Some(op) = g.op(id) else { continue };
        if op.is("Shape") || op.is("Size") {
            continue;
        }
        let from_integer = g.inputs_of(id).into_iter().flatten().any(|v| {
            after_integer.contains(&v)
                || (g.op(v.node).is_some()
                    && g.constant(v).is_none()
                    && dtype(v).is_some_and(|t| t.is_integer())
                    && !is_float(v))
        });
        if from_integer {
            after_integer.extend(g.outputs_of(id));
        }
    }
    let mut feeds_integer: HashSet<ValueId> = HashSet::new();
    for &id in order.iter().rev() {
        let outs: Vec<ValueId> = g.outputs_of(id).collect();
        let integer_op = outs
            .iter()
            .any(|&v| dtype(v).is_some_and(|t| t.is_integer()));
        let read_on = outs.iter().any(|v| feeds_integer.contains(v));
        if integer_op || read_on {
            for v in g.inputs_of(id).into_iter().flatten() {
                feeds_integer.insert(v);
            }
        }
    }
    let between: Vec<String> = order
        .iter()
        .flat_map(|&id| g.outputs_of(id).collect::<Vec<_>>())
        .filter(|&v| is_float(v) && after_integer.contains(&v) && feeds_integer.contains(&v))
        .map(|v| g.value_name(v).to_string())
        .collect();
    Ok(between)
}
