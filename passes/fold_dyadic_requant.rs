//! `fold-dyadic-requant`: one requantization per edge, with constants folded in.
//!
//! Rewrites:
//! - `Requant(Add(x, b))`, b an integer constant along the requant axis (a bias):
//!   `Requant(x)` with offset `o + b·m` — exact: `(x + b)·m + o = x·m + (b·m + o)`.
//! - `Requant₂(Requant₁(x))` where Requant₁'s clamp provably never binds and nothing else
//!   reads it: one `Requant` with the product ratio `m₁m₂ / 2^(c₁+c₂)`, re-approximated for x's
//!   range. Removes one rounding (the result differs from the chain by at most one unit).
//! - `DequantizeLinear(Requant(x), s)` where the clamp never binds: `DequantizeLinear(x, s·r)`,
//!   dropping a rounding and an integer op.
//!
//! Preconditions: integer values carry proven ranges (`QuantFacts::range`).
//! Error: exact for biases; ≤ 1 unit per removed rounding. I-ViT §3.2 (dyadic arithmetic).

use super::prelude::*;

use crate::ir::{Array, Op};
use crate::ops;
use crate::quant::island;
use crate::quant::lower::{Lowering, choose_dyadics, requant_range};
use crate::quant::requant::{DOMAIN, RequantParams};

pub struct FoldDyadicRequant;

impl Pass for FoldDyadicRequant {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        apply_greedily(&ShapeOfDequantize, model, cx, MAX_ROUNDS)?;
        apply_greedily(&MoveBeforeDequantize, model, cx, MAX_ROUNDS)?;
        close_islands(model, cx)?;
        apply_greedily(&FoldBias, model, cx, MAX_ROUNDS)?;
        apply_greedily(&MergeChain, model, cx, MAX_ROUNDS)?;
        apply_greedily(&IntoDequantize, model, cx, MAX_ROUNDS)?;
        apply_greedily(&IntoTable, model, cx, MAX_ROUNDS)
    }
}

/// The `DequantizeLinear` producing `v`, with a constant scale and zero point.
fn dequantize_of(model: &Model, v: ValueId) -> Option<NodeId> {
    let g = &model.graph;
    let op = g.op(v.node)?;
    let constant = |slot| {
        g.input(v.node, slot)
            .is_none_or(|c| g.constant(c).is_some())
    };
    (op.is("DequantizeLinear") && constant(1) && constant(2)).then_some(v.node)
}

/// `Shape(DequantizeLinear(q))` → `Shape(q)` (and `Size`): exact, and no float is computed
/// just to read its shape.
struct ShapeOfDequantize;

impl Pattern for ShapeOfDequantize {
    type Found = (NodeId, ValueId);

    fn roots(&self) -> &[&str] {
        &["Shape", "Size"]
    }

    fn match_at(&self, model: &Model, root: NodeId) -> Result<Match<Self::Found>> {
        let g = &model.graph;
        let found = g
            .input(root, 0)
            .and_then(|v| dequantize_of(model, v))
            .and_then(|dq| g.input(dq, 0));
        Ok(found.map_or(Match::None, |q| Match::Apply((root, q))))
    }

    fn rewrite(&self, (root, q): Self::Found, rw: &mut Rewriter) -> Result<()> {
        let old = rw.graph().input(root, 0).expect("input");
        rw.graph_mut().set_input(root, 0, Some(q));
        rw.erase_if_dead(old.node);
        Ok(())
    }
}

/// Data movement of a per-tensor dequantized value moves the integers instead:
/// `T(DequantizeLinear(q, s, zp))` → `DequantizeLinear(T(q), s, zp)`. Exact.
struct MoveBeforeDequantize;

const MOVEMENT: &[&str] = &[
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Slice",
    "Gather",
    "Expand",
    "Identity",
];

impl Pattern for MoveBeforeDequantize {
    type Found = (NodeId, NodeId, Option<i64>);

    fn roots(&self) -> &[&str] {
        MOVEMENT
    }

