//! The dataflow graph. Graph inputs, initializers and ops are all nodes of one
//! `StableDiGraph`, so every value has exactly one producer: value = (node, output slot).
//! Node ids stay valid while other nodes are removed.

use std::borrow::Cow;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use petgraph::Direction;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;

use super::node::{Node, NodeKind, Op, Order, Value};
use super::subgraph;
use super::tensor::Tensor;
use crate::schema::{GraphProto, ValueInfoProto};
use crate::{Error, Result};

/// A node of the graph. Opaque; valid until that node is removed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(NodeIndex<u32>);

/// A value: output `slot` of `node`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId {
    pub node: NodeId,
    pub slot: usize,
}

/// Where an edge enters its consumer.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    /// Positional input `i` of an op.
    Input(usize),
    /// An outer-scope value read by name inside one of the op's subgraphs (If/Loop/Scan bodies).
    Capture,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Edge {
    from_slot: usize,
    port: Port,
}

/// One consumer of a value.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Use {
    pub node: NodeId,
    pub port: Port,
}

/// A declared graph output: the value it reads and its declaration (type, doc string).
#[derive(Clone, Debug, PartialEq)]
pub struct GraphOutput {
    pub value: ValueId,
    pub info: ValueInfoProto,
}

/// An entry of `GraphProto.value_info`, in file order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ValueInfoEntry {
    /// Stored on the value it describes (dropped if the value is removed).
    Value(ValueId),
    /// Describes a name no node produces; kept verbatim.
    Orphan(ValueInfoProto),
}

/// A dataflow graph with ONNX semantics.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    dag: StableDiGraph<Node, Edge, u32>,
    /// Graph inputs in declaration order: `Input` nodes and initializers declared as inputs.
    inputs: Vec<NodeId>,
    outputs: Vec<GraphOutput>,
    /// Everything of the GraphProto the graph structure does not model (name, doc string,
    /// quantization annotations, metadata), carried verbatim.
    pub header: GraphProto,
    pub(crate) value_info_order: Vec<ValueInfoEntry>,
    names: HashMap<String, ValueId>,
    node_names: BTreeSet<String>,
    next_minor: u32,
    /// Bumped by every mutating method (not by edits of the `header` field, which no analysis
    /// reads): what caches of derived facts compare against.
    revision: u64,
}

