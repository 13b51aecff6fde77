//! Protobuf encoding of a model straight into a writer. The big parts (nodes, initializers and
//! their `raw_data`) are written piece by piece, so saving never holds a second copy of the
//! weights. Fields go out in field-number order: the bytes equal `prost::Message::encode`.

use std::io::{self, Write};

use bytes::Bytes;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};

use crate::schema::{GraphProto, ModelProto, TensorProto};

const MODEL_GRAPH: u32 = 7;
const GRAPH_NODE: u32 = 1;
const GRAPH_INITIALIZER: u32 = 5;
const GRAPH_SPARSE_INITIALIZER: u32 = 15;
const TENSOR_RAW_DATA: u32 = 9;

/// Encodes `model` into `out`.
pub fn write_model(model: &ModelProto, out: &mut impl Write) -> io::Result<()> {
    let mut w = Writer {
        out,
        scratch: Vec::with_capacity(1 << 16),
    };
    let (before, after) = split_model(model);
    w.message(&before)?;
    if let Some(graph) = &model.graph {
        w.header(MODEL_GRAPH, graph.encoded_len())?;
        write_graph(&mut w, graph)?;
    }
    w.message(&after)
}

/// The model's fields numbered below and above the graph's, without the graph.
fn split_model(m: &ModelProto) -> (ModelProto, ModelProto) {
    let before = ModelProto {
        ir_version: m.ir_version,
        producer_name: m.producer_name.clone(),
        producer_version: m.producer_version.clone(),
        domain: m.domain.clone(),
        model_version: m.model_version,
        doc_string: m.doc_string.clone(),
        ..Default::default()
    };
    let after = ModelProto {
        opset_import: m.opset_import.clone(),
        metadata_props: m.metadata_props.clone(),
        training_info: m.training_info.clone(),
        functions: m.functions.clone(),
        configuration: m.configuration.clone(),
        ..Default::default()
    };
    (before, after)
}

fn write_graph(w: &mut Writer<impl Write>, g: &GraphProto) -> io::Result<()> {
    for node in &g.node {
        w.field(GRAPH_NODE, node)?;
    }
    w.message(&GraphProto {
        name: g.name.clone(),
        ..Default::default()
    })?;
    for t in &g.initializer {
        w.header(GRAPH_INITIALIZER, t.encoded_len())?;
        write_tensor(w, t)?;
    }
    w.message(&GraphProto {
        doc_string: g.doc_string.clone(),
        input: g.input.clone(),
        output: g.output.clone(),
        value_info: g.value_info.clone(),
        quantization_annotation: g.quantization_annotation.clone(),
        ..Default::default()
    })?;
    for s in &g.sparse_initializer {
        w.field(GRAPH_SPARSE_INITIALIZER, s)?;
    }
    w.message(&GraphProto {
        metadata_props: g.metadata_props.clone(),
        ..Default::default()
    })
}

/// A tensor's fields, with `raw_data` copied from its buffer straight to the output.
fn write_tensor(w: &mut Writer<impl Write>, t: &TensorProto) -> io::Result<()> {
    let Some(raw) = &t.raw_data else {
        return w.message(t);
    };
    let before = TensorProto {
        dims: t.dims.clone(),
        data_type: t.data_type,
        segment: t.segment,
        float_data: t.float_data.clone(),
        int32_data: t.int32_data.clone(),
        string_data: t.string_data.clone(),
        int64_data: t.int64_data.clone(),
        name: t.name.clone(),
        ..Default::default()
    };
    let after = TensorProto {
        double_data: t.double_data.clone(),
        uint64_data: t.uint64_data.clone(),
        doc_string: t.doc_string.clone(),
        external_data: t.external_data.clone(),
        data_location: t.data_location,
        metadata_props: t.metadata_props.clone(),
        ..Default::default()
    };
    w.message(&before)?;
    w.bytes(TENSOR_RAW_DATA, raw)?;
    w.message(&after)
}

struct Writer<'a, W: Write> {
    out: &'a mut W,
    scratch: Vec<u8>,
}

impl<W: Write> Writer<'_, W> {
    /// A message's fields, unframed.
    fn message(&mut self, m: &impl Message) -> io::Result<()> {
        self.scratch.clear();
        m.encode_raw(&mut self.scratch);
        self.out.write_all(&self.scratch)
    }

    /// A length-delimited field holding a message.
    fn field(&mut self, tag: u32, m: &impl Message) -> io::Result<()> {
        self.header(tag, m.encoded_len())?;
        self.message(m)
    }

    /// Key and length of a length-delimited field whose body follows.
    fn header(&mut self, tag: u32, len: usize) -> io::Result<()> {
        self.scratch.clear();
        encode_key(tag, WireType::LengthDelimited, &mut self.scratch);
        encode_varint(len as u64, &mut self.scratch);
        self.out.write_all(&self.scratch)
    }

    fn bytes(&mut self, tag: u32, data: &Bytes) -> io::Result<()> {
        self.header(tag, data.len())?;
        self.out.write_all(data)
    }
}
