//! Ops that move integers (every data-movement op of `ops::table`), `Gather` from embedding
//! tables and `Concat`.

use super::*;
use crate::ops::table::Movement;

/// The integer tensor a data-movement op can work on: the representation itself when it is
/// per-tensor, else its form at the planned scale: 8-bit, or int32 for a plan of more bits
/// (the residual stream's start, a patch embedding).
pub(super) fn movable(lw: &mut Lowering, v: ValueId) -> Result<Option<IntRep>> {
    match lw.rep(v).cloned() {
        None => Ok(None),
        Some(rep) if rep.is_per_tensor() => Ok(Some(rep)),
        Some(_) => match lw.model().graph.value(v).plan.as_ref().map(|p| p.bits) {
            None => Ok(None),
            Some(bits) if bits > 8 => lw.operand(v, Form::Wide).map(Some),
            Some(_) => lw.operand(v, Form::Stored8).map(Some),
        },
    }
}

/// A float constant moved by a data-movement op (a class token expanded over the batch): it
/// is quantized at the moved value's planned scale (the quantization of a constant folds away).
pub(super) fn constant_operand(
    lw: &mut Lowering,
    x: ValueId,
    y: ValueId,
) -> Result<Option<IntRep>> {
    if constant_f32(lw, Some(x)).is_none() {
        return Ok(None);
    }
    let Some(plan) = lw.model().graph.value(y).plan.clone() else {
        return Ok(None);
    };
    let Scale::PerTensor(scale) = plan.scale else {
        return Ok(None);
    };
    let levels = plan.levels() as f64;
    let (s, lo, hi, dtype) = match (plan.bits > 8, plan.signed) {
        (true, true) => (scale, -plan.levels(), plan.levels(), DataType::Int32),
        (true, false) => (scale, 0, plan.levels(), DataType::Int32),
        (false, true) => (scale * levels / 127.0, -127, 127, DataType::Int8),
        (false, false) => (scale * levels / 255.0, 0, 255, DataType::Uint8),
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

pub(super) fn lower_data_movement(
    lw: &mut Lowering,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let Some(x) = inputs[0] else {
        return Ok(Outcome::NotACandidate);
    };
    let movement = table::of(op).map(|r| r.movement);
    if movement == Some(Movement::Selects) && lw.model().graph.outputs_of(id).count() > 1 {
        return Ok(Outcome::Kept(format!("{} indices are read", op.op_type())));
    }
    if movement == Some(Movement::Padded) {
        let mode = op.attr_string("mode")?.unwrap_or_else(|| "constant".into());
        let value = inputs.get(2).copied().flatten();
        let zero =
            value.is_none() || constant_f32(lw, value).is_some_and(|v| v.iter().all(|&x| x == 0.0));
        if mode != "constant" || !zero {
            return Ok(Outcome::Kept("Pad other than with zeros".into()));
        }
    }
    if let Some(rep) = wide_max_pool(lw, id, op, x)? {
        lw.set_rep(out(id, 0), rep, 32, true);
        return Ok(Outcome::Lowered);
    }
    let rep = match movable(lw, x)? {
        Some(rep) => rep,
        None => match constant_operand(lw, x, out(id, 0))? {
            Some(rep) => rep,
            // A max pool of a table's output (YOLO's SPPF after SiLU): its 8-bit form now,
            // since the table's int32 output has no MaxPool kernel to move onto later.
            None if movement == Some(Movement::Selects)
                && lw.model().graph.value(x).plan.is_some()
                && integer_or_later(lw, x) =>
            {
                lw.operand(x, Form::Stored8)?
            }
            None => return Ok(Outcome::NotACandidate),
        },
    };
    let accepts = |t: DataType| table::of(op).is_some_and(|r| r.integer.accepts(t));
    let rep = if accepts(rep.dtype) {
        rep
    } else if lw.model().graph.value(x).plan.is_some() && lw.rep(x).is_some() {
        // An accumulator (int32) into an op with 8-bit kernels only (MaxPool): its 8-bit
        // form at the planned scale, which the reader would requantize to anyway.
        let narrow = lw.operand(x, Form::Stored8)?;
        if !accepts(narrow.dtype) {
            return Ok(Outcome::NotACandidate);
        }
        narrow
    } else {
        return Ok(Outcome::NotACandidate);
    };
    let mut new_inputs: Vec<Option<ValueId>> = inputs.to_vec();
    new_inputs[0] = Some(rep.value);
    if movement == Some(Movement::Padded) && rep.zero_point != 0 {
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

/// A MaxPool of an int32 value (a Conv's accumulator) whose output is planned at more than 8
/// bits: the tap maximum in int32, where the 8-bit MaxPool would first narrow its input.
fn wide_max_pool(lw: &mut Lowering, id: NodeId, op: &Op, x: ValueId) -> Result<Option<IntRep>> {
    let outputs = lw.model().graph.outputs_of(id).count();
    let Some(window) = crate::ops::taps::Window::of_max_pool(op, outputs)? else {
        return Ok(None);
    };
    let g = &lw.model().graph;
    if g.value(out(id, 0))
        .plan
        .as_ref()
        .is_none_or(|p| p.bits <= 8)
    {
        return Ok(None);
    }
    let Some(rep) = lw.rep(x).cloned().filter(|r| {
        r.dtype == DataType::Int32
            && match &r.scale {
                Scale::PerTensor(_) => true,
                Scale::PerAxis { axis, .. } => *axis == 1,
            }
    }) else {
        return Ok(None);
    };
    taps::max_pool_taps(lw, &rep, &window).map(Some)
}

pub(super) fn lower_gather(
    lw: &mut Lowering,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let (Some(data), Some(indices)) = (inputs[0], inputs[1]) else {
        return Ok(Outcome::NotACandidate);
    };
    if lw.model().graph.constant(data).is_none() {
        return lower_data_movement(lw, id, op, inputs);
    }
    let Some(table) = constant_f32(lw, Some(data)) else {
        return Ok(Outcome::NotACandidate);
    };
    if table.len() < 64 {
        // A small constant (a shape or a few values), not an embedding table.
        return Ok(Outcome::NotACandidate);
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

/// A Concat that is a graph output, of parts planned on very different ranges (a detector's
/// boxes in pixels beside its class probabilities): each part keeps its own scale, in int32
/// (its wide form, or its 8-bit integers widened), and the result has a per-axis scale along
/// the concat axis, which the output's DequantizeLinear takes. `None` when a part has no
/// plan or no known size along the axis.
fn concat_keeping_scales(lw: &mut Lowering, op: &Op, parts: &[ValueId]) -> Result<Option<IntRep>> {
    let Some(rank) = parts.first().and_then(|&v| rank(lw, v)) else {
        return Ok(None);
    };
    let axis = op.attr_int("axis", 0)?;
    let axis = if axis < 0 { axis + rank as i64 } else { axis } as usize;
    let mut sizes = Vec::new();
    for &v in parts {
        let size = lw
            .facts
            .get(v)
            .and_then(|f| f.shape.as_ref())
            .and_then(|s| s.get(axis))
            .and_then(|d| d.known());
        let planned = lw.can_quantize(v)
            && matches!(
                lw.model().graph.value(v).plan.as_ref().map(|p| &p.scale),
                Some(Scale::PerTensor(_))
            );
        match size {
            Some(n) if planned && n > 0 => sizes.push(n as usize),
            _ => return Ok(None),
        }
    }
    let mut values = Vec::new();
    let mut scales = Vec::new();
    let (mut lo, mut hi) = (0i64, 0i64);
    for (&v, &n) in parts.iter().zip(&sizes) {
        let narrow = lw
            .rep(v)
            .filter(|r| r.is_per_tensor() && r.dtype != DataType::Int32)
            .cloned();
        let rep = match narrow {
            Some(r) => super::elementwise::widen_to_i32(lw, &r)?,
            None => lw.operand(v, Form::Wide)?,
        };
        scales.extend(std::iter::repeat_n(rep.scale.at(0), n));
        (lo, hi) = (lo.min(rep.range.0), hi.max(rep.range.1));
        values.push(Some(rep.value));
    }
    let node = lw.rw.op_node(
        Op::new("Concat", ""),
        "int",
        &values,
        op.attrs().to_vec(),
        1,
    )?;
    Ok(Some(IntRep {
        value: out(node, 0),
        scale: Scale::PerAxis { axis, scales },
        zero_point: 0,
        dtype: DataType::Int32,
        range: (lo, hi),
    }))
}

pub(super) fn lower_concat(
    lw: &mut Lowering,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let y = out(id, 0);
    // Some part integer, or every part integer later (or constant).
    let parts: Vec<ValueId> = inputs.iter().flatten().copied().collect();
    let later = |v: ValueId| integer_or_later(lw, v) || lw.model().graph.constant(v).is_some();
    if !(parts.iter().any(|&v| lw.rep(v).is_some()) || parts.iter().all(|&v| later(v))) {
        return Ok(Outcome::NotACandidate);
    }
    let plan = match lw.plan(y) {
        Ok(p) => p,
        Err(_) => return Ok(Outcome::Kept("no calibration plan for the result".into())),
    };
    let Scale::PerTensor(scale) = plan.scale else {
        return Ok(Outcome::NotACandidate);
    };
    if lw.model().graph.is_graph_output(y) {
        if let Some(rep) = concat_keeping_scales(lw, op, &parts)? {
            lw.set_rep(y, rep, 32, true);
            return Ok(Outcome::Lowered);
        }
    }
    // Every part at the result's scale, 8 bits, or int32 at the plan's own bits when it has
    // more (a constant part is quantized at compile time).
    let wide = plan.bits > 8;
    let (lo, hi, dtype) = match (wide, plan.signed) {
        (true, true) => (-plan.levels(), plan.levels(), DataType::Int32),
        (true, false) => (0, plan.levels(), DataType::Int32),
        (false, true) => (-128, 127, DataType::Int8),
        (false, false) => (0, 255, DataType::Uint8),
    };
    let levels = if plan.signed { 127.0 } else { 255.0 };
    let scale = if wide {
        scale
    } else {
        (scale * ((1u64 << (plan.bits - u32::from(plan.signed))) - 1) as f64 / levels) as f32 as f64
    };
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
    lw.set_rep(y, rep, if wide { plan.bits } else { 8 }, plan.signed);
    Ok(Outcome::Lowered)
}
