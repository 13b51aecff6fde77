//! `intone.Requant`: `y = clamp(round((x · m + b) / 2^c) + zp, lo, hi)`, the requantization every
//! lowering emits. Its arithmetic is [`RequantParams::apply`]; this file is the op: attributes,
//! inference, evaluation and the standard-ONNX recipes legalization expands it into.

use super::DOMAIN;
use crate::ir::{Array, DataType, Element, Op, attr};
use crate::quant::{RequantParams, Rounding};
use crate::schema::AttributeProto;
use crate::{Error, Result};

/// The op carrying `p` (inputs are wired by the caller).
pub fn to_op(p: &RequantParams, name: &str) -> Op {
    let mut op = Op::new("Requant", name).with_domain(DOMAIN);
    op.proto.attribute = vec![
        attr::ints("multiplier", &p.multiplier),
        attr::ints("offset", &p.offset),
        attr::ints(
            "shift",
            &p.shift.iter().map(|&s| s as i64).collect::<Vec<_>>(),
        ),
        attr::string("rounding", p.rounding.name()),
        attr::int("zero_point", p.zero_point),
        attr::int("lo", p.lo),
        attr::int("hi", p.hi),
        attr::int("axis", p.axis as i64),
        attr::int("to", p.to as i32 as i64),
    ];
    op
}

/// Reads the parameters of an `intone.Requant` op.
pub fn from_op(op: &Op) -> Result<RequantParams> {
    if !super::is(op, "Requant") {
        return Err(Error::invalid(format!(
            "{} is not an intone.Requant",
            op.describe()
        )));
    }
    let ints = |name: &str| -> Result<Vec<i64>> {
        op.attr_ints(name)?
            .ok_or_else(|| Error::invalid(format!("{}: no '{name}'", op.describe())))
    };
    let shift = ints("shift")?
        .into_iter()
        .map(|s| u32::try_from(s).ok().filter(|&s| s <= 62))
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| Error::invalid(format!("{}: shift out of range", op.describe())))?;
    let rounding = op
        .attr_string("rounding")?
        .unwrap_or_else(|| "half-up".into())
        .parse()
        .map_err(|e: String| Error::invalid(format!("{}: {e}", op.describe())))?;
    Ok(RequantParams {
        multiplier: ints("multiplier")?,
        offset: ints("offset")?,
        shift,
        rounding,
        zero_point: op.attr_int("zero_point", 0)?,
        lo: op.attr_int("lo", i32::MIN as i64)?,
        hi: op.attr_int("hi", i32::MAX as i64)?,
        axis: op.attr_int("axis", 0)? as usize,
        to: crate::ir::dtype::data_type(
            op.attr_int("to", DataType::Int32 as i32 as i64)? as i32,
            &op.describe(),
        )?,
    })
}

/// Element type of the output (`to`); the shape is the input's.
pub fn output_type(op: &Op) -> Option<DataType> {
    op.attr_int("to", DataType::Int32 as i32 as i64)
        .ok()
        .and_then(|t| crate::ir::dtype::data_type(t as i32, "").ok())
}

/// Evaluates the op on a constant integer input, exactly as the reference kernel.
pub fn eval(op: &Op, x: &Array) -> Result<Array> {
    let p = from_op(op)?;
    let y = p.apply_all(&x.to_i64_vec()?, x.shape());
    Array::from_vec(x.shape(), y)?.cast(p.to)
}

/// How legalization writes the shift.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Recipe {
    /// `Div` by 2^c of a dividend biased to be non-negative (any opset ≥ 15).
    Divide,
    /// Arithmetic `BitShift(RIGHT)` (signed types from opset 28).
    BitShift,
}

/// What the expansion needs to know about the input.
pub struct ExpansionInput {
    pub dtype: DataType,
    pub rank: Option<usize>,
    /// Proven interval of the stored integers.
    pub range: (i64, i64),
    /// An axis of known size > 1 (axis, size, rank) to spread scalar constants along.
    pub spread_axis: Option<(usize, usize, usize)>,
}

/// One operand of an expansion step: the requantized input, or an earlier step's result.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Operand {
    Input,
    Step(usize),
}

/// One node of an expansion, in emission order.
#[derive(Clone, Debug)]
pub enum Step {
    Constant {
        name: &'static str,
        value: Array,
    },
    Op {
        op_type: &'static str,
        name: &'static str,
        inputs: Vec<Operand>,
        attributes: Vec<AttributeProto>,
    },
}

