//! The command line: argument parsing and the commands. Errors become one line on stderr and
//! exit code 2; a failed check exits with 1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use serde::Serialize;

use intone::ir::{Array, Model};
use intone::pass::{CompileOptions, DumpAfter, Manager, PassReport, Pipeline};
use intone::passes::{PASSES, PRESETS};

#[derive(Parser)]
#[command(
    name = "intone",
    version,
    about = "Compile float ONNX models into integer-only ONNX models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile a model through a pipeline of passes and write the result.
    Compile(Box<CompileArgs>),
    /// Print the readable text form of a model (the form every snapshot test uses).
    Dump {
        /// The model to print.
        model: PathBuf,
        /// Annotate every value with its inferred element type and shape.
        #[arg(long)]
        types: bool,
        /// Pin a graph input's shape for the inferred types, e.g. `pixels=1x3x224x224`.
        #[arg(long = "input-shape", value_name = "NAME=DIMS")]
        input_shapes: Vec<String>,
    },
    /// List the passes and the named pipelines.
    Passes,
    /// Run a model in tract and print (and optionally save) its outputs.
    Run(RunArgs),
    /// Compare a compiled model with its float original on the same inputs.
    Check(CheckArgs),
    /// Time models in tract on the same inputs, interleaved in one process.
    Bench(BenchArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// The models to time; ratios are to the first one (the float original, say).
    #[arg(required = true)]
    models: Vec<PathBuf>,
    /// A model input as NAME=FILE.npy (repeat for each input); every model reads the same.
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// Rounds; each round runs every model once, in turn, so drift hits all of them alike.
    #[arg(long, value_name = "N", default_value_t = 30)]
    repeat: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The reference (float) model.
    reference: PathBuf,
    /// The candidate (compiled) model.
    candidate: PathBuf,
    /// A model input as NAME=FILE.npy (repeat for each input).
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// Also compare every intermediate value the candidate maps back to the reference, in
    /// graph order, and point at the first one that diverges.
    #[arg(long)]
    per_layer: bool,
    /// Print the comparison as JSON.
    #[arg(long)]
    json: bool,
    /// Fail (exit 1) when an output's cosine similarity is below this; with --per-layer it
    /// also marks the first layer below it (default 0.99).
    #[arg(long = "min-cosine", value_name = "X")]
    min_cosine: Option<f64>,
    /// Fail (exit 1) when the top-1 agreement of a 2-D output (logits) is below this.
    #[arg(long = "min-top1", value_name = "X")]
    min_top1: Option<f64>,
}

