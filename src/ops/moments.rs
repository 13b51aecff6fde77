//! Data-free activation statistics (`--data-free`, in the spirit of DFQ): per channel (axis 1)
//! Gaussian moments, propagated through the float graph from what the model states itself.
//!
//! Sources: graph inputs are taken as standard normal per element (normalized images and
//! embeddings); a value a folded BatchNormalization produced is `N(β, γ²)` per channel (its
//! `Value::prior`), as is an unfolded one; LayerNormalization's output is `N(β_i, γ_i²)` over
//! its normalized axis. Linear ops with constant weights map means and variances (inputs taken
//! as independent), elementwise functions integrate over each channel's Gaussian, pooling keeps
//! the moments (a conservative reading: the real spread of a mean is smaller), and a shape op
//! that moves axis 1 mixes the channels into one. Each value's range is its channels' hull of
//! `mean ± sigmas·std`, cut to the bounds its op guarantees (ReLU ≥ 0, sigmoid in [0, 1]).
//! Values of ops it has no rule for get no statistics (they stay float, with a remark).

use crate::ir::{Array, DataType, Model, NodeId, Op, ValueId};
use crate::ops::GraphFacts;
use crate::quant::Observer;
use crate::{Error, Result};

/// Per-channel Gaussian moments of a float value and the bounds its op guarantees.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    /// One entry per channel of axis 1, or one for the whole tensor.
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    pub lo: f64,
    pub hi: f64,
}

impl Moments {
    fn tensor(mean: f64, var: f64) -> Moments {
        Moments {
            mean: vec![mean],
            var: vec![var],
            lo: f64::NEG_INFINITY,
            hi: f64::INFINITY,
        }
    }

    fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Channel `c`'s moments (a per-tensor value broadcasts).
    fn at(&self, c: usize) -> (f64, f64) {
        let i = if self.channels() == 1 { 0 } else { c };
        (self.mean[i], self.var[i])
    }

    /// The channels as one distribution (their equal-weight mixture).
    pub fn mixed(&self) -> Moments {
        let n = self.channels() as f64;
        let mean = self.mean.iter().sum::<f64>() / n;
        let square = self
            .mean
            .iter()
            .zip(&self.var)
            .map(|(m, v)| v + m * m)
            .sum::<f64>()
            / n;
        Moments {
            lo: self.lo,
            hi: self.hi,
            ..Moments::tensor(mean, (square - mean * mean).max(0.0))
        }
    }

    /// The statistics `quantize` reads: the hull of `mean ± sigmas·std` within the bounds.
    pub fn observer(&self, sigmas: f64) -> Observer {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for (m, v) in self.mean.iter().zip(&self.var) {
            let s = v.sqrt();
            lo = lo.min(m - sigmas * s);
            hi = hi.max(m + sigmas * s);
        }
        let (lo, hi) = (lo.max(self.lo), hi.min(self.hi));
        let (lo, hi) = if lo <= hi {
            (lo, hi)
        } else {
            (self.lo, self.hi)
        };
        let mix = self.mixed();
        let mean = mix.mean[0];
        Observer::estimated(lo, hi, mean, mix.var[0] + mean * mean)
    }
}

/// `E[f(x)]`, `Var[f(x)]` for `x ~ N(mean, var)`: Simpson's rule over ±8σ.
fn gaussian_map(f: &dyn Fn(f64) -> f64, mean: f64, var: f64) -> (f64, f64) {
    let s = var.sqrt();
    if s == 0.0 || !s.is_finite() {
        let y = f(mean);
        return (y, 0.0);
    }
    const STEPS: usize = 256;
    let h = 16.0 / STEPS as f64;
    let (mut e, mut e2, mut total) = (0.0, 0.0, 0.0);
    for i in 0..=STEPS {
        let z = -8.0 + h * i as f64;
        let w = match i {
            0 | STEPS => 1.0,
            i if i % 2 == 1 => 4.0,
            _ => 2.0,
        } * (-0.5 * z * z).exp();
        let y = f(mean + s * z);
        e += w * y;
        e2 += w * y * y;
        total += w;
    }
    let (e, e2) = (e / total, e2 / total);
    (e, (e2 - e * e).max(0.0))
}

