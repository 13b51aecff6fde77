//! The one loop every lowering runs: ops in topological order, one [`Lowering`] state, and the
//! matched / rewritten / skipped bookkeeping of the pass report.

use super::engine::Lowering;
use crate::Result;
use crate::ir::{Model, NodeId, Op};
use crate::pass::PassContext;

/// What a lowering made of one op.
pub enum Outcome {
    Lowered,
    /// A candidate left in float, with the reason (a remark in the report).
    Kept(String),
    /// Not an op this lowering handles.
    NotACandidate,
}

/// Runs `lower` on every op in topological order; new nodes are named and ordered after the op
/// they lower. Returns how many values `Lowering::finish` dequantized for float readers.
pub fn lower_ops(
    model: &mut Model,
    cx: &mut PassContext,
    mut lower: impl FnMut(&mut Lowering, NodeId, &Op) -> Result<Outcome>,
) -> Result<usize> {
    let facts = cx.facts(model)?;
    let order = model.graph.topological_order()?;
    let mut lw = Lowering::new(model, facts, cx.options);
    for id in order {
        let Some(op) = lw.model().graph.op(id).cloned() else {
            continue;
        };
        lw.rw.set_anchor(id);
        let who = lw.model().graph.describe(id);
        match lower(&mut lw, id, &op)? {
            Outcome::Lowered => {
                cx.report.matched += 1;
                cx.report.rewritten += 1;
            }
            Outcome::Kept(reason) => {
                cx.report.matched += 1;
                cx.report.skipped += 1;
                cx.remark(who, reason);
            }
            Outcome::NotACandidate => {}
        }
    }
    lw.finish()
}
