//! `smooth-layer-norm(alpha=0.5)`: moves the outlier channels of a LayerNormalization's output
//! into the weights of the matmuls that read it (SmoothQuant, Xiao et al. 2023, §4), exactly
//! in float, so that one per-tensor activation scale fits every channel.
//!
//! Rewrite, for `Y = LayerNormalization(X, γ, β)` over the last axis whose every reader is a
//! `MatMul(Y, W)` with a constant 2-D weight (the attention block's Q/K/V, the MLP's FC1):
//! per channel c, `s_c = max|Y_c|^α / max_j |W_cj|^(1−α)` (calibration's per-channel extremes,
//! the weights of all readers), then `γ'_c = γ_c/s_c`, `β'_c = β_c/s_c`, `W'_cj = s_c·W_cj`:
//! `Y'·W' = Y·W`. The statistics of `Y'` follow from `Y`'s per-channel ones (no histogram:
//! their clip is the extreme). Measured on DINOv2-S's LayerNorm outputs, the 8-bit rounding
//! noise falls by 5–13 dB; the per-output-channel weight grids absorb the scaled rows.
//! An analysis-driven rewrite: needs `calibrate` first; values without per-channel statistics
//! are left alone (remark). `alpha = 0` turns the pass off.

use std::sync::Arc;

use super::prelude::*;

use crate::Error;
use crate::ir::{Array, Graph};
use crate::pass::matcher::out;

pub struct SmoothLayerNorm {
    alpha: f64,
}

impl SmoothLayerNorm {
    pub fn new(options: &PassOptions) -> Result<SmoothLayerNorm> {
        let alpha = options.get::<f64>("alpha")?;
        if !(0.0..=1.0).contains(&alpha) {
            return Err(Error::Usage(format!(
                "smooth-layer-norm: alpha={alpha} is outside 0..=1"
            )));
        }
        Ok(SmoothLayerNorm { alpha })
    }
}

/// A LayerNormalization whose output only constant-weight MatMuls read (and Shapes).
struct Found {
    node: NodeId,
    scale: ValueId,
    bias: Option<ValueId>,
    /// (MatMul, its weight) per reader.
    readers: Vec<(NodeId, ValueId)>,
}

fn f32_constant(g: &Graph, v: ValueId) -> Option<ndarray::ArrayD<f32>> {
    match g.constant(v)?.decode().ok()? {
        Array::F32(a) => Some(a),
        _ => None,
    }
}

/// `Err(reason)` when the node is a LayerNormalization this pass leaves alone.
fn find(g: &Graph, id: NodeId, channels: usize) -> std::result::Result<Found, String> {
    let op = g.op(id).expect("op");
    let axis = op.attr_int("axis", -1).map_err(|e| e.to_string())?;
    let y = out(id);
    let scale = g.input(id, 1).ok_or("no scale input")?;
    let gamma = f32_constant(g, scale).ok_or("the scale is not an f32 constant")?;
    if gamma.len() != channels || gamma.ndim() != 1 {
        return Err(format!(
            "the scale has {} elements, not one per channel",
            gamma.len()
        ));
    }
    if axis != -1 {
        // The channel statistics are over the last axis.
        return Err(format!("normalizes from axis {axis}, not -1"));
    }
    let bias = g.input(id, 2);
    if let Some(b) = bias {
        let beta = f32_constant(g, b).ok_or("the bias is not an f32 constant")?;
        if beta.len() != channels {
            return Err("the bias has not one element per channel".into());
        }
    }
    if g.outputs_of(id).skip(1).any(|v| !g.uses(v).is_empty()) {
        return Err("its mean or inverse deviation is read".into());
    }
    if g.is_graph_output(y) {
        return Err("its output is a graph output".into());
    }
    let mut readers = Vec::new();
    for u in g.uses(y) {
        let reader = g.op(u.node).ok_or("read by a graph output")?;
        // A Shape reads no values.
        if reader.is("Shape") {
            continue;
        }
        let weight = g.input(u.node, 1);
        let w = weight.and_then(|w| f32_constant(g, w));
        match (reader.is("MatMul"), u.port, w) {
            (true, crate::ir::Port::Input(0), Some(w))
                if w.ndim() == 2 && w.shape()[0] == channels =>
            {
                readers.push((u.node, weight.expect("weight")));
            }
            _ => {
                return Err(format!(
                    "read by {}, not only by MatMuls with constant 2-D weights",
                    g.describe(u.node)
                ));
            }
        }
    }
    if readers.is_empty() {
        return Err("no reader".into());
    }
    Ok(Found {
        node: id,
        scale,
        bias,
        readers,
    })
}

