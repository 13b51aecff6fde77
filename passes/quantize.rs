//! `quantize(bits=8,residual-bits=16)`: decides how every calibrated float value will be
//! represented as integers, `real ≈ scale · q`, symmetric (zero point 0).
//!
//! Rule: a value that enters or leaves a residual Add (two activations summed), or reaches one
//! through data movement and constant operands only (a patch embedding and its position
//! embedding), keeps `residual-bits` (I-ViT keeps the residual stream at 16 bits, carried in
//! int32); every other
//! value gets `bits`, unsigned when calibration never saw it negative (Softmax and ReLU outputs)
//! and signed otherwise. The clip comes from the observer (`--calibration-method`):
//! `scale = clip / levels`, levels = 2^(b−1) − 1 signed, 2^b − 1 unsigned. Scales are f32
//! numbers, as the ONNX graph will hold them. Along the residual stream a sum's scale is its
//! stream operand's times a power of two (rounded up: under one bit of the 16), so that
//! operand aligns by a shift.
//! Depthwise Convs (`ops::taps`) are int32 tap sums, not integer matmuls: their input
//! gets 16 bits and their weights the full int8 grid, at no extra cost. `--wide-operands`
//! picks integer matmuls whose activation gets 16 bits and enters as two 8-bit terms
//! (`auto=DB`: where the activation's rounding alone would leave the output below DB of
//! SQNR, `step²/12 · Σw² / E[y²]` from calibration; `budget=F`: the matmuls with the fewest
//! MACs while the extra stays within F of the model's; `measured=F`: within the same budget,
//! the activations — the left operands of activation × activation matmuls too — whose 8-bit
//! rounding alone costs the model's output the most noise per extra MAC, measured on
//! calibration samples (`runner::sensitivity`); `all`: every Conv/MatMul/Gemm with a constant
//! weight); weight plans say so, and every activation's report gives the estimate.
//! An analysis: sets `Value::quant` on float values; lowering passes follow these plans.
//! Error bound: |x − scale·q| ≤ scale/2 inside the clip. I-ViT §3.1, I-BERT §3.1.

use super::prelude::*;

use crate::Error;
use crate::ir::quant::{ActivationPlan, Granularity, Scale, WeightPlan};
use crate::pass::ValueReport;
use crate::quant::{CalibrationMethod, WideOperands};
use crate::runner::sensitivity::{DEFAULT_SAMPLES, Perturbation, Probe, output_noise};

pub struct Quantize {
    bits: u32,
    residual_bits: u32,
}

/// The least value a GELU output's matmul operand covers: GELU's minimum is −0.16997 (at
/// x ≈ −0.75), QuickGelu's −0.164; the margin covers ShiftGELU's and i-GELU's kernels.
const GELU_FLOOR: f64 = -0.2;

/// Bits of an activation that enters its matmul as two 8-bit terms.
const WIDE_OPERAND_BITS: u32 = 16;

/// The widest activation, 9 to 16 bits, that can enter an activation × activation matmul of
/// inner size `k` as two 8-bit terms: the lowering's bound `k·(2^b − 1)·128` (a b-bit operand
/// stored from 0, times an 8-bit one) must stay in int32. None when not even 9 bits fit.
fn two_term_bits(k: i64) -> Option<u32> {
    (9..=WIDE_OPERAND_BITS)
        .rev()
        .find(|&b| (k.max(1) as i128) * ((1i128 << b) - 1) * 128 < i32::MAX as i128)
}

impl Quantize {
    pub fn new(options: &PassOptions) -> Result<Quantize> {
        let bits = options.get::<u32>("bits")?;
        let residual_bits = options.get::<u32>("residual-bits")?;
        for (name, b) in [("bits", bits), ("residual-bits", residual_bits)] {
            if !(2..=16).contains(&b) {
                return Err(Error::Usage(format!(
                    "quantize: {name}={b} is outside 2..=16"
                )));
            }
        }
        Ok(Quantize {
            bits,
            residual_bits,
        })
    }
}

