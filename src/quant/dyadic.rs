//! Dyadic numbers: a positive real `r` approximated as `m / 2^c` with integer `m` and `c`.
//!
//! I-ViT and I-BERT take `frexp(r)` and a 31-bit mantissa. intone instead chooses the most
//! precise `m` that a caller's bound allows: `m ≤ max_multiplier`, where the bound comes from
//! the proven range of what `m` multiplies (so the product provably fits its integer type).

/// `m / 2^c`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Dyadic {
    pub multiplier: i64,
    pub shift: u32,
}

/// Largest shift a dyadic number may use (int64 arithmetic, with room for rounding).
pub const MAX_SHIFT: u32 = 62;

impl Dyadic {
    pub fn value(self) -> f64 {
        self.multiplier as f64 / 2f64.powi(self.shift as i32)
    }

    /// The closest `m / 2^c` to `r > 0` with `1 ≤ m ≤ max_multiplier` and `c ≤ MAX_SHIFT`,
    /// taking the largest `c` that keeps `m` in bounds (so the most significant bits).
    /// `m` is rounded half-up from `r · 2^c`. Returns `None` when even `c = 0` needs
    /// `m > max_multiplier`, or when `r` is not finite and positive.
    pub fn approximate(r: f64, max_multiplier: i64) -> Option<Dyadic> {
        if !(r.is_finite() && r > 0.0) || max_multiplier < 1 {
            return None;
        }
        let mut best = None;
        for shift in 0..=MAX_SHIFT {
            let m = (r * 2f64.powi(shift as i32) + 0.5).floor();
            if m > max_multiplier as f64 {
                break;
            }
            if m >= 1.0 {
                best = Some(Dyadic {
                    multiplier: m as i64,
                    shift,
                });
            }
        }
        best.map(Dyadic::reduced)
    }

    /// The same number with even multipliers halved: fewer bits, same value.
    pub fn reduced(mut self) -> Dyadic {
        while self.multiplier % 2 == 0 && self.shift > 0 {
            self.multiplier /= 2;
            self.shift -= 1;
        }
        self
    }

    /// Relative error against the real it approximates.
    pub fn relative_error(self, r: f64) -> f64 {
        ((self.value() - r) / r).abs()
    }

    /// Number of significant bits in the multiplier.
    pub fn bits(self) -> u32 {
        64 - self.multiplier.unsigned_abs().leading_zeros()
    }
}

/// Bit width needed for a signed integer in `[lo, hi]` (two's complement).
pub fn signed_bits(lo: i128, hi: i128) -> u32 {
    let need = |v: i128| {
        if v < 0 {
            129 - (!v).leading_zeros()
        } else {
            129 - v.leading_zeros()
        }
    };
    need(lo).max(need(hi))
}
