//! Closing a float island: the integer lowerings of Softmax, GELU and LayerNorm run after
//! `lower-linear-to-integer`, which left each of those ops reading `DequantizeLinear(q)` and
//! its integer readers reading a quantization of its output (`Mul(1/s) → Round → [Add zp] →
//! Clip → Cast`, or `QuantizeLinear`). A lowering reads `q` directly ([`dequantized`]),
//! computes its kernel in integers, and [`emit_output`] hands the result to each reader: a
//! requantization straight into the reader's form, or a `DequantizeLinear` for what stays float
//! (graph outputs).

use super::driver::Outcome;
use super::engine::{IntRep, Lowering, Target};
use crate::Result;
use crate::ir::quant::{ActivationPlan, Scale};
use crate::ir::{Array, DataType, DataTypeInfo, NodeId, ValueId, attr};
use crate::pass::matcher::{scalar, sole_reader};

/// The integer representation behind `v = DequantizeLinear(q, scale, zero_point)` with constant
/// scale and zero point, if that is what produces `v`.
pub fn dequantized(lw: &Lowering, v: ValueId) -> Option<IntRep> {
    let g = &lw.model().graph;
    let op = g.op(v.node)?;
    if !op.is("DequantizeLinear") || !op.domain().is_empty() {
        return None;
    }
    let q = g.input(v.node, 0)?;
    let scales = g.constant(g.input(v.node, 1)?)?.decode().ok()?.to_f64_vec();
    let zero_point = match g.input(v.node, 2) {
        Some(z) => g
            .constant(z)?
            .decode()
            .ok()?
            .to_f64_vec()
            .first()
            .copied()? as i64,
        None => 0,
    };
    let facts = g.value(q).quant.as_ref()?;
    let range = facts.range?;
    let dtype = lw
        .facts
        .get(q)
        .and_then(|f| f.dtype)
        .or(Some(match facts.bits {
            ..=8 if facts.signed => DataType::Int8,
            ..=8 => DataType::Uint8,
            _ => DataType::Int32,
        }))?;
    let scale = if scales.len() == 1 {
        Scale::PerTensor(scales[0])
    } else {
        let rank = lw.rank_of(q)? as i64;
        let axis = op.attr_int("axis", 1).ok()?;
        Scale::PerAxis {
            axis: if axis < 0 { axis + rank } else { axis } as usize,
            scales,
        }
    };
    Some(IntRep {
        value: q,
        scale,
        zero_point,
        dtype,
        range,
    })
}

/// The quantization plan of a float value (kept on the dequantized value by lowering).
pub fn plan_of(lw: &Lowering, v: ValueId) -> Option<ActivationPlan> {
    lw.model().graph.value(v).plan.clone()
}

/// A reader that quantizes a float value: the target it quantizes to, the integer value it
/// produces, and its last node.
pub struct Quantization {
    pub target: Target,
    pub result: ValueId,
    pub last: NodeId,
}

/// Matches `Cast(Clip(Round(v · c) [+ zp], lo, hi))` or `QuantizeLinear(v, s, zp)` at `reader`.
pub fn quantization_at(g: &crate::ir::Graph, v: ValueId, reader: NodeId) -> Option<Quantization> {
    let out = |id: NodeId| ValueId { node: id, slot: 0 };
    let op = g.op(reader)?;
    if !op.domain().is_empty() {
        return None;
    }
    if op.is("QuantizeLinear") {
        let s = scalar(g, g.input(reader, 1))?;
        let zp_value = g.input(reader, 2);
        let zp_type = zp_value
            .and_then(|z| g.constant(z))
            .and_then(|t| t.dtype().ok())
            .unwrap_or(DataType::Uint8);
        let zp = match zp_value {
            Some(z) => scalar(g, Some(z))? as i64,
            None => 0,
        };
        let (lo, hi) = match zp_type {
            DataType::Int8 => (-128, 127),
            DataType::Uint8 => (0, 255),
            _ => return None,
        };
        return Some(Quantization {
            target: Target {
                scale: s,
                zero_point: zp,
                lo,
                hi,
                dtype: zp_type,
            },
            result: out(reader),
            last: reader,
        });
    }
    if !op.is("Mul") || g.input(reader, 0) != Some(v) {
        return None;
    }
    let inverse = scalar(g, g.input(reader, 1)).filter(|&c| c > 0.0)?;
    let round = sole_reader(g, out(reader), "Round")?;
    let mut at = round;
    let mut zero_point = 0;
    if let Some(add) = sole_reader(g, out(round), "Add") {
        zero_point = scalar(g, g.input(add, 1))? as i64;
        at = add;
    }
    let clip = sole_reader(g, out(at), "Clip")?;
    let (lo, hi) = (
        scalar(g, g.input(clip, 1))? as i64,
        scalar(g, g.input(clip, 2))? as i64,
    );
    let cast = sole_reader(g, out(clip), "Cast")?;
    let to = g.op(cast)?.attr_int("to", 0).ok()?;
    let dtype = DataType::try_from(to as i32).ok()?;
    if !dtype.is_integer() {
        return None;
    }
    Some(Quantization {
        target: Target {
            scale: (1.0 / inverse as f32 as f64) as f32 as f64,
            zero_point,
            lo,
            hi,
            dtype,
        },
        result: out(cast),
        last: cast,
    })
}