/// True for an Add of two non-constant values: a residual connection.
fn is_residual_add(model: &Model, id: NodeId) -> bool {
    let g = &model.graph;
    g.op(id).is_some_and(|op| op.is("Add"))
        && g.inputs_of(id)
            .iter()
            .all(|v| v.is_some_and(|v| g.constant(v).is_none()))
}

/// The values that reach a residual-stream value only through data movement and a constant
/// operand (a bias or position-embedding Add, a LayerScale Mul, the class token's Concat): the
/// stream starts where the last matmul's accumulator is requantized, so these keep the
/// stream's bits too (a ViT's patch embedding, else rounded to 8 bits before the first block).
fn stream_feeders(model: &Model, residual: &std::collections::HashSet<ValueId>) -> Vec<ValueId> {
    let g = &model.graph;
    let mut found: Vec<ValueId> = Vec::new();
    let mut work: Vec<ValueId> = residual.iter().copied().collect();
    work.sort_by_key(|v| (g.order(v.node), v.slot));
    while let Some(v) = work.pop() {
        let Some(op) = g.producer(v) else { continue };
        if !op.domain().is_empty() {
            continue;
        }
        let inputs: Vec<ValueId> = g.inputs_of(v.node).into_iter().flatten().collect();
        let variable: Vec<ValueId> = inputs
            .iter()
            .copied()
            .filter(|&u| g.constant(u).is_none())
            .collect();
        let joining: Vec<ValueId> = match op.op_type() {
            // The data input (shapes and axes are not stream values).
            "Reshape" | "Transpose" | "Flatten" | "Squeeze" | "Unsqueeze" | "Identity"
            | "Expand" => inputs.first().copied().into_iter().collect(),
            // One variable operand and constants: a bias, position embedding or LayerScale.
            "Add" | "Sub" | "Mul" if variable.len() == 1 => variable,
            // Every piece (patch embeddings and the class token).
            "Concat" => variable,
            _ => Vec::new(),
        };
        for u in joining.into_iter().filter(|&u| g.constant(u).is_none()) {
            if !residual.contains(&u) && !found.contains(&u) {
                found.push(u);
                work.push(u);
            }
        }
    }
    found
}

/// Along the residual stream, each sum's scale becomes its stream operand's scale times the
/// least power of two that still covers the sum's clip (at most one bit of the 16 given up), so
/// the stream operand aligns by a shift alone (int32, where a general ratio needs an int64
/// multiplier at 16 bits). The stream operand is the one the block also reads (more than one
/// use), or the previous residual sum.
fn chain_residual_scales(model: &mut Model, order: &[NodeId]) -> Vec<(ValueId, f64)> {
    let mut changed = Vec::new();
    for &id in order {
        if !is_residual_add(model, id) {
            continue;
        }
        let g = &model.graph;
        let y = ValueId { node: id, slot: 0 };
        let operands: Vec<ValueId> = g.inputs_of(id).into_iter().flatten().collect();
        let stream = |v: &ValueId| g.uses(*v).len() > 1 || is_residual_add(model, v.node);
        let streams: Vec<ValueId> = operands.iter().copied().filter(stream).collect();
        let [x] = streams[..] else { continue };
        let scale_of = |v: ValueId| match g.value(v).plan.as_ref().map(|p| &p.scale) {
            Some(Scale::PerTensor(s)) if *s > 0.0 => Some(*s),
            _ => None,
        };
        let (Some(sx), Some(sy)) = (scale_of(x), scale_of(y)) else {
            continue;
        };
        let bits = g.value(y).plan.as_ref().map_or(0, |p| p.bits);
        if g.value(x).plan.as_ref().map(|p| p.bits) != Some(bits) {
            continue;
        }
        let k = (sy / sx).log2().ceil() as i32;
        let chained = sx * 2f64.powi(k);
        if let Some(plan) = model.graph.value_mut(y).plan.as_mut() {
            plan.scale = Scale::PerTensor(chained);
            changed.push((y, chained));
        }
    }
    changed
}

