//! The readable text form of a model (`intone dump`, and every snapshot test).
//!
//! Names only, never internal indices. Constants up to [`FULL_TENSOR_LIMIT`] elements are
//! printed in full (scales, shift amounts, multipliers); larger ones as type and shape.
//! Subgraphs are printed nested, so the form is the same for every scope.

use std::fmt::Write;

use crate::Result;
use crate::ir::Tensor;
use crate::ir::attr_type;
use crate::ir::dtype::{DataTypeInfo, data_type};
use crate::ir::{Model, ValueId};
use crate::schema::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_shape_proto::dimension::Value as Dim,
    type_proto::Value as TypeValue,
};

/// Tensors with at most this many elements are printed element by element.
pub const FULL_TENSOR_LIMIT: usize = 16;

/// The text form of a model.
pub fn model_to_text(model: &Model) -> Result<String> {
    model_to_text_annotated(model, std::collections::HashMap::new())
}

/// The text form with an extra note after each value named in `extra`.
pub fn model_to_text_annotated(
    model: &Model,
    extra: std::collections::HashMap<String, String>,
) -> Result<String> {
    let proto = crate::onnx::export(model)?;
    let mut annotations = extra;
    for id in model.graph.node_ids() {
        for v in model.graph.outputs_of(id) {
            let value = model.graph.value(v);
            let described = value
                .plan
                .as_ref()
                .map(crate::ir::quant::describe_plan)
                .into_iter()
                .chain(value.quant.as_ref().map(crate::ir::quant::describe));
            for text in described {
                let note = annotations.entry(value_name(model, v)).or_default();
                if !note.is_empty() {
                    note.push_str(", ");
                }
                note.push_str(&text);
            }
        }
    }
    Ok(proto_to_text(&proto, &annotations))
}

fn value_name(model: &Model, v: ValueId) -> String {
    model.graph.value_name(v).to_string()
}

/// The text form of a ModelProto. `annotations` adds a note after values of those names.
pub fn proto_to_text(
    model: &ModelProto,
    annotations: &std::collections::HashMap<String, String>,
) -> String {
    let mut out = String::new();
    let opsets: Vec<String> = model
        .opset_import
        .iter()
        .map(|o| {
            let d = if o.domain().is_empty() {
                "ai.onnx"
            } else {
                o.domain()
            };
            format!("{d} {}", o.version())
        })
        .collect();
    let _ = writeln!(
        out,
        "ir_version {}, opsets {}",
        model.ir_version(),
        opsets.join(", ")
    );
    for f in &model.functions {
        let _ = writeln!(
            out,
            "function {}.{}({}) -> ({})",
            f.domain(),
            f.name(),
            f.input.join(", "),
            f.output.join(", ")
        );
    }
    if let Some(g) = &model.graph {
        graph_text(&mut out, g, 0, annotations);
    }
    out
}

fn graph_text(
    out: &mut String,
    g: &GraphProto,
    depth: usize,
    notes: &std::collections::HashMap<String, String>,
) {
    let pad = "  ".repeat(depth);
    let _ = writeln!(
        out,
        "{pad}graph {}",
        if g.name().is_empty() {
            "<unnamed>"
        } else {
            g.name()
        }
    );
    let init_names: std::collections::HashSet<&str> =
        g.initializer.iter().map(|t| t.name()).collect();
    for v in &g.input {
        let kind = if init_names.contains(v.name()) {
            "input (default below)"
        } else {
            "input"
        };
        let _ = writeln!(out, "{pad}  {kind} {}: {}", v.name(), value_type(v));
    }
    for t in &g.initializer {
        let _ = writeln!(out, "{pad}  init {} = {}", t.name(), tensor_text(t));
    }
    for node in &g.node {
        node_text(out, node, depth + 1, notes);
    }
    for v in &g.output {
        let _ = writeln!(out, "{pad}  output {}: {}", v.name(), value_type(v));
    }
}

fn node_text(
    out: &mut String,
    node: &NodeProto,
    depth: usize,
    notes: &std::collections::HashMap<String, String>,
) {
    let pad = "  ".repeat(depth);
    let outputs = node.output.join(", ");
    let op = match node.domain() {
        "" | "ai.onnx" => node.op_type().to_string(),
        d => format!("{d}.{}", node.op_type()),
    };
    let mut line = format!("{pad}{outputs} = {op}({})", node.input.join(", "));
    let mut nested = Vec::new();
    let attrs: Vec<String> = node
        .attribute
        .iter()
        .map(|a| {
            if let Some(g) = &a.g {
                nested.push((a.name().to_string(), g));
            }
            for g in &a.graphs {
                nested.push((a.name().to_string(), g));
            }
            format!("{}: {}", a.name(), attribute_text(a))
        })
        .collect();
    if !attrs.is_empty() {
        let _ = write!(line, " {{{}}}", attrs.join(", "));
    }
    if !node.name().is_empty() {
        let _ = write!(line, "  @{}", node.name());
    }
    for o in &node.output {
        if let Some(note) = notes.get(o) {
            let _ = write!(line, "  # {o}: {note}");
        }
    }
    let _ = writeln!(out, "{line}");
    for (name, g) in nested {
        let _ = writeln!(out, "{pad}  {name}:");
        graph_text(out, g, depth + 2, notes);
    }
}

