//! Range analysis of integer graphs: intervals propagate from constants, quantized inputs and
//! clamps through every integer op. [`verify`] refuses a graph whose integer arithmetic could
//! overflow its type, that divides by a value that could be 0 or −1, or whose integer matmul
//! operands a kernel of the targeted engines could saturate (`ops::matmul_kernels`), and names
//! the node.

use std::collections::HashMap;

use crate::ir::{Array, DataType, DataTypeInfo, Element, Model, NodeId, Op, ValueId};
use crate::ops::GraphFacts;
use crate::ops::matmul_kernels::{MatmulOperands, Operands, saturation};
use crate::ops::table::{self, IntervalRule};
use crate::{Error, Result};

/// An inclusive interval of integers.
pub type Interval = (i128, i128);

/// The representable interval of an integer type.
pub fn type_interval(t: DataType) -> Option<Interval> {
    Some(match t {
        DataType::Int8 => (i8::MIN as i128, i8::MAX as i128),
        DataType::Uint8 => (0, u8::MAX as i128),
        DataType::Int16 => (i16::MIN as i128, i16::MAX as i128),
        DataType::Uint16 => (0, u16::MAX as i128),
        DataType::Int32 => (i32::MIN as i128, i32::MAX as i128),
        DataType::Uint32 => (0, u32::MAX as i128),
        DataType::Int64 => (i64::MIN as i128, i64::MAX as i128),
        DataType::Uint64 => (0, u64::MAX as i128),
        DataType::Bool => (0, 1),
        _ => return None,
    })
}

fn hull(a: Interval, b: Interval) -> Interval {
    (a.0.min(b.0), a.1.max(b.1))
}

fn array_interval(a: &Array) -> Option<Interval> {
    if !a.dtype().is_integer() && a.dtype() != DataType::Bool {
        return None;
    }
    crate::for_each_array!(a, v => {
        let mut it = v.iter().map(|x| x.to_i128().unwrap_or(0));
        let first = it.next()?;
        Some(it.fold((first, first), |(lo, hi), x| (lo.min(x), hi.max(x))))
    })
}

/// Propagates intervals; returns per-value intervals (where known) and the ops that were
/// checked, or the first violation.
pub fn analyze(
    model: &Model,
    facts: &GraphFacts,
    dim_bound: i64,
    policy: MatmulOperands,
) -> Result<(HashMap<ValueId, Interval>, usize)> {
    let g = &model.graph;
    let mut iv: HashMap<ValueId, Interval> = HashMap::new();
    for id in g.node_ids() {
        let v = ValueId { node: id, slot: 0 };
        if g.op(id).is_none() {
            // Graph inputs stay unbounded: arithmetic the model itself does on them (token
            // positions, shapes) is not intone's to prove.
            if let Some(t) = g.constant(v) {
                if let Some(i) = t.decode().ok().as_ref().and_then(array_interval) {
                    iv.insert(v, i);
                }
            }
        }
    }
    let mut checked = 0;
    for id in g.topological_order()? {
        let op = g.op(id).expect("op");
        let inputs = g.inputs_of(id);
        let get = |i: usize| {
            inputs
                .get(i)
                .copied()
                .flatten()
                .and_then(|v| iv.get(&v).copied())
        };
        let out_type = facts
            .get(ValueId { node: id, slot: 0 })
            .and_then(|f| f.dtype);
        if let Some(t) = g.constant(ValueId { node: id, slot: 0 }) {
            if let Some(i) = t.decode().ok().as_ref().and_then(array_interval) {
                iv.insert(ValueId { node: id, slot: 0 }, i);
            }
            continue;
        }
        if !op.domain().is_empty() {
            continue;
        }
        if matches!(op.op_type(), "MatMulInteger" | "ConvInteger") {
            let operands = stored_operands(facts, op, &inputs, &get, dim_bound);
            if let Some(why) = saturation(&operands, policy) {
                return Err(Error::Pass {
                    pass: "range check".into(),
                    message: format!(
                        "{}: {why}; refusing a matmul that is not exact on every targeted CPU \
                         (--matmul-operands {policy})",
                        g.describe(id)
                    ),
                });
            }
        }
        let result = interval_of(model, facts, id, op, &inputs, &get, dim_bound)?;
        let Some(result) = result else { continue };
        if let (Some(t), Some(limits)) = (out_type, out_type.and_then(type_interval)) {
            if t.is_integer() && arithmetic(op.op_type()) {
                checked += 1;
                if result.0 < limits.0 || result.1 > limits.1 {
                    let from: Vec<String> = (0..inputs.len())
                        .filter_map(|i| get(i).map(|(lo, hi)| format!("[{lo}, {hi}]")))
                        .collect();
                    return Err(Error::Pass {
                        pass: "range check".into(),
                        message: format!(
                            "{}: the {} result can reach [{}, {}] (inputs in {}), outside {}; refusing a graph that can overflow",
                            g.describe(id),
                            t.short_name(),
                            result.0,
                            result.1,
                            from.join(" and "),
                            t.short_name()
                        ),
                    });
                }
            }
        }
        for v in g.outputs_of(id) {
            iv.insert(v, result);
        }
    }
    Ok((iv, checked))
}