impl Pass for Quantize {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let method = cx
            .options
            .calibration
            .as_ref()
            .map(|c| c.method)
            .unwrap_or(CalibrationMethod::MinMax);
        let order = model.graph.topological_order()?;
        // Values that touch a residual Add.
        let mut residual = std::collections::HashSet::new();
        for &id in &order {
            if is_residual_add(model, id) {
                residual.insert(ValueId { node: id, slot: 0 });
                for v in model.graph.inputs_of(id).into_iter().flatten() {
                    residual.insert(v);
                }
            }
        }
        residual.extend(stream_feeders(model, &residual));
        let facts = cx.facts(model)?;
        let probe = cx.options.calibration.as_ref().map(|set| Probe {
            set,
            samples: DEFAULT_SAMPLES,
            objective: &cx.options.objective,
            context: &[],
        });
        let WeightOperands {
            found: weights,
            measured_db,
            extra_wide,
            probabilities,
        } = weight_operands(
            model,
            &facts,
            &order,
            Widening {
                wide: cx.options.wide_operands,
                probability_bits: cx.options.probability_bits,
                dim_bound: cx.options.symbolic_dim_bound,
            },
            method,
            self.bits,
            Measuring {
                probe,
                residual: &residual,
            },
        )?;
        // Bits of each activation planned wider than `bits`.
        let mut wide: std::collections::HashMap<ValueId, u32> = weights
            .iter()
            .filter(|w| w.activation_terms == 2 || w.depthwise)
            .map(|w| (w.activation, WIDE_OPERAND_BITS))
            .collect();
        for (v, b) in extra_wide
            .into_iter()
            .chain(probabilities.iter().map(|(&v, &b)| (v, b)))
        {
            let bits = wide.entry(v).or_insert(b);
            *bits = (*bits).max(b);
        }
        // Per activation, the lowest output SQNR its rounding at `bits` would leave a matmul at.
        let mut sqnr_db = std::collections::HashMap::<ValueId, f64>::new();
        for w in &weights {
            if let Some(noise) = w.noise {
                let db = -10.0 * noise.log10();
                let worst = sqnr_db.entry(w.activation).or_insert(db);
                *worst = worst.min(db);
            }
        }
        let mut candidates: Vec<ValueId> = model
            .graph
            .inputs()
            .iter()
            .map(|&id| ValueId { node: id, slot: 0 })
            .collect();
        for &id in &order {
            candidates.extend(model.graph.outputs_of(id));
        }
        let gelu = super::fuse_gelu::gelu_outputs(model)?;
        let mut uncalibrated = 0;
        for v in candidates {
            let Some(stats) = model.graph.value(v).stats.clone() else {
                continue;
            };
            if stats.count == 0 {
                uncalibrated += 1;
                continue;
            }
            let is_residual = residual.contains(&v);
            let wide_bits = wide.get(&v).copied();
            let is_wide = wide_bits.is_some();
            let bits = match (is_residual, wide_bits) {
                (true, _) => self.residual_bits.max(wide_bits.unwrap_or(0)),
                (false, Some(b)) => b.max(self.bits),
                (false, None) => self.bits,
            };
            let signed = is_residual || stats.min < 0.0;
            let levels = crate::quant::levels(bits, signed) as f64;
            let clip = portable_clip(stats.clip(method, levels));
            // A value that is always 0 still needs a valid scale.
            let scale = if clip > 0.0 {
                (clip / levels) as f32 as f64
            } else {
                1.0
            };
            // A GELU output (never below −0.17, the integer kernels' approximations a little
            // lower) enters its matmuls on [GELU_FLOOR, clip], the finer grid. Only a bound of
            // the function: a calibrated minimum does not survive new data (DINOv2-S's
            // LayerNorm outputs on a photo unlike the calibration set's fell far below it).
            let floor = (signed && !is_residual && !is_wide && bits == 8 && gelu.contains(&v))
                .then_some(GELU_FLOOR.max(-clip))
                .filter(|&f| f < 0.0 && (clip - f) / 254.0 < 2.0 * clip / 255.0);
            model.graph.value_mut(v).plan = Some(ActivationPlan {
                scale: Scale::PerTensor(scale),
                bits,
                signed,
                floor,
            });
            cx.report.rewritten += 1;
            cx.report.values.push(ValueReport {
                value: model.graph.value_name(v).to_string(),
                bits,
                signed,
                scale,
                clip: (if signed { -clip } else { 0.0 }, clip),
                observed: (stats.min, stats.max),
                why: {
                    let mut why = if is_residual {
                        "residual stream".into()
                    } else if probabilities.contains_key(&v) {
                        format!(
                            "{method} clip, attention probabilities: {bits} bits, as two 8-bit terms (the widest int32 holds at the matmul's inner size)"
                        )
                    } else if is_wide {
                        format!("{method} clip, {bits} bits into a depthwise Conv or a two-term matmul")
                    } else if signed {
                        format!("{method} clip")
                    } else {
                        format!("{method} clip, never negative")
                    };
                    if let Some(f) = floor {
                        why += &format!(", into matmuls on [{f:.4}, {clip:.4}]");
                    }
                    if let Some(db) = sqnr_db.get(&v) {
                        why += &format!(
                            "; at {} bits its matmul output's SQNR would be {db:.1} dB",
                            self.bits
                        );
                    }
                    if let Some(db) = measured_db.get(&v) {
                        why += &format!(
                            "; at {} bits alone the model's output SQNR measured {db:.1} dB",
                            self.bits
                        );
                    }
                    why
                },
            });
        }
        for (v, scale) in chain_residual_scales(model, &order) {
            let name = model.graph.value_name(v);
            if let Some(r) = cx.report.values.iter_mut().find(|r| r.value == name) {
                let clip = scale * crate::quant::levels(r.bits, r.signed) as f64;
                (r.scale, r.clip) = (scale, (-clip, clip));
                r.why = "residual stream, scale a power of two times its stream operand's".into();
            }
        }
        let magnitude = cx.options.matmul_operands.weights().magnitude;
        for w in weights {
            model.graph.value_mut(w.weight).weight_plan = Some(WeightPlan {
                granularity: Granularity::PerChannel { axis: w.axis },
                // int32 tap products have no saturating kernel to respect.
                magnitude: if w.depthwise { 127 } else { magnitude },
                terms: 1,
                residual_channels: None,
                ensemble_branch: None,
                activation_terms: w.activation_terms,
            });
        }
        if uncalibrated > 0 {
            cx.remark(
                "<quantize>",
                format!("{uncalibrated} values saw no samples and were left without a plan"),
            );
        }
        if cx.report.rewritten == 0 {
            return Err(Error::Usage(
                "quantize: no calibration statistics; run the calibrate pass first (--calibrate)"
                    .into(),
            ));
        }
        cx.report.matched = cx.report.rewritten;
        Ok(())
    }
}

