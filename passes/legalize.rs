//! `legalize(target=integer|integer-opset28)`: expands intone's internal ops into standard ONNX.
//!
//! `intone.Requant` `y = clamp(round((x·m + b) / 2^c) + zp, lo, hi)` becomes, for `integer`:
//!   int32 when `|x·m + b + 2^(c−1)| < 2^30` is proven:
//!     `Cast(Clip(Sub(Div(Add(Mul(x, m), b + h + 2^30), 2^c), 2^(30−c) − zp), lo, hi))`
//!   (the Add makes the dividend non-negative, so truncating `Div` floors exactly), else int64:
//!     the same after `CastLike(x, int64)`, with 2^62 in place of 2^30;
//! and for `integer-opset28`: `Mul`, `Add(b + h)`, `BitShift(RIGHT)` (arithmetic on signed
//! types from opset 28), `Add(zp)`, `Clip`, `Cast`. `h` is 2^(c−1) for half-up rounding, 0
//! for floor. Per-channel constants broadcast along the requant axis. Divisors are positive
//! powers of two, never −1; no `Cast(to=INT64)` (tract turns it into a symbolic dimension).
//! Preconditions: input ranges are known (every integer value carries them); opset ≥ 15.
//! Exact: bit-identical to `quant::RequantParams::apply` (reference-kernel tests).
//! Afterwards every integer op's range is checked against its type (`quant::range`).

use super::prelude::*;

use crate::ir::quant::QuantFacts;
use std::collections::HashMap;

use crate::ir::{Array, DataType, attr};
use crate::quant::requant::{DOMAIN, RequantParams};
use crate::quant::{Rounding, range};
use crate::{Error, ops};

#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Target {
    Integer,
    IntegerOpset28,
}

pub struct Legalize {
    target: Target,
}

impl Legalize {
    pub fn new(options: &PassOptions) -> Result<Legalize> {
        let target = match options.raw("target").unwrap_or("integer") {
            "integer" => Target::Integer,
            "integer-opset28" => Target::IntegerOpset28,
            other => {
                return Err(Error::Usage(format!(
                    "legalize: unknown target '{other}' (integer, integer-opset28)"
                )));
            }
        };
        Ok(Legalize { target })
    }
}

impl Pass for Legalize {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let opset = model.opset("").unwrap_or(0);
        if opset < 15 {
            return Err(Error::Usage(format!(
                "legalize: the model imports opset {opset}; integer targets need 15 or more (run upgrade-opset first)"
            )));
        }
        let facts = ops::analyze(model, &cx.options.input_shapes, 1 << 16)?;
        // Element type and rank of values, including those expansions create.
        let mut kinds: HashMap<ValueId, (Option<DataType>, Option<usize>)> = facts
            .values
            .iter()
            .map(|(v, f)| (*v, (f.dtype, f.rank())))
            .collect();
        for id in model.graph.topological_order()? {
            let op = model.graph.op(id).expect("op").clone();
            if op.domain() != DOMAIN {
                continue;
            }
            if op.op_type() != "Requant" {
                return Err(Error::unsupported(format!(
                    "legalize: no expansion for intone.{}",
                    op.op_type()
                )));
            }
            cx.report.matched += 1;
            let x = model
                .graph
                .input(id, 0)
                .ok_or_else(|| Error::invalid(format!("{} has no input", op.describe())))?;
            let (dtype, rank) = kinds.get(&x).copied().unwrap_or((None, None));
            // An axis of known size > 1 (the last such one) to spread scalar constants along.
            let spread_axis = facts.get(x).and_then(|f| f.shape.as_ref()).and_then(|s| {
                (0..s.len()).rev().find_map(|i| {
                    s[i].known()
                        .filter(|&d| d > 1)
                        .map(|d| (i, d as usize, s.len()))
                })
            });
            let dtype = dtype.ok_or_else(|| Error::Pass {
                pass: "legalize".into(),
                message: format!(
                    "the element type of '{}' is unknown",
                    model.graph.value_name(x)
                ),
            })?;
            let (y, to) = expand_requant(model, id, x, dtype, rank, spread_axis, self.target)?;
            kinds.insert(y, (Some(to), rank));
            cx.report.rewritten += 1;
        }
        if self.target == Target::IntegerOpset28 {
            model.require_opset("", 28);
            let ir = model.header.ir_version.unwrap_or(0).max(10);
            model.header.ir_version = Some(ir);
        }
        let checked = range::verify(
            model,
            cx.options.symbolic_dim_bound,
            cx.options.matmul_operands,
        )?;
        cx.remark(
            "<ranges>",
            format!("{checked} integer ops checked: no overflow possible"),
        );
        Ok(())
    }
}

