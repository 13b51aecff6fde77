//! The reference requantization kernel: what every `intone.Requant` node computes, whichever
//! ONNX recipe legalization later picks for it (the op itself is `ops::intone::requant`).
//!
//! `y = clamp(round((x · m + b) / 2^c) + zp, lo, hi)`
//!
//! with integer input `x`, multiplier `m`, an integer offset `b` folded in before the shift
//! (a bias at the multiplied scale), shift `c`, rounding mode, output zero point `zp` and clamp
//! bounds. `m`, `b` and `c` are per channel along `axis`, or single.

use super::rounding::{Rounding, shift_right};
use crate::schema::tensor_proto::DataType;

/// Parameters of one requantization (per tensor, or per channel along `axis`).
#[derive(Clone, Debug, PartialEq)]
pub struct RequantParams {
    /// One multiplier per channel, or a single one.
    pub multiplier: Vec<i64>,
    /// Offset added to `x · m` before the shift, one per channel or a single one.
    pub offset: Vec<i64>,
    /// Right shift, one per channel or a single one.
    pub shift: Vec<u32>,
    pub rounding: Rounding,
    pub zero_point: i64,
    pub lo: i64,
    pub hi: i64,
    /// The axis the per-channel vectors index (used when they have several entries).
    pub axis: usize,
    /// Element type of the result.
    pub to: DataType,
}

fn pick<T: Copy>(v: &[T], c: usize) -> T {
    if v.len() == 1 { v[0] } else { v[c] }
}

impl RequantParams {
    /// Parameters of channel `c` (single parameters apply to every channel).
    pub fn channel(&self, c: usize) -> (i64, i64, u32) {
        (
            pick(&self.multiplier, c),
            pick(&self.offset, c),
            pick(&self.shift, c),
        )
    }

    /// How many channels the parameters describe (1 for per-tensor).
    pub fn channels(&self) -> usize {
        self.multiplier
            .len()
            .max(self.offset.len())
            .max(self.shift.len())
    }

    /// One element of channel `c`, exactly (i128, no overflow).
    pub fn apply(&self, x: i64, c: usize) -> i64 {
        let (m, b, shift) = self.channel(c);
        let scaled = x as i128 * m as i128 + b as i128;
        let y = shift_right(scaled, shift, self.rounding) + self.zero_point as i128;
        y.clamp(self.lo as i128, self.hi as i128) as i64
    }

    /// Requantizes a row-major tensor of `shape`.
    pub fn apply_all(&self, x: &[i64], shape: &[usize]) -> Vec<i64> {
        let inner: usize = shape.get(self.axis + 1..).map_or(1, |s| s.iter().product());
        let dim = shape.get(self.axis).copied().unwrap_or(1).max(1);
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

    /// The effective real multiplier of channel `c`: `m / 2^shift`.
    pub fn ratio(&self, c: usize) -> f64 {
        let (m, _, shift) = self.channel(c);
        m as f64 / 2f64.powi(shift as i32)
    }
}
