//! Focused snapshot tests of the lowering rules: one small built graph per rule, positive and
//! negative. Each test runs the passes the rule needs first (calibration, the plan, earlier
//! lowerings) and then the pass under test, in one pipeline so that the manager checks phases
//! as a compilation would, and snapshots the text just before and just after the pass under
//! test with its report (matched/rewritten/skipped and remarks). The counts are asserted too,
//! so that a rule that stops firing (or starts firing) fails the test, not only the snapshot.
//! Positive cases also run the lowered model in tract against the float model.

mod convnets;
mod gelu;
mod gelu_to_relu;
mod integer_io;
mod layer_norm;
mod legalize;
mod linear;
mod requant;
mod residual;
mod smoothing;
mod softmax;
mod tables;

use std::collections::BTreeMap;

use intone::ir::quant::{QuantFacts, Scale};
use intone::ir::{Array, DataType, Model};
use intone::onnx::text::model_to_text;
use intone::pass::{CalibrationSet, CompileOptions, DumpAfter, Manager, PassReport, Pipeline};
use intone::passes::PASSES;
use intone::runner::Runner;

use crate::build::*;

/// The passes every lowering needs first: statistics, then the plan.
pub const PLANNED: &str = "calibrate,quantize";
/// The linear lowering after the plan: what the non-linear lowerings read.
pub const LINEAR: &str = "calibrate,quantize,lower-linear-to-integer";

/// The largest `|expected − got|` relative to the largest `|expected|` (at least 10⁻⁶).
pub fn relative_to_peak(expected: &Array, got: &Array) -> f64 {
    let (e, g) = (expected.to_f64_vec(), got.to_f64_vec());
    let peak = e.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-6);
    e.iter()
        .zip(&g)
        .map(|(a, b)| (a - b).abs() / peak)
        .fold(0.0, f64::max)
}

/// Deterministic pseudo-random test data, uniform in ±`amplitude`; `seed` varies it.
pub fn data(shape: &[usize], seed: u64, amplitude: f32) -> Array {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
            (r as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amplitude
        })
        .collect();
    Array::from_vec(shape, v).unwrap()
}

/// Options with calibration on the given samples (stacked along axis 0), in one batch.
pub fn calibrated(inputs: &[(&str, Array)]) -> CompileOptions {
    let inputs: BTreeMap<String, Array> = inputs
        .iter()
        .map(|(n, a)| (n.to_string(), a.clone()))
        .collect();
    let batch = inputs.values().map(|a| a.shape()[0]).max().unwrap_or(1);
    CompileOptions {
        calibration: Some(CalibrationSet {
            inputs,
            batch,
            method: Default::default(),
            progress: false,
        }),
        ..Default::default()
    }
}

/// One rule applied: the float model, the text of the model the pass under test read, what it
/// wrote, and its report.
pub struct Case {
    pub float: Model,
    pub before: String,
    pub after: Model,
    pub spec: String,
    pub report: PassReport,
    pub options: CompileOptions,
}

