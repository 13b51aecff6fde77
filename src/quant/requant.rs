//! The reference requantization kernel: what every `Requant` node computes, whichever ONNX
//! recipe legalization later picks for it.
//!
//! `y = clamp(round((x · m + b) / 2^c) + zp, lo, hi)`
//!
//! with integer input `x`, multiplier `m`, an integer offset `b` folded in before the shift
//! (a bias at the multiplied scale), shift `c`, rounding mode, output zero point `zp` and clamp
//! bounds. Per-channel parameters index the last axis... or any `axis` of the input.

use super::rounding::{Rounding, shift_right};

/// Parameters of one requantization (per-tensor, or per-channel along `axis`).
#[derive(Clone, Debug, PartialEq)]
pub struct RequantParams {
    /// One multiplier per channel, or a single one.
    pub multiplier: Vec<i64>,
    /// Offset added to `x · m` before the shift, one per channel or a single one.
    pub offset: Vec<i64>,
    pub shift: u32,
    pub rounding: Rounding,
    pub zero_point: i64,
    pub lo: i64,
    pub hi: i64,
    /// The axis the per-channel vectors index (only used when they have several entries).
    pub axis: usize,
}

impl RequantParams {
    /// Parameters of channel `c` (per-tensor parameters apply to every channel).
    pub fn channel(&self, c: usize) -> (i64, i64) {
        let pick = |v: &[i64]| if v.len() == 1 { v[0] } else { v[c] };
        (pick(&self.multiplier), pick(&self.offset))
    }

    pub fn channels(&self) -> usize {
        self.multiplier.len().max(self.offset.len())
    }

    /// One element of channel `c`, exactly (i128, no overflow).
    pub fn apply(&self, x: i64, c: usize) -> i64 {
        let (m, b) = self.channel(c);
        let scaled = x as i128 * m as i128 + b as i128;
        let y = shift_right(scaled, self.shift, self.rounding) + self.zero_point as i128;
        y.clamp(self.lo as i128, self.hi as i128) as i64
    }

    /// Requantizes a row-major tensor of `shape`.
    pub fn apply_all(&self, x: &[i64], shape: &[usize]) -> Vec<i64> {
        let inner: usize = shape.get(self.axis + 1..).map_or(1, |s| s.iter().product());
        let dim = shape.get(self.axis).copied().unwrap_or(1);
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let c = if self.channels() > 1 {
                    (i / inner) % dim
                } else {
                    0
                };
                self.apply(v, c)
            })
            .collect()
    }
}
