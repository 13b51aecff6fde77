//! The IR: a model is a header (everything of the ModelProto intone does not transform, kept
//! verbatim) and a [`Graph`]. This module is the only one that names petgraph.

mod array;
pub mod dtype;
mod graph;
mod node;
pub mod phase;
pub mod quant;
pub mod subgraph;
mod tensor;
pub mod verify;

pub use array::{Array, Element};
pub use dtype::{DataType, DataTypeInfo};
pub(crate) use graph::ValueInfoEntry;
pub use graph::{Graph, GraphOutput, NodeId, Port, Use, ValueId};
pub use node::{Initializer, Node, NodeKind, Op, Order, Value, attr, attr_type};
pub use phase::Phase;
pub use tensor::Tensor;

use crate::schema::{ModelProto, OperatorSetIdProto};

/// An ONNX model in IR form.
#[derive(Clone, Debug)]
pub struct Model {
    /// The ModelProto without its graph: IR version, opset imports, producer, metadata,
    /// functions, training info. Carried verbatim.
    pub header: ModelProto,
    pub graph: Graph,
    /// The phase the last pipeline left the model in (not stored in files).
    pub phase: Option<Phase>,
}

impl Model {
    /// The imported opset version of a domain (`""` and `"ai.onnx"` are the same domain).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let norm = |d: &str| if d == "ai.onnx" { "" } else { d }.to_string();
        let want = norm(domain);
        self.header
            .opset_import
            .iter()
            .find(|o| norm(o.domain()) == want)
            .map(|o| o.version())
    }

    /// Imports a domain at `version`, or raises an existing import to it.
    pub fn require_opset(&mut self, domain: &str, version: i64) {
        match self
            .header
            .opset_import
            .iter_mut()
            .find(|o| o.domain() == domain || (domain.is_empty() && o.domain() == "ai.onnx"))
        {
            Some(o) if o.version() >= version => {}
            Some(o) => o.version = Some(version),
            None => self.header.opset_import.push(OperatorSetIdProto {
                domain: Some(domain.to_string()),
                version: Some(version),
            }),
        }
    }
}
