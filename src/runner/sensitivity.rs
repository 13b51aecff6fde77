//! Measured sensitivity: the output noise each perturbation of a float model causes alone.
//!
//! One probe model answers every site: each site `i` selects the perturbed value instead of the
//! original where `g_i > 0`, `g` an extra graph input (a float vector, one entry per site).
//! Running with `g = 0` gives the float outputs; with `g = e_i`, site `i` alone. Weights are
//! perturbed through an extra matmul on the weight's error (the weight stays a constant, so
//! tract keeps its fast kernels), values by rounding them onto their planned grid.
//! The noise is `Σ‖y_i − y‖² / Σ‖y‖²` over the float graph outputs and the samples.

use crate::ir::{Array, DataType, Model, NodeKind, Op, ValueId};
use crate::pass::{CalibrationSet, Rewriter, SensitivityReport};
use crate::schema::{TensorShapeProto, TypeProto, tensor_shape_proto, type_proto};
use crate::{Error, Result};

use super::Runner;

/// One way to perturb the model.
#[derive(Clone, Debug)]
pub enum Perturbation {
    /// Every Conv, MatMul or Gemm reading this constant weight (as its second input) computes
    /// with `replacement` instead.
    Weight { value: ValueId, replacement: Array },
    /// The value as `scale·(q − zero_point)`, `q = round(x/scale) + zero_point` (half to
    /// even, as ONNX Round) clamped to `lo..=hi`.
    Grid {
        value: ValueId,
        scale: f64,
        zero_point: i64,
        lo: i64,
        hi: i64,
    },
}

impl Perturbation {
    /// The symmetric grid of a plan: `scale·q`, q in `−levels..=levels` (`0..=levels` unsigned).
    pub fn on_grid(value: ValueId, scale: f64, levels: i64, signed: bool) -> Perturbation {
        Perturbation::Grid {
            value,
            scale,
            zero_point: 0,
            lo: if signed { -levels } else { 0 },
            hi: levels,
        }
    }

    pub fn value(&self) -> ValueId {
        match self {
            Perturbation::Weight { value, .. } | Perturbation::Grid { value, .. } => *value,
        }
    }
}

/// Calibration samples a measurement runs when nothing else is asked (each runs once per site,
/// plus once).
pub const DEFAULT_SAMPLES: usize = 16;

/// The name of the probe model's selector input.
const PROBE: &str = "intone_sensitivity_probe";

/// What [`measure`] found.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Per site: the relative output noise of that perturbation alone; `None` where the model
    /// offers nothing to perturb (a weight no matmul reads).
    pub alone: Vec<Option<f64>>,
    /// With every site perturbed at once.
    pub together: f64,
    /// Samples run.
    pub samples: usize,
}

/// What the noise is measured on: the first `samples` samples of `set` (or all of them), at
/// the `objective` graph outputs (every float output when empty), with the `context`
/// perturbations applied in every run, the reference included (a site's noise is then what it
/// adds to theirs).
#[derive(Clone, Copy, Debug)]
pub struct Probe<'a> {
    pub set: &'a CalibrationSet,
    pub samples: usize,
    pub objective: &'a [String],
    pub context: &'a [Perturbation],
}

/// The relative output noise of every perturbation alone.
pub fn output_noise(
    model: &Model,
    probe: Probe,
    sites: &[Perturbation],
) -> Result<Vec<Option<f64>>> {
    Ok(measure(model, probe, sites, false)?.alone)
}

