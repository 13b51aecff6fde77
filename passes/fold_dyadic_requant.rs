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
use crate::lower::engine::{Lowering, choose_dyadics, requant_range};
use crate::lower::island;
use crate::ops;
use crate::ops::intone::DOMAIN;
use crate::ops::table::{self, ChannelAxis, IntegerTypes, Movement};
use crate::quant::RequantParams;

pub struct FoldDyadicRequant;

impl Pass for FoldDyadicRequant {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        apply_greedily(&ShapeOfDequantize, model, cx, MAX_ROUNDS)?;
        // Moving data movement and concatenations past dequantizations feeds each other (a
        // Slice moved exposes a Concat of dequantized values, and so on): to a fixpoint.
        let facts = cx.facts(model)?;
        let movement = MoveBeforeDequantize { facts };
        for _ in 0..MAX_ROUNDS {
            let before = cx.report.rewritten;
            apply_greedily(&movement, model, cx, MAX_ROUNDS)?;
            apply_greedily(&ConcatOfDequantized, model, cx, MAX_ROUNDS)?;
            // Data movement moved past dequantizations leaves new Shape readers behind.
            apply_greedily(&ShapeOfDequantize, model, cx, MAX_ROUNDS)?;
            if cx.report.rewritten == before {
                break;
            }
        }
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

    fn roots(&self) -> Roots {
        Roots::onnx(&["Shape", "Size"])
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
        rw.set_input(root, 0, Some(q));
        rw.erase_if_dead(old.node);
        Ok(())
    }
}

/// Data movement of a per-tensor dequantized value moves the integers instead:
/// `T(DequantizeLinear(q, s, zp))` → `DequantizeLinear(T(q), s, zp)`. Exact. Per channel, a
/// Gather of one index on another axis and a Reshape that keeps the last (channel) axis move
/// too; a `Cast` to float of the (float) dequantized value is dropped.
struct MoveBeforeDequantize {
    /// Shapes of the graph before the rewrites (outputs of movement ops keep theirs).
    facts: std::sync::Arc<ops::GraphFacts>,
}

/// What moving an op before a dequantization does to it.
enum Move {
    /// The op runs on the integers; the dequantization keeps its parameters.
    PerTensor,
    /// The op runs on the integers; the per-channel axis ends up at this axis.
    Channels(i64),
    /// A float Cast of the (float) dequantized value: nothing to do.
    DropCast,
    /// A ReduceMean over this many elements: an integer sum at scale s/count.
    MeanOf(i64),
}

impl Pattern for MoveBeforeDequantize {
    type Found = (NodeId, NodeId, Move);

    fn roots(&self) -> Roots {
        // Data movement, and the two ops with their own rule.
        Roots::Where(|op| table::moves_data(op) || op.is("Cast") || op.is("ReduceMean"))
    }

