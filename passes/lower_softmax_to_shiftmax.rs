//! `lower-softmax-to-shiftmax(out-bits, n)` and `lower-softmax-to-ibert-exp(out-bits)`:
//! `Softmax(DequantizeLinear(q))` on any axis becomes integer arithmetic.
//!
//! Rewrite (per row along the axis): `x = requant(q → index scale S, ±2^29)`,
//! `e = Min(ReduceMax(x) − x, L−1)`, `t = Gather(table, e)`, `Σ = Max(ReduceSum(t), table[0])`,
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
use crate::quant::island::{
    dequantized, emit_output, facts_of, int32_scalar, reduce, spread_int32,
};
use crate::quant::kernels::{ExpKernel, exp_table};
use crate::quant::lower::{IntRep, Lowering, Target};

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
        let n = options.get("n", 15u32)?;
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

    fn with(kernel: ExpKernel, options: &PassOptions) -> Result<LowerSoftmax> {
        let out_bits = options.get("out-bits", 8u32)?;
        if out_bits != 8 && out_bits != 16 {
            return Err(Error::Usage(format!(
                "softmax lowering: out-bits={out_bits} must be 8 or 16"
            )));
        }
        Ok(LowerSoftmax { kernel, out_bits })
    }

    /// The index scale: the kernel's useful input range spread over the table.
    fn index_scale(&self) -> f64 {
        let range = match self.kernel {
            // ShiftExp reaches its clamp 2^−n at x = −n / log2(e).
            ExpKernel::Shift { n } => n as f64 / std::f64::consts::LOG2_E,
            ExpKernel::Polynomial => 30.0 * std::f64::consts::LN_2,
        };
        (range / TABLE_ENTRIES) as f32 as f64
    }
}

impl Pass for LowerSoftmax {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let facts = facts_of(model, cx)?;
        let order = model.graph.topological_order()?;
        let mut lw = Lowering::new(model, facts, cx.options.symbolic_dim_bound);
        for id in order {
            let Some(op) = lw.model().graph.op(id).cloned() else {
                continue;
            };
            if !op.is("Softmax") || !op.domain().is_empty() {
                continue;
            }
            cx.report.matched += 1;
            let who = lw.model().graph.describe(id);
            let Some(x) = lw.model().graph.input(id, 0) else {
                continue;
            };
            let Some(rep) = dequantized(&lw, x) else {
                cx.report.skipped += 1;
                cx.remark(who, "input is not dequantized from integers");
                continue;
            };
            if !rep.is_per_tensor() {
                cx.report.skipped += 1;
                cx.remark(who, "input has per-channel scales");
                continue;
            }
            let Some(rank) = lw.rank_of(x) else {
                cx.report.skipped += 1;
                cx.remark(who, "input rank unknown");
                continue;
            };
            let axis = op.attr_int("axis", -1)?;
            let axis = if axis < 0 { axis + rank as i64 } else { axis };
            let row = lw.dim_or_bound(x, rank - 1 - axis as usize);
            lw.rw.set_anchor(id);
            let out = self.lower(&mut lw, x, &rep, axis, row)?;
            emit_output(&mut lw, ValueId { node: id, slot: 0 }, &out, 32, false)?;
            cx.report.rewritten += 1;
        }
        lw.finish()?;
        Ok(())
    }
}

impl LowerSoftmax {
    fn lower(
        &self,
        lw: &mut Lowering,
        float: ValueId,
        rep: &IntRep,
        axis: i64,
        row: i64,
    ) -> Result<IntRep> {
        let s = self.index_scale();
        let table = exp_table(self.kernel, s, row);
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
        let index = lw.op("Min", "table_index", &[below, last], vec![])?;
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
        // Constants spread along a known axis (tract: see `spread_int32`); the per-row
        // factor falls back to two lanes and a max when no other axis has a known size.
        let row_axis = Some(axis as usize);
        let factor = match spread_int32(lw, "numerator", i32::MAX as i64, float, row_axis)? {
            Some(numerator) => lw.op("Div", "factor", &[numerator, sum], vec![])?,
            None => {
                // Two lanes along the softmax axis (size 1 in the per-row sum).
                let rank = lw.rank_of(float).unwrap_or(axis as usize + 1);
                let mut dims = vec![2];
                dims.extend(std::iter::repeat_n(1, rank - axis as usize - 1));
                let lanes = Array::from_vec(&[2], vec![i32::MAX; 2])?.into_shape(&dims)?;
                let numerator = lw.constant("numerator", &lanes)?;
                let lanes = lw.op("Div", "factor_lanes", &[numerator, sum], vec![])?;
                reduce(lw, "ReduceMax", lanes, axis)?
            }
        };
        let scaled = lw.op("Mul", "scaled", &[exp, factor], vec![])?;
        let shift = 1i64 << (32 - self.out_bits);
        let divisor = spread_int32(lw, "shift", shift, float, None)?.ok_or_else(|| {
            Error::unsupported(format!(
                "softmax on '{}': no axis of known size (pin shapes with --input-shape)",
                lw.model().graph.value_name(float)
            ))
        })?;
        let out = lw.op("Div", "probability", &[scaled, divisor], vec![])?;
        Ok(IntRep {
            value: out,
            scale: Scale::PerTensor(1.0 / (1u64 << (self.out_bits - 1)) as f64),
            zero_point: 0,
            dtype: DataType::Int32,
            range: (0, (1i64 << (self.out_bits - 1)) - 1),
        })
    }
}