    fn match_at(&self, model: &Model, root: NodeId) -> Result<Match<Self::Found>> {
        let g = &model.graph;
        let Some(dq) = g.input(root, 0).and_then(|v| dequantize_of(model, v)) else {
            return Ok(Match::None);
        };
        let per_tensor = g
            .input(dq, 1)
            .and_then(|s| g.constant(s))
            .and_then(|t| t.element_count().ok())
            == Some(1);
        if per_tensor {
            return Ok(Match::Apply((root, dq, None)));
        }
        // Per channel: a Gather of one index along another axis keeps the channels (on an
        // axis one lower when the gathered axis came before them).
        let op = g.op(root).expect("op");
        let channel = g.op(dq).expect("op").attr_int("axis", 1)?;
        let index = g.input(root, 1).and_then(|i| g.constant(i));
        let scalar_index = index.is_some_and(|t| t.dims().is_empty());
        let gathered = op.attr_int("axis", 0)?;
        if op.is("Gather") && scalar_index && gathered >= 0 && channel > 0 && gathered != channel {
            let moved = if gathered < channel {
                channel - 1
            } else {
                channel
            };
            return Ok(Match::Apply((root, dq, Some(moved))));
        }
        Ok(Match::Skip("the dequantization is per channel".into()))
    }

    fn rewrite(&self, (root, dq, channel): Self::Found, rw: &mut Rewriter) -> Result<()> {
        let op = rw.graph().op(root).expect("op").clone();
        let q = rw.graph().input(dq, 0).expect("input");
        let mut inputs = rw.graph().inputs_of(root);
        inputs[0] = Some(q);
        let moved = rw.op_node(
            Op::new(op.op_type(), ""),
            "int",
            &inputs,
            op.attrs().to_vec(),
            1,
        )?;
        let moved = ValueId {
            node: moved,
            slot: 0,
        };
        let mut facts = rw.graph().value(q).quant.clone();
        let mut dq_op = rw.graph().op(dq).expect("op").clone();
        if let Some(axis) = channel {
            dq_op.set_attr(crate::ir::attr::int("axis", axis));
            if let Some(crate::ir::quant::QuantFacts {
                scale: crate::ir::quant::Scale::PerAxis { axis: a, .. },
                ..
            }) = facts.as_mut()
            {
                *a = axis as usize;
            }
        }
        rw.graph_mut().value_mut(moved).quant = facts;
        let mut dq_inputs = rw.graph().inputs_of(dq);
        dq_inputs[0] = Some(moved);
        let new = rw.op_node(
            Op::new("DequantizeLinear", ""),
            "dequantized",
            &dq_inputs,
            dq_op.attrs().to_vec(),
            1,
        )?;
        rw.replace(
            ValueId {
                node: root,
                slot: 0,
            },
            ValueId { node: new, slot: 0 },
        )
    }
}

/// A quantization of a dequantized value (`Cast(Clip(Round(DequantizeLinear(q)·c)))` or
/// `QuantizeLinear`) becomes one requantization of `q`: the float island between them closes.
fn close_islands(model: &mut Model, cx: &mut PassContext) -> Result<()> {
    let facts = ops::analyze(model, &cx.options.input_shapes, 1 << 16)?;
    let order = model.graph.topological_order()?;
    let mut lw = Lowering::new(model, facts, cx.options.symbolic_dim_bound);
    for id in order {
        if !lw.model().graph.contains(id) {
            continue;
        }
        let v = ValueId { node: id, slot: 0 };
        let Some(rep) = island::dequantized(&lw, v) else {
            continue;
        };
        lw.rw.set_anchor(id);
        let closed = island::requantize_readers(&mut lw, v, &rep)?;
        if closed > 0 {
            cx.report.matched += closed;
            cx.report.rewritten += closed;
            lw.rw.erase_if_dead(id);
        }
    }
    lw.finish()?;
    Ok(())
}

/// `Requant(Gather(T, i))` with a constant 1-D table: `Gather(requant(T), i)`. Exact (the
/// requantization is applied to every entry at compile time).
struct IntoTable;

