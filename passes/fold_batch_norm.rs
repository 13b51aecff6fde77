//! `fold-batch-norm`: inference-mode `BatchNormalization` disappears into the op before it, or
//! becomes a per-channel scale and shift.
//!
//! With `a[c] = γ[c] / √(var[c] + ε)` and `b[c] = β[c] − mean[c]·a[c]`:
//! - `BN(Conv(x, W, bias))` → `Conv(x, W·a (per output channel), bias·a + b)`;
//!   `ConvTranspose` the same, its output channels along the weight's axis 1 (per group);
//!   `Gemm` with a constant weight: its output columns scaled, the shift its C.
//! - Any other `BN(x)` of known rank r → `Add(Mul(x, a), b)`, a and b shaped `[C, 1, …]`
//!   (r − 2 ones), which the linear lowering absorbs into per-channel scales.
//!
//! Preconditions: the statistics and affine parameters are constant; `training_mode` is 0 and
//! only output Y is read; the producer's output has no other reader. Exact up to f32 rounding
//! (the folded weights are computed in f64 and rounded once).

use super::prelude::*;

use crate::ir::{Array, Graph, attr};
use crate::pass::matcher::out;
use ndarray::{ArrayD, Axis};

pub struct FoldBatchNorm;

impl Pass for FoldBatchNorm {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        apply_greedily(&IntoProducer, model, cx, MAX_ROUNDS)?;
        // The rest become Mul/Add, which needs each input's rank.
        let order = model.graph.topological_order()?;
        let facts = cx.facts(model)?;
        for id in order {
            let Some(op) = model.graph.op(id) else {
                continue;
            };
            if !(op.is("BatchNormalization") && op.domain().is_empty()) {
                continue;
            }
            let who = model.graph.describe(id);
            let bn = match BatchNorm::read(&model.graph, id) {
                Ok(bn) => bn,
                Err(reason) => {
                    cx.report.skipped += 1;
                    cx.remark(who, reason);
                    continue;
                }
            };
            let x = model.graph.input(id, 0).expect("read checks X");
            let Some(rank) = facts.get(x).and_then(|f| f.rank()) else {
                cx.report.skipped += 1;
                cx.remark(
                    who,
                    "kept: the input's rank is unknown (pin it with --input-shape)",
                );
                continue;
            };
            if rank < 2 {
                cx.report.skipped += 1;
                cx.remark(
                    who,
                    format!("kept: input of rank {rank} has no channel axis"),
                );
                continue;
            }
            cx.report.matched += 1;
            let mut shape = vec![bn.a.len()];
            shape.extend(std::iter::repeat_n(1, rank - 2));
            let mut rw = Rewriter::new(model, id);
            let a = rw.constant("scale", &Array::from_vec(&shape, to_f32(&bn.a))?)?;
            let b = rw.constant("shift", &Array::from_vec(&shape, to_f32(&bn.b))?)?;
            let scaled = rw.op("Mul", "scale", &[x, a], vec![])?;
            let shifted = rw.op("Add", "shift", &[scaled, b], vec![])?;
            rw.replace(out(id), shifted)?;
            rw.finish()?;
            cx.report.rewritten += 1;
        }
        Ok(())
    }
}

/// A batch normalization's per-channel affine map `y = a·x + b`.
struct BatchNorm {
    a: Vec<f64>,
    b: Vec<f64>,
    /// Per channel, the mean and standard deviation of the output over training data (β, |γ|).
    output: Vec<(f64, f64)>,
}

