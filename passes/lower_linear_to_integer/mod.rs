//! `lower-linear-to-integer`: the linear algebra of the model runs in integers.
//!
//! Rewrites (s = scale, q = stored integers, see `lower::engine`):
//! - `MatMul(x, W)`, `Gemm`, `Conv` with constant W: `MatMulInteger(x_u8, W_i8, 128)` /
//!   `ConvInteger` → int32 accumulator at `s_x · s_W[c]` (W int8 symmetric per output channel);
//!   a depthwise Conv as int32 tap sums over its 16-bit input (`taps`);
//!   activation × activation `MatMul` (attention) the same with both operands quantized.
//! - `Add(acc, b)` with constant b: int32 bias at the accumulator's scale.
//! - `Add(a, b)` of two activations (a residual): both requantized to the output's planned
//!   scale (16 bits, carried in int32) and added.
//! - `Mul`/`Div` by a positive constant: no op, the scale absorbs it (1/√d, layer scale).
//! - A MaxPool of an int32 accumulator read at more than 8 bits: the Max of its taps (`taps`).
//! - Data movement (every op `ops::table` marks so: Reshape, Transpose, Slice, Split, Pad,
//!   MaxPool, …) and Concat run on the integers; Relu is `Max(q, zp)`.
//! - `Gather` from a constant embedding table reads an int8 table (per-tensor scale).
//! - `GlobalAveragePool`, `ReduceMean`, `AveragePool`: integer sums, the count in the scale
//!   (`average`). `Clip`/`Relu` of an accumulator: integer bounds, per channel if need be.
//!
//! Everything else stays float: its inputs are dequantized (`DequantizeLinear`), and integer
//! ops that read its outputs quantize them (`Mul`, `Round`, `Clip`, `Cast`). Graph inputs are
//! quantized where integer ops first read them, graph outputs dequantized.
//! Preconditions: `quantize` planned the activations. Error: weights ±s_W/2 per element,
//! activations ±s/2 inside their clip, requantization within 2^−(bits+2) relative (dyadic).
//! I-ViT §3.1–3.2; I-BERT §3.1.

use super::prelude::*;

mod average;
mod elementwise;
mod matmul;
mod movement;
mod pooling;
mod taps;

use elementwise::*;
use matmul::*;
use movement::*;

use crate::Error;
use crate::ir::quant::Scale;
use crate::ir::{Array, DataType, Op};
use crate::lower::driver::{Outcome, lower_ops};
use crate::lower::engine::{
    Form, IntRep, Lowering, Target, copy_attrs, matmul_range, stored_weight,
};
use crate::ops::table;

pub struct LowerLinear;

impl Pass for LowerLinear {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let dequantized = lower_ops(model, cx, |lw, id, op| {
            let outcome = lower_op(lw, id, op)?;
            if matches!(outcome, Outcome::Lowered) {
                lw.mark_lowered(id);
            }
            Ok(outcome)
        })?;
        cx.remark(
            "<lowering>",
            format!("{dequantized} values are dequantized for float ops or graph outputs"),
        );
        Ok(())
    }
}

fn out(id: NodeId, slot: usize) -> ValueId {
    ValueId { node: id, slot }
}

fn lower_op(lw: &mut Lowering, id: NodeId, op: &Op) -> Result<Outcome> {
    if !op.domain().is_empty() {
        return Ok(Outcome::NotACandidate);
    }
    let inputs = lw.model().graph.inputs_of(id);
    match op.op_type() {
        "MatMul" => lower_matmul(lw, id, &inputs),
        "Gemm" => lower_gemm(lw, id, op, &inputs),
        "Conv" => lower_conv(lw, id, op, &inputs),
        "Add" | "Sub" => lower_add(lw, id, op, &inputs),
        "Mul" | "Div" => lower_scale(lw, id, op, &inputs),
        "Gather" => lower_gather(lw, id, op, &inputs),
        "Concat" => lower_concat(lw, id, op, &inputs),
        "Relu" => lower_relu(lw, id, &inputs),
        "Where" => lower_where(lw, id, &inputs),
        "Cast" => pooling::lower_mask_cast(lw, id, &inputs),
        "ReduceSum" => pooling::lower_reduce_sum(lw, id, op, &inputs),
        "Clip" => pooling::lower_clip(lw, id, &inputs),
        "GlobalAveragePool" => average::lower_global_average_pool(lw, id, &inputs),
        "ReduceMean" => average::lower_reduce_mean(lw, id, op, &inputs),
        "AveragePool" => average::lower_average_pool(lw, id, op, &inputs),
        _ if table::moves_data(op) => lower_data_movement(lw, id, op, &inputs),
        _ => Ok(Outcome::NotACandidate),
    }
}

/// A constant f32 input, decoded.
fn constant_f32(lw: &Lowering, v: Option<ValueId>) -> Option<ndarray::ArrayD<f32>> {
    let t = lw.model().graph.constant(v?)?;
    match t.decode().ok()? {
        Array::F32(a) => Some(a),
        _ => None,
    }
}

fn rank(lw: &Lowering, v: ValueId) -> Option<usize> {
    lw.facts.get(v).and_then(|f| f.rank())
}

/// Why an op must stay float when one of `values` cannot be quantized (no calibration plan).
fn uncalibrated(lw: &Lowering, values: &[ValueId]) -> Option<Outcome> {
    values.iter().find(|&&v| !lw.can_quantize(v)).map(|&v| {
        Outcome::Kept(format!(
            "input '{}' has no calibration statistics",
            lw.model().graph.value_name(v)
        ))
    })
}

/// Whether `v` is integer now, or the output of an op a later lowering makes integer (an
/// activation table, a gated product `x·f(x)`, GELU, Softmax, LayerNorm), possibly through
/// data movement, and planned: an op reading it can be lowered now, reading its 8-bit form.
fn integer_or_later(lw: &Lowering, v: ValueId) -> bool {
    if lw.rep(v).is_some() {
        return true;
    }
    let g = &lw.model().graph;
    let Some(op) = g.op(v.node).filter(|op| op.domain().is_empty()) else {
        return false;
    };
    if table::moves_data(op) {
        return g.input(v.node, 0).is_some_and(|x| integer_or_later(lw, x));
    }
    let gated = op.is("Mul")
        && matches!(
            (g.input(v.node, 0), g.input(v.node, 1)),
            (Some(a), Some(b)) if gates(g, a, b) || gates(g, b, a)
        );
    g.value(v).plan.is_some()
        && (gated
            || is_table_function(g, v)
            || matches!(op.op_type(), "Gelu" | "Softmax" | "LayerNormalization"))
}

/// Whether `v` is the output of an activation `lower-activations-to-table` makes a table.
fn is_table_function(g: &crate::ir::Graph, v: ValueId) -> bool {
    g.op(v.node)
        .is_some_and(|f| crate::passes::lower_activations_to_table::function_of(f).is_some())
}

/// Whether `y = f(x)` for such an activation f: `x · y` is then a gate (SiLU, HardSwish),
/// one table of x.
fn gates(g: &crate::ir::Graph, x: ValueId, y: ValueId) -> bool {
    is_table_function(g, y) && g.input(y.node, 0) == Some(x)
}
