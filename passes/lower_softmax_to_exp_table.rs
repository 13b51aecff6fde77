//! `lower-softmax-to-exp-table(out-bits)`: Softmax in integers with the exponential itself.
//!
//! The same rewrite as `lower-softmax-to-shiftmax` (see that file): after the row maximum is
//! subtracted the exponential's input is a bounded index, so its table can hold
//! `round(2^k·e^(−i·S))` instead of ShiftExp's approximation, at the same cost. `2^k` is half
//! of the 31 bits a row leaves (`kernels::exp_table`), so that the normalising factor
//! `floor((2^31 − 1)/Σ)` keeps as many bits as the entries, even for a uniform row.
//! Error: the input's rounding, the entries' (≤ 2^−(k+1) relative to the row maximum's) and
//! the output's.

use super::lower_softmax_to_shiftmax::LowerSoftmax;
use super::prelude::*;

pub fn build(options: &PassOptions) -> Result<Box<dyn Pass>> {
    Ok(Box::new(LowerSoftmax::exact(options)?))
}