/// A constant float weight of a MatMul, Gemm or Conv, with its output-channel axis, the
/// activation it multiplies and the 8-bit terms that activation enters as.
struct WeightOperand {
    weight: ValueId,
    axis: usize,
    activation: ValueId,
    activation_terms: u32,
    /// Computed as int32 tap sums: a 16-bit input and full int8 weights.
    depthwise: bool,
    /// Multiply-accumulates per sample (symbolic dims count 1).
    macs: i64,
    /// The output noise an 8-bit activation's rounding alone would cause, relative to the
    /// output's power (`rounding_noise_ratio`); None without calibration statistics.
    noise: Option<f64>,
}

/// What `weight_operands` decided.
struct WeightOperands {
    found: Vec<WeightOperand>,
    /// `measured=F`: the output SQNR (dB) each candidate activation's rounding at `bits` alone
    /// measured.
    measured_db: std::collections::HashMap<ValueId, f64>,
    /// `measured=F`: activations that get wider (their bits) for the activation × activation
    /// matmuls reading them (the weight matmuls' are in `found`).
    extra_wide: std::collections::HashMap<ValueId, u32>,
    /// Softmax outputs entering an activation × activation matmul as its left operand
    /// (attention probabilities), with the bits they get (`--probability-bits`, at most what
    /// int32 holds at the matmul's inner size).
    probabilities: std::collections::HashMap<ValueId, u32>,
}

