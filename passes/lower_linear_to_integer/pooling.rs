//! Masked mean pooling in integers (sentence encoders): `Σ(h · mask) / max(Σ mask, ε)`.
//!
//! - `Cast(mask → float)` of an integer tensor that calibration saw only as 0 and 1:
//!   `Clip(Cast(mask → int32), 0, 1)`, scale 1 (the clip states the 0/1 assumption).
//! - `x · m` with m such a mask and x lowered: int32 product, x's scale.
//! - `ReduceSum` of a per-tensor int32 value: the integer sum, same scale.
//! - `Clip(x, lo, hi)` with constant bounds on a per-tensor value: the bounds at x's scale,
//!   rounded inward (exact: `Clip(count, 1e-9)` of integer counts is `Max(count, 1)`).
//! - `x / n` with n a positive integer count (scale 1): `(x · 2^p) / n`, truncated, at scale
//!   `s/2^p`, p as large as int32 allows.

use super::*;
use crate::ir::DataTypeInfo;

/// The representation of a 0/1 integer mask cast to float, if `v` is one.
fn is_mask(lw: &Lowering, v: ValueId) -> bool {
    lw.rep(v)
        .is_some_and(|r| r.scale == Scale::PerTensor(1.0) && r.range == (0, 1))
}

pub(super) fn lower_mask_cast(
    lw: &mut Lowering,
    id: NodeId,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let Some(x) = inputs[0] else {
        return Ok(Outcome::NotACandidate);
    };
    let y = out(id, 0);
    let to_float = lw
        .facts
        .get(y)
        .and_then(|f| f.dtype)
        .is_some_and(|t| t == DataType::Float);
    let from_integer = lw
        .facts
        .get(x)
        .and_then(|f| f.dtype)
        .is_some_and(|t| t.is_integer() || t == DataType::Bool);
    let zero_one = lw
        .model()
        .graph
        .value(y)
        .stats
        .as_ref()
        .is_some_and(|s| s.count > 0 && s.min >= 0.0 && s.max <= 1.0);
    if !(to_float && from_integer && zero_one) || lw.model().graph.constant(x).is_some() {
        return Ok(Outcome::NotACandidate);
    }
    let to_i32 = crate::ir::attr::int("to", DataType::Int32 as i32 as i64);
    let wide = lw.op("Cast", "mask_i32", &[x], vec![to_i32])?;
    let lo = lw.constant("zero", &Array::scalar(0i32))?;
    let hi = lw.constant("one", &Array::scalar(1i32))?;
    let mask = lw.op("Clip", "mask", &[wide, lo, hi], vec![])?;
    let rep = IntRep {
        value: mask,
        scale: Scale::PerTensor(1.0),
        zero_point: 0,
        dtype: DataType::Int32,
        range: (0, 1),
    };
    lw.set_rep(y, rep, 1, false);
    Ok(Outcome::Lowered)
}

/// `x · mask` and `x / count`.
pub(super) fn lower_product(
    lw: &mut Lowering,
    id: NodeId,
    divide: bool,
    a: ValueId,
    b: ValueId,
) -> Result<Outcome> {
    let y = out(id, 0);
    if !divide {
        let (x, m) = if is_mask(lw, b) {
            (a, b)
        } else if is_mask(lw, a) {
            (b, a)
        } else {
            return lower_activation_product(lw, id, a, b);
        };
        let Some(plan) = lw.model().graph.value(x).plan.clone() else {
            return Ok(Outcome::NotACandidate);
        };
        let Scale::PerTensor(s) = plan.scale else {
            return Ok(Outcome::NotACandidate);
        };
        // 16 bits of x over its planned clip: the pooled mean keeps more than an 8-bit plan.
        let levels = plan.levels() as f64;
        let target = Target {
            scale: (s * levels / 32767.0) as f32 as f64,
            zero_point: 0,
            lo: -32767,
            hi: 32767,
            dtype: DataType::Int32,
        };
        let rx = lw.to_target(x, &target, "pool_operand")?;
        lw.note(&rx, 16, true);
        let mask = lw.rep(m).expect("mask").value;
        let product = lw.op("Mul", "masked", &[rx.value, mask], vec![])?;
        let rep = IntRep {
            value: product,
            range: (rx.range.0.min(0), rx.range.1.max(0)),
            ..rx
        };
        lw.set_rep(y, rep, 16, true);
        return Ok(Outcome::Lowered);
    }
    let (Some(x), Some(n)) = (lw.rep(a).cloned(), lw.rep(b).cloned()) else {
        return Ok(Outcome::NotACandidate);
    };
    let counts = n.scale == Scale::PerTensor(1.0) && n.zero_point == 0 && n.range.0 >= 1;
    if !counts || !x.is_plain_int32() {
        return Ok(Outcome::Kept(
            "division by something other than a positive count".into(),
        ));
    }
    let magnitude = x.magnitude().max(1);
    let p = (30 - (128 - magnitude.leading_zeros()) as i64).clamp(0, 20) as u32;
    let mut numerator = x.value;
    if p > 0 {
        let Some(factor) = crate::lower::island::spread_int32(lw, "pool_shift", 1 << p, y, None)?
        else {
            return Ok(Outcome::Kept(
                "no axis of known size for the shift constant".into(),
            ));
        };
        numerator = lw.op("Mul", "pool_numerator", &[x.value, factor], vec![])?;
    }
    let mean = lw.op("Div", "mean", &[numerator, n.value], vec![])?;
    let bound = (magnitude as i64) << p;
    let rep = IntRep {
        value: mean,
        scale: Scale::PerTensor(x.scale.at(0) / (1u64 << p) as f64),
        zero_point: 0,
        dtype: DataType::Int32,
        range: (-bound, bound),
    };
    lw.set_rep(y, rep, 32, true);
    Ok(Outcome::Lowered)
}