impl Pass for SmoothLayerNorm {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        if self.alpha == 0.0 {
            return Ok(());
        }
        for id in model.graph.topological_order()? {
            let Some(op) = model.graph.op(id) else {
                continue;
            };
            if !op.is("LayerNormalization") {
                continue;
            }
            cx.report.matched += 1;
            let who = model.graph.describe(id);
            let y = out(id);
            let Some(stats) = model.graph.value(y).stats.clone() else {
                return Err(Error::Usage(format!(
                    "smooth-layer-norm: {who} has no calibration statistics (run calibrate first)"
                )));
            };
            let Some(channels) = stats.channels.as_ref() else {
                cx.remark(who, "no per-channel statistics: left alone");
                cx.report.skipped += 1;
                continue;
            };
            let found = match find(&model.graph, id, channels.min.len()) {
                Ok(f) => f,
                Err(reason) => {
                    cx.remark(who, reason);
                    cx.report.skipped += 1;
                    continue;
                }
            };
            let divisors = self.divisors(&model.graph, &found, &channels.abs_max());
            let Some(smoothed) = stats.divided_per_channel(&divisors) else {
                cx.remark(who, "no usable per-channel statistics: left alone");
                cx.report.skipped += 1;
                continue;
            };
            let before = stats.abs_max();
            rewrite(model, &found, &divisors)?;
            let after = smoothed.abs_max();
            // y now holds y/s: a new name, so that nothing (`check --per-layer`,
            // `--sensitivity`) takes it for the input model's value.
            let name = model
                .graph
                .fresh_name(&format!("{}/smoothed", model.graph.value_name(y)));
            model.graph.rename_value(y, &name)?;
            model.graph.value_mut(y).stats = Some(Arc::new(smoothed));
            let spread = |d: &[f64]| {
                let (lo, hi) = d
                    .iter()
                    .fold((f64::INFINITY, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
                hi / lo
            };
            cx.remark(
                model.graph.describe(id),
                format!(
                    "max |y| {before:.3} → {after:.3}; channel divisors spread {:.1}× over {} readers",
                    spread(&divisors),
                    found.readers.len()
                ),
            );
            cx.report.rewritten += 1;
        }
        Ok(())
    }
}

impl SmoothLayerNorm {
    /// `s_c = max|Y_c|^α / max_j |W_cj|^(1−α)`, normalized to a geometric mean of 1 (the
    /// activation grid's scale absorbs any common factor); 1 where a channel is all zeros.
    fn divisors(&self, g: &Graph, found: &Found, abs_max: &[f64]) -> Vec<f64> {
        let mut w_max = vec![0f64; abs_max.len()];
        for &(_, w) in &found.readers {
            let w = f32_constant(g, w).expect("checked in find");
            for (c, row) in w.outer_iter().enumerate() {
                let m = row.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
                w_max[c] = w_max[c].max(m);
            }
        }
        let raw: Vec<Option<f64>> = abs_max
            .iter()
            .zip(&w_max)
            .map(|(&a, &w)| {
                (a > 0.0 && w > 0.0).then(|| a.powf(self.alpha) / w.powf(1.0 - self.alpha))
            })
            .collect();
        let logs: Vec<f64> = raw.iter().flatten().map(|s| s.ln()).collect();
        let center = if logs.is_empty() {
            0.0
        } else {
            logs.iter().sum::<f64>() / logs.len() as f64
        };
        // f32 divisors: the rewritten constants are f32, and the statistics must describe them.
        raw.iter()
            .map(|s| s.map_or(1.0, |s| (s.ln() - center).exp() as f32 as f64))
            .collect()
    }
}

/// `γ/s`, `β/s` and `s·W` for every reader.
fn rewrite(model: &mut Model, found: &Found, divisors: &[f64]) -> Result<()> {
    let g = &model.graph;
    let gamma = f32_constant(g, found.scale).expect("checked in find");
    let beta = found
        .bias
        .map(|b| f32_constant(g, b).expect("checked in find"));
    let weights: Vec<_> = found
        .readers
        .iter()
        .map(|&(mm, w)| (mm, w, f32_constant(g, w).expect("checked in find")))
        .collect();
    let divide = |a: &ndarray::ArrayD<f32>| -> Result<Array> {
        let v: Vec<f32> = a
            .iter()
            .zip(divisors)
            .map(|(&x, &d)| (x as f64 / d) as f32)
            .collect();
        Array::from_vec(a.shape(), v)
    };
    let mut rw = Rewriter::new(model, found.node);
    let g_new = rw.constant("smoothed_scale", &divide(&gamma)?)?;
    rw.set_input(found.node, 1, Some(g_new));
    rw.erase_if_dead(found.scale.node);
    if let (Some(b), Some(beta)) = (found.bias, beta) {
        let b_new = rw.constant("smoothed_bias", &divide(&beta)?)?;
        rw.set_input(found.node, 2, Some(b_new));
        rw.erase_if_dead(b.node);
    }
    for (mm, w, weight) in weights {
        let mut scaled = weight.clone();
        for (c, mut row) in scaled.outer_iter_mut().enumerate() {
            row.mapv_inplace(|v| (v as f64 * divisors[c]) as f32);
        }
        let shape = scaled.shape().to_vec();
        let values: Vec<f32> = scaled.iter().copied().collect();
        let w_new = rw.constant("smoothed_weight", &Array::from_vec(&shape, values)?)?;
        rw.set_input(mm, 1, Some(w_new));
        rw.erase_if_dead(w.node);
    }
    rw.finish()
}