/// Which activations may be planned wider than `bits`: `--wide-operands`, `--probability-bits`,
/// and the bound (`--max-dim`) an attention matmul's unknown inner size takes.
struct Widening {
    wide: WideOperands,
    probability_bits: u32,
    dim_bound: i64,
}

/// What `measured=F` measures with: the calibration probe (none without data) and the
/// residual-stream values it leaves alone.
struct Measuring<'a> {
    probe: Option<Probe<'a>>,
    residual: &'a std::collections::HashSet<ValueId>,
}

/// The weight operands of the model's matmuls and which activations enter them wide.
fn weight_operands(
    model: &Model,
    facts: &crate::ops::GraphFacts,
    order: &[NodeId],
    widening: Widening,
    method: CalibrationMethod,
    bits: u32,
    measuring: Measuring,
) -> Result<WeightOperands> {
    let Measuring { probe, residual } = measuring;
    let g = &model.graph;
    let mut found = Vec::new();
    // Left operands of activation × activation MatMuls, with their MACs and the widest bits
    // their two-term lowering allows.
    let mut attention: Vec<(ValueId, i64, u32)> = Vec::new();
    let mut probabilities = std::collections::HashMap::new();
    let known = |v: ValueId| -> Option<Vec<i64>> {
        let shape = facts.get(v)?.shape.as_ref()?;
        Some(shape.iter().map(|d| d.known().unwrap_or(1)).collect())
    };
    for &id in order {
        let op = g.op(id).expect("op");
        if let ("MatMul", "", [Some(a), Some(b)]) =
            (op.op_type(), op.domain(), g.inputs_of(id).as_slice())
        {
            if g.constant(*a).is_none() && g.constant(*b).is_none() {
                let outputs: i64 =
                    known(ValueId { node: id, slot: 0 }).map_or(1, |s| s.iter().product());
                let inner = facts
                    .get(*a)
                    .and_then(|f| f.shape.as_ref())
                    .and_then(|s| s.last())
                    .and_then(|d| d.known());
                // A symbolic k is bounded by --max-dim, as in the lowering's own bound.
                let k = inner.unwrap_or(widening.dim_bound).max(1);
                if let Some(wide_bits) = two_term_bits(k) {
                    attention.push((*a, outputs.max(1) * k, wide_bits));
                    let softmax = g
                        .producer(*a)
                        .is_some_and(|p| p.op_type() == "Softmax" && p.domain().is_empty());
                    let bits = wide_bits.min(widening.probability_bits);
                    if softmax && bits > 8 {
                        probabilities.insert(*a, bits);
                    }
                }
                continue;
            }
        }
        let Some(w) = g.input(id, 1).filter(|&w| {
            g.constant(w)
                .is_some_and(|t| t.dtype().ok() == Some(crate::ir::DataType::Float))
        }) else {
            continue;
        };
        let Some(activation) = g.input(id, 0) else {
            continue;
        };
        let tensor = g.constant(w).expect("constant weight");
        let dims = tensor.dims().to_vec();
        let axis = match op.op_type() {
            "MatMul" if op.domain().is_empty() && dims.len() == 2 => 1,
            "Gemm" if op.domain().is_empty() && dims.len() == 2 => {
                if op.attr_int("transB", 0)? != 0 { 0 } else { 1 }
            }
            "Conv" if op.domain().is_empty() => 0,
            _ => continue,
        };
        let depthwise = crate::ops::taps::DepthwiseTaps::of(op, &dims)?.is_some();
        let output = ValueId { node: id, slot: 0 };
        let outputs: i64 = facts
            .get(output)
            .and_then(|f| f.shape.as_ref())
            .map_or(1, |s| s.iter().map(|d| d.known().unwrap_or(1)).product());
        let weights: i64 = dims.iter().product();
        let channels = dims.get(axis).copied().unwrap_or(1).max(1);
        let noise = match (&g.value(activation).stats, &g.value(output).stats) {
            (Some(x), Some(y)) if x.count > 0 && y.count > 0 => {
                let levels = crate::quant::levels(bits, x.min < 0.0) as f64;
                let step = portable_clip(x.clip(method, levels)) / levels;
                let squares: f64 = tensor.decode()?.to_f64_vec().iter().map(|v| v * v).sum();
                Some(crate::quant::rounding_noise_ratio(
                    step,
                    squares / channels as f64,
                    y.sum_squares / y.count as f64,
                ))
            }
            _ => None,
        };
        found.push(WeightOperand {
            weight: w,
            axis,
            activation,
            activation_terms: 1,
            depthwise,
            macs: outputs.max(1) * (weights / channels).max(1),
            noise,
        });
    }
    let mut measured_db = std::collections::HashMap::new();
    // Activations widened for activation × activation matmuls (`measured` only).
    let mut extra_wide = std::collections::HashMap::new();
    let chosen: Vec<bool> = match widening.wide {
        WideOperands::None => vec![false; found.len()],
        WideOperands::All => vec![true; found.len()],
        WideOperands::Auto { sqnr_db } => {
            let limit = 10f64.powf(-sqnr_db / 10.0);
            found
                .iter()
                .map(|w| w.noise.is_some_and(|n| n > limit))
                .collect()
        }
        WideOperands::Budget(fraction) => {
            let total: i64 = found.iter().map(|w| w.macs).sum();
            let mut by_cost: Vec<usize> =
                (0..found.len()).filter(|&i| !found[i].depthwise).collect();
            by_cost.sort_by_key(|&i| (found[i].macs, i));
            let (mut spent, mut chosen) = (0i64, vec![false; found.len()]);
            for i in by_cost {
                if (spent + found[i].macs) as f64 > fraction * total as f64 {
                    break;
                }
                spent += found[i].macs;
                chosen[i] = true;
            }
            chosen
        }
        WideOperands::Measured(fraction) => {
            let candidates = wide_candidates(model, &found, &attention, residual);
            let noise = measured_noise(model, &candidates, &found, method, bits, probe)?;
            for (&v, &n) in &noise {
                if n > 0.0 {
                    measured_db.insert(v, -10.0 * n.log10());
                }
            }
            let total = found.iter().map(|w| w.macs).sum::<i64>()
                + attention.iter().map(|(_, m, _)| m).sum::<i64>();
            let chosen = spend_on_activations(&candidates, &noise, fraction, total);
            for &v in &chosen {
                let bits = attention
                    .iter()
                    .filter(|(a, _, _)| *a == v)
                    .map(|&(_, _, b)| b)
                    .min()
                    .unwrap_or(WIDE_OPERAND_BITS);
                extra_wide.insert(v, bits);
            }
            found
                .iter()
                .map(|w| !w.depthwise && chosen.contains(&w.activation))
                .collect()
        }
    };
    // An activation read by several matmuls has one plan: wide for all of them if any.
    let wide_activations: std::collections::HashSet<ValueId> = found
        .iter()
        .zip(&chosen)
        .filter(|&(w, &two)| two && !w.depthwise && g.constant(w.activation).is_none())
        .map(|(w, _)| w.activation)
        .collect();
    for w in found.iter_mut() {
        if !w.depthwise && wide_activations.contains(&w.activation) {
            w.activation_terms = 2;
        }
    }
    Ok(WeightOperands {
        found,
        measured_db,
        extra_wide,
        probabilities,
    })
}