impl Graph {
    /// Changes whenever a method changes the graph (a cache key; not part of the model).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn new(header: GraphProto) -> Graph {
        Graph {
            header,
            next_minor: 1,
            revision: 0,
            ..Default::default()
        }
    }

    // ----- reading -----

    pub fn node(&self, id: NodeId) -> &Node {
        &self.dag[id.0]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.revision += 1;
        &mut self.dag[id.0]
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.dag.contains_node(id.0)
    }

    /// The op of a node, `None` for inputs and initializers.
    pub fn op(&self, id: NodeId) -> Option<&Op> {
        match &self.node(id).kind {
            NodeKind::Op(op) => Some(op),
            _ => None,
        }
    }

    pub fn op_mut(&mut self, id: NodeId) -> Option<&mut Op> {
        self.revision += 1;
        match &mut self.node_mut(id).kind {
            NodeKind::Op(op) => Some(op),
            _ => None,
        }
    }

    /// All nodes, in no particular order. Use [`Graph::topological_order`] for a stable order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.dag.node_indices().map(NodeId)
    }

    pub fn node_count(&self) -> usize {
        self.dag.node_count()
    }

    pub fn value(&self, v: ValueId) -> &Value {
        &self.node(v.node).outputs[v.slot]
    }

    pub fn value_mut(&mut self, v: ValueId) -> &mut Value {
        self.revision += 1;
        &mut self.node_mut(v.node).outputs[v.slot]
    }

    pub fn value_name(&self, v: ValueId) -> &str {
        &self.value(v).name
    }

    /// The value of a given name.
    pub fn find_value(&self, name: &str) -> Option<ValueId> {
        self.names.get(name).copied()
    }

    /// The values a node produces, skipping omitted optional outputs.
    pub fn outputs_of(&self, id: NodeId) -> impl Iterator<Item = ValueId> + '_ {
        self.node(id)
            .outputs
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.name.is_empty())
            .map(move |(slot, _)| ValueId { node: id, slot })
    }

    /// The positional inputs of an op, one entry per slot; `None` is an omitted optional input.
    pub fn inputs_of(&self, id: NodeId) -> Vec<Option<ValueId>> {
        let arity = self.op(id).map_or(0, |op| op.num_inputs);
        let mut inputs = vec![None; arity];
        for e in self.dag.edges_directed(id.0, Direction::Incoming) {
            if let Port::Input(slot) = e.weight().port {
                if slot < arity {
                    inputs[slot] = Some(ValueId {
                        node: NodeId(e.source()),
                        slot: e.weight().from_slot,
                    });
                }
            }
        }
        inputs
    }

    /// Positional input `slot` of an op, if present.
    pub fn input(&self, id: NodeId, slot: usize) -> Option<ValueId> {
        self.dag
            .edges_directed(id.0, Direction::Incoming)
            .find(|e| e.weight().port == Port::Input(slot))
            .map(|e| ValueId {
                node: NodeId(e.source()),
                slot: e.weight().from_slot,
            })
    }

    /// Every incoming edge of a node: its port and the value it carries.
    pub fn incoming(&self, id: NodeId) -> Vec<(Port, ValueId)> {
        let mut edges: Vec<(Port, ValueId)> = self
            .dag
            .edges_directed(id.0, Direction::Incoming)
            .map(|e| {
                (
                    e.weight().port,
                    ValueId {
                        node: NodeId(e.source()),
                        slot: e.weight().from_slot,
                    },
                )
            })
            .collect();
        edges.sort();
        edges
    }

    /// Outer-scope values read by the node's subgraphs, sorted by name.
    pub fn captures_of(&self, id: NodeId) -> Vec<ValueId> {
        let mut captured: Vec<ValueId> = self
            .dag
            .edges_directed(id.0, Direction::Incoming)
            .filter(|e| e.weight().port == Port::Capture)
            .map(|e| ValueId {
                node: NodeId(e.source()),
                slot: e.weight().from_slot,
            })
            .collect();
        captured.sort_by(|a, b| self.value_name(*a).cmp(self.value_name(*b)));
        captured.dedup();
        captured
    }

    /// Every consumer of a value (graph outputs not included), sorted.
    pub fn uses(&self, v: ValueId) -> Vec<Use> {
        let mut uses: Vec<Use> = self
            .dag
            .edges_directed(v.node.0, Direction::Outgoing)
            .filter(|e| e.weight().from_slot == v.slot)
            .map(|e| Use {
                node: NodeId(e.target()),
                port: e.weight().port,
            })
            .collect();
        uses.sort();
        uses
    }

    /// True when nothing reads the value: no consumer and not a graph output.
    pub fn is_unused(&self, v: ValueId) -> bool {
        !self.is_graph_output(v)
            && !self
                .dag
                .edges_directed(v.node.0, Direction::Outgoing)
                .any(|e| e.weight().from_slot == v.slot)
    }

    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[GraphOutput] {
        &self.outputs
    }

    pub fn is_graph_output(&self, v: ValueId) -> bool {
        self.outputs.iter().any(|o| o.value == v)
    }

    pub fn is_graph_input(&self, id: NodeId) -> bool {
        self.inputs.contains(&id)
    }

    /// The op producing a value, if the value comes from an op.
    pub fn producer(&self, v: ValueId) -> Option<&Op> {
        self.op(v.node)
    }

    /// The constant value of `v`, when it is fixed at compile time: a non-overridable
    /// initializer or the output of a `Constant` op.
    pub fn constant(&self, v: ValueId) -> Option<Cow<'_, Tensor>> {
        match &self.node(v.node).kind {
            NodeKind::Initializer(init) if init.input_info.is_none() => {
                Some(Cow::Borrowed(&init.tensor))
            }
            NodeKind::Op(op) if op.is("Constant") => op.constant_value().ok().flatten(),
            _ => None,
        }
    }

    /// The order in which a node was created, for deterministic emission.
    pub fn order(&self, id: NodeId) -> Order {
        self.node(id).order
    }

    /// Ops in a stable topological order: among ready nodes, the earliest created first.
    /// Fails on a cycle and names a node on it.
    pub fn topological_order(&self) -> Result<Vec<NodeId>> {
        // Inputs and initializers have their own order keys; they all go before any op.
        let key = |n: NodeIndex<u32>| {
            let is_op = matches!(self.dag[n].kind, NodeKind::Op(_));
            std::cmp::Reverse((is_op, self.dag[n].order, n))
        };
        let mut pending: HashMap<NodeIndex<u32>, usize> = HashMap::new();
        let mut ready = BinaryHeap::new();
        for n in self.dag.node_indices() {
            // One count per edge: a value read twice is released twice.
            let count = self.dag.edges_directed(n, Direction::Incoming).count();
            if count == 0 {
                ready.push(key(n));
            } else {
                pending.insert(n, count);
            }
        }
        let mut order = Vec::with_capacity(self.dag.node_count());
        while let Some(std::cmp::Reverse((_, _, n))) = ready.pop() {
            if matches!(self.dag[n].kind, NodeKind::Op(_)) {
                order.push(NodeId(n));
            }
            for e in self.dag.edges_directed(n, Direction::Outgoing) {
                let t = e.target();
                let left = pending.get_mut(&t).expect("target has pending edges");
                *left -= 1;
                if *left == 0 {
                    pending.remove(&t);
                    ready.push(key(t));
                }
            }
        }
        if let Some((&n, _)) = pending.iter().min_by_key(|(n, _)| self.dag[**n].order) {
            return Err(Error::invalid(format!(
                "the graph has a cycle through {}",
                self.describe(NodeId(n))
            )));
        }
        Ok(order)
    }

    /// A short human description of a node for messages: `node 'name' (Op)` or `input 'x'`.
    pub fn describe(&self, id: NodeId) -> String {
        let node = self.node(id);
        match &node.kind {
            NodeKind::Input(info) => format!("graph input '{}'", info.name()),
            NodeKind::Initializer(init) => format!("initializer '{}'", init.tensor.name()),
            NodeKind::SparseInitializer(_) => {
                format!("sparse initializer '{}'", node.outputs[0].name)
            }
            NodeKind::Op(op) => {
                let first = node.outputs.iter().find(|v| !v.name.is_empty());
                match (op.name(), first) {
                    ("", Some(v)) => format!("{} node producing '{}'", op.op_type(), v.name),
                    ("", None) => format!("{} node", op.op_type()),
                    (name, _) => format!("node '{name}' ({})", op.op_type()),
                }
            }
        }
    }

    // ----- building and mutating -----

    /// Adds a node; registers its output names. Fails on a duplicate value name.
    pub fn add_node(
        &mut self,
        kind: NodeKind,
        outputs: Vec<Value>,
        order: Order,
    ) -> Result<NodeId> {
        self.revision += 1;
        for v in &outputs {
            if !v.name.is_empty() && self.names.contains_key(&v.name) {
                return Err(Error::invalid(format!(
                    "value name '{}' is produced twice (by {} and by a {})",
                    v.name,
                    self.describe(self.names[&v.name].node),
                    kind.describe_kind(),
                )));
            }
        }
        if let NodeKind::Op(op) = &kind {
            if !op.name().is_empty() {
                self.node_names.insert(op.name().to_string());
            }
        }
        let id = NodeId(self.dag.add_node(Node {
            kind,
            outputs,
            order,
        }));
        for (slot, v) in self.dag[id.0].outputs.iter().enumerate() {
            if !v.name.is_empty() {
                self.names
                    .insert(v.name.clone(), ValueId { node: id, slot });
            }
        }
        Ok(id)
    }

    /// Wires `from` into positional input `slot` of `to` (replacing what was there).
    pub fn set_input(&mut self, to: NodeId, slot: usize, from: Option<ValueId>) {
        self.revision += 1;
        if let Some(e) = self.input_edge(to, slot) {
            self.dag.remove_edge(e);
        }
        if let Some(op) = self.op_mut(to) {
            op.num_inputs = op.num_inputs.max(slot + 1);
        }
        if let Some(from) = from {
            self.dag.add_edge(
                from.node.0,
                to.0,
                Edge {
                    from_slot: from.slot,
                    port: Port::Input(slot),
                },
            );
        }
    }

    /// Records that a subgraph of `to` reads `from` by name.
    pub fn add_capture(&mut self, to: NodeId, from: ValueId) {
        self.revision += 1;
        let exists = self
            .dag
            .edges_connecting(from.node.0, to.0)
            .any(|e| e.weight().port == Port::Capture && e.weight().from_slot == from.slot);
        if !exists {
            self.dag.add_edge(
                from.node.0,
                to.0,
                Edge {
                    from_slot: from.slot,
                    port: Port::Capture,
                },
            );
        }
    }

    fn input_edge(&self, to: NodeId, slot: usize) -> Option<EdgeIndex<u32>> {
        self.dag
            .edges_directed(to.0, Direction::Incoming)
            .find(|e| e.weight().port == Port::Input(slot))
            .map(|e| e.id())
    }

    /// Makes every consumer of `old` read `new` instead, including subgraphs that capture `old`
    /// (their references are renamed). Graph outputs are not touched: see
    /// [`Graph::set_output_value`].
    pub fn replace_uses(&mut self, old: ValueId, new: ValueId) {
        self.revision += 1;
        if old == new {
            return;
        }
        let edges: Vec<(EdgeIndex<u32>, NodeId, Port)> = self
            .dag
            .edges_directed(old.node.0, Direction::Outgoing)
            .filter(|e| e.weight().from_slot == old.slot)
            .map(|e| (e.id(), NodeId(e.target()), e.weight().port))
            .collect();
        let (old_name, new_name) = (
            self.value_name(old).to_string(),
            self.value_name(new).to_string(),
        );
        for (e, consumer, port) in edges {
            self.dag.remove_edge(e);
            match port {
                Port::Input(slot) => self.set_input(consumer, slot, Some(new)),
                Port::Capture => {
                    if let Some(op) = self.op_mut(consumer) {
                        op.rename_captured(&old_name, &new_name);
                    }
                    self.add_capture(consumer, new);
                }
            }
        }
    }

    /// Points graph output `index` at another value. The caller keeps the output's name
    /// stable (the rewriter does: graph output names are API).
    pub fn set_output_value(&mut self, index: usize, value: ValueId) {
        self.revision += 1;
        self.outputs[index].value = value;
    }

    /// Replaces the declaration (type, doc string) of graph output `index`.
    pub fn set_output_info(&mut self, index: usize, info: crate::schema::ValueInfoProto) {
        self.revision += 1;
        self.outputs[index].info = info;
    }

    pub(crate) fn push_output(&mut self, output: GraphOutput) {
        self.revision += 1;
        self.outputs.push(output);
    }

    /// Declares an existing value as an extra graph output (under its own name).
    pub fn add_output(&mut self, value: ValueId) {
        self.revision += 1;
        let info = ValueInfoProto {
            name: Some(self.value_name(value).to_string()),
            ..Default::default()
        };
        self.outputs.push(GraphOutput { value, info });
    }

    pub(crate) fn push_input(&mut self, id: NodeId) {
        self.revision += 1;
        self.inputs.push(id);
    }

    /// Renames a value, and the references to it inside capturing subgraphs.
    pub fn rename_value(&mut self, v: ValueId, name: &str) -> Result<()> {
        self.revision += 1;
        let old = self.value_name(v).to_string();
        if old == name {
            return Ok(());
        }
        if self.names.contains_key(name) {
            return Err(Error::invalid(format!(
                "value name '{name}' already exists"
            )));
        }
        for u in self.uses(v) {
            if u.port == Port::Capture {
                if let Some(op) = self.op_mut(u.node) {
                    op.rename_captured(&old, name);
                }
            }
        }
        self.names.remove(&old);
        self.names.insert(name.to_string(), v);
        self.value_mut(v).name = name.to_string();
        match &mut self.node_mut(v.node).kind {
            NodeKind::Input(info) => info.name = Some(name.to_string()),
            NodeKind::Initializer(init) => {
                init.tensor.set_name(name);
                if let Some(info) = &mut init.input_info {
                    info.name = Some(name.to_string());
                }
            }
            _ => {}
        }
        for out in &mut self.outputs {
            if out.value == v {
                out.info.name = Some(name.to_string());
            }
        }
        Ok(())
    }

    /// Removes a node and every edge touching it. Its values must be unused.
    pub fn remove_node(&mut self, id: NodeId) -> Result<()> {
        self.revision += 1;
        for v in self.outputs_of(id).collect::<Vec<_>>() {
            if !self.is_unused(v) {
                return Err(Error::invalid(format!(
                    "cannot remove {}: its value '{}' is still used",
                    self.describe(id),
                    self.value_name(v)
                )));
            }
        }
        if let Some(node) = self.dag.remove_node(id.0) {
            for v in &node.outputs {
                if !v.name.is_empty() {
                    self.names.remove(&v.name);
                }
            }
        }
        self.inputs.retain(|&i| i != id);
        Ok(())
    }

    /// A value or node name not used yet, derived from `base` (`base`, `base_1`, ...).
    pub fn fresh_name(&self, base: &str) -> String {
        let taken = |n: &str| self.names.contains_key(n) || self.node_names.contains(n);
        if !base.is_empty() && !taken(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !taken(n))
            .expect("unbounded")
    }

    /// The order key for a node created now, placed right after `anchor` (or last).
    pub fn next_order(&mut self, anchor: Option<NodeId>) -> Order {
        self.revision += 1;
        let minor = self.next_minor;
        self.next_minor += 1;
        Order {
            major: anchor.map_or(u32::MAX, |a| self.order(a).major),
            minor,
        }
    }

    /// All value names currently defined.
    pub fn value_names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    /// Reserves a node name so [`Graph::fresh_name`] will not hand it out.
    pub(crate) fn reserve_node_name(&mut self, name: &str) {
        self.revision += 1;
        if !name.is_empty() {
            self.node_names.insert(name.to_string());
        }
    }

    /// Names read by an op's subgraphs that no subgraph defines, i.e. its captures.
    pub fn free_names_of_subgraphs(op: &Op) -> BTreeSet<String> {
        subgraph::free_names_of_op(&op.proto)
    }
}
