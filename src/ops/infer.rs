//! Element type and shape inference, op by op. Unknown ops and unknowable results give empty
//! facts; nothing here fails, because inference only ever enables optimisations.

use super::conv_transpose::ConvTransposeGeometry;
use super::eval::{normalize_axis, reshape_target, shape_range, slice_indices, split_sizes};
use super::facts::{Dim, Facts};
use crate::ir::{Array, DataType, DataTypeInfo, Op, dtype::data_type};

/// Facts for each output of `op`. `inputs[i]` is `None` for an omitted input.
pub fn infer(op: &Op, opset: i64, inputs: &[Option<&Facts>], outputs: usize) -> Vec<Facts> {
    let in_ = |i: usize| inputs.get(i).copied().flatten();
    let dtype = |i: usize| in_(i).and_then(|f| f.dtype);
    let shape = |i: usize| in_(i).and_then(|f| f.shape.clone());
    let same = |i: usize| Facts {
        dtype: dtype(i),
        shape: shape(i),
        ..Default::default()
    };
    let with = |dtype: Option<DataType>, shape: Option<Vec<Dim>>| Facts {
        dtype,
        shape,
        ..Default::default()
    };
    let rank = |i: usize| in_(i).and_then(Facts::rank);
    let ints_of = |i: usize| in_(i).and_then(Facts::known_ints);

    let domain = op.domain();
    if domain == super::intone::DOMAIN {
        // intone's internal ops keep their input's shape; `to` gives the element type.
        return vec![with(super::intone::requant::output_type(op), shape(0))];
    }
    if !(domain.is_empty() || domain == "com.microsoft") {
        return vec![];
    }
    let mut facts = match op.op_type() {
        // Same type and shape as input 0: the op table says which.
        _ if super::table::of(op).is_some_and(|r| r.shape == super::table::ShapeRule::OfInput) => {
            vec![same(0)]
        }
        // com.microsoft's forms, and the predicates.
        "Gelu" | "FastGelu" | "BiasGelu" | "IsNaN" | "IsInf" => {
            let mut f = same(0);
            if matches!(op.op_type(), "IsNaN" | "IsInf") {
                f.dtype = Some(DataType::Bool);
            }
            vec![f]
        }
        "LayerNormalization" | "SkipLayerNormalization" => vec![same(0)],
        "Dropout" => vec![same(0), with(Some(DataType::Bool), shape(0))],
        "Cast" => {
            let to = op
                .attr_int("to", 0)
                .ok()
                .and_then(|t| data_type(t as i32, "").ok());
            let mut f = with(to, shape(0));
            if to.is_some_and(|t| t.is_integer()) {
                f.elements = in_(0).and_then(|f| f.elements.clone());
            }
            vec![f]
        }
        "CastLike" => vec![with(dtype(1), shape(0))],
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Mod" | "Max" | "Min" | "Sum" | "Mean" | "And"
        | "Or" | "Xor" | "BitShift" | "BitwiseAnd" | "BitwiseOr" | "BitwiseXor" | "PRelu" => {
            let shapes: Vec<Option<Vec<Dim>>> = (0..inputs.len()).map(shape).collect();
            let mut f = with(dtype(0), broadcast_all(&shapes));
            f.elements = elementwise_elements(op.op_type(), inputs);
            vec![f]
        }
        "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" => {
            let mut f = with(Some(DataType::Bool), broadcast_all(&[shape(0), shape(1)]));
            f.elements = elementwise_elements(op.op_type(), inputs);
            vec![f]
        }
        "Where" => {
            let mut f = with(dtype(1), broadcast_all(&[shape(0), shape(1), shape(2)]));
            f.elements = elementwise_elements("Where", inputs);
            vec![f]
        }
        "Shape" => {
            let dims = shape(0);
            let (start, end) = rank(0)
                .and_then(|r| shape_range(op, r).ok())
                .unwrap_or((0, 0));
            let elements = dims.map(|d| d[start..end].to_vec());
            vec![Facts {
                dtype: Some(DataType::Int64),
                shape: rank(0).map(|_| vec![Dim::Known((end - start) as i64)]),
                elements,
                value: None,
            }]
        }
        "Size" => {
            let n = shape(0).and_then(|s| s.iter().map(Dim::known).product::<Option<i64>>());
            vec![Facts {
                dtype: Some(DataType::Int64),
                shape: Some(vec![]),
                elements: Some(vec![n.map_or(Dim::Unknown, Dim::Known)]),
                value: None,
            }]
        }
        "MatMul" | "MatMulInteger" | "QLinearMatMul" => {
            let (a, b) = if op.op_type() == "QLinearMatMul" {
                (0, 3)
            } else {
                (0, 1)
            };
            let out_type = match op.op_type() {
                "MatMulInteger" => Some(DataType::Int32),
                "QLinearMatMul" => in_(7).and_then(|f| f.dtype),
                _ => dtype(0),
            };
            vec![with(out_type, matmul_shape(shape(a), shape(b)))]
        }
        "Gemm" => {
            let trans = |name| op.attr_int(name, 0).unwrap_or(0) != 0;
            let s = match (shape(0), shape(1)) {
                (Some(a), Some(b)) if a.len() == 2 && b.len() == 2 => {
                    let m = if trans("transA") {
                        a[1].clone()
                    } else {
                        a[0].clone()
                    };
                    let n = if trans("transB") {
                        b[0].clone()
                    } else {
                        b[1].clone()
                    };
                    Some(vec![m, n])
                }
                _ => None,
            };
            vec![with(dtype(0), s)]
        }
        "Conv" | "ConvInteger" | "MaxPool" | "AveragePool" => {
            let out_type = if op.op_type() == "ConvInteger" {
                Some(DataType::Int32)
            } else {
                dtype(0)
            };
            let mut out = vec![with(out_type, conv_shape(op, shape(0), shape(1)))];
            if op.op_type() == "MaxPool" {
                out.push(with(Some(DataType::Int64), out[0].shape.clone()));
            }
            out
        }
        "ConvTranspose" => vec![with(dtype(0), conv_transpose_shape(op, shape(0), shape(1)))],
        "Resize" | "Upsample" => {
            let (scales, sizes) = match (op.op_type(), opset) {
                ("Resize", 11..) => (in_(2), in_(3)),
                _ => (in_(1), None),
            };
            let attr_scales = (op.op_type() == "Upsample" && opset < 9)
                .then(|| op.attr_floats("scales").ok().flatten())
                .flatten()
                .and_then(|s| Array::from_vec(&[s.len()], s).ok())
                .map(|a| Facts::of_array(std::sync::Arc::new(a)));
            let s = super::resize::Resize::read(op)
                .ok()
                .and_then(|r| r.output_dims(&shape(0)?, attr_scales.as_ref().or(scales), sizes));
            vec![with(
                dtype(0),
                s.or_else(|| rank(0).map(|r| vec![Dim::Unknown; r])),
            )]
        }
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let s = shape(0).map(|s| {
                s.iter()
                    .enumerate()
                    .map(|(i, d)| if i < 2 { d.clone() } else { Dim::Known(1) })
                    .collect()
            });
            vec![with(dtype(0), s)]
        }
        "Transpose" => {
            let s = shape(0).and_then(|s| {
                let perm: Vec<i64> = match op.attr_ints("perm").ok().flatten() {
                    Some(p) => p,
                    None => (0..s.len() as i64).rev().collect(),
                };
                perm.iter()
                    .map(|&p| normalize_axis(p, s.len(), op).ok().map(|p| s[p].clone()))
                    .collect()
            });
            let elements = in_(0)
                .and_then(|f| f.elements.clone())
                .filter(|_| rank(0) == Some(1));
            vec![Facts {
                dtype: dtype(0),
                shape: s,
                elements,
                value: None,
            }]
        }
        "Reshape" => {
            let allowzero = op.attr_int("allowzero", 0).unwrap_or(0) != 0;
            let target = shape_vector(in_(1));
            let s = target.map(|t| reshape_dims(shape(0).as_deref(), &t, allowzero));
            vec![Facts {
                dtype: dtype(0),
                shape: s,
                elements: in_(0).and_then(|f| f.elements.clone()),
                value: None,
            }]
        }
        "Flatten" => {
            let s = shape(0).and_then(|s| {
                let axis =
                    super::eval::flatten_axis(op.attr_int("axis", 1).ok()?, s.len(), op).ok()?;
                Some(vec![product(&s[..axis]), product(&s[axis..])])
            });
            vec![Facts {
                dtype: dtype(0),
                shape: s,
                elements: in_(0).and_then(|f| f.elements.clone()),
                value: None,
            }]
        }
        "Squeeze" | "Unsqueeze" => {
            let axes = if opset < 13 {
                op.attr_ints("axes").ok().flatten()
            } else {
                ints_of(1)
            };
            let squeeze = op.op_type() == "Squeeze";
            let s = shape(0).and_then(|s| {
                if squeeze {
                    let axes: Vec<usize> = match &axes {
                        Some(a) => a
                            .iter()
                            .map(|&x| normalize_axis(x, s.len(), op).ok())
                            .collect::<Option<_>>()?,
                        None if s.iter().all(|d| d.known().is_some()) => {
                            (0..s.len()).filter(|&i| s[i] == Dim::Known(1)).collect()
                        }
                        None => return None,
                    };
                    Some(
                        (0..s.len())
                            .filter(|i| !axes.contains(i))
                            .map(|i| s[i].clone())
                            .collect(),
                    )
                } else {
                    let axes = axes.as_ref()?;
                    let r = s.len() + axes.len();
                    let mut axes: Vec<usize> = axes
                        .iter()
                        .map(|&x| normalize_axis(x, r, op).ok())
                        .collect::<Option<_>>()?;
                    axes.sort_unstable();
                    let mut out = s.clone();
                    for a in axes {
                        if a > out.len() {
                            return None;
                        }
                        out.insert(a, Dim::Known(1));
                    }
                    Some(out)
                }
            });
            vec![Facts {
                dtype: dtype(0),
                shape: s,
                elements: in_(0).and_then(|f| f.elements.clone()),
                value: None,
            }]
        }
        "Concat" => {
            let shapes: Vec<Option<Vec<Dim>>> = (0..inputs.len()).map(shape).collect();
            let s = concat_shape(op, &shapes);
            // Concatenated 1-d element lists (shape vectors).
            let elements = if shapes
                .iter()
                .all(|s| s.as_ref().is_some_and(|s| s.len() == 1))
            {
                (0..inputs.len())
                    .map(|i| in_(i).and_then(|f| f.elements.clone()))
                    .collect::<Option<Vec<_>>>()
                    .map(|parts| parts.concat())
            } else {
                None
            };
            vec![Facts {
                dtype: dtype(0),
                shape: s,
                elements,
                value: None,
            }]
        }
        "Gather" => {
            let (data, indices) = (shape(0), shape(1));
            let s = match (&data, &indices) {
                (Some(d), Some(i)) => {
                    normalize_axis(op.attr_int("axis", 0).unwrap_or(0), d.len(), op)
                        .ok()
                        .map(|axis| {
                            let mut s = d[..axis].to_vec();
                            s.extend(i.iter().cloned());
                            s.extend(d[axis + 1..].iter().cloned());
                            s
                        })
                }
                _ => None,
            };
            // Picking entries of a shape vector.
            let elements = match (in_(0).and_then(|f| f.elements.clone()), ints_of(1), &data) {
                (Some(el), Some(idx), Some(d)) if d.len() == 1 => idx
                    .iter()
                    .map(|&i| {
                        let n = el.len() as i64;
                        let j = if i < 0 { i + n } else { i };
                        el.get(usize::try_from(j).ok()?).cloned()
                    })
                    .collect(),
                _ => None,
            };
            vec![Facts {
                dtype: dtype(0),
                shape: s,
                elements,
                value: None,
            }]
        }
        "GatherElements" => vec![with(dtype(0), shape(1))],
        "Slice" => vec![slice_facts(op, opset, inputs)],
        "Split" => {
            let s = shape(0);
            let axis = s.as_ref().and_then(|s| {
                normalize_axis(op.attr_int("axis", 0).unwrap_or(0), s.len(), op).ok()
            });
            let sizes: Option<Vec<i64>> = if opset < 13 {
                split_sizes(op, opset, None).ok().flatten()
            } else {
                ints_of(1)
            };
            (0..outputs)
                .map(|i| {
                    let shape = match (&s, axis) {
                        (Some(s), Some(axis)) => {
                            let mut out = s.clone();
                            out[axis] = match (&sizes, s[axis].known()) {
                                (Some(sz), _) => sz.get(i).map_or(Dim::Unknown, |&v| Dim::Known(v)),
                                (None, Some(d)) => {
                                    let chunk = (d as usize).div_ceil(outputs.max(1));
                                    Dim::Known(
                                        chunk.min((d as usize).saturating_sub(i * chunk)) as i64
                                    )
                                }
                                (None, None) => Dim::Unknown,
                            };
                            Some(out)
                        }
                        _ => None,
                    };
                    with(dtype(0), shape)
                })
                .collect()
        }
        "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL2"
        | "ReduceL1" | "ReduceSumSquare" | "ReduceLogSumExp" | "ArgMax" | "ArgMin" => {
            let arg = op.op_type().starts_with("Arg");
            let keep = op.attr_int("keepdims", 1).unwrap_or(1) != 0;
            let input_since = if op.op_type() == "ReduceSum" { 13 } else { 18 };
            let axes: Option<Vec<i64>> = if arg {
                Some(vec![op.attr_int("axis", 0).unwrap_or(0)])
            } else if opset < input_since {
                op.attr_ints("axes").ok().flatten()
            } else if inputs.len() > 1 && in_(1).is_some() {
                ints_of(1)
            } else {
                None
            };
            let noop = op.attr_int("noop_with_empty_axes", 0).unwrap_or(0) != 0;
            let s = shape(0).and_then(|s| {
                let axes: Vec<usize> = match &axes {
                    Some(a) if !a.is_empty() => a
                        .iter()
                        .map(|&x| normalize_axis(x, s.len(), op).ok())
                        .collect::<Option<_>>()?,
                    _ if inputs.len() > 1 && in_(1).is_some() && !arg && opset >= input_since => {
                        return None;
                    }
                    _ if noop => return Some(s.clone()),
                    _ => (0..s.len()).collect(),
                };
                Some(
                    (0..s.len())
                        .filter_map(|i| match (axes.contains(&i), keep) {
                            (true, true) => Some(Dim::Known(1)),
                            (true, false) => None,
                            _ => Some(s[i].clone()),
                        })
                        .collect(),
                )
            });
            vec![with(if arg { Some(DataType::Int64) } else { dtype(0) }, s)]
        }
        "ConstantOfShape" => {
            let value_type = op
                .attr_tensor("value")
                .ok()
                .flatten()
                .and_then(|t| t.dtype().ok())
                .or(Some(DataType::Float));
            vec![with(value_type, shape_vector(in_(0)))]
        }
        "Expand" => {
            let target = shape_vector(in_(1));
            vec![with(dtype(0), broadcast_all(&[shape(0), target]))]
        }
        "Tile" => {
            let s = match (shape(0), ints_of(1)) {
                (Some(s), Some(r)) if s.len() == r.len() => Some(
                    s.iter()
                        .zip(&r)
                        .map(|(d, &k)| {
                            d.known()
                                .and_then(|d| d.checked_mul(k))
                                .map_or(Dim::Unknown, Dim::Known)
                        })
                        .collect(),
                ),
                _ => shape(0).map(|s| vec![Dim::Unknown; s.len()]),
            };
            vec![with(dtype(0), s)]
        }
        "Pad" => {
            let pads = if opset < 11 {
                op.attr_ints("pads").ok().flatten()
            } else {
                ints_of(1)
            };
            let s = shape(0).map(|s| {
                let r = s.len();
                s.iter()
                    .enumerate()
                    .map(|(i, d)| match (&pads, d.known()) {
                        // An unpadded axis keeps its dimension, symbolic or not.
                        (Some(p), _) if p.len() == 2 * r && p[i] == 0 && p[i + r] == 0 => d.clone(),
                        (Some(p), Some(d)) if p.len() == 2 * r => d
                            .checked_add(p[i])
                            .and_then(|v| v.checked_add(p[i + r]))
                            .map_or(Dim::Unknown, Dim::Known),
                        _ => Dim::Unknown,
                    })
                    .collect()
            });
            vec![with(dtype(0), s)]
        }
        "Range" => {
            // `range(0, n, 1)` has n elements, symbolic or not.
            let scalar = |i: usize| {
                in_(i)
                    .and_then(|f| f.elements.as_ref())
                    .and_then(|e| (e.len() == 1).then(|| e[0].clone()))
            };
            let len = match (scalar(0), scalar(1), scalar(2)) {
                (Some(Dim::Known(0)), Some(limit), Some(Dim::Known(1))) => limit,
                _ => Dim::Unknown,
            };
            vec![with(dtype(0), Some(vec![len]))]
        }
        "NonZero" => vec![with(
            Some(DataType::Int64),
            rank(0).map(|r| vec![Dim::Known(r as i64), Dim::Unknown]),
        )],
        "QuantizeLinear" => {
            let t = in_(2).and_then(|f| f.dtype).or(Some(DataType::Uint8));
            vec![with(t, shape(0))]
        }
        "DequantizeLinear" => vec![with(Some(DataType::Float), shape(0))],
        "DynamicQuantizeLinear" => vec![
            with(Some(DataType::Uint8), shape(0)),
            with(Some(DataType::Float), Some(vec![])),
            with(Some(DataType::Uint8), Some(vec![])),
        ],
        "Constant" => match op.constant_value() {
            Ok(Some(t)) => vec![with(
                t.dtype().ok(),
                t.shape()
                    .ok()
                    .map(|s| s.iter().map(|&d| Dim::Known(d as i64)).collect()),
            )],
            _ => vec![],
        },
        _ => vec![],
    };
    facts.truncate(outputs.max(facts.len().min(outputs)));
    facts
}

