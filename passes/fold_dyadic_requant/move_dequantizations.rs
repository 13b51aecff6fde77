//! Dequantizations move after the ops that only move, concatenate, measure or average the
//! integers they read.

use super::super::prelude::*;

use crate::ir::{Array, Op};
use crate::ops;
use crate::ops::table::{self, ChannelAxis, IntegerTypes, Movement};
use crate::pass::matcher::out;

/// Moves dequantizations after the data movement, concatenations, shape reads and means that
/// read them. Each move can expose another (a Slice moved exposes a Concat of dequantized
/// values, and so on): to a fixpoint.
pub(super) fn run(model: &mut Model, cx: &mut PassContext) -> Result<()> {
    apply_greedily(&ShapeOfDequantize, model, cx, MAX_ROUNDS)?;
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
    Ok(())
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
            // A Split of a per-tensor value moves like any other movement, output by output.
            if g.node(root).outputs.len() != 1 && scales != Some(1) {
                return Ok(Match::Skip(
                    "per-channel data movement with several outputs".into(),
                ));
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
        if row.is_some_and(|r| r.movement == Movement::Padded) {
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
        let outputs = rw.graph().node(root).outputs.len();
        let moved = rw.op_node(
            Op::new(op.op_type(), ""),
            "int",
            &inputs,
            op.attrs().to_vec(),
            outputs,
        )?;
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
        for slot in 0..outputs {
            let moved = ValueId { node: moved, slot };
            let facts = facts.clone();
            rw.annotate(moved, |v| v.quant = facts);
            dequantize_like(rw, dq, &dq_op, moved, ValueId { node: root, slot })?;
        }
        Ok(())
    }
}

/// `old` becomes a dequantization of `q` with `dq`'s scale and zero point (and `dq_op`'s
/// attributes).
fn dequantize_like(
    rw: &mut Rewriter,
    dq: NodeId,
    dq_op: &Op,
    q: ValueId,
    old: ValueId,
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
    rw.replace(old, ValueId { node: new, slot: 0 })
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
        dequantize_like(rw, dq, &dq_op, joined, out(root))
    }
}
