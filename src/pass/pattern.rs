//! Pattern rewriting: a pure match at a root node, then a rewrite through one [`Rewriter`].
//! [`apply_greedily`] walks the graph in topological order, rewrites every match, and repeats
//! until a round changes nothing (or the round cap is hit).

use super::{PassContext, Rewriter};
use crate::Result;
use crate::ir::{Model, NodeId, Op};

/// Outcome of matching a pattern at one node.
pub enum Match<M> {
    /// The node is not a candidate (wrong op): nothing to say.
    None,
    /// A candidate that must be left alone; the reason becomes a remark.
    Skip(String),
    /// Rewrite with this match.
    Apply(M),
}

/// A rewrite rule rooted at one op.
pub trait Pattern {
    /// What the matcher hands to the rewrite: the nodes and values it found.
    type Found;

    /// The ops the root may be; the driver skips other nodes unseen.
    fn roots(&self) -> Roots {
        Roots::Any
    }

    /// Pure: inspects the model around `root` and decides.
    fn match_at(&self, model: &Model, root: NodeId) -> Result<Match<Self::Found>>;

    /// Applies the rewrite. Nodes made dead are removed by the driver afterwards.
    fn rewrite(&self, found: Self::Found, rw: &mut Rewriter) -> Result<()>;
}

/// Which ops a pattern's root may be.
#[derive(Copy, Clone)]
pub enum Roots {
    Any,
    /// These op types of one domain (`""` for ONNX's default domain, `"intone"`, …).
    Ops {
        domain: &'static str,
        op_types: &'static [&'static str],
    },
    /// Ops a predicate admits (a property of the op table, say).
    Where(fn(&Op) -> bool),
}

impl Roots {
    /// Default-domain op types.
    pub const fn onnx(op_types: &'static [&'static str]) -> Roots {
        Roots::Ops {
            domain: "",
            op_types,
        }
    }

    pub fn admits(self, op: &Op) -> bool {
        match self {
            Roots::Any => true,
            Roots::Ops { domain, op_types } => {
                op.domain() == domain && op_types.contains(&op.op_type())
            }
            Roots::Where(admits) => admits(op),
        }
    }
}

/// Default cap on rounds; a pattern still firing after this many rounds is reported.
pub const MAX_ROUNDS: usize = 32;

/// Applies `pattern` at every node until a fixpoint or `max_rounds`.
pub fn apply_greedily<P: Pattern>(
    pattern: &P,
    model: &mut Model,
    cx: &mut PassContext,
    max_rounds: usize,
) -> Result<()> {
    for round in 0..max_rounds {
        let mut changed = false;
        for root in model.graph.topological_order()? {
            if !model.graph.contains(root) {
                continue;
            }
            let op = model.graph.op(root).expect("topological order holds ops");
            if !pattern.roots().admits(op) {
                continue;
            }
            match pattern.match_at(model, root)? {
                Match::None => {}
                Match::Skip(reason) => {
                    // Count each node once, not once per round.
                    if round == 0 {
                        cx.report.skipped += 1;
                    }
                    let who = model.graph.describe(root);
                    cx.remark(who, reason);
                }
                Match::Apply(found) => {
                    cx.report.matched += 1;
                    let mut rw = Rewriter::new(model, root);
                    pattern.rewrite(found, &mut rw)?;
                    rw.finish()?;
                    cx.report.rewritten += 1;
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok(());
        }
    }
    cx.remark(
        "<graph>",
        format!("stopped after {max_rounds} rounds with rewrites still applying"),
    );
    Ok(())
}
