//! The IR's invariants: ordering, naming, graph outputs, subgraph captures, tensors.

use intone::ir::verify::{IoSignature, verify};
use intone::ir::{Array, NodeKind, Tensor, ValueId};
use intone::pass::Rewriter;
use intone::schema::{
    AttributeProto, GraphProto, NodeProto, TensorProto, attribute_proto::AttributeType,
};

use crate::build::*;

fn names_in_order(model: &intone::ir::Model) -> Vec<String> {
    let g = &model.graph;
    g.topological_order()
        .unwrap()
        .into_iter()
        .map(|id| g.op(id).unwrap().name().to_string())
        .collect()
}

#[test]
fn emission_keeps_file_order_and_sorts_unsorted_files() {
    let sorted = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2)])
        .node("Relu", &["x"], &["a"])
        .node("Neg", &["x"], &["b"])
        .node("Add", &["a", "b"], &["y"])
        .output("y", F32, &[D::N(2)]);
    assert_eq!(
        names_in_order(&sorted.model()),
        ["Relu_0", "Neg_1", "Add_2"]
    );

    // A file whose nodes are out of order is emitted in a valid order.
    let mut unsorted = sorted;
    unsorted.graph().node.rotate_left(2);
    assert_eq!(
        names_in_order(&unsorted.model()),
        ["Relu_0", "Neg_1", "Add_2"]
    );
}

#[test]
fn replacing_a_graph_output_keeps_its_name() {
    // y = Neg(r), r = Relu(x): replacing y by r hands the name "y" to r.
    let mut model = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2)])
        .node("Relu", &["x"], &["r"])
        .node("Neg", &["r"], &["y"])
        .output("y", F32, &[D::N(2)])
        .model();
    let signature = IoSignature::of(&model.graph);
    let y = model.graph.find_value("y").unwrap();
    let r = model.graph.find_value("r").unwrap();
    let mut rw = Rewriter::new(&mut model, y.node);
    rw.replace(y, r).unwrap();
    rw.finish().unwrap();
    assert!(verify(&model.graph, Some(&signature)).is_empty());
    assert_eq!(model.graph.value_name(r), "y");
    assert_eq!(names_in_order(&model), ["Relu_0"]);

    // Replacing an output by a graph input needs an Identity to keep both names.
    let mut model = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2)])
        .node("Relu", &["x"], &["y"])
        .output("y", F32, &[D::N(2)])
        .model();
    let y = model.graph.find_value("y").unwrap();
    let x = model.graph.find_value("x").unwrap();
    let mut rw = Rewriter::new(&mut model, y.node);
    rw.replace(y, x).unwrap();
    rw.finish().unwrap();
    assert!(verify(&model.graph, Some(&signature_of(&["x"], &["y"]))).is_empty());
    let ops: Vec<String> = model
        .graph
        .topological_order()
        .unwrap()
        .iter()
        .map(|&id| model.graph.op(id).unwrap().op_type().to_string())
        .collect();
    assert_eq!(ops, ["Identity"]);
}

fn signature_of(inputs: &[&str], outputs: &[&str]) -> IoSignature {
    IoSignature {
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn new_nodes_are_named_after_their_anchor() {
    let mut model = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2)])
        .node("Relu", &["x"], &["y"])
        .output("y", F32, &[D::N(2)])
        .model();
    let y = model.graph.find_value("y").unwrap();
    let mut rw = Rewriter::new(&mut model, y.node);
    let a = rw.op("Neg", "negate", &[y], vec![]).unwrap();
    let b = rw.op("Neg", "negate", &[a], vec![]).unwrap();
    let c = rw.constant("scale", &Array::scalar(2f32)).unwrap();
    assert_eq!(rw.graph().value_name(a), "Relu_0/negate");
    assert_eq!(rw.graph().value_name(b), "Relu_0/negate_1");
    assert_eq!(rw.graph().value_name(c), "Relu_0/scale");
}

/// An If node whose branches read the outer value `outer` by name.
fn model_with_capture() -> ModelBuilder {
    let branch = |name: &str| GraphProto {
        name: Some(name.into()),
        node: vec![NodeProto {
            op_type: Some("Neg".into()),
            input: vec!["outer".into()],
            output: vec![format!("{name}_out")],
            ..Default::default()
        }],
        output: vec![value_info(&format!("{name}_out"), F32, &[D::N(2)])],
        ..Default::default()
    };
    let graph_attr = |name: &str, g: GraphProto| AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(g),
        ..Default::default()
    };
    ModelBuilder::new(17)
        .input("x", F32, &[D::N(2)])
        .input("cond", intone::ir::DataType::Bool, &[])
        .node("Relu", &["x"], &["relu"])
        .node("Identity", &["relu"], &["outer"])
        .node_with(
            "If",
            &["cond"],
            &["y"],
            vec![
                graph_attr("then_branch", branch("then")),
                graph_attr("else_branch", branch("else")),
            ],
        )
        .output("y", F32, &[D::N(2)])
}

