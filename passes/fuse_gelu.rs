//! `fuse-gelu`: the GELU forms exporters emit become one ONNX `Gelu` (opset 20).
//!
//! Rewrites (any association order of the products, `·0.5` or `/2`):
//! - `0.5·x·(1 + erf(x/√2))`, with `x/√2` or `x·(1/√2)` → `Gelu(x)`;
//! - `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (GPT-2 `gelu_new`), `x³` as `Pow(x, 3)` or
//!   `x·x·x` → `Gelu(x, approximate="tanh")`;
//! - `x·sigmoid(1.702·x)` → `com.microsoft.QuickGelu(x, alpha=1.702)` (a different function from
//!   GELU: it keeps its own name, and ShiftGELU computes exactly this form);
//! - `com.microsoft` `Gelu`, `BiasGelu(x, b)`, `FastGelu(x[, b])` → `Gelu([x + b])`.
//!
//! Preconditions: default-domain opset ≥ 20 (run `upgrade-opset(to=20)` first); intermediate
//! values have no other readers. Exact up to float rounding of the decomposition.

use super::prelude::*;

use crate::ir::{Graph, Op, attr};
use crate::pass::matcher::{other_input, out, producer, scalar, sole_reader, with_constant};

pub struct FuseGelu;

impl Pass for FuseGelu {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        if model.opset("").unwrap_or(0) < 20 {
            cx.remark(
                "<graph>",
                "the model imports opset < 20, which has no Gelu: run upgrade-opset(to=20) first",
            );
            return Ok(());
        }
        apply_greedily(&GeluPattern, model, cx, MAX_ROUNDS)
    }
}

/// The outputs of the model's GELUs, fused (`Gelu`, `QuickGelu`, the `com.microsoft` forms)
/// or in any of the decomposed forms this pass fuses: values that are never below −0.17.
pub(crate) fn gelu_outputs(model: &Model) -> Result<std::collections::HashSet<ValueId>> {
    let g = &model.graph;
    let mut found = std::collections::HashSet::new();
    for id in g.topological_order()? {
        let Some(op) = g.op(id) else { continue };
        let fused = matches!(
            (op.domain(), op.op_type()),
            ("", "Gelu") | ("com.microsoft", "QuickGelu")
        );
        if fused {
            found.insert(out(id));
        } else if let Match::Apply((y, _)) = GeluPattern.match_at(model, id)? {
            found.insert(y);
        }
    }
    Ok(found)
}

/// What replaces the matched output.
enum Fused {
    Gelu {
        x: ValueId,
        bias: Option<ValueId>,
        tanh: bool,
    },
    Quick {
        x: ValueId,
    },
}

struct GeluPattern;

const TOLERANCE: f64 = 1e-3;

/// `Some(x)` for `x·0.5`, `0.5·x` or `x/2` computed at `node`.
fn halved(g: &Graph, node: NodeId) -> Option<ValueId> {
    let op = g.op(node)?;
    if op.is("Mul") {
        with_constant(g, node, 0.5, TOLERANCE)
    } else if op.is("Div") && scalar(g, g.input(node, 1)).is_some_and(|d| d == 2.0) {
        g.input(node, 0)
    } else {
        None
    }
}

/// The value `0.5·x·a`, in whichever order the exporter multiplied.
fn half_product(g: &Graph, x: ValueId, a: ValueId) -> Option<ValueId> {
    let uses = g.uses(a);
    if uses.len() != 1 || g.is_graph_output(a) {
        return None;
    }
    let first = uses[0].node;
    let op = g.op(first)?;
    if op.is("Mul") {
        let other = other_input(g, first, a)?;
        if other == x {
            // (x·a)·0.5 or (x·a)/2
            let y = out(first);
            let next = g.uses(y);
            if next.len() == 1 && !g.is_graph_output(y) && halved(g, next[0].node) == Some(y) {
                return Some(out(next[0].node));
            }
            return None;
        }
        if g.op(other.node).is_some() && halved(g, other.node) == Some(x) {
            // (0.5·x)·a
            return Some(out(first));
        }
        if scalar(g, Some(other)).is_some_and(|c| (c - 0.5).abs() <= TOLERANCE * 0.5) {
            // (0.5·a)·x
            let y = out(first);
            let second = sole_reader(g, y, "Mul")?;
            return (other_input(g, second, y)? == x).then(|| out(second));
        }
        return None;
    }
    if halved(g, first) == Some(a) {
        // (a/2)·x
        let y = out(first);
        let second = sole_reader(g, y, "Mul")?;
        return (other_input(g, second, y)? == x).then(|| out(second));
    }
    None
}

/// `1 + t` read from `t`'s only reader.
fn plus_one(g: &Graph, t: ValueId) -> Option<ValueId> {
    let add = sole_reader(g, t, "Add")?;
    (with_constant(g, add, 1.0, TOLERANCE)? == t).then(|| out(add))
}

