//! `fuse-layer-norm`: the decomposed LayerNorm of opset < 17 exports becomes one
//! `LayerNormalization` (opset 17).
//!
//! Rewrite: `μ = ReduceMean(x)`, `d = x − μ`, `v = ReduceMean(d²)` (`Pow(d, 2)` or `d·d`),
//! `σ = Sqrt(v + ε)` (or `Pow(·, 0.5)`), `n = d / σ` (or `d · Reciprocal(σ)`), then optional
//! `n·γ` and `+ β` with constant γ, β → `LayerNormalization(x, γ, β, axis=−1, epsilon=ε)`.
//! The reductions must be over the last axis only. Preconditions: default-domain opset ≥ 17.
//! Exact up to float rounding.

use super::prelude::*;

use crate::ir::{Array, Graph, attr};
use crate::pass::matcher::{other_input, out, producer, readers, scalar, sole_reader};

pub struct FuseLayerNorm;

impl Pass for FuseLayerNorm {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        if model.opset("").unwrap_or(0) < 17 {
            cx.remark(
                "<graph>",
                "the model imports opset < 17, which has no LayerNormalization: run upgrade-opset first",
            );
            return Ok(());
        }
        let facts = cx.facts(model)?;
        apply_greedily(&LayerNormPattern { facts }, model, cx, MAX_ROUNDS)
    }
}

struct Found {
    x: ValueId,
    y: ValueId,
    epsilon: f64,
    gamma: Option<ValueId>,
    beta: Option<ValueId>,
    width: usize,
}

struct LayerNormPattern {
    facts: std::sync::Arc<crate::ops::GraphFacts>,
}

/// True when `node` is a ReduceMean over the last axis only (attribute or input axes).
fn reduces_last_axis(g: &Graph, node: NodeId, rank: Option<usize>) -> bool {
    let Some(op) = g.op(node) else { return false };
    let axes = match op.attr_ints("axes").ok().flatten() {
        Some(a) => a,
        None => match g
            .input(node, 1)
            .and_then(|v| g.constant(v))
            .and_then(|t| t.decode().ok())
        {
            Some(a) => a.to_f64_vec().into_iter().map(|v| v as i64).collect(),
            None => return false,
        },
    };
    if op.attr_int("keepdims", 1).unwrap_or(1) != 1 || axes.len() != 1 {
        return false;
    }
    axes[0] == -1 || rank.is_some_and(|r| axes[0] == r as i64 - 1)
}

/// `Some(d)` when `v = d²` as `Pow(d, 2)` or `d·d`.
fn square_of(g: &Graph, v: ValueId) -> Option<ValueId> {
    if let Some(p) = producer(g, v, "Pow") {
        return (scalar(g, g.input(p, 1))? == 2.0)
            .then(|| g.input(p, 0))
            .flatten();
    }
    let m = producer(g, v, "Mul")?;
    let a = g.input(m, 0)?;
    (g.input(m, 1)? == a).then_some(a)
}

/// A constant 1-D vector of `width` floats read at `v`.
fn vector(g: &Graph, v: ValueId, width: usize) -> bool {
    g.constant(v)
        .and_then(|t| t.shape().ok())
        .is_some_and(|s| s.iter().product::<usize>() == width && s.last() == Some(&width))
}

impl Pattern for LayerNormPattern {
    type Found = Found;

    fn roots(&self) -> Roots {
        Roots::onnx(&["ReduceMean"])
    }

    fn match_at(&self, model: &Model, root: NodeId) -> Result<Match<Found>> {
        let g = &model.graph;
        let Some(x) = g.input(root, 0) else {
            return Ok(Match::None);
        };
        let mean = out(root);
        // d = x − μ, read by the square and the division.
        let Some(sub) = readers(g, mean, "Sub")
            .into_iter()
            .find(|&s| g.input(s, 0) == Some(x) && g.input(s, 1) == Some(mean))
        else {
            return Ok(Match::None);
        };
        let d = out(sub);
        let rank = self.facts.get(x).and_then(|f| f.rank());
        if !reduces_last_axis(g, root, rank) {
            return Ok(Match::Skip(
                "the mean is not over the last axis alone".into(),
            ));
        }
        let found = (|| {
            // Variance: ReduceMean(d²).
            let square = g.uses(d).into_iter().find_map(|u| {
                let v = out(u.node);
                (square_of(g, v) == Some(d)).then_some(v)
            })?;
            let var = sole_reader(g, square, "ReduceMean")?;
            if !reduces_last_axis(g, var, rank) {
                return None;
            }
            let add = sole_reader(g, out(var), "Add")?;
            let epsilon = scalar(g, other_input(g, add, out(var)))?;
            let root_node = g.uses(out(add)).first()?.node;
            let root_op = g.op(root_node)?;
            let is_sqrt = root_op.is("Sqrt")
                || (root_op.is("Pow") && scalar(g, g.input(root_node, 1)) == Some(0.5));
            if !is_sqrt || g.uses(out(add)).len() != 1 {
                return None;
            }
            let sigma = out(root_node);
            let normalized = match sole_reader(g, sigma, "Div") {
                Some(div) if g.input(div, 0) == Some(d) => out(div),
                _ => {
                    let r = sole_reader(g, sigma, "Reciprocal")?;
                    let m = sole_reader(g, out(r), "Mul")?;
                    (other_input(g, m, out(r))? == d).then(|| out(m))?
                }
            };
            // d has exactly the square's and the division's readers.
            let mut readers: Vec<NodeId> = g.uses(d).iter().map(|u| u.node).collect();
            readers.sort();
            readers.dedup();
            if readers.len() != 2 {
                return None;
            }
            let width = g
                .constant(g.uses(normalized).first().and_then(|u| {
                    other_input(g, u.node, normalized).filter(|v| g.constant(*v).is_some())
                })?)
                .and_then(|t| t.shape().ok())
                .and_then(|s| s.last().copied());
            let mut y = normalized;
            let mut gamma = None;
            let mut beta = None;
            if let (Some(width), Some(m)) = (width, sole_reader(g, y, "Mul")) {
                if let Some(c) = other_input(g, m, y).filter(|&c| vector(g, c, width)) {
                    gamma = Some(c);
                    y = out(m);
                }
            }
            if let (Some(width), Some(a)) = (width, sole_reader(g, y, "Add")) {
                if let Some(c) = other_input(g, a, y).filter(|&c| vector(g, c, width)) {
                    beta = Some(c);
                    y = out(a);
                }
            }
            Some(Found {
                x,
                y,
                epsilon,
                gamma,
                beta,
                width: width.unwrap_or(0),
            })
        })();
        Ok(match found {
            Some(f) if f.gamma.is_some() || f.beta.is_some() => Match::Apply(f),
            Some(_) => Match::Skip("no constant γ or β gives the row width".into()),
            None => Match::None,
        })
    }

    fn rewrite(&self, f: Found, rw: &mut Rewriter) -> Result<()> {
        let gamma = match f.gamma {
            Some(g) => g,
            None => rw.constant("gamma", &Array::from_vec(&[f.width], vec![1f32; f.width])?)?,
        };
        let mut inputs = vec![f.x, gamma];
        if let Some(b) = f.beta {
            inputs.push(b);
        }
        let y = rw.op(
            "LayerNormalization",
            "layer_norm",
            &inputs,
            vec![
                attr::int("axis", -1),
                attr::float("epsilon", f.epsilon as f32),
            ],
        )?;
        rw.replace(f.y, y)
    }
}
