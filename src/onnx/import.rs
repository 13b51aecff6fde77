//! ModelProto -> IR. Checks what the IR relies on: unique value names, every input name
//! defined, graph outputs produced, no cycle, well-formed tensors.

use std::collections::HashMap;

use crate::ir::{
    Graph, GraphOutput, Initializer, Model, NodeId, NodeKind, Op, Order, Tensor, Value,
    ValueInfoEntry,
};
use crate::schema::{GraphProto, ModelProto, NodeProto};
use crate::{Error, Result};

/// Builds the IR of a decoded model. The proto's graph moves into the IR; tensor bytes are
/// not copied.
pub fn import(mut proto: ModelProto) -> Result<Model> {
    let graph = proto
        .graph
        .take()
        .ok_or_else(|| Error::invalid("the model has no graph (field ModelProto.graph)"))?;
    Ok(Model {
        header: proto,
        graph: import_graph(graph)?,
        phase: None,
    })
}

fn import_graph(proto: GraphProto) -> Result<Graph> {
    let GraphProto {
        node: nodes,
        name,
        initializer,
        sparse_initializer,
        doc_string,
        input,
        output,
        value_info,
        quantization_annotation,
        metadata_props,
    } = proto;
    let mut graph = Graph::new(GraphProto {
        name,
        doc_string,
        quantization_annotation,
        metadata_props,
        ..Default::default()
    });

    // Graph inputs that are also initializers are overridable defaults, held by the initializer.
    let mut declared: HashMap<String, (usize, crate::schema::ValueInfoProto)> = HashMap::new();
    for (i, info) in input.into_iter().enumerate() {
        if info.name().is_empty() {
            return Err(Error::invalid(format!("graph input #{i} has no name")));
        }
        if declared.contains_key(info.name()) {
            return Err(Error::invalid(format!(
                "graph input '{}' is declared twice",
                info.name()
            )));
        }
        declared.insert(info.name().to_string(), (i, info));
    }

    let mut input_nodes: Vec<(usize, NodeId)> = Vec::new();
    for (i, tensor) in initializer.into_iter().enumerate() {
        let tensor = Tensor::from_proto(tensor);
        if tensor.name().is_empty() {
            return Err(Error::invalid(format!("initializer #{i} has no name")));
        }
        tensor.validate()?;
        let name = tensor.name().to_string();
        let as_input = declared.remove(&name);
        let id = graph.add_node(
            NodeKind::Initializer(Initializer {
                tensor,
                input_info: as_input.as_ref().map(|(_, info)| info.clone()),
            }),
            vec![Value::named(name)],
            Order::original(i),
        )?;
        if let Some((position, _)) = as_input {
            input_nodes.push((position, id));
        }
    }
    for (i, sparse) in sparse_initializer.into_iter().enumerate() {
        let name = sparse
            .values
            .as_ref()
            .map(|v| v.name().to_string())
            .unwrap_or_default();
        if name.is_empty() {
            return Err(Error::invalid(format!(
                "sparse initializer #{i} has no name (field values.name)"
            )));
        }
        graph.add_node(
            NodeKind::SparseInitializer(sparse),
            vec![Value::named(name)],
            Order::original(i),
        )?;
    }
    let mut declared: Vec<_> = declared.into_values().collect();
    declared.sort_by_key(|(position, _)| *position);
    for (position, info) in declared {
        let name = info.name().to_string();
        let id = graph.add_node(
            NodeKind::Input(info),
            vec![Value::named(name)],
            Order::original(position),
        )?;
        input_nodes.push((position, id));
    }
    input_nodes.sort_by_key(|(position, _)| *position);
    for (_, id) in input_nodes {
        graph.push_input(id);
    }

    // Ops first, wiring second: the file's node order need not be topological.
    let mut wiring: Vec<(NodeId, Vec<String>)> = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.into_iter().enumerate() {
        let NodeProto { input, output, .. } = &node;
        let (inputs, outputs) = (input.clone(), output.clone());
        let mut proto = node;
        proto.input.clear();
        proto.output.clear();
        let op = Op {
            proto,
            num_inputs: inputs.len(),
        };
        validate_op_tensors(&op)?;
        let id = graph.add_node(
            NodeKind::Op(op),
            outputs.into_iter().map(Value::named).collect(),
            Order::original(i),
        )?;
        wiring.push((id, inputs));
    }
    for (id, inputs) in wiring {
        for (slot, name) in inputs.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            let from = graph.find_value(name).ok_or_else(|| {
                Error::invalid(format!(
                    "{} reads '{name}' (input {slot}), which no node, initializer or graph input defines",
                    graph.describe(id)
                ))
            })?;
            graph.set_input(id, slot, Some(from));
        }
        let op = graph.op(id).expect("op node");
        if op.has_subgraphs() {
            for name in Graph::free_names_of_subgraphs(op) {
                let from = graph.find_value(&name).ok_or_else(|| {
                    Error::invalid(format!(
                        "a subgraph of {} reads '{name}', which is not defined in any enclosing scope",
                        graph.describe(id)
                    ))
                })?;
                graph.add_capture(id, from);
            }
        }
    }

    for (i, info) in output.into_iter().enumerate() {
        let value = graph.find_value(info.name()).ok_or_else(|| {
            Error::invalid(format!(
                "graph output #{i} '{}' is not produced by any node, initializer or graph input",
                info.name()
            ))
        })?;
        graph.push_output(GraphOutput { value, info });
    }

    for info in value_info {
        match graph.find_value(info.name()) {
            Some(v) if graph.value(v).info.is_none() => {
                graph.value_mut(v).info = Some(info);
                graph.value_info_order.push(ValueInfoEntry::Value(v));
            }
            _ => graph.value_info_order.push(ValueInfoEntry::Orphan(info)),
        }
    }

    graph.topological_order()?;
    Ok(graph)
}

/// Tensors inside attributes (the value of a `Constant`) get the same checks as initializers.
fn validate_op_tensors(op: &Op) -> Result<()> {
    for a in op.attrs() {
        for t in a.t.iter().chain(a.tensors.iter()) {
            Tensor::from_proto(t.clone()).validate().map_err(|e| {
                Error::invalid(format!(
                    "{}, attribute '{}': {}",
                    op.describe(),
                    a.name(),
                    e.to_string().trim_start_matches("invalid model: ")
                ))
            })?;
        }
    }
    Ok(())
}
