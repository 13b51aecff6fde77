//! `lower-tanh-sigmoid-to-table`: `Tanh` and `Sigmoid` of a dequantized value become a
//! requantization to int8 and a 256-entry table (as GELU does, see `lower-gelu-to-shiftgelu`).
//!
//! The entries are the functions' values rounded to 2^−14 (`round(f(i·s)·2^14)`): over int8
//! inputs a table is exact up to that rounding, and the reader's requantization folds into it.
//! BERT's pooler (`tanh(dense(h_CLS))`) is the common case. Error: the int8 input
//! quantization (±s/2 on x, times |f'| ≤ 1) plus 2^−15.

use super::lower_gelu_to_shiftgelu::LowerByTable;
use super::prelude::*;

/// Entries' scale.
const ONE: f64 = (1 << 14) as f64;

fn table(s: f64, f: fn(f64) -> f64) -> (Vec<i64>, f64) {
    let t = (-128..128)
        .map(|i| (f(i as f64 * s) * ONE).round() as i64)
        .collect();
    (t, 1.0 / ONE)
}

/// Tanh and Sigmoid, each with its own table, in one walk of the graph.
pub struct LowerTanhSigmoid;

impl Pass for LowerTanhSigmoid {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        LowerByTable {
            table_for: |op| {
                if op.is("Tanh") {
                    Some(|s| table(s, f64::tanh))
                } else if op.is("Sigmoid") {
                    Some(|s| table(s, |x| 1.0 / (1.0 + (-x).exp())))
                } else {
                    None
                }
            },
        }
        .run(model, cx)
    }
}