fn arithmetic(op_type: &str) -> bool {
    matches!(
        op_type,
        "Add"
            | "Sub"
            | "Mul"
            | "Div"
            | "MatMulInteger"
            | "ConvInteger"
            | "ReduceSum"
            | "Neg"
            | "Abs"
            | "Sum"
    )
}

/// `d` when a Sub's inputs are `x` and `Mul(Div(x, d), d)` for a positive constant scalar `d`:
/// the remainder of `x` by `d`, in [0, d) for `x ≥ 0` (truncating Div is then a floor).
fn remainder_divisor(model: &Model, inputs: &[Option<ValueId>]) -> Option<i64> {
    let g = &model.graph;
    let (x, product) = (inputs.first().copied()??, inputs.get(1).copied()??);
    let scalar = |v: ValueId| -> Option<i64> {
        let a = g.constant(v)?.decode().ok()?;
        match a.to_i64_vec().ok()?[..] {
            [d] if a.dtype().is_integer() => Some(d),
            _ => None,
        }
    };
    let op_is = |v: ValueId, t: &str| g.op(v.node).is_some_and(|op| op.is(t));
    if !op_is(product, "Mul") {
        return None;
    }
    let (quotient, d) = (
        g.input(product.node, 0)?,
        scalar(g.input(product.node, 1)?)?,
    );
    if !op_is(quotient, "Div") || g.input(quotient.node, 0)? != x {
        return None;
    }
    let d2 = scalar(g.input(quotient.node, 1)?)?;
    (d == d2 && d > 0).then_some(d)
}

fn mul(a: Interval, b: Interval) -> Interval {
    let c = [a.0 * b.0, a.0 * b.1, a.1 * b.0, a.1 * b.1];
    (*c.iter().min().expect("4"), *c.iter().max().expect("4"))
}

