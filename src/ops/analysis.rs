//! The analysis that computes [`Facts`] for every value of a graph: inference and constant
//! evaluation run in topological order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::facts::{Dim, ELEMENT_TRACKING_LIMIT, Facts};
use super::{eval, infer};
use crate::ir::{Array, DataTypeInfo, Model, NodeKind, ValueId, dtype::data_type};
use crate::schema::{
    TypeProto, tensor_shape_proto::dimension::Value as ProtoDim, type_proto::Value as TypeValue,
};
use crate::{Error, Result};

/// Largest constant (in elements) the analysis evaluates, unless a caller asks otherwise.
pub const EVALUATION_LIMIT: usize = 1 << 16;

/// Facts for every value of a graph, plus notes on what could not be evaluated.
#[derive(Debug, Default)]
pub struct GraphFacts {
    pub values: HashMap<ValueId, Facts>,
    /// Per op: why constant inputs did not give a constant output.
    pub notes: BTreeMap<ValueId, String>,
}

impl GraphFacts {
    pub fn get(&self, v: ValueId) -> Option<&Facts> {
        self.values.get(&v)
    }
}

/// Facts from a graph input's declaration, with `--input-shape` applied.
fn input_facts(name: &str, ty: Option<&TypeProto>, pinned: Option<&Vec<i64>>) -> Result<Facts> {
    let mut facts = Facts::default();
    if let Some(TypeValue::TensorType(t)) = ty.and_then(|t| t.value.as_ref()) {
        facts.dtype = data_type(t.elem_type(), &format!("graph input '{name}'")).ok();
        facts.shape = t.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    // Paddle writes −1, some TF exports 0, for "any".
                    Some(ProtoDim::DimValue(v)) if *v > 0 => Dim::Known(*v),
                    Some(ProtoDim::DimParam(p)) if !p.is_empty() => Dim::Symbol(p.clone()),
                    _ => Dim::Unknown,
                })
                .collect()
        });
    }
    if let Some(pinned) = pinned {
        if let Some(declared) = &facts.shape {
            if declared.len() != pinned.len() {
                return Err(Error::Usage(format!(
                    "--input-shape {name}: {} dimensions given, the model declares {}",
                    pinned.len(),
                    declared.len()
                )));
            }
            for (i, (d, &p)) in declared.iter().zip(pinned).enumerate() {
                if let Dim::Known(v) = d {
                    if *v != p {
                        return Err(Error::Usage(format!(
                            "--input-shape {name}: dimension {i} is {p}, the model fixes it to {v}"
                        )));
                    }
                }
            }
        }
        facts.shape = Some(pinned.iter().map(|&d| Dim::Known(d)).collect());
    }
    Ok(facts)
}

