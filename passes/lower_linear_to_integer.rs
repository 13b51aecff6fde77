//! `lower-linear-to-integer`: the linear algebra of the model runs in integers.
//!
//! Rewrites (s = scale, q = stored integers, see `lower::engine`):
//! - `MatMul(x, W)`, `Gemm`, `Conv` with constant W: `MatMulInteger(x_u8, W_i8, 128)` /
//!   `ConvInteger` → int32 accumulator at `s_x · s_W[c]` (W int8 symmetric per output channel);
//!   activation × activation `MatMul` (attention) the same with both operands quantized.
//! - `Add(acc, b)` with constant b: int32 bias at the accumulator's scale.
//! - `Add(a, b)` of two activations (a residual): both requantized to the output's planned
//!   scale (16 bits, carried in int32) and added.
//! - `Mul`/`Div` by a positive constant: no op, the scale absorbs it (1/√d, layer scale).
//! - Data movement (every op `ops::table` marks so: Reshape, Transpose, Slice, Split, Pad,
//!   MaxPool, …) and Concat run on the integers; Relu is `Max(q, zp)`.
//! - `Gather` from a constant embedding table reads an int8 table (per-tensor scale).
//!
//! Everything else stays float: its inputs are dequantized (`DequantizeLinear`), and integer
//! ops that read its outputs quantize them (`Mul`, `Round`, `Clip`, `Cast`). Graph inputs are
//! quantized where integer ops first read them, graph outputs dequantized.
//! Preconditions: `quantize` planned the activations. Error: weights ±s_W/2 per element,
//! activations ±s/2 inside their clip, requantization within 2^−(bits+2) relative (dyadic).
//! I-ViT §3.1–3.2; I-BERT §3.1.

use super::prelude::*;

#[path = "lower_linear_to_integer/pooling.rs"]
mod pooling;

use crate::Error;
use crate::ir::quant::Scale;
use crate::ir::{Array, DataType, Op};
use crate::lower::engine::{
    Form, IntRep, Lowering, Target, copy_attrs, matmul_range, quantize_weight, stored_weight,
};
use crate::ops::table;

pub struct LowerLinear;

/// What became of one op.
enum Outcome {
    Lowered,
    /// A candidate left in float, with the reason.
    Kept(String),
    /// Not an op this pass lowers.
    Float,
}

