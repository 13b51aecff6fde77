//! `upgrade-opset(to=N)`: rewrites every default-domain op to its form at opset N and imports N.
//!
//! Rewrite: attributes that later opsets turned into inputs become constant inputs (Squeeze and
//! Unsqueeze axes at 13, ReduceSum axes at 13, the other Reduce* axes at 18, Split sizes at 13,
//! Slice at 10, Pad and Clip at 11, TopK at 10); `Softmax`/`LogSoftmax`/`Hardmax` below 13, whose
//! axis meant "flatten from here", keep that meaning through Reshape when the axis is not last;
//! inference-mode `Dropout` below 12 loses its removed attributes.
//! Preconditions: subgraphs (If/Loop/Scan bodies) contain no op whose form changes; models at or
//! above N are left alone (there is no downgrade). Exact: the computed function is unchanged.
//! Why: later passes then see one version of each op, and the integer targets need opset ≥ 15
//! (`CastLike`) and ≥ 18.

use super::prelude::*;

use crate::ir::{Array, DataType, attr};
use crate::ops::eval::normalize_axis;
use crate::pass::matcher::out;
use crate::schema::NodeProto;
use crate::{Error, ops};

pub struct UpgradeOpset {
    to: i64,
}

impl UpgradeOpset {
    pub fn new(options: &PassOptions) -> Result<UpgradeOpset> {
        let to = options.get::<i64>("to")?;
        if !(13..=21).contains(&to) {
            return Err(Error::Usage(format!(
                "upgrade-opset: to={to} is outside 13..=21"
            )));
        }
        Ok(UpgradeOpset { to })
    }
}

/// Lowest IR version each opset needs.
fn ir_version_for(opset: i64) -> i64 {
    match opset {
        ..=15 => 8,
        16..=18 => 8,
        19 | 20 => 9,
        _ => 10,
    }
}

/// Ops whose form changes between the opsets this pass spans, with the opset of the change.
fn changes(op_type: &str) -> &'static [i64] {
    match op_type {
        "Squeeze" | "Unsqueeze" | "ReduceSum" | "Split" | "Softmax" | "LogSoftmax" | "Hardmax" => {
            &[13]
        }
        "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1" | "ReduceL2"
        | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare" => &[18],
        "Slice" | "TopK" => &[10],
        "Pad" | "Clip" => &[11],
        "Dropout" => &[12],
        "Upsample" => &[10],
        "Resize" => &[11],
        // Axis and mode spellings changed; intone does not rewrite these (refused).
        "DFT" | "GridSample" => &[20],
        _ => &[],
    }
}

fn node_changes(node: &NodeProto, from: i64, to: i64) -> bool {
    let domain = node.domain();
    (domain.is_empty() || domain == "ai.onnx")
        && changes(node.op_type()).iter().any(|&v| from < v && v <= to)
}

impl Pass for UpgradeOpset {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let from = model.opset("").unwrap_or(1);
        if from >= self.to {
            return Ok(());
        }
        if from < 9 {
            return Err(Error::unsupported(format!(
                "upgrading from opset {from}: intone reads models from opset 9 on"
            )));
        }
        // Subgraph bodies are carried verbatim; refuse when they would need rewriting.
        for id in model.graph.node_ids() {
            let Some(op) = model.graph.op(id) else {
                continue;
            };
            for a in op.attrs() {
                for g in a.g.iter().chain(a.graphs.iter()) {
                    if let Some(n) = g.node.iter().find(|n| node_changes(n, from, self.to)) {
                        return Err(Error::unsupported(format!(
                            "upgrading {} from opset {from} to {}: its subgraph holds a {} whose form changes",
                            op.describe(),
                            self.to,
                            n.op_type()
                        )));
                    }
                }
            }
        }
        let facts = cx.facts(model)?;
        for id in model.graph.topological_order()? {
            let op = model.graph.op(id).expect("op").clone();
            if !op.domain().is_empty()
                || !changes(op.op_type())
                    .iter()
                    .any(|&v| from < v && v <= self.to)
            {
                continue;
            }
            cx.report.matched += 1;
            let input = model.graph.input(id, 0).and_then(|v| facts.get(v)).cloned();
            upgrade(model, id, &op, from, self.to, input.as_ref())?;
            cx.report.rewritten += 1;
        }
        for import in &mut model.header.opset_import {
            if import.domain().is_empty() || import.domain() == "ai.onnx" {
                import.version = Some(self.to);
            }
        }
        let ir = model
            .header
            .ir_version
            .unwrap_or(0)
            .max(ir_version_for(self.to));
        model.header.ir_version = Some(ir);
        Ok(())
    }
}

/// Moves an ints attribute into a new constant input at `slot` (absent attribute: no input).
fn attr_to_input(rw: &mut Rewriter, id: NodeId, name: &str, slot: usize) -> Result<()> {
    let op = rw.graph().op(id).expect("op");
    let Some(values) = op.attr_ints(name)? else {
        return Ok(());
    };
    let c = rw.constant(name, &Array::from_vec(&[values.len()], values)?)?;
    rw.modify_op(id, |op| {
        op.remove_attr(name);
    })?;
    rw.set_input(id, slot, Some(c));
    Ok(())
}

