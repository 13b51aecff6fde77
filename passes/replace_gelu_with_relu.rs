//! `replace-gelu-with-relu(correct-relu-bias)`: every `Gelu` (and `com.microsoft.QuickGelu`)
//! becomes `Relu`, so the fc1 output stays 8-bit integer (`Max(q, zp)`).
//!
//! This changes the function: the paper behind it (integer Swin without GELU) recovers the
//! accuracy by distillation, which a compiler cannot do. `correct-relu-bias=true` compensates the
//! mean shift data-free: with the calibration mean μ and deviation σ of the GELU input, modelled
//! as N(μ, σ²), `δ = E[GELU(x)] − E[ReLU(x)]`, and the next layer's bias gains `δ·Σ_k W_kj`
//! (a `MatMul` with a constant weight, followed by a constant bias `Add` or given a new one).
//! `refit=true` goes further, with calibration samples: the float model runs once, and for each
//! GELU with such a next layer `y = g·W + b`, the new `W', b'` minimise
//! `Σ‖relu(x)·W' + b' − (gelu(x)·W + b)‖² + λ‖W' − W‖²` over every calibration row (closed
//! form, `quant::least_squares`; `λ = ridge · mean relu(x)²`): the compiler's stand-in for the
//! distillation. Each layer is fitted to the float model's own inputs, independently.
//! Preconditions: the input was calibrated (for the correction); `--calibrate` data (for the
//! refit). Not exact, by design.

use super::prelude::*;

use std::collections::HashMap;

use ndarray::{Array2, Ix2};

use super::lower_gelu_to_shiftgelu::is_gelu;
use crate::Error;
use crate::ir::{Array, Graph};
use crate::pass::matcher::{out, sole_reader};
use crate::quant::kernels::{gelu, quick_gelu};
use crate::quant::least_squares::NormalEquations;
use crate::runner::Runner;
use crate::runner::sensitivity::sample_batches;

pub struct ReplaceGeluWithRelu {
    correct_bias: bool,
    refit: bool,
    ridge: f64,
}