/// The entries of a 1-d shape vector: known ones where the facts say, unknown ones where only
/// its length is known.
fn shape_vector(f: Option<&Facts>) -> Option<Vec<Dim>> {
    let f = f?;
    if let Some(el) = &f.elements {
        return Some(el.clone());
    }
    match f.shape.as_deref() {
        Some([Dim::Known(n)]) if *n >= 0 && *n <= 64 => Some(vec![Dim::Unknown; *n as usize]),
        _ => None,
    }
}

/// Element-wise arithmetic on small integer vectors (shape arithmetic), where it is decidable.
/// Dimensions are never negative, so `Equal(dim, -1)` is false even for a symbolic dim.
fn elementwise_elements(op_type: &str, inputs: &[Option<&Facts>]) -> Option<Vec<Dim>> {
    let lists: Vec<Vec<Dim>> = inputs
        .iter()
        .map(|f| f.and_then(|f| f.elements.clone()))
        .collect::<Option<_>>()?;
    let n = lists.iter().map(Vec::len).max()?;
    if lists.iter().any(|l| l.len() != n && l.len() != 1) {
        return None;
    }
    let at = |l: &Vec<Dim>, i: usize| {
        if l.len() == 1 {
            l[0].clone()
        } else {
            l[i].clone()
        }
    };
    let bool_dim = |b: bool| Dim::Known(b as i64);
    (0..n)
        .map(|i| {
            let args: Vec<Dim> = lists.iter().map(|l| at(l, i)).collect();
            let known: Option<Vec<i64>> = args.iter().map(Dim::known).collect();
            Some(match (op_type, known.as_deref(), args.as_slice()) {
                ("Add", Some([a, b]), _) => Dim::Known(a.checked_add(*b)?),
                ("Sub", Some([a, b]), _) => Dim::Known(a.checked_sub(*b)?),
                ("Mul", Some([a, b]), _) => Dim::Known(a.checked_mul(*b)?),
                ("Div", Some([a, b]), _) if *b != 0 => Dim::Known(a / b),
                ("Max", Some([a, b]), _) => Dim::Known(*a.max(b)),
                ("Min", Some([a, b]), _) => Dim::Known(*a.min(b)),
                ("Equal", Some([a, b]), _) => bool_dim(a == b),
                ("Equal", _, [Dim::Symbol(x), Dim::Symbol(y)]) if x == y => bool_dim(true),
                ("Equal", _, [Dim::Symbol(_), Dim::Known(k)])
                | ("Equal", _, [Dim::Known(k), Dim::Symbol(_)])
                    if *k < 0 =>
                {
                    bool_dim(false)
                }
                ("Where", _, [Dim::Known(c), x, y]) => {
                    if *c != 0 {
                        x.clone()
                    } else {
                        y.clone()
                    }
                }
                ("Mul", _, [x, Dim::Known(1)]) | ("Mul", _, [Dim::Known(1), x]) => x.clone(),
                ("Add", _, [x, Dim::Known(0)]) | ("Add", _, [Dim::Known(0), x]) => x.clone(),
                _ => Dim::Unknown,
            })
        })
        .collect()
}