impl Pass for LowerLinear {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let facts = cx.facts(model)?;
        let order = model.graph.topological_order()?;
        let mut lw = Lowering::new(model, facts, cx.options);
        for id in order {
            let op = lw.model().graph.op(id).expect("op").clone();
            lw.rw.set_anchor(id);
            let who = lw.model().graph.describe(id);
            match lower_op(&mut lw, id, &op)? {
                Outcome::Lowered => {
                    lw.mark_lowered(id);
                    cx.report.matched += 1;
                    cx.report.rewritten += 1;
                }
                Outcome::Kept(reason) => {
                    cx.report.matched += 1;
                    cx.report.skipped += 1;
                    cx.remark(who, reason);
                }
                Outcome::Float => {}
            }
        }
        let dequantized = lw.finish()?;
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
        return Ok(Outcome::Float);
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
        _ if table::moves_data(op) => lower_data_movement(lw, id, op, &inputs),
        _ => Ok(Outcome::Float),
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

/// Adds a quantized weight initializer as the operand policy stores it, with its zero point
/// input (none for int8).
fn weight_constant(
    lw: &mut Lowering,
    q: &ndarray::ArrayD<i8>,
) -> Result<(ValueId, Option<ValueId>)> {
    let storage = lw.operands.weights();
    let stored = stored_weight(q, storage);
    let name = match storage.dtype {
        DataType::Uint8 => "weight_u8",
        _ => "weight_i8",
    };
    let w = lw.constant(name, &stored)?;
    let zp = match storage.zero_point {
        0 => None,
        zp => Some(lw.constant("weight_zero_point", &Array::scalar(zp).cast(storage.dtype)?)?),
    };
    Ok((w, zp))
}

/// The zero point input of an integer op's operand (none for zero).
fn zero_point_input(lw: &mut Lowering, rep: &IntRep) -> Result<Option<ValueId>> {
    if rep.zero_point == 0 {
        return Ok(None);
    }
    let zp = Array::scalar(rep.zero_point).cast(rep.dtype)?;
    Ok(Some(lw.constant("zero_point", &zp)?))
}

/// Inputs of `MatMulInteger`/`ConvInteger`: A, B and the zero points that are not 0 (an
/// omitted A zero point before a B zero point stays an empty slot).
fn operand_inputs(
    a: ValueId,
    b: ValueId,
    a_zp: Option<ValueId>,
    b_zp: Option<ValueId>,
) -> Vec<Option<ValueId>> {
    let mut inputs = vec![Some(a), Some(b), a_zp];
    if b_zp.is_some() {
        inputs.push(b_zp);
    } else if a_zp.is_none() {
        inputs.pop();
    }
    inputs
}

/// The accumulator of `x · W` for a constant 2-D weight [K, N], per output column.
fn weight_matmul(
    lw: &mut Lowering,
    x: ValueId,
    w: &ndarray::ArrayD<f32>,
    alpha: f64,
    out_rank: usize,
) -> Result<IntRep> {
    let a = lw.operand(x, Form::OperandA)?;
    let (q, scales) = quantize_weight(w, 1, lw.operands.weights().magnitude);
    let a_range = (a.range.0 - a.zero_point, a.range.1 - a.zero_point);
    let range = matmul_range(&q, 1, a_range);
    let (wq, w_zp) = weight_constant(lw, &q)?;
    let zp = zero_point_input(lw, &a)?;
    let s_a = a.scale.at(0);
    let acc = lw.rw.op_node(
        Op::new("MatMulInteger", ""),
        "matmul",
        &operand_inputs(a.value, wq, zp, w_zp),
        vec![],
        1,
    )?;
    Ok(IntRep {
        value: out(acc, 0),
        scale: Scale::PerAxis {
            axis: out_rank - 1,
            scales: scales.iter().map(|s| s * s_a * alpha).collect(),
        },
        zero_point: 0,
        dtype: DataType::Int32,
        range,
    })
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

fn lower_matmul(lw: &mut Lowering, id: NodeId, inputs: &[Option<ValueId>]) -> Result<Outcome> {
    let (Some(a), Some(b)) = (inputs[0], inputs[1]) else {
        return Ok(Outcome::Float);
    };
    let needs = if lw.model().graph.constant(b).is_some() {
        vec![a]
    } else {
        vec![a, b]
    };
    if let Some(kept) = uncalibrated(lw, &needs) {
        return Ok(kept);
    }
    let y = out(id, 0);
    let Some(out_rank) = rank(lw, y) else {
        return Ok(Outcome::Kept("output rank unknown".into()));
    };
    if lw.model().graph.constant(a).is_some() {
        return Ok(Outcome::Kept("constant left operand".into()));
    }
    if let Some(w) = constant_f32(lw, Some(b)) {
        if w.ndim() != 2 {
            return Ok(Outcome::Kept(format!(
                "constant weight of rank {}",
                w.ndim()
            )));
        }
        let rep = weight_matmul(lw, a, &w, 1.0, out_rank)?;
        lw.set_rep(y, rep, 32, true);
        return Ok(Outcome::Lowered);
    }
    if lw.model().graph.constant(b).is_some() {
        return Ok(Outcome::Kept("constant weight is not f32".into()));
    }
    // Activation × activation (attention scores, attention-weighted values).
    let ra = lw.operand(a, Form::OperandA)?;
    let rb = lw.operand(b, Form::OperandB)?;
    let k = lw.dim_or_bound(b, 1) as i128;
    let bound = k * ra.magnitude() * rb.magnitude();
    if bound >= i32::MAX as i128 {
        return Ok(Outcome::Kept(format!(
            "the int32 accumulator could reach {bound} (inner dimension {k})"
        )));
    }
    let zp = zero_point_input(lw, &ra)?;
    let b_zp = zero_point_input(lw, &rb)?;
    let acc = lw.rw.op_node(
        Op::new("MatMulInteger", ""),
        "matmul",
        &operand_inputs(ra.value, rb.value, zp, b_zp),
        vec![],
        1,
    )?;
    let rep = IntRep {
        value: out(acc, 0),
        scale: Scale::PerTensor(ra.scale.at(0) * rb.scale.at(0)),
        zero_point: 0,
        dtype: DataType::Int32,
        range: (-bound as i64, bound as i64),
    };
    lw.set_rep(y, rep, 32, true);
    Ok(Outcome::Lowered)
}

fn lower_gemm(
    lw: &mut Lowering,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let (Some(a), b) = (inputs[0], inputs.get(1).copied().flatten()) else {
        return Ok(Outcome::Float);
    };
    if let Some(kept) = uncalibrated(lw, &[a]) {
        return Ok(kept);
    }
    if op.attr_int("transA", 0)? != 0 {
        return Ok(Outcome::Kept("transA=1".into()));
    }
    let alpha = op.attr_float("alpha", 1.0)? as f64;
    let beta = op.attr_float("beta", 1.0)? as f64;
    if alpha <= 0.0 {
        return Ok(Outcome::Kept(format!("alpha={alpha} is not positive")));
    }
    let Some(mut w) = constant_f32(lw, b) else {
        return Ok(Outcome::Kept("B is not a constant f32 weight".into()));
    };
    if w.ndim() != 2 {
        return Ok(Outcome::Kept("B is not 2-D".into()));
    }
    if op.attr_int("transB", 0)? != 0 {
        w = w.t().as_standard_layout().into_owned();
    }
    let c = inputs.get(2).copied().flatten();
    let bias = match c {
        None => None,
        Some(c) => match constant_f32(lw, Some(c)) {
            Some(c) => Some(c.mapv(|v| v * beta as f32)),
            None => return Ok(Outcome::Kept("C is not a constant".into())),
        },
    };
    let mut rep = weight_matmul(lw, a, &w, alpha, 2)?;
    if let Some(bias) = bias {
        match add_bias(lw, &rep, &bias, 2)? {
            Some(r) => rep = r,
            None => {
                return Ok(Outcome::Kept(
                    "bias does not broadcast along the output channels".into(),
                ));
            }
        }
    }
    lw.set_rep(out(id, 0), rep, 32, true);
    Ok(Outcome::Lowered)
}

fn lower_conv(
    lw: &mut Lowering,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let Some(x) = inputs[0] else {
        return Ok(Outcome::Float);
    };
    if let Some(kept) = uncalibrated(lw, &[x]) {
        return Ok(kept);
    }
    let Some(w) = constant_f32(lw, inputs.get(1).copied().flatten()) else {
        return Ok(Outcome::Kept("weight is not a constant f32".into()));
    };
    let bias = match inputs.get(2).copied().flatten() {
        None => None,
        Some(b) => match constant_f32(lw, Some(b)) {
            Some(b) => Some(b),
            None => return Ok(Outcome::Kept("bias is not a constant".into())),
        },
    };
    let a = lw.operand(x, Form::OperandA)?;
    let (q, scales) = quantize_weight(&w, 0, lw.operands.weights().magnitude);
    let a_range = (a.range.0 - a.zero_point, a.range.1 - a.zero_point);
    let range = matmul_range(&q, 0, a_range);
    let (wq, w_zp) = weight_constant(lw, &q)?;
    let zp = zero_point_input(lw, &a)?;
    let attrs = copy_attrs(
        op,
        &[
            "auto_pad",
            "dilations",
            "group",
            "kernel_shape",
            "pads",
            "strides",
        ],
    );
    let acc = lw.rw.op_node(
        Op::new("ConvInteger", ""),
        "conv",
        &operand_inputs(a.value, wq, zp, w_zp),
        attrs,
        1,
    )?;
    let s_a = a.scale.at(0);
    let mut rep = IntRep {
        value: out(acc, 0),
        scale: Scale::PerAxis {
            axis: 1,
            scales: scales.iter().map(|s| s * s_a).collect(),
        },
        zero_point: 0,
        dtype: DataType::Int32,
        range,
    };
    lw.note(&rep, 32, true);
    if let Some(b) = bias {
        // [M] → [M, 1, …, 1] so it broadcasts along axis 1.
        let spatial = w.ndim() - 2;
        let mut shape = vec![b.len()];
        shape.extend(std::iter::repeat_n(1, spatial));
        let b = b
            .into_shape_with_order(ndarray::IxDyn(&shape))
            .map_err(|e| Error::invalid(e.to_string()))?;
        match add_bias(lw, &rep, &b, w.ndim())? {
            Some(r) => rep = r,
            None => {
                return Ok(Outcome::Kept(
                    "bias shape does not match the output channels".into(),
                ));
            }
        }
    }
    lw.set_rep(out(id, 0), rep, 32, true);
    Ok(Outcome::Lowered)
}

/// `acc + round(bias / scale)` in int32. The bias aligns with the trailing dimensions of the
/// output (rank `out_rank`); with per-channel scales it is quantized per channel, growing a
/// channel dimension if it had none. `None` when it does not broadcast or does not fit.
fn add_bias(
    lw: &mut Lowering,
    rep: &IntRep,
    bias: &ndarray::ArrayD<f32>,
    out_rank: usize,
) -> Result<Option<IntRep>> {
    let k = bias.ndim();
    if k > out_rank {
        return Ok(None);
    }
    let q = match &rep.scale {
        Scale::PerTensor(s) => bias.mapv(|b| crate::quant::rounding::round_half_even(b as f64 / s)),
        Scale::PerAxis { axis, scales } => {
            let n = scales.len();
            // The bias, broadcast to a shape that has the channel dimension.
            let lead = out_rank - k;
            let shape: Vec<usize> = if *axis >= lead {
                let mut s = bias.shape().to_vec();
                if s[axis - lead] != 1 && s[axis - lead] != n {
                    return Ok(None);
                }
                s[axis - lead] = n;
                s
            } else {
                let mut s = vec![n];
                s.extend(std::iter::repeat_n(1, out_rank - 1 - axis - k));
                s.extend_from_slice(bias.shape());
                s
            };
            let channel_at = if *axis >= lead { axis - lead } else { 0 };
            let Some(b) = bias.broadcast(ndarray::IxDyn(&shape)) else {
                return Ok(None);
            };
            ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&shape), |i| {
                crate::quant::rounding::round_half_even(b[&i] as f64 / scales[i[channel_at]])
            })
        }
    };
    let (min, max) = q
        .iter()
        .fold((0f64, 0f64), |(a, b), &v| (a.min(v), b.max(v)));
    let range = (rep.range.0 as f64 + min, rep.range.1 as f64 + max);
    if range.0 < i32::MIN as f64 || range.1 > i32::MAX as f64 {
        return Ok(None);
    }
    let b = lw.constant("bias_i32", &Array::I32(q.mapv(|v| v as i32)))?;
    let sum = lw.op("Add", "bias", &[rep.value, b], vec![])?;
    Ok(Some(IntRep {
        value: sum,
        range: (range.0 as i64, range.1 as i64),
        ..rep.clone()
    }))
}