impl Pattern for IntoTable {
    type Found = (NodeId, NodeId, Array);

    fn match_at(&self, model: &Model, root: NodeId) -> Result<Match<Self::Found>> {
        let Some(p) = requant_of(model, root) else {
            return Ok(Match::None);
        };
        let g = &model.graph;
        let Some(gather) = g.input(root, 0).filter(|v| {
            g.op(v.node).is_some_and(|o| o.is("Gather"))
                && g.uses(*v).len() == 1
                && !g.is_graph_output(*v)
        }) else {
            return Ok(Match::None);
        };
        let Some(table) = g.input(gather.node, 0).and_then(|t| g.constant(t)) else {
            return Ok(Match::None);
        };
        let axis = g.op(gather.node).expect("op").attr_int("axis", 0)?;
        let Ok(values) = table.decode().and_then(|a| a.to_i64_vec()) else {
            return Ok(Match::None);
        };
        if p.channels() != 1 || axis != 0 || table.dims().len() != 1 {
            return Ok(Match::Skip(
                "not a per-tensor requantization of a 1-D table".into(),
            ));
        }
        let mapped: Vec<i64> = values.iter().map(|&x| p.apply(x, 0)).collect();
        let array = Array::from_vec(&[mapped.len()], mapped)?.cast(p.to)?;
        Ok(Match::Apply((root, gather.node, array)))
    }

    fn rewrite(&self, (root, gather, table): Self::Found, rw: &mut Rewriter) -> Result<()> {
        let t = rw.constant("table", &table)?;
        let index = rw.graph().input(gather, 1).expect("indices");
        let y = rw.op(
            "Gather",
            "lookup",
            &[t, index],
            vec![crate::ir::attr::int("axis", 0)],
        )?;
        let out = ValueId {
            node: root,
            slot: 0,
        };
        let facts = rw.graph().value(out).quant.clone();
        rw.graph_mut().value_mut(y).quant = facts;
        rw.replace(out, y)
    }
}

fn requant_of(model: &Model, id: NodeId) -> Option<RequantParams> {
    let op = model.graph.op(id)?;
    (op.domain() == DOMAIN && op.op_type() == "Requant")
        .then(|| RequantParams::from_op(op).ok())
        .flatten()
}

fn range_of(model: &Model, v: ValueId) -> Option<(i64, i64)> {
    model.graph.value(v).quant.as_ref().and_then(|q| q.range)
}

/// Replaces a Requant node's parameters and input, keeping its output value.
fn set_requant(rw: &mut Rewriter, id: NodeId, params: &RequantParams, input: ValueId) {
    let op = params.to_op(rw.graph().op(id).expect("op").name());
    rw.graph_mut().op_mut(id).expect("op").proto.attribute = op.proto.attribute;
    rw.graph_mut().set_input(id, 0, Some(input));
}

struct FoldBias;

impl Pattern for FoldBias {
    type Found = (NodeId, ValueId, Vec<i64>);

    fn match_at(&self, model: &Model, root: NodeId) -> Result<Match<Self::Found>> {
        let Some(p) = requant_of(model, root) else {
            return Ok(Match::None);
        };
        let g = &model.graph;
        let Some(sum) = g.input(root, 0) else {
            return Ok(Match::None);
        };
        if !g.op(sum.node).is_some_and(|op| op.is("Add")) {
            return Ok(Match::None);
        }
        let inputs = g.inputs_of(sum.node);
        let (Some(a), Some(b)) = (inputs[0], inputs[1]) else {
            return Ok(Match::None);
        };
        let (x, bias) = match (g.constant(a), g.constant(b)) {
            (None, Some(t)) => (a, t),
            (Some(t), None) => (b, t),
            _ => return Ok(Match::None),
        };
        let Ok(values) = bias.decode().and_then(|a| a.to_i64_vec()) else {
            return Ok(Match::Skip("the bias is not an integer constant".into()));
        };
        let shape = bias.shape().unwrap_or_default();
        // The bias must vary only along the requant axis (in trailing alignment) or not at all.
        if range_of(model, x).is_none() {
            return Ok(Match::Skip("the accumulator has no proven range".into()));
        }
        let channels = p.channels();
        let varying: Vec<usize> = shape
            .iter()
            .enumerate()
            .filter(|(_, d)| **d > 1)
            .map(|(i, _)| i)
            .collect();
        let ok = match varying.as_slice() {
            [] => true,
            [_] => channels == 1 || values.len() == channels,
            _ => false,
        };
        if !ok {
            return Ok(Match::Skip(
                "the bias varies along more than the requantization axis".into(),
            ));
        }
        Ok(Match::Apply((root, x, values)))
    }

