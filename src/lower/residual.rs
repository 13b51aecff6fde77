//! Residual expansion of a weight (REx, PIPE): `W ≈ Σ_{k=1..K} λ_k·q_k` per output channel,
//! every term on the same b-bit grid `[−m, m]`.
//!
//! `q_1` is the plain quantization (`engine::quantize_weight`, so one term is today's int8
//! weight bit for bit). Each further term quantizes what is left at `λ_{k+1} = λ_k / r` with
//! the integer ratio `r = 2m + 1`: the remainder is at most `λ_k/2 = (m + ½)·λ_{k+1}`, which
//! rounds onto `[−m, m]` with error at most `λ_{k+1}/2` (the tie at `m + ½` clamps back to `m`).
//! So after K terms `|W − Ŵ| ≤ λ_K/2 = λ_1 / (2·r^{K−1})` — geometric in K — and because `r` is
//! an integer, `Σ_k λ_k·q_k = λ_K · Σ_k r^{K−k}·q_k`: the terms' int32 sums align exactly.
//!
//! Group sparsity: only the channels in `kept` carry terms 2..K; the others keep `q_1` alone
//! (their terms ≥ 2 are zero), so the residual matmuls run on the kept columns only. Channels
//! are kept by the norm of their first residual, largest first.

use ndarray::{ArrayD, Axis};

use super::engine::quantize_weight;

/// The terms of a weight's expansion and how they align.
#[derive(Clone, Debug)]
pub struct Expansion {
    /// `q_1 … q_K`, shaped like the weight; terms ≥ 2 are zero outside `kept`.
    pub terms: Vec<ArrayD<i8>>,
    /// The output-channel axis of the weight.
    pub axis: usize,
    /// `λ_1` per channel.
    pub scales: Vec<f64>,
    /// `λ_k / λ_{k+1}`.
    pub ratio: i64,
    /// Channels that carry terms ≥ 2.
    pub kept: Vec<bool>,
}

/// `r = 2m + 1`: the largest ratio whose residual still rounds onto `[−m, m]`.
pub fn term_ratio(magnitude: i64) -> i64 {
    2 * magnitude + 1
}

/// The grid magnitude of `bits`-bit weights, no wider than `limit` (the operand policy's).
pub fn magnitude_of_bits(bits: u32, limit: i64) -> i64 {
    ((1i64 << (bits - 1)) - 1).min(limit)
}

/// Expands `w` (output channels along `axis`) into `order` terms on `[−magnitude, magnitude]`;
/// `kept` lists the channels that carry terms ≥ 2 (all when `None`).
pub fn expand_weight(
    w: &ArrayD<f32>,
    axis: usize,
    magnitude: i64,
    order: usize,
    kept: Option<&[usize]>,
) -> Expansion {
    let (first, scales) = quantize_weight(w, axis, magnitude);
    let channels = w.shape()[axis];
    let kept_mask: Vec<bool> = match kept {
        None => vec![true; channels],
        Some(list) => {
            let mut m = vec![false; channels];
            for &c in list {
                m[c] = true;
            }
            m
        }
    };
    let ratio = term_ratio(magnitude);
    let levels = magnitude as f64;
    // The remainder still to represent, per element, in f64.
    let mut remainder = w.mapv(|x| x as f64);
    let mut terms = vec![first];
    let mut term_scales = scales.clone();
    for _ in 1..order {
        let last = terms.last().expect("a first term");
        for (c, &s) in term_scales.iter().enumerate() {
            let mut r = remainder.index_axis_mut(Axis(axis), c);
            let q = last.index_axis(Axis(axis), c);
            ndarray::Zip::from(&mut r)
                .and(&q)
                .for_each(|r, &q| *r -= s * q as f64);
        }
        let mut next = ArrayD::<i8>::zeros(w.raw_dim());
        for c in 0..channels {
            term_scales[c] /= ratio as f64;
            if !kept_mask[c] {
                continue;
            }
            let s = term_scales[c];
            let r = remainder.index_axis(Axis(axis), c);
            let mut out = next.index_axis_mut(Axis(axis), c);
            ndarray::Zip::from(&mut out).and(&r).for_each(|o, &r| {
                *o = crate::quant::rounding::round_half_even(r / s).clamp(-levels, levels) as i8;
            });
        }
        terms.push(next);
    }
    Expansion {
        terms,
        axis,
        scales,
        ratio,
        kept: kept_mask,
    }
}