/// The |x| of a calibrated value, used to spot additive attention masks (±3.4e38).
fn looks_like_mask(lw: &Lowering, v: ValueId) -> bool {
    lw.model()
        .graph
        .value(v)
        .stats
        .as_ref()
        .is_some_and(|s| s.abs_max() > 1e10)
}

fn lower_add(
    lw: &mut Lowering,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let (Some(a), Some(b)) = (inputs[0], inputs[1]) else {
        return Ok(Outcome::Float);
    };
    let g = &lw.model().graph;
    let (ca, cb) = (constant_f32(lw, Some(a)), constant_f32(lw, Some(b)));
    let negate = op.op_type() == "Sub";
    // Bias: an int32 accumulator plus a constant.
    let bias_case = match (&ca, &cb) {
        (None, Some(c)) => Some((a, c.clone())),
        (Some(c), None) if !negate => Some((b, c.clone())),
        _ => None,
    };
    if let Some((x, c)) = bias_case {
        let Some(mut rep) = lw.rep(x).cloned() else {
            return Ok(Outcome::Float);
        };
        if rep.dtype != DataType::Int32 {
            // Widen to int32 first; the zero point comes off there.
            if !rep.is_per_tensor() {
                return Ok(Outcome::Kept(
                    "constant added to a per-channel 8-bit value".into(),
                ));
            }
            let to_i32 = crate::ir::attr::int("to", DataType::Int32 as i32 as i64);
            let wide = lw.op("Cast", "widen", &[rep.value], vec![to_i32])?;
            let zp = rep.zero_point;
            rep = IntRep {
                value: wide,
                zero_point: 0,
                dtype: DataType::Int32,
                range: (rep.range.0 - zp, rep.range.1 - zp),
                ..rep
            };
            if zp != 0 {
                let z = lw.constant("zero_point", &Array::scalar(zp as i32))?;
                rep.value = lw.op("Sub", "unshift", &[rep.value, z], vec![])?;
            }
            lw.note(&rep, 32, true);
        }
        let c = if negate { c.mapv(|v| -v) } else { c };
        let Some(r) = rank(lw, out(id, 0)) else {
            return Ok(Outcome::Kept("rank unknown".into()));
        };
        return Ok(match add_bias(lw, &rep, &c, r)? {
            Some(r) => {
                lw.set_rep(out(id, 0), r, 32, true);
                Outcome::Lowered
            }
            None => Outcome::Kept("constant does not broadcast along the scale's axis".into()),
        });
    }
    if ca.is_some() || cb.is_some() || negate || g.constant(a).is_some() || g.constant(b).is_some()
    {
        return Ok(Outcome::Float);
    }
    // A residual: both operands at the output's planned scale, in int32.
    let y = out(id, 0);
    if looks_like_mask(lw, a) || looks_like_mask(lw, b) {
        return Ok(Outcome::Kept(
            "an operand looks like an additive attention mask".into(),
        ));
    }
    if lw.rep(a).is_none() && lw.rep(b).is_none() {
        return Ok(Outcome::Float);
    }
    if let Some(kept) = uncalibrated(lw, &[a, b, y]) {
        return Ok(kept);
    }
    let plan = lw.plan(y)?;
    let Scale::PerTensor(scale) = plan.scale else {
        return Ok(Outcome::Float);
    };
    let max = (1i64 << (plan.bits - 1)) - 1;
    let target = Target {
        scale,
        zero_point: 0,
        lo: -max,
        hi: max,
        dtype: DataType::Int32,
    };
    let ra = lw.to_target(a, &target, "align")?;
    let rb = lw.to_target(b, &target, "align")?;
    let sum = lw.op("Add", "residual", &[ra.value, rb.value], vec![])?;
    let rep = IntRep {
        value: sum,
        scale: Scale::PerTensor(scale),
        zero_point: 0,
        dtype: DataType::Int32,
        range: (ra.range.0 + rb.range.0, ra.range.1 + rb.range.1),
    };
    lw.set_rep(y, rep, plan.bits + 1, true);
    Ok(Outcome::Lowered)
}

