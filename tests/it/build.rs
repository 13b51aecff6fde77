//! A small builder for test models, writing ModelProtos directly (so tests can also build
//! models that are invalid on purpose).

use intone::ir::{Array, Tensor};
use intone::schema::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto,
    TypeProto, ValueInfoProto, tensor_shape_proto::Dimension, tensor_shape_proto::dimension,
    type_proto,
};

pub use intone::ir::DataType::Float as F32;
pub use intone::ir::attr;

pub struct ModelBuilder {
    pub proto: ModelProto,
}

/// A dimension: a size or a symbolic name.
pub enum D {
    N(i64),
    S(&'static str),
}

pub fn tensor_type(dtype: intone::ir::DataType, dims: &[D]) -> TypeProto {
    TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(dtype as i32),
            shape: Some(TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|d| Dimension {
                        value: Some(match d {
                            D::N(n) => dimension::Value::DimValue(*n),
                            D::S(s) => dimension::Value::DimParam(s.to_string()),
                        }),
                        denotation: None,
                    })
                    .collect(),
            }),
        })),
        denotation: None,
    }
}

pub fn value_info(name: &str, dtype: intone::ir::DataType, dims: &[D]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(tensor_type(dtype, dims)),
        ..Default::default()
    }
}

impl ModelBuilder {
    pub fn new(opset: i64) -> ModelBuilder {
        ModelBuilder {
            proto: ModelProto {
                ir_version: Some(8),
                producer_name: Some("intone-tests".into()),
                opset_import: vec![OperatorSetIdProto {
                    domain: Some(String::new()),
                    version: Some(opset),
                }],
                graph: Some(GraphProto {
                    name: Some("test".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }

    pub fn graph(&mut self) -> &mut GraphProto {
        self.proto.graph.as_mut().unwrap()
    }

    pub fn input(mut self, name: &str, dtype: intone::ir::DataType, dims: &[D]) -> Self {
        self.graph().input.push(value_info(name, dtype, dims));
        self
    }

    pub fn output(mut self, name: &str, dtype: intone::ir::DataType, dims: &[D]) -> Self {
        self.graph().output.push(value_info(name, dtype, dims));
        self
    }

    pub fn init(mut self, name: &str, array: Array) -> Self {
        let t = Tensor::from_array(name, &array);
        self.graph().initializer.push(t.into_proto());
        self
    }

    pub fn node(self, op: &str, inputs: &[&str], outputs: &[&str]) -> Self {
        self.node_with(op, inputs, outputs, vec![])
    }

    pub fn node_with(
        mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Self {
        let name = format!("{op}_{}", self.graph().node.len());
        self.graph().node.push(NodeProto {
            op_type: Some(op.into()),
            name: Some(name),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        });
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(&self.proto)
    }

    /// Writes the model to `dir/name` and returns the path.
    pub fn write(&self, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.bytes()).unwrap();
        path
    }

    pub fn model(&self) -> intone::ir::Model {
        intone::onnx::import(self.proto.clone()).unwrap()
    }
}

pub fn vec_i64(values: &[i64]) -> Array {
    Array::from_vec(&[values.len()], values.to_vec()).unwrap()
}

pub fn scalar_f32(v: f32) -> Array {
    Array::scalar(v)
}
