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
//! - [`onnx`]: the format boundary. `proto` is the wire schema (our own `proto/onnx.proto`,
//!   compiled by prost); decoding is zero-copy (`raw_data` slices the file buffer); external data
//!   is loaded and written back with path checks; encoding streams tensor bytes to the file.
//! - [`ir`]: the IR. A [`ir::Graph`] wraps a petgraph `StableDiGraph` whose nodes are graph
//!   inputs, initializers and ops, so every value is `(node, slot)` with exactly one producer.
//!   Ops are `op_type` + `domain` + attributes; everything the IR does not model is carried
//!   verbatim, so `load → save` reproduces the model. Also: the verifier and the text form.
//! - [`ops`]: what intone knows about individual ONNX ops: typed attribute views, shape
//!   inference and constant evaluation.
//! - [`pass`]: the `Pass` trait, the pattern driver and its `Rewriter`, remarks, the pipeline
//!   parser and the pass manager.
//! - `passes/` (mounted as [`passes`]): one file per pass and the one registry.
//! - [`quant`]: numerics: rounding modes, dyadic numbers, reference integer kernels,
//!   calibration observers.
//! - [`runner`]: runs models in tract.
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

// Passes live in the top-level `passes/` folder (one file each) but compile into this crate:
// they depend on the IR and the CLI depends on them, so a separate crate would be a cycle.
#[path = "../passes/mod.rs"]
pub mod passes;

pub use error::{Error, Result};