/// `x · c` or `x / c` with c a positive constant: the representation stays, its scale changes.
fn lower_scale(
    lw: &mut Lowering,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let (Some(a), Some(b)) = (inputs[0], inputs[1]) else {
        return Ok(Outcome::Float);
    };
    let divide = op.op_type() == "Div";
    let (x, c) = match (constant_f32(lw, Some(a)), constant_f32(lw, Some(b))) {
        (None, Some(c)) => (a, c),
        (Some(c), None) if !divide => (b, c),
        (None, None) => return pooling::lower_product(lw, id, divide, a, b),
        _ => return Ok(Outcome::Float),
    };
    let Some(rep) = lw.rep(x).cloned() else {
        return Ok(Outcome::Float);
    };
    // Negative factors are fine per channel (signed scales); a uniform one would flip the
    // whole tensor, which a float op does as cheaply.
    if c.iter().any(|&v| v == 0.0 || !v.is_finite()) || (c.len() == 1 && c.iter().all(|&v| v < 0.0))
    {
        return Ok(Outcome::Kept(
            "the constant is zero, infinite or a negative scalar".into(),
        ));
    }
    let factor = |v: f32| if divide { 1.0 / v as f64 } else { v as f64 };
    let scale = if c.len() == 1 {
        let f = factor(*c.iter().next().expect("one element"));
        match &rep.scale {
            Scale::PerTensor(s) => Scale::PerTensor(s * f),
            Scale::PerAxis { axis, scales } => Scale::PerAxis {
                axis: *axis,
                scales: scales.iter().map(|s| s * f).collect(),
            },
        }
    } else {
        // A vector along the last axis (layer scale): per-axis.
        let Some(r) = rank(lw, out(id, 0)) else {
            return Ok(Outcome::Kept("rank unknown".into()));
        };
        let n = c.len();
        if c.shape().iter().rev().skip(1).any(|&d| d != 1) || c.ndim() > r {
            return Ok(Outcome::Kept(
                "the constant is not a vector along the last axis".into(),
            ));
        }
        let values: Vec<f64> = c.iter().map(|&v| factor(v)).collect();
        match &rep.scale {
            Scale::PerTensor(s) => Scale::PerAxis {
                axis: r - 1,
                scales: values.iter().map(|f| s * f).collect(),
            },
            Scale::PerAxis { axis, scales } if *axis == r - 1 && scales.len() == n => {
                Scale::PerAxis {
                    axis: *axis,
                    scales: scales.iter().zip(&values).map(|(s, f)| s * f).collect(),
                }
            }
            Scale::PerAxis { .. } => {
                return Ok(Outcome::Kept("per-axis scales on different axes".into()));
            }
        }
    };
    lw.set_rep(out(id, 0), IntRep { scale, ..rep }, 32, true);
    Ok(Outcome::Lowered)
}

