//! The lowering engine shared by the integer lowering passes.
//!
//! A float value `v` that is lowered gets an integer representation ([`IntRep`]): an integer
//! tensor `q` with `v ≈ scale · (q − zero_point)` and a proven range of `q`. Lowering an op
//! means building its integer counterpart from the representations of its inputs; the float
//! op itself is not touched. [`Lowering::finish`] then points every remaining float reader of
//! a lowered value at a `DequantizeLinear` of its representation, and removes the float ops
//! nothing reads any more. Float values with no representation that an integer op needs are
//! quantized where they are (`Mul`, `Round`, `Clip`, `Cast`: an island exit).
//!
//! Every change of scale is an `intone.Requant` (`ops::intone::requant`, arithmetic in
//! `quant::requant`) until legalization.

use std::collections::{HashMap, HashSet};

use crate::ir::quant::{ActivationPlan, QuantFacts, Scale};
use crate::ir::{Array, DataType, Model, NodeId, Op, ValueId, attr};
use std::sync::Arc;

use crate::ops::GraphFacts;
use crate::ops::matmul_kernels::{MatmulOperands, Storage};
use crate::pass::{CompileOptions, Rewriter};
use crate::quant::dyadic::Dyadic;
use crate::quant::requant::RequantParams;
use crate::quant::rounding::Rounding;
use crate::{Error, Result};

/// The integer form of a float value: `real ≈ scale · (q − zero_point)`.
#[derive(Clone, Debug, PartialEq)]
pub struct IntRep {
    pub value: ValueId,
    pub scale: Scale,
    pub zero_point: i64,
    pub dtype: DataType,
    /// Proven inclusive bounds of the stored integers.
    pub range: (i64, i64),
}

impl IntRep {
    pub fn is_per_tensor(&self) -> bool {
        matches!(self.scale, Scale::PerTensor(_))
    }

    /// Per-tensor int32 with zero point 0: integers that plain integer arithmetic (sums,
    /// selects, clips, divisions) can work on directly.
    pub fn is_plain_int32(&self) -> bool {
        self.is_per_tensor() && self.zero_point == 0 && self.dtype == DataType::Int32
    }

    /// Largest |q − zero_point|.
    pub fn magnitude(&self) -> i128 {
        let (lo, hi) = (
            self.range.0 as i128 - self.zero_point as i128,
            self.range.1 as i128 - self.zero_point as i128,
        );
        lo.abs().max(hi.abs())
    }

    /// The facts recorded on the integer value for later passes and the value map.
    pub fn facts(&self, bits: u32, signed: bool) -> QuantFacts {
        QuantFacts {
            scale: self.scale.clone(),
            bits,
            signed,
            zero_point: self.zero_point,
            range: Some(self.range),
        }
    }
}

/// Largest magnitude of [`Form::Wide`]: the product of two stays under 2^30.
const WIDE_LEVELS: i64 = 32767;

/// A storage form an integer op needs its operand in.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Form {
    /// `MatMulInteger`/`ConvInteger` A operand: uint8, zero point 128 for signed values
    /// (bit-identical to int8 and the fast kernel in both runtimes), 0 for unsigned ones.
    OperandA,
    /// `MatMulInteger` B operand (an activation): int8, zero point 0.
    OperandB,
    /// int8 (or uint8 for unsigned values) at the value's planned scale: data movement.
    Stored8,
    /// int32 with 15 bits (and a sign) over the value's planned clip: a factor of an
    /// activation product (two of them multiply within int32), or an accumulator too fine
    /// for a constant's integers.
    Wide,
}

/// What a requantization must produce.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub scale: f64,
    pub zero_point: i64,
    pub lo: i64,
    pub hi: i64,
    pub dtype: DataType,
}

/// Largest |x·m| the int32 recipes allow (`x + offset + rounding` must stay in ±2^30).
const INT32_PRODUCT: i128 = 1 << 29;
/// Largest |x·m| the int64 recipe allows.
const INT64_PRODUCT: i128 = 1 << 61;

