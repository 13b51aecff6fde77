//! IR -> ModelProto. Ops are emitted in the graph's stable topological order; inputs,
//! initializers and value_info keep their original order with new entries after them.

use std::collections::HashSet;

use crate::Result;
use crate::ir::{Graph, Model, NodeId, NodeKind, ValueId, ValueInfoEntry};
use crate::schema::{GraphProto, ModelProto, NodeProto, ValueInfoProto};

/// Builds the ModelProto of a model. Tensor bytes are shared, not copied.
pub fn export(model: &Model) -> Result<ModelProto> {
    let mut proto = model.header.clone();
    proto.graph = Some(export_graph(&model.graph)?);
    Ok(proto)
}

fn export_graph(graph: &Graph) -> Result<GraphProto> {
    let mut proto = graph.header.clone();
    let order = graph.topological_order()?;

    proto.input = graph
        .inputs()
        .iter()
        .map(|&id| {
            let mut info = match &graph.node(id).kind {
                NodeKind::Input(info) => info.clone(),
                NodeKind::Initializer(init) => init.input_info.clone().unwrap_or_default(),
                _ => ValueInfoProto::default(),
            };
            info.name = Some(graph.node(id).outputs[0].name.clone());
            info
        })
        .collect();

    let mut sources: Vec<NodeId> = graph
        .node_ids()
        .filter(|&id| {
            matches!(
                graph.node(id).kind,
                NodeKind::Initializer(_) | NodeKind::SparseInitializer(_)
            )
        })
        .collect();
    sources.sort_by_key(|&id| graph.order(id));
    for id in sources {
        let name = &graph.node(id).outputs[0].name;
        match &graph.node(id).kind {
            NodeKind::Initializer(init) => {
                let mut t = init.tensor.proto().clone();
                t.name = Some(name.clone());
                proto.initializer.push(t);
            }
            NodeKind::SparseInitializer(s) => proto.sparse_initializer.push(s.clone()),
            _ => unreachable!("filtered above"),
        }
    }

    proto.node = order.iter().map(|&id| export_node(graph, id)).collect();

    proto.output = graph
        .outputs()
        .iter()
        .map(|o| {
            let mut info = o.info.clone();
            info.name = Some(graph.value_name(o.value).to_string());
            info
        })
        .collect();

    let mut listed: HashSet<ValueId> = HashSet::new();
    for entry in &graph.value_info_order {
        match entry {
            ValueInfoEntry::Value(v) => {
                if graph.contains(v.node)
                    && v.slot < graph.node(v.node).outputs.len()
                    && let Some(info) = &graph.value(*v).info
                {
                    listed.insert(*v);
                    proto
                        .value_info
                        .push(named_info(info, graph.value_name(*v)));
                }
            }
            ValueInfoEntry::Orphan(info) => proto.value_info.push(info.clone()),
        }
    }
    for &id in &order {
        for v in graph.outputs_of(id) {
            if let Some(info) = &graph.value(v).info
                && !listed.contains(&v)
            {
                proto.value_info.push(named_info(info, graph.value_name(v)));
            }
        }
    }
    Ok(proto)
}

fn named_info(info: &ValueInfoProto, name: &str) -> ValueInfoProto {
    let mut info = info.clone();
    info.name = Some(name.to_string());
    info
}

fn export_node(graph: &Graph, id: NodeId) -> NodeProto {
    let op = graph.op(id).expect("topological order holds ops only");
    let mut node = op.proto.clone();
    node.input = graph
        .inputs_of(id)
        .into_iter()
        .map(|v| {
            v.map(|v| graph.value_name(v).to_string())
                .unwrap_or_default()
        })
        .collect();
    node.output = graph
        .node(id)
        .outputs
        .iter()
        .map(|v| v.name.clone())
        .collect();
    node
}