    fn match_at(&self, model: &Model, root: NodeId) -> Result<Match<Self::Found>> {
        let g = &model.graph;
        let Some(dq) = g.input(root, 0).and_then(|v| dequantize_of(model, v)) else {
            return Ok(Match::None);
        };
        let op = g.op(root).expect("op");
        if op.is("Cast") {
            // DequantizeLinear yields f32 here; a Cast to f32 of it does nothing.
            let to_float = op.attr_int("to", 0)? == crate::ir::DataType::Float as i32 as i64;
            return Ok(if to_float {
                Match::Apply((root, dq, Move::DropCast))
            } else {
                Match::None
            });
        }
        let scales = g
            .input(dq, 1)
            .and_then(|s| g.constant(s))
            .and_then(|t| t.element_count().ok());
        let row = table::of(op);
        if row.is_some_and(|r| r.movement != Movement::Computes) {
            if g.node(root).outputs.len() != 1 {
                return Ok(Match::Skip("data movement with several outputs".into()));
            }
            // Types of values this pass created are not in `facts`: those are only ever
            // needed by ops with integer kernels for some types only.
            let integer = row.map_or(IntegerTypes::None, |r| r.integer);
            let stored = g.input(dq, 0).and_then(|q| self.facts.get(q)?.dtype);
            if integer != IntegerTypes::All && !stored.is_some_and(|t| integer.accepts(t)) {
                return Ok(Match::Skip(format!(
                    "no integer {} for the dequantized type",
                    op.op_type()
                )));
            }
        }
        if op.is("Pad") {
            // Zero padding of a symmetric value pads its integers with zeros.
            let zero_pad = g.input(root, 2).is_none_or(|c| {
                g.constant(c)
                    .and_then(|t| t.decode().ok())
                    .is_some_and(|a| a.to_f64_vec().iter().all(|&v| v == 0.0))
            });
            let symmetric = g.input(dq, 2).is_none_or(|z| {
                g.constant(z)
                    .and_then(|t| t.decode().ok())
                    .is_some_and(|a| a.to_f64_vec().iter().all(|&v| v == 0.0))
            });
            let constant_mode = op.attr_string("mode")?.is_none_or(|m| m == "constant");
            if !(zero_pad && symmetric && constant_mode && scales == Some(1)) {
                return Ok(Match::Skip(
                    "a Pad that is not zero padding of a per-tensor value".into(),
                ));
            }
        }
        if op.is("ReduceMean") {
            // A mean of a symmetric per-tensor value: the integer sum at scale s/count, when
            // the reduced axes have known sizes and the sum fits int32. Only when the mean is
            // the dequantization's one reader: otherwise the float value stays and the move
            // only adds a second dequantization (a decomposed LayerNorm's mean, say).
            if g.uses(ValueId { node: dq, slot: 0 }).len() != 1 {
                return Ok(Match::Skip(
                    "the dequantized value has other readers".into(),
                ));
            }
            let count = self.reduced_count(model, root, ValueId { node: dq, slot: 0 });
            let range = g
                .input(dq, 0)
                .and_then(|q| g.value(q).quant.as_ref()?.range);
            let symmetric = g.input(dq, 2).is_none_or(|z| {
                g.constant(z)
                    .and_then(|t| t.decode().ok())
                    .is_some_and(|a| a.to_f64_vec().iter().all(|&v| v == 0.0))
            });
            return Ok(match (count, range) {
                (Some(n), Some((lo, hi)))
                    if scales == Some(1)
                        && symmetric
                        && (lo.min(0) as i128 * n as i128) >= i32::MIN as i128
                        && (hi.max(0) as i128 * n as i128) <= i32::MAX as i128 =>
                {
                    Match::Apply((root, dq, Move::MeanOf(n)))
                }
                _ => Match::Skip("a mean over unknown sizes, or one that could overflow".into()),
            });
        }
        if scales == Some(1) {
            return Ok(Match::Apply((root, dq, Move::PerTensor)));
        }
        // Per channel: a Gather of one index along another axis keeps the channels (on an
        // axis one lower when the gathered axis came before them).
        let channel = g.op(dq).expect("op").attr_int("axis", 1)?;
        let shape = |v: ValueId| self.facts.get(v).and_then(|f| f.shape.clone());
        let x = ValueId { node: dq, slot: 0 };
        let y = ValueId {
            node: root,
            slot: 0,
        };
        let channels = row.map_or(ChannelAxis::Lost, |r| r.channel);
        if channels == ChannelAxis::LastKeptByReshape {
            if let (Some(from), Some(to), Some(c)) = (shape(x), shape(y), scales) {
                let last = |s: &Vec<crate::ops::Dim>| s.last().and_then(|d| d.known());
                if channel as usize + 1 == from.len()
                    && last(&from) == Some(c as i64)
                    && last(&to) == Some(c as i64)
                {
                    return Ok(Match::Apply((
                        root,
                        dq,
                        Move::Channels(to.len() as i64 - 1),
                    )));
                }
            }
            return Ok(Match::Skip(
                "a per-channel reshape that moves the channel axis".into(),
            ));
        }
        let index = g.input(root, 1).and_then(|i| g.constant(i));
        let scalar_index = index.is_some_and(|t| t.dims().is_empty());
        let gathered = op.attr_int("axis", 0)?;
        if channels == ChannelAxis::GatherOtherAxis
            && scalar_index
            && gathered >= 0
            && channel > 0
            && gathered != channel
        {
            let moved = if gathered < channel {
                channel - 1
            } else {
                channel
            };
            return Ok(Match::Apply((root, dq, Move::Channels(moved))));
        }
        Ok(Match::Skip("the dequantization is per channel".into()))
    }

