//! Runs models in tract: whole models (`intone run`), and any intermediate values as extra
//! outputs (calibration, per-layer comparison).

use std::collections::HashMap;
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
        let mut proto = crate::onnx::export(model)?;
        crate::onnx::external::for_each_tensor(&mut proto, &mut |t| {
            if t.data_location
                == Some(crate::onnx::proto::tensor_proto::DataLocation::External as i32)
            {
                t.data_location = None;
                t.external_data.clear();
            }
            Ok(())
        })?;
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
        Ok(Runner {
            model: parsed.model,
            outlets: parsed.outlets_by_name,
            inputs,
            outputs,
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
        let mut model = self.model.clone();
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
                self.outlets
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