impl ReplaceGeluWithRelu {
    pub fn new(options: &PassOptions) -> Result<ReplaceGeluWithRelu> {
        let ridge: f64 = options.get("ridge")?;
        if !(ridge > 0.0 && ridge.is_finite()) {
            return Err(Error::Usage(format!(
                "replace-gelu-with-relu: ridge={ridge} must be positive (it keeps the refit's equations solvable)"
            )));
        }
        Ok(ReplaceGeluWithRelu {
            correct_bias: options.get("correct-relu-bias")?,
            refit: options.get("refit")?,
            ridge,
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
        let gelus: Vec<NodeId> = model
            .graph
            .topological_order()?
            .into_iter()
            .filter(|&id| model.graph.op(id).is_some_and(is_gelu))
            .collect();
        let mut refits = if self.refit {
            self.refit_next_layers(model, cx, &gelus)?
        } else {
            HashMap::new()
        };
        for id in gelus {
            let op = model.graph.op(id).cloned().expect("an op");
            let quick = op.op_type() == "QuickGelu";
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
            let who = model.graph.describe(relu.node);
            if let Some((layer, fit)) = refits.remove(&id) {
                let (w, b) = fit;
                cx.remark(
                    who,
                    format!(
                        "next layer refitted by least squares: {} weights, {} bias values",
                        w.len(),
                        b.len()
                    ),
                );
                rewrite_next_layer(model, &layer, Some(w), b)?;
                continue;
            }
            if !self.correct_bias {
                continue;
            }
            let Some(stats) = stats.filter(|s| s.count > 0) else {
                return Err(Error::Usage(format!(
                    "replace-gelu-with-relu: correct-relu-bias needs calibration statistics of the input of {who} (run calibrate first)"
                )));
            };
            let f: fn(f64) -> f64 = if quick { quick_gelu } else { gelu };
            let delta = mean_shift(f, stats.mean(), stats.std());
            let corrected = next_layer(&model.graph, relu)
                .map(|layer| -> Result<usize> {
                    let shift: Vec<f32> = layer
                        .weight
                        .columns()
                        .into_iter()
                        .map(|c| (delta * c.iter().map(|&v| v as f64).sum::<f64>()) as f32)
                        .collect();
                    let bias = layer
                        .bias_values()
                        .into_iter()
                        .zip(&shift)
                        .map(|(b, s)| b + s);
                    rewrite_next_layer(model, &layer, None, bias.collect())?;
                    Ok(shift.len())
                })
                .transpose()?;
            match corrected {
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

/// The layer after a GELU: `MatMul(y, W)` with a constant 2-D weight, as its sole reader, and
/// the constant bias `Add` after it, if any.
struct NextLayer {
    matmul: NodeId,
    /// `W`: inputs × outputs.
    weight: Array2<f32>,
    /// The bias `Add`, the input slot of its constant and the constant.
    bias: Option<(NodeId, usize, ValueId, Vec<f32>)>,
}

impl NextLayer {
    /// The bias, zeros without one.
    fn bias_values(&self) -> Vec<f32> {
        match &self.bias {
            Some((.., b)) => b.clone(),
            None => vec![0.0; self.weight.ncols()],
        }
    }
}

fn next_layer(g: &Graph, y: ValueId) -> Option<NextLayer> {
    let mm = sole_reader(g, y, "MatMul")?;
    let weight = g.input(mm, 1).and_then(|w| f32_constant(g, w))?;
    let weight = weight.into_dimensionality::<Ix2>().ok()?;
    if g.input(mm, 0) != Some(y) {
        return None;
    }
    let n = weight.ncols();
    let bias = sole_reader(g, out(mm), "Add").and_then(|a| {
        let slot = usize::from(g.input(a, 0) == Some(out(mm)));
        let other = g.input(a, slot)?;
        let b = f32_constant(g, other)?;
        (b.len() == n).then(|| (a, slot, other, b.iter().copied().collect()))
    });
    Some(NextLayer {
        matmul: mm,
        weight,
        bias,
    })
}

/// Gives the layer a new bias (through its `Add`, or a new one) and, if given, a new weight.
fn rewrite_next_layer(
    model: &mut Model,
    layer: &NextLayer,
    weight: Option<Array2<f32>>,
    bias: Vec<f32>,
) -> Result<()> {
    let mm = layer.matmul;
    let n = bias.len();
    let mut rw = Rewriter::new(model, mm);
    if let Some(w) = weight {
        let old = rw.graph().input(mm, 1).expect("a weight");
        let (rows, cols) = w.dim();
        let c = rw.constant(
            "refitted_weight",
            &Array::from_vec(&[rows, cols], w.into_iter().collect())?,
        )?;
        rw.set_input(mm, 1, Some(c));
        rw.erase_if_dead(old.node);
    }
    match &layer.bias {
        Some((add, slot, old, b)) => {
            let c = rw.constant("corrected_bias", &Array::from_vec(&[b.len()], bias)?)?;
            rw.set_input(*add, *slot, Some(c));
            rw.erase_if_dead(old.node);
        }
        None => {
            let c = rw.constant("relu_correction", &Array::from_vec(&[n], bias)?)?;
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
    Ok(())
}

/// A refitted next layer: the new weight and bias.
type Fit = (Array2<f32>, Vec<f32>);

impl ReplaceGeluWithRelu {
    /// Runs the float model on the calibration samples once, accumulating for each GELU with
    /// a next layer the normal equations of relu(x) against gelu(x), and solves them.
    fn refit_next_layers(
        &self,
        model: &Model,
        cx: &mut PassContext,
        gelus: &[NodeId],
    ) -> Result<HashMap<NodeId, (NextLayer, Fit)>> {
        let Some(set) = cx.options.calibration.clone() else {
            return Err(Error::Usage(
                "replace-gelu-with-relu: refit needs calibration samples: add --calibrate NAME=FILE.npy".into(),
            ));
        };
        let g = &model.graph;
        let runner = Runner::new(model)?;
        let mut sites = Vec::new();
        for &id in gelus {
            let Some(x) = g.input(id, 0) else { continue };
            let names = [
                g.value_name(x).to_string(),
                g.value_name(out(id)).to_string(),
            ];
            let who = g.describe(id);
            let Some(layer) = next_layer(g, out(id)) else {
                cx.remark(
                    who,
                    "no MatMul with a constant weight follows: not refitted",
                );
                continue;
            };
            if !names.iter().all(|n| runner.has_value(n)) {
                cx.remark(
                    who,
                    "its input or output is not visible to tract: not refitted",
                );
                continue;
            }
            let d = layer.weight.nrows();
            sites.push((id, names, layer, NormalEquations::new(d, d)));
        }
        if sites.is_empty() {
            return Ok(HashMap::new());
        }
        let outputs: Vec<String> = sites.iter().flat_map(|s| s.1.clone()).collect();
        let mut plans: Vec<(Vec<Vec<usize>>, crate::runner::Plan)> = Vec::new();
        for inputs in sample_batches(model, &runner, &set, usize::MAX)? {
            let shapes: Vec<Vec<usize>> = inputs.iter().map(|a| a.shape().to_vec()).collect();
            if !plans.iter().any(|(s, _)| *s == shapes) {
                let refs: Vec<&Array> = inputs.iter().collect();
                plans.push((shapes.clone(), runner.plan(&refs, Some(&outputs))?));
            }
            let plan = &plans.iter().find(|(s, _)| *s == shapes).expect("planned").1;
            // Outputs come in order: each GELU's input, then its output.
            let mut relu_rows: Option<Array2<f32>> = None;
            let mut failure = None;
            plan.run_visit_f32(&inputs, |i, view| {
                let site = &mut sites[i / 2];
                let d = site.3.inputs();
                let rows: Vec<f32> = view.iter().copied().collect();
                if rows.len() % d != 0 {
                    failure = Some(format!(
                        "{} has {} values, not rows of {d}",
                        outputs[i],
                        rows.len()
                    ));
                    return;
                }
                let rows = Array2::from_shape_vec((rows.len() / d, d), rows).expect("rows of d");
                if i % 2 == 0 {
                    relu_rows = Some(rows.mapv(|v| v.max(0.0)));
                } else if let Some(x) = relu_rows.take() {
                    site.3.add(x.view(), rows.view());
                }
            })?;
            if let Some(f) = failure {
                return Err(Error::Pass {
                    pass: "replace-gelu-with-relu".into(),
                    message: f,
                });
            }
        }
        let mut fits = HashMap::new();
        for (id, _, layer, equations) in sites {
            let w = layer.weight.mapv(f64::from);
            let b: Vec<f64> = layer.bias_values().iter().map(|&v| v as f64).collect();
            match equations.solve(w.view(), &b, self.ridge) {
                Ok((w, b)) => {
                    let fit = (w.mapv(|v| v as f32), b.iter().map(|&v| v as f32).collect());
                    fits.insert(id, (layer, fit));
                }
                Err(e) => cx.remark(g.describe(id), format!("not refitted: {e}")),
            }
        }
        Ok(fits)
    }
}