/// As [`output_noise`], and (with `together`) the noise of all sites at once.
pub fn measure(
    model: &Model,
    probe: Probe,
    sites: &[Perturbation],
    together: bool,
) -> Result<Measured> {
    let Probe {
        set,
        samples: limit,
        objective,
        context,
    } = probe;
    let outputs: Vec<String> = model
        .graph
        .outputs()
        .iter()
        .map(|o| model.graph.value_name(o.value).to_string())
        .collect();
    for name in objective {
        if !outputs.contains(name) {
            return Err(Error::Usage(format!(
                "--objective {name}: the model has no output of that name (outputs: {})",
                outputs.join(", ")
            )));
        }
    }
    let judged = (!objective.is_empty()).then_some(objective);
    // The sites first, the context after: a context rounding then applies to what a site
    // perturbed (a weight's error is rounded with its output), as in the integer model.
    let all_sites: Vec<Perturbation> = sites.iter().chain(context).cloned().collect();
    let (probe, active) = probe_model(model, &all_sites)?;
    let active = active[..sites.len()].to_vec();
    let switches = all_sites.len();
    // The reference: the context on.
    let base = || {
        let mut on = ndarray::ArrayD::<f32>::zeros(vec![switches]);
        on.iter_mut().skip(sites.len()).for_each(|x| *x = 1.0);
        on
    };
    let runner = Runner::new(&probe)?;
    let samples = set.samples()?.min(limit.max(1));
    // A model that fixes its batch runs in batches of that size (the last one filled up with
    // the first samples again, which then count twice).
    let declared = model
        .graph
        .inputs()
        .iter()
        .find_map(|&id| declared_batch(model, ValueId { node: id, slot: 0 }));
    let batch = declared.unwrap_or(set.batch.clamp(1, samples));
    let names: Vec<String> = runner
        .input_names()
        .iter()
        .filter(|n| n.as_str() != PROBE)
        .cloned()
        .collect();
    for name in &names {
        if !set.inputs.contains_key(name) {
            return Err(Error::Usage(format!(
                "sensitivity: no calibration data for model input '{name}'"
            )));
        }
    }
    let types: Vec<Option<DataType>> = names
        .iter()
        .map(|n| {
            let v = probe.graph.find_value(n).expect("graph input");
            input_type(&probe, v)
        })
        .collect();
    let mut noise = vec![0f64; sites.len()];
    let mut all = 0f64;
    let mut signal = 0f64;
    let mut plans = Vec::new();
    let mut start = 0;
    while start < samples {
        let end = match declared {
            Some(_) => start + batch,
            None => (start + batch).min(samples),
        };
        let rows: Vec<usize> = (start..end).map(|i| i % samples).collect();
        start = end;
        let mut inputs = Vec::new();
        for name in runner.input_names() {
            if name == PROBE {
                inputs.push(Array::F32(base()));
                continue;
            }
            let i = names.iter().position(|n| n == name).expect("a data input");
            let rows = set.rows_at(name, &rows);
            inputs.push(match types[i] {
                Some(t) if t != rows.dtype() => rows.cast(t)?,
                _ => rows,
            });
        }
        let probe_slot = runner
            .input_names()
            .iter()
            .position(|n| n == PROBE)
            .expect("the probe input");
        // Batches of one size share a plan.
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|a| a.shape().to_vec()).collect();
        if !plans.iter().any(|(s, _)| *s == shapes) {
            let refs: Vec<&Array> = inputs.iter().collect();
            plans.push((shapes.clone(), runner.plan(&refs, judged)?));
        }
        let plan = &plans.iter().find(|(s, _)| *s == shapes).expect("planned").1;
        let reference = float_outputs(plan, &inputs)?;
        signal += reference
            .iter()
            .map(|y| y.iter().map(|&v| (v as f64).powi(2)).sum::<f64>())
            .sum::<f64>();
        let mut distance = |selector: ndarray::ArrayD<f32>| -> Result<f64> {
            inputs[probe_slot] = Array::F32(selector);
            let perturbed = float_outputs(plan, &inputs)?;
            Ok(reference
                .iter()
                .zip(&perturbed)
                .map(|(a, b)| {
                    a.iter()
                        .zip(b)
                        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
                        .sum::<f64>()
                })
                .sum::<f64>())
        };
        for (i, n) in noise.iter_mut().enumerate() {
            if active[i] {
                let mut selector = base();
                selector[i] = 1.0;
                *n += distance(selector)?;
            }
        }
        if together {
            all += distance(ndarray::ArrayD::<f32>::ones(vec![switches]))?;
        }
    }
    let relative = |n: f64| n / signal.max(f64::MIN_POSITIVE);
    Ok(Measured {
        alone: noise
            .into_iter()
            .zip(active)
            .map(|(n, a)| a.then(|| relative(n)))
            .collect(),
        together: relative(all),
        samples,
    })
}

/// A float value's integer representation as a perturbation, with the value's name and bits.
pub type Represented = (Perturbation, String, u32);

