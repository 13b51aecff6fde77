//! `fuse-softmax`: `Exp(x [− ReduceMax(x)]) / ReduceSum(Exp(...))` over one axis becomes
//! `Softmax(x, axis)` (opset ≥ 13 semantics: one axis, any axis).
//! Preconditions: the reductions keep dims and name the same single axis; the exponential has
//! no other readers. Exact up to float rounding.

use super::prelude::*;

use crate::ir::{Graph, attr};
use crate::pass::matcher::{out, producer, readers};

pub struct FuseSoftmax;

impl Pass for FuseSoftmax {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        apply_greedily(&SoftmaxPattern, model, cx, MAX_ROUNDS)
    }
}

struct SoftmaxPattern;

/// The single kept-dims axis a reduction names.
fn single_axis(g: &Graph, node: NodeId) -> Option<i64> {
    let op = g.op(node)?;
    if op.attr_int("keepdims", 1).ok()? != 1 {
        return None;
    }
    let axes = match op.attr_ints("axes").ok().flatten() {
        Some(a) => a,
        None => g
            .constant(g.input(node, 1)?)?
            .decode()
            .ok()?
            .to_f64_vec()
            .into_iter()
            .map(|v| v as i64)
            .collect(),
    };
    (axes.len() == 1).then(|| axes[0])
}

impl Pattern for SoftmaxPattern {
    type Found = (ValueId, ValueId, i64);

    fn roots(&self) -> Roots {
        Roots::onnx(&["Exp"])
    }

    fn match_at(&self, model: &Model, root: NodeId) -> Result<Match<Self::Found>> {
        let g = &model.graph;
        let e = out(root);
        let found = (|| {
            let sum = readers(g, e, "ReduceSum").into_iter().next()?;
            let axis = single_axis(g, sum)?;
            let div = readers(g, e, "Div")
                .into_iter()
                .find(|&d| g.input(d, 0) == Some(e) && g.input(d, 1) == Some(out(sum)))?;
            if g.uses(e).len() != 2 || g.is_graph_output(e) {
                return None;
            }
            let u = g.input(root, 0)?;
            // A max subtraction is only there for stability: Softmax does it itself.
            let x = match producer(g, u, "Sub") {
                Some(s) => match g.input(s, 1).and_then(|m| producer(g, m, "ReduceMax")) {
                    Some(m)
                        if single_axis(g, m) == Some(axis) && g.input(m, 0) == g.input(s, 0) =>
                    {
                        g.input(s, 0)?
                    }
                    _ => u,
                },
                None => u,
            };
            Some((out(div), x, axis))
        })();
        Ok(found.map_or(Match::None, Match::Apply))
    }

    fn rewrite(&self, (y, x, axis): Self::Found, rw: &mut Rewriter) -> Result<()> {
        let s = rw.op("Softmax", "softmax", &[x], vec![attr::int("axis", axis)])?;
        rw.replace(y, s)
    }
}