/// The quantization that is `float`'s only reader (and `float` no graph output), if any.
pub fn sole_quantization(lw: &Lowering, float: ValueId) -> Option<Quantization> {
    let g = &lw.model().graph;
    let uses = g.uses(float);
    if uses.len() != 1 || g.is_graph_output(float) {
        return None;
    }
    quantization_at(g, float, uses[0].node)
}

/// Points the readers of a quantization's result at `value` and drops the quantization.
pub fn replace_quantization(lw: &mut Lowering, q: &Quantization, value: ValueId) -> Result<()> {
    let origin = lw.model().graph.value(q.result).origin.clone();
    lw.rw.replace(q.result, value)?;
    if lw.rw.graph().value(value).origin.is_none() {
        lw.rw.annotate(value, |v| v.origin = origin);
    }
    lw.rw.erase_if_dead(q.last);
    Ok(())
}

/// Gives `float`'s readers the integer result `rep` (with its facts): every quantizing reader
/// becomes a requantization of `rep`; anything else reads a `DequantizeLinear` of it. The float
/// op that produced `float` is removed once nothing reads it.
pub fn emit_output(
    lw: &mut Lowering,
    float: ValueId,
    rep: &IntRep,
    bits: u32,
    signed: bool,
) -> Result<()> {
    lw.note(rep, bits, signed);
    // The integer result stands for the float value (`intone check --per-layer` maps it back).
    if lw.model().graph.value(rep.value).origin.is_none() {
        let g = &lw.model().graph;
        let origin = g
            .value(float)
            .origin
            .clone()
            .unwrap_or_else(|| g.value_name(float).to_string());
        lw.rw.annotate(rep.value, |v| v.origin = Some(origin));
    }
    requantize_readers(lw, float, rep)?;
    // Shape and Size read the integers: the shape is the same, and no dequantization (or
    // per-tensor requantization below) is computed just for them.
    for u in lw.model().graph.uses(float) {
        let shape_of = lw
            .model()
            .graph
            .op(u.node)
            .is_some_and(|o| o.is("Shape") || o.is("Size"));
        if let (true, crate::ir::Port::Input(slot)) = (shape_of, u.port) {
            lw.rw.set_input(u.node, slot, Some(rep.value));
        }
    }
    let g = &lw.model().graph;
    let read_inside = !g.uses(float).is_empty();
    if read_inside || g.is_graph_output(float) {
        // Per-channel results read by other ops (data movement on the way to a quantization)
        // are first requantized per tensor, at the value's plan: data movement then moves
        // integers (fold-dyadic-requant) whatever it does to the channel axis.
        let per_tensor = match (&rep.scale, plan_of(lw, float)) {
            (Scale::PerAxis { .. }, Some(plan)) if read_inside => match plan.scale {
                Scale::PerTensor(scale) => {
                    let max = (1i64 << (plan.bits.max(8) - 1)) - 1;
                    let r = lw.convert(
                        rep,
                        &Target {
                            scale,
                            zero_point: 0,
                            lo: -max,
                            hi: max,
                            dtype: DataType::Int32,
                        },
                        "per_tensor",
                    )?;
                    lw.note(&r, plan.bits.max(8), true);
                    Some(r)
                }
                Scale::PerAxis { .. } => None,
            },
            _ => None,
        };
        let dq = lw.dequantize(per_tensor.as_ref().unwrap_or(rep))?;
        lw.rw.replace(float, dq)?;
    }
    lw.rw.erase_if_dead(float.node);
    Ok(())
}