fn f32_constant(g: &Graph, v: Option<ValueId>) -> Option<ArrayD<f32>> {
    match g.constant(v?)?.decode().ok()? {
        Array::F32(a) => Some(a),
        _ => None,
    }
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

impl BatchNorm {
    fn read(g: &Graph, id: NodeId) -> std::result::Result<BatchNorm, String> {
        let op = g.op(id).expect("an op");
        if g.input(id, 0).is_none() {
            return Err("kept: its input is omitted".into());
        }
        if op.attr_int("training_mode", 0).map_err(|e| e.to_string())? != 0 {
            return Err("kept: training mode computes batch statistics".into());
        }
        if g.outputs_of(id).skip(1).any(|v| !g.is_unused(v)) {
            return Err("kept: its running-statistics outputs are read".into());
        }
        let eps = op.attr_float("epsilon", 1e-5).map_err(|e| e.to_string())? as f64;
        let params: Vec<ArrayD<f32>> = (1..5)
            .map(|slot| f32_constant(g, g.input(id, slot)))
            .collect::<Option<_>>()
            .ok_or("kept: scale, bias, mean and variance are not all f32 constants")?;
        let c = params[0].len();
        if params.iter().any(|p| p.ndim() != 1 || p.len() != c) {
            return Err("kept: the parameters are not vectors of one length".into());
        }
        let p = |i: usize, c: usize| params[i][c] as f64;
        let a: Vec<f64> = (0..c).map(|i| p(0, i) / (p(3, i) + eps).sqrt()).collect();
        if a.iter().any(|v| !v.is_finite()) {
            return Err("kept: a variance plus epsilon is not positive".into());
        }
        let b = (0..c).map(|i| p(1, i) - p(2, i) * a[i]).collect();
        let output = (0..c).map(|i| (p(1, i), p(0, i).abs())).collect();
        Ok(BatchNorm { a, b, output })
    }
}

/// What the normalization folds into.
enum Producer {
    /// Conv: output channel `o` is weight row `o` (axis 0).
    Conv,
    /// ConvTranspose with `group`: output channel `g·(C_out/group) + j` is weight `[i, j]` for
    /// the input channels `i` of group g.
    ConvTranspose { group: usize },
    /// Gemm: output column n is weight column n (or row n when transB), times alpha.
    Gemm {
        trans_b: bool,
        alpha: f64,
        beta: f64,
    },
}

struct Fold {
    bn: NodeId,
    producer: NodeId,
    kind: Producer,
    weight: ArrayD<f32>,
    bias: Option<ArrayD<f32>>,
    norm: BatchNorm,
}

struct IntoProducer;

impl Pattern for IntoProducer {
    type Found = Fold;

    fn roots(&self) -> Roots {
        Roots::onnx(&["BatchNormalization"])
    }

    fn match_at(&self, model: &Model, root: NodeId) -> Result<Match<Fold>> {
        let g = &model.graph;
        // Standalone normalizations are the second step's; nothing to say here.
        let Ok(norm) = BatchNorm::read(g, root) else {
            return Ok(Match::None);
        };
        let x = g.input(root, 0).expect("read checks X");
        let Some(p) = g.op(x.node).filter(|p| p.domain().is_empty()) else {
            return Ok(Match::None);
        };
        if x.slot != 0 || g.uses(x).len() != 1 || g.is_graph_output(x) {
            return Ok(Match::None);
        }
        let Some(weight) = f32_constant(g, g.input(x.node, 1)) else {
            return Ok(Match::None);
        };
        let bias = match g.input(x.node, 2) {
            None => None,
            Some(b) => match f32_constant(g, Some(b)) {
                Some(b) => Some(b),
                None => return Ok(Match::None),
            },
        };
        let c = norm.a.len();
        let kind = match p.op_type() {
            "Conv" if weight.ndim() >= 3 && weight.shape()[0] == c => Producer::Conv,
            "ConvTranspose" if weight.ndim() >= 3 => {
                let group = p.attr_int("group", 1)?.max(1) as usize;
                if weight.shape()[1] * group != c || weight.shape()[0] % group != 0 {
                    return Ok(Match::None);
                }
                Producer::ConvTranspose { group }
            }
            "Gemm" if weight.ndim() == 2 => {
                let trans_b = p.attr_int("transB", 0)? != 0;
                let n = weight.shape()[if trans_b { 0 } else { 1 }];
                // A transposed A is fine: only B's columns and C change.
                if n != c {
                    return Ok(Match::None);
                }
                Producer::Gemm {
                    trans_b,
                    alpha: p.attr_float("alpha", 1.0)? as f64,
                    beta: p.attr_float("beta", 1.0)? as f64,
                }
            }
            _ => return Ok(Match::None),
        };
        if let Some(b) = &bias {
            let ok = match kind {
                // One value, or one per column: [], [1], [N] or [1, N] ([M, 1] is per row).
                Producer::Gemm { .. } => {
                    b.len() == 1 || (b.len() == c && b.shape().last() == Some(&c))
                }
                _ => b.ndim() == 1 && b.len() == c,
            };
            if !ok {
                return Ok(Match::Skip(
                    "kept: the producer's bias is not one value per channel".into(),
                ));
            }
        }
        Ok(Match::Apply(Fold {
            bn: root,
            producer: x.node,
            kind,
            weight,
            bias,
            norm,
        }))
    }

    fn rewrite(&self, f: Fold, rw: &mut Rewriter) -> Result<()> {
        let Fold {
            bn,
            producer,
            kind,
            weight,
            bias,
            norm,
        } = f;
        let c = norm.a.len();
        let w = weight.mapv(|v| v as f64);
        let (w, old_bias): (ArrayD<f64>, Vec<f64>) = match kind {
            Producer::Conv => (scale_along(&w, 0, |o| norm.a[o]), bias_vec(&bias, c, 1.0)),
            Producer::ConvTranspose { group } => {
                let (c_in, per_group) = (w.shape()[0], w.shape()[1]);
                let in_per_group = c_in / group;
                let mut w = w;
                for i in 0..c_in {
                    for j in 0..per_group {
                        let o = (i / in_per_group) * per_group + j;
                        w.index_axis_mut(Axis(0), i)
                            .index_axis_mut(Axis(0), j)
                            .mapv_inplace(|v| v * norm.a[o]);
                    }
                }
                (w, bias_vec(&bias, c, 1.0))
            }
            Producer::Gemm {
                trans_b,
                alpha,
                beta,
            } => {
                let axis = if trans_b { 0 } else { 1 };
                (
                    scale_along(&w, axis, |n| norm.a[n] * alpha),
                    bias_vec(&bias, c, beta),
                )
            }
        };
        let new_bias: Vec<f64> = (0..c)
            .map(|o| old_bias[o] * norm.a[o] + norm.b[o])
            .collect();
        let w = rw.constant("folded_weight", &Array::F32(w.mapv(|v| v as f32)))?;
        let b = rw.constant("folded_bias", &Array::from_vec(&[c], to_f32(&new_bias))?)?;
        let x = rw
            .graph()
            .input(producer, 0)
            .expect("producer has an input");
        let op = rw.graph().op(producer).expect("an op").clone();
        let mut attrs: Vec<_> = op.attrs().to_vec();
        if let Producer::Gemm { .. } = kind {
            attrs.retain(|a| !matches!(a.name(), "alpha" | "beta"));
            attrs.push(attr::float("alpha", 1.0));
            attrs.push(attr::float("beta", 1.0));
        }
        let node = rw.op_node(
            crate::ir::Op::new(op.op_type(), ""),
            "folded",
            &[Some(x), Some(w), Some(b)],
            attrs,
            1,
        )?;
        // What training saw after the normalization: N(β, γ²) per channel (data-free ranges).
        let prior = std::sync::Arc::new(norm.output);
        rw.annotate(out(node), |v| v.prior = Some(prior));
        rw.replace(out(bn), out(node))
    }
}

/// `w` with every slice along `axis` at index i multiplied by `f(i)`.
fn scale_along(w: &ArrayD<f64>, axis: usize, f: impl Fn(usize) -> f64) -> ArrayD<f64> {
    let mut w = w.clone();
    for (i, mut lane) in w.axis_iter_mut(Axis(axis)).enumerate() {
        let k = f(i);
        lane.mapv_inplace(|v| v * k);
    }
    w
}

/// The producer's bias as one value per channel (zeros when absent), times `factor`.
fn bias_vec(bias: &Option<ArrayD<f32>>, c: usize, factor: f64) -> Vec<f64> {
    match bias {
        None => vec![0.0; c],
        // One value, or one per channel in any shape ([C], [1, C]); checked by the matcher.
        Some(b) if b.len() == 1 => vec![b.iter().next().copied().unwrap_or(0.0) as f64 * factor; c],
        Some(b) => b.iter().map(|&x| x as f64 * factor).collect(),
    }
}
