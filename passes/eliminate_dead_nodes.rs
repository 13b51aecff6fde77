//! `eliminate-dead-nodes`: removes every op and initializer whose values nothing reads.
//!
//! Rewrite: `node(...) -> ∅` when no op, subgraph or graph output reads any of its outputs.
//! Preconditions: none. Exact: graph inputs stay (they are API) and outputs are unchanged.

use super::prelude::*;

pub struct EliminateDeadNodes;

impl Pass for EliminateDeadNodes {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let graph = &mut model.graph;
        // Ops in reverse topological order: consumers go before their producers.
        let mut candidates = graph.topological_order()?;
        candidates.reverse();
        let sources: Vec<NodeId> = graph
            .node_ids()
            .filter(|&id| graph.op(id).is_none())
            .collect();
        candidates.extend(sources);
        for id in candidates {
            if !graph.contains(id) {
                continue;
            }
            if graph.is_graph_input(id) {
                if graph.outputs_of(id).all(|v| graph.is_unused(v)) {
                    let who = graph.describe(id);
                    cx.remark(
                        who,
                        "unused, kept: graph inputs are part of the model's API",
                    );
                }
                continue;
            }
            if is_removable(graph, id) {
                graph.remove_node(id)?;
                cx.report.matched += 1;
                cx.report.rewritten += 1;
            }
        }
        Ok(())
    }
}