fn product(dims: &[Dim]) -> Dim {
    dims.iter()
        .try_fold(1i64, |acc, d| d.known().and_then(|v| acc.checked_mul(v)))
        .map_or(Dim::Unknown, Dim::Known)
}

/// Broadcast of one dimension pair; `None` when they provably conflict.
fn broadcast_dim(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Known(1), x) | (x, Dim::Known(1)) => x.clone(),
        (x, y) if x == y => x.clone(),
        (Dim::Known(n), _) | (_, Dim::Known(n)) => Dim::Known(*n),
        _ => Dim::Unknown,
    }
}

fn broadcast_all(shapes: &[Option<Vec<Dim>>]) -> Option<Vec<Dim>> {
    let shapes: Vec<&Vec<Dim>> = shapes.iter().map(Option::as_ref).collect::<Option<_>>()?;
    let rank = shapes.iter().map(|s| s.len()).max()?;
    Some(
        (0..rank)
            .map(|i| {
                shapes.iter().fold(Dim::Known(1), |acc, s| {
                    let pad = rank - s.len();
                    if i < pad {
                        acc
                    } else {
                        broadcast_dim(&acc, &s[i - pad])
                    }
                })
            })
            .collect(),
    )
}

fn matmul_shape(a: Option<Vec<Dim>>, b: Option<Vec<Dim>>) -> Option<Vec<Dim>> {
    let (a, b) = (a?, b?);
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (a2, drop_m) = if a.len() == 1 {
        (vec![Dim::Known(1), a[0].clone()], true)
    } else {
        (a, false)
    };
    let (b2, drop_n) = if b.len() == 1 {
        (vec![b[0].clone(), Dim::Known(1)], true)
    } else {
        (b, false)
    };
    let mut out = broadcast_all(&[
        Some(a2[..a2.len() - 2].to_vec()),
        Some(b2[..b2.len() - 2].to_vec()),
    ])?;
    if !drop_m {
        out.push(a2[a2.len() - 2].clone());
    }
    if !drop_n {
        out.push(b2[b2.len() - 1].clone());
    }
    Some(out)
}