/// `a · b` of two activations (squeeze-and-excitation's `x · gate`): the 8-bit forms at their
/// plans, widened, multiplied in int32 at `s_a · s_b`. Exact product of the 8-bit values.
/// A gate `x · f(x)` of one input (SiLU) is left to the activation tables.
fn lower_activation_product(
    lw: &mut Lowering,
    id: NodeId,
    a: ValueId,
    b: ValueId,
) -> Result<Outcome> {
    let g = &lw.model().graph;
    if gates(g, a, b) || gates(g, b, a) {
        return Ok(Outcome::NotACandidate);
    }
    // One side integer already, or both outputs of activations a later pass makes tables
    // (the gate of squeeze-and-excitation times a HardSwish), read in their 8-bit forms.
    let either = lw.rep(a).is_some() || lw.rep(b).is_some();
    if !(either || (integer_or_later(lw, a) && integer_or_later(lw, b))) {
        return Ok(Outcome::NotACandidate);
    }
    if let Some(kept) = uncalibrated(lw, &[a, b]) {
        return Ok(kept);
    }
    let mut wide = Vec::new();
    for v in [a, b] {
        wide.push(product_operand(lw, v)?);
    }
    let (ra, rb) = (&wide[0], &wide[1]);
    let corners = [
        ra.range.0 * rb.range.0,
        ra.range.0 * rb.range.1,
        ra.range.1 * rb.range.0,
        ra.range.1 * rb.range.1,
    ];
    let product = lw.op("Mul", "product", &[ra.value, rb.value], vec![])?;
    let rep = IntRep {
        value: product,
        scale: Scale::PerTensor(ra.scale.at(0) * rb.scale.at(0)),
        zero_point: 0,
        dtype: DataType::Int32,
        range: (
            *corners.iter().min().expect("four"),
            *corners.iter().max().expect("four"),
        ),
    };
    lw.set_rep(out(id, 0), rep, 32, true);
    Ok(Outcome::Lowered)
}

/// A factor of an activation product in int32: a value held in an int32 accumulator in its
/// wide form (15 bits and a sign over its planned clip), so the product keeps the precision
/// 8-bit factors would lose; a value that is 8-bit already (a table's output) widened as it is.
fn product_operand(lw: &mut Lowering, v: ValueId) -> Result<IntRep> {
    if lw.rep(v).is_some_and(|r| r.dtype == DataType::Int32) {
        return lw.operand(v, Form::Wide);
    }
    let narrow = lw.operand(v, Form::Stored8)?;
    super::elementwise::widen_to_i32(lw, &narrow)
}

pub(super) fn lower_reduce_sum(
    lw: &mut Lowering,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let Some(x) = inputs[0] else {
        return Ok(Outcome::NotACandidate);
    };
    let Some(rep) = lw.rep(x).cloned() else {
        return Ok(Outcome::NotACandidate);
    };
    if !rep.is_plain_int32() {
        return Ok(Outcome::NotACandidate);
    }
    let y = out(id, 0);
    let count = match (
        lw.facts.get(x).and_then(|f| f.element_count()),
        lw.facts.get(y).and_then(|f| f.element_count()),
    ) {
        (Some(n), Some(m)) if m > 0 => (n / m) as i64,
        _ => {
            // The reduced axes' sizes, or the symbolic bound for each.
            let axes = inputs
                .get(1)
                .copied()
                .flatten()
                .and_then(|v| lw.model().graph.constant(v))
                .and_then(|t| t.decode().ok())
                .map(|a| a.to_f64_vec());
            let rank = lw.rank_of(x).unwrap_or(0) as i64;
            match axes {
                Some(axes) => axes
                    .iter()
                    .map(|&a| {
                        let a = if a < 0.0 { a as i64 + rank } else { a as i64 };
                        lw.dim_or_bound(x, (rank - 1 - a).max(0) as usize)
                    })
                    .product(),
                None => return Ok(Outcome::NotACandidate),
            }
        }
    };
    let range = (rep.range.0.min(0) * count, rep.range.1.max(0) * count);
    if range.0 < i32::MIN as i64 || range.1 > i32::MAX as i64 {
        return Ok(Outcome::Kept(format!(
            "the int32 sum could reach {range:?}"
        )));
    }
    let mut new_inputs = inputs.to_vec();
    new_inputs[0] = Some(rep.value);
    let node = lw.rw.op_node(
        Op::new("ReduceSum", ""),
        "int",
        &new_inputs,
        op.attrs().to_vec(),
        1,
    )?;
    let rep = IntRep {
        value: out(node, 0),
        range,
        ..rep
    };
    lw.set_rep(y, rep, 32, true);
    Ok(Outcome::Lowered)
}

