//! `lower-softmax-to-shiftmax(out-bits, n)` and `lower-softmax-to-ibert-exp(out-bits)`:
//! `Softmax(DequantizeLinear(q))` on any axis becomes integer arithmetic.
//!
//! Rewrite (per row along the axis): the index scale S is the input's scale `s` times `2^k`;
//! for an int32 input `q`, `e = Div(Min(ReduceMax(q) + h − q, (L−1)·2^k + h), 2^k)` (the
//! rounded distance below the row maximum, three full-size ops; `h` the rounding's half),
//! otherwise `x = requant(q → S, ±2^29)`, `e = Min(ReduceMax(x) − x, L−1)`; then
//! `t = Gather(table, e)`, `Σ = Max(ReduceSum(t), table[0])`,
//! `out = Mul(t, (2^31−1) / Σ) / 2^(32−out_bits)` at scale `2^−(out_bits−1)`: I-ViT's
//! normalisation. The table holds the kernel's exponential of `−i·S` (`kernels::exp_table`):
//! ShiftExp (I-ViT §3.3, n = 15 by default) or I-BERT's i-exp polynomial (I-BERT §3.3); it
//! stands in for the exponential's arithmetic because after the max subtraction its input is a
//! bounded non-negative integer. Its last entry is 0: masked positions (an integer `Where`
//! writes −2^29) and values beyond the kernel's clamp give exactly 0.
//! Preconditions: `lower-linear-to-integer` ran (the input is dequantized from integers).
//! Error: |out − softmax| ≤ 2^−(out_bits−1) + the kernel's exp error (measured in the README).

use super::prelude::*;

use crate::Error;
use crate::ir::quant::Scale;
use crate::ir::{Array, DataType};
use crate::lower::engine::{IntRep, Lowering, Target};
use crate::lower::island::{
    self, dequantized, emit_output, int32_scalar, lower_each, reduce, spread_int32,
};
use crate::quant::kernels::{ExpKernel, exp_table};
use crate::quant::rounding::Rounding;

pub struct LowerSoftmax {
    kernel: ExpKernel,
    out_bits: u32,
}

/// Entries of the exponential table: the index scale is the kernel's clamp range over this.
const TABLE_ENTRIES: f64 = 2048.0;
/// Inputs are requantized into ±2^29 so that `max − x` stays in int32.
const INPUT_LIMIT: i64 = 1 << 29;

impl LowerSoftmax {
    pub fn shiftmax(options: &PassOptions) -> Result<LowerSoftmax> {
        let n = options.get::<u32>("n")?;
        if !(4..=24).contains(&n) {
            return Err(Error::Usage(format!(
                "lower-softmax-to-shiftmax: n={n} is outside 4..=24"
            )));
        }
        Self::with(ExpKernel::Shift { n }, options)
    }

    pub fn ibert(options: &PassOptions) -> Result<LowerSoftmax> {
        Self::with(ExpKernel::Polynomial, options)
    }

    /// The exponential itself in the table (`lower-softmax-to-exp-table`).
    pub fn exact(options: &PassOptions) -> Result<LowerSoftmax> {
        Self::with(ExpKernel::Exact, options)
    }

    fn with(kernel: ExpKernel, options: &PassOptions) -> Result<LowerSoftmax> {
        let out_bits = options.get::<u32>("out-bits")?;
        if out_bits != 8 && out_bits != 16 {
            return Err(Error::Usage(format!(
                "softmax lowering: out-bits={out_bits} must be 8 or 16"
            )));
        }
        Ok(LowerSoftmax { kernel, out_bits })
    }

