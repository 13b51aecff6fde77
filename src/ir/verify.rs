//! The IR verifier: the invariants every pass must keep. The pass manager runs it after each
//! pass when asked (tests always ask).

use std::collections::HashSet;

use super::graph::{Graph, Port};
use super::node::NodeKind;

/// The names and order of a graph's inputs and outputs: API that passes never change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoSignature {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

impl IoSignature {
    pub fn of(graph: &Graph) -> IoSignature {
        IoSignature {
            inputs: graph
                .inputs()
                .iter()
                .map(|&id| graph.node(id).outputs[0].name.clone())
                .collect(),
            outputs: graph
                .outputs()
                .iter()
                .map(|o| graph.value_name(o.value).to_string())
                .collect(),
        }
    }
}

/// Checks the graph; returns every violation found (empty when the graph is sound).
pub fn verify(graph: &Graph, signature: Option<&IoSignature>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = graph.topological_order() {
        problems.push(e.to_string());
    }
    for id in graph.node_ids() {
        let node = graph.node(id);
        for v in graph.outputs_of(id) {
            let name = &node.outputs[v.slot].name;
            if graph.find_value(name) != Some(v) {
                problems.push(format!(
                    "value '{name}' of {} is not registered under its name",
                    graph.describe(id)
                ));
            }
        }
        let Some(op) = graph.op(id) else {
            if matches!(node.kind, NodeKind::Input(_)) && !graph.is_graph_input(id) {
                problems.push(format!(
                    "{} is not in the graph's input list",
                    graph.describe(id)
                ));
            }
            continue;
        };
        let mut slots = HashSet::new();
        let mut captured = HashSet::new();
        for (port, from) in graph.incoming(id) {
            let producer = graph.node(from.node);
            if from.slot >= producer.outputs.len() || producer.outputs[from.slot].name.is_empty() {
                problems.push(format!(
                    "{} reads output {} of {}, which does not exist",
                    graph.describe(id),
                    from.slot,
                    graph.describe(from.node)
                ));
                continue;
            }
            match port {
                Port::Input(slot) => {
                    if slot >= op.num_inputs {
                        problems.push(format!(
                            "{} has an edge into input {slot} but only {} inputs",
                            graph.describe(id),
                            op.num_inputs
                        ));
                    }
                    if !slots.insert(slot) {
                        problems.push(format!(
                            "{} has two edges into input {slot}",
                            graph.describe(id)
                        ));
                    }
                }
                Port::Capture => {
                    captured.insert(graph.value_name(from).to_string());
                }
            }
        }
        if op.has_subgraphs() {
            for name in Graph::free_names_of_subgraphs(op) {
                if !captured.contains(&name) {
                    problems.push(format!(
                        "a subgraph of {} reads '{name}' without a capture edge",
                        graph.describe(id)
                    ));
                }
            }
        }
    }
    for (i, out) in graph.outputs().iter().enumerate() {
        if !graph.contains(out.value.node)
            || out.value.slot >= graph.node(out.value.node).outputs.len()
        {
            problems.push(format!(
                "graph output #{i} '{}' reads a removed value",
                out.info.name()
            ));
        }
    }
    for &id in graph.inputs() {
        if !graph.contains(id) {
            problems.push("a graph input node was removed".to_string());
        }
    }
    if let Some(expected) = signature {
        let found = IoSignature::of(graph);
        if found.inputs != expected.inputs {
            problems.push(format!(
                "graph inputs changed from {:?} to {:?}",
                expected.inputs, found.inputs
            ));
        }
        if found.outputs != expected.outputs {
            problems.push(format!(
                "graph outputs changed from {:?} to {:?}",
                expected.outputs, found.outputs
            ));
        }
    }
    problems
}