fn conv_shape(op: &Op, x: Option<Vec<Dim>>, w: Option<Vec<Dim>>) -> Option<Vec<Dim>> {
    let x = x?;
    if x.len() < 3 {
        return None;
    }
    let spatial = x.len() - 2;
    let is_pool = op.op_type().ends_with("Pool");
    let kernel: Vec<Option<i64>> = match op.attr_ints("kernel_shape").ok().flatten() {
        Some(k) => k.into_iter().map(Some).collect(),
        None if !is_pool => w
            .as_ref()
            .map(|w| w[2..].iter().map(Dim::known).collect())?,
        None => return None,
    };
    let ones = vec![1i64; spatial];
    let strides = op
        .attr_ints("strides")
        .ok()
        .flatten()
        .unwrap_or_else(|| ones.clone());
    let dilations = op
        .attr_ints("dilations")
        .ok()
        .flatten()
        .unwrap_or_else(|| ones.clone());
    let pads = op
        .attr_ints("pads")
        .ok()
        .flatten()
        .unwrap_or_else(|| vec![0; 2 * spatial]);
    let auto_pad = op
        .attr_string("auto_pad")
        .ok()
        .flatten()
        .unwrap_or_else(|| "NOTSET".into());
    let ceil = op.attr_int("ceil_mode", 0).unwrap_or(0) != 0;
    let channels = if is_pool {
        x[1].clone()
    } else {
        w.as_ref().map_or(Dim::Unknown, |w| w[0].clone())
    };
    let mut out = vec![x[0].clone(), channels];
    for i in 0..spatial {
        let d = match (x[i + 2].known(), kernel.get(i).copied().flatten()) {
            (Some(n), Some(k)) if n >= 0 && k >= 1 => {
                let (s, dl) = (*strides.get(i)?, *dilations.get(i)?);
                if s <= 0 || dl <= 0 || k > 1 << 20 || dl > 1 << 20 {
                    return None;
                }
                let span = dl * (k - 1) + 1;
                match auto_pad.as_str() {
                    "SAME_UPPER" | "SAME_LOWER" => Some((n + s - 1) / s),
                    "VALID" => Some((n - span) / s + 1),
                    _ => {
                        let total = n
                            .checked_add(*pads.get(i)?)?
                            .checked_add(*pads.get(i + spatial)?)?
                            - span;
                        Some(if ceil {
                            (total + s - 1) / s + 1
                        } else {
                            total / s + 1
                        })
                    }
                }
            }
            _ => None,
        };
        out.push(d.map_or(Dim::Unknown, Dim::Known));
    }
    Some(out)
}

