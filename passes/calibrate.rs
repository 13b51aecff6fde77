//! `calibrate`: runs the float model in tract on the calibration samples and records streaming
//! statistics (min, max, mean, and for percentile/MSE clipping an |x| histogram) on every float
//! value an op produces.
//!
//! An analysis, not a rewrite: the graph is unchanged; `Value::stats` is set.
//! Preconditions: `--calibrate NAME=FILE.npy` for every model input (samples along axis 0).
//! Memory is bounded: one batch of activations per worker (the batch shrinks to keep them
//! under a budget) plus a fixed-size observer per value, however many samples there are.
//! Two workers take fixed halves of the batches and merge in order, so results do not depend
//! on scheduling. I-ViT §3.2 (static activation scales).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::prelude::*;

use crate::ir::{Array, DataType, NodeKind};
use crate::ops::{Dim, GraphFacts};
use crate::quant::{CalibrationMethod, Observer};
use crate::runner::{Plan, Runner};
use crate::{Error, ops};

pub struct Calibrate;

/// Activations of one batch, per worker, must stay under this many bytes.
const MEMORY_BUDGET: usize = 1 << 30;

/// Workers; fixed (not the core count) so that the batch split, and thus the result, is the
/// same on every machine.
const WORKERS: usize = 2;

impl Pass for Calibrate {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        if let (None, Some(sigmas)) = (&cx.options.calibration, cx.options.data_free) {
            return estimate_without_data(model, cx, sigmas);
        }
        let set = cx.options.calibration.as_ref().ok_or_else(|| {
            Error::Usage("the calibrate pass needs calibration data: add --calibrate NAME=FILE.npy for each model input".into())
        })?;
        let facts = cx.facts(model)?;
        let observed = candidates(model, &facts)?;

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