/// The compiled model's integer representations of the float model's values, each as a
/// [`Perturbation::Grid`] of the float value (with its name and bits): per float value the
/// coarsest per-tensor representation of at most 16 bits (int32 accumulators add no rounding
/// worth measuring). Also how many represented values the float model does not name (values a
/// fusion created).
pub fn represented_values(float: &Model, compiled: &Model) -> Result<(Vec<Represented>, usize)> {
    let g = &compiled.graph;
    let mut chosen: std::collections::BTreeMap<String, (f64, Perturbation, u32)> =
        Default::default();
    let mut unnamed = std::collections::BTreeSet::new();
    for id in g.topological_order()? {
        for v in g.outputs_of(id) {
            let value = g.value(v);
            let (Some(q), Some(origin)) = (&value.quant, &value.origin) else {
                continue;
            };
            let crate::ir::quant::Scale::PerTensor(scale) = q.scale else {
                continue;
            };
            if q.bits > 16 || scale.is_nan() || scale <= 0.0 {
                continue;
            }
            let Some(source) = float.graph.find_value(origin) else {
                unnamed.insert(origin.clone());
                continue;
            };
            if float.graph.constant(source).is_some() {
                continue;
            }
            let (lo, hi) = q.range.unwrap_or_else(|| {
                let (l, h) = if q.signed {
                    (-(1i64 << (q.bits - 1)), (1i64 << (q.bits - 1)) - 1)
                } else {
                    (0, (1i64 << q.bits) - 1)
                };
                (l + q.zero_point, h + q.zero_point)
            });
            let site = Perturbation::Grid {
                value: source,
                scale,
                zero_point: q.zero_point,
                lo,
                hi,
            };
            match chosen.get(origin) {
                Some((s, _, _)) if *s >= scale => {}
                _ => {
                    chosen.insert(origin.clone(), (scale, site, q.bits));
                }
            }
        }
    }
    Ok((
        chosen
            .into_iter()
            .map(|(name, (_, site, bits))| (site, name, bits))
            .collect(),
        unnamed.len(),
    ))
}

/// The output SQNR in decibels of a relative noise; `None` for no noise at all.
pub fn sqnr_db(noise: f64) -> Option<f64> {
    (noise > 0.0).then(|| -10.0 * noise.log10())
}

/// `--sensitivity`: every value of a compiled model, ranked by the output noise quantizing it
/// alone causes in the float model.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Ranking {
    pub samples: usize,
    /// The output noise with every activation on its integer grid at once (weights float).
    pub activations_together: f64,
    /// Represented values the float model has no name for (values a fusion created).
    pub unnamed: usize,
    /// Activations (measured here) and weights (measured by `measure-sensitivity`), worst first.
    pub ranked: Vec<SensitivityReport>,
}

/// Measures the activations of `compiled` as represented (`represented_values`) and ranks them
/// together with the `weights` rows.
pub fn rank(
    float: &Model,
    compiled: &Model,
    probe: Probe,
    weights: &[SensitivityReport],
) -> Result<Ranking> {
    let (values, unnamed) = represented_values(float, compiled)?;
    let sites: Vec<Perturbation> = values.iter().map(|(s, _, _)| s.clone()).collect();
    let measured = measure(float, probe, &sites, true)?;
    let g = &float.graph;
    let mut ranked: Vec<SensitivityReport> = values
        .iter()
        .zip(&measured.alone)
        .filter_map(|((site, name, bits), noise)| {
            let n = (*noise)?;
            Some(SensitivityReport {
                value: name.clone(),
                node: g.describe(site.value().node),
                kind: "activation".into(),
                bits: *bits,
                terms: 0,
                output_noise: n,
                output_sqnr_db: sqnr_db(n),
            })
        })
        .collect();
    ranked.extend(weights.iter().cloned());
    ranked.sort_by(|a, b| {
        b.output_noise
            .total_cmp(&a.output_noise)
            .then_with(|| a.value.cmp(&b.value))
    });
    Ok(Ranking {
        samples: measured.samples,
        activations_together: measured.together,
        unnamed,
        ranked,
    })
}

/// The first dimension a graph input declares, when it is a number.
fn declared_batch(model: &Model, v: ValueId) -> Option<usize> {
    let NodeKind::Input(info) = &model.graph.node(v.node).kind else {
        return None;
    };
    let type_proto::Value::TensorType(t) = info.r#type.as_ref()?.value.as_ref()? else {
        return None;
    };
    match t.shape.as_ref()?.dim.first()?.value.as_ref()? {
        tensor_shape_proto::dimension::Value::DimValue(d) if *d > 0 => Some(*d as usize),
        _ => None,
    }
}