/// The interval of an op's (first) output.
fn interval_of(
    model: &Model,
    facts: &GraphFacts,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
    get: &dyn Fn(usize) -> Option<Interval>,
    dim_bound: i64,
) -> Result<Option<Interval>> {
    let g = &model.graph;
    let y = ValueId { node: id, slot: 0 };
    let out_type = facts.get(y).and_then(|f| f.dtype);
    let dim = |v: Option<ValueId>, from_end: usize| -> i128 {
        v.and_then(|v| facts.get(v))
            .and_then(|f| f.shape.as_ref())
            .and_then(|s| s.len().checked_sub(from_end + 1).and_then(|i| s[i].known()))
            .unwrap_or(dim_bound) as i128
    };
    match table::of(op).map_or(IntervalRule::Unknown, |r| r.interval) {
        IntervalRule::OfInput => return Ok(get(0)),
        IntervalRule::WithPadding => {
            return Ok(get(0).map(|a| get(2).map_or(hull(a, (0, 0)), |p| hull(a, p))));
        }
        IntervalRule::HullOfInputs => {
            return Ok((0..inputs.len())
                .map(get)
                .collect::<Option<Vec<_>>>()
                .and_then(|v| v.into_iter().reduce(hull)));
        }
        IntervalRule::HullOfBranches => {
            return Ok(match (get(1), get(2)) {
                (Some(a), Some(b)) => Some(hull(a, b)),
                _ => None,
            });
        }
        IntervalRule::Arithmetic | IntervalRule::Unknown => {}
    }
    Ok(match op.op_type() {
        "Add" | "Sum" => match (get(0), get(1)) {
            (Some(a), Some(b)) => Some((a.0 + b.0, a.1 + b.1)),
            _ => None,
        },
        "Sub" => match (get(0), get(1)) {
            (Some(a), _) if a.0 >= 0 && remainder_divisor(model, inputs).is_some() => {
                let d = remainder_divisor(model, inputs).expect("checked");
                Some((0, (d as i128 - 1).min(a.1)))
            }
            (Some(a), Some(b)) => Some((a.0 - b.1, a.1 - b.0)),
            _ => None,
        },
        "Mul" => match (get(0), get(1)) {
            (Some(a), Some(b)) => Some(mul(a, b)),
            _ => None,
        },
        "Neg" => get(0).map(|a| (-a.1, -a.0)),
        "Abs" => get(0).map(|a| (0.max(a.0).max(-a.1), a.0.abs().max(a.1.abs()))),
        "Div" => {
            let Some(d) = get(1) else {
                if out_type.is_some_and(|t| t.is_integer()) {
                    return Err(Error::Pass {
                        pass: "range check".into(),
                        message: format!(
                            "{}: an integer divisor of unknown range could be 0 or −1",
                            g.describe(id)
                        ),
                    });
                }
                return Ok(None);
            };
            if d.0 <= 0 && d.1 >= 0 || d.0 <= -1 && d.1 >= -1 {
                return Err(Error::Pass {
                    pass: "range check".into(),
                    message: format!(
                        "{}: the divisor can be in [{}, {}], which includes 0 or −1",
                        g.describe(id),
                        d.0,
                        d.1
                    ),
                });
            }
            match get(0) {
                Some(a) => {
                    let c = [a.0 / d.0, a.0 / d.1, a.1 / d.0, a.1 / d.1];
                    Some((*c.iter().min().expect("4"), *c.iter().max().expect("4")))
                }
                None => None,
            }
        }
        "Clip" => {
            let (lo, hi) = (get(1), get(2));
            // An input of unknown range still ends up between two known bounds.
            get(0).or(lo.zip(hi).map(|(l, h)| (l.0, h.1))).map(|a| {
                let lo_v = lo.map_or(a.0, |l| a.0.max(l.0));
                let hi_v = hi.map_or(a.1, |h| a.1.min(h.1));
                (lo_v.min(hi_v), hi_v.max(lo_v))
            })
        }
        "Max" => match (get(0), get(1)) {
            (Some(a), Some(b)) => Some((a.0.max(b.0), a.1.max(b.1))),
            _ => None,
        },
        "Min" => match (get(0), get(1)) {
            (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.min(b.1))),
            _ => None,
        },
        "Relu" => get(0).map(|a| (a.0.max(0), a.1.max(0))),
        "Cast" | "CastLike" => {
            let target = out_type.and_then(type_interval);
            match (get(0), target) {
                (Some(a), Some(t)) if a.0 >= t.0 && a.1 <= t.1 => Some(a),
                (Some(a), Some(_)) => {
                    return Err(Error::Pass {
                        pass: "range check".into(),
                        message: format!(
                            "{}: values in [{}, {}] would wrap in the cast",
                            g.describe(id),
                            a.0,
                            a.1
                        ),
                    });
                }
                // From float: a Clip right before bounds it; otherwise it is the model's own.
                (None, Some(t)) => {
                    let from_clip = inputs[0]
                        .and_then(|v| g.op(v.node))
                        .filter(|p| p.is("Clip"));
                    from_clip.and_then(|_| clip_of_float(model, inputs[0].expect("input"), t))
                }
                _ => None,
            }
        }
        "MatMulInteger" | "ConvInteger" => {
            let a = get(0).map(|a| shift_by_zero_point(a, get(2)));
            let conv = op.op_type() == "ConvInteger";
            // A constant weight bounds each output channel exactly: Σ_k max(w·a_lo, w·a_hi).
            let weight = inputs[1]
                .and_then(|w| g.constant(w))
                .and_then(|t| t.decode().ok());
            let b_zero = get(3).map_or(0, |z| z.0);
            let stored: Option<(Vec<i16>, Vec<usize>)> = match weight.as_ref() {
                Some(w @ (Array::I8(_) | Array::U8(_))) => Some((
                    w.to_f64_vec().iter().map(|&x| x as i16).collect(),
                    w.shape().to_vec(),
                )),
                _ => None,
            };
            if let (Some(a), Some((values, shape))) = (a, stored) {
                return Ok(Some(per_channel_bound(&values, &shape, conv, a, b_zero)));
            }
            let b = get(1).map(|b| shift_by_zero_point(b, get(3)));
            let k: i128 = if conv {
                let w = inputs[1]
                    .and_then(|w| facts.get(w))
                    .and_then(|f| f.concrete_shape());
                w.map_or(dim_bound as i128, |s| {
                    s[1..].iter().product::<usize>() as i128
                })
            } else {
                dim(inputs[0], 0)
            };
            match (a, b) {
                (Some(a), Some(b)) => {
                    let p = mul(a, b);
                    Some((p.0 * k, p.1 * k))
                }
                _ => None,
            }
        }
        "ReduceSum" => {
            // Elements per sum: the reduced axes' sizes when the axes are constant and those
            // sizes known, else element counts, else the symbolic bound.
            let reduced = (|| {
                let shape = facts.get(inputs[0]?)?.shape.clone()?;
                let axes = g
                    .constant(inputs.get(1).copied().flatten()?)?
                    .decode()
                    .ok()?;
                let rank = shape.len() as i64;
                axes.to_f64_vec()
                    .into_iter()
                    .map(|a| {
                        let a = a as i64;
                        let a = if a < 0 { a + rank } else { a };
                        shape.get(a as usize)?.known().map(|d| d as i128)
                    })
                    .product::<Option<i128>>()
            })();
            let count: i128 = match (
                reduced,
                facts
                    .get(inputs[0].unwrap_or(y))
                    .and_then(|f| f.element_count()),
                facts.get(y).and_then(|f| f.element_count()),
            ) {
                (Some(r), _, _) => r,
                (None, Some(n), Some(m)) if m > 0 => (n / m) as i128,
                _ => dim_bound as i128,
            };
            get(0).map(|a| (a.0.min(0) * count, a.1.max(0) * count))
        }
        "BitShift" => match (get(0), get(1)) {
            (Some(a), Some(s)) if s.0 >= 0 && s.1 < 64 => {
                let right = op.attr_string("direction")?.as_deref() == Some("RIGHT");
                let c: Vec<i128> = [a.0, a.1]
                    .iter()
                    .flat_map(|&x| [s.0, s.1].map(|k| if right { x >> k } else { x << k }))
                    .collect();
                Some((*c.iter().min().expect("4"), *c.iter().max().expect("4")))
            }
            _ => None,
        },
        _ => None,
    })
}

