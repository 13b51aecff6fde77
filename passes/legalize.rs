//! `legalize(target=integer|integer-opset28)`: expands intone's internal ops into standard ONNX with
//! their own recipes (`ops::intone`).
//!
//! `intone.Requant` `y = clamp(round((x·m + b) / 2^c) + zp, lo, hi)` becomes, for `integer`:
//!   int32 when `|x·m + b + 2^(c−1)| < 2^30` is proven:
//!     `Cast(Clip(Sub(Div(Add(Mul(x, m), b + h + 2^30), 2^c), 2^(30−c) − zp), lo, hi))`
//!   (the Add makes the dividend non-negative, so truncating `Div` floors exactly), else int64:
//!     the same after `CastLike(x, int64)`, with 2^62 in place of 2^30;
//! and for `integer-opset28`: `Mul`, `Add(b + h)`, `BitShift(RIGHT)` (arithmetic on signed
//! types from opset 28), `Add(zp)`, `Clip`, `Cast`. `h` is 2^(c−1) for half-up rounding, 0
//! for floor. Per-channel constants broadcast along the requant axis. Divisors are positive
//! powers of two, never −1; no `Cast(to=INT64)` (tract turns it into a symbolic dimension).
//! Preconditions: input ranges are known (every integer value carries them); opset ≥ 15.
//! Exact: bit-identical to `quant::RequantParams::apply` (reference-kernel tests).
//! Afterwards every integer op's range is checked against its type (`lower::range`).

use super::prelude::*;

use crate::ir::quant::QuantFacts;
use std::collections::HashMap;

use crate::Error;
use crate::ir::DataType;
use crate::lower::range;
use crate::ops::intone::{DOMAIN, requant};

#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Target {
    Integer,
    IntegerOpset28,
}

pub struct Legalize {
    target: Target,
}

impl Legalize {
    pub fn new(options: &PassOptions) -> Result<Legalize> {
        let target = match options.raw("target").unwrap_or_default() {
            "integer" => Target::Integer,
            "integer-opset28" => Target::IntegerOpset28,
            other => {
                return Err(Error::Usage(format!(
                    "legalize: unknown target '{other}' (integer, integer-opset28)"
                )));
            }
        };
        Ok(Legalize { target })
    }
}

impl Pass for Legalize {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let opset = model.opset("").unwrap_or(0);
        if opset < 15 {
            return Err(Error::Usage(format!(
                "legalize: the model imports opset {opset}; integer targets need 15 or more (run upgrade-opset first)"
            )));
        }
        let facts = cx.facts(model)?;
        // Element type and rank of values, including those expansions create.
        let mut kinds: HashMap<ValueId, (Option<DataType>, Option<usize>)> = facts
            .values
            .iter()
            .map(|(v, f)| (*v, (f.dtype, f.rank())))
            .collect();
        // Expansion results, with the requantization output they replaced (whose shape
        // the analysis knows): a requantization may read another.
        let mut replaced: HashMap<ValueId, ValueId> = HashMap::new();
        for id in model.graph.topological_order()? {
            let op = model.graph.op(id).expect("op").clone();
            if op.domain() != DOMAIN {
                continue;
            }
            if op.op_type() != "Requant" {
                return Err(Error::unsupported(format!(
                    "legalize: no expansion for intone.{}",
                    op.op_type()
                )));
            }
            cx.report.matched += 1;
            let x = model
                .graph
                .input(id, 0)
                .ok_or_else(|| Error::invalid(format!("{} has no input", op.describe())))?;
            let (dtype, rank) = kinds.get(&x).copied().unwrap_or((None, None));
            // An axis of known size > 1 (the last such one) to spread scalar constants along.
            let shape_facts = facts
                .get(x)
                .or_else(|| replaced.get(&x).and_then(|&y| facts.get(y)));
            let spread_axis = shape_facts.and_then(|f| f.shape.as_ref()).and_then(|s| {
                (0..s.len()).rev().find_map(|i| {
                    s[i].known()
                        .filter(|&d| d > 1)
                        .map(|d| (i, d as usize, s.len()))
                })
            });
            let dtype = dtype.ok_or_else(|| Error::Pass {
                pass: "legalize".into(),
                message: format!(
                    "the element type of '{}' is unknown",
                    model.graph.value_name(x)
                ),
            })?;
            let (y, to) = expand_requant(model, id, x, dtype, rank, spread_axis, self.target)?;
            kinds.insert(y, (Some(to), rank));
            replaced.insert(y, ValueId { node: id, slot: 0 });
            cx.report.rewritten += 1;
        }
        if self.target == Target::IntegerOpset28 {
            model.require_opset("", 28);
            let ir = model.header.ir_version.unwrap_or(0).max(10);
            model.header.ir_version = Some(ir);
        }
        let checked = range::verify(
            model,
            cx.options.symbolic_dim_bound,
            cx.options.matmul_operands,
        )?;
        cx.remark(
            "<ranges>",
            format!("{checked} integer ops checked: no overflow possible"),
        );
        Ok(())
    }
}

/// The input range of an integer value, from its quantization facts.
fn input_range(model: &Model, x: ValueId) -> Result<(i64, i64)> {
    model
        .graph
        .value(x)
        .quant
        .as_ref()
        .and_then(|q: &QuantFacts| q.range)
        .ok_or_else(|| Error::Pass {
            pass: "legalize".into(),
            message: format!(
                "no proven range for '{}', the input of a requantization",
                model.graph.value_name(x)
            ),
        })
}

/// Expands one Requant with the op's own recipe; returns the value that replaced its output
/// and that value's type.
fn expand_requant(
    model: &mut Model,
    id: NodeId,
    x: ValueId,
    dtype: DataType,
    rank: Option<usize>,
    spread_axis: Option<(usize, usize, usize)>,
    target: Target,
) -> Result<(ValueId, DataType)> {
    let op = model.graph.op(id).expect("op").clone();
    let input = requant::ExpansionInput {
        dtype,
        rank,
        range: input_range(model, x)?,
        spread_axis,
    };
    let recipe = match target {
        Target::Integer => requant::Recipe::Divide,
        Target::IntegerOpset28 => requant::Recipe::BitShift,
    };
    let expansion = requant::expand(&op, &input, recipe)?;
    let mut rw = Rewriter::new(model, id);
    let mut results: Vec<ValueId> = Vec::with_capacity(expansion.steps.len());
    let value = |o: &requant::Operand, results: &[ValueId]| match o {
        requant::Operand::Input => x,
        requant::Operand::Step(i) => results[*i],
    };
    for step in expansion.steps {
        let v = match step {
            requant::Step::Constant { name, value } => rw.constant(name, &value)?,
            requant::Step::Op {
                op_type,
                name,
                inputs,
                attributes,
            } => {
                let inputs: Vec<ValueId> = inputs.iter().map(|o| value(o, &results)).collect();
                rw.op(op_type, name, &inputs, attributes)?
            }
        };
        results.push(v);
    }
    let t = results.last().copied().unwrap_or(x);
    let y = ValueId { node: id, slot: 0 };
    let name = rw.graph().value_name(y).to_string();
    // A requantization that reads this one needs its proven range.
    let facts = rw.graph().value(y).quant.clone();
    if rw.graph().value(t).quant.is_none() {
        rw.annotate(t, |v| v.quant = facts);
    }
    rw.replace(y, t)?;
    rw.finish()?;
    // The expansion's result keeps the requantization's name.
    if model.graph.find_value(&name).is_none() {
        model.graph.rename_value(t, &name)?;
    }
    Ok((t, expansion.to))
}
