//! `lower-layer-norm-to-int`: `LayerNormalization(DequantizeLinear(q), γ, β)` over the last
//! axis becomes I-LayerNorm (I-ViT §3.5) in int32.
//!
//! Rewrite (per row of D values, constants from `kernels::LayerNormPlan`):
//! `μ = ReduceSum(x) / D` (truncated), `y = x − μ`, `a = |y| / 2^k` (k keeps `D·a²` in int32),
//! `v = Max(ReduceSum(a·a) + ε_int, 1)`, `r = isqrt(v)` by unrolled Newton steps
//! `r ← Max((r + v/r)/2, 1)` from a power of two above √v (enough steps to converge from there),
//! `ŷ = Clip((y·2^p) / r, ±2^(p+k+1))`. The output is `ŷ` at the per-channel scale
//! `√D/2^(p+k) · γ_c` plus an int32 bias `β_c / scale_c`: γ and β fold into the next
//! requantization. ε (BERT's 1e-12 included) is added in the variance's integer units.
//! Preconditions: `lower-linear-to-integer` ran; the row length is known.
//! Error: the variance drops the k low bits of y, and the root is within one unit (README).

use super::prelude::*;

use crate::ir::quant::Scale;
use crate::ir::{Array, DataType, Op};
use crate::lower::engine::{IntRep, Lowering, Target};
use crate::lower::island::{
    Lowered, dequantized, emit_output, int32_scalar, lower_each, plan_of, reduce,
};
use crate::quant::kernels::LayerNormPlan;

pub struct LowerLayerNorm;

impl Pass for LowerLayerNorm {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        lower_each(model, cx, |op| op.is("LayerNormalization"), lower)
    }
}

fn constant_vector(lw: &Lowering, v: Option<ValueId>) -> Option<Vec<f64>> {
    Some(lw.model().graph.constant(v?)?.decode().ok()?.to_f64_vec())
}

