//! Runs a pipeline: builds each pass from the registry, runs it, optionally verifies the IR
//! after it, dumps the text form, and stops after a named pass for bisecting.

use std::path::PathBuf;
use std::time::Instant;

use super::pipeline::{PassInfo, Pipeline, lookup};
use super::{CompileOptions, Pass, PassContext, PassReport, Phase, Phases};
use crate::ir::Model;
use crate::ir::verify::{IoSignature, verify};
use crate::onnx::text::model_to_text;
use crate::{Error, Result};

/// Which passes to dump the text form after.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum DumpAfter {
    #[default]
    Nothing,
    All,
    Passes(Vec<String>),
}

pub struct Manager {
    steps: Vec<Step>,
    /// Run the verifier after every pass (tests always do; cheap enough to leave on).
    pub verify_each: bool,
    pub dump_after: DumpAfter,
    /// Where dumps go (`NN-pass.after.txt`); stderr when unset.
    pub dump_dir: Option<PathBuf>,
    /// Stop after this pass (it runs, later ones do not).
    pub stop_after: Option<String>,
}

struct Step {
    name: String,
    pass: Box<dyn Pass>,
    phases: Phases,
}

impl Manager {
    /// Builds every pass of the pipeline; fails on bad options before anything runs.
    pub fn new(pipeline: &Pipeline, registry: &[PassInfo]) -> Result<Manager> {
        let steps = pipeline
            .passes
            .iter()
            .map(|spec| {
                let info = lookup(registry, &spec.name)
                    .ok_or_else(|| Error::Usage(format!("unknown pass '{}'", spec.name)))?;
                Ok(Step {
                    name: spec.name.clone(),
                    pass: info.instantiate(&spec.options)?,
                    phases: info.phases,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Manager {
            steps,
            verify_each: true,
            dump_after: DumpAfter::Nothing,
            dump_dir: None,
            stop_after: None,
        })
    }

    /// Runs the passes in order and returns what each did.
    pub fn run(&self, model: &mut Model, options: &CompileOptions) -> Result<Vec<PassReport>> {
        for name in self.dump_names().iter().chain(self.stop_after.iter()) {
            if !self.steps.iter().any(|s| &s.name == name) {
                let names: Vec<&str> = self.steps.iter().map(|s| s.name.as_str()).collect();
                return Err(Error::Usage(format!(
                    "pass '{name}' is not in the pipeline{}",
                    crate::error::suggestion(name, &names)
                )));
            }
        }
        self.check_phases(Phase::of(model))?;
        // `none` is an exact round trip: declarations are left as written.
        if !self.steps.is_empty() || !options.input_shapes.is_empty() {
            crate::ops::pin_input_shapes(model, &options.input_shapes)?;
        }
        let signature = IoSignature::of(&model.graph);
        let mut reports = Vec::new();
        if self.dump_after == DumpAfter::All {
            self.dump(model, 0, "input")?;
        }
        let mut facts = super::FactsCache::default();
        let mut phase = Phase::of(model);
        for (i, step) in self.steps.iter().enumerate() {
            let mut cx = PassContext::new(&step.name, options);
            cx.facts = std::mem::take(&mut facts);
            cx.report.nodes_before = model.graph.node_count();
            let start = Instant::now();
            step.pass.run(model, &mut cx)?;
            cx.report.duration = start.elapsed();
            facts = std::mem::take(&mut cx.facts);
            cx.report.nodes_after = model.graph.node_count();
            phase = step.phases.after(phase);
            if self.verify_each {
                let mut problems = verify(&model.graph, Some(&signature));
                problems.extend(phase_problems(model, phase));
                if !problems.is_empty() {
                    return Err(Error::Verify {
                        after: Some(step.name.clone()),
                        message: problems.join("; "),
                    });
                }
            }
            if self.should_dump(&step.name) {
                self.dump(model, i + 1, &step.name)?;
            }
            reports.push(cx.report);
            model.phase = Some(phase);
            if self.stop_after.as_deref() == Some(step.name.as_str()) {
                break;
            }
        }
        Ok(reports)
    }

    /// Walks the pipeline's phases from `start` before anything runs: a pass on a model in a
    /// phase it does not accept is an error naming what must run first.
    fn check_phases(&self, start: Phase) -> Result<()> {
        let mut phase = start;
        for step in &self.steps {
            if !step.phases.accepts(phase) {
                let accepted: Vec<&str> = step.phases.runs_on.iter().map(|p| p.name()).collect();
                return Err(Error::Usage(format!(
                    "pass {} runs on {} models, and the model is {phase} there: it needs {}",
                    step.name,
                    accepted.join(" or "),
                    step.phases.needs
                )));
            }
            phase = step.phases.after(phase);
        }
        Ok(())
    }

    fn dump_names(&self) -> Vec<String> {
        match &self.dump_after {
            DumpAfter::Passes(names) => names.clone(),
            _ => Vec::new(),
        }
    }

    fn should_dump(&self, pass: &str) -> bool {
        match &self.dump_after {
            DumpAfter::Nothing => false,
            DumpAfter::All => true,
            DumpAfter::Passes(names) => names.iter().any(|n| n == pass),
        }
    }

    fn dump(&self, model: &Model, index: usize, pass: &str) -> Result<()> {
        let text = model_to_text(model)?;
        match &self.dump_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                let path = dir.join(format!("{index:02}-{pass}.after.txt"));
                std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
            }
            None => {
                eprintln!("=== {index:02} after {pass} ===\n{text}");
                Ok(())
            }
        }
    }
}

/// What the phase promises beyond structure: a legal model holds no intone op.
fn phase_problems(model: &Model, phase: Phase) -> Vec<String> {
    if phase != Phase::Legal {
        return Vec::new();
    }
    let g = &model.graph;
    g.node_ids()
        .filter(|&id| {
            g.op(id)
                .is_some_and(|op| op.domain() == crate::ops::intone::DOMAIN)
        })
        .map(|id| format!("{} is left in a legal model", g.describe(id)))
        .collect()
}
