//! `measure-sensitivity`: with `--sensitivity`, the output noise that quantizing each planned
//! weight alone causes (replaced by its planned expansion: terms, grid, kept channels; the rest
//! of the model float), measured on calibration samples (`runner::sensitivity`), ranked in the
//! report. The noise is `Σ‖y' − y‖² / Σ‖y‖²` over the float outputs; its inverse in decibels
//! is the output SQNR. Activations are measured after the compilation, on the integer
//! representations it chose (the CLI, `runner::sensitivity::represented_values`): their plans
//! here do not say which values an integer form will hold.
//!
//! An analysis: the graph is unchanged. Without `--sensitivity` it does nothing, so compile
//! time is unchanged.

use super::prelude::*;

use crate::ir::Array;
use crate::ir::quant::Granularity;
use crate::lower::residual::expand_weight;
use crate::pass::SensitivityReport;
use crate::runner::sensitivity::{Perturbation, Probe, measure, sqnr_db};

pub struct MeasureSensitivity;

impl Pass for MeasureSensitivity {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let Some(samples) = cx.options.sensitivity else {
            return Ok(());
        };
        let Some(set) = cx.options.calibration.clone() else {
            return Err(crate::Error::Usage(
                "--sensitivity measures on calibration samples: add --calibrate NAME=FILE.npy"
                    .into(),
            ));
        };
        let g = &model.graph;
        let mut sites = Vec::new();
        let mut rows = Vec::new();
        // Graph inputs and weights first (in file order), then the ops' outputs.
        let mut sources: Vec<NodeId> = g.node_ids().filter(|&id| g.op(id).is_none()).collect();
        sources.sort_by_key(|&id| g.order(id));
        for id in sources.into_iter().chain(g.topological_order()?) {
            for v in g.outputs_of(id).collect::<Vec<_>>() {
                let value = g.value(v);
                if let (Some(plan), Some(t)) = (&value.weight_plan, g.constant(v)) {
                    let (Granularity::PerChannel { axis }, None, Ok(Array::F32(w))) =
                        (&plan.granularity, plan.ensemble_branch, t.decode())
                    else {
                        continue;
                    };
                    let e = expand_weight(
                        &w,
                        *axis,
                        plan.magnitude,
                        plan.terms as usize,
                        plan.residual_channels.as_deref(),
                    );
                    sites.push(Perturbation::Weight {
                        value: v,
                        replacement: Array::F32(e.approximation().mapv(|x| x as f32)),
                    });
                    let readers: Vec<String> =
                        g.uses(v).iter().map(|u| g.describe(u.node)).collect();
                    rows.push(SensitivityReport {
                        value: g.value_name(v).to_string(),
                        node: readers.join(", "),
                        kind: "weight".into(),
                        // The bits of the grid ±m: ⌈log2(2m + 1)⌉.
                        bits: u64::BITS - (2 * plan.magnitude.max(1) as u64).leading_zeros(),
                        terms: plan.terms,
                        ..Default::default()
                    });
                }
            }
        }
        let probe = Probe {
            set: &set,
            samples,
            objective: &cx.options.objective,
            context: &[],
        };
        let measured = measure(model, probe, &sites, true)?;
        cx.report.matched = sites.len();
        cx.report.samples = Some(measured.samples);
        let mut report: Vec<SensitivityReport> = rows
            .into_iter()
            .zip(&measured.alone)
            .filter_map(|(row, noise)| {
                noise.map(|n| SensitivityReport {
                    output_noise: n,
                    output_sqnr_db: sqnr_db(n),
                    ..row
                })
            })
            .collect();
        report.sort_by(|a, b| {
            b.output_noise
                .total_cmp(&a.output_noise)
                .then_with(|| a.value.cmp(&b.value))
        });
        cx.remark(
            "<sensitivity>",
            format!(
                "{} weights quantized one at a time on {} samples; all of them at once: output noise {:.3e} ({:.1} dB SQNR)",
                report.len(),
                measured.samples,
                measured.together,
                sqnr_db(measured.together).unwrap_or(f64::INFINITY)
            ),
        );
        cx.report.sensitivity = report;
        Ok(())
    }
}
