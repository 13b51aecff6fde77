//! Linear layers: `MatMul`, `Gemm` and `Conv` with constant weights (and activation ×
//! activation `MatMul`) become `MatMulInteger`/`ConvInteger` with int32 accumulators; biases
//! join the accumulator.

use super::*;
use crate::ir::quant::{Granularity, WeightPlan};
use crate::lower::residual::{
    ActivationTerms, Expansion, accumulator_range, ensemble_branch, expand_weight, tap_sum_fits,
};

/// Adds a quantized weight initializer as the operand policy stores it, with its zero point
/// input (none for int8).
pub(super) fn weight_constant(
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
pub(super) fn zero_point_input(lw: &mut Lowering, rep: &IntRep) -> Result<Option<ValueId>> {
    if rep.zero_point == 0 {
        return Ok(None);
    }
    let zp = Array::scalar(rep.zero_point).cast(rep.dtype)?;
    Ok(Some(lw.constant("zero_point", &zp)?))
}

/// Inputs of `MatMulInteger`/`ConvInteger`: A, B and the zero points that are not 0 (an
/// omitted A zero point before a B zero point stays an empty slot).
pub(super) fn operand_inputs(
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
pub(super) fn weight_matmul(
    lw: &mut Lowering,
    x: ValueId,
    w: &ndarray::ArrayD<f32>,
    plan: PlannedWeight,
    alpha: f64,
    out_rank: usize,
) -> Result<IntRep> {
    let e = plan.expand(w, 1);
    let acc = accumulate_terms(
        lw,
        x,
        plan.activation_terms,
        &e,
        out_rank - 1,
        out_rank,
        |lw, inputs| {
            let acc = lw
                .rw
                .op_node(Op::new("MatMulInteger", ""), "matmul", inputs, vec![], 1)?;
            Ok(out(acc, 0))
        },
    )?;
    Ok(IntRep {
        value: acc.value,
        scale: Scale::PerAxis {
            axis: out_rank - 1,
            scales: acc
                .weight_scales
                .iter()
                .map(|s| s * acc.activation_scale * alpha)
                .collect(),
        },
        zero_point: 0,
        dtype: DataType::Int32,
        range: acc.range,
    })
}

pub(super) fn lower_matmul(
    lw: &mut Lowering,
    id: NodeId,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let (Some(a), Some(b)) = (inputs[0], inputs[1]) else {
        return Ok(Outcome::NotACandidate);
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
        let plan = match planned_weight(lw, b, 1) {
            Ok(p) => p,
            Err(reason) => return Ok(Outcome::Kept(reason)),
        };
        let rep = weight_matmul(lw, a, &w, plan, 1.0, out_rank)?;
        lw.set_rep(y, rep, 32, true);
        return Ok(Outcome::Lowered);
    }
    if lw.model().graph.constant(b).is_some() {
        return Ok(Outcome::Kept("constant weight is not f32".into()));
    }
    // Activation × activation (attention scores, attention-weighted values).
    let k = lw.dim_or_bound(b, 1) as i128;
    if let Some(rep) = two_term_activations(lw, a, b, k)? {
        lw.set_rep(y, rep, 32, true);
        return Ok(Outcome::Lowered);
    }
    let ra = lw.operand(a, Form::OperandA)?;
    let rb = lw.operand(b, Form::OperandB)?;
    let bound = k * ra.magnitude() * rb.magnitude();
    if bound >= i32::MAX as i128 {
        return Ok(Outcome::Kept(format!(
            "the int32 accumulator could reach {bound} (inner dimension {k})"
        )));
    }
    let zp = zero_point_input(lw, &ra)?;
    let b_zp = zero_point_input(lw, &rb)?;
    let acc = matmul_integer(lw, ra.value, rb.value, zp, b_zp)?;
    let rep = IntRep {
        value: acc,
        scale: Scale::PerTensor(ra.scale.at(0) * rb.scale.at(0)),
        zero_point: 0,
        dtype: DataType::Int32,
        range: (-bound as i64, bound as i64),
    };
    lw.set_rep(y, rep, 32, true);
    Ok(Outcome::Lowered)
}

/// `MatMulInteger(a, b, a_zp, b_zp)`: an int32 product of two lowered operands.
fn matmul_integer(
    lw: &mut Lowering,
    a: ValueId,
    b: ValueId,
    a_zp: Option<ValueId>,
    b_zp: Option<ValueId>,
) -> Result<ValueId> {
    let acc = lw.rw.op_node(
        Op::new("MatMulInteger", ""),
        "matmul",
        &operand_inputs(a, b, a_zp, b_zp),
        vec![],
        1,
    )?;
    Ok(out(acc, 0))
}

/// `a·b` of two activations where `a` is planned wide (9–16 bits, `--wide-operands measured`):
/// `256·(hi·b) + lo·b`, two 8-bit integer matmuls on the same `b`, when every partial sum and
/// their total stay in int32 over `k` inputs; `None` otherwise (then `a` enters at 8 bits).
fn two_term_activations(
    lw: &mut Lowering,
    a: ValueId,
    b: ValueId,
    k: i128,
) -> Result<Option<IntRep>> {
    let Some((target, [(_, hi), (_, lo)])) = two_term_target(lw, a)? else {
        return Ok(None);
    };
    let span = |r: (i64, i64)| (r.0 as i128).abs().max((r.1 as i128).abs());
    let rb = lw.operand(b, Form::OperandB)?;
    let bound = k * (TERM_BASE as i128 * span(hi) + span(lo)) * rb.magnitude();
    if bound >= i32::MAX as i128 {
        return Ok(None);
    }
    let (hi, lo) = split_terms(lw, a, &target)?;
    let b_zp = zero_point_input(lw, &rb)?;
    let product = |lw: &mut Lowering, term: &IntRep| -> Result<ValueId> {
        let zp = zero_point_input(lw, term)?;
        matmul_integer(lw, term.value, rb.value, zp, b_zp)
    };
    let high = product(lw, &hi)?;
    let low = product(lw, &lo)?;
    let base = lw.constant("term_base", &Array::scalar(TERM_BASE as i32))?;
    let high = lw.op("Mul", "high_part", &[high, base], vec![])?;
    let sum = lw.op("Add", "terms", &[high, low], vec![])?;
    Ok(Some(IntRep {
        value: sum,
        scale: Scale::PerTensor(target.scale * rb.scale.at(0)),
        zero_point: 0,
        dtype: DataType::Int32,
        range: (-bound as i64, bound as i64),
    }))
}

pub(super) fn lower_gemm(
    lw: &mut Lowering,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let (Some(a), b) = (inputs[0], inputs.get(1).copied().flatten()) else {
        return Ok(Outcome::NotACandidate);
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
    let transposed = op.attr_int("transB", 0)? != 0;
    let plan = match planned_weight(lw, b.expect("constant B"), if transposed { 0 } else { 1 }) {
        Ok(p) => p,
        Err(reason) => return Ok(Outcome::Kept(reason)),
    };
    if transposed {
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
    let mut rep = weight_matmul(lw, a, &w, plan, alpha, 2)?;
    if let Some(bias) = bias {
        match add_bias(lw, &rep, &bias, 2)? {
            Some(r) => rep = r,
            None => {
                return Ok(Outcome::Kept(
                    "bias does not broadcast along the output channels, or its integers overflow int32".into(),
                ));
            }
        }
    }
    lw.set_rep(out(id, 0), rep, 32, true);
    Ok(Outcome::Lowered)
}

pub(super) fn lower_conv(
    lw: &mut Lowering,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let Some(x) = inputs[0] else {
        return Ok(Outcome::NotACandidate);
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
    let plan = match planned_weight(lw, inputs[1].expect("constant weight"), 0) {
        Ok(p) => p,
        Err(reason) => return Ok(Outcome::Kept(reason)),
    };
    let mut e = plan.expand(&w, 0);
    let dims: Vec<i64> = w.shape().iter().map(|&d| d as i64).collect();
    if let Some(taps) = crate::ops::taps::DepthwiseTaps::of(op, &dims)? {
        let levels = lw.plan(x)?.levels();
        while e.order() > 1 && !tap_sum_fits(&e, levels) {
            e = e.truncated(e.order() - 1);
        }
        let rep = super::taps::depthwise_taps(lw, x, &taps, &e.aligned(), &e.channel_scales())?;
        return finish_conv(lw, id, rep, bias, w.ndim());
    }
    if op.attr_int("group", 1)? > 1 && !e.dense() {
        // Compact residual channels would not line up with the groups.
        e = PlannedWeight {
            residual_channels: None,
            ..plan.clone()
        }
        .expand(&w, 0);
    }
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
    let rank = w.ndim();
    let acc = accumulate_terms(lw, x, plan.activation_terms, &e, 1, rank, |lw, inputs| {
        let acc = lw
            .rw
            .op_node(Op::new("ConvInteger", ""), "conv", inputs, attrs.clone(), 1)?;
        Ok(out(acc, 0))
    })?;
    let rep = IntRep {
        value: acc.value,
        scale: Scale::PerAxis {
            axis: 1,
            scales: acc
                .weight_scales
                .iter()
                .map(|s| s * acc.activation_scale)
                .collect(),
        },
        zero_point: 0,
        dtype: DataType::Int32,
        range: acc.range,
    };
    finish_conv(lw, id, rep, bias, w.ndim())
}

/// A Conv's accumulator plus its bias (along axis 1), as the Conv's output.
fn finish_conv(
    lw: &mut Lowering,
    id: NodeId,
    mut rep: IntRep,
    bias: Option<ndarray::ArrayD<f32>>,
    rank: usize,
) -> Result<Outcome> {
    lw.note(&rep, 32, true);
    if let Some(b) = bias {
        // [M] → [M, 1, …, 1] so it broadcasts along axis 1.
        let mut shape = vec![b.len()];
        shape.extend(std::iter::repeat_n(1, rank - 2));
        let b = b
            .into_shape_with_order(ndarray::IxDyn(&shape))
            .map_err(|e| Error::invalid(e.to_string()))?;
        match add_bias(lw, &rep, &b, rank)? {
            Some(r) => rep = r,
            None => {
                return Ok(Outcome::Kept(
                    "bias does not match the output channels, or its integers overflow int32"
                        .into(),
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
pub(super) fn add_bias(
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

/// A weight's plan as these lowerings read it.
#[derive(Clone)]
pub(super) struct PlannedWeight {
    magnitude: i64,
    terms: usize,
    residual_channels: Option<Vec<usize>>,
    ensemble_branch: Option<(u32, u32)>,
    activation_terms: u32,
}

impl PlannedWeight {
    /// The weight's residual expansion (one term: plain quantization), or its ensemble branch.
    fn expand(&self, w: &ndarray::ArrayD<f32>, axis: usize) -> Expansion {
        if let Some((branch, branches)) = self.ensemble_branch {
            return ensemble_branch(w, axis, self.magnitude, branch as usize, branches as usize);
        }
        expand_weight(
            w,
            axis,
            self.magnitude,
            self.terms,
            self.residual_channels.as_deref(),
        )
    }
}

/// The plan of a weight that `quantize` planned per channel along `axis` (the form these
/// lowerings emit); else why not.
fn planned_weight(
    lw: &Lowering,
    w: ValueId,
    axis: usize,
) -> std::result::Result<PlannedWeight, String> {
    match &lw.model().graph.value(w).weight_plan {
        None => Err("the weight has no plan (quantize plans constant weights)".into()),
        Some(WeightPlan {
            granularity: Granularity::PerChannel { axis: a },
            magnitude,
            terms,
            residual_channels,
            ensemble_branch,
            activation_terms,
        }) if *a == axis && *terms >= 1 => Ok(PlannedWeight {
            magnitude: *magnitude,
            terms: *terms as usize,
            residual_channels: residual_channels.clone(),
            ensemble_branch: *ensemble_branch,
            activation_terms: *activation_terms,
        }),
        Some(plan) => Err(format!(
            "the weight is planned as {:?}; only per-channel plans along axis {axis} are lowered",
            plan.granularity
        )),
    }
}

/// Multiplier of the high term of a two-term activation: `q = TERM_BASE·hi + lo`.
const TERM_BASE: i64 = 256;

/// An accumulator of activation × expanded weight.
struct Accumulated {
    value: ValueId,
    /// The activation's scale; channel `c` of the accumulator is at `activation_scale ·
    /// weight_scales[c]`.
    activation_scale: f64,
    weight_scales: Vec<f64>,
    range: (i64, i64),
}

/// The accumulator of activation `x` times the expanded weight `e` (output channels along
/// `out_axis` of the output, whose rank is `out_rank`).
///
/// The activation is one 8-bit operand, or for a plan of 9 to 16 bits with two terms, two:
/// stored with the offset that makes it non-negative, `u = q + offset` in [0, 2^16), `hi = u /
/// 256` (uint8, zero point offset/256) and `lo = u − 256·hi` (uint8, zero point 0). Both are u8
/// operands on the same weights, so the saturation rule holds for each product as for one term;
/// conv padding reads each term's zero point, a real 0. The product with one weight term is
/// `Σ_t base_t · matmul(a_t, q_k)`. Weight terms align as `P_1·r^{K−1} + R`, R the Horner sum
/// `(P_2·r + P_3)·r + …` of the residual terms on the kept channels, scattered back to every
/// channel (`Pad` with a zero channel, `Gather`) when some channels keep `q_1` alone. Fewer terms
/// (weight terms first, then the activation's) where an intermediate could leave int32.
/// `build` emits the integer matmul of one pair of terms from its inputs (A, B and zero
/// points); each weight term's constants are made after the first operand, as one-term graphs
/// always had them.
fn accumulate_terms(
    lw: &mut Lowering,
    x: ValueId,
    activation_terms: u32,
    e: &Expansion,
    out_axis: usize,
    out_rank: usize,
    mut build: impl FnMut(&mut Lowering, &[Option<ValueId>]) -> Result<ValueId>,
) -> Result<Accumulated> {
    let mut chosen = None;
    if activation_terms == 2 {
        if let Some((target, ranges)) = two_term_target(lw, x)? {
            if let Some(fit) = fitting(e, &ranges) {
                let (hi, lo) = split_terms(lw, x, &target)?;
                chosen = Some((vec![(TERM_BASE, hi), (1, lo)], fit, target.scale));
            }
        }
    }
    let (operands, (e, range), activation_scale) = match chosen {
        Some(c) => c,
        None => {
            let a = lw.operand(x, Form::OperandA)?;
            let span = [(1, (a.range.0 - a.zero_point, a.range.1 - a.zero_point))];
            let fit = fitting(e, &span).unwrap_or_else(|| {
                let first = e.truncated(1);
                let r = matmul_range(&first.terms[0], first.axis, span[0].1);
                (first, r)
            });
            let scale = a.scale.at(0);
            (vec![(1, a)], fit, scale)
        }
    };
    // Σ_t base_t · matmul(a_t, q); each term's zero point made once, after the first weight.
    let mut zero_points: Vec<Option<Option<ValueId>>> = vec![None; operands.len()];
    let mut product = |lw: &mut Lowering, q: &ndarray::ArrayD<i8>| -> Result<ValueId> {
        let (wq, w_zp) = weight_constant(lw, q)?;
        let mut products = Vec::with_capacity(operands.len());
        for ((base, a), zp) in operands.iter().zip(zero_points.iter_mut()) {
            let zp = match zp {
                Some(zp) => *zp,
                None => *zp.insert(zero_point_input(lw, a)?),
            };
            products.push((*base, build(lw, &operand_inputs(a.value, wq, zp, w_zp))?));
        }
        let mut sum: Option<ValueId> = None;
        for (base, p) in products {
            let p = match base {
                1 => p,
                b => {
                    let b = lw.constant("term_base", &Array::scalar(b as i32))?;
                    lw.op("Mul", "high_part", &[p, b], vec![])?
                }
            };
            sum = Some(match sum {
                None => p,
                Some(s) => lw.op("Add", "terms", &[s, p], vec![])?,
            });
        }
        Ok(sum.expect("an activation term"))
    };
    let mut acc = product(lw, &e.terms[0])?;
    if e.order() > 1 {
        let mut residual = product(lw, &e.compact_term(1))?;
        let kept = e.kept_channels().len();
        for k in 2..e.order() {
            let r = channel_constant(
                lw,
                "term_ratio",
                vec![e.ratio as i32; kept],
                out_axis,
                out_rank,
            )?;
            let scaled = lw.op("Mul", "residual_scaled", &[residual, r], vec![])?;
            let p = product(lw, &e.compact_term(k))?;
            residual = lw.op("Add", "residual_terms", &[scaled, p], vec![])?;
        }
        let lead = e.lead_multiplier() as i32;
        if !e.dense() {
            residual = scatter_channels(lw, residual, &e, out_axis, out_rank)?;
        }
        let per_channel: Vec<i32> = e.kept.iter().map(|&k| if k { lead } else { 1 }).collect();
        let multiplier = channel_constant(lw, "lead_multiplier", per_channel, out_axis, out_rank)?;
        let lead = lw.op("Mul", "first_term", &[acc, multiplier], vec![])?;
        acc = lw.op("Add", "residual_sum", &[lead, residual], vec![])?;
    }
    Ok(Accumulated {
        value: acc,
        activation_scale,
        weight_scales: e.channel_scales(),
        range,
    })
}

/// An int32 constant along the output channels (`out_axis` of rank `out_rank`). Multipliers are
/// per channel even where they are all equal: a one-element integer constant makes tract's
/// declutter (0.23, `propagate_roi`) mark a region of interest on the other operand of a Mul,
/// and where such values fan out, its unions grow exponentially (the model never loads).
fn channel_constant(
    lw: &mut Lowering,
    name: &str,
    values: Vec<i32>,
    out_axis: usize,
    out_rank: usize,
) -> Result<ValueId> {
    let mut shape = vec![1usize; out_rank];
    shape[out_axis] = values.len();
    lw.constant(name, &Array::from_vec(&shape, values)?)
}

/// The most terms of `e` whose accumulator stays in int32 with the activation `terms`, and
/// that accumulator's range; `None` when not even one weight term fits.
fn fitting(e: &Expansion, terms: &ActivationTerms) -> Option<(Expansion, (i64, i64))> {
    (1..=e.order()).rev().find_map(|k| {
        let t = e.truncated(k);
        accumulator_range(&t, terms).map(|r| (t, r))
    })
}

/// The residual sum over the kept channels, back at every channel: a zero channel is padded at
/// the end of `out_axis` and every channel without residual terms gathers it.
fn scatter_channels(
    lw: &mut Lowering,
    compact: ValueId,
    e: &Expansion,
    out_axis: usize,
    out_rank: usize,
) -> Result<ValueId> {
    let mut pads = vec![0i64; 2 * out_rank];
    pads[out_rank + out_axis] = 1;
    let pads = lw.constant("pads", &Array::from_vec(&[2 * out_rank], pads)?)?;
    let padded = lw.op("Pad", "residual_padded", &[compact, pads], vec![])?;
    let zero = e.kept_channels().len() as i64;
    let mut next = 0;
    let index: Vec<i64> = e
        .kept
        .iter()
        .map(|&k| {
            if k {
                next += 1;
                next - 1
            } else {
                zero
            }
        })
        .collect();
    let index = lw.constant("residual_channel", &Array::from_vec(&[index.len()], index)?)?;
    let axis = vec![crate::ir::attr::int("axis", out_axis as i64)];
    lw.op("Gather", "residual_scattered", &[padded, index], axis)
}

/// One activation term: its base and the interval of its integers after the zero point.
type TermSpan = (i64, (i64, i64));

/// The offset 16-bit target of a two-term activation and the intervals of its terms after
/// their zero points (`hi` at base 256, `lo`), or `None` when the plan has 8 bits or fewer (or
/// more than 16).
fn two_term_target(lw: &Lowering, x: ValueId) -> Result<Option<(Target, [TermSpan; 2])>> {
    let plan = lw.plan(x)?;
    let Scale::PerTensor(scale) = plan.scale else {
        return Ok(None);
    };
    if !(9..=16).contains(&plan.bits) {
        return Ok(None);
    }
    let levels = plan.levels();
    let offset = if plan.signed {
        1i64 << (plan.bits - 1)
    } else {
        0
    };
    let target = Target {
        scale,
        zero_point: offset,
        lo: offset - if plan.signed { levels } else { 0 },
        hi: offset + levels,
        dtype: DataType::Int32,
    };
    let zp_hi = offset / TERM_BASE;
    let hi = (target.lo / TERM_BASE - zp_hi, target.hi / TERM_BASE - zp_hi);
    Ok(Some((target, [(TERM_BASE, hi), (1, (0, TERM_BASE - 1))])))
}

/// `x` at `target` (offset, non-negative int32), split into its uint8 terms `(hi, lo)`.
fn split_terms(lw: &mut Lowering, x: ValueId, target: &Target) -> Result<(IntRep, IntRep)> {
    let u = lw.to_target(x, target, "wide")?;
    let base = lw.constant("term_base", &Array::scalar(TERM_BASE as i32))?;
    // u ≥ 0, so the truncating Div is a floor.
    let hi = lw.op("Div", "high", &[u.value, base], vec![])?;
    let high = lw.op("Mul", "high_value", &[hi, base], vec![])?;
    let lo = lw.op("Sub", "low", &[u.value, high], vec![])?;
    let to_u8 = || vec![crate::ir::attr::int("to", DataType::Uint8 as i32 as i64)];
    let hi = lw.op("Cast", "high_u8", &[hi], to_u8())?;
    let lo = lw.op("Cast", "low_u8", &[lo], to_u8())?;
    let hi = IntRep {
        value: hi,
        scale: Scale::PerTensor(target.scale * TERM_BASE as f64),
        zero_point: target.zero_point / TERM_BASE,
        dtype: DataType::Uint8,
        range: (u.range.0 / TERM_BASE, u.range.1 / TERM_BASE),
    };
    let lo = IntRep {
        value: lo,
        scale: Scale::PerTensor(target.scale),
        zero_point: 0,
        dtype: DataType::Uint8,
        range: (0, TERM_BASE - 1),
    };
    let origin = {
        let g = lw.rw.graph();
        g.value(x)
            .origin
            .clone()
            .unwrap_or_else(|| g.value_name(x).to_string())
    };
    // The bytes are views of `u`, not representations of the float value on their own (the
    // value map, `check --per-layer` and `--sensitivity` read `u`).
    for (rep, bits) in [(&u, 16), (&hi, 8), (&lo, 8)] {
        let facts = rep.facts(bits, rep.zero_point != 0);
        let origin = (bits == 16).then(|| origin.clone());
        lw.rw.annotate(rep.value, |v| {
            v.quant.get_or_insert(facts);
            if let Some(origin) = origin {
                v.origin.get_or_insert(origin);
            }
        });
    }
    Ok((hi, lo))
}
