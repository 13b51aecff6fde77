//! `lower-gelu-to-ibert-erf`: GELU in integers with I-BERT's i-GELU.
//!
//! The same rewrite as `lower-gelu-to-shiftgelu` (see that file): a requantization to int8 and
//! a 256-entry table, filled by `x·(erf(x/√2) + 1)/2` with I-BERT's erf polynomial
//! `sign(x)·[a(min(|x|, −b) + b)² + 1]`, a = −0.2888, b = −1.769 (I-BERT §3.4). The
//! polynomial's right shift adapts to the input scale (`kernels::ibert_erf_shift`).

use super::lower_gelu_to_shiftgelu::ibert_gelu;
use super::prelude::*;

pub fn build() -> Result<Box<dyn Pass>> {
    Ok(Box::new(ibert_gelu()))
}