/// The integer tensor a data-movement op can work on: the representation itself when it is
/// per-tensor, else its 8-bit form at the planned scale.
fn movable(lw: &mut Lowering, v: ValueId) -> Result<Option<IntRep>> {
    match lw.rep(v).cloned() {
        None => Ok(None),
        Some(rep) if rep.is_per_tensor() => Ok(Some(rep)),
        Some(_) if lw.model().graph.value(v).quant.is_none() => Ok(None),
        Some(_) => lw.operand(v, Form::Stored8).map(Some),
    }
}

/// A float constant moved by a data-movement op (a class token expanded over the batch): it
/// is quantized at the moved value's planned scale (the quantization of a constant folds away).
fn constant_operand(lw: &mut Lowering, x: ValueId, y: ValueId) -> Result<Option<IntRep>> {
    if constant_f32(lw, Some(x)).is_none() {
        return Ok(None);
    }
    let Some(plan) = lw.model().graph.value(y).quant.clone() else {
        return Ok(None);
    };
    let Scale::PerTensor(scale) = plan.scale else {
        return Ok(None);
    };
    let levels = if plan.signed {
        ((1i64 << (plan.bits - 1)) - 1) as f64
    } else {
        ((1i64 << plan.bits) - 1) as f64
    };
    let (s, lo, hi, dtype) = if plan.signed {
        (scale * levels / 127.0, -127, 127, DataType::Int8)
    } else {
        (scale * levels / 255.0, 0, 255, DataType::Uint8)
    };
    let target = Target {
        scale: s as f32 as f64,
        zero_point: 0,
        lo,
        hi,
        dtype,
    };
    lw.quantize_float(x, &target).map(Some)
}

