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

/// The largest stored magnitude of a `bits`-bit grid: `2^(bits−1) − 1` signed (symmetric),
/// `2^bits − 1` unsigned.
pub fn levels(bits: u32, signed: bool) -> i64 {
    if signed {
        (1i64 << (bits - 1)) - 1
    } else {
        (1i64 << bits) - 1
    }
}