/// The elementwise function of a unary op and the bounds it guarantees, if it has a rule.
#[allow(clippy::type_complexity)]
fn unary(
    model: &Model,
    id: NodeId,
    op: &Op,
) -> Result<Option<(Box<dyn Fn(f64) -> f64>, f64, f64)>> {
    let inf = f64::INFINITY;
    let scalar = |slot: usize| -> Option<f64> {
        let v = model.graph.input(id, slot)?;
        model
            .graph
            .constant(v)?
            .decode()
            .ok()?
            .to_f64_vec()
            .first()
            .copied()
    };
    Ok(Some(match op.op_type() {
        "Relu" => (Box::new(|x: f64| x.max(0.0)), 0.0, inf),
        "Identity" | "Dropout" => (Box::new(|x: f64| x), -inf, inf),
        "Clip" => {
            let (lo, hi) = if model.opset("").unwrap_or(13) < 11 {
                (
                    op.attr_float("min", f32::MIN)? as f64,
                    op.attr_float("max", f32::MAX)? as f64,
                )
            } else {
                (scalar(1).unwrap_or(-inf), scalar(2).unwrap_or(inf))
            };
            (Box::new(move |x: f64| x.clamp(lo, hi)), lo, hi)
        }
        "Sigmoid" => (Box::new(|x: f64| 1.0 / (1.0 + (-x).exp())), 0.0, 1.0),
        "HardSigmoid" => {
            let a = op.attr_float("alpha", 0.2)? as f64;
            let b = op.attr_float("beta", 0.5)? as f64;
            (
                Box::new(move |x: f64| (a * x + b).clamp(0.0, 1.0)),
                0.0,
                1.0,
            )
        }
        "HardSwish" => (
            Box::new(|x: f64| x * (x / 6.0 + 0.5).clamp(0.0, 1.0)),
            -0.375,
            inf,
        ),
        "Tanh" => (Box::new(f64::tanh), -1.0, 1.0),
        "Erf" => (Box::new(libm::erf), -1.0, 1.0),
        "Gelu" => {
            let tanh = op.attr_string("approximate")?.as_deref() == Some("tanh");
            let f: Box<dyn Fn(f64) -> f64> = if tanh {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                Box::new(move |x: f64| 0.5 * x * (1.0 + (c * (x + 0.044715 * x.powi(3))).tanh()))
            } else {
                Box::new(|x: f64| 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)))
            };
            (f, -0.17, inf)
        }
        "LeakyRelu" => {
            let a = op.attr_float("alpha", 0.01)? as f64;
            (
                Box::new(move |x: f64| if x < 0.0 { a * x } else { x }),
                -inf,
                inf,
            )
        }
        _ => return Ok(None),
    }))
}

/// A constant float input as a per-channel vector along axis 1 of an output of rank `rank`
/// (a scalar is one entry), if it broadcasts that way.
fn channel_constant(model: &Model, v: ValueId, rank: usize) -> Option<Vec<f64>> {
    let t = model.graph.constant(v)?;
    let a = t.decode().ok()?;
    if a.dtype() != DataType::Float {
        return None;
    }
    let shape = a.shape().to_vec();
    let values = a.to_f64_vec();
    if values.len() == 1 {
        return Some(values);
    }
    // [C, 1, …] aligned to axis 1 of the output.
    let lead = rank.checked_sub(shape.len())?;
    let axis = 1usize.checked_sub(lead)?;
    let ones_elsewhere = shape.iter().enumerate().all(|(i, &d)| i == axis || d == 1);
    ones_elsewhere.then_some(values)
}

fn elementwise(
    a: &Moments,
    b: &Moments,
    f: impl Fn((f64, f64), (f64, f64)) -> (f64, f64),
) -> Moments {
    // Channel counts that differ (neither one per tensor) cannot be paired: mix both.
    let (a, b) = if a.channels() != b.channels() && a.channels() != 1 && b.channels() != 1 {
        (a.mixed(), b.mixed())
    } else {
        (a.clone(), b.clone())
    };
    let n = a.channels().max(b.channels());
    let (mean, var) = (0..n).map(|c| f(a.at(c), b.at(c))).unzip();
    Moments {
        mean,
        var,
        lo: f64::NEG_INFINITY,
        hi: f64::INFINITY,
    }
}