/// Runs `prep` (may be empty) and then `spec` (one pass) in one pipeline, so that the manager
/// checks the phases as a compilation would; `before` is the manager's own dump after the last
/// pass of `prep`, so it is exactly what `spec` read.
pub fn lower(model: Model, prep: &str, spec: &str, options: &CompileOptions) -> Case {
    let full = if prep.is_empty() {
        spec.to_string()
    } else {
        format!("{prep},{spec}")
    };
    let pipeline = Pipeline::parse(&full, PASSES).unwrap();
    let steps = pipeline.passes.len();
    let mut manager = Manager::new(&pipeline, PASSES).unwrap();
    assert!(manager.verify_each);
    let dumps = crate::tempdir();
    if steps > 1 {
        manager.dump_after = DumpAfter::Passes(vec![pipeline.passes[steps - 2].name.clone()]);
        manager.dump_dir = Some(dumps.path().to_path_buf());
    }
    let mut after = model.clone();
    let mut reports = manager.run(&mut after, options).unwrap();
    assert_eq!(reports.len(), steps);
    let before = if steps > 1 {
        // The last dump is the one just before `spec`.
        let mut files: Vec<_> = std::fs::read_dir(dumps.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        std::fs::read_to_string(files.last().expect("a dump before the pass")).unwrap()
    } else {
        model_to_text(&model).unwrap()
    };
    Case {
        float: model,
        before,
        after,
        spec: spec.to_string(),
        report: reports.pop().unwrap(),
        options: options.clone(),
    }
}

/// Runs `spec` (one pass) alone on a model prepared by hand (`float` is that model).
pub fn apply(model: Model, spec: &str, options: &CompileOptions) -> Case {
    lower(model, "", spec, options)
}

/// Runs a pipeline with the verifier on.
pub fn run(mut model: Model, spec: &str, options: &CompileOptions) -> (Model, Vec<PassReport>) {
    let pipeline = Pipeline::parse(spec, PASSES).unwrap();
    let manager = Manager::new(&pipeline, PASSES).unwrap();
    assert!(manager.verify_each);
    let reports = manager.run(&mut model, options).unwrap();
    (model, reports)
}

impl Case {
    /// (matched, rewritten, skipped) of the pass under test.
    pub fn counts(&self) -> (usize, usize, usize) {
        let r = &self.report;
        (r.matched, r.rewritten, r.skipped)
    }

    /// The remarks as `node: message` lines.
    pub fn remarks(&self) -> Vec<String> {
        self.report
            .remarks
            .iter()
            .map(|r| format!("{}: {}", r.node, r.message))
            .collect()
    }

    /// True when some remark contains `needle`.
    pub fn remarked(&self, needle: &str) -> bool {
        self.remarks().iter().any(|r| r.contains(needle))
    }

    /// Ops of a type after the pass (`"MatMul"`, or `"intone.Requant"` in another domain).
    pub fn after_count(&self, op_type: &str) -> usize {
        count(&self.after, op_type)
    }

    /// The snapshot: before and after the pass under test, and its report.
    pub fn snapshot(&self) -> String {
        let mut out = format!(
            "--- before\n{}--- after {}\n{}",
            self.before,
            self.spec,
            model_to_text(&self.after).unwrap()
        );
        let (m, w, s) = self.counts();
        out.push_str(&format!(
            "--- {}: matched {m}, rewritten {w}, skipped {s}\n",
            self.report.pass
        ));
        for remark in self.remarks() {
            out.push_str(&format!("  {remark}\n"));
        }
        out
    }

    /// Runs the float model and the lowered one (legalized first when it still holds
    /// internal ops) in tract, and requires every output within `tolerance` of the float
    /// output, relative to the float output's largest magnitude. Returns the worst error.
    pub fn assert_close(&self, inputs: &[Array], tolerance: f64) -> f64 {
        let lowered = if count(&self.after, "intone.*") > 0 {
            run(self.after.clone(), "legalize", &self.options).0
        } else {
            self.after.clone()
        };
        let expected = Runner::new(&self.float).unwrap().run(inputs, None).unwrap();
        let got = Runner::new(&lowered).unwrap().run(inputs, None).unwrap();
        assert_eq!(expected.len(), got.len());
        let mut worst = 0f64;
        for ((name, e), (_, g)) in expected.iter().zip(&got) {
            assert_eq!(
                e.shape(),
                g.shape(),
                "{}: output {name} changed shape",
                self.spec
            );
            let err = relative_to_peak(e, g);
            assert!(
                err <= tolerance,
                "{}: output {name} is {err:.4} (relative to its peak) from float",
                self.spec
            );
            worst = worst.max(err);
        }
        worst
    }
}

/// Ops of a type in a model; `"domain.*"` counts every op of a domain, `"domain.Type"` one.
pub fn count(model: &Model, op_type: &str) -> usize {
    let g = &model.graph;
    g.node_ids()
        .filter_map(|id| g.op(id))
        .filter(|op| match op_type.split_once('.') {
            Some((domain, "*")) => op.domain() == domain,
            Some((domain, t)) => op.domain() == domain && op.op_type() == t,
            None => op.domain().is_empty() && op.op_type() == op_type,
        })
        .count()
}

/// Requantization params as `intone.Requant` attributes.
pub fn requant_attrs(
    m: i64,
    shift: i64,
    lo: i64,
    hi: i64,
    to: DataType,
) -> Vec<intone::schema::AttributeProto> {
    vec![
        attr::ints("multiplier", &[m]),
        attr::ints("offset", &[0]),
        attr::ints("shift", &[shift]),
        attr::string("rounding", "half-up"),
        attr::int("zero_point", 0),
        attr::int("lo", lo),
        attr::int("hi", hi),
        attr::int("axis", 0),
        attr::int("to", to as i32 as i64),
    ]
}

/// Adds an `intone.Requant` node to a builder.
pub fn requant(
    b: ModelBuilder,
    input: &str,
    output: &str,
    attrs: Vec<intone::schema::AttributeProto>,
) -> ModelBuilder {
    let mut b = b.node_with("Requant", &[input], &[output], attrs);
    b.graph().node.last_mut().unwrap().domain = Some("intone".into());
    b
}

/// Sets the proven range of a value (as lowering would have).
pub fn prove(model: &mut Model, name: &str, range: (i64, i64)) {
    let v = model.graph.find_value(name).unwrap();
    model.graph.value_mut(v).quant = Some(QuantFacts {
        scale: Scale::PerTensor(1.0),
        bits: 32,
        signed: true,
        zero_point: 0,
        range: Some(range),
    });
}

/// `q` (int32, proven within ±1000) requantized by 3/4 into int32 clamped to
/// `[inner_lo, inner_hi]`, then by 5/8 into int8: a chain, with the ranges lowering proves.
pub fn chain(inner_lo: i64, inner_hi: i64) -> Model {
    let b = ModelBuilder::new(18).input("q", DataType::Int32, &[D::S("n"), D::N(2)]);
    let b = requant(
        b,
        "q",
        "r",
        requant_attrs(3, 2, inner_lo, inner_hi, DataType::Int32),
    );
    let b = requant(b, "r", "y", requant_attrs(5, 3, -127, 127, DataType::Int8));
    let mut model = b.output("y", DataType::Int8, &[D::S("n"), D::N(2)]).model();
    prove(&mut model, "q", (-1000, 1000));
    let r = ((-1000 * 3 + 2) >> 2).max(inner_lo).min(inner_hi);
    prove(&mut model, "r", (r, -r));
    model
}