/// Per channel, the squared L2 norm of the first residual `W − λ_1·q_1`.
pub fn residual_norms(w: &ArrayD<f32>, axis: usize, magnitude: i64) -> Vec<f64> {
    let (q, scales) = quantize_weight(w, axis, magnitude);
    (0..w.shape()[axis])
        .map(|c| {
            let lane = w.index_axis(Axis(axis), c);
            let q = q.index_axis(Axis(axis), c);
            lane.iter()
                .zip(q.iter())
                .map(|(&x, &q)| (x as f64 - scales[c] * q as f64).powi(2))
                .sum()
        })
        .collect()
}

/// The `count` channels whose first residual `W − λ_1·q_1` has the largest L2 norm, in
/// channel order (ties go to the lower index).
pub fn channels_by_residual(
    w: &ArrayD<f32>,
    axis: usize,
    magnitude: i64,
    count: usize,
) -> Vec<usize> {
    let norms = residual_norms(w, axis, magnitude);
    let mut order: Vec<usize> = (0..norms.len()).collect();
    order.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]).then(a.cmp(&b)));
    let mut chosen: Vec<usize> = order.into_iter().take(count).collect();
    chosen.sort_unstable();
    chosen
}

impl Expansion {
    pub fn order(&self) -> usize {
        self.terms.len()
    }

    pub fn channels(&self) -> usize {
        self.scales.len()
    }

    /// The channels that carry terms ≥ 2, in order.
    pub fn kept_channels(&self) -> Vec<usize> {
        (0..self.channels()).filter(|&c| self.kept[c]).collect()
    }

    /// True when every channel carries every term.
    pub fn dense(&self) -> bool {
        self.kept.iter().all(|&k| k)
    }

    /// `r^{K−1}`: what the first term's sum is multiplied by to align with the last term.
    pub fn lead_multiplier(&self) -> i64 {
        self.ratio.pow(self.order() as u32 - 1)
    }

    /// The scale channel `c`'s aligned sum is in: `λ_K` where it carries every term, else `λ_1`.
    pub fn channel_scale(&self, c: usize) -> f64 {
        if self.kept[c] {
            self.scales[c] / self.lead_multiplier() as f64
        } else {
            self.scales[c]
        }
    }

    pub fn channel_scales(&self) -> Vec<f64> {
        (0..self.channels())
            .map(|c| self.channel_scale(c))
            .collect()
    }

    /// Term `k` (0-based) on the kept channels only, in channel order.
    pub fn compact_term(&self, k: usize) -> ArrayD<i8> {
        let kept = self.kept_channels();
        self.terms[k].select(Axis(self.axis), &kept)
    }

    /// The first `order` terms.
    pub fn truncated(&self, order: usize) -> Expansion {
        Expansion {
            terms: self.terms[..order].to_vec(),
            ..self.clone()
        }
    }

    /// `Ŵ = Σ_k λ_k·q_k`.
    pub fn approximation(&self) -> ArrayD<f64> {
        let mut w = ArrayD::<f64>::zeros(self.terms[0].raw_dim());
        for c in 0..self.channels() {
            let mut s = self.scales[c];
            let mut lane = w.index_axis_mut(Axis(self.axis), c);
            for term in &self.terms {
                let q = term.index_axis(Axis(self.axis), c);
                ndarray::Zip::from(&mut lane)
                    .and(&q)
                    .for_each(|w, &q| *w += s * q as f64);
                s /= self.ratio as f64;
            }
        }
        w
    }

    /// The stated bound of `|W − Ŵ|` per channel: half its last term's step.
    pub fn bound(&self) -> Vec<f64> {
        (0..self.channels())
            .map(|c| self.channel_scale(c) / 2.0)
            .collect()
    }

    /// Integer cost in b-bit matmuls of the weight's size: `1 + (K−1)·kept/C`.
    pub fn cost(&self) -> f64 {
        let kept = self.kept.iter().filter(|&&k| k).count() as f64;
        1.0 + (self.order() - 1) as f64 * kept / self.channels().max(1) as f64
    }

    /// The aligned integer weight `Σ_k r^{K−k}·q_k` per channel (`q_1` alone outside `kept`):
    /// what the accumulator computes, as one int32 weight.
    pub fn aligned(&self) -> ArrayD<i64> {
        let mut acc = self.terms[0].mapv(|q| q as i64);
        for (c, &kept) in self.kept.iter().enumerate() {
            if !kept {
                continue;
            }
            let mut lane = acc.index_axis_mut(Axis(self.axis), c);
            for term in &self.terms[1..] {
                let q = term.index_axis(Axis(self.axis), c);
                ndarray::Zip::from(&mut lane)
                    .and(&q)
                    .for_each(|a, &q| *a = *a * self.ratio + q as i64);
            }
        }
        acc
    }
}

