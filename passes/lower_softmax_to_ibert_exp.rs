//! `lower-softmax-to-ibert-exp(out-bits)`: Softmax in integers with I-BERT's i-exp.
//!
//! The same rewrite as `lower-softmax-to-shiftmax` (see that file), with the exponential
//! table filled by I-BERT's second-order polynomial on (−ln 2, 0] and `>> q` (I-BERT §3.3)
//! instead of ShiftExp. I-BERT normalises with `floor(2^32 / Σ)`, which does not fit int32;
//! both variants use I-ViT's `floor((2^31 − 1) / Σ)`.

use super::lower_softmax_to_shiftmax::LowerSoftmax;
use super::prelude::*;

pub fn build(options: &PassOptions) -> Result<Box<dyn Pass>> {
    Ok(Box::new(LowerSoftmax::ibert(options)?))
}