/// The largest `|y − zp|` a clamp to `[lo, hi]` admits, in steps: what [`choose_dyadics`]
/// sizes its tolerance by.
pub fn clamp_span(lo: i64, hi: i64, zero_point: i64) -> i64 {
    (lo - zero_point).abs().max((hi - zero_point).abs())
}

/// Per-channel dyadic approximations of `ratios` for inputs up to `magnitude`: int32-sized
/// multipliers when their relative error moves no unclamped result by more than 1/4 of a
/// step (`span` is the largest `|y − zp|` the clamp admits, in steps), else int64-sized ones.
/// A ratio so small that no input reaches half a step is the zero multiplier, exactly: every
/// result rounds to 0 either way.
pub fn choose_dyadics(ratios: &[f64], magnitude: i128, span: i64) -> Result<Vec<Dyadic>> {
    let magnitude = magnitude.max(1);
    let negligible = |r: f64| r.abs() * (magnitude as f64) < 0.5;
    let approximate = |r: f64, bound: i64| -> Option<Dyadic> {
        if negligible(r) {
            return Some(Dyadic {
                multiplier: 0,
                shift: 0,
            });
        }
        // A negative ratio (a sign-flipping scale) is the negated dyadic of its magnitude.
        Dyadic::approximate(r.abs(), bound).map(|d| Dyadic {
            multiplier: if r < 0.0 { -d.multiplier } else { d.multiplier },
            ..d
        })
    };
    let bound = |product: i128, cap: i64| ((product / magnitude) as i64).min(cap);
    let attempt = |product: i128, cap: i64| -> Option<Vec<Dyadic>> {
        let bound = bound(product, cap);
        ratios.iter().map(|&r| approximate(r, bound)).collect()
    };
    let tolerance = 0.25 / span.max(1) as f64;
    if let Some(d) = attempt(INT32_PRODUCT, 1 << 30) {
        if d.iter()
            .zip(ratios)
            .all(|(d, &r)| negligible(r) || d.relative_error(r).abs() <= tolerance)
        {
            return Ok(d);
        }
    }
    attempt(INT64_PRODUCT, (1 << 31) - 1).ok_or_else(|| {
        let bound = bound(INT64_PRODUCT, (1 << 31) - 1);
        let bad = ratios
            .iter()
            .enumerate()
            .find(|&(_, &r)| approximate(r, bound).is_none())
            .map_or_else(String::new, |(c, r)| format!(" (channel {c}: {r:e})"));
        Error::unsupported(format!(
            "a requantization ratio{bad} cannot be represented for inputs up to {magnitude}"
        ))
    })
}

/// Symmetric per-channel quantization of a float weight along `axis` to `±magnitude`
/// (127, or 64 for the saturation-free grid): `q = round_half_even(w / s_c)` clamped,
/// `s_c = max|w_c| / magnitude` (f32). A dead channel (all zero, or below 2^-20 of the
/// largest channel, as pruned or denormal weights are) is zeros at the largest channel's
/// scale: its own would make requantization ratios and bias integers out of range, for a
/// contribution below a 2^-20 fraction of the others'.
pub fn quantize_weight(
    w: &ndarray::ArrayD<f32>,
    axis: usize,
    magnitude: i64,
) -> (ndarray::ArrayD<i8>, Vec<f64>) {
    let channels = w.shape()[axis];
    let levels = magnitude as f64;
    let max_of = |c: usize| {
        w.index_axis(ndarray::Axis(axis), c)
            .iter()
            .fold(0f32, |m, &x| m.max(x.abs()))
    };
    let maxima: Vec<f32> = (0..channels).map(max_of).collect();
    let largest = maxima.iter().fold(0f32, |m, &x| m.max(x));
    let scale_of = |max: f32| (max as f64 / levels) as f32 as f64;
    let mut scales = Vec::with_capacity(channels);
    let mut q = ndarray::ArrayD::<i8>::zeros(w.raw_dim());
    for (c, &max) in maxima.iter().enumerate() {
        if largest == 0.0 || (max as f64) < largest as f64 * DEAD_CHANNEL {
            scales.push(if largest > 0.0 {
                scale_of(largest)
            } else {
                1.0
            });
            continue;
        }
        let lane = w.index_axis(ndarray::Axis(axis), c);
        let scale = exact_power_of_two_scale(lane.iter(), max, magnitude).unwrap_or(scale_of(max));
        scales.push(scale);
        let mut out = q.index_axis_mut(ndarray::Axis(axis), c);
        ndarray::Zip::from(&mut out).and(&lane).for_each(|o, &x| {
            *o = (crate::quant::rounding::round_half_even(x as f64 / scale)).clamp(-levels, levels)
                as i8;
        });
    }
    (q, scales)
}