/// ConvTranspose's output: `stride·(in − 1) + output_padding + dilation·(k − 1) + 1 − pads`,
/// or `output_shape` when given; channels are the weight's axis 1 times `group`.
fn conv_transpose_shape(op: &Op, x: Option<Vec<Dim>>, w: Option<Vec<Dim>>) -> Option<Vec<Dim>> {
    let x = x?;
    if x.len() < 3 {
        return None;
    }
    let spatial = x.len() - 2;
    let geometry = ConvTransposeGeometry::read(op, spatial, w.as_deref()).ok();
    let channels = match (w.as_ref().and_then(|w| w.get(1)?.known()), &geometry) {
        (Some(c), Some(g)) => Dim::Known(c * g.group as i64),
        _ => Dim::Unknown,
    };
    let mut out = vec![x[0].clone(), channels];
    for (i, d) in x[2..].iter().enumerate() {
        let size = geometry
            .as_ref()
            .zip(d.known())
            .and_then(|(g, n)| g.output_size(i, n));
        out.push(size.map_or(Dim::Unknown, Dim::Known));
    }
    Some(out)
}

fn concat_shape(op: &Op, shapes: &[Option<Vec<Dim>>]) -> Option<Vec<Dim>> {
    let first = shapes.first()?.as_ref()?;
    let axis = normalize_axis(op.attr_int("axis", 0).ok()?, first.len(), op).ok()?;
    let mut out = first.clone();
    let mut total = Some(0i64);
    for s in shapes {
        let d = s.as_ref().and_then(|s| s.get(axis)).and_then(Dim::known);
        total = total.zip(d).map(|(t, d)| t + d);
    }
    out[axis] = total.map_or(Dim::Unknown, Dim::Known);
    Some(out)
}