/// The activation operands `measured=F` may widen: those of the (non-depthwise) weight matmuls
/// and the left operands of activation × activation MatMuls (attention probabilities), each
/// with the MACs of every matmul that reads it.
fn wide_candidates(
    model: &Model,
    found: &[WeightOperand],
    attention: &[(ValueId, i64, u32)],
    residual: &std::collections::HashSet<ValueId>,
) -> Vec<(ValueId, i64)> {
    let g = &model.graph;
    let mut cost: Vec<(ValueId, i64)> = Vec::new();
    let weight_reads = found
        .iter()
        .filter(|w| !w.depthwise)
        .map(|w| (w.activation, w.macs));
    for (v, macs) in weight_reads.chain(attention.iter().map(|&(v, m, _)| (v, m))) {
        // Residual-stream values are planned at their own (wider) bits already.
        if g.constant(v).is_some() || residual.contains(&v) {
            continue;
        }
        match cost.iter_mut().find(|(a, _)| *a == v) {
            Some((_, c)) => *c += macs,
            None => cost.push((v, macs)),
        }
    }
    cost
}

/// Per candidate activation: the model's output noise when it alone is rounded to its
/// `bits`-bit grid, measured on calibration samples (the float model otherwise; measured
/// leaving one out, with every candidate rounded in the reference, the choices were worse on
/// DINOv2-S); without data, the worst estimate of its weight matmuls (`WeightOperand::noise`;
/// none for attention operands).
fn measured_noise(
    model: &Model,
    candidates: &[(ValueId, i64)],
    found: &[WeightOperand],
    method: CalibrationMethod,
    bits: u32,
    probe: Option<Probe>,
) -> Result<std::collections::HashMap<ValueId, f64>> {
    let g = &model.graph;
    let Some(probe) = probe else {
        let mut estimate = std::collections::HashMap::new();
        for w in found
            .iter()
            .filter(|w| candidates.iter().any(|(v, _)| *v == w.activation))
        {
            if let Some(n) = w.noise {
                let worst = estimate.entry(w.activation).or_insert(n);
                *worst = f64::max(*worst, n);
            }
        }
        return Ok(estimate);
    };
    let mut sites = Vec::new();
    let mut measured_values = Vec::new();
    for &(v, _) in candidates {
        let Some(x) = g.value(v).stats.clone().filter(|s| s.count > 0) else {
            continue;
        };
        let signed = x.min < 0.0;
        let levels = crate::quant::levels(bits, signed);
        let clip = portable_clip(x.clip(method, levels as f64));
        if clip.is_nan() || clip <= 0.0 {
            continue;
        }
        let scale = (clip / levels as f64) as f32 as f64;
        sites.push(Perturbation::on_grid(v, scale, levels, signed));
        measured_values.push(v);
    }
    let noise = output_noise(model, probe, &sites)?;
    Ok(measured_values
        .into_iter()
        .zip(noise)
        .filter_map(|(v, n)| Some((v, n?)))
        .collect())
}

