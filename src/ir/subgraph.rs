//! Subgraphs (If/Loop/Scan bodies) are carried verbatim as `GraphProto`s. What the outer graph
//! must know about them is which outer values they read by name: their free names.

use std::collections::{BTreeSet, HashSet};

use crate::schema::{GraphProto, NodeProto};

/// Names a graph reads that it does not define (inputs, initializers, node outputs),
/// including those of nested subgraphs.
pub fn free_names(graph: &GraphProto) -> BTreeSet<String> {
    let defined = defined_names(graph);
    let mut free = BTreeSet::new();
    let mut read = |name: &str| {
        if !name.is_empty() && !defined.contains(name) {
            free.insert(name.to_string());
        }
    };
    for node in &graph.node {
        for input in &node.input {
            read(input);
        }
        for name in free_names_of_op(node) {
            read(&name);
        }
    }
    for output in &graph.output {
        read(output.name());
    }
    free
}

/// Free names of all subgraph attributes of a node.
pub fn free_names_of_op(node: &NodeProto) -> BTreeSet<String> {
    node.attribute
        .iter()
        .flat_map(|a| a.g.iter().chain(a.graphs.iter()))
        .flat_map(free_names)
        .collect()
}

fn defined_names(graph: &GraphProto) -> HashSet<&str> {
    let mut defined: HashSet<&str> = HashSet::new();
    defined.extend(graph.input.iter().map(|v| v.name()));
    defined.extend(graph.initializer.iter().map(|t| t.name()));
    defined.extend(
        graph
            .sparse_initializer
            .iter()
            .filter_map(|s| s.values.as_ref().map(|t| t.name())),
    );
    defined.extend(
        graph
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str)),
    );
    defined
}

/// Renames free references to `from` into `to`, through nested subgraphs. A graph that
/// defines `from` itself shadows it, so its references are left alone.
pub fn rename_free(graph: &mut GraphProto, from: &str, to: &str) {
    if defined_names(graph).contains(from) {
        return;
    }
    for node in &mut graph.node {
        for input in &mut node.input {
            if input == from {
                *input = to.to_string();
            }
        }
        for a in &mut node.attribute {
            if let Some(g) = &mut a.g {
                rename_free(g, from, to);
            }
            for g in &mut a.graphs {
                rename_free(g, from, to);
            }
        }
    }
    for v in graph.output.iter_mut().chain(graph.value_info.iter_mut()) {
        if v.name() == from {
            v.name = Some(to.to_string());
        }
    }
}