    fn rewrite(&self, (root, x, bias): Self::Found, rw: &mut Rewriter) -> Result<()> {
        let mut p = requant_of(rw.model(), root).expect("matched");
        let n = p.channels().max(bias.len());
        let widen = |v: &Vec<i64>| {
            if v.len() == n {
                v.clone()
            } else {
                vec![v[0]; n]
            }
        };
        p.multiplier = widen(&p.multiplier);
        p.offset = widen(&p.offset);
        p.shift = if p.shift.len() == n {
            p.shift.clone()
        } else {
            vec![p.shift[0]; n]
        };
        let b = if bias.len() == n {
            bias
        } else {
            vec![bias[0]; n]
        };
        for ((offset, &m), &bias) in p.offset.iter_mut().zip(&p.multiplier).zip(&b) {
            *offset += bias * m;
        }
        let old_input = rw.graph().input(root, 0).expect("input");
        set_requant(rw, root, &p, x);
        rw.erase_if_dead(old_input.node);
        Ok(())
    }
}

/// True when a requantization of inputs in `range` never reaches its clamp bounds.
fn clamp_never_binds(p: &RequantParams, range: (i64, i64)) -> bool {
    let unclamped = RequantParams {
        lo: i64::MIN,
        hi: i64::MAX,
        ..p.clone()
    };
    let (lo, hi) = requant_range(&unclamped, range);
    lo >= p.lo && hi <= p.hi
}

struct MergeChain;

impl Pattern for MergeChain {
    type Found = (NodeId, NodeId, ValueId);

    fn match_at(&self, model: &Model, root: NodeId) -> Result<Match<Self::Found>> {
        let Some(outer) = requant_of(model, root) else {
            return Ok(Match::None);
        };
        let g = &model.graph;
        let Some(mid) = g.input(root, 0) else {
            return Ok(Match::None);
        };
        let Some(inner) = requant_of(model, mid.node) else {
            return Ok(Match::None);
        };
        let Some(x) = g.input(mid.node, 0) else {
            return Ok(Match::None);
        };
        if g.uses(mid).len() != 1 || g.is_graph_output(mid) {
            return Ok(Match::Skip(
                "the inner requantization has other readers".into(),
            ));
        }
        let Some(range) = range_of(model, x) else {
            return Ok(Match::Skip("no proven input range".into()));
        };
        if !clamp_never_binds(&inner, range)
            || inner.zero_point != 0
            || outer.channels() > 1 && inner.channels() > 1 && outer.axis != inner.axis
        {
            return Ok(Match::Skip("the inner clamp can bind".into()));
        }
        Ok(Match::Apply((root, mid.node, x)))
    }