/// Reshape's output dims for a (partially known) target vector.
fn reshape_dims(input: Option<&[Dim]>, target: &[Dim], allowzero: bool) -> Vec<Dim> {
    if let (Some(inp), Some(t)) = (
        input.and_then(|s| {
            s.iter()
                .map(|d| d.known().map(|v| v as usize))
                .collect::<Option<Vec<_>>>()
        }),
        target.iter().map(Dim::known).collect::<Option<Vec<_>>>(),
    ) {
        if let Ok(out) = reshape_target(&inp, &t, allowzero) {
            return out.into_iter().map(|d| Dim::Known(d as i64)).collect();
        }
    }
    let mut out: Vec<Dim> = target
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Known(0) if !allowzero => input
                .and_then(|s| s.get(i))
                .cloned()
                .unwrap_or(Dim::Unknown),
            Dim::Known(-1) => Dim::Unknown,
            other => other.clone(),
        })
        .collect();
    // One -1 entry can be solved by cancelling equal factors on both sides: reshaping
    // [batch, seq, 32] to [batch, seq, -1, 16] gives 2 whatever batch and seq are.
    let infer_at = target.iter().position(|d| *d == Dim::Known(-1));
    if let (Some(at), Some(input)) = (infer_at, input) {
        if let Some(solved) = solve_reshape(input, &out, at) {
            out[at] = solved;
        }
    }
    out
}