fn input_type(model: &Model, v: ValueId) -> Option<DataType> {
    match &model.graph.node(v.node).kind {
        NodeKind::Input(info) => match info.r#type.as_ref()?.value.as_ref()? {
            type_proto::Value::TensorType(t) => DataType::try_from(t.elem_type?).ok(),
            _ => None,
        },
        _ => None,
    }
}

/// The first `limit` calibration samples as input batches for `runner` (in its input order, cast
/// to the declared types), `set.batch` samples each. A model that fixes its batch gets batches
/// of that size, the last one filled up with the first samples again.
pub fn sample_batches(
    model: &Model,
    runner: &Runner,
    set: &CalibrationSet,
    limit: usize,
) -> Result<Vec<Vec<Array>>> {
    let samples = set.samples()?.min(limit.max(1));
    let declared = model
        .graph
        .inputs()
        .iter()
        .find_map(|&id| declared_batch(model, ValueId { node: id, slot: 0 }));
    let batch = declared.unwrap_or(set.batch.clamp(1, samples));
    let mut batches = Vec::new();
    let mut start = 0;
    while start < samples {
        let end = match declared {
            Some(_) => start + batch,
            None => (start + batch).min(samples),
        };
        let rows: Vec<usize> = (start..end).map(|i| i % samples).collect();
        start = end;
        let mut inputs = Vec::new();
        for name in runner.input_names() {
            if !set.inputs.contains_key(name) {
                return Err(Error::Usage(format!(
                    "no calibration data for model input '{name}' (add --calibrate {name}=FILE.npy)"
                )));
            }
            let v = model.graph.find_value(name).expect("graph input");
            let rows = set.rows_at(name, &rows);
            inputs.push(match input_type(model, v) {
                Some(t) if t != rows.dtype() => rows.cast(t)?,
                _ => rows,
            });
        }
        batches.push(inputs);
    }
    Ok(batches)
}

/// The f32 graph outputs of one run, flattened.
fn float_outputs(plan: &super::Plan, inputs: &[Array]) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::new();
    plan.run_visit_f32(inputs, |_, view| out.push(view.iter().copied().collect()))?;
    Ok(out)
}