fn attribute_text(a: &AttributeProto) -> String {
    if !a.ref_attr_name().is_empty() {
        return format!("@{}", a.ref_attr_name());
    }
    let list = |items: Vec<String>| format!("[{}]", items.join(", "));
    match attr_type(a) {
        AttributeType::Float => format!("{:?}", a.f()),
        AttributeType::Int => a.i().to_string(),
        AttributeType::String => format!("{:?}", String::from_utf8_lossy(a.s())),
        AttributeType::Tensor => {
            a.t.as_ref()
                .map_or_else(|| "<missing tensor>".into(), tensor_text)
        }
        AttributeType::Graph => "<graph>".into(),
        AttributeType::Floats => list(a.floats.iter().map(|f| format!("{f:?}")).collect()),
        AttributeType::Ints => list(a.ints.iter().map(|i| i.to_string()).collect()),
        AttributeType::Strings => list(
            a.strings
                .iter()
                .map(|s| format!("{:?}", String::from_utf8_lossy(s)))
                .collect(),
        ),
        AttributeType::Tensors => list(a.tensors.iter().map(tensor_text).collect()),
        AttributeType::Graphs => format!("<{} graphs>", a.graphs.len()),
        AttributeType::SparseTensor | AttributeType::SparseTensors => "<sparse tensor>".into(),
        AttributeType::TypeProto => {
            a.tp.as_ref()
                .map_or_else(|| "<missing type>".into(), type_text)
        }
        AttributeType::TypeProtos => list(a.type_protos.iter().map(type_text).collect()),
        AttributeType::Undefined => "<undefined>".into(),
    }
}

/// `f32[2,3] = [..]` for small tensors, `f32[64,768] (49152 values)` for large ones.
pub fn tensor_text(t: &TensorProto) -> String {
    let dtype = data_type(t.data_type(), "tensor")
        .map(|d| d.short_name().to_string())
        .unwrap_or_else(|_| format!("type{}", t.data_type()));
    let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
    let head = format!("{dtype}[{}]", dims.join(","));
    let tensor = Tensor::from_proto(t.clone());
    let count = tensor.element_count().unwrap_or(usize::MAX);
    if tensor.is_external() {
        return format!("{head} (external)");
    }
    if count <= FULL_TENSOR_LIMIT {
        match tensor.decode() {
            Ok(values) => format!("{head} {values}"),
            Err(_) => format!("{head} <{count} values>"),
        }
    } else {
        format!("{head} <{count} values>")
    }
}

fn value_type(v: &ValueInfoProto) -> String {
    v.r#type
        .as_ref()
        .map(type_text)
        .unwrap_or_else(|| "?".into())
}

/// `f32[batch,3,224,224]`, `seq<f32[?]>`, ...
pub fn type_text(t: &TypeProto) -> String {
    let shape_text = |shape: &Option<crate::schema::TensorShapeProto>| match shape {
        None => String::new(),
        Some(s) => {
            let dims: Vec<String> = s
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(Dim::DimValue(v)) => v.to_string(),
                    Some(Dim::DimParam(p)) => p.clone(),
                    None => "?".into(),
                })
                .collect();
            format!("[{}]", dims.join(","))
        }
    };
    let elem = |code: i32| {
        data_type(code, "type")
            .map(|d| d.short_name().to_string())
            .unwrap_or_else(|_| format!("type{code}"))
    };
    match &t.value {
        Some(TypeValue::TensorType(tt)) => {
            format!("{}{}", elem(tt.elem_type()), shape_text(&tt.shape))
        }
        Some(TypeValue::SparseTensorType(tt)) => {
            format!("sparse {}{}", elem(tt.elem_type()), shape_text(&tt.shape))
        }
        Some(TypeValue::SequenceType(s)) => format!(
            "seq<{}>",
            s.elem_type
                .as_deref()
                .map(type_text)
                .unwrap_or_else(|| "?".into())
        ),
        Some(TypeValue::OptionalType(s)) => format!(
            "optional<{}>",
            s.elem_type
                .as_deref()
                .map(type_text)
                .unwrap_or_else(|| "?".into())
        ),
        Some(TypeValue::MapType(m)) => format!(
            "map<{}, {}>",
            elem(m.key_type()),
            m.value_type
                .as_deref()
                .map(type_text)
                .unwrap_or_else(|| "?".into())
        ),
        Some(TypeValue::OpaqueType(o)) => format!("opaque<{}.{}>", o.domain(), o.name()),
        None => "?".into(),
    }
}
