//! Elementwise ops on lowered values: residual `Add`/`Sub`, `Mul`/`Div` by constants absorbed
//! into scales, `Relu` as `Max(q, zp)`, `Where` of two lowered branches.

use super::*;

/// The |x| of a calibrated value, used to spot additive attention masks (±3.4e38).
pub(super) fn looks_like_mask(lw: &Lowering, v: ValueId) -> bool {
    lw.model()
        .graph
        .value(v)
        .stats
        .as_ref()
        .is_some_and(|s| s.abs_max() > 1e10)
}

/// A representation as int32 with zero point 0 (`Cast`, then `Sub(zp)` when zp ≠ 0); one that
/// already is comes back as it is.
pub(super) fn widen_to_i32(lw: &mut Lowering, rep: &IntRep) -> Result<IntRep> {
    if rep.dtype == DataType::Int32 && rep.zero_point == 0 {
        return Ok(rep.clone());
    }
    let to_i32 = crate::ir::attr::int("to", DataType::Int32 as i32 as i64);
    let wide = lw.op("Cast", "widen", &[rep.value], vec![to_i32])?;
    let zp = rep.zero_point;
    let mut wide = IntRep {
        value: wide,
        zero_point: 0,
        dtype: DataType::Int32,
        range: (rep.range.0 - zp, rep.range.1 - zp),
        ..rep.clone()
    };
    if zp != 0 {
        let z = lw.constant("zero_point", &Array::scalar(zp as i32))?;
        wide.value = lw.op("Sub", "unshift", &[wide.value, z], vec![])?;
    }
    lw.note(&wide, 32, true);
    Ok(wide)
}

/// Largest magnitude of each operand of a difference of two activations.
const DIFFERENCE_LEVELS: i64 = 32767;

pub(super) fn lower_add(
    lw: &mut Lowering,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let (Some(a), Some(b)) = (inputs[0], inputs[1]) else {
        return Ok(Outcome::NotACandidate);
    };
    let g = &lw.model().graph;
    let (ca, cb) = (constant_f32(lw, Some(a)), constant_f32(lw, Some(b)));
    let negate = op.op_type() == "Sub";
    // Bias: an int32 accumulator plus a constant.
    // (x, c, x negated): x + c, x − c, or c − x (a detector's anchor minus a distance).
    let bias_case = match (&ca, &cb) {
        (None, Some(c)) => Some((a, c.clone(), false)),
        (Some(c), None) => Some((b, c.clone(), negate)),
        _ => None,
    };
    if let Some((x, c, negated)) = bias_case {
        let Some(mut rep) = lw.rep(x).cloned() else {
            return Ok(Outcome::NotACandidate);
        };
        if rep.dtype != DataType::Int32 || rep.zero_point != 0 {
            rep = widen_to_i32(lw, &rep)?;
        }
        if negated {
            let value = lw.op("Neg", "negated", &[rep.value], vec![])?;
            rep = IntRep {
                value,
                range: (-rep.range.1, -rep.range.0),
                ..rep
            };
            lw.note(&rep, 32, true);
        }
        let c = if negate && !negated {
            c.mapv(|v| -v)
        } else {
            c
        };
        let Some(r) = rank(lw, out(id, 0)) else {
            return Ok(Outcome::Kept("rank unknown".into()));
        };
        let mut sum = add_bias(lw, &rep, &c, r)?;
        if sum.is_none() && !rep.is_per_tensor() && lw.can_quantize(x) {
            // A per-channel scale too fine for the constant's integers (a tiny channel of a
            // 16-bit depthwise output times a scale): at x's wide form, one coarser scale.
            let wide = lw.operand(x, Form::Wide)?;
            sum = add_bias(lw, &wide, &c, r)?;
        }
        return Ok(match sum {
            Some(r) => {
                lw.set_rep(out(id, 0), r, 32, true);
                Outcome::Lowered
            }
            None => Outcome::Kept("constant does not broadcast along the scale's axis, or its integers overflow int32".into()),
        });
    }
    if ca.is_some() || cb.is_some() || g.constant(a).is_some() || g.constant(b).is_some() {
        return Ok(Outcome::NotACandidate);
    }
    // A residual (or a difference): both operands at the output's planned scale, in int32.
    let y = out(id, 0);
    if looks_like_mask(lw, a) || looks_like_mask(lw, b) {
        return Ok(Outcome::Kept(
            "an operand looks like an additive attention mask".into(),
        ));
    }
    // Both integer, or one integer and one planned float value (quantized here), or both
    // outputs of ops a later lowering makes integer (YOLO's SiLU residuals).
    let either = lw.rep(a).is_some() || lw.rep(b).is_some();
    if !(either || (integer_or_later(lw, a) && integer_or_later(lw, b))) {
        return Ok(Outcome::NotACandidate);
    }
    // A difference only of two integers (a detector's box corners): LayerNorm's x − mean
    // of a float mean is left to its own lowering.
    if negate && !(lw.rep(a).is_some() && lw.rep(b).is_some()) {
        return Ok(Outcome::NotACandidate);
    }
    if let Some(kept) = uncalibrated(lw, &[a, b, y]) {
        return Ok(kept);
    }
    let plan = lw.plan(y)?;
    let Scale::PerTensor(scale) = plan.scale else {
        return Ok(Outcome::NotACandidate);
    };
    let max = crate::quant::levels(plan.bits, true);
    let target = if negate {
        // A difference can be far smaller than its operands (a box's width from its two
        // corners): both at 15 bits over the largest of the three clips.
        let clip = |p: &crate::ir::quant::ActivationPlan| p.scale.at(0) * p.levels() as f64;
        let widest = [lw.plan(a)?, lw.plan(b)?, plan.clone()]
            .iter()
            .map(clip)
            .fold(0f64, f64::max);
        Target {
            scale: (widest / DIFFERENCE_LEVELS as f64) as f32 as f64,
            zero_point: 0,
            lo: -DIFFERENCE_LEVELS,
            hi: DIFFERENCE_LEVELS,
            dtype: DataType::Int32,
        }
    } else {
        Target {
            scale,
            zero_point: 0,
            lo: -max,
            hi: max,
            dtype: DataType::Int32,
        }
    };
    let scale = target.scale;
    let ra = lw.to_target(a, &target, "align")?;
    let rb = lw.to_target(b, &target, "align")?;
    let (sum, range) = if negate {
        let d = lw.op("Sub", "difference", &[ra.value, rb.value], vec![])?;
        (d, (ra.range.0 - rb.range.1, ra.range.1 - rb.range.0))
    } else {
        let s = lw.op("Add", "residual", &[ra.value, rb.value], vec![])?;
        (s, (ra.range.0 + rb.range.0, ra.range.1 + rb.range.1))
    };
    let rep = IntRep {
        value: sum,
        scale: Scale::PerTensor(scale),
        zero_point: 0,
        dtype: DataType::Int32,
        range,
    };
    lw.set_rep(y, rep, plan.bits + 1, true);
    Ok(Outcome::Lowered)
}