    /// The table index straight from int32 input `x` at scale `S` when the index scale is
    /// `S·2^k`: `Div(Min(ReduceMax(x) + h − x, (L−1)·2^k + h), 2^k)` with `h` the rounding's
    /// half (`round((max − x)/2^k)` capped at the table's last entry, three full-size ops);
    /// `None` when the input is not such a per-tensor int32 value or the distance could
    /// overflow int32.
    fn index_by_shift(
        &self,
        lw: &mut Lowering,
        rep: &IntRep,
        s: f64,
        table: &[i32],
        axis: i64,
        float: ValueId,
    ) -> Result<Option<ValueId>> {
        let k = (s / rep.scale.at(0)).log2().round();
        if rep.dtype != DataType::Int32
            || rep.zero_point != 0
            || !rep.is_per_tensor()
            || !(0.0..=30.0).contains(&k)
        {
            return Ok(None);
        }
        let k = k as u32;
        let h: i64 = match (lw.rounding, k) {
            (_, 0) | (Rounding::Floor, _) => 0,
            (Rounding::HalfUp, k) => 1 << (k - 1),
            (Rounding::HalfEven, _) => return Ok(None),
        };
        let cap = ((table.len() as i64 - 1) << k) + h;
        let widest = rep.range.1 as i128 - rep.range.0 as i128 + h as i128;
        let top = rep.range.1 as i128 + h as i128;
        if widest > i32::MAX as i128 || top > i32::MAX as i128 || cap > i32::MAX as i64 {
            return Ok(None);
        }
        let divisor = match k {
            0 => None,
            k => match spread_int32(lw, "index_shift", 1 << k, float, None)? {
                Some(d) => Some(d),
                None => return Ok(None),
            },
        };
        let mut max = reduce(lw, "ReduceMax", rep.value, axis)?;
        if h > 0 {
            let half = int32_scalar(lw, "index_half", h)?;
            max = lw.op("Add", "max_half", &[max, half], vec![])?;
        }
        let below = lw.op("Sub", "below_max", &[max, rep.value], vec![])?;
        let cap = int32_scalar(lw, "index_cap", cap)?;
        let capped = lw.op(
            "Min",
            if divisor.is_some() { "capped" } else { "index" },
            &[below, cap],
            vec![],
        )?;
        let index = match divisor {
            Some(d) => lw.op("Div", "index", &[capped, d], vec![])?,
            None => capped,
        };
        Ok(Some(index))
    }

    /// The index scale: the input's scale times the power of two that spreads the kernel's
    /// useful input range over at most `TABLE_ENTRIES` entries. A power-of-two ratio makes
    /// the requantization to indices a shift (no multiply, never int64).
    fn index_scale(&self, input_scale: f64) -> f64 {
        let range = match self.kernel {
            // ShiftExp reaches its clamp 2^−n at x = −n / log2(e).
            ExpKernel::Shift { n } => n as f64 / std::f64::consts::LOG2_E,
            ExpKernel::Polynomial | ExpKernel::Exact => 30.0 * std::f64::consts::LN_2,
        };
        let finest = range / TABLE_ENTRIES;
        // A zero scale (a constant input) still ends: at the smallest normal f64.
        let mut s = input_scale.max(f64::MIN_POSITIVE);
        while s < finest {
            s *= 2.0;
        }
        s
    }
}

impl Pass for LowerSoftmax {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        lower_each(
            model,
            cx,
            |op| op.is("Softmax"),
            |lw, id, op| {
                let Some(x) = lw.model().graph.input(id, 0) else {
                    return Ok(Err("no input".into()));
                };
                let Some(rep) = dequantized(lw, x) else {
                    return Ok(Err("input is not dequantized from integers".into()));
                };
                let Some(rank) = lw.rank_of(x) else {
                    return Ok(Err("input rank unknown".into()));
                };
                let axis = op.attr_int("axis", -1)?;
                let axis = if axis < 0 { axis + rank as i64 } else { axis };
                let row = lw.dim_or_bound(x, rank - 1 - axis as usize);
                let output = ValueId { node: id, slot: 0 };
                if let Some(out) = self.lower(lw, x, output, &rep, axis, row)? {
                    emit_output(lw, output, &out, 32, false)?;
                }
                Ok(Ok(()))
            },
        )
    }
}

