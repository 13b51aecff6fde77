//! The one way passes mutate a model. It names new nodes after the node they replace
//! (`<anchor>/<suffix>`), keeps graph output names stable when an output value is replaced,
//! and removes what a rewrite leaves dead.

use std::collections::{BTreeSet, HashMap};

use crate::ir::{Array, Graph, Initializer, Model, NodeId, NodeKind, Op, Tensor, Value, ValueId};
use crate::schema::AttributeProto;
use crate::{Error, Result};

pub struct Rewriter<'m> {
    model: &'m mut Model,
    anchor: Option<NodeId>,
    /// Nodes that may have become dead; checked in `finish`.
    maybe_dead: BTreeSet<NodeId>,
}

impl<'m> Rewriter<'m> {
    /// A rewriter whose new nodes are named and ordered after `anchor`.
    pub fn new(model: &'m mut Model, anchor: NodeId) -> Rewriter<'m> {
        Rewriter {
            model,
            anchor: Some(anchor),
            maybe_dead: BTreeSet::new(),
        }
    }

    /// A rewriter not tied to a node (new nodes go last).
    pub fn unanchored(model: &'m mut Model) -> Rewriter<'m> {
        Rewriter {
            model,
            anchor: None,
            maybe_dead: BTreeSet::new(),
        }
    }

    /// Names and orders the nodes added from now on after `anchor`; returns the previous one.
    pub fn set_anchor(&mut self, anchor: NodeId) -> Option<NodeId> {
        self.anchor.replace(anchor)
    }

    /// Restores an anchor returned by [`Rewriter::set_anchor`].
    pub fn restore_anchor(&mut self, anchor: Option<NodeId>) {
        self.anchor = anchor;
    }

    pub fn model(&self) -> &Model {
        self.model
    }

    pub fn graph(&self) -> &Graph {
        &self.model.graph
    }

    /// Edits an op in place (attributes, domain); its inputs and outputs stay.
    pub fn modify_op(&mut self, id: NodeId, edit: impl FnOnce(&mut Op)) -> Result<()> {
        let op = self.model.graph.op_mut(id).ok_or_else(|| Error::Pass {
            pass: "rewriter".into(),
            message: format!("node {id:?} is not an op"),
        })?;
        edit(op);
        Ok(())
    }

    /// Edits what a value carries (its quantization, its origin), not its uses.
    pub fn annotate(&mut self, v: ValueId, edit: impl FnOnce(&mut Value)) {
        edit(self.model.graph.value_mut(v));
    }

    /// Rewires input `slot` of `node`; the producer of the old input may become dead.
    pub fn set_input(&mut self, node: NodeId, slot: usize, value: Option<ValueId>) {
        if let Some(old) = self.model.graph.input(node, slot) {
            self.maybe_dead.insert(old.node);
        }
        self.model.graph.set_input(node, slot, value);
    }

    /// Copies the ops `nodes` (in graph order), reading `substitutions` in place of the values
    /// they name and each other's copies in place of the originals. Copies are named
    /// `<original>/<suffix>`, keep the originals' plans, facts and statistics, and stand for
    /// the same float values (their origin), so the compiled model's value map lists every
    /// copy (a copy that stands for a part of a value, a residual term say, clears its origin
    /// with [`Rewriter::annotate`]). Ops with omitted outputs or subgraphs are refused. Returns
    /// the map from original to copied values (substitutions included).
    pub fn clone_subgraph(
        &mut self,
        nodes: &[NodeId],
        substitutions: &HashMap<ValueId, ValueId>,
        suffix: &str,
    ) -> Result<HashMap<ValueId, ValueId>> {
        let mut map = substitutions.clone();
        let wanted: BTreeSet<NodeId> = nodes.iter().copied().collect();
        let order: Vec<NodeId> = self
            .model
            .graph
            .topological_order()?
            .into_iter()
            .filter(|id| wanted.contains(id))
            .collect();
        let anchor = self.anchor;
        for id in order {
            let g = &self.model.graph;
            let op = g.op(id).cloned().ok_or_else(|| Error::Pass {
                pass: "rewriter".into(),
                message: format!("clone_subgraph: {} is not an op", g.describe(id)),
            })?;
            let inputs: Vec<Option<ValueId>> = g
                .inputs_of(id)
                .into_iter()
                .map(|v| v.map(|v| map.get(&v).copied().unwrap_or(v)))
                .collect();
            let outputs: Vec<ValueId> = g.outputs_of(id).collect();
            let slots = g.node(id).outputs.len();
            // Omitted optional outputs would become real ones, and subgraph captures are edges
            // the copy would not have: refuse rather than copy wrongly.
            let omitted = g.node(id).outputs.iter().any(|v| v.name.is_empty());
            let has_subgraph = op
                .attrs()
                .iter()
                .any(|a| a.g.is_some() || !a.graphs.is_empty());
            if omitted || has_subgraph {
                return Err(Error::unsupported(format!(
                    "clone_subgraph: {} has omitted outputs or subgraphs",
                    g.describe(id)
                )));
            }
            self.anchor = Some(id);
            let attrs = op.attrs().to_vec();
            let mut copy = Op::new(op.op_type(), "");
            copy.proto.domain = op.proto.domain.clone();
            let new = self.op_node(copy, suffix, &inputs, attrs, slots)?;
            for old in outputs {
                let new_value = ValueId {
                    node: new,
                    slot: old.slot,
                };
                let original = self.model.graph.value(old).clone();
                let value = self.model.graph.value_mut(new_value);
                value.plan = original.plan;
                value.quant = original.quant;
                value.stats = original.stats;
                value.prior = original.prior;
                value.origin = Some(original.origin.unwrap_or(original.name));
                map.insert(old, new_value);
            }
        }
        self.anchor = anchor;
        Ok(map)
    }

    pub fn model_mut(&mut self) -> &mut Model {
        self.model
    }

    /// The name new things are derived from: the anchor's node name, else its first output.
    fn base_name(&self) -> String {
        let Some(anchor) = self.anchor.filter(|&a| self.model.graph.contains(a)) else {
            return "intone".into();
        };
        let g = &self.model.graph;
        match g.op(anchor) {
            Some(op) if !op.name().is_empty() => op.name().to_string(),
            _ => g
                .outputs_of(anchor)
                .next()
                .map(|v| g.value_name(v).to_string())
                .unwrap_or_else(|| "intone".into()),
        }
    }

    /// Adds an op with one output; returns that output.
    pub fn op(
        &mut self,
        op_type: &str,
        suffix: &str,
        inputs: &[ValueId],
        attrs: Vec<AttributeProto>,
    ) -> Result<ValueId> {
        let id = self.op_node(
            Op::new(op_type, ""),
            suffix,
            &inputs.iter().map(|&v| Some(v)).collect::<Vec<_>>(),
            attrs,
            1,
        )?;
        Ok(ValueId { node: id, slot: 0 })
    }

    /// Adds an op (any domain, optional inputs, several outputs); returns its node.
    pub fn op_node(
        &mut self,
        mut op: Op,
        suffix: &str,
        inputs: &[Option<ValueId>],
        attrs: Vec<AttributeProto>,
        outputs: usize,
    ) -> Result<NodeId> {
        let base = format!("{}/{suffix}", self.base_name());
        let g = &mut self.model.graph;
        let name = g.fresh_name(&base);
        g.reserve_node_name(&name);
        op.proto.name = Some(name.clone());
        op.proto.attribute = attrs;
        op.num_inputs = inputs.len();
        // `name` is free as a node name and as a value name: a single output shares it.
        let values = (0..outputs)
            .map(|i| match outputs {
                1 => Value::named(name.clone()),
                _ => Value::named(g.fresh_name(&format!("{name}:{i}"))),
            })
            .collect::<Vec<_>>();
        let order = g.next_order(self.anchor);
        let id = g.add_node(NodeKind::Op(op), values, order)?;
        for (slot, input) in inputs.iter().enumerate() {
            g.set_input(id, slot, *input);
        }
        Ok(id)
    }

    /// Adds a constant initializer holding `array`.
    pub fn constant(&mut self, suffix: &str, array: &Array) -> Result<ValueId> {
        let base = format!("{}/{suffix}", self.base_name());
        let g = &mut self.model.graph;
        let name = g.fresh_name(&base);
        let order = g.next_order(None);
        let id = g.add_node(
            NodeKind::Initializer(Initializer {
                tensor: Tensor::from_array(name.clone(), array),
                input_info: None,
            }),
            vec![Value::named(name)],
            order,
        )?;
        Ok(ValueId { node: id, slot: 0 })
    }

    /// Replaces every use of `old` by `new`. If `old` is a graph output, the output keeps its
    /// name: `new` takes the name over, or (when `new` is itself an input or output) an
    /// `Identity` carries it.
    pub fn replace(&mut self, old: ValueId, new: ValueId) -> Result<()> {
        if old == new {
            return Ok(());
        }
        self.model.graph.replace_uses(old, new);
        self.maybe_dead.insert(old.node);
        // The new value stands for what the old one stood for.
        if self.model.graph.value(new).origin.is_none() {
            let old_value = self.model.graph.value(old);
            let origin = old_value
                .origin
                .clone()
                .unwrap_or_else(|| old_value.name.clone());
            self.model.graph.value_mut(new).origin = Some(origin);
        }
        let outputs: Vec<usize> = self
            .model
            .graph
            .outputs()
            .iter()
            .enumerate()
            .filter(|(_, o)| o.value == old)
            .map(|(i, _)| i)
            .collect();
        for index in outputs {
            let g = &mut self.model.graph;
            let name = g.value_name(old).to_string();
            let retired = g.fresh_name(&format!("{name}/replaced"));
            g.rename_value(old, &retired)?;
            let can_take_name = !g.is_graph_output(new)
                && !g.is_graph_input(new.node)
                && !matches!(g.node(new.node).kind, NodeKind::Input(_));
            if can_take_name {
                g.rename_value(new, &name)?;
                g.set_output_value(index, new);
            } else {
                let id = self.op_node(
                    Op::new("Identity", ""),
                    "keep_output_name",
                    &[Some(new)],
                    vec![],
                    1,
                )?;
                let carrier = ValueId { node: id, slot: 0 };
                let g = &mut self.model.graph;
                g.rename_value(carrier, &name)?;
                g.set_output_value(index, carrier);
            }
        }
        Ok(())
    }

    /// Marks a node for removal once nothing reads it.
    pub fn erase_if_dead(&mut self, node: NodeId) {
        self.maybe_dead.insert(node);
    }

    /// Removes the marked nodes that nothing reads, and then their producers in turn.
    pub fn finish(mut self) -> Result<()> {
        for id in std::mem::take(&mut self.maybe_dead) {
            remove_if_dead(&mut self.model.graph, id)?;
        }
        Ok(())
    }
}

/// Removes `id` when it is dead, then walks up to its producers. Returns whether it was removed.
pub(crate) fn remove_if_dead(graph: &mut Graph, id: NodeId) -> Result<bool> {
    let mut stack = vec![id];
    let mut removed_any = false;
    while let Some(id) = stack.pop() {
        if !graph.contains(id) || !is_removable(graph, id) {
            continue;
        }
        let producers: Vec<NodeId> = graph
            .incoming(id)
            .into_iter()
            .map(|(_, v)| v.node)
            .collect();
        graph.remove_node(id).map_err(|e| Error::Pass {
            pass: "rewriter".into(),
            message: e.to_string(),
        })?;
        removed_any = true;
        stack.extend(producers);
    }
    Ok(removed_any)
}

/// A node can go when nothing reads any of its values and it is not a graph input.
pub(crate) fn is_removable(graph: &Graph, id: NodeId) -> bool {
    if graph.is_graph_input(id) || matches!(graph.node(id).kind, NodeKind::Input(_)) {
        return false;
    }
    graph.outputs_of(id).all(|v| graph.is_unused(v))
}