fn lower_data_movement(
    lw: &mut Lowering,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let Some(x) = inputs[0] else {
        return Ok(Outcome::Float);
    };
    if op.is("MaxPool") && lw.model().graph.outputs_of(id).count() > 1 {
        return Ok(Outcome::Kept("MaxPool indices are read".into()));
    }
    if op.is("Pad") {
        let mode = op.attr_string("mode")?.unwrap_or_else(|| "constant".into());
        let value = inputs.get(2).copied().flatten();
        let zero =
            value.is_none() || constant_f32(lw, value).is_some_and(|v| v.iter().all(|&x| x == 0.0));
        if mode != "constant" || !zero {
            return Ok(Outcome::Kept("Pad other than with zeros".into()));
        }
    }
    let rep = match movable(lw, x)? {
        Some(rep) => rep,
        None => match constant_operand(lw, x, out(id, 0))? {
            Some(rep) => rep,
            None => return Ok(Outcome::Float),
        },
    };
    if !table::of(op).is_some_and(|r| r.integer.accepts(rep.dtype)) {
        return Ok(Outcome::Float);
    }
    let mut new_inputs: Vec<Option<ValueId>> = inputs.to_vec();
    new_inputs[0] = Some(rep.value);
    if op.is("Pad") && rep.zero_point != 0 {
        // Pad with the integer that stands for 0.
        let zp = Array::scalar(rep.zero_point).cast(rep.dtype)?;
        let zp = lw.constant("pad_value", &zp)?;
        new_inputs.resize(3, None);
        new_inputs[2] = Some(zp);
    }
    let outputs = lw.model().graph.node(id).outputs.len();
    let node = lw.rw.op_node(
        Op::new(op.op_type(), ""),
        "int",
        &new_inputs,
        op.attrs().to_vec(),
        outputs,
    )?;
    for slot in 0..outputs {
        if lw.model().graph.node(id).outputs[slot].name.is_empty() {
            continue;
        }
        let r = IntRep {
            value: out(node, slot),
            ..rep.clone()
        };
        lw.set_rep(out(id, slot), r, 8, true);
    }
    Ok(Outcome::Lowered)
}