#[derive(clap::Args)]
struct CompileArgs {
    /// The float ONNX model to compile.
    input: PathBuf,
    /// Where to write the compiled model (written atomically; must differ from the input).
    #[arg(short, long)]
    output: PathBuf,
    /// A named pipeline (see `intone passes`); `none` is an exact round trip. Default: cleanup.
    #[arg(long, conflicts_with = "passes")]
    pipeline: Option<String>,
    /// An explicit pass list, e.g. `eliminate-identity,fold-constants(max-elements=4096)`.
    #[arg(long)]
    passes: Option<String>,
    /// Pin a graph input's shape, e.g. `pixels=1x3x224x224`, so shape arithmetic can fold.
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    input_shapes: Vec<String>,
    /// Calibration samples for a model input, stacked along the first axis (repeat per input).
    #[arg(long = "calibrate", value_name = "NAME=FILE.npy")]
    calibrate: Vec<String>,
    /// Samples per calibration run.
    #[arg(long = "calibration-batch", value_name = "N", default_value_t = 32)]
    calibration_batch: usize,
    /// How activation clip ranges are chosen: minmax, percentile (99.99), percentile=P, or mse.
    #[arg(
        long = "calibration-method",
        value_name = "METHOD",
        default_value = "minmax"
    )]
    calibration_method: String,
    /// Range analysis assumes symbolic dimensions (sequence lengths) are at most this.
    #[arg(long = "max-dim", value_name = "N", default_value_t = 4096)]
    max_dim: i64,
    /// Rounding of every requantization: half-up (I-ViT), floor or half-even.
    #[arg(long, value_name = "MODE", default_value = "half-up")]
    rounding: String,
    /// Integer matmul operands: `portable` (weights u8×s8 on the 7-bit grid ±64, attention
    /// u8×u8: exact on every CPU), `u8u8` (u8×u8 everywhere, full 8-bit grid: exact on every
    /// CPU, slower kernels) or `vnni` (u8×s8, full int8 grid: exact only on CPUs with
    /// VNNI/AMX or ARM64 dot products; onnxruntime saturates it on AVX2-only x86 CPUs).
    #[arg(
        long = "matmul-operands",
        value_name = "FORM",
        default_value = "portable"
    )]
    matmul_operands: String,
    /// Integer matmuls whose activation gets 16 bits, entering as two 8-bit terms
    /// (`x = 256·hi + lo`, two integer matmuls on the same weights): `none`, `auto[=DB]` (the
    /// matmuls whose output its 8-bit rounding alone would leave below DB decibels of
    /// signal-to-noise, estimated from calibration and the weights; 38 by default; the report
    /// gives each activation's estimate), `budget=F` (the matmuls with the fewest MACs first,
    /// while the extra MACs stay within the fraction F of the model's), `measured=F` (the
    /// activations whose 8-bit rounding alone costs the model's output the most noise per extra
    /// MAC, measured on calibration samples at --objective, within the same budget) or `all` (every
    /// Conv/MatMul/Gemm with a constant weight). Depthwise Convs always read 16 bits (they are
    /// int32 tap sums, not integer matmuls).
    #[arg(long = "wide-operands", value_name = "WHICH", default_value = "none")]
    wide_operands: String,
    /// Bits of attention probabilities (Softmax outputs into an activation × activation
    /// MatMul), 8..=16: above 8 they enter the matmul as two 8-bit terms, with at most the
    /// bits int32 holds at its inner size (15 at 257 tokens; a symbolic length counts as
    /// --max-dim).
    #[arg(long = "probability-bits", value_name = "B", default_value_t = 16)]
    probability_bits: u32,
    /// Bits of every weight term, 2..=8 (2 is ternary; terms are stored as int8).
    #[arg(long = "weight-bits", value_name = "B", default_value_t = 8)]
    weight_bits: u32,
    /// Residual terms per weight, `W ≈ Σ_k λ_k·q_k` (REx/PIPE): each further term quantizes
    /// what the previous ones left, aligned exactly in int32; a layer gets fewer where the
    /// sum could overflow (the report says so).
    #[arg(long = "residual-order", value_name = "K", default_value_t = 1)]
    residual_order: u32,
    /// Fraction of each layer's output channels that drop their terms ≥ 2 (those with the
    /// smallest residual), so the residual matmuls cost `(K−1)(1−G)` layers.
    #[arg(long = "residual-sparsity", value_name = "G", default_value_t = 0.0)]
    residual_sparsity: f64,
    /// Instead of one sparsity for every layer: the terms ≥ 2 get this fraction of the MACs
    /// they would cost on every channel, spent across the model on the channels whose residual
    /// adds the most output noise per MAC (from calibration, else relative to the weight).
    #[arg(
        long = "residual-budget",
        value_name = "F",
        conflicts_with = "residual_sparsity"
    )]
    residual_budget: Option<f64>,
    /// How --residual-budget ranks channels: `output` (measured: the output noise one layer at
    /// single-term weights adds to the rounding of the matmul inputs, on up to 16 calibration
    /// samples, shared among its channels by residual norm; `layer` without calibration data)
    /// or `layer` (the noise each layer's residual leaves in its own output).
    #[arg(long = "budget-by", value_name = "RANK", requires = "residual_budget")]
    budget_by: Option<String>,
    /// Run M copies of the network, each with single-term b-bit weights that add up to the
    /// weight on a grid M times finer, and average their outputs: independent branches that
    /// onnxruntime's parallel executor or M cores run at once (PIPE's ensemble).
    #[arg(long = "ensemble", value_name = "M", default_value_t = 1)]
    ensemble: u32,
    /// Compile without calibration data: activation ranges from the model's own BatchNorm
    /// statistics (β ± σ·|γ| before folding) and LayerNorm parameters, propagated through the
    /// graph as per-channel Gaussian moments; inputs taken as standard normal.
    #[arg(long = "data-free", conflicts_with = "calibrate")]
    data_free: bool,
    /// Standard deviations of spread each data-free range covers.
    #[arg(long = "data-free-sigmas", value_name = "N", default_value_t = 6.0)]
    data_free_sigmas: f64,
    /// 8-bit terms of every weight matmul's activation: 2 is `--wide-operands all` (a 16-bit
    /// activation as `256·hi + lo`) unless --wide-operands chooses the matmuls.
    #[arg(long = "activation-order", value_name = "A", default_value_t = 1)]
    activation_order: u32,
    /// Measure, on N calibration samples (8 if not given), the output noise quantizing each
    /// planned value alone causes, and rank them (the report's `sensitivity`; the ten worst are
    /// printed). Runs the float model once per value.
    #[arg(
        long,
        value_name = "N",
        num_args = 0..=1,
        default_missing_value = "8",
        requires = "calibrate"
    )]
    sensitivity: Option<usize>,
    /// The graph output (repeatable) that --sensitivity and the measured --residual-budget
    /// judge the noise at, e.g. the embedding a task reads; every float output by default.
    #[arg(long, value_name = "OUTPUT")]
    objective: Vec<String>,
    /// Write a machine-readable JSON report of the compilation to this file.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Add wall-clock timings per stage to the report (they differ between runs, so the
    /// report is reproducible only without them).
    #[arg(long)]
    timings: bool,
    /// Skip the IR verifier between passes (it runs after every pass by default).
    #[arg(long)]
    no_verify: bool,
    /// Print the text form after this pass (repeatable), or after every pass with `all`.
    #[arg(long = "dump-after", value_name = "PASS|all")]
    dump_after: Vec<String>,
    /// Write dumps as numbered files into this directory instead of stderr.
    #[arg(long = "dump-dir", value_name = "DIR")]
    dump_dir: Option<PathBuf>,
    /// Run the pipeline up to and including this pass, then write the result (for bisecting).
    #[arg(long = "stop-after", value_name = "PASS")]
    stop_after: Option<String>,
    /// Keep integer inputs and outputs (no input quantization or output dequantization in
    /// the model); their scales go into the metadata key `intone.io`.
    #[arg(long = "integer-io")]
    integer_io: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The model to run.
    model: PathBuf,
    /// A model input as NAME=FILE.npy (repeat for each input).
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// Compute this value instead of the graph outputs (repeatable; any value name).
    #[arg(long = "output", value_name = "NAME")]
    outputs: Vec<String>,
    /// Write each output to DIR/<output name>.npy.
    #[arg(long = "output-dir", value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Run N more times after the first and print the median time of one run (tract, one
    /// thread, the plan built once).
    #[arg(long, value_name = "N")]
    repeat: Option<usize>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// Writes to stdout; a reader that went away (`| head`) ends the program quietly.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(2);
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ").replace('\n', " ")
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Compile(args) => compile(*args),
        Command::Dump {
            model,
            types,
            input_shapes,
        } => {
            let model = intone::onnx::load(&model)?;
            let mut notes = std::collections::HashMap::new();
            if types {
                let mut pins = BTreeMap::new();
                for text in &input_shapes {
                    let (name, dims) = parse_input_shape(text)?;
                    pins.insert(name, dims);
                }
                let facts = intone::ops::analyze(&model, &pins, intone::ops::EVALUATION_LIMIT)?;
                for id in model.graph.node_ids() {
                    for v in model.graph.outputs_of(id) {
                        if let Some(f) = facts.get(v) {
                            notes.insert(model.graph.value_name(v).to_string(), f.to_string());
                        }
                    }
                }
            }
            print!(
                "{}",
                intone::onnx::text::model_to_text_annotated(&model, notes)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Passes => {
            list_passes();
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run_model(args),
        Command::Check(args) => check(args),
        Command::Bench(args) => bench(args),
    }
}

fn list_passes() {
    let mut text = String::from("passes:\n");
    for p in PASSES {
        let exact = if p.exact { "exact" } else { "approximate" };
        text.push_str(&format!("  {:<28} {} ({exact})\n", p.name, p.summary));
        for o in p.options {
            text.push_str(&format!(
                "  {:<28}   {}={}: {}\n",
                "", o.name, o.default, o.help
            ));
        }
    }
    text.push_str("pipelines (--pipeline NAME):\n");
    for p in PRESETS {
        text.push_str(&format!("  {:<28} {}\n", p.name, p.summary));
        for stage in p.stages {
            text.push_str(&format!(
                "  {:<28}   {:<12} {}\n",
                "",
                stage.kind.name(),
                stage.passes
            ));
        }
    }
    emit(&text);
}

/// `name=1x3x224x224` → (name, dims).
fn parse_input_shape(text: &str) -> Result<(String, Vec<i64>)> {
    let (name, dims) = text.split_once('=').ok_or_else(|| {
        anyhow!("--input-shape {text}: expected NAME=DIMS such as pixels=1x3x224x224")
    })?;
    let dims = dims
        .split(['x', ','])
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.trim()
                .parse::<i64>()
                .ok()
                .filter(|&v| v >= 0)
                .ok_or_else(|| anyhow!("--input-shape {text}: '{d}' is not a dimension"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((name.to_string(), dims))
}

fn same_file(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| -> Option<PathBuf> {
        if p.exists() {
            return p.canonicalize().ok();
        }
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.canonicalize().ok()?,
            _ => std::env::current_dir().ok()?,
        };
        Some(parent.join(p.file_name()?))
    };
    matches!((canon(a), canon(b)), (Some(x), Some(y)) if x == y)
}

#[derive(Serialize)]
struct CompileReport {
    input: String,
    output: String,
    pipeline: String,
    /// The requantization rounding and the integer matmul operand form (`--rounding`,
    /// `--matmul-operands`).
    rounding: String,
    matmul_operands: String,
    wide_operands: String,
    probability_bits: u32,
    /// `--weight-bits`, `--residual-order`, `--residual-sparsity` (each weight's outcome is in
    /// the `split-residual-groups` pass report).
    weight_bits: u32,
    residual_order: u32,
    residual_sparsity: f64,
    ensemble: u32,
    ops_before: BTreeMap<String, usize>,
    ops_after: BTreeMap<String, usize>,
    /// Ops that still compute in float, and why.
    float_ops: Vec<intone::lower::report::FloatOps>,
    /// Float values between the input quantization and the output dequantization (none in
    /// an integer-only model).
    float_between: Vec<String>,
    passes: Vec<PassReport>,
    /// `--sensitivity`: every value ranked by the output noise quantizing it alone causes.
    #[serde(skip_serializing_if = "Option::is_none")]
    sensitivity: Option<intone::runner::sensitivity::Ranking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timings: Option<Timings>,
}

/// Seconds spent per stage.
#[derive(Serialize)]
struct Timings {
    load: f64,
    passes: f64,
    per_pass: Vec<(String, f64)>,
    save: f64,
    total: f64,
}

fn op_counts(model: &Model) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for id in model.graph.node_ids() {
        if let Some(op) = model.graph.op(id) {
            let key = match op.domain() {
                "" => op.op_type().to_string(),
                d => format!("{d}.{}", op.op_type()),
            };
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    counts
}

fn compile(args: CompileArgs) -> Result<ExitCode> {
    if same_file(&args.input, &args.output) {
        bail!(
            "the output path {} is the input; choose another file",
            args.output.display()
        );
    }
    let start = Instant::now();
    let pipeline = match (&args.pipeline, &args.passes) {
        (_, Some(spec)) => Pipeline::parse(spec, PASSES)?,
        (Some(name), None) => Pipeline::preset(name, PRESETS, PASSES)?,
        (None, None) => Pipeline::preset("cleanup", PRESETS, PASSES)?,
    };
    let pipeline = if args.integer_io {
        let text = pipeline.to_text();
        let spec = if text.is_empty() {
            "expose-integer-io".to_string()
        } else {
            format!("{text},expose-integer-io")
        };
        Pipeline::parse(&spec, PASSES)?
    } else {
        pipeline
    };
    let mut manager = Manager::new(&pipeline, PASSES)?;
    manager.verify_each = !args.no_verify;
    manager.dump_dir = args.dump_dir.clone();
    manager.stop_after = args.stop_after.clone();
    manager.dump_after = match args.dump_after.as_slice() {
        [] => DumpAfter::Nothing,
        names if names.iter().any(|n| n == "all") => DumpAfter::All,
        names => DumpAfter::Passes(names.to_vec()),
    };
    let mut options = CompileOptions::default();
    for text in &args.input_shapes {
        let (name, dims) = parse_input_shape(text)?;
        options.input_shapes.insert(name, dims);
    }
    options.symbolic_dim_bound = args.max_dim.max(1);
    options.rounding = args
        .rounding
        .parse()
        .map_err(|e: String| anyhow!("--rounding: {e}"))?;
    options.matmul_operands = args
        .matmul_operands
        .parse()
        .map_err(|e: String| anyhow!("--matmul-operands: {e}"))?;
    options.wide_operands = args
        .wide_operands
        .parse()
        .map_err(|e: String| anyhow!("--wide-operands: {e}"))?;
    if !(8..=16).contains(&args.probability_bits) {
        return Err(anyhow!(
            "--probability-bits {}: expected 8 to 16",
            args.probability_bits
        ));
    }
    options.probability_bits = args.probability_bits;
    match args.activation_order {
        1 => {}
        2 if options.wide_operands == intone::quant::WideOperands::None => {
            options.wide_operands = intone::quant::WideOperands::All
        }
        2 => {}
        a => return Err(anyhow!("--activation-order {a}: expected 1 or 2")),
    }
    if args.data_free {
        if !(args.data_free_sigmas.is_finite() && args.data_free_sigmas > 0.0) {
            return Err(anyhow!(
                "--data-free-sigmas {}: expected a positive number",
                args.data_free_sigmas
            ));
        }
        options.data_free = Some(args.data_free_sigmas);
    }
    options.weight_expansion = intone::quant::WeightExpansion {
        bits: args.weight_bits,
        order: args.residual_order,
        sparsity: args.residual_sparsity,
        ensemble: args.ensemble,
        budget: args.residual_budget,
        budget_by: match &args.budget_by {
            None => Default::default(),
            Some(rank) => rank
                .parse()
                .map_err(|e: String| anyhow!("--budget-by: {e}"))?,
        },
    };
    options.weight_expansion.check().map_err(|e| {
        anyhow!("--weight-bits/--residual-order/--residual-sparsity/--ensemble: {e}")
    })?;
    if args.sensitivity == Some(0) {
        bail!("--sensitivity 0: expected at least one sample");
    }
    options.sensitivity = args.sensitivity;
    options.objective = args.objective.clone();
    if !args.calibrate.is_empty() {
        let mut inputs = BTreeMap::new();
        for spec in &args.calibrate {
            let (name, file) = spec
                .split_once('=')
                .ok_or_else(|| anyhow!("--calibrate {spec}: expected NAME=FILE.npy"))?;
            inputs.insert(name.to_string(), intone::npy::read(Path::new(file))?);
        }
        if args.calibration_batch == 0 {
            bail!("--calibration-batch must be at least 1");
        }
        options.calibration = Some(intone::pass::CalibrationSet {
            inputs,
            batch: args.calibration_batch,
            method: args
                .calibration_method
                .parse()
                .map_err(|e: String| anyhow!("--calibration-method: {e}"))?,
            progress: true,
        });
    }

    let mut model = intone::onnx::load(&args.input)?;
    // `--sensitivity` perturbs the float model as loaded.
    let float_model = options.sensitivity.map(|_| model.clone());
    let loaded = Instant::now();
    let ops_before = op_counts(&model);
    let reports = manager.run(&mut model, &options)?;
    intone::lower::value_map::record(&mut model)?;
    let transformed = Instant::now();
    intone::onnx::save(&model, &args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let saved = Instant::now();
    let ops_after = op_counts(&model);
    let float_ops = intone::lower::report::float_ops(&model)?;
    let float_between = intone::lower::report::float_between(&model)?;

    let nodes = |c: &BTreeMap<String, usize>| c.values().sum::<usize>();
    let mut summary = format!(
        "intone: {} -> {} ({} passes, {} -> {} ops, {:.2} s)\n",
        args.input.display(),
        args.output.display(),
        reports.len(),
        nodes(&ops_before),
        nodes(&ops_after),
        start.elapsed().as_secs_f64()
    );
    for r in &reports {
        if r.matched + r.skipped > 0 {
            summary.push_str(&format!(
                "  {:<24} rewrote {}, skipped {}\n",
                r.pass, r.rewritten, r.skipped
            ));
        }
    }
    if reports.iter().any(|r| r.pass == "quantize") {
        let total: usize = float_ops.iter().map(|f| f.count).sum();
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &float_ops {
            *kinds.entry(f.op.as_str()).or_default() += f.count;
        }
        let kinds: Vec<String> = kinds.iter().map(|(op, n)| format!("{n} {op}")).collect();
        summary.push_str(&format!(
            "  float ops remaining: {total} ({})\n",
            kinds.join(", ")
        ));
        summary.push_str(&match float_between.len() {
            0 => "  integer-only: no float value between input quantization and output dequantization\n".to_string(),
            n => format!(
                "  {n} float values between input quantization and output dequantization (first: {})\n",
                float_between[0]
            ),
        });
    }
    let sensitivity = match (&float_model, options.sensitivity, &options.calibration) {
        (Some(float), Some(samples), Some(set)) => {
            let weights: Vec<_> = reports
                .iter()
                .flat_map(|r| r.sensitivity.iter().cloned())
                .collect();
            let probe = intone::runner::sensitivity::Probe {
                set,
                samples,
                objective: &options.objective,
                context: &[],
            };
            Some(intone::runner::sensitivity::rank(
                float, &model, probe, &weights,
            )?)
        }
        _ => None,
    };
    if let Some(ranking) = &sensitivity {
        summary.push_str(&format!(
            "  sensitivity on {} samples (all activations on their grids at once: {:.1} dB output SQNR); most sensitive alone:\n",
            ranking.samples,
            intone::runner::sensitivity::sqnr_db(ranking.activations_together)
                .unwrap_or(f64::INFINITY)
        ));
        for s in ranking.ranked.iter().take(10) {
            summary.push_str(&format!(
                "    {:>6.1} dB  {:<10} {:>2} bits  {}  ({})\n",
                s.output_sqnr_db.unwrap_or(f64::INFINITY),
                s.kind,
                s.bits,
                s.value,
                s.node
            ));
        }
    }
    if let Some(path) = &args.report {
        let report = CompileReport {
            input: args.input.display().to_string(),
            output: args.output.display().to_string(),
            pipeline: pipeline.to_text(),
            rounding: options.rounding.name().to_string(),
            matmul_operands: options.matmul_operands.name().to_string(),
            wide_operands: options.wide_operands.to_string(),
            probability_bits: options.probability_bits,
            weight_bits: options.weight_expansion.bits,
            residual_order: options.weight_expansion.order,
            residual_sparsity: options.weight_expansion.sparsity,
            ensemble: options.weight_expansion.ensemble,
            ops_before,
            ops_after,
            float_ops,
            float_between: float_between.clone(),
            timings: args.timings.then(|| Timings {
                load: (loaded - start).as_secs_f64(),
                passes: (transformed - loaded).as_secs_f64(),
                per_pass: reports
                    .iter()
                    .map(|r| (r.pass.clone(), r.duration.as_secs_f64()))
                    .collect(),
                save: (saved - transformed).as_secs_f64(),
                total: (saved - start).as_secs_f64(),
            }),
            passes: reports,
            sensitivity,
        };
        let json = serde_json::to_string_pretty(&report)?;
        write_atomically(path, json.as_bytes())?;
    }
    // Diagnostics last, and never fatal: every file is written by now.
    note(&summary);
    Ok(ExitCode::SUCCESS)
}

/// Writes diagnostics to stderr, ignoring a reader that went away.
fn note(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = intone::onnx::temp_file_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads `NAME=FILE.npy` arguments into arrays ordered as the model's inputs.
pub fn read_inputs(specs: &[String], names: &[String]) -> Result<Vec<Array>> {
    let mut given: BTreeMap<String, Array> = BTreeMap::new();
    for spec in specs {
        let (name, file) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--input {spec}: expected NAME=FILE.npy"))?;
        if !names.iter().any(|n| n == name) {
            let known: Vec<&str> = names.iter().map(String::as_str).collect();
            bail!(
                "--input {name}: the model has no input of that name{}",
                intone::error::suggestion(name, &known)
            );
        }
        given.insert(name.to_string(), intone::npy::read(Path::new(file))?);
    }
    names
        .iter()
        .map(|n| {
            given
                .remove(n)
                .ok_or_else(|| anyhow!("missing --input {n}=FILE.npy"))
        })
        .collect()
}

fn run_model(args: RunArgs) -> Result<ExitCode> {
    let model = intone::onnx::load(&args.model)?;
    let runner = intone::runner::Runner::new(&model)?;
    let inputs = read_inputs(&args.inputs, runner.input_names())?;
    let selected = (!args.outputs.is_empty()).then_some(args.outputs.as_slice());
    let refs: Vec<&Array> = inputs.iter().collect();
    let plan = runner.plan(&refs, selected)?;
    let outputs = plan.run(&inputs)?;
    if let Some(n) = args.repeat {
        let mut times: Vec<f64> = (0..n.max(1))
            .map(|_| {
                let start = Instant::now();
                plan.run(&inputs)
                    .map(|_| start.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<std::result::Result<_, _>>()?;
        times.sort_by(f64::total_cmp);
        emit(&format!(
            "latency: median {:.3} ms over {} runs\n",
            times[times.len() / 2],
            times.len()
        ));
    }
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for (name, array) in &outputs {
        let values = array.to_f64_vec();
        let (min, max) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
        emit(&format!(
            "{name}: {}{:?} min {min:.6} max {max:.6} mean {mean:.6}\n",
            intone::ir::DataTypeInfo::short_name(array.dtype()),
            array.shape()
        ));
        if let Some(dir) = &args.output_dir {
            let file = dir.join(format!("{}.npy", file_safe(name)));
            intone::npy::write(&file, array)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn bench(args: BenchArgs) -> Result<ExitCode> {
    let mut plans = Vec::new();
    let mut feeds = Vec::new();
    for path in &args.models {
        let model = intone::onnx::load(path)?;
        let runner = intone::runner::Runner::new(&model)?;
        let inputs = read_inputs(&args.inputs, runner.input_names())
            .with_context(|| path.display().to_string())?;
        let refs: Vec<&Array> = inputs.iter().collect();
        let plan = runner.plan(&refs, None)?;
        plan.run(&inputs)?; // warm-up: first-run allocations stay out of the times
        plans.push(plan);
        feeds.push(inputs);
    }
    let mut times = vec![Vec::with_capacity(args.repeat); plans.len()];
    for _ in 0..args.repeat.max(1) {
        for ((plan, inputs), t) in plans.iter().zip(&feeds).zip(&mut times) {
            let start = Instant::now();
            plan.run(inputs)?;
            t.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    let medians: Vec<f64> = times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect();
    if args.json {
        let rows: Vec<serde_json::Value> = args
            .models
            .iter()
            .zip(&medians)
            .map(|(p, m)| serde_json::json!({"model": p.display().to_string(), "median_ms": m, "ratio": m / medians[0]}))
            .collect();
        emit(&format!(
            "{}\n",
            serde_json::json!({"engine": "tract", "rounds": args.repeat.max(1), "models": rows})
        ));
    } else {
        emit(&format!(
            "tract, one thread, median of {} interleaved rounds; ×: time relative to the first model\n",
            args.repeat.max(1)
        ));
        for (p, m) in args.models.iter().zip(&medians) {
            emit(&format!(
                "{m:10.3} ms  {:6.2}×  {}\n",
                m / medians[0],
                p.display()
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A value name usable as a file name.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn check(args: CheckArgs) -> Result<ExitCode> {
    let reference = intone::onnx::load(&args.reference)?;
    let candidate = intone::onnx::load(&args.candidate)?;
    let names: Vec<String> = intone::runner::Runner::new(&candidate)?
        .input_names()
        .to_vec();
    let inputs = read_inputs(&args.inputs, &names)?;
    let report = intone::runner::check(&reference, &candidate, &inputs, args.per_layer)?;
    let layer_threshold = args.min_cosine.unwrap_or(0.99);
    let first_divergence = report
        .layers
        .iter()
        .position(|l| l.agreement.cosine < layer_threshold);
    let mut failures = Vec::new();
    for o in &report.outputs {
        if let Some(min) = args.min_cosine {
            if o.agreement.cosine < min {
                failures.push(format!(
                    "output {}: cosine {:.6} < {min}",
                    o.value, o.agreement.cosine
                ));
            }
        }
        if let (Some(min), Some(top1)) = (args.min_top1, o.agreement.top1) {
            if top1 < min {
                failures.push(format!(
                    "output {}: top-1 agreement {top1:.4} < {min}",
                    o.value
                ));
            }
        }
    }
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["first_divergence"] = match first_divergence {
            Some(i) => serde_json::json!(report.layers[i].value),
            None => serde_json::Value::Null,
        };
        value["failures"] = serde_json::json!(failures);
        emit(&format!("{}\n", serde_json::to_string_pretty(&value)?));
    } else {
        let row = |c: &intone::runner::ValueCheck| {
            let top1 = c
                .agreement
                .top1
                .map(|t| format!("  top-1 {t:.4}"))
                .unwrap_or_default();
            format!(
                "cosine {:.6}  SQNR {:6.2} dB  max|err| {:.4e}  mean|err| {:.4e}{top1}",
                c.agreement.cosine,
                c.agreement.sqnr_db,
                c.agreement.max_abs_error,
                c.agreement.mean_abs_error
            )
        };
        let mut text = String::from("outputs:\n");
        for o in &report.outputs {
            text.push_str(&format!("  {:<24} {}\n", o.value, row(o)));
        }
        if args.per_layer {
            text.push_str(&format!(
                "per layer, in graph order ({} values):\n     #    cosine     SQNR  max|err|    value <- reference [encoding]\n",
                report.layers.len()
            ));
            for (i, l) in report.layers.iter().enumerate() {
                let mark = if Some(i) == first_divergence {
                    "  <== first below threshold"
                } else {
                    ""
                };
                let source = if l.reference == l.value {
                    String::new()
                } else {
                    format!(" <- {}", l.reference)
                };
                text.push_str(&format!(
                    "  {i:>4}  {:.6} {:>6.2}dB  {:.2e}  {}{source} [{}]{mark}\n",
                    l.agreement.cosine,
                    l.agreement.sqnr_db,
                    l.agreement.max_abs_error,
                    l.value,
                    l.encoding
                ));
            }
            text.push_str(&match first_divergence {
                Some(i) => format!(
                    "first value below cosine {layer_threshold}: {} (#{i})\n",
                    report.layers[i].value
                ),
                None => format!("no value below cosine {layer_threshold}\n"),
            });
        }
        emit(&text);
    }
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        note(&format!("check failed: {}\n", failures.join("; ")));
        Ok(ExitCode::from(1))
    }
}
