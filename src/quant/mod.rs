//! Numerics: rounding modes, dyadic numbers, requantization arithmetic, the reference integer
//! kernels and the streaming calibration observers. Plain scalar Rust that knows no graph:
//! these define what the lowered ONNX must compute, bit for bit.

pub mod dyadic;
pub mod kernels;
pub mod least_squares;
pub mod observer;
pub mod requant;
pub mod rounding;

pub use dyadic::Dyadic;
pub use observer::{CalibrationMethod, Observer};
pub use requant::RequantParams;
pub use rounding::Rounding;

/// How every pipeline expands weights into residual terms (`split-residual-groups`,
/// `lower::residual`): `--weight-bits`, `--residual-order`, `--residual-sparsity`. The default
/// is one 8-bit term, today's int8 weights.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct WeightExpansion {
    /// Bits of every term (2 is ternary).
    pub bits: u32,
    /// Terms per weight, where int32 holds their aligned sum.
    pub order: u32,
    /// Fraction of each layer's output channels whose terms ≥ 2 are dropped.
    pub sparsity: f64,
    /// Single-term networks whose outputs are averaged (1: no ensemble).
    pub ensemble: u32,
    /// Instead of one `sparsity` for every layer: the residual terms' MACs across the model, as
    /// a fraction of what every channel keeping them would cost, spent on the channels whose
    /// residual adds the most output noise per MAC.
    pub budget: Option<f64>,
    /// How the budget ranks channels.
    pub budget_by: BudgetBy,
}

/// How `--residual-budget` ranks the channels that get terms ≥ 2 (`--budget-by`).
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub enum BudgetBy {
    /// Measured: the output noise one layer at single-term weights adds to the rounding of the
    /// matmul inputs, on calibration samples, shared among the layer's channels by residual
    /// norm (without calibration data: `Layer`).
    #[default]
    Output,
    /// Estimated per layer: the noise its residual leaves in the layer's own output.
    Layer,
}

impl std::str::FromStr for BudgetBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "output" => Ok(BudgetBy::Output),
            "layer" => Ok(BudgetBy::Layer),
            _ => Err(format!("'{s}': expected output or layer")),
        }
    }
}

impl WeightExpansion {
    /// More terms than this add nothing int32 can hold: even ternary terms (ratio 3) reach 3^K.
    pub const MAX_ORDER: u32 = 8;
    /// Branches of an ensemble: each is a copy of the whole network.
    pub const MAX_ENSEMBLE: u32 = 8;

    /// Refuses settings outside what the lowering builds.
    pub fn check(&self) -> Result<(), String> {
        if !(2..=8).contains(&self.bits) {
            return Err(format!(
                "weight bits {} are outside 2..=8 (terms are stored as int8)",
                self.bits
            ));
        }
        if !(1..=Self::MAX_ORDER).contains(&self.order) {
            return Err(format!(
                "residual order {} is outside 1..={}",
                self.order,
                Self::MAX_ORDER
            ));
        }
        if !(0.0..=1.0).contains(&self.sparsity) {
            return Err(format!(
                "residual sparsity {} is outside [0, 1]",
                self.sparsity
            ));
        }
        if let Some(b) = self.budget {
            if !(0.0..=1.0).contains(&b) {
                return Err(format!("residual budget {b} is outside [0, 1]"));
            }
        }
        if !(1..=Self::MAX_ENSEMBLE).contains(&self.ensemble) {
            return Err(format!(
                "ensemble {} is outside 1..={}",
                self.ensemble,
                Self::MAX_ENSEMBLE
            ));
        }
        if self.ensemble > 1 && self.order > 1 {
            return Err(format!(
                "an ensemble's branches are single-term networks; ensemble {} with residual \
                 order {} is not built (the ensemble's mean already has the finer grid)",
                self.ensemble, self.order
            ));
        }
        Ok(())
    }
}

impl Default for WeightExpansion {
    fn default() -> Self {
        WeightExpansion {
            bits: 8,
            order: 1,
            sparsity: 0.0,
            ensemble: 1,
            budget: None,
            budget_by: BudgetBy::Output,
        }
    }
}

/// Which weight matmuls take their activation at 16 bits, as two 8-bit terms
/// (`--wide-operands`).
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub enum WideOperands {
    #[default]
    None,
    /// The matmuls whose output the activation's 8-bit rounding alone would leave below this
    /// signal-to-noise ratio (dB), estimated from calibration and the weights.
    Auto { sqnr_db: f64 },
    /// The cheapest weight matmuls first (fewest MACs), while the extra MACs stay within this
    /// fraction of the model's.
    Budget(f64),
    /// The activations whose 8-bit rounding alone costs the model's output the most noise per
    /// extra MAC, measured on calibration samples, while the extra MACs stay within this
    /// fraction of the model's.
    Measured(f64),
    /// Every Conv/MatMul/Gemm with a constant weight.
    All,
}

impl std::fmt::Display for WideOperands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WideOperands::None => f.write_str("none"),
            WideOperands::Auto { sqnr_db } => write!(f, "auto={sqnr_db}"),
            WideOperands::Budget(b) => write!(f, "budget={b}"),
            WideOperands::Measured(b) => write!(f, "measured={b}"),
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
            "auto" => Ok(WideOperands::Auto {
                sqnr_db: DEFAULT_WIDE_SQNR_DB,
            }),
            other => {
                let bad = || {
                    format!(
                        "'{other}' is not none, auto[=DB], budget=F, measured=F (F in [0, 1]) or all"
                    )
                };
                if let Some(db) = other.strip_prefix("auto=") {
                    return match db.parse::<f64>() {
                        Ok(sqnr_db) if sqnr_db.is_finite() => Ok(WideOperands::Auto { sqnr_db }),
                        _ => Err(bad()),
                    };
                }
                if let Some(Ok(b)) = other.strip_prefix("measured=").map(str::parse::<f64>) {
                    return match (0.0..=1.0).contains(&b) {
                        true => Ok(WideOperands::Measured(b)),
                        false => Err(bad()),
                    };
                }
                match other.strip_prefix("budget=").map(str::parse::<f64>) {
                    Some(Ok(b)) if (0.0..=1.0).contains(&b) => Ok(WideOperands::Budget(b)),
                    _ => Err(bad()),
                }
            }
        }
    }
}

/// `--wide-operands auto`'s threshold: an 8-bit activation whose rounding alone would leave a
/// matmul's output below this signal-to-noise ratio enters at 16 bits.
pub const DEFAULT_WIDE_SQNR_DB: f64 = 38.0;

/// The noise a matmul's output gets from rounding its activation to `step`, relative to the
/// output's power: uniform rounding noise `step²/12` per input, through weights whose squares
/// sum to `weight_square_sum` per output (averaged over the outputs), against the output's
/// mean square. Infinite for an output that is always zero.
pub fn rounding_noise_ratio(step: f64, weight_square_sum: f64, output_mean_square: f64) -> f64 {
    let noise = step * step / 12.0 * weight_square_sum;
    if output_mean_square > 0.0 {
        noise / output_mean_square
    } else {
        f64::INFINITY
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