/// Standard ONNX computing the op; the last step's result replaces the op's output.
#[derive(Clone, Debug)]
pub struct Expansion {
    pub steps: Vec<Step>,
    pub to: DataType,
}

impl Expansion {
    fn constant(&mut self, name: &'static str, value: Array) -> Operand {
        self.steps.push(Step::Constant { name, value });
        Operand::Step(self.steps.len() - 1)
    }

    fn op(
        &mut self,
        op_type: &'static str,
        name: &'static str,
        inputs: &[Operand],
        attributes: Vec<AttributeProto>,
    ) -> Operand {
        self.steps.push(Step::Op {
            op_type,
            name,
            inputs: inputs.to_vec(),
            attributes,
        });
        Operand::Step(self.steps.len() - 1)
    }
}

/// A per-channel constant shaped to broadcast along `axis` of a rank-`rank` tensor.
fn channel_constant<T: Element>(values: Vec<T>, axis: usize, rank: Option<usize>) -> Result<Array> {
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

/// The standard-ONNX recipe of one Requant:
///   int32 when `|x·m + b + 2^(c−1)| < 2^30` is proven:
///     `Cast(Clip(Sub(Div(Add(Mul(x, m), b + h + 2^30), 2^c), 2^(30−c) − zp), lo, hi))`
///   (the Add makes the dividend non-negative, so truncating `Div` floors exactly), else int64:
///   the same after `CastLike(x, int64)`, with 2^62 in place of 2^30; with [`Recipe::BitShift`]:
///   `Mul`, `Add(b + h)`, `BitShift(RIGHT)`, `Add(zp)`, `Clip`, `Cast`. `h` is 2^(c−1) for
///   half-up rounding, 0 for floor. Divisors are positive powers of two, never −1; no
///   `Cast(to=INT64)` (tract turns it into a symbolic dimension).
///
/// A result clamped at `lo ≥ 0` (every uint8 activation) needs no bias and no `Sub`:
/// `Cast(Clip(Div(Add(Mul(x, m), b + h + zp·2^c), 2^c), lo, hi))` is exact, since truncation
/// and flooring differ only on negative dividends, which clamp to `lo` either way.
pub fn expand(op: &Op, x: &ExpansionInput, recipe: Recipe) -> Result<Expansion> {
    let p = from_op(op)?;
    let (lo, hi) = x.range;
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
    let wide = extent >= 1 << 30 || x.dtype == DataType::Int64;
    if extent >= 1 << 62 {
        return Err(Error::Pass {
            pass: "legalize".into(),
            message: format!("{}: x·m + b reaches {extent}, beyond int64", op.describe()),
        });
    }
    let mut e = Expansion {
        steps: vec![],
        to: p.to,
    };
    let mut t = Operand::Input;
    if x.dtype != DataType::Int32 && x.dtype != DataType::Int64 {
        t = e.op(
            "Cast",
            "to_i32",
            &[t],
            vec![attr::int("to", DataType::Int32 as i32 as i64)],
        );
    }
    let (work, bias_base): (DataType, i128) = if wide {
        (DataType::Int64, 1 << 62)
    } else {
        (DataType::Int32, 1 << 30)
    };
    if wide && x.dtype != DataType::Int64 {
        let like = e.constant("int64", Array::scalar(0i64));
        t = e.op("CastLike", "to_i64", &[t, like], vec![]);
    }
    let typed = |values: Vec<i128>| -> Result<Array> {
        match work {
            DataType::Int64 => channel_constant(
                values.into_iter().map(|v| v as i64).collect(),
                p.axis,
                x.rank,
            ),
            _ => channel_constant(
                values.into_iter().map(|v| v as i32).collect(),
                p.axis,
                x.rank,
            ),
        }
    };
    // tract 0.23 reads an integer scalar operand of Mul or Div as a mask ("region of
    // interest") and its optimiser then blows up; the same value repeated along an axis of
    // known size avoids that.
    let spread = |values: Vec<i128>| -> Result<Array> {
        match (values.len(), x.spread_axis) {
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
        let m = e.constant("multiplier", spread(ms)?);
        t = e.op("Mul", "multiply", &[t, m], vec![]);
    }
    let offsets = |extra: &dyn Fn(usize) -> Result<i128>| -> Result<Vec<i128>> {
        (0..channels)
            .map(|c| Ok(p.channel(c).1 as i128 + h(c)? + extra(c)?))
            .collect()
    };
    match (recipe, any_shift) {
        (_, false) => {
            // No shift: y = x·m + b + zp.
            let b = offsets(&|_| Ok(p.zero_point as i128))?;
            if b.iter().any(|&v| v != 0) {
                let c = e.constant("offset", typed(b)?);
                t = e.op("Add", "offset", &[t, c], vec![]);
            }
        }
        (Recipe::Divide, true) => {
            let limit: i128 = match work {
                DataType::Int64 => i64::MAX as i128,
                _ => i32::MAX as i128,
            };
            let zp = p.zero_point as i128;
            // The range check hulls per-channel constants; the dividend must fit that way too.
            let dividend = hull_dividend(&p, (lo, hi), &|c| Ok(h(c)? + (zp << shifts[c])))?;
            let unbiased = p.lo >= 0 && dividend.0 >= -limit && dividend.1 <= limit;
            // A clamp at lo ≥ 0 makes truncation and flooring agree (a negative dividend
            // truncates to at most 0 and clamps to lo either way), so such a result needs no
            // bias and no Sub: y = Clip((x·m + b + h + zp·2^c) / 2^c, lo, hi).
            let bias = |c: usize| if unbiased { zp << shifts[c] } else { bias_base };
            let b = offsets(&|c| Ok(bias(c)))?;
            let c = e.constant("offset", typed(b)?);
            t = e.op("Add", "offset", &[t, c], vec![]);
            let divisors: Vec<i128> = shifts.iter().map(|&s| 1i128 << s).collect();
            let d = e.constant("divisor", spread(divisors)?);
            t = e.op("Div", "shift", &[t, d], vec![]);
            if !unbiased {
                let back: Vec<i128> = shifts.iter().map(|&s| (bias_base >> s) - zp).collect();
                let c = e.constant("unbias", typed(back)?);
                t = e.op("Sub", "unbias", &[t, c], vec![]);
            }
        }
        (Recipe::BitShift, true) => {
            let b = offsets(&|_| Ok(0))?;
            if b.iter().any(|&v| v != 0) {
                let c = e.constant("offset", typed(b)?);
                t = e.op("Add", "offset", &[t, c], vec![]);
            }
            let amounts = e.constant("shift", typed(shifts.iter().map(|&s| s as i128).collect())?);
            t = e.op(
                "BitShift",
                "shift",
                &[t, amounts],
                vec![attr::string("direction", "RIGHT")],
            );
            if p.zero_point != 0 {
                let zp = e.constant("zero_point", typed(vec![p.zero_point as i128])?);
                t = e.op("Add", "zero_point", &[t, zp], vec![]);
            }
        }
    }
    let (clip_lo, clip_hi) = (typed(vec![p.lo as i128])?, typed(vec![p.hi as i128])?);
    let clip_lo = e.constant("lo", clip_lo);
    let clip_hi = e.constant("hi", clip_hi);
    t = e.op("Clip", "clip", &[t, clip_lo, clip_hi], vec![]);
    if p.to != work {
        e.op(
            "Cast",
            "narrow",
            &[t],
            vec![attr::int("to", p.to as i32 as i64)],
        );
    }
    Ok(e)
}

/// The interval of `x·m + b + extra(c)` as the range check derives it: per-channel multipliers
/// and offsets hulled over channels.
fn hull_dividend(
    p: &RequantParams,
    x: (i64, i64),
    extra: &dyn Fn(usize) -> Result<i128>,
) -> Result<(i128, i128)> {
    let (mut m_lo, mut m_hi, mut o_lo, mut o_hi) = (i128::MAX, i128::MIN, i128::MAX, i128::MIN);
    for c in 0..p.channels() {
        let (m, b, _) = p.channel(c);
        let o = b as i128 + extra(c)?;
        (m_lo, m_hi) = (m_lo.min(m as i128), m_hi.max(m as i128));
        (o_lo, o_hi) = (o_lo.min(o), o_hi.max(o));
    }
    let corners = [
        x.0 as i128 * m_lo,
        x.0 as i128 * m_hi,
        x.1 as i128 * m_lo,
        x.1 as i128 * m_hi,
    ];
    let (lo, hi) = corners
        .iter()
        .fold((i128::MAX, i128::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    Ok((lo + o_lo, hi + o_hi))
}
