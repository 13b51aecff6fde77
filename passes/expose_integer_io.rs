//! `expose-integer-io`: the compiled model reads and writes integers (`--integer-io`).
//!
//! Rewrite: a float graph input read only by quantizations to one target becomes an input of
//! that integer type (the quantization is the caller's: `q = clamp(round(x / s) + zp)`); a
//! graph output computed by `DequantizeLinear(q, s, zp)` becomes `q`. Names stay. Every
//! changed input and output is recorded with its scale and zero point in the model metadata
//! under `intone.io` (JSON), so callers can quantize and dequantize.
//! Preconditions: run last, after legalization. Exact: it moves the model's boundary.

use super::prelude::*;

use serde::Serialize;

use crate::ir::{DataType, NodeKind};
use crate::lower::island::quantization_at;
use crate::schema::StringStringEntryProto;

pub struct ExposeIntegerIo;

/// Metadata key of the boundary's encodings.
pub const KEY: &str = "intone.io";

#[derive(Serialize)]
struct Boundary {
    name: String,
    direction: &'static str,
    dtype: String,
    /// One scale, or one per channel along `axis`.
    scale: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    axis: Option<i64>,
    zero_point: i64,
}

impl Pass for ExposeIntegerIo {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let mut boundary = Vec::new();
        for id in model.graph.inputs().to_vec() {
            if !matches!(model.graph.node(id).kind, NodeKind::Input(_)) {
                continue;
            }
            let x = ValueId { node: id, slot: 0 };
            let readers: Vec<NodeId> = model.graph.uses(x).iter().map(|u| u.node).collect();
            let found: Vec<_> = readers
                .iter()
                .map(|&r| quantization_at(&model.graph, x, r))
                .collect();
            let Some(Some(first)) = found.first() else {
                continue;
            };
            let same = found
                .iter()
                .all(|q| q.as_ref().is_some_and(|q| q.target == first.target));
            let name = model.graph.value_name(x).to_string();
            cx.report.matched += 1;
            if !same || model.graph.is_graph_output(x) {
                cx.report.skipped += 1;
                cx.remark(name, "read by other ops than one quantization: stays float");
                continue;
            }
            let target = first.target.clone();
            let mut rw = Rewriter::new(model, id);
            for q in found.into_iter().flatten() {
                rw.replace(q.result, x)?;
                rw.erase_if_dead(q.last);
            }
            rw.finish()?;
            if let NodeKind::Input(info) = &mut model.graph.node_mut(id).kind {
                set_elem_type(info, target.dtype);
            }
            boundary.push(Boundary {
                name,
                direction: "input",
                dtype: format!("{:?}", target.dtype).to_lowercase(),
                scale: vec![target.scale],
                axis: None,
                zero_point: target.zero_point,
            });
            cx.report.rewritten += 1;
        }
        let outputs = model.graph.outputs().to_vec();
        for (index, output) in outputs.into_iter().enumerate() {
            let v = output.value;
            let g = &model.graph;
            let Some(op) = g.op(v.node).filter(|o| o.is("DequantizeLinear")) else {
                continue;
            };
            cx.report.matched += 1;
            let constant = |slot: usize| {
                g.input(v.node, slot)
                    .and_then(|c| g.constant(c))
                    .and_then(|t| t.decode().ok())
            };
            let (Some(q), Some(scale)) = (g.input(v.node, 0), constant(1)) else {
                cx.report.skipped += 1;
                continue;
            };
            let zero_point = constant(2).map_or(0, |z| z.to_f64_vec()[0] as i64);
            let axis = (scale.len() > 1).then(|| op.attr_int("axis", 1).unwrap_or(1));
            let dtype = g
                .value(q)
                .quant
                .as_ref()
                .map(|f| match (f.bits, f.signed) {
                    (..=8, true) if zero_point == 0 => DataType::Int8,
                    (..=8, _) => DataType::Uint8,
                    _ => DataType::Int32,
                })
                .unwrap_or(DataType::Int32);
            let name = g.value_name(v).to_string();
            if g.is_graph_input(q.node) || g.is_graph_output(q) {
                cx.report.skipped += 1;
                continue;
            }
            let mut rw = Rewriter::new(model, v.node);
            rw.replace(v, q)?;
            rw.erase_if_dead(v.node);
            rw.finish()?;
            let mut outputs = model.graph.outputs().to_vec();
            set_elem_type(&mut outputs[index].info, dtype);
            model
                .graph
                .set_output_info(index, outputs[index].info.clone());
            boundary.push(Boundary {
                name,
                direction: "output",
                dtype: format!("{dtype:?}").to_lowercase(),
                scale: scale.to_f64_vec(),
                axis,
                zero_point,
            });
            cx.report.rewritten += 1;
        }
        let json =
            serde_json::to_string(&boundary).map_err(|e| crate::Error::invalid(e.to_string()))?;
        let props = &mut model.header.metadata_props;
        props.retain(|p| p.key() != KEY);
        if !boundary.is_empty() {
            props.push(StringStringEntryProto {
                key: Some(KEY.into()),
                value: Some(json),
            });
        }
        Ok(())
    }
}

/// Sets the element type of a declared tensor value.
fn set_elem_type(info: &mut crate::schema::ValueInfoProto, dtype: DataType) {
    use crate::schema::type_proto::Value;
    if let Some(Value::TensorType(t)) = info.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        t.elem_type = Some(dtype as i32);
    }
}
