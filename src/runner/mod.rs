//! Runs models in tract: whole models (`intone run`), and any intermediate values as extra
//! outputs (calibration, per-layer comparison).

pub mod exact_f32;
pub mod sensitivity;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ndarray as tnd;

use crate::ir::{Array, Model, NodeKind};
use crate::{Error, Result};

/// A model parsed by tract, ready to be specialised to input shapes and run.
pub struct Runner {
    model: InferenceModel,
    outlets: HashMap<String, OutletId>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// The model, kept when its integer matmuls go to tract as exact f32 matmuls: the bound
    /// needs the contraction sizes, known once a plan pins the input shapes.
    exact_f32_source: Option<Model>,
}

/// A runnable model for fixed input shapes and a fixed list of outputs.
pub struct Plan {
    plan: Arc<TypedSimplePlan>,
    outputs: Vec<String>,
}

fn tract_err(context: &str) -> impl Fn(TractError) -> Error + '_ {
    move |e| Error::Runtime(format!("{context}: {e:#}"))
}

thread_local! {
    static IN_TRACT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static LAST_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Runs a tract call, turning a panic inside tract into an error. (A debug build of tract
/// panics on integer overflow, for one.) The panic hook stays quiet for these panics only.
fn guarded<T>(context: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_TRACT.with(|flag| flag.get())
                && std::env::var_os("INTONE_SHOW_TRACT_PANICS").is_none()
            {
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                LAST_PANIC.with(|p| *p.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
    IN_TRACT.with(|flag| flag.set(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_TRACT.with(|flag| flag.set(false));
    outcome.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        Err(Error::Runtime(format!(
            "{context}: tract panicked: {message}"
        )))
    })
}

impl Runner {
    /// Parses a model. External data is inlined first, so tract never reads other files.
    pub fn new(model: &Model) -> Result<Runner> {
        Runner::with_integer_matmul(model, exact_f32::IntegerMatmul::for_this_machine()?)
    }

    /// As [`Runner::new`], with the integer matmuls handed to tract as `how` says.
    pub fn with_integer_matmul(model: &Model, how: exact_f32::IntegerMatmul) -> Result<Runner> {
        let (parsed, outlets) = parse(model)?;
        let g = &model.graph;
        let inputs = g
            .inputs()
            .iter()
            .filter(|&&id| matches!(g.node(id).kind, NodeKind::Input(_)))
            .map(|&id| g.node(id).outputs[0].name.clone())
            .collect();
        let outputs = g
            .outputs()
            .iter()
            .map(|o| g.value_name(o.value).to_string())
            .collect();
        let has_integer_matmul = g.node_ids().any(|id| {
            g.op(id)
                .is_some_and(|op| op.domain().is_empty() && op.op_type() == "MatMulInteger")
        });
        let exact_f32_source = (how == exact_f32::IntegerMatmul::ExactF32 && has_integer_matmul)
            .then(|| model.clone());
        Ok(Runner {
            model: parsed,
            outlets,
            inputs,
            outputs,
            exact_f32_source,
        })
    }

    /// Names of the inputs a run must be given, in order.
    pub fn input_names(&self) -> &[String] {
        &self.inputs
    }

    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// True when tract knows a value of this name.
    pub fn has_value(&self, name: &str) -> bool {
        self.outlets.contains_key(name)
    }

    /// Specialises the model to these input arrays' types and shapes, computing `outputs`
    /// (graph outputs when `None`).
    pub fn plan(&self, inputs: &[&Array], outputs: Option<&[String]>) -> Result<Plan> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::Usage(format!(
                "the model takes {} inputs ({}), {} given",
                self.inputs.len(),
                self.inputs.join(", "),
                inputs.len()
            )));
        }
        let (mut model, outlets_by_name) = match &self.exact_f32_source {
            None => (self.model.clone(), None),
            Some(source) => {
                let mut source = source.clone();
                let pins: BTreeMap<String, Vec<i64>> = self
                    .inputs
                    .iter()
                    .zip(inputs)
                    .map(|(n, a)| (n.clone(), a.shape().iter().map(|&d| d as i64).collect()))
                    .collect();
                // A speed-up only: where the rewrite cannot run (shapes it cannot analyse),
                // tract gets the model as it is.
                match exact_f32::rewrite(&mut source, &pins).and_then(|_| parse(&source)) {
                    Ok((model, outlets)) => (model, Some(outlets)),
                    Err(_) => (self.model.clone(), None),
                }
            }
        };
        let known = outlets_by_name.as_ref().unwrap_or(&self.outlets);
        for (i, a) in inputs.iter().enumerate() {
            let fact = InferenceFact::dt_shape(datum_type(a)?, a.shape());
            model
                .set_input_fact(i, fact)
                .map_err(tract_err(&format!("input '{}'", self.inputs[i])))?;
        }
        let outputs: Vec<String> = outputs.map_or_else(|| self.outputs.clone(), <[String]>::to_vec);
        let outlets = outputs
            .iter()
            .map(|name| {
                known
                    .get(name)
                    .copied()
                    .ok_or_else(|| Error::Usage(format!("the model has no value named '{name}'")))
            })
            .collect::<Result<Vec<_>>>()?;
        model
            .select_output_outlets(&outlets)
            .map_err(tract_err("selecting outputs"))?;
        let plan = guarded("optimising", || {
            let typed = model.into_optimized().map_err(tract_err("optimising"))?;
            typed.into_runnable().map_err(tract_err("planning"))
        })?;
        Ok(Plan { plan, outputs })
    }

    /// Runs the model once on `inputs` (in [`Runner::input_names`] order).
    pub fn run(
        &self,
        inputs: &[Array],
        outputs: Option<&[String]>,
    ) -> Result<Vec<(String, Array)>> {
        let refs: Vec<&Array> = inputs.iter().collect();
        self.plan(&refs, outputs)?.run(inputs)
    }
}

/// Hands a model to tract. External data is inlined first, so tract never reads other files.
fn parse(model: &Model) -> Result<(InferenceModel, HashMap<String, OutletId>)> {
    let mut proto = crate::onnx::export(model)?;
    crate::onnx::external::for_each_tensor(&mut proto, &mut |t| {
        if t.data_location == Some(crate::schema::tensor_proto::DataLocation::External as i32) {
            t.data_location = None;
            t.external_data.clear();
        }
        Ok(())
    })?;
    if let Some(graph) = &mut proto.graph {
        for input in &mut graph.input {
            let name = input.name().to_string();
            crate::ops::name_any_dims(&name, input.r#type.as_mut());
        }
    }
    let mut bytes = Vec::new();
    prost::Message::encode(&proto, &mut bytes).map_err(|e| Error::Runtime(e.to_string()))?;
    // Declared value_info and output shapes may name symbols (batch, seq) that tract cannot
    // unify with concrete input shapes; tract infers them itself.
    let onnx = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .with_ignore_output_shapes(true);
    let tract_proto: pb::ModelProto = onnx
        .proto_model_for_read(&mut &bytes[..])
        .map_err(tract_err("decoding"))?;
    let parsed = guarded("loading the model", || {
        onnx.parse(&tract_proto, None)
            .map_err(tract_err("loading the model"))
    })?;
    if !parsed.unresolved_inputs.is_empty() {
        return Err(Error::Runtime(format!(
            "unresolved inputs {:?}",
            parsed.unresolved_inputs
        )));
    }
    Ok((parsed.model, parsed.outlets_by_name))
}

impl Plan {
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// Runs, and hands each f32 output to `visit` as a view (no copy). Outputs of other types
    /// are skipped.
    pub fn run_visit_f32(
        &self,
        inputs: &[Array],
        mut visit: impl FnMut(usize, tnd::ArrayViewD<f32>),
    ) -> Result<()> {
        let tensors: TVec<TValue> = inputs.iter().map(|a| to_tensor(a).into()).collect();
        let results = guarded("running", || {
            self.plan.run(tensors).map_err(tract_err("running"))
        })?;
        for (i, t) in results.iter().enumerate() {
            if t.datum_type() == DatumType::F32 {
                let view = t
                    .to_plain_array_view::<f32>()
                    .map_err(|e| Error::Runtime(format!("{e:#}")))?;
                visit(i, view);
            }
        }
        Ok(())
    }

    /// Runs on inputs of the shapes the plan was made for.
    pub fn run(&self, inputs: &[Array]) -> Result<Vec<(String, Array)>> {
        let tensors: TVec<TValue> = inputs.iter().map(|a| to_tensor(a).into()).collect();
        let results = guarded("running", || {
            self.plan.run(tensors).map_err(tract_err("running"))
        })?;
        results
            .into_iter()
            .zip(&self.outputs)
            .map(|(t, name)| Ok((name.clone(), from_tensor(&t)?)))
            .collect()
    }
}

fn datum_type(a: &Array) -> Result<DatumType> {
    Ok(match a {
        Array::F32(_) => f32::datum_type(),
        Array::F64(_) => f64::datum_type(),
        Array::F16(_) => f16::datum_type(),
        Array::I8(_) => i8::datum_type(),
        Array::I16(_) => i16::datum_type(),
        Array::I32(_) => i32::datum_type(),
        Array::I64(_) => i64::datum_type(),
        Array::U8(_) => u8::datum_type(),
        Array::U16(_) => u16::datum_type(),
        Array::U32(_) => u32::datum_type(),
        Array::U64(_) => u64::datum_type(),
        Array::Bool(_) => bool::datum_type(),
        Array::Bf16(_) => return Err(Error::unsupported("bfloat16 inputs in tract")),
    })
}

/// Our arrays and tract's share the ndarray crate; conversion copies once.
pub fn to_tensor(a: &Array) -> Tensor {
    match a {
        Array::F32(x) => x.clone().into(),
        Array::F64(x) => x.clone().into(),
        Array::F16(x) => x.clone().into(),
        Array::Bf16(x) => x.mapv(|v| f16::from_f32(v.to_f32())).into(),
        Array::I8(x) => x.clone().into(),
        Array::I16(x) => x.clone().into(),
        Array::I32(x) => x.clone().into(),
        Array::I64(x) => x.clone().into(),
        Array::U8(x) => x.clone().into(),
        Array::U16(x) => x.clone().into(),
        Array::U32(x) => x.clone().into(),
        Array::U64(x) => x.clone().into(),
        Array::Bool(x) => x.clone().into(),
    }
}

/// A tract tensor as an [`Array`].
pub fn from_tensor(t: &Tensor) -> Result<Array> {
    fn view<T: Datum + crate::ir::Element>(t: &Tensor) -> Result<Array> {
        let v: tnd::ArrayViewD<T> = t
            .to_plain_array_view::<T>()
            .map_err(|e| Error::Runtime(format!("{e:#}")))?;
        Ok(T::wrap(v.to_owned()))
    }
    match t.datum_type() {
        DatumType::F32 => view::<f32>(t),
        DatumType::F64 => view::<f64>(t),
        DatumType::F16 => view::<f16>(t),
        DatumType::I8 => view::<i8>(t),
        DatumType::I16 => view::<i16>(t),
        DatumType::I32 => view::<i32>(t),
        DatumType::I64 => view::<i64>(t),
        DatumType::U8 => view::<u8>(t),
        DatumType::U16 => view::<u16>(t),
        DatumType::U32 => view::<u32>(t),
        DatumType::U64 => view::<u64>(t),
        DatumType::Bool => view::<bool>(t),
        DatumType::TDim => {
            let v = t
                .cast_to::<i64>()
                .map_err(|e| Error::Runtime(format!("{e:#}")))?;
            view::<i64>(&v)
        }
        other => Err(Error::unsupported(format!(
            "tract output of type {other:?}"
        ))),
    }
}

/// How close a candidate tensor is to a reference tensor.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Agreement {
    pub elements: usize,
    pub max_abs_error: f64,
    pub mean_abs_error: f64,
    pub cosine: f64,
    /// Signal-to-quantization-noise ratio: 10·log10(Σ ref² / Σ (ref − cand)²).
    pub sqnr_db: f64,
    /// For 2-D outputs (logits): fraction of rows whose argmax agrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top1: Option<f64>,
}

/// Compares two tensors of the same shape (given as f64, row-major).
pub fn agreement(reference: &[f64], candidate: &[f64], shape: &[usize]) -> Result<Agreement> {
    if reference.len() != candidate.len() {
        return Err(Error::Usage(format!(
            "cannot compare {} elements with {}",
            reference.len(),
            candidate.len()
        )));
    }
    let n = reference.len().max(1) as f64;
    let (mut max_abs, mut sum_abs, mut dot, mut rr, mut cc, mut noise) =
        (0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
    for (&r, &c) in reference.iter().zip(candidate) {
        let d = (r - c).abs();
        max_abs = max_abs.max(d);
        sum_abs += d;
        dot += r * c;
        rr += r * r;
        cc += c * c;
        noise += d * d;
    }
    let cosine = if rr == 0.0 && cc == 0.0 {
        1.0
    } else {
        dot / (rr.sqrt() * cc.sqrt()).max(f64::MIN_POSITIVE)
    };
    let sqnr_db = if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (rr / noise).log10()
    };
    let top1 = (shape.len() == 2 && shape[1] > 1).then(|| {
        let (rows, cols) = (shape[0], shape[1]);
        let argmax = |v: &[f64], i: usize| {
            let row = &v[i * cols..(i + 1) * cols];
            (0..cols).fold(0, |best, j| if row[j] > row[best] { j } else { best })
        };
        (0..rows)
            .filter(|&i| argmax(reference, i) == argmax(candidate, i))
            .count() as f64
            / rows.max(1) as f64
    });
    Ok(Agreement {
        elements: reference.len(),
        max_abs_error: max_abs,
        mean_abs_error: sum_abs / n,
        cosine,
        sqnr_db,
        top1,
    })
}

/// The real values an integer tensor stands for: `scale · (q − zero_point)`, per channel
/// along `axis` when the map gives one scale per channel.
pub fn dequantize(q: &Array, entry: &crate::lower::value_map::Entry) -> Vec<f64> {
    let values = q.to_f64_vec();
    let shape = q.shape();
    let zp = entry.zero_point as f64;
    match (entry.axis, entry.scale.len()) {
        (Some(axis), n) if n > 1 && axis < shape.len() => {
            let inner: usize = shape[axis + 1..].iter().product();
            let dim = shape[axis];
            values
                .iter()
                .enumerate()
                .map(|(i, &v)| (v - zp) * entry.scale[(i / inner.max(1)) % dim.max(1)])
                .collect()
        }
        _ => values.iter().map(|&v| (v - zp) * entry.scale[0]).collect(),
    }
}

/// The comparison of a candidate model (typically compiled) with its reference.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckReport {
    pub outputs: Vec<ValueCheck>,
    /// Intermediate values, in the candidate's graph order (with `--per-layer`).
    pub layers: Vec<ValueCheck>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ValueCheck {
    /// The value in the candidate model.
    pub value: String,
    /// The value of the reference model it is compared with.
    pub reference: String,
    /// "float" when compared directly, or the integer encoding (`i8 scale=…`).
    pub encoding: String,
    #[serde(flatten)]
    pub agreement: Agreement,
}

/// Runs both models on the same inputs and compares their outputs (matched by name) and,
/// with `per_layer`, every intermediate value the candidate maps back to the reference:
/// integer values through the `intone.values` map, float values by equal name.
pub fn check(
    reference: &Model,
    candidate: &Model,
    inputs: &[Array],
    per_layer: bool,
) -> Result<CheckReport> {
    use crate::lower::value_map;
    let ref_runner = Runner::new(reference)?;
    let cand_runner = Runner::new(candidate)?;
    if ref_runner.input_names() != cand_runner.input_names() {
        return Err(Error::Usage(format!(
            "the models take different inputs: {:?} and {:?}",
            ref_runner.input_names(),
            cand_runner.input_names()
        )));
    }
    // (candidate value, reference value, map entry for integer values)
    let mut pairs: Vec<(String, String, Option<value_map::Entry>)> = Vec::new();
    for out in cand_runner.output_names() {
        if ref_runner.output_names().contains(out) {
            pairs.push((out.clone(), out.clone(), None));
        }
    }
    let outputs_count = pairs.len();
    if outputs_count == 0 {
        return Err(Error::Usage("the models share no output name".into()));
    }
    if per_layer {
        // Float values only (besides mapped integers): shape arithmetic and constants are
        // exact by construction and would only pad the list.
        let facts =
            crate::ops::analyze(candidate, &Default::default(), crate::ops::EVALUATION_LIMIT)?;
        let is_float = |v: crate::ir::ValueId| {
            candidate.graph.constant(v).is_none()
                && facts.get(v).is_some_and(|f| {
                    f.value.is_none() && f.dtype.is_some_and(crate::ir::DataTypeInfo::is_float)
                })
        };
        let mut map: HashMap<String, value_map::Entry> = value_map::read(candidate)?
            .into_iter()
            .map(|e| (e.value.clone(), e))
            .collect();
        let g = &candidate.graph;
        for id in g.topological_order()? {
            for v in g.outputs_of(id) {
                let name = g.value_name(v).to_string();
                if pairs[..outputs_count].iter().any(|(c, _, _)| *c == name)
                    || !cand_runner.has_value(&name)
                {
                    continue;
                }
                if let Some(entry) = map.remove(&name) {
                    if ref_runner.has_value(&entry.source) {
                        pairs.push((name, entry.source.clone(), Some(entry)));
                    }
                } else if is_float(v)
                    && ref_runner.has_value(&name)
                    && reference.graph.find_value(&name).is_some()
                {
                    pairs.push((name.clone(), name, None));
                }
            }
        }
    }
    let cand_names: Vec<String> = pairs.iter().map(|(c, _, _)| c.clone()).collect();
    // Several integer values can stand for one float value (copies of a subgraph).
    let mut ref_names: Vec<String> = Vec::new();
    for (_, r, _) in &pairs {
        if !ref_names.contains(r) {
            ref_names.push(r.clone());
        }
    }
    let ref_values: HashMap<String, Array> = ref_runner
        .run(inputs, Some(&ref_names))?
        .into_iter()
        .collect();
    let cand_values = cand_runner.run(inputs, Some(&cand_names))?;
    let mut checks = Vec::new();
    for ((cand_name, ref_name, entry), (_, cand)) in pairs.iter().zip(cand_values) {
        let reference = &ref_values[ref_name];
        let (values, encoding) = match entry {
            Some(e) => (
                dequantize(&cand, e),
                format!(
                    "{}{} {}",
                    if e.zero_point != 0 || cand.dtype() == crate::ir::DataType::Uint8 {
                        "u"
                    } else {
                        "i"
                    },
                    e.bits,
                    if e.scale.len() == 1 {
                        format!("scale={:e}", e.scale[0])
                    } else {
                        format!("{} scales", e.scale.len())
                    }
                ),
            ),
            None => (cand.to_f64_vec(), "float".to_string()),
        };
        if values.len() != reference.len() {
            continue;
        }
        checks.push(ValueCheck {
            value: cand_name.clone(),
            reference: ref_name.clone(),
            encoding,
            agreement: agreement(&reference.to_f64_vec(), &values, reference.shape())?,
        });
    }
    let layers = checks.split_off(outputs_count.min(checks.len()));
    Ok(CheckReport {
        outputs: checks,
        layers,
    })
}
