//! Pass infrastructure.
//!
//! - [`Pass`]: one transformation of a [`Model`], declared once in `passes/mod.rs`.
//! - [`pattern`]: pure matching on `&Model`, rewriting through one [`Rewriter`], applied greedily
//!   to a fixpoint with a round cap.
//! - [`pipeline`]: the `a,b(k=v),c` pipeline language, with spans and "did you mean".
//! - [`phase`]: Float → Planned → Lowered → Legal; passes declare theirs, the manager checks.
//! - [`manager`]: runs a pipeline, checking phases, verifying, dumping and stopping where asked.
//!
//! Passes explain themselves through [`Remark`]s: why a candidate did not fire, or what a pass
//! decided. The manager collects them, with counts, into a [`PassReport`] per pass.

pub mod calibration;
pub mod manager;
pub mod matcher;
pub mod pattern;
pub mod phase;
pub mod pipeline;
pub(crate) mod rewriter;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use calibration::CalibrationSet;
pub use manager::{DumpAfter, Manager};
pub use pattern::{Match, Pattern, Roots, apply_greedily};
pub use phase::{Phase, Phases};
pub use pipeline::{
    OptionInfo, PassInfo, PassOptions, PassSpec, Pipeline, Preset, Stage, StageKind,
};
pub use rewriter::Rewriter;

use crate::Result;
use crate::ir::Model;
use crate::ops::GraphFacts;

/// A transformation of a model.
pub trait Pass {
    /// Runs the pass. Counts and remarks go into `cx`.
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()>;
}

/// Settings that apply to the whole compilation, read by the passes that need them.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Static shapes for graph inputs (`--input-shape name=1x3x224x224`), used to fold shape
    /// arithmetic.
    pub input_shapes: BTreeMap<String, Vec<i64>>,
    /// Calibration data for the `calibrate` pass.
    pub calibration: Option<crate::pass::CalibrationSet>,
    /// Range analysis assumes symbolic dimensions (sequence length) are at most this.
    pub symbolic_dim_bound: i64,
    /// Rounding of every requantization the lowerings emit (`--rounding`): one policy for the
    /// whole model.
    pub rounding: crate::quant::Rounding,
    /// Which integer matmul kernels the model must be exact on (`--matmul-operands`); the
    /// lowerings pick operand grids from it and the range proof enforces it.
    pub matmul_operands: crate::ops::matmul_kernels::MatmulOperands,
    /// Which weight matmuls take a 16-bit activation as two 8-bit terms (`--wide-operands`).
    pub wide_operands: crate::quant::WideOperands,
    /// Bits of attention probabilities (Softmax outputs into an activation × activation
    /// matmul; `--probability-bits`): more than 8 enter as two 8-bit terms, at most what int32
    /// holds at the matmul's inner size.
    pub probability_bits: u32,
    /// Residual expansion of the weights (`--weight-bits`, `--residual-order`,
    /// `--residual-sparsity`), read by `split-residual-groups` where its options are not given.
    pub weight_expansion: crate::quant::WeightExpansion,
    /// Without calibration data: activation statistics estimated from the model itself, with
    /// this many standard deviations of spread (`--data-free`, `ops::moments`).
    pub data_free: Option<f64>,
    /// Measure each planned value's output noise on this many calibration samples
    /// (`--sensitivity`, `measure-sensitivity`).
    pub sensitivity: Option<usize>,
    /// The graph outputs measured sensitivity is judged at (every float output when empty):
    /// `--objective`.
    pub objective: Vec<String>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            input_shapes: BTreeMap::new(),
            calibration: None,
            symbolic_dim_bound: 4096,
            rounding: crate::quant::Rounding::HalfUp,
            matmul_operands: Default::default(),
            wide_operands: Default::default(),
            probability_bits: 16,
            weight_expansion: Default::default(),
            data_free: None,
            sensitivity: None,
            objective: Vec::new(),
        }
    }
}

/// What a running pass can read and where it reports.
#[derive(Debug)]
pub struct PassContext<'a> {
    pub options: &'a CompileOptions,
    pub report: PassReport,
    /// Facts of the model, handed from pass to pass by the manager.
    pub(crate) facts: FactsCache,
}

/// The facts of a model, valid until its graph or opset changes (every mutation bumps the
/// graph's revision, so a rewrite invalidates them).
#[derive(Debug, Default)]
pub struct FactsCache {
    key: Option<(u64, Option<i64>)>,
    facts: Option<Arc<GraphFacts>>,
}