/// The model with every site switched by an entry of the probe input; which sites it could
/// place.
fn probe_model(model: &Model, sites: &[Perturbation]) -> Result<(Model, Vec<bool>)> {
    let mut probe = model.clone();
    let selector = {
        let g = &mut probe.graph;
        let info = crate::schema::ValueInfoProto {
            name: Some(PROBE.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(DataType::Float as i32),
                    shape: Some(TensorShapeProto {
                        dim: vec![tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(
                                sites.len() as i64,
                            )),
                            denotation: None,
                        }],
                    }),
                })),
                denotation: None,
            }),
            ..Default::default()
        };
        let order = g.next_order(None);
        let id = g.add_node(
            NodeKind::Input(info),
            vec![crate::ir::Value::named(PROBE)],
            order,
        )?;
        g.push_input(id);
        ValueId { node: id, slot: 0 }
    };
    let mut active = vec![false; sites.len()];
    // Sites on one value compose in order: a later one perturbs what the earlier ones made.
    let mut stand_in: std::collections::HashMap<ValueId, ValueId> = Default::default();
    let mut rw = Rewriter::unanchored(&mut probe);
    for (i, site) in sites.iter().enumerate() {
        let index = rw.constant(
            "sensitivity_site",
            &Array::I64(ndarray::arr0(i as i64).into_dyn()),
        )?;
        match site {
            Perturbation::Weight { value, replacement } => {
                let original = rw
                    .graph()
                    .constant(*value)
                    .map(|t| t.decode())
                    .transpose()?;
                let (Some(Array::F32(w)), Array::F32(r)) = (original, replacement) else {
                    continue;
                };
                if w.shape() != r.shape() {
                    return Err(Error::invalid(format!(
                        "sensitivity: replacement of '{}' has shape {:?}, the weight {:?}",
                        rw.graph().value_name(*value),
                        r.shape(),
                        w.shape()
                    )));
                }
                let readers: Vec<_> = rw
                    .graph()
                    .uses(*value)
                    .into_iter()
                    .filter(|u| {
                        u.port == crate::ir::Port::Input(1)
                            && rw.graph().op(u.node).is_some_and(|op| {
                                op.domain().is_empty()
                                    && matches!(op.op_type(), "Conv" | "MatMul" | "Gemm")
                            })
                    })
                    .collect();
                if readers.is_empty() {
                    continue;
                }
                let error = Array::F32(r - &w);
                let delta = rw.constant("sensitivity_error", &error)?;
                for reader in readers {
                    let anchor = rw.set_anchor(reader.node);
                    let gate = gate(&mut rw, selector, index)?;
                    let op = rw.graph().op(reader.node).expect("an op").clone();
                    let x = rw.graph().input(reader.node, 0).expect("an input");
                    let extra = rw.op_node(
                        Op::new(op.op_type(), ""),
                        "sensitivity_extra",
                        &[Some(x), Some(delta)],
                        op.proto.attribute.clone(),
                        1,
                    )?;
                    let extra = ValueId {
                        node: extra,
                        slot: 0,
                    };
                    let raw = ValueId {
                        node: reader.node,
                        slot: 0,
                    };
                    let y = stand_in.get(&raw).copied().unwrap_or(raw);
                    let sum = rw.op("Add", "sensitivity_sum", &[y, extra], vec![])?;
                    let chosen = rw.op("Where", "sensitivity_chosen", &[gate, sum, y], vec![])?;
                    rw.replace(y, chosen)?;
                    for node in [sum.node, chosen.node] {
                        keep_reading(&mut rw, node, chosen, y);
                    }
                    stand_in.insert(raw, chosen);
                    rw.restore_anchor(anchor);
                }
                active[i] = true;
            }
            Perturbation::Grid {
                value,
                scale,
                zero_point,
                lo,
                hi,
            } => {
                let v = stand_in.get(value).copied().unwrap_or(*value);
                let anchor = rw.set_anchor(v.node);
                let scalar = |x: f64| Array::F32(ndarray::arr0(x as f32).into_dyn());
                let s = rw.constant("sensitivity_scale", &scalar(*scale))?;
                // Clamping the rounded `x/s` to `lo − zp..=hi − zp` is clamping `q`.
                let (l, h) = (
                    rw.constant("sensitivity_lo", &scalar((lo - zero_point) as f64))?,
                    rw.constant("sensitivity_hi", &scalar((hi - zero_point) as f64))?,
                );
                let gate = gate(&mut rw, selector, index)?;
                let divided = rw.op("Div", "sensitivity_q", &[v, s], vec![])?;
                let q = rw.op("Round", "sensitivity_round", &[divided], vec![])?;
                let q = rw.op("Max", "sensitivity_lo", &[q, l], vec![])?;
                let q = rw.op("Min", "sensitivity_hi", &[q, h], vec![])?;
                let on_grid = rw.op("Mul", "sensitivity_grid", &[q, s], vec![])?;
                let chosen = rw.op("Where", "sensitivity_chosen", &[gate, on_grid, v], vec![])?;
                rw.replace(v, chosen)?;
                // The probe's own reads of the value stay on the original.
                for node in [divided.node, chosen.node] {
                    keep_reading(&mut rw, node, chosen, v);
                }
                stand_in.insert(*value, chosen);
                rw.restore_anchor(anchor);
                active[i] = true;
            }
        }
    }
    rw.finish()?;
    Ok((probe, active))
}

/// `probe[index] > 0`: whether a site is on. A select, not `x + g·δ`: a value holding ±inf
/// (an additive attention mask) would turn `0·δ` into NaN.
fn gate(rw: &mut Rewriter, selector: ValueId, index: ValueId) -> Result<ValueId> {
    let zero = rw.constant(
        "sensitivity_off",
        &Array::F32(ndarray::arr0(0f32).into_dyn()),
    )?;
    let g = rw.op("Gather", "sensitivity_gate", &[selector, index], vec![])?;
    rw.op("Greater", "sensitivity_on", &[g, zero], vec![])
}

/// Points `node`'s reads of `from` (where `replace` rewired them) back at `to`.
fn keep_reading(rw: &mut Rewriter, node: crate::ir::NodeId, from: ValueId, to: ValueId) {
    let inputs = rw.graph().inputs_of(node);
    for (slot, x) in inputs.iter().enumerate() {
        if *x == Some(from) {
            rw.set_input(node, slot, Some(to));
        }
    }
}
