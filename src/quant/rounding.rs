//! Rounding of `x / 2^c`, as a named property. Every lowering states which one it implements.

use std::fmt;
use std::str::FromStr;

/// How `x / 2^c` becomes an integer.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// `floor(x / 2^c)`: an arithmetic right shift.
    Floor,
    /// `floor((x + 2^(c-1)) / 2^c)`: ties go up (toward +∞), the I-ViT/TVM convention.
    #[default]
    HalfUp,
    /// Ties go to the even neighbour, as QuantizeLinear and `Round` do.
    HalfEven,
}

impl Rounding {
    pub fn name(self) -> &'static str {
        match self {
            Rounding::Floor => "floor",
            Rounding::HalfUp => "half-up",
            Rounding::HalfEven => "half-even",
        }
    }
}

impl fmt::Display for Rounding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Rounding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "floor" => Ok(Rounding::Floor),
            "half-up" => Ok(Rounding::HalfUp),
            "half-even" => Ok(Rounding::HalfEven),
            _ => Err(format!(
                "unknown rounding '{s}' (floor, half-up, half-even)"
            )),
        }
    }
}

/// `x / 2^c` rounded as asked, exactly, for any `x` and `c ≤ 126`.
pub fn shift_right(x: i128, c: u32, rounding: Rounding) -> i128 {
    if c == 0 {
        return x;
    }
    let floor = x >> c;
    match rounding {
        Rounding::Floor => floor,
        Rounding::HalfUp => (x + (1i128 << (c - 1))) >> c,
        Rounding::HalfEven => {
            let rest = x - (floor << c);
            let half = 1i128 << (c - 1);
            if rest > half || (rest == half && floor & 1 == 1) {
                floor + 1
            } else {
                floor
            }
        }
    }
}

/// Rounds a real number to an integer with the same tie rule.
pub fn round_real(x: f64, rounding: Rounding) -> f64 {
    match rounding {
        Rounding::Floor => x.floor(),
        Rounding::HalfUp => (x + 0.5).floor(),
        Rounding::HalfEven => x.round_ties_even(),
    }
}

/// `x` rounded to the nearest integer, ties to even, mostly without a libm call: adding and
/// removing 1.5·2^52 leaves an f64 with no fraction bits, rounded by the FPU's default
/// round-to-nearest-even. Exact for |x| < 2^51; beyond, the library does it.
#[inline]
pub fn round_half_even(x: f64) -> f64 {
    const MAGIC: f64 = 6755399441055744.0;
    if x.abs() < 2251799813685248.0 {
        (x + MAGIC) - MAGIC
    } else {
        x.round_ties_even()
    }
}
