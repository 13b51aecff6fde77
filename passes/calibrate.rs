//! `calibrate`: runs the float model in tract on the calibration samples and records streaming
//! statistics (min/max, mean, an |x| histogram) on every float value an op produces.
//!
//! An analysis, not a rewrite: the graph is unchanged; `Value::stats` is set.
//! Preconditions: `--calibrate NAME=FILE.npy` for every model input (samples along axis 0).
//! Memory is bounded by one batch of activations plus a fixed-size observer per value,
//! however many samples there are. I-ViT §3.2 (static activation scales).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use super::prelude::*;

use crate::ir::{DataType, NodeKind};
use crate::quant::Observer;
use crate::runner::Runner;
use crate::{Error, ops};

pub struct Calibrate;

impl Pass for Calibrate {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let set = cx.options.calibration.as_ref().ok_or_else(|| {
            Error::Usage("the calibrate pass needs calibration data: add --calibrate NAME=FILE.npy for each model input".into())
        })?;
        let facts = ops::analyze(model, &cx.options.input_shapes, 1 << 16)?;
        let g = &model.graph;

        // Every float value an op produces, in graph order, plus float graph inputs.
        let mut observed: Vec<ValueId> = g
            .inputs()
            .iter()
            .filter(|&&id| matches!(g.node(id).kind, NodeKind::Input(_)))
            .map(|&id| ValueId { node: id, slot: 0 })
            .collect();
        for id in g.topological_order()? {
            for v in g.outputs_of(id) {
                let f = facts.get(v);
                if f.is_some_and(|f| f.value.is_none())
                    && f.and_then(|f| f.dtype) == Some(DataType::Float)
                {
                    observed.push(v);
                }
            }
        }
        observed.retain(|&v| facts.get(v).and_then(|f| f.dtype) == Some(DataType::Float));

        let runner = Runner::new(model)?;
        let names: Vec<String> = observed
            .iter()
            .map(|&v| model.graph.value_name(v).to_string())
            .collect();
        let (exposed, hidden): (Vec<usize>, Vec<usize>) =
            (0..names.len()).partition(|&i| runner.has_value(&names[i]));
        for &i in &hidden {
            cx.remark(
                model.graph.describe(observed[i].node),
                format!(
                    "value '{}' is not visible to tract; not calibrated",
                    names[i]
                ),
            );
        }
        let outputs: Vec<String> = exposed.iter().map(|&i| names[i].clone()).collect();

        // Calibration arrays in the model's input order, cast to the declared types.
        let samples = set.samples()?;
        for name in set.inputs.keys() {
            if !runner.input_names().contains(name) {
                let known: Vec<&str> = runner.input_names().iter().map(String::as_str).collect();
                return Err(Error::Usage(format!(
                    "--calibrate {name}: the model has no input of that name{}",
                    crate::pass::pipeline::suggestion(name, &known)
                )));
            }
        }
        let mut declared_batch = None;
        let mut input_types = Vec::new();
        for name in runner.input_names() {
            if !set.inputs.contains_key(name) {
                return Err(Error::Usage(format!(
                    "calibration: no data for model input '{name}' (add --calibrate {name}=FILE.npy)"
                )));
            }
            let v = model.graph.find_value(name).expect("graph input");
            let f = facts.get(v);
            input_types.push(f.and_then(|f| f.dtype));
            if let Some(Some(d)) = f
                .and_then(|f| f.shape.as_ref())
                .map(|s| s.first().and_then(|d| d.known()))
            {
                declared_batch = Some(d as usize);
            }
        }
        // A model whose batch dimension is fixed takes exactly that many samples per run.
        let batch = declared_batch.unwrap_or(set.batch).max(1);
        if samples < batch {
            return Err(Error::Usage(format!(
                "calibration has {samples} samples, fewer than one batch of {batch}"
            )));
        }

        let mut observers: Vec<Observer> = vec![Observer::default(); outputs.len()];
        let mut plans: HashMap<Vec<Vec<usize>>, crate::runner::Plan> = HashMap::new();
        let progress = set.progress && std::io::stderr().is_terminal();
        let runs = samples / batch;
        for run in 0..runs {
            let (start, end) = (run * batch, (run + 1) * batch);
            let inputs: Vec<crate::ir::Array> = runner
                .input_names()
                .iter()
                .zip(&input_types)
                .map(|(name, ty)| {
                    let rows = set.rows(name, start, end);
                    match ty {
                        Some(t) if *t != rows.dtype() => rows.cast(*t),
                        _ => Ok(rows),
                    }
                })
                .collect::<Result<_>>()?;
            let key: Vec<Vec<usize>> = inputs.iter().map(|a| a.shape().to_vec()).collect();
            if !plans.contains_key(&key) {
                let refs: Vec<&crate::ir::Array> = inputs.iter().collect();
                plans.insert(key.clone(), runner.plan(&refs, Some(&outputs))?);
            }
            plans[&key].run_visit_f32(&inputs, |i, view| {
                observers[i].observe(view.iter().map(|&x| x as f64));
            })?;
            if progress {
                draw_progress(end, samples);
            }
        }
        if progress {
            eprintln!();
        }
        if runs * batch < samples {
            cx.remark(
                "<calibration>",
                format!(
                    "{} samples beyond the last full batch of {batch} were not used",
                    samples - runs * batch
                ),
            );
        }
        for (k, observer) in observers.into_iter().enumerate() {
            let v = observed[exposed[k]];
            model.graph.value_mut(v).stats = Some(Arc::new(observer));
            cx.report.rewritten += 1;
        }
        cx.report.matched = observed.len();
        cx.remark(
            "<calibration>",
            format!(
                "{} samples in {runs} runs of {batch}; {} values observed",
                runs * batch,
                exposed.len()
            ),
        );
        Ok(())
    }
}

fn draw_progress(done: usize, total: usize) {
    let width = 30;
    let filled = done * width / total.max(1);
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\rcalibrating [{}{}] {done}/{total}",
        "=".repeat(filled),
        " ".repeat(width - filled)
    );
    let _ = err.flush();
}