/// The power-of-two scale that represents every weight of a channel exactly on the grid
/// `±magnitude`, when there is one (interpolation weights 1/4 and 3/4, averaging weights):
/// such a channel then carries no weight rounding at all.
fn exact_power_of_two_scale<'a>(
    mut lane: impl Iterator<Item = &'a f32>,
    max: f32,
    magnitude: i64,
) -> Option<f64> {
    let scale = 2f64.powi((max as f64 / magnitude as f64).log2().ceil() as i32);
    let exact = lane.all(|&x| {
        let q = x as f64 / scale;
        q == q.round() && q.abs() <= magnitude as f64
    });
    exact.then_some(scale)
}

/// A weight channel whose largest magnitude is below this fraction of the largest channel's
/// is quantized to zeros.
pub const DEAD_CHANNEL: f64 = 1.0 / (1 << 20) as f64;

/// A quantized weight as `storage` holds it: int8 as is, or uint8 `q + zero_point`.
pub fn stored_weight(q: &ndarray::ArrayD<i8>, storage: Storage) -> Array {
    match storage.dtype {
        DataType::Uint8 => Array::U8(q.mapv(|x| (x as i64 + storage.zero_point) as u8)),
        _ => Array::I8(q.clone()),
    }
}

/// The lowering state of one pass over a model.
pub struct Lowering<'m> {
    pub rw: Rewriter<'m>,
    pub facts: Arc<GraphFacts>,
    reps: HashMap<ValueId, IntRep>,
    forms: HashMap<(ValueId, Form), IntRep>,
    lowered: HashSet<NodeId>,
    pub rounding: Rounding,
    pub operands: MatmulOperands,
    pub dim_bound: i64,
}