/// The dimension at `at` that makes `target` hold as many elements as `input`, when the
/// symbolic factors cancel.
fn solve_reshape(input: &[Dim], target: &[Dim], at: usize) -> Option<Dim> {
    let mut symbols: Vec<&str> = Vec::new();
    let mut number: i64 = 1;
    for d in input {
        match d {
            Dim::Known(v) => number = number.checked_mul(*v)?,
            Dim::Symbol(s) => symbols.push(s),
            Dim::Unknown => return None,
        }
    }
    let mut divisor: i64 = 1;
    for (i, d) in target.iter().enumerate() {
        if i == at {
            continue;
        }
        match d {
            Dim::Known(v) => divisor = divisor.checked_mul(*v)?,
            Dim::Symbol(s) => {
                let found = symbols.iter().position(|x| x == s)?;
                symbols.remove(found);
            }
            Dim::Unknown => return None,
        }
    }
    if divisor <= 0 || number % divisor != 0 {
        return None;
    }
    match (symbols.as_slice(), number / divisor) {
        ([], n) => Some(Dim::Known(n)),
        ([s], 1) => Some(Dim::Symbol(s.to_string())),
        _ => None,
    }
}

fn slice_facts(op: &Op, opset: i64, inputs: &[Option<&Facts>]) -> Facts {
    let in_ = |i: usize| inputs.get(i).copied().flatten();
    let data = in_(0);
    let dtype = data.and_then(|f| f.dtype);
    let Some(shape) = data.and_then(|f| f.shape.clone()) else {
        return Facts {
            dtype,
            ..Default::default()
        };
    };
    let unknown = || Facts {
        dtype,
        shape: Some(vec![Dim::Unknown; shape.len()]),
        ..Default::default()
    };
    let as_dims =
        |v: Option<Vec<i64>>| v.map(|v| v.into_iter().map(Dim::Known).collect::<Vec<_>>());
    // Starts and ends may be partly symbolic (`x[:, :seq]`); axes and steps must be known.
    let (starts, ends, axes, steps) = if opset < 10 {
        (
            as_dims(op.attr_ints("starts").ok().flatten()),
            as_dims(op.attr_ints("ends").ok().flatten()),
            op.attr_ints("axes").ok().flatten(),
            None,
        )
    } else {
        (
            shape_vector(in_(1)),
            shape_vector(in_(2)),
            in_(3).and_then(Facts::known_ints),
            in_(4).and_then(Facts::known_ints),
        )
    };
    let (Some(starts), Some(ends)) = (starts, ends) else {
        return unknown();
    };
    let axes: Vec<i64> = match axes {
        Some(a) => a,
        None if opset >= 10 && in_(3).is_some() => return unknown(),
        None => (0..starts.len() as i64).collect(),
    };
    let steps = match steps {
        Some(s) => s,
        None if opset >= 10 && in_(4).is_some() => return unknown(),
        None => vec![1; starts.len()],
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return unknown();
    }
    let mut out = shape.clone();
    let mut picked: Option<Vec<usize>> = None;
    for i in 0..starts.len() {
        let Ok(axis) = normalize_axis(axes[i], shape.len(), op) else {
            return unknown();
        };
        out[axis] = match (shape[axis].known(), starts[i].known(), ends[i].known()) {
            (Some(d), Some(b), Some(e)) => match slice_indices(d, b, e, steps[i]) {
                Some(idx) => {
                    if shape.len() == 1 {
                        picked = Some(idx.clone());
                    }
                    Dim::Known(idx.len() as i64)
                }
                None => Dim::Unknown,
            },
            // `[0:n]` over a longer axis: n elements (the usual `x[:, :seq]`).
            (_, Some(0), None) if steps[i] == 1 && matches!(ends[i], Dim::Symbol(_)) => {
                ends[i].clone()
            }
            // `[0:end]` with an end past any real dimension keeps the axis.
            (_, Some(0), Some(e)) if steps[i] == 1 && e >= i32::MAX as i64 => shape[axis].clone(),
            _ => Dim::Unknown,
        };
    }
    let elements = match (data.and_then(|f| f.elements.clone()), picked) {
        (Some(el), Some(idx)) => idx.iter().map(|&i| el.get(i).cloned()).collect(),
        _ => None,
    };
    Facts {
        dtype,
        shape: Some(out),
        elements,
        value: None,
    }
}
