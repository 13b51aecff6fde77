//! Numerics: rounding modes, dyadic numbers, requantization arithmetic, the reference integer
//! kernels and the streaming calibration observers. Plain scalar Rust that knows no graph:
//! these define what the lowered ONNX must compute, bit for bit.

pub mod dyadic;
pub mod kernels;
pub mod observer;
pub mod requant;
pub mod rounding;

pub use dyadic::Dyadic;
pub use observer::{CalibrationMethod, Observer};
pub use requant::RequantParams;
pub use rounding::Rounding;

/// Which weight matmuls take their activation at 16 bits, as two 8-bit terms
/// (`--wide-operands`).
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub enum WideOperands {
    #[default]
    None,
    /// The cheapest weight matmuls first (fewest MACs), while the extra MACs stay within this
    /// fraction of the model's.
    Budget(f64),
    /// Every Conv/MatMul/Gemm with a constant weight.
    All,
}

impl std::fmt::Display for WideOperands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WideOperands::None => f.write_str("none"),
            WideOperands::Budget(b) => write!(f, "budget={b}"),
            WideOperands::All => f.write_str("all"),
        }
    }
}

impl std::str::FromStr for WideOperands {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(WideOperands::None),
            "all" => Ok(WideOperands::All),
            other => match other.strip_prefix("budget=").map(str::parse::<f64>) {
                Some(Ok(b)) if (0.0..=1.0).contains(&b) => Ok(WideOperands::Budget(b)),
                _ => Err(format!(
                    "'{other}' is not none, budget=F (F in [0, 1]) or all"
                )),
            },
        }
    }
}

/// The largest stored magnitude of a `bits`-bit grid: `2^(bits−1) − 1` signed (symmetric),
/// `2^bits − 1` unsigned.
pub fn levels(bits: u32, signed: bool) -> i64 {
    if signed {
        (1i64 << (bits - 1)) - 1
    } else {
        (1i64 << bits) - 1
    }
}