/// How far an expansion is from its weight, against its bound.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpansionError {
    /// Largest `|W − Ŵ|`.
    pub max_abs: f64,
    /// Largest stated bound over the channels.
    pub bound: f64,
    /// `‖W − Ŵ‖₂ / ‖W‖₂`.
    pub relative_l2: f64,
    /// Elements whose error exceeds their channel's bound (none, by construction).
    pub over_bound: usize,
}

pub fn expansion_error(w: &ArrayD<f32>, e: &Expansion) -> ExpansionError {
    let approx = e.approximation();
    let bound = e.bound();
    let (mut max_abs, mut err2, mut norm2, mut over) = (0f64, 0f64, 0f64, 0usize);
    for (c, &b) in bound.iter().enumerate() {
        let lane = w.index_axis(Axis(e.axis), c);
        let a = approx.index_axis(Axis(e.axis), c);
        // f64 rounding of the remainders: a few ulps of the weight.
        let slack = b * 1e-9;
        for (&x, &y) in lane.iter().zip(a.iter()) {
            let d = (x as f64 - y).abs();
            max_abs = max_abs.max(d);
            err2 += d * d;
            norm2 += (x as f64).powi(2);
            if d > b + slack {
                over += 1;
            }
        }
    }
    ExpansionError {
        max_abs,
        bound: bound.iter().fold(0f64, |m, &b| m.max(b)),
        relative_l2: if norm2 > 0.0 {
            (err2 / norm2).sqrt()
        } else {
            0.0
        },
        over_bound: over,
    }
}

/// An activation entering its matmuls as `Σ_t base_t·a_t`: each term's base and the interval of
/// its stored integers after the zero point (one term for an 8-bit operand).
pub type ActivationTerms = [(i64, (i64, i64))];

type Span = (i128, i128);

fn within_int32(s: Span) -> Option<Span> {
    (s.0 >= i32::MIN as i128 && s.1 <= i32::MAX as i128).then_some(s)
}

fn span_mul(a: Span, b: Span) -> Span {
    let p = [a.0 * b.0, a.0 * b.1, a.1 * b.0, a.1 * b.1];
    (*p.iter().min().unwrap(), *p.iter().max().unwrap())
}

/// Interval of `Σ_t base_t·matmul(a_t, q)`, as the lowering adds it up, when every partial
/// result fits int32.
fn product_span(q: &ArrayD<i8>, axis: usize, activation: &ActivationTerms) -> Option<Span> {
    let mut total: Option<Span> = None;
    for &(base, a) in activation {
        let (lo, hi) = super::engine::matmul_range(q, axis, a);
        let p = within_int32((lo as i128, hi as i128))?;
        let p = within_int32(span_mul(p, (base as i128, base as i128)))?;
        total = Some(match total {
            None => p,
            Some(t) => within_int32((t.0 + p.0, t.1 + p.1))?,
        });
    }
    total
}

/// The interval of the accumulator the lowering builds for `e` (first term times `r^{K−1}`
/// plus the residual terms' Horner sum, scattered back when sparse), when every intermediate
/// fits int32 — interval arithmetic as the range proof (`lower::range`) redoes it on the graph.
pub fn accumulator_range(e: &Expansion, activation: &ActivationTerms) -> Option<(i64, i64)> {
    let first = product_span(&e.terms[0], e.axis, activation)?;
    if e.order() == 1 {
        return Some((first.0 as i64, first.1 as i64));
    }
    let r = e.ratio as i128;
    let mut residual = product_span(&e.compact_term(1), e.axis, activation)?;
    for k in 2..e.order() {
        let scaled = within_int32(span_mul(residual, (r, r)))?;
        let p = product_span(&e.compact_term(k), e.axis, activation)?;
        residual = within_int32((scaled.0 + p.0, scaled.1 + p.1))?;
    }
    // The multipliers are int32 constants too (an all-zero weight would otherwise keep any K).
    let lead = within_int32((0, e.lead_multiplier() as i128))?.1;
    let (multiplier, residual) = if e.dense() {
        ((lead, lead), residual)
    } else {
        // Channels without residual terms are multiplied by 1 and read a zero residual.
        ((1, lead), (residual.0.min(0), residual.1.max(0)))
    };
    let scaled = within_int32(span_mul(first, multiplier))?;
    let total = within_int32((scaled.0 + residual.0, scaled.1 + residual.1))?;
    Some((total.0 as i64, total.1 as i64))
}