/// `measured=F`: the activations to widen, in order of output noise per extra MAC, while the
/// extra MACs stay within `fraction` of `total`. Ties go to the earlier candidate.
fn spend_on_activations(
    candidates: &[(ValueId, i64)],
    noise: &std::collections::HashMap<ValueId, f64>,
    fraction: f64,
    total: i64,
) -> std::collections::HashSet<ValueId> {
    let measured: Vec<(ValueId, i64)> = candidates
        .iter()
        .copied()
        .filter(|(v, _)| noise.get(v).is_some_and(|&n| n > 0.0))
        .collect();
    let per_mac = |(v, c): &(ValueId, i64)| noise[v] / (*c).max(1) as f64;
    let mut ranked: Vec<usize> = (0..measured.len()).collect();
    ranked.sort_by(|&a, &b| {
        per_mac(&measured[b])
            .total_cmp(&per_mac(&measured[a]))
            .then(a.cmp(&b))
    });
    let mut spent = 0i64;
    let mut wide = std::collections::HashSet::new();
    for i in ranked {
        let (v, c) = measured[i];
        if (spent + c) as f64 <= fraction * total as f64 {
            spent += c;
            wide.insert(v);
        }
    }
    wide
}

/// `clip` rounded up to 16 significant bits. The engines' float kernels (tract's Tanh and Exp)
/// differ in their last bits between CPUs, and so do the statistics calibration observes; on
/// the coarser grid the plan, and the compiled model, are the same on every machine (but for
/// a clip within an f32 ulp below a grid point), for at most 2^-16 of extra range.
fn portable_clip(clip: f64) -> f64 {
    if !(clip.is_finite() && clip > 0.0) {
        return clip;
    }
    let unit = 2f64.powi(clip.log2().floor() as i32 - 15);
    (clip / unit).ceil() * unit
}