impl<'m> Lowering<'m> {
    /// A lowering with the compilation's policies (rounding, matmul operand grid, dimension
    /// bound), so that every lowering pass makes the same choices.
    pub fn new(
        model: &'m mut Model,
        facts: Arc<GraphFacts>,
        options: &CompileOptions,
    ) -> Lowering<'m> {
        Lowering {
            rw: Rewriter::unanchored(model),
            facts,
            reps: HashMap::new(),
            forms: HashMap::new(),
            lowered: HashSet::new(),
            rounding: options.rounding,
            operands: options.matmul_operands,
            dim_bound: options.symbolic_dim_bound,
        }
    }

    pub fn model(&self) -> &Model {
        self.rw.model()
    }

    pub fn rep(&self, v: ValueId) -> Option<&IntRep> {
        self.reps.get(&v)
    }

    /// True when `v` has an integer form or a plan to get one.
    pub fn can_quantize(&self, v: ValueId) -> bool {
        self.reps.contains_key(&v) || self.model().graph.value(v).plan.is_some()
    }

    /// The quantization plan of a float value (from the `quantize` pass).
    pub fn plan(&self, v: ValueId) -> Result<ActivationPlan> {
        self.model()
            .graph
            .value(v)
            .plan
            .clone()
            .ok_or_else(|| Error::Pass {
                pass: "lowering".into(),
                message: format!(
                    "value '{}' has no quantization plan (was it calibrated?)",
                    self.model().graph.value_name(v)
                ),
            })
    }

    /// Records that float value `v` is now represented by `rep`, produced by lowering `node`.
    pub fn set_rep(&mut self, v: ValueId, rep: IntRep, bits: u32, signed: bool) {
        let facts = rep.facts(bits, signed);
        let origin = {
            let g = &self.rw.model().graph;
            g.value(v)
                .origin
                .clone()
                .unwrap_or_else(|| g.value_name(v).to_string())
        };
        self.rw.annotate(rep.value, |value| {
            if value.quant.is_none() {
                value.quant = Some(facts);
            }
            if value.origin.is_none() {
                value.origin = Some(origin);
            }
        });
        self.lowered.insert(v.node);
        self.reps.insert(v, rep);
    }

    /// Records a representation's facts on its integer value (for intermediate values, such
    /// as an accumulator before its bias, that stand for no float value of their own).
    pub fn note(&mut self, rep: &IntRep, bits: u32, signed: bool) {
        let facts = rep.facts(bits, signed);
        self.rw.annotate(rep.value, |value| {
            if value.quant.is_none() {
                value.quant = Some(facts);
            }
        });
    }

    /// Rank of a value, from the facts of the float graph or of the value's producer inputs.
    pub fn rank_of(&self, v: ValueId) -> Option<usize> {
        self.facts.get(v).and_then(|f| f.rank()).or_else(|| {
            // A new integer value has the rank of the float value it stands for.
            self.reps
                .iter()
                .find(|(_, r)| r.value == v)
                .and_then(|(f, _)| self.facts.get(*f))
                .and_then(|f| f.rank())
        })
    }

    /// Dimension size for range analysis: known, or the symbolic bound.
    pub fn dim_or_bound(&self, v: ValueId, axis_from_end: usize) -> i64 {
        self.facts
            .get(v)
            .and_then(|f| f.shape.as_ref())
            .and_then(|s| s.len().checked_sub(axis_from_end + 1).map(|i| s[i].clone()))
            .and_then(|d| d.known())
            .unwrap_or(self.dim_bound)
    }

    /// A constant initializer.
    pub fn constant(&mut self, suffix: &str, array: &Array) -> Result<ValueId> {
        self.rw.constant(suffix, array)
    }

    /// An op with one output.
    pub fn op(
        &mut self,
        op_type: &str,
        suffix: &str,
        inputs: &[ValueId],
        attrs: Vec<crate::schema::AttributeProto>,
    ) -> Result<ValueId> {
        self.rw.op(op_type, suffix, inputs, attrs)
    }

    /// A right-hand matmul activation as the operand policy stores it: int8 on the policy's
    /// grid (an unsigned plan keeps its clip on the positive half), or uint8 with zero point
    /// 128 (an unsigned plan uses the whole uint8 range, zero point 0).
    fn operand_b(&self, bits: u32, signed: bool, scale: f64) -> Target {
        let storage = self.operands.activations();
        let m = storage.magnitude;
        match (storage.dtype, signed) {
            (DataType::Uint8, true) => Target {
                scale: respread(scale, bits, true, 127),
                zero_point: storage.zero_point,
                lo: 0,
                hi: 255,
                dtype: DataType::Uint8,
            },
            (DataType::Uint8, false) => Target {
                scale: respread(scale, bits, false, 255),
                zero_point: 0,
                lo: 0,
                hi: 255,
                dtype: DataType::Uint8,
            },
            _ => Target {
                scale: respread(scale, bits, signed, m),
                zero_point: 0,
                // The full grid keeps int8's −128; the saturation-free grid is symmetric.
                lo: if m == 127 { -128 } else { -m },
                hi: m,
                dtype: DataType::Int8,
            },
        }
    }

    /// `v` requantized (or quantized, if it is float) to an explicit target.
    pub fn to_target(&mut self, v: ValueId, target: &Target, suffix: &str) -> Result<IntRep> {
        match self.reps.get(&v).cloned() {
            Some(rep) => self.convert(&rep, target, suffix),
            None => self.quantize_float(v, target),
        }
    }

    /// `v` in `form`, at its planned scale: reuses a representation, requantizes it, or
    /// quantizes the float value where it stands.
    pub fn operand(&mut self, v: ValueId, form: Form) -> Result<IntRep> {
        if let Some(r) = self.forms.get(&(v, form)) {
            return Ok(r.clone());
        }
        let plan = self.plan(v)?;
        let scale = match plan.scale {
            Scale::PerTensor(s) => s,
            Scale::PerAxis { .. } => return Err(Error::unsupported("per-axis activation plans")),
        };
        // An asymmetric operand grid only pays when it is the value's first rounding onto 8
        // bits; re-rounding an 8-bit representation onto it would round twice.
        let rounded_to_8 = self
            .reps
            .get(&v)
            .is_some_and(|r| matches!(r.dtype, DataType::Int8 | DataType::Uint8));
        let target = match form {
            Form::OperandA if plan.signed && plan.bits == 8 && !rounded_to_8 => match plan.floor {
                Some(floor) => asymmetric_operand(floor, scale * plan.levels() as f64),
                None => Target {
                    scale,
                    zero_point: 128,
                    lo: 0,
                    hi: 255,
                    dtype: DataType::Uint8,
                },
            },
            Form::OperandA if plan.signed => Target {
                scale: rescale_signed(scale, plan.bits, 8),
                zero_point: 128,
                lo: 0,
                hi: 255,
                dtype: DataType::Uint8,
            },
            Form::OperandA => Target {
                scale: rescale_unsigned(scale, plan.bits, 8),
                zero_point: 0,
                lo: 0,
                hi: 255,
                dtype: DataType::Uint8,
            },
            Form::OperandB => self.operand_b(plan.bits, plan.signed, scale),
            Form::Stored8 if plan.signed => Target {
                scale: rescale_signed(scale, plan.bits, 8),
                zero_point: 0,
                lo: -128,
                hi: 127,
                dtype: DataType::Int8,
            },
            Form::Stored8 => Target {
                scale: rescale_unsigned(scale, plan.bits, 8),
                zero_point: 0,
                lo: 0,
                hi: 255,
                dtype: DataType::Uint8,
            },
            Form::Wide => Target {
                scale: respread(scale, plan.bits, plan.signed, WIDE_LEVELS),
                zero_point: 0,
                lo: if plan.signed { -WIDE_LEVELS } else { 0 },
                hi: WIDE_LEVELS,
                dtype: DataType::Int32,
            },
        };
        let rep = match self.reps.get(&v).cloned() {
            Some(rep) => self.convert(&rep, &target, "requant")?,
            None => self.quantize_float(v, &target)?,
        };
        let bits = match form {
            Form::Wide => 16,
            _ => 8,
        };
        let signed = target.zero_point != 0 || target.lo < 0;
        let facts = rep.facts(bits, signed);
        if self.rw.graph().value(rep.value).quant.is_none() {
            self.rw.annotate(rep.value, |v| v.quant = Some(facts));
        }
        if self.rw.graph().value(rep.value).origin.is_none() {
            let origin = self
                .rw
                .graph()
                .value(v)
                .origin
                .clone()
                .unwrap_or_else(|| self.rw.graph().value_name(v).to_string());
            self.rw.annotate(rep.value, |v| v.origin = Some(origin));
        }
        self.forms.insert((v, form), rep.clone());
        Ok(rep)
    }

    /// Requantizes `rep` to `target` (nothing to do when it already matches).
    pub fn convert(&mut self, rep: &IntRep, target: &Target, suffix: &str) -> Result<IntRep> {
        if rep.scale == Scale::PerTensor(target.scale)
            && rep.zero_point == target.zero_point
            && rep.dtype == target.dtype
            && rep.range.0 >= target.lo
            && rep.range.1 <= target.hi
        {
            return Ok(rep.clone());
        }
        let channels = match &rep.scale {
            Scale::PerTensor(_) => 1,
            Scale::PerAxis { scales, .. } => scales.len(),
        };
        let ratios: Vec<f64> = (0..channels)
            .map(|c| rep.scale.at(c) / target.scale)
            .collect();
        let span = clamp_span(target.lo, target.hi, target.zero_point);
        let dyadics = choose_dyadics(&ratios, rep.magnitude(), span).map_err(|e| match e {
            Error::Unsupported(m) => {
                let g = self.rw.graph();
                let name = g.value(rep.value).origin.clone();
                let name = name.unwrap_or_else(|| g.value_name(rep.value).to_string());
                Error::unsupported(format!("requantizing '{name}': {m}"))
            }
            other => other,
        })?;
        // The input zero point moves into the offset: (q − zp)·m = q·m − zp·m.
        let offsets: Vec<i64> = dyadics
            .iter()
            .map(|d| -rep.zero_point * d.multiplier)
            .collect();
        let axis = match &rep.scale {
            Scale::PerAxis { axis, .. } => *axis,
            Scale::PerTensor(_) => 0,
        };
        let params = RequantParams {
            multiplier: dyadics.iter().map(|d| d.multiplier).collect(),
            offset: offsets,
            shift: dyadics.iter().map(|d| d.shift).collect(),
            rounding: self.rounding,
            zero_point: target.zero_point,
            lo: target.lo,
            hi: target.hi,
            axis,
            to: target.dtype,
        };
        let range = requant_range(&params, rep.range);
        let op = crate::ops::intone::requant::to_op(&params, "");
        let attrs = op.proto.attribute.clone();
        let id = self.rw.op_node(op, suffix, &[Some(rep.value)], attrs, 1)?;
        Ok(IntRep {
            value: ValueId { node: id, slot: 0 },
            scale: Scale::PerTensor(target.scale),
            zero_point: target.zero_point,
            dtype: target.dtype,
            range,
        })
    }

    /// Quantizes a float value where it stands: `Cast(Clip(Round(v · (1/s)) + zp, lo, hi))`.
    /// (A multiply by the f32 reciprocal, not a division: tract and onnxruntime then compute
    /// the same product, where `QuantizeLinear` differs between them by one unit at times.)
    pub fn quantize_float(&mut self, v: ValueId, target: &Target) -> Result<IntRep> {
        // Named after the value's producer; the caller's anchor is restored afterwards.
        let previous = match self.rw.graph().op(v.node) {
            Some(_) => self.rw.set_anchor(v.node),
            None => None,
        };
        let rep = self.quantize_float_here(v, target);
        if self.rw.graph().op(v.node).is_some() {
            self.rw.restore_anchor(previous);
        }
        rep
    }

    fn quantize_float_here(&mut self, v: ValueId, target: &Target) -> Result<IntRep> {
        let inv = self.constant("inv_scale", &Array::scalar((1.0 / target.scale) as f32))?;
        let scaled = self.op("Mul", "scale", &[v, inv], vec![])?;
        let mut rounded = self.op("Round", "round", &[scaled], vec![])?;
        if target.zero_point != 0 {
            let zp = self.constant("zero_point", &Array::scalar(target.zero_point as f32))?;
            rounded = self.op("Add", "shift", &[rounded, zp], vec![])?;
        }
        let lo = self.constant("lo", &Array::scalar(target.lo as f32))?;
        let hi = self.constant("hi", &Array::scalar(target.hi as f32))?;
        let clipped = self.op("Clip", "clip", &[rounded, lo, hi], vec![])?;
        let q = self.op(
            "Cast",
            "quantized",
            &[clipped],
            vec![attr::int("to", target.dtype as i32 as i64)],
        )?;
        Ok(IntRep {
            value: q,
            scale: Scale::PerTensor(target.scale),
            zero_point: target.zero_point,
            dtype: target.dtype,
            range: (target.lo, target.hi),
        })
    }

    /// `DequantizeLinear` of a representation back to f32.
    pub fn dequantize(&mut self, rep: &IntRep) -> Result<ValueId> {
        // DequantizeLinear takes positive scales: negative per-channel scales (a sign-flipping
        // constant folded in) dequantize with |scale| and multiply by the signs.
        if let Scale::PerAxis { axis, scales } = &rep.scale {
            if scales.iter().any(|&s| s < 0.0) {
                let positive = IntRep {
                    scale: Scale::PerAxis {
                        axis: *axis,
                        scales: scales.iter().map(|s| s.abs()).collect(),
                    },
                    ..rep.clone()
                };
                let x = self.dequantize(&positive)?;
                let signs: Vec<f32> = scales
                    .iter()
                    .map(|&s| if s < 0.0 { -1.0 } else { 1.0 })
                    .collect();
                let n = signs.len();
                let trailing = self
                    .rank_of(rep.value)
                    .map_or(0, |r| r.saturating_sub(axis + 1));
                let mut shape = vec![n];
                shape.extend(std::iter::repeat_n(1, trailing));
                let signs = self.constant("signs", &Array::from_vec(&shape, signs)?)?;
                return self.op("Mul", "signed", &[x, signs], vec![]);
            }
        }
        let (scale, axis) = match &rep.scale {
            Scale::PerTensor(s) => (Array::scalar(*s as f32), None),
            Scale::PerAxis { axis, scales } => (
                Array::from_vec(&[scales.len()], scales.iter().map(|&s| s as f32).collect())?,
                Some(*axis),
            ),
        };
        let scale = self.constant("scale", &scale)?;
        let mut inputs = vec![rep.value, scale];
        if rep.zero_point != 0 {
            let zp = Array::scalar(rep.zero_point).cast(rep.dtype)?;
            inputs.push(self.constant("zero_point", &zp)?);
        }
        let attrs = axis
            .map(|a| vec![attr::int("axis", a as i64)])
            .unwrap_or_default();
        self.op("DequantizeLinear", "dequantized", &inputs, attrs)
    }

    /// Marks a float op as replaced (its outputs all have representations).
    pub fn mark_lowered(&mut self, node: NodeId) {
        self.lowered.insert(node);
    }

    pub fn is_lowered(&self, node: NodeId) -> bool {
        self.lowered.contains(&node)
    }

    /// Points every remaining reader of a lowered float value (float ops, subgraphs, graph
    /// outputs) at its dequantized representation, then removes what nothing reads.
    /// Returns the number of float values that needed a dequantization.
    pub fn finish(mut self) -> Result<usize> {
        let mut lowered: Vec<(ValueId, IntRep)> =
            self.reps.iter().map(|(v, r)| (*v, r.clone())).collect();
        lowered.sort_by_key(|(v, _)| (self.rw.graph().order(v.node), v.slot));
        let mut dequantized = 0;
        for (v, rep) in lowered {
            let g = self.rw.graph();
            let needed =
                g.is_graph_output(v) || g.uses(v).iter().any(|u| !self.lowered.contains(&u.node));
            if !needed {
                continue;
            }
            self.rw.set_anchor(v.node);
            let dq = self.dequantize(&rep)?;
            // The dequantized value is the float value: it keeps its plan and statistics,
            // which the integer lowerings of the ops still reading it follow.
            let (plan, stats) = {
                let value = self.rw.graph().value(v);
                (value.plan.clone(), value.stats.clone())
            };
            self.rw.annotate(dq, |value| {
                value.plan = plan;
                value.stats = stats;
            });
            self.rw.replace(v, dq)?;
            dequantized += 1;
        }
        // Lowered float ops are dead now; remove them (and the weights only they read).
        let mut candidates: Vec<NodeId> = self.lowered.iter().copied().collect();
        candidates.sort_by_key(|&id| std::cmp::Reverse(self.rw.graph().order(id)));
        for id in candidates {
            self.rw.erase_if_dead(id);
        }
        self.rw.finish()?;
        Ok(dequantized)
    }
}