/// Points every quantizing reader of `float` at a requantization of `rep` instead; returns
/// how many there were.
pub fn requantize_readers(lw: &mut Lowering, float: ValueId, rep: &IntRep) -> Result<usize> {
    let readers: Vec<NodeId> = {
        let g = &lw.model().graph;
        let mut r: Vec<NodeId> = g.uses(float).iter().map(|u| u.node).collect();
        r.sort_by_key(|&n| g.order(n));
        r.dedup();
        r
    };
    let mut closed = 0;
    for reader in readers {
        let Some(q) = quantization_at(&lw.model().graph, float, reader) else {
            continue;
        };
        let converted = lw.convert(rep, &q.target, "requant")?;
        let facts = converted.facts(
            (64 - ((q.target.hi - q.target.lo) as u64).leading_zeros()).min(32),
            q.target.lo < 0 || q.target.zero_point != 0,
        );
        let origin = lw.model().graph.value(q.result).origin.clone();
        lw.rw.replace(q.result, converted.value)?;
        lw.rw.annotate(converted.value, |value| {
            if value.quant.is_none() {
                value.quant = Some(facts);
            }
            if value.origin.is_none() {
                value.origin = origin;
            }
        });
        lw.rw.erase_if_dead(q.last);
        closed += 1;
    }
    Ok(closed)
}

/// A scalar int32 constant (for operands tract takes as they are: Add, Sub, Min, Max,
/// Clip; one-element Mul/Div operands need `spread_int32`).
pub fn int32_scalar(lw: &mut Lowering, suffix: &str, value: i64) -> Result<ValueId> {
    lw.constant(suffix, &Array::scalar(value as i32))
}

/// `ReduceMax`/`ReduceSum` over one axis with kept dims, in the form of the model's opset.
pub fn reduce(lw: &mut Lowering, op_type: &str, x: ValueId, axis: i64) -> Result<ValueId> {
    let opset = lw.model().opset("").unwrap_or(18);
    let axes_as_input = match op_type {
        "ReduceSum" => opset >= 13,
        _ => opset >= 18,
    };
    let keep = attr::int("keepdims", 1);
    if axes_as_input {
        let axes = lw.constant("axes", &Array::from_vec(&[1], vec![axis])?)?;
        lw.op(op_type, "reduce", &[x, axes], vec![keep])
    } else {
        lw.op(
            op_type,
            "reduce",
            &[x],
            vec![keep, attr::ints("axes", &[axis])],
        )
    }
}

/// What an op lowering says of one op it selected: done, or left alone with the reason.
pub type Lowered = std::result::Result<(), String>;

/// [`super::driver::lower_ops`] over the ops `select` picks: the shared loop of the non-linear
/// lowerings.
pub fn lower_each(
    model: &mut crate::ir::Model,
    cx: &mut crate::pass::PassContext,
    select: impl Fn(&crate::ir::Op) -> bool,
    mut lower: impl FnMut(&mut Lowering, NodeId, &crate::ir::Op) -> Result<Lowered>,
) -> Result<()> {
    super::driver::lower_ops(model, cx, |lw, id, op| {
        if !select(op) {
            return Ok(Outcome::NotACandidate);
        }
        Ok(match lower(lw, id, op)? {
            Ok(()) => Outcome::Lowered,
            Err(reason) => Outcome::Kept(reason),
        })
    })?;
    Ok(())
}

/// An int32 constant holding `value`, repeated along an axis of known size > 1 of `like` (not
/// `exclude`), shaped to broadcast against `like`. tract 0.23 turns a one-element integer
/// operand of `Mul`/`Div` into a "region of interest" that it walks back through the whole
/// graph, doubling at every fan-out; a constant of two or more elements introduces none.
pub fn spread_int32(
    lw: &mut Lowering,
    suffix: &str,
    value: i64,
    like: ValueId,
    exclude: Option<usize>,
) -> Result<Option<ValueId>> {
    let Some(shape) = lw.facts.get(like).and_then(|f| f.shape.clone()) else {
        return Ok(None);
    };
    let rank = shape.len();
    let Some((axis, n)) = (0..rank).rev().find_map(|i| {
        (Some(i) != exclude)
            .then(|| shape[i].known().filter(|&d| d > 1).map(|d| (i, d as usize)))
            .flatten()
    }) else {
        return Ok(None);
    };
    let mut dims = vec![n];
    dims.extend(std::iter::repeat_n(1, rank - axis - 1));
    let array = Array::from_vec(&[n], vec![value as i32; n])?.into_shape(&dims)?;
    Ok(Some(lw.constant(suffix, &array)?))
}