/// A float scalar attribute, when present, as a constant input of the data's element type.
fn scalar_to_input(
    rw: &mut Rewriter,
    id: NodeId,
    name: &str,
    dtype: Option<DataType>,
    slot: usize,
) -> Result<()> {
    let op = rw.graph().op(id).expect("op");
    if op.attr(name).is_none() {
        return Ok(());
    }
    let value = Array::scalar(op.attr_float(name, 0.0)?).cast(dtype.unwrap_or(DataType::Float))?;
    let c = rw.constant(name, &value)?;
    rw.modify_op(id, |op| {
        op.remove_attr(name);
    })?;
    rw.set_input(id, slot, Some(c));
    Ok(())
}

fn upgrade(
    model: &mut Model,
    id: NodeId,
    op: &crate::ir::Op,
    from: i64,
    to: i64,
    input: Option<&ops::Facts>,
) -> Result<()> {
    let rank = input.and_then(ops::Facts::rank);
    let dtype = input.and_then(|f| f.dtype);
    let mut rw = Rewriter::new(model, id);
    match op.op_type() {
        "Squeeze" | "Unsqueeze" | "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin"
        | "ReduceProd" | "ReduceL1" | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp"
        | "ReduceSumSquare" => {
            attr_to_input(&mut rw, id, "axes", 1)?;
        }
        "Split" => attr_to_input(&mut rw, id, "split", 1)?,
        "TopK" => {
            // TopK-1's k is an int attribute; from 10 it is a 1-element input.
            let k = op.attr_int("k", 1)?;
            let c = rw.constant("k", &Array::from_vec(&[1], vec![k])?)?;
            rw.modify_op(id, |op| {
                op.remove_attr("k");
            })?;
            rw.set_input(id, 1, Some(c));
        }
        "Slice" => {
            for (i, name) in ["starts", "ends", "axes"].iter().enumerate() {
                attr_to_input(&mut rw, id, name, i + 1)?;
            }
        }
        "Pad" => {
            attr_to_input(&mut rw, id, "pads", 1)?;
            scalar_to_input(&mut rw, id, "value", dtype, 2)?;
        }
        "Clip" => {
            scalar_to_input(&mut rw, id, "min", dtype, 1)?;
            scalar_to_input(&mut rw, id, "max", dtype, 2)?;
        }
        "Dropout" => {
            rw.modify_op(id, |op| {
                op.remove_attr("is_test");
                op.remove_attr("ratio");
            })?;
        }
        "Softmax" | "LogSoftmax" | "Hardmax" => {
            // Below 13, `axis` flattens [d0..d(axis-1)] x [d(axis)..]; from 13 it is one axis.
            let axis = op.attr_int("axis", 1)?;
            let x = rw.graph().input(id, 0).expect("input");
            let y = ValueId { node: id, slot: 0 };
            let flat = match rank {
                Some(rank) => {
                    let axis = normalize_axis(axis, rank, op)?;
                    if axis + 1 == rank || rank == 0 {
                        rw.modify_op(id, |op| op.set_attr(attr::int("axis", -1)))?;
                        return rw.finish();
                    }
                    let leading: Vec<i64> = vec![0; axis].into_iter().chain([-1]).collect();
                    let flat_shape =
                        rw.constant("flat_shape", &Array::from_vec(&[axis + 1], leading)?)?;
                    rw.op("Reshape", "flatten", &[x, flat_shape], vec![])?
                }
                // Flatten needs no rank: [d0..d(axis-1)] x [d(axis)..] is what it computes.
                None => rw.op("Flatten", "flatten", &[x], vec![attr::int("axis", axis)])?,
            };
            let new = rw.op(
                op.op_type(),
                "over_last",
                &[flat],
                vec![attr::int("axis", -1)],
            )?;
            let shape = rw.op("Shape", "shape", &[x], vec![])?;
            let back = rw.op("Reshape", "restore", &[new, shape], vec![])?;
            rw.replace(y, back)?;
        }
        "Upsample" | "Resize" => {
            // Upsample and Resize-10 compute Resize-11's asymmetric coordinates, nearest
            // rounding down; the scales move from the attribute (Upsample-7) or slot 1.
            let x = rw.graph().input(id, 0).expect("input");
            let scales = match op.attr_floats("scales")? {
                Some(s) if from < 9 => {
                    Some(rw.constant("scales", &Array::from_vec(&[s.len()], s)?)?)
                }
                _ => rw.graph().input(id, 1),
            };
            let mode = op.attr_string("mode")?.unwrap_or_else(|| "nearest".into());
            let attrs = vec![
                attr::string("mode", if mode == "bilinear" { "linear" } else { &mode }),
                attr::string("coordinate_transformation_mode", "asymmetric"),
                attr::string("nearest_mode", "floor"),
            ];
            let resize = rw.op_node(
                crate::ir::Op::new("Resize", ""),
                "resize",
                &[Some(x), None, scales],
                attrs,
                1,
            )?;
            rw.replace(out(id), out(resize))?;
        }
        other => {
            return Err(Error::unsupported(format!(
                "upgrading {} ({other}) from opset {from} to {to}",
                op.describe()
            )));
        }
    }
    rw.finish()
}