#[test]
fn subgraph_reads_are_edges_and_follow_renames() {
    let mut model = model_with_capture().model();
    let if_node = model.graph.find_value("y").unwrap().node;
    let captured: Vec<String> = model
        .graph
        .captures_of(if_node)
        .iter()
        .map(|&v| model.graph.value_name(v).to_string())
        .collect();
    assert_eq!(captured, ["outer"]);

    // Reading through the Identity renames the reference inside both branches.
    let outer = model.graph.find_value("outer").unwrap();
    let relu = model.graph.find_value("relu").unwrap();
    let mut rw = Rewriter::new(&mut model, outer.node);
    rw.replace(outer, relu).unwrap();
    rw.finish().unwrap();
    assert!(
        verify(&model.graph, None).is_empty(),
        "{:?}",
        verify(&model.graph, None)
    );
    let proto = intone::onnx::export(&model).unwrap();
    let if_proto = proto
        .graph
        .unwrap()
        .node
        .into_iter()
        .find(|n| n.op_type() == "If")
        .unwrap();
    for a in &if_proto.attribute {
        assert_eq!(a.g.as_ref().unwrap().node[0].input, ["relu"]);
    }
    // And the producer of a captured value is not dead.
    let dead = intone::passes::PASSES
        .iter()
        .find(|p| p.name == "eliminate-dead-nodes")
        .unwrap();
    let options = Default::default();
    let mut cx = intone::pass::PassContext::new("eliminate-dead-nodes", &options);
    dead.instantiate(&Default::default())
        .unwrap()
        .run(&mut model, &mut cx)
        .unwrap();
    assert!(model.graph.find_value("relu").is_some());
}

#[test]
fn verifier_reports_broken_invariants() {
    let mut model = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2)])
        .node("Relu", &["x"], &["a"])
        .node("Neg", &["a"], &["y"])
        .output("y", F32, &[D::N(2)])
        .model();
    assert!(verify(&model.graph, None).is_empty());
    // A cycle: Relu now reads Neg's output.
    let a = model.graph.find_value("a").unwrap();
    let y = model.graph.find_value("y").unwrap();
    model.graph.set_input(a.node, 0, Some(y));
    let problems = verify(&model.graph, None);
    assert!(problems.iter().any(|p| p.contains("cycle")), "{problems:?}");

    // Changed graph I/O.
    let model = ModelBuilder::new(17)
        .input("x", F32, &[D::N(2)])
        .node("Relu", &["x"], &["y"])
        .output("y", F32, &[D::N(2)])
        .model();
    let problems = verify(&model.graph, Some(&signature_of(&["x"], &["z"])));
    assert!(
        problems.iter().any(|p| p.contains("graph outputs changed")),
        "{problems:?}"
    );
}

#[test]
fn tensors_decode_every_storage_form() {
    let typed = |data_type: i32, dims: Vec<i64>, f: &dyn Fn(&mut TensorProto)| {
        let mut t = TensorProto {
            name: Some("t".into()),
            data_type: Some(data_type),
            dims,
            ..Default::default()
        };
        f(&mut t);
        Tensor::from_proto(t).decode().unwrap()
    };
    use intone::ir::DataType as T;
    assert_eq!(
        typed(T::Float as i32, vec![2], &|t| t.float_data =
            vec![1.5, -2.0]),
        Array::from_vec(&[2], vec![1.5f32, -2.0]).unwrap()
    );
    assert_eq!(
        typed(T::Int8 as i32, vec![3], &|t| t.int32_data =
            vec![-128, 0, 127]),
        Array::from_vec(&[3], vec![-128i8, 0, 127]).unwrap()
    );
    assert_eq!(
        typed(T::Float16 as i32, vec![1], &|t| t.int32_data = vec![0x3c00]),
        Array::from_vec(&[1], vec![half::f16::ONE]).unwrap()
    );
    assert_eq!(
        typed(T::Uint32 as i32, vec![1], &|t| t.uint64_data =
            vec![u32::MAX as u64]),
        Array::from_vec(&[1], vec![u32::MAX]).unwrap()
    );
    // raw_data and typed fields give the same array.
    let a = Array::from_vec(&[2, 2], vec![1i64, -2, 3, i64::MIN]).unwrap();
    assert_eq!(Tensor::from_array("a", &a).decode().unwrap(), a);

    // Data that does not match the dims is refused with the tensor named.
    let mut short = Tensor::from_array("w", &a).into_proto();
    short.dims = vec![3, 2];
    let err = Tensor::from_proto(short).decode().unwrap_err().to_string();
    assert!(
        err.contains("tensor 'w'") && err.contains("32 bytes"),
        "{err}"
    );
}

#[test]
fn initializers_declared_as_inputs_are_not_constants() {
    // IR < 4 style: an initializer listed in graph.input is an overridable default.
    let mut b = ModelBuilder::new(11)
        .input("x", F32, &[D::N(2)])
        .input("w", F32, &[D::N(2)])
        .init("w", Array::from_vec(&[2], vec![1f32, 2.0]).unwrap())
        .node("Add", &["x", "w"], &["y"])
        .output("y", F32, &[D::N(2)]);
    b.proto.ir_version = Some(3);
    let model = b.model();
    let w = model.graph.find_value("w").unwrap();
    assert!(matches!(
        model.graph.node(w.node).kind,
        NodeKind::Initializer(_)
    ));
    assert!(model.graph.constant(w).is_none());
    assert!(model.graph.is_graph_input(w.node));
    let _ = ValueId {
        node: w.node,
        slot: 0,
    };
}