pub(super) fn lower_clip(
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
    if rep.dtype != DataType::Int32 || rep.zero_point != 0 {
        return Ok(Outcome::NotACandidate);
    }
    let bound = |slot: usize| -> Option<Option<f64>> {
        match inputs.get(slot).copied().flatten() {
            None => Some(None),
            Some(v) => constant_f32(lw, Some(v))
                .filter(|c| c.len() == 1)
                .map(|c| Some(*c.iter().next().expect("one") as f64)),
        }
    };
    let (Some(lo), Some(hi)) = (bound(1), bound(2)) else {
        return Ok(Outcome::NotACandidate);
    };
    clamp_real(lw, id, x, rep, lo, hi)
}

/// `Clip(x, lo, hi)` of the real values of an int32 `rep` (zero point 0), as integer bounds.
pub(super) fn clamp_real(
    lw: &mut Lowering,
    id: NodeId,
    x: ValueId,
    rep: IntRep,
    lo: Option<f64>,
    hi: Option<f64>,
) -> Result<Outcome> {
    // Per channel (ReLU6 after a convolution) the bounds are one integer per channel; a
    // negative scale swaps which bound is the lower one.
    let (scales, axis) = match &rep.scale {
        Scale::PerTensor(s) => (vec![*s], None),
        Scale::PerAxis { axis, scales } => (scales.clone(), Some(*axis)),
    };
    // Per-channel bounds are shaped [C, 1, …] from the channel axis on: that needs the rank.
    let rank = match (rank(lw, x), axis) {
        (Some(r), _) => r,
        (None, None) => 0,
        (None, Some(_)) => return Ok(Outcome::Kept("rank unknown".into())),
    };
    let (mut los, mut his) = (Vec::new(), Vec::new());
    for &s in &scales {
        let (l, h) = if s > 0.0 { (lo, hi) } else { (hi, lo) };
        let l = l.map(|l| (l / s).ceil()).unwrap_or(f64::NEG_INFINITY);
        let h = h.map(|h| (h / s).floor()).unwrap_or(f64::INFINITY);
        // Only the side that does not bind is narrowed: a bound past the whole range binds
        // everywhere and stays as it is.
        let (l, h) = (l.max(rep.range.0 as f64), h.min(rep.range.1 as f64));
        let int32 = i32::MIN as f64..=i32::MAX as f64;
        if !(int32.contains(&l) && int32.contains(&h)) {
            return Ok(Outcome::Kept("a bound is outside the int32 range".into()));
        }
        los.push(l as i64);
        his.push(h as i64);
    }
    let shape: Vec<usize> = match axis {
        None => vec![],
        Some(a) => std::iter::once(scales.len())
            .chain(std::iter::repeat_n(1, rank - 1 - a))
            .collect(),
    };
    let bounds = |v: &[i64]| -> Result<Array> {
        let v: Vec<i32> = v.iter().map(|&x| x as i32).collect();
        Array::from_vec(&shape, v)
    };
    let mut value = rep.value;
    let mut range = rep.range;
    let extremes = |v: &[i64]| {
        (
            *v.iter().min().expect("a scale"),
            *v.iter().max().expect("a scale"),
        )
    };
    let ((min_lo, max_lo), (min_hi, max_hi)) = (extremes(&los), extremes(&his));
    let any_negative = scales.iter().any(|&s| s < 0.0);
    if lo.is_some() || any_negative {
        let c = lw.constant("lo", &bounds(&los)?)?;
        value = lw.op("Max", "at_least", &[value, c], vec![])?;
        range = (range.0.max(min_lo), range.1.max(max_lo));
    }
    if hi.is_some() || any_negative {
        let c = lw.constant("hi", &bounds(&his)?)?;
        value = lw.op("Min", "at_most", &[value, c], vec![])?;
        range = (range.0.min(min_hi), range.1.min(max_hi));
    }
    let rep = IntRep {
        value,
        range,
        ..rep
    };
    lw.set_rep(out(id, 0), rep, 32, true);
    Ok(Outcome::Lowered)
}
