//! # intone
//!
//! A compiler from float ONNX models to integer-only ONNX models.
//!
//! ## Architecture
//!
//! ```text
//!  model.onnx ──onnx::load──▶ ir::Model ──pass::Manager(passes…)──▶ ir::Model ──onnx::save──▶ out.onnx
//!                                 │                                                       │
//!                                 └──────────── runner (tract): run, calibrate, check ◀───┘
//! ```
//!
//! The modules are layers; each uses only those below it (checked by a test that scans the
//! sources):
//!
//! ```text
//!   cli                       the command line (src/cli.rs, src/main.rs)
//!   passes                    one file or folder per pass, the registry, the preset stages
//!   runner                    tract
//!   lower                     lowering framework: engine, driver, islands, range proofs,
//!                             value map, report
//!   pass                      Pass, Pattern + Rewriter, phases, pipelines and stages, manager
//!   ops                       op table, inference, evaluation, facts, the intone domain's ops
//!   onnx · npy                file formats (ONNX, text form; .npy)
//!   ir                        the graph, tensors, plans and facts on values, verifier
//!   quant                     numerics: rounding, dyadic, requantization, kernels, observers
//!   schema · error            the ONNX wire schema; errors
//! ```
//!
//! - [`schema`]: Rust types of the ONNX wire schema (our own `proto/onnx.proto`, compiled by
//!   prost). Everything above speaks it.
//! - [`quant`]: numerics that know no graph: rounding modes, dyadic numbers, requantization
//!   arithmetic, reference integer kernels, calibration observers.
//! - [`ir`]: the IR. A [`ir::Graph`] wraps a petgraph `StableDiGraph` whose nodes are graph
//!   inputs, initializers and ops, so every value is `(node, slot)` with exactly one producer.
//!   Ops are `op_type` + `domain` + attributes; everything the IR does not model is carried
//!   verbatim, so `load → save` reproduces the model. Values carry the plans passes hand on
//!   (`plan` on float values, `weight_plan` on weights) apart from proven facts (`quant`).
//! - [`onnx`]: the format boundary: zero-copy decoding, external data with path checks,
//!   streaming encoding, and the readable text form.
//! - [`ops`]: what intone knows about individual ops: the op table, inference, constant
//!   evaluation, the facts analysis, engine kernel rules, and the `intone` domain.
//! - [`pass`]: the `Pass` trait, phases, the pattern driver and its `Rewriter`, remarks, the
//!   pipeline language and stages, the manager.
//! - [`lower`]: how lowerings rewrite planned float ops into integer ones, and the proofs and
//!   records about the result.
//! - [`runner`]: runs models in tract.
//! - `passes/` (mounted as [`passes`]): the passes, their registry, and the stages presets
//!   are built from.
//! - [`npy`]: reading and writing `.npy` arrays.
//!
//! Library errors are [`Error`]; the binary maps them to exit code 2.

pub mod error;
pub mod ir;
pub mod lower;
pub mod npy;
pub mod onnx;
pub mod ops;
pub mod pass;
pub mod quant;
pub mod runner;
pub mod schema;

// Passes live in the top-level `passes/` folder (a file or folder each) but compile into this crate:
// they depend on the IR and the CLI depends on them, so a separate crate would be a cycle.
#[path = "../passes/mod.rs"]
pub mod passes;

pub use error::{Error, Result};