    fn rewrite(&self, (root, dq, how): Self::Found, rw: &mut Rewriter) -> Result<()> {
        let channel = match how {
            Move::MeanOf(count) => return mean_as_sum(rw, root, dq, count),
            Move::DropCast => {
                let x = ValueId { node: dq, slot: 0 };
                return rw.replace(
                    ValueId {
                        node: root,
                        slot: 0,
                    },
                    x,
                );
            }
            Move::PerTensor => None,
            Move::Channels(axis) => Some(axis),
        };
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
        rw.annotate(moved, |v| v.quant = facts);
        dequantize_like(rw, dq, &dq_op, moved, root)
    }
}

/// `root`'s output becomes a dequantization of `q` with `dq`'s scale and zero point (and
/// `dq_op`'s attributes).
fn dequantize_like(
    rw: &mut Rewriter,
    dq: NodeId,
    dq_op: &Op,
    q: ValueId,
    root: NodeId,
) -> Result<()> {
    let mut inputs = rw.graph().inputs_of(dq);
    inputs[0] = Some(q);
    let new = rw.op_node(
        Op::new("DequantizeLinear", ""),
        "dequantized",
        &inputs,
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

impl MoveBeforeDequantize {
    /// Elements per mean of a ReduceMean over `x`, when the axes and their sizes are known.
    fn reduced_count(&self, model: &Model, id: NodeId, x: ValueId) -> Option<i64> {
        let g = &model.graph;
        let shape = self.facts.get(x)?.shape.clone()?;
        let op = g.op(id)?;
        let axes: Vec<i64> = match op.attr_ints("axes").ok().flatten() {
            Some(a) => a,
            None => g
                .constant(g.input(id, 1)?)?
                .decode()
                .ok()?
                .to_f64_vec()
                .into_iter()
                .map(|v| v as i64)
                .collect(),
        };
        let rank = shape.len() as i64;
        axes.iter()
            .map(|&a| {
                shape
                    .get((if a < 0 { a + rank } else { a }) as usize)?
                    .known()
            })
            .product()
    }
}

/// `ReduceMean(DQ(q, s))` → `DQ(ReduceSum(q), s/count)`.
fn mean_as_sum(rw: &mut Rewriter, root: NodeId, dq: NodeId, count: i64) -> Result<()> {
    let op = rw.graph().op(root).expect("op").clone();
    let q = rw.graph().input(dq, 0).expect("input");
    // 8-bit values are summed in int32.
    let narrow = rw
        .graph()
        .value(q)
        .quant
        .as_ref()
        .is_none_or(|f| f.bits <= 8);
    let wide = if narrow {
        let to = crate::ir::attr::int("to", crate::ir::DataType::Int32 as i32 as i64);
        rw.op("Cast", "to_i32", &[q], vec![to])?
    } else {
        q
    };
    let mut inputs = rw.graph().inputs_of(root);
    inputs[0] = Some(wide);
    let sum = rw.op_node(
        Op::new("ReduceSum", ""),
        "int_sum",
        &inputs,
        op.attrs().to_vec(),
        1,
    )?;
    let sum = ValueId { node: sum, slot: 0 };
    let mut facts = rw.graph().value(q).quant.clone();
    if let Some(f) = facts.as_mut() {
        f.range = f
            .range
            .map(|(lo, hi)| (lo.min(0) * count, hi.max(0) * count));
        f.bits = 32;
        if let crate::ir::quant::Scale::PerTensor(s) = &mut f.scale {
            *s /= count as f64;
        }
    }
    rw.annotate(sum, |v| v.quant = facts);
    let scale = rw
        .graph()
        .input(dq, 1)
        .and_then(|c| rw.graph().constant(c))
        .and_then(|t| t.decode().ok())
        .map(|a| a.to_f64_vec()[0])
        .expect("a constant scale");
    let scale = rw.constant("mean_scale", &Array::scalar((scale / count as f64) as f32))?;
    let new = rw.op("DequantizeLinear", "dequantized", &[sum, scale], vec![])?;
    rw.replace(
        ValueId {
            node: root,
            slot: 0,
        },
        new,
    )
}

/// `Concat` of values dequantized with one per-tensor scale and zero point concatenates the
/// integers: `Concat(DQ(a, s), DQ(b, s))` → `DQ(Concat(a, b), s)`. Exact.
struct ConcatOfDequantized;

impl Pattern for ConcatOfDequantized {
    type Found = (NodeId, Vec<ValueId>, NodeId);

    fn roots(&self) -> Roots {
        Roots::onnx(&["Concat"])
    }

    fn match_at(&self, model: &Model, root: NodeId) -> Result<Match<Self::Found>> {
        let g = &model.graph;
        let inputs: Vec<Option<ValueId>> = g.inputs_of(root);
        let dqs: Option<Vec<NodeId>> = inputs
            .iter()
            .map(|v| v.and_then(|v| dequantize_of(model, v)))
            .collect();
        let Some(dqs) = dqs.filter(|d| !d.is_empty()) else {
            return Ok(Match::None);
        };
        // (scale, zero point) of each dequantization.
        let encoding = |dq: NodeId| -> Option<(Vec<f64>, Vec<f64>)> {
            let values = |slot: usize| {
                g.input(dq, slot)
                    .and_then(|c| g.constant(c))
                    .and_then(|t| t.decode().ok())
                    .map(|a| a.to_f64_vec())
            };
            Some((values(1)?, values(2).unwrap_or_default()))
        };
        let first = encoding(dqs[0]);
        let same = first.as_ref().is_some_and(|(s, _)| s.len() == 1)
            && dqs.iter().all(|&d| encoding(d) == first);
        let types: Vec<_> = dqs
            .iter()
            .filter_map(|&d| g.input(d, 0))
            .map(|q| g.value(q).quant.as_ref().map(|f| (f.bits > 8, f.signed)))
            .collect();
        if !same || types.windows(2).any(|w| w[0] != w[1]) {
            return Ok(Match::Skip(
                "inputs dequantize with different encodings".into(),
            ));
        }
        let qs = dqs.iter().filter_map(|&d| g.input(d, 0)).collect();
        Ok(Match::Apply((root, qs, dqs[0])))
    }

    fn rewrite(&self, (root, qs, dq): Self::Found, rw: &mut Rewriter) -> Result<()> {
        let op = rw.graph().op(root).expect("op").clone();
        let inputs: Vec<Option<ValueId>> = qs.iter().map(|&q| Some(q)).collect();
        let joined = rw.op_node(
            Op::new("Concat", ""),
            "int",
            &inputs,
            op.attrs().to_vec(),
            1,
        )?;
        let joined = ValueId {
            node: joined,
            slot: 0,
        };
        // The hull of the inputs' proven ranges.
        let mut facts = rw.graph().value(qs[0]).quant.clone();
        if let Some(f) = facts.as_mut() {
            for &q in &qs[1..] {
                if let (Some(r), Some(o)) = (
                    f.range,
                    rw.graph().value(q).quant.as_ref().and_then(|g| g.range),
                ) {
                    f.range = Some((r.0.min(o.0), r.1.max(o.1)));
                }
            }
        }
        rw.annotate(joined, |v| v.quant = facts);
        let dq_op = rw.graph().op(dq).expect("op").clone();
        dequantize_like(rw, dq, &dq_op, joined, root)
    }
}

/// A quantization of a dequantized value (`Cast(Clip(Round(DequantizeLinear(q)·c)))` or
/// `QuantizeLinear`) becomes one requantization of `q`: the float island between them closes.
fn close_islands(model: &mut Model, cx: &mut PassContext) -> Result<()> {
    let facts = cx.facts(model)?;
    let order = model.graph.topological_order()?;
    let mut lw = Lowering::new(model, facts, cx.options);
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