/// Bounds of `Σ_k (w − zp)·a` per output channel (the last axis of a MatMul weight, the first
/// of a Conv weight), over `a` in `a`, hulled over channels.
fn per_channel_bound(
    values: &[i16],
    shape: &[usize],
    conv: bool,
    a: Interval,
    zero: i128,
) -> Interval {
    let channels = if conv {
        shape[0]
    } else {
        *shape.last().unwrap_or(&1)
    };
    let mut lo = vec![0i128; channels.max(1)];
    let mut hi = vec![0i128; channels.max(1)];
    let inner: usize = if conv {
        values.len() / channels.max(1)
    } else {
        1
    };
    for (i, &w) in values.iter().enumerate() {
        let c = if conv {
            i / inner.max(1)
        } else {
            i % channels.max(1)
        };
        let w = w as i128 - zero;
        let (p, q) = (w * a.0, w * a.1);
        lo[c] += p.min(q);
        hi[c] += p.max(q);
    }
    (
        lo.into_iter().min().unwrap_or(0),
        hi.into_iter().max().unwrap_or(0),
    )
}

fn shift_by_zero_point(a: Interval, zp: Option<Interval>) -> Interval {
    match zp {
        Some((z, _)) => (a.0 - z, a.1 - z),
        None => a,
    }
}