/// Per-channel moments of `x · W` (+ bias) for a linear op whose weight maps input channel
/// `i` to output channel `o` with coefficients `coefficients(o)` = (input channel, w) pairs.
fn linear(
    x: &Moments,
    outputs: usize,
    coefficients: impl Fn(usize) -> Vec<(usize, f64)>,
    bias: Option<Vec<f64>>,
) -> Moments {
    let mut mean = Vec::with_capacity(outputs);
    let mut var = Vec::with_capacity(outputs);
    for o in 0..outputs {
        let (mut m, mut v) = (0.0, 0.0);
        for (i, w) in coefficients(o) {
            let (mi, vi) = x.at(i);
            m += w * mi;
            v += w * w * vi;
        }
        if let Some(b) = &bias {
            m += b[if b.len() == 1 { 0 } else { o }];
        }
        mean.push(m);
        var.push(v);
    }
    Moments {
        mean,
        var,
        lo: f64::NEG_INFINITY,
        hi: f64::INFINITY,
    }
}

fn f32_constant(model: &Model, v: Option<ValueId>) -> Option<ndarray::ArrayD<f32>> {
    match model.graph.constant(v?)?.decode().ok()? {
        Array::F32(a) => Some(a),
        _ => None,
    }
}

/// Moments of the output of node `id`, if there is a rule for its op and its inputs have
/// moments.
fn moments_of(
    model: &Model,
    facts: &GraphFacts,
    id: NodeId,
    known: &std::collections::HashMap<ValueId, Moments>,
) -> Result<Option<Moments>> {
    let g = &model.graph;
    let op = g.op(id).expect("an op");
    let y = ValueId { node: id, slot: 0 };
    if let Some(prior) = &g.value(y).prior {
        let (mean, std): (Vec<f64>, Vec<f64>) = prior.iter().copied().unzip();
        return Ok(Some(Moments {
            var: std.iter().map(|s| s * s).collect(),
            mean,
            lo: f64::NEG_INFINITY,
            hi: f64::INFINITY,
        }));
    }
    let rank = facts.get(y).and_then(|f| f.rank()).unwrap_or(0);
    // A float constant input (a class token, position embeddings) is a distribution too: per
    // channel when it broadcasts along axis 1, else its values as one.
    let input = |slot: usize| {
        let v = g.input(id, slot)?;
        if let Some(m) = known.get(&v) {
            return Some(m.clone());
        }
        if let Some(c) = channel_constant(model, v, rank) {
            return Some(Moments {
                var: vec![0.0; c.len()],
                lo: c.iter().copied().fold(f64::INFINITY, f64::min),
                hi: c.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                mean: c,
            });
        }
        let t = f32_constant(model, Some(v))?;
        let values: Vec<f64> = t.iter().map(|&x| x as f64).collect();
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        Some(Moments {
            lo: values.iter().copied().fold(f64::INFINITY, f64::min),
            hi: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ..Moments::tensor(mean, var)
        })
    };
    if !op.domain().is_empty() {
        return Ok(None);
    }
    if let Some((f, lo, hi)) = unary(model, id, op)? {
        let Some(x) = input(0) else { return Ok(None) };
        let (mean, var) = x
            .mean
            .iter()
            .zip(&x.var)
            .map(|(&m, &v)| gaussian_map(&*f, m, v))
            .unzip();
        return Ok(Some(Moments { mean, var, lo, hi }));
    }
    Ok(match op.op_type() {
        "Conv" => {
            let (Some(x), Some(w)) = (input(0), f32_constant(model, g.input(id, 1))) else {
                return Ok(None);
            };
            let group = op.attr_int("group", 1)? as usize;
            let (m, per_group) = (w.shape()[0], w.shape()[1]);
            // Moments per input channel only when there is one entry per channel.
            let x = if x.channels() == 1 || x.channels() == per_group * group {
                x
            } else {
                x.mixed()
            };
            let bias =
                f32_constant(model, g.input(id, 2)).map(|b| b.iter().map(|&v| v as f64).collect());
            let outs_per_group = m / group.max(1);
            Some(linear(
                &x,
                m,
                |o| {
                    let first = (o / outs_per_group.max(1)) * per_group;
                    let lane = w.index_axis(ndarray::Axis(0), o);
                    let taps = lane.len() / per_group.max(1);
                    lane.iter()
                        .enumerate()
                        .map(|(k, &v)| (first + k / taps.max(1), v as f64))
                        .collect()
                },
                bias,
            ))
        }
        "MatMul" if g.input(id, 1).is_some_and(|b| g.constant(b).is_none()) => {
            // Activation × activation (attention): Σ_k a_k·b_k over the inner dimension.
            let (Some(a), Some(b)) = (input(0), input(1)) else {
                return Ok(None);
            };
            let inner = g
                .input(id, 1)
                .and_then(|b| facts.get(b))
                .and_then(|f| f.shape.as_ref())
                .and_then(|s| s.len().checked_sub(2).and_then(|i| s[i].known()))
                .unwrap_or(64) as f64;
            let (a, b) = (a.mixed(), b.mixed());
            let (ma, va, mb, vb) = (a.mean[0], a.var[0], b.mean[0], b.var[0]);
            let m = ma * mb;
            let var = ((va + ma * ma) * (vb + mb * mb) - m * m).max(0.0);
            Some(Moments::tensor(inner * m, inner * var))
        }
        "Gather" => {
            // Rows of a constant table (embeddings): the table's values as one distribution;
            // picking from an activation (a class token) keeps its moments, mixed.
            let Some(table) = f32_constant(model, g.input(id, 0)) else {
                return Ok(input(0).map(|x| x.mixed()));
            };
            let n = table.len().max(1) as f64;
            let mean = table.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = table
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            let (lo, hi) = table
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                    (l.min(v as f64), h.max(v as f64))
                });
            Some(Moments {
                lo,
                hi,
                ..Moments::tensor(mean, var)
            })
        }
        "Where" => {
            // The selected operand's moments; a constant alternative (a mask's fill) only
            // widens the bounds.
            let Some(a) = input(1) else { return Ok(None) };
            match input(2) {
                Some(b) => Some(elementwise(&a.mixed(), &b.mixed(), |(ma, va), (mb, vb)| {
                    let m = (ma + mb) / 2.0;
                    (m, ((va + ma * ma + vb + mb * mb) / 2.0 - m * m).max(0.0))
                })),
                None => {
                    let fill = g
                        .input(id, 2)
                        .and_then(|v| channel_constant(model, v, rank));
                    let fill = fill.and_then(|f| f.first().copied()).unwrap_or(0.0);
                    Some(Moments {
                        lo: a.lo.min(fill),
                        hi: a.hi.max(fill),
                        ..a
                    })
                }
            }
        }
        "Slice" | "Expand" | "Tile" => input(0).map(|x| x.mixed()),
        "Gemm" | "MatMul" => {
            let (Some(x), Some(w)) = (input(0), f32_constant(model, g.input(id, 1))) else {
                return Ok(None);
            };
            if w.ndim() != 2 {
                return Ok(None);
            }
            // Columns of a MatMul of rank 3 or more lie along the last axis, not axis 1: their
            // moments are mixed into the tensor's.
            let x = if rank == 2 { x } else { x.mixed() };
            let trans = op.op_type() == "Gemm" && op.attr_int("transB", 0)? != 0;
            let w = if trans { w.t().to_owned() } else { w };
            let (k, n) = (w.shape()[0], w.shape()[1]);
            let x = if x.channels() == 1 || x.channels() == k {
                x
            } else {
                x.mixed()
            };
            let (alpha, beta) = if op.op_type() == "Gemm" {
                (
                    op.attr_float("alpha", 1.0)? as f64,
                    op.attr_float("beta", 1.0)? as f64,
                )
            } else {
                (1.0, 1.0)
            };
            let bias = match g.input(id, 2) {
                Some(c) => match channel_constant(model, c, 2) {
                    Some(b) => Some(b.iter().map(|v| v * beta).collect()),
                    None => return Ok(None),
                },
                None => None,
            };
            let out = linear(
                &x,
                n,
                |o| (0..k).map(|i| (i, alpha * w[[i, o]] as f64)).collect(),
                bias,
            );
            Some(if rank == 2 { out } else { out.mixed() })
        }
        "BatchNormalization" => {
            let (Some(scale), Some(bias)) = (
                f32_constant(model, g.input(id, 1)),
                f32_constant(model, g.input(id, 2)),
            ) else {
                return Ok(None);
            };
            Some(Moments {
                mean: bias.iter().map(|&b| b as f64).collect(),
                var: scale.iter().map(|&s| (s as f64).powi(2)).collect(),
                lo: f64::NEG_INFINITY,
                hi: f64::INFINITY,
            })
        }
        "LayerNormalization" => {
            let Some(scale) = f32_constant(model, g.input(id, 1)) else {
                return Ok(None);
            };
            let bias = f32_constant(model, g.input(id, 2));
            let mean: Vec<f64> = (0..scale.len())
                .map(|i| {
                    bias.as_ref()
                        .map_or(0.0, |b| b.iter().nth(i).copied().unwrap_or(0.0) as f64)
                })
                .collect();
            let var = scale.iter().map(|&s| (s as f64).powi(2)).collect();
            Some(
                Moments {
                    mean,
                    var,
                    lo: f64::NEG_INFINITY,
                    hi: f64::INFINITY,
                }
                .mixed(),
            )
        }
        "Add" | "Sub" | "Mul" | "Div" => {
            // Constant operands arrive as distributions without spread (`input`).
            let sign = if op.op_type() == "Sub" { -1.0 } else { 1.0 };
            match (input(0), input(1)) {
                (Some(a), Some(b)) => Some(match op.op_type() {
                    "Add" | "Sub" => {
                        elementwise(&a, &b, |(ma, va), (mb, vb)| (ma + sign * mb, va + vb))
                    }
                    "Mul" => elementwise(&a, &b, |(ma, va), (mb, vb)| {
                        let m = ma * mb;
                        (m, ((va + ma * ma) * (vb + mb * mb) - m * m).max(0.0))
                    }),
                    // By a constant (no spread) that is never 0.
                    _ if b.var.iter().all(|&v| v == 0.0) && b.mean.iter().all(|&m| m != 0.0) => {
                        elementwise(&a, &b, |(ma, va), (mb, _)| (ma / mb, va / (mb * mb)))
                    }
                    _ => return Ok(None),
                }),
                _ => None,
            }
        }
        // Pooling keeps each channel's moments (and its bounds).
        "MaxPool" | "AveragePool" | "GlobalAveragePool" | "GlobalMaxPool" => input(0),
        "ReduceMean" => {
            // Over the spatial axes it is a pooling; over channels a mixture.
            input(0).map(|x| if rank >= 2 { x } else { x.mixed() })
        }
        "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" | "Transpose" => {
            let Some(x) = input(0) else { return Ok(None) };
            let dim1 = |v: Option<ValueId>| {
                v.and_then(|v| facts.get(v))
                    .and_then(|f| f.shape.as_ref())
                    .and_then(|s| s.get(1).and_then(|d| d.known()))
            };
            let keeps = match dim1(g.input(id, 0)) {
                Some(c) => {
                    dim1(Some(y)) == Some(c)
                        && c as usize == x.channels()
                        && op.op_type() != "Transpose"
                }
                None => false,
            };
            Some(if keeps || x.channels() == 1 {
                x
            } else {
                x.mixed()
            })
        }
        "Concat" => {
            let axis = op.attr_int("axis", 0)?;
            let parts: Option<Vec<Moments>> = (0..g.inputs_of(id).len()).map(input).collect();
            let Some(parts) = parts else { return Ok(None) };
            let along_channels = axis == 1 || (rank > 1 && axis == 1 - rank as i64);
            let (lo, hi) = parts
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| {
                    (l.min(p.lo), h.max(p.hi))
                });
            let mut out = Moments {
                mean: vec![],
                var: vec![],
                lo,
                hi,
            };
            // Along the channels each part contributes its channel count; a per-tensor part is
            // repeated, and a part whose count is not known makes the result one mixture.
            let channels = |slot: usize| {
                g.input(id, slot)
                    .and_then(|v| facts.get(v))
                    .and_then(|f| f.shape.as_ref())
                    .and_then(|s| s.get(1).and_then(|d| d.known()))
                    .map(|c| c as usize)
            };
            let mut per_channel = along_channels;
            for (slot, p) in parts.iter().enumerate() {
                let p = match (along_channels, channels(slot)) {
                    (true, Some(c)) if p.channels() == c => p.clone(),
                    (true, Some(c)) if p.channels() == 1 => Moments {
                        mean: vec![p.mean[0]; c],
                        var: vec![p.var[0]; c],
                        ..p.clone()
                    },
                    _ => {
                        per_channel = false;
                        p.mixed()
                    }
                };
                out.mean.extend(&p.mean);
                out.var.extend(&p.var);
            }
            Some(if per_channel { out } else { out.mixed() })
        }
        "Softmax" => {
            let n = facts
                .get(y)
                .and_then(|f| f.shape.as_ref())
                .and_then(|s| s.last().and_then(|d| d.known()))
                .unwrap_or(2) as f64;
            Some(Moments {
                lo: 0.0,
                hi: 1.0,
                ..Moments::tensor(1.0 / n, 1.0 / n)
            })
        }
        _ => None,
    })
}

