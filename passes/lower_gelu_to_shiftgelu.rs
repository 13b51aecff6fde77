//! `lower-gelu-to-shiftgelu` and `lower-gelu-to-ibert-erf`: `Gelu(DequantizeLinear(q))` (either
//! `approximate` mode) and `com.microsoft.QuickGelu` become a requantization and a table read.
//!
//! Rewrite: `i = requant(q → int8 at the input's planned scale S, + 128)` (int32 indices),
//! `y = Gather(table, i)`, `table[i] = kernel(i − 128)` for the 256 int8 inputs. The kernel is
//! I-ViT's ShiftGELU (`x·σ(1.6875x)` by ShiftExp, 8-bit sigmoid, n from the scale: see
//! `kernels::shift_gelu_n`; I-ViT §3.4) or I-BERT's
//! i-GELU (`x·(erf(x/√2)+1)/2` with the second-order erf polynomial; I-BERT §3.4). Over int8
//! inputs a function of the input alone is a table, so the graph computes exactly the kernel's
//! integers with one Gather instead of its ~15 elementwise ops; `fold-dyadic-requant` then folds
//! the reader's requantization into the table. ShiftGELU's stabiliser is per element
//! (`max(1.6875x, 0)`) instead of I-ViT's row maximum, which makes it a function of x alone.
//! Preconditions: `lower-linear-to-integer` ran and calibration planned the input.
//! Error: the int8 input quantization (±S/2) plus the kernel's error (README table).

use super::prelude::*;

use crate::ir::quant::Scale;
use crate::ir::{Array, DataType, attr};
use crate::lower::engine::{IntRep, Target};
use crate::lower::island::{dequantized, emit_output, lower_each, plan_of};
use crate::quant::kernels::{GeluKernel, gelu_table};

/// The table of a unary function over int8 inputs.
pub enum Table {
    /// An integer kernel: entries for −128..=127 at the given input scale, and their scale.
    Kernel(fn(f64) -> (Vec<i64>, f64)),
    /// A float function, tabulated at 2^−14 (`lower-activations-to-table`); a reader
    /// `Mul(x, f(x))` of the same input joins the table as `x · f(x)` (SiLU, Swish).
    Function(Box<dyn Fn(f64) -> f64>),
}

/// Unary ops lowered as tables over int8 inputs: the table for an op, or `None` for ops this
/// lowering leaves alone.
pub struct LowerByTable {
    pub table_for: fn(&crate::ir::Op) -> Option<Table>,
}

pub(crate) fn is_gelu(op: &crate::ir::Op) -> bool {
    op.is("Gelu") || (op.domain() == "com.microsoft" && op.op_type() == "QuickGelu")
}

/// ShiftGELU (I-ViT) by table.
pub fn shift_gelu() -> LowerByTable {
    LowerByTable {
        table_for: |op| is_gelu(op).then_some(Table::Kernel(|s| gelu_table(GeluKernel::Shift, s))),
    }
}

/// The GELU the op computes (erf or tanh form, or QuickGelu) by table, exactly rounded.
pub fn exact_gelu() -> LowerByTable {
    use crate::quant::kernels::{gelu, gelu_tanh, quick_gelu};
    LowerByTable {
        table_for: |op| {
            if op.domain() == "com.microsoft" && op.op_type() == "QuickGelu" {
                // alpha other than 1.702 is a different function: left to the other lowerings.
                let alpha = op.attr_float("alpha", 1.702).ok()?;
                return ((alpha as f64 - 1.702).abs() < 1e-6).then_some(Table::Kernel(|s| {
                    gelu_table(GeluKernel::Exact(quick_gelu), s)
                }));
            }
            if !op.is("Gelu") {
                return None;
            }
            Some(
                match op.attr_string("approximate").ok().flatten().as_deref() {
                    Some("tanh") => Table::Kernel(|s| gelu_table(GeluKernel::Exact(gelu_tanh), s)),
                    _ => Table::Kernel(|s| gelu_table(GeluKernel::Exact(gelu), s)),
                },
            )
        },
    }
}

/// i-GELU (I-BERT) by table.
pub fn ibert_gelu() -> LowerByTable {
    LowerByTable {
        table_for: |op| {
            is_gelu(op).then_some(Table::Kernel(|s| gelu_table(GeluKernel::Polynomial, s)))
        },
    }
}

/// The output of `Mul(x, y)` (either order) when that product is `y`'s only reader.
fn gating_product(g: &crate::ir::Graph, x: ValueId, y: ValueId) -> Option<ValueId> {
    let mul = crate::pass::matcher::sole_reader(g, y, "Mul")?;
    (crate::pass::matcher::other_input(g, mul, y)? == x).then_some(ValueId { node: mul, slot: 0 })
}

impl Pass for LowerByTable {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let table_for = self.table_for;
        lower_each(
            model,
            cx,
            |op| table_for(op).is_some(),
            |lw, id, op| {
                let table = table_for(op).expect("selected");
                let Some(x) = lw.model().graph.input(id, 0) else {
                    return Ok(Err("no input".into()));
                };
                let y = ValueId { node: id, slot: 0 };
                let gate = match table {
                    Table::Function(_) => gating_product(&lw.model().graph, x, y),
                    Table::Kernel(_) => None,
                };
                let (Some(rep), Some(plan)) = (dequantized(lw, x), plan_of(lw, x)) else {
                    return Ok(Err(
                        "input is not dequantized from integers with a calibration plan".into(),
                    ));
                };
                let Scale::PerTensor(planned) = plan.scale else {
                    return Ok(Err("input plan is per channel".into()));
                };
                // The plan's clip over 127 levels (a plan of more bits keeps its clip).
                let levels = plan.levels() as f64;
                let clip = planned * levels;
                let s = (clip / 127.0) as f32 as f64;
                let index = lw.convert(
                    &rep,
                    &Target {
                        scale: s,
                        zero_point: 128,
                        lo: 1,
                        hi: 255,
                        dtype: DataType::Int32,
                    },
                    "index",
                )?;
                lw.note(&index, 8, true);
                let (table, scale) = match &table {
                    Table::Kernel(kernel) => kernel(s),
                    Table::Function(f) if gate.is_some() => {
                        crate::quant::kernels::function_table(s, &|x| x * f(x))
                    }
                    Table::Function(f) => crate::quant::kernels::function_table(s, f),
                };
                let name = match gate {
                    Some(_) => format!("gated_{}", op.op_type().to_lowercase()),
                    None => op.op_type().to_lowercase(),
                };
                let range = (
                    *table.iter().min().expect("256 entries"),
                    *table.iter().max().expect("256 entries"),
                );
                let table = lw.constant(
                    &format!("{name}_table"),
                    &Array::from_vec(&[256], table.into_iter().map(|v| v as i32).collect())?,
                )?;
                let read = lw.op(
                    "Gather",
                    &name,
                    &[table, index.value],
                    vec![attr::int("axis", 0)],
                )?;
                let out = IntRep {
                    value: read,
                    scale: Scale::PerTensor(scale),
                    zero_point: 0,
                    dtype: DataType::Int32,
                    range,
                };
                emit_output(lw, gate.unwrap_or(y), &out, 32, true)?;
                Ok(Ok(()))
            },
        )
    }
}
