//! Algebra on requantizations: biases into offsets, chains into one, requantizations into
//! the dequantizations and tables that read them.

use super::super::prelude::*;

use crate::ir::{Array, Op};
use crate::lower::engine::{choose_dyadics, clamp_span, requant_range};
use crate::ops::intone::DOMAIN;
use crate::quant::RequantParams;

/// Folds biases into requantizations, merges chains, and requantizations into the
/// dequantizations and constant tables that read them.
pub(super) fn run(model: &mut Model, cx: &mut PassContext) -> Result<()> {
    apply_greedily(&FoldBias, model, cx, MAX_ROUNDS)?;
    apply_greedily(&MergeChain, model, cx, MAX_ROUNDS)?;
    apply_greedily(&IntoDequantize, model, cx, MAX_ROUNDS)?;
    apply_greedily(&IntoTable, model, cx, MAX_ROUNDS)
}

/// `Requant(Gather(T, i))` with a constant 1-D table: `Gather(requant(T), i)`. Exact (the
/// requantization is applied to every entry at compile time).
struct IntoTable;

impl Pattern for IntoTable {
    type Found = (NodeId, NodeId, Array);

    fn roots(&self) -> Roots {
        REQUANT
    }

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
        rw.annotate(y, |v| v.quant = facts);
        rw.replace(out, y)
    }
}

/// The roots of the patterns that rewrite requantizations.
const REQUANT: Roots = Roots::Ops {
    domain: DOMAIN,
    op_types: &["Requant"],
};

fn requant_of(model: &Model, id: NodeId) -> Option<RequantParams> {
    let op = model.graph.op(id)?;
    (op.domain() == DOMAIN && op.op_type() == "Requant")
        .then(|| crate::ops::intone::requant::from_op(op).ok())
        .flatten()
}

fn range_of(model: &Model, v: ValueId) -> Option<(i64, i64)> {
    model.graph.value(v).quant.as_ref().and_then(|q| q.range)
}

/// Replaces a Requant node's parameters and input, keeping its output value.
fn set_requant(
    rw: &mut Rewriter,
    id: NodeId,
    params: &RequantParams,
    input: ValueId,
) -> Result<()> {
    let op = crate::ops::intone::requant::to_op(params, rw.graph().op(id).expect("op").name());
    rw.modify_op(id, |o| o.proto.attribute = op.proto.attribute)?;
    rw.set_input(id, 0, Some(input));
    Ok(())
}

struct FoldBias;

impl Pattern for FoldBias {
    type Found = (NodeId, ValueId, Vec<i64>);

    fn roots(&self) -> Roots {
        REQUANT
    }

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
        set_requant(rw, root, &p, x)?;
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

    fn roots(&self) -> Roots {
        REQUANT
    }

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
        let span = clamp_span(outer.lo, outer.hi, outer.zero_point);
        let dyadics = choose_dyadics(&ratios, magnitude, span)?;
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
        set_requant(rw, root, &merged, x)?;
        rw.erase_if_dead(inner_id);
        Ok(())
    }
}

struct IntoDequantize;

impl Pattern for IntoDequantize {
    type Found = (NodeId, ValueId, Vec<f64>, usize);

    fn roots(&self) -> Roots {
        Roots::onnx(&["DequantizeLinear"])
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
