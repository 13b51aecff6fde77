//! Numerics: rounding modes, dyadic numbers, the reference integer kernels and the streaming
//! calibration observers. Plain scalar Rust: these define what the lowered ONNX must compute,
//! bit for bit.

pub mod calibration;
pub mod dyadic;
pub mod island;
pub mod kernels;
pub mod lower;
pub mod observer;
pub mod range;
pub mod report;
pub mod requant;
pub mod rounding;
pub mod value_map;

pub use calibration::CalibrationSet;
pub use dyadic::Dyadic;
pub use observer::{CalibrationMethod, Observer};
pub use requant::RequantParams;
pub use rounding::Rounding;