/// `x` of `x³` computed as `Pow(x, 3)` or `(x·x)·x`.
fn cube_root_of(g: &Graph, v: ValueId) -> Option<ValueId> {
    if let Some(p) = producer(g, v, "Pow") {
        return (scalar(g, g.input(p, 1))? == 3.0)
            .then(|| g.input(p, 0))
            .flatten();
    }
    let m = producer(g, v, "Mul")?;
    let (a, b) = (g.input(m, 0)?, g.input(m, 1)?);
    for (sq, x) in [(a, b), (b, a)] {
        if let Some(s) = producer(g, sq, "Mul") {
            if g.input(s, 0) == Some(x) && g.input(s, 1) == Some(x) {
                return Some(x);
            }
        }
    }
    None
}

impl GeluPattern {
    fn erf(&self, g: &Graph, root: NodeId) -> Option<(ValueId, Fused)> {
        let u = g.input(root, 0)?;
        let x = match g.op(u.node) {
            Some(op) if op.is("Div") => {
                let d = scalar(g, g.input(u.node, 1))?;
                ((d - std::f64::consts::SQRT_2).abs() < TOLERANCE).then(|| g.input(u.node, 0))??
            }
            Some(op) if op.is("Mul") => {
                with_constant(g, u.node, std::f64::consts::FRAC_1_SQRT_2, TOLERANCE)?
            }
            _ => return None,
        };
        let a = plus_one(g, out(root))?;
        let y = half_product(g, x, a)?;
        Some((
            y,
            Fused::Gelu {
                x,
                bias: None,
                tanh: false,
            },
        ))
    }

    fn tanh(&self, g: &Graph, root: NodeId) -> Option<(ValueId, Fused)> {
        let u = g.input(root, 0)?;
        let inner = with_constant(g, producer(g, u, "Mul")?, 0.797_884_560_8, TOLERANCE)?;
        let sum = producer(g, inner, "Add")?;
        let (a, b) = (g.input(sum, 0)?, g.input(sum, 1)?);
        let x = [(a, b), (b, a)].into_iter().find_map(|(x, t)| {
            let m = producer(g, t, "Mul")?;
            let cube = with_constant(g, m, 0.044715, TOLERANCE)?;
            (cube_root_of(g, cube)? == x).then_some(x)
        })?;
        let one_plus = plus_one(g, out(root))?;
        let y = half_product(g, x, one_plus)?;
        Some((
            y,
            Fused::Gelu {
                x,
                bias: None,
                tanh: true,
            },
        ))
    }

    fn sigmoid(&self, g: &Graph, root: NodeId) -> Option<(ValueId, Fused)> {
        let scaled = g.input(root, 0)?;
        let x = with_constant(g, producer(g, scaled, "Mul")?, 1.702, TOLERANCE)?;
        let m = sole_reader(g, out(root), "Mul")?;
        (other_input(g, m, out(root))? == x).then(|| (out(m), Fused::Quick { x }))
    }

    fn microsoft(&self, g: &Graph, root: NodeId, op: &Op) -> Option<(ValueId, Fused)> {
        let x = g.input(root, 0)?;
        let bias = g.input(root, 1);
        let (bias, tanh) = match op.op_type() {
            "Gelu" => (None, false),
            "BiasGelu" => (Some(bias?), false),
            "FastGelu" => (bias, true),
            _ => return None,
        };
        Some((out(root), Fused::Gelu { x, bias, tanh }))
    }
}

impl Pattern for GeluPattern {
    type Found = (ValueId, Fused);

    fn match_at(&self, model: &Model, root: NodeId) -> Result<Match<Self::Found>> {
        let g = &model.graph;
        let Some(op) = g.op(root) else {
            return Ok(Match::None);
        };
        let found = match (op.domain(), op.op_type()) {
            ("", "Erf") => self.erf(g, root),
            ("", "Tanh") => self.tanh(g, root),
            ("", "Sigmoid") => self.sigmoid(g, root),
            ("com.microsoft", _) => self.microsoft(g, root, op),
            _ => return Ok(Match::None),
        };
        Ok(match found {
            Some(f) => Match::Apply(f),
            None if op.domain().is_empty() && op.is("Erf") => {
                Match::Skip("an Erf that is not part of a GELU".into())
            }
            None => Match::None,
        })
    }

    fn rewrite(&self, (y, fused): Self::Found, rw: &mut Rewriter) -> Result<()> {
        let new = match fused {
            Fused::Gelu { x, bias, tanh } => {
                let x = match bias {
                    Some(b) => rw.op("Add", "bias", &[x, b], vec![])?,
                    None => x,
                };
                let attrs = if tanh {
                    vec![attr::string("approximate", "tanh")]
                } else {
                    vec![]
                };
                rw.op("Gelu", "gelu", &[x], attrs)?
            }
            Fused::Quick { x } => {
                let mut op = Op::new("QuickGelu", "");
                op.proto.domain = Some("com.microsoft".into());
                let id = rw.op_node(
                    op,
                    "quick_gelu",
                    &[Some(x)],
                    vec![attr::float("alpha", 1.702)],
                    1,
                )?;
                rw.model_mut().require_opset("com.microsoft", 1);
                out(id)
            }
        };
        rw.replace(y, new)
    }
}