fn lower_gather(
    lw: &mut Lowering,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let (Some(data), Some(indices)) = (inputs[0], inputs[1]) else {
        return Ok(Outcome::Float);
    };
    if lw.model().graph.constant(data).is_none() {
        return lower_data_movement(lw, id, op, inputs);
    }
    let Some(table) = constant_f32(lw, Some(data)) else {
        return Ok(Outcome::Float);
    };
    if table.len() < 64 {
        // A small constant (a shape or a few values), not an embedding table.
        return Ok(Outcome::Float);
    }
    // An embedding table: int8, one scale for the whole table (rows are gathered freely).
    let max = table.iter().fold(0f32, |m, &x| m.max(x.abs()));
    let scale = if max > 0.0 {
        (max as f64 / 127.0) as f32 as f64
    } else {
        1.0
    };
    let q = table.mapv(|x| {
        crate::quant::rounding::round_half_even(x as f64 / scale).clamp(-127.0, 127.0) as i8
    });
    let lo = q.iter().copied().min().unwrap_or(0) as i64;
    let hi = q.iter().copied().max().unwrap_or(0) as i64;
    let tq = lw.constant("table_i8", &Array::I8(q))?;
    let g = lw.op("Gather", "int", &[tq, indices], op.attrs().to_vec())?;
    let rep = IntRep {
        value: g,
        scale: Scale::PerTensor(scale),
        zero_point: 0,
        dtype: DataType::Int8,
        range: (lo, hi),
    };
    lw.set_rep(out(id, 0), rep, 8, true);
    Ok(Outcome::Lowered)
}