/// A depthwise Conv's tap sum `Σ_taps x·w` over the aligned terms, `|x| ≤ levels`, bounded as
/// the range proof bounds it (per tap, the largest weight magnitude over the channels), fits
/// int32.
pub fn tap_sum_fits(e: &Expansion, levels: i64) -> bool {
    let aligned = e.aligned();
    let total: i128 = aligned
        .lanes(Axis(e.axis))
        .into_iter()
        .map(|lane| {
            lane.iter()
                .map(|w| w.unsigned_abs() as i128)
                .max()
                .unwrap_or(0)
        })
        .sum();
    total * levels as i128 <= i32::MAX as i128
}

/// Branch `branch` of an ensemble of `branches` single-term networks (PIPE's parallel form, our
/// construction): with `N = round(M·W/λ_1)` on `[−M·m, M·m]` — the weight on a grid M times
/// finer, which for `M = 2m + 1` is the aligned integer `r·q_1 + q_2` of two terms — branch `j`
/// holds `⌊(N + (j + i) mod M)/M⌋` at element `i`, on the b-bit grid `[−m, m]`, at `λ_1`. The
/// branches add up to `N` exactly (Hermite's identity, element by element), so the mean of
/// their weights is within `λ_1/(2M)` of W, and each branch rounds up and down in turn: the
/// mean of the branches' outputs equals the finer model's to first order, and every branch is a
/// plain b-bit network that runs independently of the others.
pub fn ensemble_branch(
    w: &ArrayD<f32>,
    axis: usize,
    magnitude: i64,
    branch: usize,
    branches: usize,
) -> Expansion {
    let (_, scales) = quantize_weight(w, axis, magnitude);
    let m = branches as f64;
    let (lo, hi) = (-magnitude * branches as i64, magnitude * branches as i64);
    let mut q = ArrayD::<i8>::zeros(w.raw_dim());
    let k = branches as i64;
    for (c, &s) in scales.iter().enumerate() {
        let lane = w.index_axis(Axis(axis), c);
        let mut out = q.index_axis_mut(Axis(axis), c);
        for (i, (o, &x)) in out.iter_mut().zip(lane.iter()).enumerate() {
            let n =
                (crate::quant::rounding::round_half_even(x as f64 * m / s) as i64).clamp(lo, hi);
            // The offset turns with the element: each branch's rounding is biased up and down
            // in turn instead of one way everywhere (which shifts every output by ~λ/4·Σx).
            let offset = (branch as i64 + i as i64) % k;
            *o = (n + offset).div_euclid(k) as i8;
        }
    }
    Expansion {
        terms: vec![q],
        axis,
        kept: vec![true; scales.len()],
        scales,
        ratio: term_ratio(magnitude),
    }
}

/// The error of an ensemble's mean weight `(λ_1/M)·Σ_j q^(j)` against its bound `λ_1/(2M)`.
pub fn ensemble_error(
    w: &ArrayD<f32>,
    axis: usize,
    magnitude: i64,
    branches: usize,
) -> ExpansionError {
    let (_, scales) = quantize_weight(w, axis, magnitude);
    let mut sum = ArrayD::<i64>::zeros(w.raw_dim());
    for j in 0..branches {
        let q = &ensemble_branch(w, axis, magnitude, j, branches).terms[0];
        ndarray::Zip::from(&mut sum)
            .and(q)
            .for_each(|s, &q| *s += q as i64);
    }
    let (mut max_abs, mut err2, mut norm2, mut over) = (0f64, 0f64, 0f64, 0usize);
    let mut bound = 0f64;
    for (c, &s) in scales.iter().enumerate() {
        let step = s / branches as f64;
        bound = bound.max(step / 2.0);
        let lane = w.index_axis(Axis(axis), c);
        let n = sum.index_axis(Axis(axis), c);
        for (&x, &n) in lane.iter().zip(n.iter()) {
            let d = (x as f64 - step * n as f64).abs();
            max_abs = max_abs.max(d);
            err2 += d * d;
            norm2 += (x as f64).powi(2);
            if d > step / 2.0 * (1.0 + 1e-9) {
                over += 1;
            }
        }
    }
    ExpansionError {
        max_abs,
        bound,
        relative_l2: if norm2 > 0.0 {
            (err2 / norm2).sqrt()
        } else {
            0.0
        },
        over_bound: over,
    }
}
