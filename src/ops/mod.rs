//! What intone knows about individual ONNX ops.
//!
//! - [`eval`]: constant evaluation with the spec's exact semantics.
//! - [`infer`]: element type and shape of each output from those of the inputs, including
//!   symbolic dimensions and partially known shape vectors (the `Shape → Gather → Concat`
//!   arithmetic of dynamic exports).
//! - [`facts`]: what is known about one value; [`analysis`] runs inference and evaluation
//!   over a whole graph to compute it for every value.
//! - [`intone`]: intone's internal ops (definition, inference, evaluation, expansion).
//! - [`table`]: the op table (data movement, channel axes, integer types, interval rules).
//! - [`matmul_kernels`]: which integer matmul operands each engine's kernels compute exactly.
//! - [`resize`], [`conv_transpose`]: the geometry of Resize and ConvTranspose (output sizes,
//!   which inputs each output reads), for inference and for the passes that expand them.
//! - [`taps`]: 2-D windows (depthwise Conv, MaxPool) as strided slices, for planning and lowering them.

pub mod analysis;
pub mod conv_transpose;
pub mod eval;
pub mod facts;
pub mod infer;
pub mod intone;
pub mod matmul_kernels;
pub mod moments;
pub mod resize;
pub mod table;
pub mod taps;

pub use analysis::{EVALUATION_LIMIT, GraphFacts, analyze, name_any_dims, pin_input_shapes};
pub use facts::{Dim, Facts};

/// Numpy-style broadcast of two concrete shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        let pad = rank - s.len();
        if i < pad { 1 } else { s[i - pad] }
    };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}
