//! `fold-dyadic-requant`: one requantization per edge, with constants folded in. Three jobs,
//! each its own pass too (for bisecting and tests), run in this order:
//!
//! 1. [`move_dequantizations`] (`move-dequantizations`): data movement, concatenations, shape reads
//!    and means of dequantized values run on the integers instead; the dequantization moves
//!    after them.
//! 2. [`close_float_islands`] (`close-float-islands`): a quantization of a dequantized value becomes
//!    one requantization.
//! 3. [`fold_requantizations`] (`fold-requantizations`):
//!    - `Requant(Add(x, b))`, b an integer constant along the requant axis (a bias):
//!      `Requant(x)` with offset `o + b·m` — exact: `(x + b)·m + o = x·m + (b·m + o)`.
//!    - `Requant₂(Requant₁(x))` where Requant₁'s clamp provably never binds and nothing else
//!      reads it: one `Requant` with the product ratio `m₁m₂ / 2^(c₁+c₂)`, re-approximated for
//!      x's range. Removes one rounding (the result differs from the chain by at most one unit).
//!    - `DequantizeLinear(Requant(x), s)` where the clamp never binds: `DequantizeLinear(x, s·r)`,
//!      dropping a rounding and an integer op.
//!    - `Requant(Gather(T, i))` with a constant table: `Gather(requant(T), i)`.
//!
//! Preconditions: integer values carry proven ranges (`QuantFacts::range`).
//! Error: exact for biases and moves; ≤ 1 unit per removed rounding. I-ViT §3.2 (dyadic
//! arithmetic).

mod close_float_islands;
mod fold_requantizations;
mod move_dequantizations;

use super::prelude::*;

/// All three, in order.
pub struct FoldDyadicRequant;

impl Pass for FoldDyadicRequant {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        move_dequantizations::run(model, cx)?;
        close_float_islands::run(model, cx)?;
        fold_requantizations::run(model, cx)
    }
}

/// `move-dequantizations`.
pub struct MoveDequantizations;

impl Pass for MoveDequantizations {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        move_dequantizations::run(model, cx)
    }
}

/// `close-float-islands`.
pub struct CloseFloatIslands;

impl Pass for CloseFloatIslands {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        close_float_islands::run(model, cx)
    }
}

/// `fold-requantizations`.
pub struct FoldRequantizations;

impl Pass for FoldRequantizations {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        fold_requantizations::run(model, cx)
    }
}