/// The scale of an unsigned value re-expressed with `to_bits` instead of `bits` bits.
/// The uint8 grid covering `[floor, clip]` (floor < 0 < clip): 254 steps, so that a zero
/// point rounded up still leaves `clip` on the grid; real = scale·(q − zero_point).
fn asymmetric_operand(floor: f64, clip: f64) -> Target {
    let scale = ((clip - floor) / 254.0) as f32 as f64;
    let zero_point = ((-floor / scale).ceil() as i64).clamp(1, 254);
    Target {
        scale,
        zero_point,
        lo: 0,
        hi: 255,
        dtype: DataType::Uint8,
    }
}

fn rescale_unsigned(scale: f64, bits: u32, to_bits: u32) -> f64 {
    use crate::quant::levels;
    let (from, to) = (levels(bits, false), levels(to_bits, false));
    (scale * from as f64 / to as f64) as f32 as f64
}

fn rescale_signed(scale: f64, bits: u32, to_bits: u32) -> f64 {
    use crate::quant::levels;
    let (from, to) = (levels(bits, true), levels(to_bits, true));
    (scale * from as f64 / to as f64) as f32 as f64
}

/// Scale of a plan of `bits` re-spread over `levels` steps of its clip.
fn respread(scale: f64, bits: u32, signed: bool, levels: i64) -> f64 {
    let from = crate::quant::levels(bits, signed);
    (scale * from as f64 / levels as f64) as f32 as f64
}