/// Writes `--input-shape` pins into the graph inputs' declarations: a model whose shape
/// arithmetic was folded for these shapes must not accept others. Checks the pins first.
/// Unpinned dimensions declared −1 or 0 ("any", as Paddle and some TF exports write them)
/// become named symbols, `<input>_dim<i>`, so that engines read them as dynamic; so do the
/// outputs'.
pub fn pin_input_shapes(
    model: &mut Model,
    input_shapes: &BTreeMap<String, Vec<i64>>,
) -> Result<()> {
    check_pinned_names(model, input_shapes)?;
    let graph = &mut model.graph;
    for id in graph.inputs().to_vec() {
        let name = graph.node(id).outputs[0].name.clone();
        let info = match &mut graph.node_mut(id).kind {
            NodeKind::Input(info) => info,
            NodeKind::Initializer(init) => match &mut init.input_info {
                Some(info) => info,
                None => continue,
            },
            _ => continue,
        };
        let Some(dims) = input_shapes.get(&name) else {
            name_any_dims(&name, info.r#type.as_mut());
            continue;
        };
        // Validates rank and fixed dimensions.
        input_facts(&name, info.r#type.as_ref(), Some(dims))?;
        let ty = info.r#type.get_or_insert_with(Default::default);
        if let Some(TypeValue::TensorType(t)) = &mut ty.value {
            let shape = t.shape.get_or_insert_with(Default::default);
            shape.dim = dims
                .iter()
                .map(|&d| crate::schema::tensor_shape_proto::Dimension {
                    value: Some(ProtoDim::DimValue(d)),
                    denotation: None,
                })
                .collect();
        }
    }
    // Outputs declared with −1 too: a checker reads a negative dim_value as a contradiction.
    for index in 0..graph.outputs().len() {
        let info = &graph.outputs()[index].info;
        let mut named = info.clone();
        name_any_dims(info.name(), named.r#type.as_mut());
        if named != *info {
            graph.set_output_info(index, named);
        }
    }
    Ok(())
}

/// Declared dimensions −1 or 0 of `input` become the symbols `<input>_dim<i>`.
pub fn name_any_dims(input: &str, ty: Option<&mut TypeProto>) {
    let Some(TypeValue::TensorType(t)) = ty.and_then(|t| t.value.as_mut()) else {
        return;
    };
    for (i, d) in t
        .shape
        .iter_mut()
        .flat_map(|s| s.dim.iter_mut())
        .enumerate()
    {
        if matches!(d.value, Some(ProtoDim::DimValue(v)) if v <= 0) {
            d.value = Some(ProtoDim::DimParam(format!("{input}_dim{i}")));
        }
    }
}

fn check_pinned_names(model: &Model, input_shapes: &BTreeMap<String, Vec<i64>>) -> Result<()> {
    let graph = &model.graph;
    let names: Vec<&str> = graph
        .inputs()
        .iter()
        .map(|&id| graph.node(id).outputs[0].name.as_str())
        .collect();
    for name in input_shapes.keys() {
        if !names.contains(&name.as_str()) {
            return Err(Error::Usage(format!(
                "--input-shape names '{name}', which is not a graph input{}",
                crate::error::suggestion(name, &names)
            )));
        }
    }
    Ok(())
}

/// Runs type/shape inference and constant propagation over the whole graph.
/// `max_elements` bounds the size of values it computes.
pub fn analyze(
    model: &Model,
    input_shapes: &BTreeMap<String, Vec<i64>>,
    max_elements: usize,
) -> Result<GraphFacts> {
    let graph = &model.graph;
    let opset = model.opset("").unwrap_or(1);
    check_pinned_names(model, input_shapes)?;
    let mut out = GraphFacts::default();
    for id in graph.node_ids() {
        let v = ValueId { node: id, slot: 0 };
        match &graph.node(id).kind {
            NodeKind::Input(info) => {
                out.values.insert(
                    v,
                    input_facts(
                        info.name(),
                        info.r#type.as_ref(),
                        input_shapes.get(info.name()),
                    )?,
                );
            }
            NodeKind::Initializer(init) => {
                let name = graph.value_name(v);
                let facts = match &init.input_info {
                    Some(info) => input_facts(name, info.r#type.as_ref(), input_shapes.get(name))?,
                    None => stored_facts(&init.tensor),
                };
                out.values.insert(v, facts);
            }
            _ => {}
        }
    }
    for id in graph.topological_order()? {
        let op = graph.op(id).expect("op");
        let inputs = graph.inputs_of(id);
        let first = ValueId { node: id, slot: 0 };
        if op.is("Constant") {
            // Like an initializer: type and shape now, values only when an evaluation needs them.
            if let Ok(Some(t)) = op.constant_value() {
                out.values.insert(first, stored_facts(&t));
            }
            continue;
        }
        let mut input_facts: Vec<Option<Facts>> = inputs
            .iter()
            .map(|v| v.map(|v| out.values.get(&v).cloned().unwrap_or_default()))
            .collect();
        let n_out = graph.node(id).outputs.len();
        let mut results = {
            let refs: Vec<Option<&Facts>> = input_facts.iter().map(Option::as_ref).collect();
            infer::infer(op, opset, &refs, n_out)
        };
        results.resize(n_out, Facts::default());

        let is_constant = |v: ValueId, f: &Facts| f.value.is_some() || graph.constant(v).is_some();
        let all_known = !op.has_subgraphs()
            && inputs.iter().zip(&input_facts).all(|(v, f)| match (v, f) {
                (None, _) => true,
                (Some(v), Some(f)) => is_constant(*v, f),
                _ => false,
            });
        if all_known {
            // Decode stored constants only now that the op is known to be evaluable.
            for (v, f) in inputs.iter().zip(input_facts.iter_mut()) {
                if let (Some(v), Some(f)) = (v, f.as_mut()) {
                    if f.value.is_none() {
                        *f = lazily_valued(model, &out, *v);
                    }
                }
            }
        }
        if all_known {
            let too_big = results
                .iter()
                .any(|f| f.element_count().is_some_and(|n| n > max_elements));
            if too_big {
                out.notes.insert(
                    first,
                    format!("result has more than {max_elements} elements"),
                );
            } else {
                let arrays: Vec<Option<Array>> = input_facts
                    .iter()
                    .map(|f| f.as_ref().and_then(|f| f.value.as_deref().cloned()))
                    .collect();
                match eval::evaluate(op, opset, &arrays, n_out) {
                    Ok(Some(values)) => {
                        if values.iter().all(|a| a.len() <= max_elements) {
                            for (slot, a) in values.into_iter().enumerate().take(n_out) {
                                results[slot] = Facts::of_array(Arc::new(a));
                            }
                        } else {
                            out.notes.insert(
                                first,
                                format!("result has more than {max_elements} elements"),
                            );
                        }
                    }
                    Ok(None) => {
                        if op.op_type() != "Constant" {
                            out.notes.insert(
                                first,
                                format!("no constant evaluator for {}", op.op_type()),
                            );
                        }
                    }
                    Err(e) => {
                        out.notes.insert(first, format!("evaluation failed: {e}"));
                    }
                }
            }
        }
        for (slot, mut facts) in results.into_iter().enumerate() {
            promote_known_elements(&mut facts);
            out.values.insert(ValueId { node: id, slot }, facts);
        }
    }
    Ok(out)
}

/// Facts of a stored constant: type and shape, and the values of small integer tensors
/// (axes, shapes); weights stay encoded until an evaluation needs them.
fn stored_facts(t: &crate::ir::Tensor) -> Facts {
    let mut f = Facts {
        dtype: t.dtype().ok(),
        shape: t
            .shape()
            .ok()
            .map(|s| s.iter().map(|&d| Dim::Known(d as i64)).collect()),
        ..Default::default()
    };
    // Small integer tensors are shape pieces; small float ones are Resize scales (and the
    // like), which inference needs too.
    if f.dtype.is_some_and(|d| d.is_integer() || d.is_float())
        && t.element_count().is_ok_and(|n| n <= ELEMENT_TRACKING_LIMIT)
    {
        if let Ok(a) = t.decode() {
            f = Facts::of_array(Arc::new(a));
        }
    }
    f
}

/// A small integer tensor whose every element is known is a constant.
fn promote_known_elements(facts: &mut Facts) {
    if facts.value.is_some() {
        return;
    }
    let (Some(values), Some(shape), Some(dtype)) =
        (facts.known_ints(), facts.concrete_shape(), facts.dtype)
    else {
        return;
    };
    if shape.iter().product::<usize>() != values.len() || !dtype.is_integer() {
        return;
    }
    if let Ok(a) = Array::from_vec(&shape, values).and_then(|a| a.cast(dtype)) {
        facts.value = Some(Arc::new(a));
    }
}

/// The facts of `v`, with the value decoded if it is a stored constant (initializer or
/// Constant op) that the analysis left encoded.
fn lazily_valued(model: &Model, facts: &GraphFacts, v: ValueId) -> Facts {
    let mut f = facts.values.get(&v).cloned().unwrap_or_default();
    if f.value.is_none() {
        if let Some(t) = model.graph.constant(v) {
            if let Ok(a) = t.decode() {
                f = Facts::of_array(Arc::new(a));
            }
        }
    }
    f
}
