//! Nodes, ops and values.

use std::borrow::Cow;

use super::quant::{ActivationPlan, QuantFacts, WeightPlan};
use super::subgraph;
use super::tensor::Tensor;
use crate::schema::{
    AttributeProto, NodeProto, SparseTensorProto, TensorProto, ValueInfoProto,
    attribute_proto::AttributeType,
};
use crate::{Error, Result};

/// Creation order of a node: original file position, or the anchor's position for nodes a
/// pass adds (then `minor` orders them after it). Drives every deterministic iteration.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Order {
    pub major: u32,
    pub minor: u32,
}

impl Order {
    pub fn original(index: usize) -> Order {
        Order {
            major: index as u32,
            minor: 0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: NodeKind,
    /// One entry per output slot; an empty name is an omitted optional output.
    pub outputs: Vec<Value>,
    pub(crate) order: Order,
}

#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one per node; boxing would only add indirection
pub enum NodeKind {
    /// A graph input that is not an initializer; carries its declaration.
    Input(ValueInfoProto),
    Initializer(Initializer),
    SparseInitializer(SparseTensorProto),
    Op(Op),
}

impl NodeKind {
    pub(crate) fn describe_kind(&self) -> String {
        match self {
            NodeKind::Input(_) => "graph input".into(),
            NodeKind::Initializer(_) => "initializer".into(),
            NodeKind::SparseInitializer(_) => "sparse initializer".into(),
            NodeKind::Op(op) if op.name().is_empty() => format!("{} node", op.op_type()),
            NodeKind::Op(op) => format!("node '{}' ({})", op.name(), op.op_type()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Initializer {
    pub tensor: Tensor,
    /// Set when the initializer is also declared in `graph.input`: then it is only a default
    /// that the caller may override, so it is not a compile-time constant.
    pub input_info: Option<ValueInfoProto>,
}

/// A value produced by a node.
#[derive(Clone, Debug, Default)]
pub struct Value {
    pub name: String,
    /// Its `graph.value_info` entry, if the file had one.
    pub info: Option<ValueInfoProto>,
    /// On a float value: how `quantize` planned to represent it in integers.
    pub plan: Option<ActivationPlan>,
    /// On an integer value: what is proven about it (scale, grid, zero point, range).
    pub quant: Option<QuantFacts>,
    /// On a constant weight: how `quantize` planned to quantize it.
    pub weight_plan: Option<WeightPlan>,
    /// The value of the input model this one stands for, when a rewrite replaced it (the
    /// compiled model records the mapping so `intone check --per-layer` can compare them).
    pub origin: Option<String>,
    /// Calibration statistics, when the `calibrate` pass observed this value.
    pub stats: Option<std::sync::Arc<crate::quant::Observer>>,
    /// Per channel (axis 1), the mean and standard deviation the model itself states for this
    /// value over its training data: a folded BatchNormalization's β and |γ| (`--data-free`).
    pub prior: Option<std::sync::Arc<Vec<(f64, f64)>>>,
}

impl Value {
    pub fn named(name: impl Into<String>) -> Value {
        Value {
            name: name.into(),
            ..Default::default()
        }
    }
}

/// An operator application. The `NodeProto` is kept whole (minus inputs and outputs, which the
/// graph's edges own) so that doc strings, overloads, metadata and unknown attributes survive.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    pub proto: NodeProto,
    /// Number of positional input slots, including omitted optional ones.
    pub num_inputs: usize,
}

impl Op {
    /// A new op of the default domain.
    pub fn new(op_type: &str, name: impl Into<String>) -> Op {
        Op {
            proto: NodeProto {
                op_type: Some(op_type.to_string()),
                name: Some(name.into()),
                ..Default::default()
            },
            num_inputs: 0,
        }
    }

    pub fn with_domain(mut self, domain: &str) -> Op {
        self.proto.domain = Some(domain.to_string());
        self
    }

    pub fn op_type(&self) -> &str {
        self.proto.op_type()
    }

    /// The domain, with `ai.onnx` normalised to the empty default domain.
    pub fn domain(&self) -> &str {
        match self.proto.domain() {
            "ai.onnx" => "",
            d => d,
        }
    }

    pub fn name(&self) -> &str {
        self.proto.name()
    }

    /// True for an op of the default ONNX domain with this type.
    pub fn is(&self, op_type: &str) -> bool {
        self.domain().is_empty() && self.op_type() == op_type
    }

    /// Readable identity for messages: `node 'name' (Op)` or `Op node`.
    pub fn describe(&self) -> String {
        if self.name().is_empty() {
            format!("{} node", self.op_type())
        } else {
            format!("node '{}' ({})", self.name(), self.op_type())
        }
    }

    pub fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.proto.attribute.iter().find(|a| a.name() == name)
    }

    pub fn attrs(&self) -> &[AttributeProto] {
        &self.proto.attribute
    }

    /// Sets or replaces an attribute.
    pub fn set_attr(&mut self, attr: AttributeProto) {
        match self
            .proto
            .attribute
            .iter_mut()
            .find(|a| a.name() == attr.name())
        {
            Some(slot) => *slot = attr,
            None => self.proto.attribute.push(attr),
        }
    }

    pub fn remove_attr(&mut self, name: &str) {
        self.proto.attribute.retain(|a| a.name() != name);
    }

    /// An int attribute, or `default` when absent. Fails when present with another type.
    pub fn attr_int(&self, name: &str, default: i64) -> Result<i64> {
        self.typed_attr(name, AttributeType::Int, |a| a.i())
            .map(|v| v.unwrap_or(default))
    }

    pub fn attr_float(&self, name: &str, default: f32) -> Result<f32> {
        self.typed_attr(name, AttributeType::Float, |a| a.f())
            .map(|v| v.unwrap_or(default))
    }

    pub fn attr_ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        self.typed_attr(name, AttributeType::Ints, |a| a.ints.clone())
    }

    pub fn attr_floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        self.typed_attr(name, AttributeType::Floats, |a| a.floats.clone())
    }

    pub fn attr_string(&self, name: &str) -> Result<Option<String>> {
        self.typed_attr(name, AttributeType::String, |a| {
            String::from_utf8_lossy(a.s()).into_owned()
        })
    }

    pub fn attr_tensor(&self, name: &str) -> Result<Option<Tensor>> {
        self.typed_attr(name, AttributeType::Tensor, |a| {
            Tensor::from_proto(a.t.clone().unwrap_or_default())
        })
    }

    fn typed_attr<T>(
        &self,
        name: &str,
        expected: AttributeType,
        get: impl FnOnce(&AttributeProto) -> T,
    ) -> Result<Option<T>> {
        let Some(a) = self.attr(name) else {
            return Ok(None);
        };
        if !a.ref_attr_name().is_empty() {
            return Err(Error::unsupported(format!(
                "{}: attribute '{name}' refers to a function attribute",
                self.describe()
            )));
        }
        let found = attr_type(a);
        if found != expected {
            return Err(Error::invalid(format!(
                "{}: attribute '{name}' should be {expected:?}, found {found:?}",
                self.describe()
            )));
        }
        Ok(Some(get(a)))
    }

    /// The value of a `Constant` op, whichever of its attributes holds it. `Ok(None)` for
    /// forms intone does not evaluate (sparse and string values).
    pub fn constant_value(&self) -> Result<Option<Cow<'_, Tensor>>> {
        let Some(a) = self.proto.attribute.first() else {
            return Err(Error::invalid(format!("{} has no value", self.describe())));
        };
        let tensor = |array: super::Array| {
            let mut t = Tensor::from_array("", &array);
            t.set_name("");
            t
        };
        Ok(Some(match a.name() {
            "value" => {
                let t: TensorProto = a.t.clone().unwrap_or_default();
                Cow::Owned(Tensor::from_proto(t))
            }
            "value_float" => Cow::Owned(tensor(super::Array::scalar(a.f()))),
            "value_int" => Cow::Owned(tensor(super::Array::scalar(a.i()))),
            "value_floats" => Cow::Owned(tensor(super::Array::from_vec(
                &[a.floats.len()],
                a.floats.clone(),
            )?)),
            "value_ints" => Cow::Owned(tensor(super::Array::from_vec(
                &[a.ints.len()],
                a.ints.clone(),
            )?)),
            _ => return Ok(None),
        }))
    }

    /// Subgraph attributes (If/Loop/Scan bodies), read-only.
    pub fn has_subgraphs(&self) -> bool {
        self.proto
            .attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    }

    /// Renames free references to `from` inside the op's subgraphs.
    pub(crate) fn rename_captured(&mut self, from: &str, to: &str) {
        for a in &mut self.proto.attribute {
            if let Some(g) = &mut a.g {
                subgraph::rename_free(g, from, to);
            }
            for g in &mut a.graphs {
                subgraph::rename_free(g, from, to);
            }
        }
    }
}

/// The type of an attribute: its `type` field, or (for old files that omit it) the field set.
pub fn attr_type(a: &AttributeProto) -> AttributeType {
    if let Some(t) = a.r#type.and_then(|t| AttributeType::try_from(t).ok()) {
        if t != AttributeType::Undefined {
            return t;
        }
    }
    if a.f.is_some() {
        AttributeType::Float
    } else if a.i.is_some() {
        AttributeType::Int
    } else if a.s.is_some() {
        AttributeType::String
    } else if a.t.is_some() {
        AttributeType::Tensor
    } else if a.g.is_some() {
        AttributeType::Graph
    } else if a.sparse_tensor.is_some() {
        AttributeType::SparseTensor
    } else if a.tp.is_some() {
        AttributeType::TypeProto
    } else if !a.floats.is_empty() {
        AttributeType::Floats
    } else if !a.ints.is_empty() {
        AttributeType::Ints
    } else if !a.strings.is_empty() {
        AttributeType::Strings
    } else if !a.tensors.is_empty() {
        AttributeType::Tensors
    } else if !a.graphs.is_empty() {
        AttributeType::Graphs
    } else {
        AttributeType::Undefined
    }
}

/// Attribute constructors for passes.
pub mod attr {
    use super::*;

    pub fn int(name: &str, value: i64) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Int as i32),
            i: Some(value),
            ..Default::default()
        }
    }

    pub fn float(name: &str, value: f32) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Float as i32),
            f: Some(value),
            ..Default::default()
        }
    }

    pub fn ints(name: &str, values: &[i64]) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Ints as i32),
            ints: values.to_vec(),
            ..Default::default()
        }
    }

    pub fn string(name: &str, value: &str) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::String as i32),
            s: Some(value.as_bytes().to_vec().into()),
            ..Default::default()
        }
    }

    pub fn tensor(name: &str, value: &Tensor) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Tensor as i32),
            t: Some(value.proto().clone()),
            ..Default::default()
        }
    }
}
