//! `fuse-attention-mask`: the additive attention mask of BERT-style exports becomes a select.
//!
//! Rewrite: `scores + f(mask)`, where `f` is a chain of elementwise ops with scalar constants
//! (`Cast`, `Sub`, `Mul`, `Add`, `Div`, `Neg`, `Where(mask, c₁, c₂)`) and data movement (`Unsqueeze`, `Reshape`,
//! `Expand`, `Squeeze`) from an integer or bool `mask`, with `f(1) = 0` and `f(0) ≤ −10⁴` →
//! `Where(Cast<bool>(mask) moved the same way, scores, f(0))`. Lowering then selects in
//! integers (a saturating large negative), and no float mask exists.
//! Preconditions: the mask holds 0 (masked) and 1 (kept), as tokenizers emit; the pass says so
//! in a remark. Exact where it applies: `s + f(0)` rounds to `f(0)` for every finite score of
//! a float32 model, and `s + 0 = s`.

use super::prelude::*;

use crate::ir::{DataType, DataTypeInfo, Graph, Op, attr};
use crate::ops::GraphFacts;
use crate::pass::matcher::{out, scalar};

pub struct FuseAttentionMask;

impl Pass for FuseAttentionMask {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let facts = cx.facts(model)?;
        let pattern = MaskPattern { facts };
        apply_greedily(&pattern, model, cx, MAX_ROUNDS)?;
        if cx.report.rewritten > 0 {
            cx.remark(
                "<graph>",
                "masks are taken to hold 0 (masked) and 1 (kept)".to_string(),
            );
        }
        Ok(())
    }
}

struct MaskPattern {
    facts: std::sync::Arc<GraphFacts>,
}

/// A mask chain: its integer source, the movement ops to replay, and `f(0)`.
struct Chain {
    source: ValueId,
    movement: Vec<NodeId>,
    masked: f64,
}

/// The shape ops exporters put between a mask and its Add (not `ops::table` data movement:
/// the walk also needs the mask to stay broadcastable).
const MOVEMENT: &[&str] = &["Unsqueeze", "Reshape", "Expand", "Squeeze"];

impl MaskPattern {
    fn is_integer(&self, v: ValueId) -> bool {
        self.facts
            .get(v)
            .and_then(|f| f.dtype)
            .is_some_and(|t| t.is_integer() || t == DataType::Bool)
    }

    /// Walks from `v` up to an integer source; evaluates the chain at source values 0 and 1.
    fn chain(&self, g: &Graph, v: ValueId) -> Option<Chain> {
        let mut ops = Vec::new();
        let mut at = v;
        while !self.is_integer(at) {
            let op = g.op(at.node)?;
            if !op.domain().is_empty() {
                return None;
            }
            ops.push(at.node);
            at = match op.op_type() {
                t if MOVEMENT.contains(&t) => g.input(at.node, 0)?,
                "Cast" | "Neg" => g.input(at.node, 0)?,
                // `Where(keep, 0, −big)`: a select between two constants on the mask.
                "Where" => {
                    scalar(g, g.input(at.node, 1))?;
                    scalar(g, g.input(at.node, 2))?;
                    g.input(at.node, 0)?
                }
                "Sub" | "Mul" | "Add" | "Div" => {
                    let (a, b) = (g.input(at.node, 0)?, g.input(at.node, 1)?);
                    match (scalar(g, Some(a)), scalar(g, Some(b))) {
                        (None, Some(_)) => a,
                        (Some(_), None) => b,
                        _ => return None,
                    }
                }
                _ => return None,
            };
        }
        ops.reverse();
        let eval = |x: f64| -> Option<f64> {
            let mut x = x;
            for &id in &ops {
                let op = g.op(id)?;
                let constant = |slot: usize| scalar(g, g.input(id, slot));
                x = match op.op_type() {
                    "Cast" => {
                        let to = DataType::try_from(op.attr_int("to", 1).ok()? as i32).ok()?;
                        if to == DataType::Bool {
                            (x != 0.0) as i32 as f64
                        } else if to.is_float() {
                            x
                        } else {
                            x.trunc()
                        }
                    }
                    "Neg" => -x,
                    "Where" => {
                        if x != 0.0 {
                            constant(1)?
                        } else {
                            constant(2)?
                        }
                    }
                    "Sub" => match constant(0) {
                        Some(c) => c - x,
                        None => x - constant(1)?,
                    },
                    "Add" => x + constant(0).or_else(|| constant(1))?,
                    "Mul" => x * constant(0).or_else(|| constant(1))?,
                    "Div" => x / constant(1)?,
                    _ => x,
                };
                x = x as f32 as f64;
            }
            Some(x)
        };
        let (masked, kept) = (eval(0.0)?, eval(1.0)?);
        (kept == 0.0 && masked <= -1e4).then(|| Chain {
            source: at,
            movement: ops
                .into_iter()
                .filter(|&id| g.op(id).is_some_and(|o| MOVEMENT.contains(&o.op_type())))
                .collect(),
            masked,
        })
    }
}

impl Pattern for MaskPattern {
    type Found = (ValueId, ValueId, Chain);

    fn roots(&self) -> Roots {
        Roots::onnx(&["Add"])
    }

    fn match_at(&self, model: &Model, root: NodeId) -> Result<Match<Self::Found>> {
        let g = &model.graph;
        let (Some(a), Some(b)) = (g.input(root, 0), g.input(root, 1)) else {
            return Ok(Match::None);
        };
        for (scores, mask) in [(a, b), (b, a)] {
            if self.is_integer(scores) || g.constant(mask).is_some() {
                continue;
            }
            if let Some(chain) = self.chain(g, mask) {
                return Ok(Match::Apply((scores, out(root), chain)));
            }
        }
        Ok(Match::None)
    }

    fn rewrite(&self, (scores, y, chain): Self::Found, rw: &mut Rewriter) -> Result<()> {
        let mut keep = rw.op(
            "Cast",
            "keep",
            &[chain.source],
            vec![attr::int("to", DataType::Bool as i32 as i64)],
        )?;
        for id in chain.movement {
            let op = rw.graph().op(id).expect("op").clone();
            let mut inputs = rw.graph().inputs_of(id);
            inputs[0] = Some(keep);
            let node = rw.op_node(
                Op::new(op.op_type(), ""),
                "keep_moved",
                &inputs,
                op.attrs().to_vec(),
                1,
            )?;
            keep = out(node);
        }
        let fill = rw.constant("masked", &crate::ir::Array::scalar(chain.masked as f32))?;
        let selected = rw.op("Where", "masked_scores", &[keep, scores, fill], vec![])?;
        rw.replace(y, selected)
    }
}