/// Lowers one LayerNormalization, or says why not.
fn lower(lw: &mut Lowering, id: NodeId, op: &Op) -> Result<Lowered> {
    let g = &lw.model().graph;
    let Some(x) = g.input(id, 0) else {
        return Ok(Err("no input".into()));
    };
    // The output has the input's shape, and was analysed before this pass ran (the input may
    // be the new dequantization of a LayerNorm lowered just before).
    let y = ValueId { node: id, slot: 0 };
    let Some(rank) = lw.rank_of(x).or_else(|| lw.rank_of(y)) else {
        return Ok(Err("input rank unknown".into()));
    };
    let axis = op.attr_int("axis", -1)?;
    if axis != -1 && axis != rank as i64 - 1 {
        return Ok(Err(format!("normalises from axis {axis}, not the last")));
    }
    let d = match lw
        .facts
        .get(x)
        .or_else(|| lw.facts.get(y))
        .and_then(|f| f.shape.as_ref())
        .and_then(|s| s.last())
        .and_then(|d| d.known())
    {
        Some(d) => d,
        None => return Ok(Err("the row length is not known".into())),
    };
    let Some(gamma) = constant_vector(lw, g.input(id, 1)) else {
        return Ok(Err("γ is not a constant".into()));
    };
    let beta = match g.input(id, 2) {
        Some(b) => match constant_vector(lw, Some(b)) {
            Some(b) => b,
            None => return Ok(Err("β is not a constant".into())),
        },
        None => vec![0.0; d as usize],
    };
    let expand = |v: Vec<f64>| {
        if v.len() == 1 {
            vec![v[0]; d as usize]
        } else {
            v
        }
    };
    let (gamma, beta) = (expand(gamma), expand(beta));
    if gamma.len() != d as usize || beta.len() != d as usize {
        return Ok(Err("γ or β does not have the row's length".into()));
    }
    let epsilon = op.attr_float("epsilon", 1e-5)? as f64;
    let Some(mut rep) = dequantized(lw, x) else {
        return Ok(Err("input is not dequantized from integers".into()));
    };
    lw.rw.set_anchor(id);
    if !rep.is_plain_int32() {
        // Per-channel or 8-bit input: to int32 at its planned scale first.
        let Some(plan) = plan_of(lw, x) else {
            return Ok(Err("input is per channel and has no plan".into()));
        };
        let Scale::PerTensor(s) = plan.scale else {
            return Ok(Err("input plan is per channel".into()));
        };
        let max = (1i64 << (plan.bits.max(8) - 1)) - 1;
        rep = lw.convert(
            &rep,
            &Target {
                scale: s,
                zero_point: 0,
                lo: -max,
                hi: max,
                dtype: DataType::Int32,
            },
            "to_int32",
        )?;
        lw.note(&rep, plan.bits.max(8), true);
    }
    let s = rep.scale.at(0);
    let x_max = rep.magnitude() as i64;
    let plan = LayerNormPlan::new(d, x_max, s, epsilon);
    // The plan rests on |x| ≤ x_max, proven channel by channel; the range check hulls
    // per-channel requantizations and can see a wider input. A Clip to the proven bound,
    // which never binds, shows it the plan's.
    let lo = int32_scalar(lw, "input_lo", -x_max)?;
    let hi = int32_scalar(lw, "input_hi", x_max)?;
    let q = lw.op("Clip", "input_bounded", &[rep.value, lo, hi], vec![])?;

    // Constants along the row (tract: no one-element Mul/Div operands, see spread_int32).
    let along_row = |lw: &mut Lowering, suffix: &str, v: i64| -> Result<ValueId> {
        let c = Array::from_vec(&[d as usize], vec![v as i32; d as usize])?;
        lw.constant(suffix, &c)
    };
    // y = x − trunc(Σx / D). The per-row division runs on two lanes (a one-element divisor
    // would start tract's region-of-interest walk, see `pair` below) and keeps their max.
    let pair = |lw: &mut Lowering, suffix: &str, v: i64| {
        lw.constant(suffix, &Array::from_vec(&[2], vec![v as i32; 2])?)
    };
    let sum = reduce(lw, "ReduceSum", q, -1)?;
    let width = pair(lw, "row_length", d)?;
    let lanes = lw.op("Div", "mean_lanes", &[sum, width], vec![])?;
    let mean = reduce(lw, "ReduceMax", lanes, -1)?;
    let centred = lw.op("Sub", "centred", &[q, mean], vec![])?;
    let mut small = centred;
    if plan.square_shift > 0 {
        // Rounded, not floored: a floor would bias the variance low.
        let abs = lw.op("Abs", "magnitude", &[centred], vec![])?;
        let half = along_row(lw, "square_half", 1 << (plan.square_shift - 1))?;
        let abs = lw.op("Add", "magnitude_rounded", &[abs, half], vec![])?;
        let shift = along_row(lw, "square_shift", 1 << plan.square_shift)?;
        small = lw.op("Div", "narrowed", &[abs, shift], vec![])?;
    }
    let square = lw.op("Mul", "square", &[small, small], vec![])?;
    let mut var = reduce(lw, "ReduceSum", square, -1)?;
    if plan.epsilon > 0 {
        let eps = int32_scalar(lw, "epsilon", plan.epsilon)?;
        var = lw.op("Add", "variance_eps", &[var, eps], vec![])?;
    }
    let one = int32_scalar(lw, "one", 1)?;
    var = lw.op("Max", "variance", &[var, one], vec![])?;
    // Newton's integer square root, unrolled; the first step starts from a constant. The
    // steps run on two identical lanes: tract 0.23 propagates a "region of interest" back
    // from every one-element integer constant, and through the unrolled steps (each reads the
    // root twice) that walk doubles per step. Two-element constants introduce none.
    let two = pair(lw, "two", 2)?;
    let one_pair = pair(lw, "one_pair", 1)?;
    // The start: the smaller of two table bounds of √v (coarse and fine buckets of v).
    let start_table = |lw: &mut Lowering, suffix: &str, table: &[i32], shift: u32| {
        let divisor = pair(lw, &format!("{suffix}_bucket_width"), 1 << shift)?;
        let bucket = lw.op("Div", &format!("{suffix}_bucket"), &[var, divisor], vec![])?;
        let last = pair(lw, &format!("{suffix}_last"), table.len() as i64 - 1)?;
        let bucket = lw.op("Min", &format!("{suffix}_index"), &[bucket, last], vec![])?;
        let t = lw.constant(suffix, &Array::from_vec(&[table.len()], table.to_vec())?)?;
        lw.op(
            "Gather",
            &format!("{suffix}_bound"),
            &[t, bucket],
            vec![crate::ir::attr::int("axis", 0)],
        )
    };
    let coarse = start_table(lw, "sqrt_coarse", &plan.coarse, plan.coarse_shift)?;
    let fine = start_table(lw, "sqrt_fine", &plan.fine, plan.fine_shift)?;
    let mut root = lw.op("Min", "root_start", &[coarse, fine], vec![])?;
    for _ in 0..plan.iterations {
        let quotient = lw.op("Div", "newton_quotient", &[var, root], vec![])?;
        let total = lw.op("Add", "newton_sum", &[root, quotient], vec![])?;
        let half = lw.op("Div", "newton_half", &[total, two], vec![])?;
        root = lw.op("Max", "newton_root", &[half, one_pair], vec![])?;
    }
    let root = reduce(lw, "ReduceMax", root, -1)?;
    let mut numerator = centred;
    if plan.numerator_shift > 0 {
        let scale_up = along_row(lw, "numerator_shift", 1 << plan.numerator_shift)?;
        numerator = lw.op("Mul", "numerator", &[centred, scale_up], vec![])?;
    }
    let normalized = lw.op("Div", "normalized", &[numerator, root], vec![])?;
    let lo = int32_scalar(lw, "bound_lo", -plan.bound)?;
    let hi = int32_scalar(lw, "bound_hi", plan.bound)?;
    let mut y = lw.op("Clip", "bounded", &[normalized, lo, hi], vec![])?;

    // γ and β: per-channel scale and an int32 bias at that scale.
    let sigma = plan.output_scale();
    let tiny = gamma.iter().fold(0f64, |m, g| m.max(g.abs())) * 1e-6;
    let scales: Vec<f64> = gamma
        .iter()
        .map(|&g| {
            let g = if g.abs() < tiny.max(f64::MIN_POSITIVE) {
                tiny.max(f64::MIN_POSITIVE)
                    .copysign(if g < 0.0 { -1.0 } else { 1.0 })
            } else {
                g
            };
            sigma * g
        })
        .collect();
    let limit = (1i64 << 29) as f64;
    let bias: Vec<i32> = beta
        .iter()
        .zip(&scales)
        .map(|(b, s)| (b / s).round().clamp(-limit, limit) as i32)
        .collect();
    let bias_max = bias.iter().map(|b| (*b as i64).abs()).max().unwrap_or(0);
    if bias_max > 0 {
        let b = lw.constant("beta_i32", &Array::from_vec(&[d as usize], bias)?)?;
        y = lw.op("Add", "shifted", &[y, b], vec![])?;
    }
    let out = IntRep {
        value: y,
        scale: Scale::PerAxis {
            axis: rank - 1,
            scales,
        },
        zero_point: 0,
        dtype: DataType::Int32,
        range: (-plan.bound - bias_max, plan.bound + bias_max),
    };
    emit_output(lw, ValueId { node: id, slot: 0 }, &out, 32, true)?;
    Ok(Ok(()))
}
