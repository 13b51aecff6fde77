//! `replace-gelu-with-relu(correct-relu-bias)`: every `Gelu` (and `com.microsoft.QuickGelu`)
//! becomes `Relu`, so the fc1 output stays 8-bit integer (`Max(q, zp)`).
//!
//! This changes the function: the paper behind it (integer Swin without GELU) recovers the
//! accuracy by distillation, which a compiler cannot do. `correct-relu-bias=true` compensates the
//! mean shift data-free: with the calibration mean μ and deviation σ of the GELU input, modelled
//! as N(μ, σ²), `δ = E[GELU(x)] − E[ReLU(x)]`, and the next layer's bias gains `δ·Σ_k W_kj`
//! (a `MatMul` with a constant weight, followed by a constant bias `Add` or given a new one).
//! Preconditions: the input was calibrated (for the correction). Not exact, by design.

use super::prelude::*;

use crate::Error;
use crate::ir::{Array, Graph};
use crate::pass::matcher::{out, sole_reader};
use crate::quant::kernels::{gelu, quick_gelu};

pub struct ReplaceGeluWithRelu {
    correct_bias: bool,
}

impl ReplaceGeluWithRelu {
    pub fn new(options: &PassOptions) -> Result<ReplaceGeluWithRelu> {
        Ok(ReplaceGeluWithRelu {
            correct_bias: options.get("correct-relu-bias")?,
        })
    }
}

/// `E[f(x)] − E[relu(x)]` for x ~ N(μ, σ²), by Simpson's rule over μ ± 8σ.
pub fn mean_shift(f: impl Fn(f64) -> f64, mu: f64, sigma: f64) -> f64 {
    if sigma <= 0.0 {
        return f(mu) - mu.max(0.0);
    }
    const STEPS: usize = 4000;
    let (a, b) = (mu - 8.0 * sigma, mu + 8.0 * sigma);
    let h = (b - a) / STEPS as f64;
    let density = |x: f64| {
        let z = (x - mu) / sigma;
        (-0.5 * z * z).exp() / (sigma * (2.0 * std::f64::consts::PI).sqrt())
    };
    let g = |x: f64| (f(x) - x.max(0.0)) * density(x);
    let mut total = g(a) + g(b);
    for i in 1..STEPS {
        let w = if i % 2 == 1 { 4.0 } else { 2.0 };
        total += w * g(a + i as f64 * h);
    }
    total * h / 3.0
}

impl Pass for ReplaceGeluWithRelu {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        for id in model.graph.topological_order()? {
            let Some(op) = model.graph.op(id).cloned() else {
                continue;
            };
            let quick = op.domain() == "com.microsoft" && op.op_type() == "QuickGelu";
            if !op.is("Gelu") && !quick {
                continue;
            }
            cx.report.matched += 1;
            let Some(x) = model.graph.input(id, 0) else {
                continue;
            };
            let stats = model.graph.value(x).stats.clone();
            let mut rw = Rewriter::new(model, id);
            let relu = rw.op("Relu", "relu", &[x], vec![])?;
            rw.replace(out(id), relu)?;
            rw.erase_if_dead(id);
            rw.finish()?;
            cx.report.rewritten += 1;
            if !self.correct_bias {
                continue;
            }
            let who = model.graph.describe(relu.node);
            let Some(stats) = stats.filter(|s| s.count > 0) else {
                return Err(Error::Usage(format!(
                    "replace-gelu-with-relu: correct-relu-bias needs calibration statistics of the input of {who} (run calibrate first)"
                )));
            };
            let f: fn(f64) -> f64 = if quick { quick_gelu } else { gelu };
            let delta = mean_shift(f, stats.mean(), stats.std());
            match correct_next_bias(model, relu, delta)? {
                Some(n) => cx.remark(
                    who,
                    format!(
                        "mean shift {delta:.5} (μ={:.4}, σ={:.4}) added to {n} bias values",
                        stats.mean(),
                        stats.std()
                    ),
                ),
                None => cx.remark(
                    who,
                    "no MatMul with a constant weight follows: no correction",
                ),
            }
        }
        Ok(())
    }
}

fn f32_constant(g: &Graph, v: ValueId) -> Option<ndarray::ArrayD<f32>> {
    match g.constant(v)?.decode().ok()? {
        Array::F32(a) => Some(a),
        _ => None,
    }
}

/// Adds `delta · Σ_k W[k, j]` to the bias after the MatMul reading `y`; returns how many
/// bias values changed.
fn correct_next_bias(model: &mut Model, y: ValueId, delta: f64) -> Result<Option<usize>> {
    let g = &model.graph;
    let Some(mm) = sole_reader(g, y, "MatMul") else {
        return Ok(None);
    };
    let Some(w) = g.input(mm, 1).and_then(|w| f32_constant(g, w)) else {
        return Ok(None);
    };
    if w.ndim() != 2 || g.input(mm, 0) != Some(y) {
        return Ok(None);
    }
    let shift: Vec<f32> = w
        .columns()
        .into_iter()
        .map(|c| (delta * c.iter().map(|&v| v as f64).sum::<f64>()) as f32)
        .collect();
    let n = shift.len();
    let add = sole_reader(g, out(mm), "Add");
    let bias = add.and_then(|a| {
        let other = if g.input(a, 0) == Some(out(mm)) {
            g.input(a, 1)
        } else {
            g.input(a, 0)
        }?;
        let b = f32_constant(g, other)?;
        (b.len() == n).then_some((a, other, b))
    });
    let mut rw = Rewriter::new(model, mm);
    match bias {
        Some((add, slot_value, b)) => {
            let corrected: Vec<f32> = b.iter().zip(&shift).map(|(b, s)| b + s).collect();
            let c = rw.constant("corrected_bias", &Array::from_vec(b.shape(), corrected)?)?;
            let slot = usize::from(rw.graph().input(add, 1) == Some(slot_value));
            rw.set_input(add, slot, Some(c));
            rw.erase_if_dead(slot_value.node);
        }
        None => {
            let c = rw.constant("relu_correction", &Array::from_vec(&[n], shift)?)?;
            let new = rw.op("Add", "relu_correction", &[out(mm), c], vec![])?;
            // Every reader of the MatMul but the new Add reads the corrected value.
            for u in rw.graph().uses(out(mm)) {
                if let (true, crate::ir::Port::Input(slot)) = (u.node != new.node, u.port) {
                    rw.set_input(u.node, slot, Some(new));
                }
            }
        }
    }
    rw.finish()?;
    Ok(Some(n))
}