    fn rewrite(&self, (root, inner_id, x): Self::Found, rw: &mut Rewriter) -> Result<()> {
        let outer = requant_of(rw.model(), root).expect("matched");
        let inner = requant_of(rw.model(), inner_id).expect("matched");
        let n = outer.channels().max(inner.channels());
        let ratios: Vec<f64> = (0..n)
            .map(|c| {
                inner.ratio(c.min(inner.channels() - 1)) * outer.ratio(c.min(outer.channels() - 1))
            })
            .collect();
        let range = range_of(rw.model(), x).expect("matched");
        let magnitude = (range.0 as i128).abs().max((range.1 as i128).abs());
        let bits = 64 - ((outer.hi - outer.lo) as u64).leading_zeros();
        let dyadics = choose_dyadics(&ratios, magnitude, bits)?;
        // y₁ ≈ (x·m₁ + b₁)/2^c₁, so y₂ ≈ (x·m₁m₂/2^c₁ + b₁m₂/2^c₁ + b₂)/2^c₂: the merged
        // offset is (b₁m₂/2^c₁ + b₂)·2^(C − c₂) at the new shift C.
        let pick = |p: &RequantParams, c: usize| p.channel(c.min(p.channels() - 1));
        let merged = RequantParams {
            multiplier: dyadics.iter().map(|d| d.multiplier).collect(),
            offset: (0..n)
                .map(|c| {
                    let ((_, b1, c1), (m2, b2, c2)) = (pick(&inner, c), pick(&outer, c));
                    let at_outer_input = b1 as f64 * m2 as f64 / 2f64.powi(c1 as i32) + b2 as f64;
                    (at_outer_input * 2f64.powi(dyadics[c].shift as i32 - c2 as i32)).round() as i64
                })
                .collect(),
            shift: dyadics.iter().map(|d| d.shift).collect(),
            axis: if inner.channels() > 1 {
                inner.axis
            } else {
                outer.axis
            },
            ..outer
        };
        set_requant(rw, root, &merged, x);
        rw.erase_if_dead(inner_id);
        Ok(())
    }
}

struct IntoDequantize;

impl Pattern for IntoDequantize {
    type Found = (NodeId, ValueId, Vec<f64>, usize);

    fn roots(&self) -> &[&str] {
        &["DequantizeLinear"]
    }

    fn match_at(&self, model: &Model, root: NodeId) -> Result<Match<Self::Found>> {
        let g = &model.graph;
        let inputs = g.inputs_of(root);
        let Some(q) = inputs[0] else {
            return Ok(Match::None);
        };
        let Some(p) = requant_of(model, q.node) else {
            return Ok(Match::None);
        };
        if g.uses(q).len() != 1 || g.is_graph_output(q) {
            return Ok(Match::None);
        }
        let Some(x) = g.input(q.node, 0) else {
            return Ok(Match::None);
        };
        let Some(range) = range_of(model, x) else {
            return Ok(Match::None);
        };
        let Some(scale) = inputs.get(1).copied().flatten().and_then(|s| g.constant(s)) else {
            return Ok(Match::None);
        };
        let Ok(scale) = scale.decode().map(|a| a.to_f64_vec()) else {
            return Ok(Match::None);
        };
        let zero_point = match inputs.get(2).copied().flatten() {
            Some(z) => g
                .constant(z)
                .and_then(|t| t.decode().ok())
                .and_then(|a| a.to_i64_vec().ok())
                .map(|v| v[0]),
            None => Some(0),
        };
        if zero_point != Some(p.zero_point)
            || !clamp_never_binds(&p, range)
            || p.offset.iter().any(|&o| o != 0)
        {
            return Ok(Match::Skip("the requantization clamps or shifts".into()));
        }
        if scale.len() != 1 {
            return Ok(Match::None);
        }
        let n = p.channels();
        let scales: Vec<f64> = (0..n).map(|c| scale[0] * p.ratio(c)).collect();
        Ok(Match::Apply((root, x, scales, p.axis)))
    }

    fn rewrite(&self, (root, x, scales, axis): Self::Found, rw: &mut Rewriter) -> Result<()> {
        let y = ValueId {
            node: root,
            slot: 0,
        };
        let scale = if scales.len() == 1 {
            Array::scalar(scales[0] as f32)
        } else {
            Array::from_vec(&[scales.len()], scales.iter().map(|&s| s as f32).collect())?
        };
        let s = rw.constant("scale", &scale)?;
        let attrs = if scales.len() > 1 {
            vec![crate::ir::attr::int("axis", axis as i64)]
        } else {
            vec![]
        };
        let id = rw.op_node(
            Op::new("DequantizeLinear", ""),
            "dequantized",
            &[Some(x), Some(s)],
            attrs,
            1,
        )?;
        rw.replace(y, ValueId { node: id, slot: 0 })
    }
}
