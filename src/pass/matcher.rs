//! Small pure queries that pattern matchers compose: "the default-domain op of this type that
//! produces v", "the scalar constant at this input", "the only reader of v".

use crate::ir::{Graph, NodeId, ValueId};

pub fn out(node: NodeId) -> ValueId {
    ValueId { node, slot: 0 }
}

/// The node producing `v`, when it is a default-domain `op_type`.
pub fn producer(g: &Graph, v: ValueId, op_type: &str) -> Option<NodeId> {
    g.op(v.node)
        .is_some_and(|o| o.is(op_type) && o.domain().is_empty())
        .then_some(v.node)
}

/// The value of a constant holding one element.
pub fn scalar(g: &Graph, v: Option<ValueId>) -> Option<f64> {
    let a = g.constant(v?)?.decode().ok()?.to_f64_vec();
    (a.len() == 1).then(|| a[0])
}

/// `Some(x)` when `node` is a binary op with one scalar-constant input equal to `c` (within
/// `tolerance` relative) and the other input `x`.
pub fn with_constant(g: &Graph, node: NodeId, c: f64, tolerance: f64) -> Option<ValueId> {
    let (a, b) = (g.input(node, 0)?, g.input(node, 1)?);
    let close =
        |v: ValueId| scalar(g, Some(v)).is_some_and(|k| (k - c).abs() <= tolerance * c.abs());
    if close(b) {
        Some(a)
    } else if close(a) {
        Some(b)
    } else {
        None
    }
}

/// The other input of a binary `node` one of whose inputs is `v`.
pub fn other_input(g: &Graph, node: NodeId, v: ValueId) -> Option<ValueId> {
    let (a, b) = (g.input(node, 0)?, g.input(node, 1)?);
    if a == v {
        Some(b)
    } else if b == v {
        Some(a)
    } else {
        None
    }
}

/// The only reader of `v` when it is a default-domain `op_type` (and `v` is no graph output).
pub fn sole_reader(g: &Graph, v: ValueId, op_type: &str) -> Option<NodeId> {
    let uses = g.uses(v);
    if uses.len() != 1 || g.is_graph_output(v) {
        return None;
    }
    let node = uses[0].node;
    g.op(node)
        .is_some_and(|o| o.is(op_type) && o.domain().is_empty())
        .then_some(node)
}

/// Every default-domain `op_type` reader of `v`.
pub fn readers(g: &Graph, v: ValueId, op_type: &str) -> Vec<NodeId> {
    let mut r: Vec<NodeId> = g
        .uses(v)
        .iter()
        .map(|u| u.node)
        .filter(|&n| {
            g.op(n)
                .is_some_and(|o| o.is(op_type) && o.domain().is_empty())
        })
        .collect();
    r.sort_by_key(|&n| g.order(n));
    r.dedup();
    r
}
