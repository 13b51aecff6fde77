//! `lower-gelu-to-table`: GELU in integers, the function itself by table.
//!
//! The same rewrite as `lower-gelu-to-shiftgelu` (see that file): a requantization to int8 and
//! a 256-entry table, filled with the op's own function rounded at the input scale / 128 —
//! erf GELU, its tanh form (`approximate="tanh"`), or QuickGelu `x·σ(1.702x)` — instead of
//! ShiftGELU's or i-GELU's approximation: over int8 inputs any function costs one Gather.
//! Error: the int8 input quantization (±S/2 of input) and the entries' rounding (±S/256).

use super::lower_gelu_to_shiftgelu::exact_gelu;
use super::prelude::*;

pub fn build() -> Result<Box<dyn Pass>> {
    Ok(Box::new(exact_gelu()))
}