/// The integers a `Cast(Clip(float, lo, hi))` can produce.
fn clip_of_float(model: &Model, clip_out: ValueId, limits: Interval) -> Option<Interval> {
    let g = &model.graph;
    let bound = |slot: usize| -> Option<f64> {
        let v = g.input(clip_out.node, slot)?;
        let a = g.constant(v)?.decode().ok()?;
        a.to_f64_vec().first().copied()
    };
    let lo = bound(1)
        .map_or(limits.0, |v| v.ceil() as i128)
        .max(limits.0);
    let hi = bound(2)
        .map_or(limits.1, |v| v.floor() as i128)
        .min(limits.1);
    Some((lo, hi))
}

/// The stored operands of a `MatMulInteger`/`ConvInteger`: types and intervals (the type's
/// whole range where analysis knows nothing better) and the products summed per output.
fn stored_operands(
    facts: &GraphFacts,
    op: &Op,
    inputs: &[Option<ValueId>],
    get: &dyn Fn(usize) -> Option<Interval>,
    dim_bound: i64,
) -> Operands {
    // An operand of unknown type is taken as the saturating pair's (u8 A, s8 B).
    let dtype = |i: usize| {
        inputs
            .get(i)
            .copied()
            .flatten()
            .and_then(|v| facts.get(v))
            .and_then(|f| f.dtype)
            .unwrap_or(if i == 0 {
                DataType::Uint8
            } else {
                DataType::Int8
            })
    };
    let interval = |i: usize, t: DataType| {
        let whole = type_interval(t).unwrap_or((i8::MIN as i128, i8::MAX as i128));
        get(i).map_or(whole, |a| (a.0.max(whole.0), a.1.min(whole.1)))
    };
    let shape = |i: usize| {
        inputs
            .get(i)
            .copied()
            .flatten()
            .and_then(|v| facts.get(v))
            .and_then(|f| f.shape.clone())
    };
    let inner = if op.is("ConvInteger") {
        // Per output: C/group · kernel elements, all of W's dimensions after the first.
        shape(1).map_or(dim_bound as i128, |s| {
            s[1..]
                .iter()
                .map(|d| d.known().unwrap_or(dim_bound) as i128)
                .product()
        })
    } else {
        shape(0)
            .and_then(|s| s.last().and_then(|d| d.known()))
            .unwrap_or(dim_bound) as i128
    };
    let (a_type, b_type) = (dtype(0), dtype(1));
    Operands {
        a_type,
        a: interval(0, a_type),
        b_type,
        b: interval(1, b_type),
        inner,
    }
}

/// Checks the whole graph; returns how many integer ops were proven safe.
pub fn verify(model: &Model, dim_bound: i64, policy: MatmulOperands) -> Result<usize> {
    let facts = crate::ops::analyze(model, &Default::default(), crate::ops::EVALUATION_LIMIT)?;
    analyze(model, &facts, dim_bound, policy).map(|(_, checked)| checked)
}