/// Proven output range of a requantization over inputs in `input`.
pub fn requant_range(p: &RequantParams, input: (i64, i64)) -> (i64, i64) {
    let mut lo = i64::MAX;
    let mut hi = i64::MIN;
    for c in 0..p.channels() {
        for x in [input.0, input.1] {
            let y = p.apply(x, c);
            lo = lo.min(y);
            hi = hi.max(y);
        }
    }
    // The map is monotone per channel (m > 0), so the ends give the range.
    (lo, hi)
}

/// Per-channel bounds of `Σ_k a_k · w_kc` for `a` in `a_range` (after its zero point), hulled
/// over channels; `channel_axis` indexes the weight's output channels.
pub fn matmul_range<T: Copy + Into<i64>>(
    weights: &ndarray::ArrayD<T>,
    channel_axis: usize,
    a_range: (i64, i64),
) -> (i64, i64) {
    let shape = weights.shape();
    let channels = shape[channel_axis].max(1);
    let inner: usize = shape[channel_axis + 1..].iter().product::<usize>().max(1);
    let mut lo = vec![0i64; channels];
    let mut hi = vec![0i64; channels];
    let (a0, a1) = a_range;
    let standard = weights.as_standard_layout();
    let values = standard.as_slice().expect("standard layout");
    for (i, &w) in values.iter().enumerate() {
        let c = (i / inner) % channels;
        let w: i64 = w.into();
        let (p, q) = (w * a0, w * a1);
        lo[c] += p.min(q);
        hi[c] += p.max(q);
    }
    (
        lo.into_iter().min().unwrap_or(0),
        hi.into_iter().max().unwrap_or(0),
    )
}

/// `Op` helper for integer ops whose attributes come from a float op (ConvInteger).
pub fn copy_attrs(from: &Op, names: &[&str]) -> Vec<crate::schema::AttributeProto> {
    from.attrs()
        .iter()
        .filter(|a| names.contains(&a.name()))
        .cloned()
        .collect()
}