/// The input range of an integer value, from its quantization facts.
fn input_range(model: &Model, x: ValueId) -> Result<(i64, i64)> {
    model
        .graph
        .value(x)
        .quant
        .as_ref()
        .and_then(|q: &QuantFacts| q.range)
        .ok_or_else(|| Error::Pass {
            pass: "legalize".into(),
            message: format!(
                "no proven range for '{}', the input of a requantization",
                model.graph.value_name(x)
            ),
        })
}

/// A per-channel constant shaped to broadcast along `axis` of a rank-`rank` tensor.
fn channel_constant<T: crate::ir::Element>(
    values: Vec<T>,
    axis: usize,
    rank: Option<usize>,
) -> Result<Array> {
    if values.len() == 1 {
        return Ok(Array::scalar(values[0]));
    }
    let rank = rank.ok_or_else(|| {
        Error::unsupported("a per-channel requantization of a value of unknown rank")
    })?;
    let mut shape = vec![values.len()];
    shape.extend(std::iter::repeat_n(1, rank.saturating_sub(axis + 1)));
    Array::from_vec(&shape, values)
}

/// A 1-d constant of the working integer type.
fn typed_vector(values: Vec<i128>, work: DataType) -> Result<Array> {
    let n = values.len();
    match work {
        DataType::Int64 => Array::from_vec(&[n], values.into_iter().map(|v| v as i64).collect()),
        _ => Array::from_vec(&[n], values.into_iter().map(|v| v as i32).collect()),
    }
}