/// `x · c` or `x / c` with c a positive constant: the representation stays, its scale changes.
pub(super) fn lower_scale(
    lw: &mut Lowering,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let (Some(a), Some(b)) = (inputs[0], inputs[1]) else {
        return Ok(Outcome::NotACandidate);
    };
    let divide = op.op_type() == "Div";
    let (x, c) = match (constant_f32(lw, Some(a)), constant_f32(lw, Some(b))) {
        (None, Some(c)) => (a, c),
        (Some(c), None) if !divide => (b, c),
        (None, None) => return pooling::lower_product(lw, id, divide, a, b),
        _ => return Ok(Outcome::NotACandidate),
    };
    if lw.rep(x).is_none() && !integer_or_later(lw, x) {
        return Ok(Outcome::NotACandidate);
    }
    // Negative factors are fine per channel (signed scales); a uniform one would flip the
    // whole tensor, which a float op does as cheaply.
    if c.iter().any(|&v| v == 0.0 || !v.is_finite()) || (c.len() == 1 && c.iter().all(|&v| v < 0.0))
    {
        return Ok(Outcome::Kept(
            "the constant is zero, infinite or a negative scalar".into(),
        ));
    }
    let rep = match lw.rep(x).cloned() {
        Some(rep) => rep,
        // A table's output scaled (Paddle's inference dropout): its 8-bit form.
        None if integer_or_later(lw, x) => lw.operand(x, Form::Stored8)?,
        None => return Ok(Outcome::NotACandidate),
    };
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
        // A vector along one axis (a layer scale on the last, a batch norm on the channels):
        // per-axis.
        let Some(r) = rank(lw, out(id, 0)) else {
            return Ok(Outcome::Kept("rank unknown".into()));
        };
        let n = c.len();
        let long: Vec<usize> = (0..c.ndim()).filter(|&i| c.shape()[i] != 1).collect();
        if long.len() != 1 || c.ndim() > r {
            return Ok(Outcome::Kept(
                "the constant is not a vector along one axis".into(),
            ));
        }
        let along = r - c.ndim() + long[0];
        let values: Vec<f64> = c.iter().map(|&v| factor(v)).collect();
        match &rep.scale {
            Scale::PerTensor(s) => Scale::PerAxis {
                axis: along,
                scales: values.iter().map(|f| s * f).collect(),
            },
            Scale::PerAxis { axis, scales } if *axis == along && scales.len() == n => {
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

pub(super) fn lower_relu(
    lw: &mut Lowering,
    id: NodeId,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let Some(x) = inputs[0] else {
        return Ok(Outcome::NotACandidate);
    };
    let Some(rep) = lw.rep(x).cloned() else {
        return Ok(Outcome::NotACandidate);
    };
    let negative =
        matches!(&rep.scale, Scale::PerAxis { scales, .. } if scales.iter().any(|&s| s < 0.0));
    if negative && rep.dtype == DataType::Int32 && rep.zero_point == 0 {
        // Channels of negative scale are clipped from above.
        return pooling::clamp_real(lw, id, x, rep, Some(0.0), None);
    }
    if negative {
        return Ok(Outcome::Kept(
            "negative per-channel scales on an 8-bit value".into(),
        ));
    }
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
pub(super) fn lower_where(
    lw: &mut Lowering,
    id: NodeId,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let (Some(cond), Some(a), Some(b)) = (inputs[0], inputs[1], inputs[2]) else {
        return Ok(Outcome::NotACandidate);
    };
    let scalar = |v: ValueId| {
        constant_f32(lw, Some(v))
            .and_then(|c| (c.len() == 1).then(|| c.iter().next().copied()).flatten())
    };
    let (x, c, x_first) = match (lw.rep(a).cloned(), lw.rep(b).cloned()) {
        (Some(r), None) => match scalar(b) {
            Some(c) => (r, c, true),
            None => return Ok(Outcome::NotACandidate),
        },
        (None, Some(r)) => match scalar(a) {
            Some(c) => (r, c, false),
            None => return Ok(Outcome::NotACandidate),
        },
        _ => return Ok(Outcome::NotACandidate),
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