impl LowerSoftmax {
    fn lower(
        &self,
        lw: &mut Lowering,
        float: ValueId,
        output: ValueId,
        rep: &IntRep,
        axis: i64,
        row: i64,
    ) -> Result<Option<IntRep>> {
        // Per-channel inputs (logits of a Gemm, per output column) are requantized to one
        // index scale, from their coarsest channel's.
        let coarsest = match &rep.scale {
            Scale::PerTensor(s) => s.abs(),
            Scale::PerAxis { scales, .. } => scales.iter().fold(0.0, |m: f64, s| m.max(s.abs())),
        };
        let s = self.index_scale(coarsest);
        let table = exp_table(self.kernel, s, row);
        let index = match self.index_by_shift(lw, rep, s, &table, axis, float)? {
            Some(index) => index,
            None => {
                let x = lw.convert(
                    rep,
                    &Target {
                        scale: s,
                        zero_point: 0,
                        lo: -INPUT_LIMIT,
                        hi: INPUT_LIMIT,
                        dtype: DataType::Int32,
                    },
                    "index",
                )?;
                lw.note(&x, 32, true);
                let max = reduce(lw, "ReduceMax", x.value, axis)?;
                let below = lw.op("Sub", "below_max", &[max, x.value], vec![])?;
                let last = int32_scalar(lw, "table_end", table.len() as i64 - 1)?;
                lw.op("Min", "table_index", &[below, last], vec![])?
            }
        };
        let first = table[0] as i64;
        let table = lw.constant(
            "exp_table",
            &Array::from_vec(&[table.len()], table.clone())?,
        )?;
        let exp = lw.op(
            "Gather",
            "exp",
            &[table, index],
            vec![crate::ir::attr::int("axis", 0)],
        )?;
        let sum = reduce(lw, "ReduceSum", exp, axis)?;
        // The row maximum contributes table[0]: the sum is never smaller.
        let floor = int32_scalar(lw, "sum_floor", first)?;
        let sum = lw.op("Max", "sum", &[sum, floor], vec![])?;
        // When one reader quantizes the probabilities (the attention·V MatMul's operand), the
        // last division lands on the reader's scale directly, rounded half up, with no
        // requantization after: factor = 2^30/Σ (so that adding half a divisor fits int32),
        // out = (e·factor + D/2) / D with D = 2^30·s_reader. Otherwise I-ViT's
        // factor = (2^31−1)/Σ, out = e·factor / 2^(32−out_bits).
        let direct = island::sole_quantization(lw, output)
            .filter(|q| q.target.zero_point == 0 && q.target.lo == 0 && q.target.scale < 0.5);
        let numerator_value = match direct {
            Some(_) => 1i64 << 30,
            None => i32::MAX as i64,
        };
        // Constants spread along a known axis (tract: see `spread_int32`); the per-row
        // factor falls back to two lanes and a max when no other axis has a known size.
        let row_axis = Some(axis as usize);
        let factor = match spread_int32(lw, "numerator", numerator_value, float, row_axis)? {
            Some(numerator) => lw.op("Div", "factor", &[numerator, sum], vec![])?,
            None => {
                // Two lanes along the softmax axis (size 1 in the per-row sum).
                let rank = lw.rank_of(float).unwrap_or(axis as usize + 1);
                let mut dims = vec![2];
                dims.extend(std::iter::repeat_n(1, rank - axis as usize - 1));
                let lanes =
                    Array::from_vec(&[2], vec![numerator_value as i32; 2])?.into_shape(&dims)?;
                let numerator = lw.constant("numerator", &lanes)?;
                let lanes = lw.op("Div", "factor_lanes", &[numerator, sum], vec![])?;
                reduce(lw, "ReduceMax", lanes, axis)?
            }
        };
        let mut scaled = lw.op("Mul", "scaled", &[exp, factor], vec![])?;
        let (divisor, scale, hi) = match &direct {
            Some(q) => {
                let d = ((1u64 << 30) as f64 * q.target.scale).round().max(2.0) as i64;
                let half = lw.constant("half", &Array::scalar((d / 2) as i32))?;
                scaled = lw.op("Add", "rounded", &[scaled, half], vec![])?;
                (d, d as f64 / (1u64 << 30) as f64, q.target.hi)
            }
            None => {
                let shift = 1i64 << (32 - self.out_bits);
                let levels = 1i64 << (self.out_bits - 1);
                (shift, 1.0 / levels as f64, levels - 1)
            }
        };
        let divisor = spread_int32(lw, "shift", divisor, float, None)?.ok_or_else(|| {
            Error::unsupported(format!(
                "softmax on '{}': no axis of known size (pin shapes with --input-shape)",
                lw.model().graph.value_name(float)
            ))
        })?;
        let out = lw.op("Div", "probability", &[scaled, divisor], vec![])?;
        let rep = IntRep {
            value: out,
            scale: Scale::PerTensor(scale),
            zero_point: 0,
            dtype: DataType::Int32,
            range: (0, hi),
        };
        match direct {
            None => Ok(Some(rep)),
            Some(q) => {
                // Probabilities above the reader's clip (never above 2^31/divisor) are clipped.
                let top = lw.constant("top", &Array::scalar(hi as i32))?;
                let clipped = lw.op("Min", "clipped", &[out, top], vec![])?;
                let to = crate::ir::attr::int("to", q.target.dtype as i32 as i64);
                let cast = lw.op("Cast", "quantized", &[clipped], vec![to])?;
                let rep = IntRep {
                    value: cast,
                    dtype: q.target.dtype,
                    ..rep
                };
                lw.note(&rep, 8, false);
                island::replace_quantization(lw, &q, cast)?;
                lw.rw.erase_if_dead(output.node);
                Ok(None)
            }
        }
    }
}