        let samples = set.samples()?;
        let input_types = check_inputs(model, &runner, set, &facts)?;
        let sample_bytes = bytes_per_sample(
            model,
            set,
            &runner,
            &exposed.iter().map(|&i| observed[i]).collect::<Vec<_>>(),
        )?;
        let declared = declared_batch(model, &runner, &facts);
        let budget_batch = (MEMORY_BUDGET / sample_bytes.max(1)).max(1);
        let batch = declared.unwrap_or(set.batch.min(budget_batch)).max(1);
        if declared.is_none() && batch < set.batch {
            cx.remark(
                "<calibration>",
                format!(
                    "batch lowered from {} to {batch}: one sample's activations take {} MB",
                    set.batch,
                    sample_bytes >> 20
                ),
            );
        }
        let mut batch = batch;
        if declared.is_none() && samples < batch {
            cx.remark(
                "<calibration>",
                format!(
                    "{samples} samples, fewer than one batch of {batch}: one batch of {samples}"
                ),
            );
            batch = samples.max(1);
        }
        // Full batches go to the workers; the rest is one last, smaller batch. A model that
        // fixes its batch size gets that last batch filled up with repeats of its own samples
        // (extremes are unchanged; histograms weigh those samples more).
        let runs = samples / batch;
        let tail: Vec<usize> = match samples % batch {
            0 => Vec::new(),
            rest if declared.is_some() => {
                cx.remark(
                    "<calibration>",
                    format!(
                        "the model fixes its batch at {batch}: the last {rest} samples run in a batch filled up with repeats of them"
                    ),
                );
                (0..batch).map(|i| runs * batch + i % rest).collect()
            }
            rest => (runs * batch..runs * batch + rest).collect(),
        };
        let batch_inputs = |rows: &[usize]| -> Result<Vec<Array>> {
            runner
                .input_names()
                .iter()
                .zip(&input_types)
                .map(|(name, ty)| {
                    let rows = set.rows_at(name, rows);
                    match ty {
                        Some(t) if *t != rows.dtype() => rows.cast(*t),
                        _ => Ok(rows),
                    }
                })
                .collect()
        };
        let run_rows = |run: usize| -> Vec<usize> { (run * batch..(run + 1) * batch).collect() };
        let histogram = !matches!(set.method, CalibrationMethod::MinMax);
        let progress = set.progress && std::io::stderr().is_terminal();
        let done = AtomicUsize::new(0);
        // LayerNorm outputs keep per-channel statistics, for smooth-layer-norm.
        let per_channel: Vec<bool> = exposed
            .iter()
            .map(|&i| {
                let producer = model.graph.producer(observed[i]);
                producer.is_some_and(|op| op.is("LayerNormalization"))
            })
            .collect();
        let fresh = || -> Vec<Observer> {
            per_channel
                .iter()
                .map(|&c| {
                    if c {
                        Observer::per_channel(histogram)
                    } else {
                        Observer::new(histogram)
                    }
                })
                .collect()
        };
        let mut results: Vec<Result<Vec<Observer>>> = Vec::new();
        if runs > 0 {
            // Every full batch has the same shapes: one plan serves all workers.
            let first = batch_inputs(&run_rows(0))?;
            let plan = runner.plan(&first.iter().collect::<Vec<_>>(), Some(&outputs))?;
            let workers = WORKERS.min(runs);
            let chunk = runs.div_ceil(workers);
            results = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..workers)
                    .map(|w| {
                        let (plan, batch_inputs, done, run_rows) =
                            (&plan, &batch_inputs, &done, &run_rows);
                        let fresh = &fresh;
                        scope.spawn(move || -> Result<Vec<Observer>> {
                            let mut observers = fresh();
                            for run in w * chunk..((w + 1) * chunk).min(runs) {
                                observe_batch(
                                    plan,
                                    &batch_inputs(&run_rows(run))?,
                                    &mut observers,
                                )?;
                                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                                if progress {
                                    draw_progress(finished * batch, samples);
                                }
                            }
                            Ok(observers)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("calibration worker panicked"))
                    .collect()
            });
        }
        if !tail.is_empty() {
            let inputs = batch_inputs(&tail)?;
            let plan = runner.plan(&inputs.iter().collect::<Vec<_>>(), Some(&outputs))?;
            let mut observers = fresh();
            observe_batch(&plan, &inputs, &mut observers)?;
            results.push(Ok(observers));
            if progress {
                draw_progress(samples, samples);
            }
        }
        if progress {
            eprintln!();
        }
        let mut merged: Option<Vec<Observer>> = None;
        for r in results {
            let part = r?;
            match &mut merged {
                None => merged = Some(part),
                Some(all) => all.iter_mut().zip(&part).for_each(|(a, b)| a.merge(b)),
            }
        }
        let observers = merged.unwrap_or_default();
        for (k, observer) in observers.into_iter().enumerate() {
            // Values tract did not give as f32 saw nothing.
            if observer.count == 0 {
                continue;
            }
            let v = observed[exposed[k]];
            model.graph.value_mut(v).stats = Some(Arc::new(observer));
            cx.report.rewritten += 1;
        }
        cx.report.matched = observed.len();
        let last = match samples % batch {
            0 => String::new(),
            rest => format!(" and one of {rest}"),
        };
        cx.remark(
            "<calibration>",
            format!(
                "{samples} samples observed, in {runs} batch{} of {batch}{last}; {} values observed",
                if runs == 1 { "" } else { "es" },
                cx.report.rewritten
            ),
        );
        cx.report.samples = Some(samples);
        Ok(())
    }
}

/// Float graph inputs and every non-constant op result that is float, or of a type intone
/// does not infer (tract knows, and only f32 results are observed).
fn candidates(model: &Model, facts: &GraphFacts) -> Result<Vec<ValueId>> {
    let g = &model.graph;
    let mut observed: Vec<ValueId> = g
        .inputs()
        .iter()
        .filter(|&&id| matches!(g.node(id).kind, NodeKind::Input(_)))
        .map(|&id| ValueId { node: id, slot: 0 })
        .filter(|&v| facts.get(v).and_then(|f| f.dtype) == Some(DataType::Float))
        .collect();
    for id in g.topological_order()? {
        for v in g.outputs_of(id) {
            let f = facts.get(v);
            let constant = f.is_some_and(|f| f.value.is_some()) || g.constant(v).is_some();
            let dtype = f.and_then(|f| f.dtype);
            if !constant && matches!(dtype, Some(DataType::Float) | None) {
                observed.push(v);
            }
        }
    }
    Ok(observed)
}