fn lower_concat(
    lw: &mut Lowering,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let y = out(id, 0);
    if !inputs.iter().flatten().any(|&v| lw.rep(v).is_some()) {
        return Ok(Outcome::Float);
    }
    let plan = match lw.plan(y) {
        Ok(p) => p,
        Err(_) => return Ok(Outcome::Kept("no calibration plan for the result".into())),
    };
    let Scale::PerTensor(scale) = plan.scale else {
        return Ok(Outcome::Float);
    };
    // Every part at the result's scale, 8 bits (a constant part is quantized at compile time).
    let (lo, hi, dtype) = if plan.signed {
        (-128, 127, DataType::Int8)
    } else {
        (0, 255, DataType::Uint8)
    };
    let levels = if plan.signed { 127.0 } else { 255.0 };
    let scale = (scale * ((1u64 << (plan.bits - u32::from(plan.signed))) - 1) as f64 / levels)
        as f32 as f64;
    let target = Target {
        scale,
        zero_point: 0,
        lo,
        hi,
        dtype,
    };
    let mut parts = Vec::new();
    for v in inputs.iter().flatten() {
        parts.push(Some(lw.to_target(*v, &target, "align")?.value));
    }
    let node = lw
        .rw
        .op_node(Op::new("Concat", ""), "int", &parts, op.attrs().to_vec(), 1)?;
    let rep = IntRep {
        value: out(node, 0),
        scale: Scale::PerTensor(scale),
        zero_point: 0,
        dtype,
        range: (lo, hi),
    };
    lw.set_rep(y, rep, 8, plan.signed);
    Ok(Outcome::Lowered)
}

fn lower_relu(lw: &mut Lowering, id: NodeId, inputs: &[Option<ValueId>]) -> Result<Outcome> {
    let Some(x) = inputs[0] else {
        return Ok(Outcome::Float);
    };
    let Some(rep) = lw.rep(x).cloned() else {
        return Ok(Outcome::Float);
    };
    // Max(q, zp): the integer that stands for 0 (Relu has no uint8 kernel in onnxruntime).
    let zp = lw.constant("zero", &Array::scalar(rep.zero_point).cast(rep.dtype)?)?;
    let y = lw.op("Max", "relu", &[rep.value, zp], vec![])?;
    let range = (
        rep.range.0.max(rep.zero_point),
        rep.range.1.max(rep.zero_point),
    );
    lw.set_rep(
        out(id, 0),
        IntRep {
            value: y,
            range,
            ..rep
        },
        32,
        true,
    );
    Ok(Outcome::Lowered)
}

/// `Where(cond, x, c)` (or `Where(cond, c, x)`) with a scalar constant c and an int32 x: the
/// select runs on the integers, c at x's scale. A constant beyond x's proven range (an attention
/// mask's −3.4e38) saturates to one range width past it, which keeps later requantizations in
/// int32 while staying below every value x can take.
fn lower_where(lw: &mut Lowering, id: NodeId, inputs: &[Option<ValueId>]) -> Result<Outcome> {
    let (Some(cond), Some(a), Some(b)) = (inputs[0], inputs[1], inputs[2]) else {
        return Ok(Outcome::Float);
    };
    let scalar = |v: ValueId| {
        constant_f32(lw, Some(v))
            .and_then(|c| (c.len() == 1).then(|| c.iter().next().copied()).flatten())
    };
    let (x, c, x_first) = match (lw.rep(a).cloned(), lw.rep(b).cloned()) {
        (Some(r), None) => match scalar(b) {
            Some(c) => (r, c, true),
            None => return Ok(Outcome::Float),
        },
        (None, Some(r)) => match scalar(a) {
            Some(c) => (r, c, false),
            None => return Ok(Outcome::Float),
        },
        _ => return Ok(Outcome::Float),
    };
    if !x.is_plain_int32() {
        return Ok(Outcome::Kept(
            "selects from a value that is not per-tensor int32".into(),
        ));
    }
    let span = (x.range.1 - x.range.0).max(1);
    let fill = (c as f64 / x.scale.at(0))
        .round()
        .clamp((x.range.0 - span) as f64, (x.range.1 + span) as f64) as i64;
    let fill_value = lw.constant("fill", &Array::scalar(fill as i32))?;
    let (t, f) = if x_first {
        (x.value, fill_value)
    } else {
        (fill_value, x.value)
    };
    let y = lw.op("Where", "select", &[cond, t, f], vec![])?;
    let rep = IntRep {
        value: y,
        range: (x.range.0.min(fill), x.range.1.max(fill)),
        ..x
    };
    lw.set_rep(out(id, 0), rep, 32, true);
    Ok(Outcome::Lowered)
}
