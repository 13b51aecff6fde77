//! `lower-activations-to-table`: a unary activation of a dequantized value — Tanh, Sigmoid,
//! HardSigmoid, HardSwish, LeakyRelu, Elu, Selu, Celu, Softplus, Softsign, Mish — and the
//! gated form `x · f(x)` (SiLU/Swish is `x · Sigmoid(x)`) become a requantization to int8 and
//! a 256-entry table (as GELU does, see `lower-gelu-to-shiftgelu`).
//!
//! The entries are the function's values rounded to 2^−14 (`kernels::function_table`): over int8
//! inputs a table is exact up to that rounding, and the reader's requantization folds into it.
//! Error: the int8 input quantization (±s/2 on x, times max |f'|: 1 for all but Selu's 1.76
//! and the gated forms' ≤ 1.1) plus 2^−15.

use super::lower_gelu_to_shiftgelu::{LowerByTable, Table};
use super::prelude::*;
use crate::quant::kernels::{hard_swish, sigmoid, softplus};

use crate::ir::Op;

/// The float function an activation computes, with its attributes; `None` for other ops or
/// attributes that do not parse.
pub fn function_of(op: &Op) -> Option<Box<dyn Fn(f64) -> f64>> {
    if !op.domain().is_empty() {
        return None;
    }
    let float = |name: &str, default: f32| op.attr_float(name, default).ok().map(|v| v as f64);
    Some(match op.op_type() {
        "Tanh" => Box::new(f64::tanh),
        "Sigmoid" => Box::new(sigmoid),
        "HardSigmoid" => {
            let (alpha, beta) = (float("alpha", 0.2)?, float("beta", 0.5)?);
            Box::new(move |x| (alpha * x + beta).clamp(0.0, 1.0))
        }
        "HardSwish" => Box::new(hard_swish),
        "LeakyRelu" => {
            let alpha = float("alpha", 0.01)?;
            Box::new(move |x| if x < 0.0 { alpha * x } else { x })
        }
        "Elu" => {
            let alpha = float("alpha", 1.0)?;
            Box::new(move |x| if x < 0.0 { alpha * x.exp_m1() } else { x })
        }
        "Celu" => {
            let alpha = float("alpha", 1.0)?;
            Box::new(move |x| x.max(0.0) + (alpha * (x / alpha).exp_m1()).min(0.0))
        }
        "Selu" => {
            let alpha = float("alpha", 1.673_263_2)?;
            let gamma = float("gamma", 1.050_701)?;
            Box::new(move |x| gamma * if x <= 0.0 { alpha * x.exp_m1() } else { x })
        }
        "Softplus" => Box::new(softplus),
        "Softsign" => Box::new(|x| x / (1.0 + x.abs())),
        "Mish" => Box::new(|x| x * softplus(x).tanh()),
        _ => return None,
    })
}

/// Every activation [`function_of`] knows, each with its own table, in one walk of the graph.
pub struct LowerActivations;

impl Pass for LowerActivations {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        LowerByTable {
            table_for: |op| {
                let f = function_of(op)?;
                Some(Table::Function(f))
            },
        }
        .run(model, cx)
    }
}