/// Checks the calibration inputs against the model's; returns the declared input types.
fn check_inputs(
    model: &Model,
    runner: &Runner,
    set: &crate::pass::CalibrationSet,
    facts: &GraphFacts,
) -> Result<Vec<Option<DataType>>> {
    for name in set.inputs.keys() {
        if !runner.input_names().contains(name) {
            let known: Vec<&str> = runner.input_names().iter().map(String::as_str).collect();
            return Err(Error::Usage(format!(
                "--calibrate {name}: the model has no input of that name{}",
                crate::error::suggestion(name, &known)
            )));
        }
    }
    runner
        .input_names()
        .iter()
        .map(|name| {
            if !set.inputs.contains_key(name) {
                return Err(Error::Usage(format!("calibration: no data for model input '{name}' (add --calibrate {name}=FILE.npy)")));
            }
            let v = model.graph.find_value(name).expect("graph input");
            Ok(facts.get(v).and_then(|f| f.dtype))
        })
        .collect()
}

/// The batch a model with a fixed first dimension must be run with.
fn declared_batch(model: &Model, runner: &Runner, facts: &GraphFacts) -> Option<usize> {
    runner.input_names().iter().find_map(|name| {
        let v = model.graph.find_value(name)?;
        match facts.get(v)?.shape.as_ref()?.first()? {
            Dim::Known(d) if *d > 0 => Some(*d as usize),
            _ => None,
        }
    })
}

/// Bytes of the observed values for one sample: shapes inferred with the inputs pinned to a
/// single sample (values of unknown size count as one row of their known part).
fn bytes_per_sample(
    model: &Model,
    set: &crate::pass::CalibrationSet,
    runner: &Runner,
    values: &[ValueId],
) -> Result<usize> {
    let mut pins = std::collections::BTreeMap::new();
    for name in runner.input_names() {
        let mut shape: Vec<i64> = set.inputs[name].shape().iter().map(|&d| d as i64).collect();
        if let Some(d) = shape.first_mut() {
            *d = 1;
        }
        pins.insert(name.clone(), shape);
    }
    // Pinning fails when a model fixes another batch size; then only the budget's default holds.
    let Ok(facts) = ops::analyze(model, &pins, crate::ops::EVALUATION_LIMIT) else {
        return Ok(1);
    };
    Ok(values
        .iter()
        .filter_map(|&v| facts.get(v).and_then(|f| f.element_count()))
        .map(|n| n * 4)
        .sum())
}

/// Runs one batch and folds every f32 output into its observer.
fn observe_batch(plan: &Plan, inputs: &[Array], observers: &mut [Observer]) -> Result<()> {
    plan.run_visit_f32(inputs, |i, view| {
        let channels = view.shape().last().copied().unwrap_or(0);
        match view.as_slice() {
            Some(values) => observers[i].observe_rows(values, channels),
            None => {
                observers[i].observe_rows(&view.iter().copied().collect::<Vec<f32>>(), channels)
            }
        }
    })
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

/// `--data-free`: statistics from the model's own normalization parameters (`ops::moments`).
fn estimate_without_data(model: &mut Model, cx: &mut PassContext, sigmas: f64) -> Result<()> {
    let facts = cx.facts(model)?;
    let ops::moments::Estimate { stats, missing } = ops::moments::estimate(model, &facts, sigmas)?;
    for (v, stats) in stats {
        model.graph.value_mut(v).stats = Some(Arc::new(stats));
        cx.report.rewritten += 1;
    }
    cx.report.matched = cx.report.rewritten;
    if !missing.is_empty() {
        cx.remark(
            "<data-free>",
            format!(
                "no data-free rule for {}: their values (and what only they feed) get no statistics",
                missing.join(", ")
            ),
        );
    }
    cx.report.samples = Some(0);
    Ok(())
}