/// Expands one Requant; returns the value that replaced its output and that value's type.
fn expand_requant(
    model: &mut Model,
    id: NodeId,
    x: ValueId,
    dtype: DataType,
    rank: Option<usize>,
    spread_axis: Option<(usize, usize, usize)>,
    target: Target,
) -> Result<(ValueId, DataType)> {
    let op = model.graph.op(id).expect("op").clone();
    let p = RequantParams::from_op(&op)?;
    let (lo, hi) = input_range(model, x)?;
    let channels = p.channels();
    let h = |c: usize| -> Result<i128> {
        let (_, _, shift) = p.channel(c);
        Ok(match (p.rounding, shift) {
            (_, 0) | (Rounding::Floor, _) => 0,
            (Rounding::HalfUp, s) => 1i128 << (s - 1),
            (Rounding::HalfEven, _) => {
                return Err(Error::unsupported(format!(
                    "{}: half-even requantization has no integer recipe",
                    op.describe()
                )));
            }
        })
    };
    // Largest |x·m + b + h| over channels and input ends.
    let mut extent = 0i128;
    for c in 0..channels {
        let (m, b, _) = p.channel(c);
        for v in [lo, hi] {
            extent = extent.max((v as i128 * m as i128 + b as i128 + h(c)?).abs());
        }
    }
    let shifts: Vec<u32> = (0..channels).map(|c| p.channel(c).2).collect();
    let any_shift = shifts.iter().any(|&s| s > 0);
    let wide = extent >= 1 << 30 || dtype == DataType::Int64;
    if extent >= 1 << 62 {
        return Err(Error::Pass {
            pass: "legalize".into(),
            message: format!("{}: x·m + b reaches {extent}, beyond int64", op.describe()),
        });
    }
    let mut rw = Rewriter::new(model, id);
    let mut t = x;
    if dtype != DataType::Int32 && dtype != DataType::Int64 {
        t = rw.op(
            "Cast",
            "to_i32",
            &[t],
            vec![attr::int("to", DataType::Int32 as i32 as i64)],
        )?;
    }
    let (work, bias_base): (DataType, i128) = if wide {
        (DataType::Int64, 1 << 62)
    } else {
        (DataType::Int32, 1 << 30)
    };
    if wide && dtype != DataType::Int64 {
        let like = rw.constant("int64", &Array::scalar(0i64))?;
        t = rw.op("CastLike", "to_i64", &[t, like], vec![])?;
    }
    let typed = |values: Vec<i128>| -> Result<Array> {
        match work {
            DataType::Int64 => {
                channel_constant(values.into_iter().map(|v| v as i64).collect(), p.axis, rank)
            }
            _ => channel_constant(values.into_iter().map(|v| v as i32).collect(), p.axis, rank),
        }
    };
    // tract 0.23 reads an integer scalar operand of Mul or Div as a mask ("region of
    // interest") and its optimiser then blows up; the same value repeated along an axis of
    // known size avoids that.
    let spread = |values: Vec<i128>| -> Result<Array> {
        match (values.len(), spread_axis) {
            (1, Some((axis, n, rank))) => {
                let v = typed_vector(vec![values[0]; n], work)?;
                let mut shape = vec![n];
                shape.extend(std::iter::repeat_n(1, rank - axis - 1));
                v.into_shape(&shape)
            }
            (1, None) => Err(Error::unsupported(format!(
                "{}: the requantized value has no dimension of known size, and tract's optimiser \
                 cannot take a scalar integer multiplier (pin the shapes with --input-shape)",
                op.describe()
            ))),
            _ => typed(values),
        }
    };
    let ms: Vec<i128> = (0..channels).map(|c| p.channel(c).0 as i128).collect();
    if ms.iter().any(|&m| m != 1) {
        let m = rw.constant("multiplier", &spread(ms)?)?;
        t = rw.op("Mul", "multiply", &[t, m], vec![])?;
    }
    let offsets = |extra: &dyn Fn(usize) -> Result<i128>| -> Result<Vec<i128>> {
        (0..channels)
            .map(|c| Ok(p.channel(c).1 as i128 + h(c)? + extra(c)?))
            .collect()
    };
    match (target, any_shift) {
        (_, false) => {
            // No shift: y = x·m + b + zp.
            let b = offsets(&|_| Ok(p.zero_point as i128))?;
            if b.iter().any(|&v| v != 0) {
                let c = rw.constant("offset", &typed(b)?)?;
                t = rw.op("Add", "offset", &[t, c], vec![])?;
            }
        }
        (Target::Integer, true) => {
            let b = offsets(&|_| Ok(bias_base))?;
            let c = rw.constant("offset", &typed(b)?)?;
            t = rw.op("Add", "offset", &[t, c], vec![])?;
            let divisors: Vec<i128> = shifts.iter().map(|&s| 1i128 << s).collect();
            let d = rw.constant("divisor", &spread(divisors)?)?;
            t = rw.op("Div", "shift", &[t, d], vec![])?;
            let back: Vec<i128> = shifts
                .iter()
                .map(|&s| (bias_base >> s) - p.zero_point as i128)
                .collect();
            let c = rw.constant("unbias", &typed(back)?)?;
            t = rw.op("Sub", "unbias", &[t, c], vec![])?;
        }
        (Target::IntegerOpset28, true) => {
            let b = offsets(&|_| Ok(0))?;
            if b.iter().any(|&v| v != 0) {
                let c = rw.constant("offset", &typed(b)?)?;
                t = rw.op("Add", "offset", &[t, c], vec![])?;
            }
            let amounts = rw.constant(
                "shift",
                &typed(shifts.iter().map(|&s| s as i128).collect())?,
            )?;
            t = rw.op(
                "BitShift",
                "shift",
                &[t, amounts],
                vec![attr::string("direction", "RIGHT")],
            )?;
            if p.zero_point != 0 {
                let zp = rw.constant("zero_point", &typed(vec![p.zero_point as i128])?)?;
                t = rw.op("Add", "zero_point", &[t, zp], vec![])?;
            }
        }
    }
    let (clip_lo, clip_hi) = (typed(vec![p.lo as i128])?, typed(vec![p.hi as i128])?);
    let clip_lo = rw.constant("lo", &clip_lo)?;
    let clip_hi = rw.constant("hi", &clip_hi)?;
    t = rw.op("Clip", "clip", &[t, clip_lo, clip_hi], vec![])?;
    if p.to != work {
        t = rw.op(
            "Cast",
            "narrow",
            &[t],
            vec![attr::int("to", p.to as i32 as i64)],
        )?;
    }
    let y = ValueId { node: id, slot: 0 };
    let name = rw.graph().value_name(y).to_string();
    rw.replace(y, t)?;
    rw.finish()?;
    // The expansion's result keeps the requantization's name.
    if model.graph.find_value(&name).is_none() {
        model.graph.rename_value(t, &name)?;
    }
    Ok((t, p.to))
}