/// What `estimate` found.
pub struct Estimate {
    /// Statistics of every float value an op produces that a rule reached.
    pub stats: Vec<(ValueId, Observer)>,
    /// The op types that had no rule (their values, and what depends on them, get none).
    pub missing: Vec<String>,
}

/// Estimated statistics of the float values of `model`, with `sigmas` of spread.
pub fn estimate(model: &Model, facts: &GraphFacts, sigmas: f64) -> Result<Estimate> {
    if !(sigmas.is_finite() && sigmas > 0.0) {
        return Err(Error::Usage(format!(
            "data-free: sigmas={sigmas} is not positive"
        )));
    }
    let g = &model.graph;
    let mut known = std::collections::HashMap::new();
    for &id in g.inputs() {
        let v = ValueId { node: id, slot: 0 };
        if facts.get(v).and_then(|f| f.dtype) == Some(DataType::Float) {
            known.insert(v, Moments::tensor(0.0, 1.0));
        }
    }
    let mut out: Vec<(ValueId, Observer)> = known
        .iter()
        .map(|(&v, m)| (v, m.observer(sigmas)))
        .collect();
    out.sort_by_key(|(v, _)| (v.node, v.slot));
    let mut missing = std::collections::BTreeSet::new();
    for id in g.topological_order()? {
        if g.op(id).is_none() {
            continue;
        }
        let y = ValueId { node: id, slot: 0 };
        if facts.get(y).and_then(|f| f.dtype) != Some(DataType::Float) || g.constant(y).is_some() {
            continue;
        }
        let op = g.op(id).expect("an op");
        if op.is("Split") && op.domain().is_empty() {
            // Every part as the whole, mixed unless it keeps the channels.
            if let Some(x) = g.input(id, 0).and_then(|v| known.get(&v)).cloned() {
                let part = if op.attr_int("axis", 0)? == 1 {
                    x.mixed()
                } else {
                    x
                };
                for v in g.outputs_of(id).collect::<Vec<_>>() {
                    out.push((v, part.observer(sigmas)));
                    known.insert(v, part.clone());
                }
                continue;
            }
        }
        match moments_of(model, facts, id, &known)? {
            Some(m) => {
                out.push((y, m.observer(sigmas)));
                known.insert(y, m);
            }
            None => {
                // An op whose inputs all have moments lacks a rule; the others only inherit
                // the gap.
                let inherited = g.inputs_of(id).into_iter().flatten().any(|v| {
                    g.constant(v).is_none()
                        && facts.get(v).and_then(|f| f.dtype) == Some(DataType::Float)
                        && !known.contains_key(&v)
                });
                if !inherited {
                    missing.insert(g.op(id).expect("an op").op_type().to_string());
                }
            }
        }
    }
    Ok(Estimate {
        stats: out,
        missing: missing.into_iter().collect(),
    })
}
