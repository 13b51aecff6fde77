//! `eliminate-identity`: reads through `Identity` ops.
//!
//! Rewrite: `y = Identity(x); f(y) -> f(x)`.
//! Preconditions: when `y` is a graph output, `x` must be able to take its name (not a graph
//! input or another graph output); otherwise the Identity is what keeps the two names apart and
//! stays. Exact.

use super::prelude::*;

pub struct EliminateIdentity;

impl Pass for EliminateIdentity {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        apply_greedily(&IdentityPattern, model, cx, MAX_ROUNDS)
    }
}

struct IdentityPattern;

impl Pattern for IdentityPattern {
    type Found = (ValueId, ValueId);

    fn roots(&self) -> Roots {
        Roots::onnx(&["Identity"])
    }

    fn match_at(&self, model: &Model, root: NodeId) -> Result<Match<Self::Found>> {
        let g = &model.graph;
        let Some(input) = g.input(root, 0) else {
            return Ok(Match::Skip("its input is omitted".into()));
        };
        let output = ValueId {
            node: root,
            slot: 0,
        };
        if g.is_graph_output(output) && (g.is_graph_input(input.node) || g.is_graph_output(input)) {
            return Ok(Match::Skip(format!(
                "kept: it gives graph output '{}' a name distinct from '{}'",
                g.value_name(output),
                g.value_name(input)
            )));
        }
        Ok(Match::Apply((input, output)))
    }

    fn rewrite(&self, (input, output): Self::Found, rw: &mut Rewriter) -> Result<()> {
        rw.replace(output, input)
    }
}