impl FactsCache {
    fn get(&mut self, model: &Model, options: &CompileOptions) -> Result<Arc<GraphFacts>> {
        let key = (model.graph.revision(), model.opset(""));
        if let (Some(k), Some(f)) = (self.key, &self.facts) {
            if k == key {
                return Ok(f.clone());
            }
        }
        let facts = Arc::new(crate::ops::analyze(
            model,
            &options.input_shapes,
            crate::ops::EVALUATION_LIMIT,
        )?);
        self.key = Some(key);
        self.facts = Some(facts.clone());
        Ok(facts)
    }
}

impl<'a> PassContext<'a> {
    pub fn new(pass: &str, options: &'a CompileOptions) -> PassContext<'a> {
        PassContext {
            options,
            report: PassReport {
                pass: pass.to_string(),
                ..Default::default()
            },
            facts: FactsCache::default(),
        }
    }

    /// Types, shapes and known values of every value of `model` (`--input-shape` applied),
    /// computed once per state of the graph.
    pub fn facts(&mut self, model: &Model) -> Result<Arc<GraphFacts>> {
        self.facts.get(model, self.options)
    }

    /// Records why a candidate did not fire, or another decision worth explaining.
    pub fn remark(&mut self, node: impl Into<String>, message: impl Into<String>) {
        let remark = Remark {
            node: node.into(),
            message: message.into(),
        };
        if !self.report.remarks.contains(&remark) {
            self.report.remarks.push(remark);
        }
    }
}

/// A note from a pass about one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Remark {
    /// The node concerned, as `node 'name' (Op)`.
    pub node: String,
    pub message: String,
}

/// What one pass did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PassReport {
    pub pass: String,
    /// Candidates the pattern matched.
    pub matched: usize,
    /// Rewrites applied.
    pub rewritten: usize,
    /// Candidates looked at and left alone (each with a remark).
    pub skipped: usize,
    pub remarks: Vec<Remark>,
    /// Node count before and after.
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// Wall time; reported separately (`--timings`) so that reports stay reproducible.
    #[serde(skip)]
    pub duration: Duration,
    /// Samples the pass observed (the `calibrate` pass): every one it was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
    /// Values the pass quantized, with the decision for each (the `quantize` pass).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<ValueReport>,
    /// Weights the pass expanded, with the error of each (`split-residual-groups`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<WeightReport>,
    /// Values ranked by the output noise quantizing each alone causes (`measure-sensitivity`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sensitivity: Vec<SensitivityReport>,
}

/// The output noise of quantizing one value alone, as planned (`--sensitivity`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SensitivityReport {
    pub value: String,
    /// The node that produces it (an activation) or the nodes that read it (a weight).
    pub node: String,
    /// `activation` or `weight`.
    pub kind: String,
    /// Bits of its grid.
    pub bits: u32,
    /// A weight's residual terms (0 for an activation).
    #[serde(skip_serializing_if = "is_zero")]
    pub terms: u32,
    /// `Σ‖y' − y‖² / Σ‖y‖²` over the float outputs and the samples.
    pub output_noise: f64,
    /// `−10·log10(output_noise)`; absent when the value is exact on its grid.
    pub output_sqnr_db: Option<f64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A quantization decision about one value.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ValueReport {
    pub value: String,
    pub bits: u32,
    pub signed: bool,
    pub scale: f64,
    /// The clipping interval the scale covers.
    pub clip: (f64, f64),
    /// The range seen during calibration.
    pub observed: (f64, f64),
    pub why: String,
}

/// A weight's residual expansion: its terms, their cost and their error against the bound.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WeightReport {
    pub weight: String,
    /// The node that multiplies by it.
    pub node: String,
    /// Bits of each term and the grid `[−magnitude, magnitude]` they use.
    pub bits: u32,
    pub magnitude: i64,
    pub terms: u32,
    pub channels: usize,
    /// Channels that carry the terms ≥ 2.
    pub residual_channels: usize,
    /// Integer matmul work in b-bit layers of this weight's size: `1 + (K−1)·kept/C`.
    pub cost: f64,
    /// Elements of the weight, and multiply-accumulates of its layer per sample for one term
    /// (symbolic dimensions count 1).
    pub parameters: usize,
    pub macs: u64,
    /// The stated bound of `|W − Ŵ|` (largest over channels) and the realized largest error.
    pub bound: f64,
    pub max_error: f64,
    /// `‖W − Ŵ‖₂ / ‖W‖₂`.
    pub relative_error: f64,
    /// `[j, M]`: branch j of an ensemble of M (its bound and error are the branches' mean's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ensemble_branch: Option<(u32, u32)>,
    /// The model's output noise, relative to its power, when this weight alone is one b-bit
    /// term (measured on calibration samples for `--residual-budget`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_noise: Option<f64>,
    pub why: String,
}
