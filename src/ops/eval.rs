//! Constant evaluation of ONNX ops on [`Array`]s, with the spec's semantics: integer `Div`
//! truncates toward zero, `Mod` with fmod=0 floors, integer arithmetic wraps, `Round` is
//! half-to-even. Float math runs in f64 and rounds once to the output type (exact for + − × ÷
//! and sqrt on f32). Used by `fold-constants`; not meant for large tensors.

use ndarray::{ArrayD, Axis, IxDyn, Zip};

use super::broadcast_shapes;
use crate::ir::{Array, DataType, DataTypeInfo, Element, Op};
use crate::{Error, Result, for_each_array, map_array};

/// Evaluates `op` on constant inputs (`None` = omitted optional input). `Ok(None)` when intone
/// has no evaluator for this op (or this form of it).
/// `outputs` is the node's number of output slots (Split needs it).
pub fn evaluate(
    op: &Op,
    opset: i64,
    inputs: &[Option<Array>],
    outputs: usize,
) -> Result<Option<Vec<Array>>> {
    if super::intone::is(op, "Requant") {
        return match inputs.first().and_then(Option::as_ref) {
            Some(x) => Ok(Some(vec![super::intone::requant::eval(op, x)?])),
            None => Ok(None),
        };
    }
    if !op.domain().is_empty() {
        return Ok(None);
    }
    let x = |i: usize| -> Result<&Array> {
        inputs
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::invalid(format!("{}: input {i} is missing", op.describe())))
    };
    let opt = |i: usize| inputs.get(i).and_then(Option::as_ref);
    let one = |a: Array| Ok(Some(vec![a]));
    match op.op_type() {
        "Identity" => one(x(0)?.clone()),
        "Cast" => {
            let to = crate::ir::dtype::data_type(op.attr_int("to", 0)? as i32, &op.describe())?;
            one(x(0)?.cast(to)?)
        }
        "CastLike" => one(x(0)?.cast(x(1)?.dtype())?),
        "Shape" => {
            let dims: Vec<i64> = x(0)?.shape().iter().map(|&d| d as i64).collect();
            let (start, end) = shape_range(op, dims.len())?;
            one(vector(dims[start..end].to_vec()))
        }
        "Size" => one(Array::scalar(x(0)?.len() as i64)),
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Mod" => {
            binary_arith(op, x(0)?, x(1)?).map(|a| Some(vec![a]))
        }
        "Max" | "Min" | "Sum" | "Mean" => {
            let mut acc = x(0)?.clone();
            for i in 1..inputs.len() {
                acc = variadic_step(op.op_type(), &acc, x(i)?)?;
            }
            if op.op_type() == "Mean" {
                let n = Array::scalar(inputs.len() as f64).cast(acc.dtype())?;
                acc = binary_float_or_int(&acc, &n, |a, b| Ok(a / b), |a, b| a / b)?;
            }
            one(acc)
        }
        "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" => {
            compare(op.op_type(), x(0)?, x(1)?).map(|a| Some(vec![a]))
        }
        "And" | "Or" | "Xor" => {
            let (a, b) = (bools(op, x(0)?)?, bools(op, x(1)?)?);
            let f = match op.op_type() {
                "And" => |p: bool, q: bool| p && q,
                "Or" => |p: bool, q: bool| p || q,
                _ => |p: bool, q: bool| p ^ q,
            };
            one(Array::Bool(zip2(a, b, f)?))
        }
        "Not" => one(Array::Bool(bools(op, x(0)?)?.mapv(|v| !v))),
        "Where" => where_op(op, x(0)?, x(1)?, x(2)?).map(|a| Some(vec![a])),
        "Neg" | "Abs" | "Sign" | "Relu" | "Sqrt" | "Reciprocal" | "Exp" | "Log" | "Floor"
        | "Ceil" | "Round" | "Erf" | "Tanh" | "Sigmoid" | "Sin" | "Cos" => {
            unary(op.op_type(), x(0)?).map(|a| a.map(|a| vec![a]))
        }
        "Clip" => {
            let (lo, hi) = if opset < 11 {
                let lo = Array::scalar(op.attr_float("min", f32::MIN)?).cast(x(0)?.dtype())?;
                let hi = Array::scalar(op.attr_float("max", f32::MAX)?).cast(x(0)?.dtype())?;
                (Some(lo), Some(hi))
            } else {
                (opt(1).cloned(), opt(2).cloned())
            };
            let mut y = x(0)?.clone();
            if let Some(lo) = lo {
                y = variadic_step("Max", &y, &lo)?;
            }
            if let Some(hi) = hi {
                y = variadic_step("Min", &y, &hi)?;
            }
            one(y)
        }
        "Reshape" => {
            let shape = x(1)?.to_i64_vec()?;
            let allowzero = op.attr_int("allowzero", 0)? != 0;
            let target = reshape_target(x(0)?.shape(), &shape, allowzero)
                .map_err(|m| Error::invalid(format!("{}: {m}", op.describe())))?;
            one(x(0)?.clone().into_shape(&target)?)
        }
        "Flatten" => {
            let a = x(0)?;
            let axis = flatten_axis(op.attr_int("axis", 1)?, a.shape().len(), op)?;
            let outer: usize = a.shape()[..axis].iter().product();
            let inner: usize = a.shape()[axis..].iter().product();
            one(a.clone().into_shape(&[outer, inner])?)
        }
        "Squeeze" => {
            let a = x(0)?;
            let axes = axes_input_or_attr(op, opset, 13, opt(1))?;
            let rank = a.shape().len();
            let axes: Vec<usize> = match axes {
                Some(axes) => axes
                    .iter()
                    .map(|&ax| normalize_axis(ax, rank, op))
                    .collect::<Result<_>>()?,
                None => (0..rank).filter(|&i| a.shape()[i] == 1).collect(),
            };
            let shape: Vec<usize> = (0..rank)
                .filter(|i| !axes.contains(i))
                .map(|i| a.shape()[i])
                .collect();
            one(a.clone().into_shape(&shape)?)
        }
        "Unsqueeze" => {
            let a = x(0)?;
            let axes = axes_input_or_attr(op, opset, 13, opt(1))?
                .ok_or_else(|| Error::invalid(format!("{}: no axes", op.describe())))?;
            let rank = a.shape().len() + axes.len();
            let mut axes: Vec<usize> = axes
                .iter()
                .map(|&ax| normalize_axis(ax, rank, op))
                .collect::<Result<_>>()?;
            axes.sort_unstable();
            let mut shape = a.shape().to_vec();
            for ax in axes {
                shape.insert(ax, 1);
            }
            one(a.clone().into_shape(&shape)?)
        }
        "Transpose" => {
            let a = x(0)?;
            let rank = a.shape().len();
            let perm: Vec<usize> = match op.attr_ints("perm")? {
                Some(p) => p
                    .iter()
                    .map(|&v| normalize_axis(v, rank, op))
                    .collect::<Result<_>>()?,
                None => (0..rank).rev().collect(),
            };
            one(
                map_array!(a, v => v.view().permuted_axes(IxDyn(&perm)).as_standard_layout().into_owned()),
            )
        }
        "Concat" => {
            let first = x(0)?;
            let axis = normalize_axis(op.attr_int("axis", 0)?, first.shape().len(), op)?;
            let parts: Vec<&Array> = (0..inputs.len()).map(x).collect::<Result<_>>()?;
            concat(op, &parts, axis).map(|a| Some(vec![a]))
        }
        "Gather" => {
            let (data, indices) = (x(0)?, x(1)?);
            let axis = normalize_axis(op.attr_int("axis", 0)?, data.shape().len(), op)?;
            gather(op, data, indices, axis).map(|a| Some(vec![a]))
        }
        "Slice" => x(0)
            .and_then(|_| slice(op, opset, inputs))
            .map(|a| Some(vec![a])),
        "Split" => x(0)
            .and_then(|_| split(op, opset, inputs, outputs))
            .map(Some),
        "Expand" => {
            let a = x(0)?;
            let shape: Vec<usize> = x(1)?
                .to_i64_vec()?
                .iter()
                .map(|&d| d.max(0) as usize)
                .collect();
            let target = broadcast_shapes(a.shape(), &shape).ok_or_else(|| {
                Error::invalid(format!(
                    "{}: cannot broadcast {:?} to {shape:?}",
                    op.describe(),
                    a.shape()
                ))
            })?;
            one(map_array!(a, v => v.broadcast(IxDyn(&target)).expect("checked").to_owned()))
        }
        "Tile" => {
            let a = x(0)?;
            let repeats = x(1)?.to_i64_vec()?;
            if repeats.len() != a.shape().len() || repeats.iter().any(|&r| r < 0) {
                return Err(Error::invalid(format!(
                    "{}: bad repeats {repeats:?}",
                    op.describe()
                )));
            }
            let tiled: Vec<usize> = a
                .shape()
                .iter()
                .zip(&repeats)
                .map(|(&d, &r)| d.saturating_mul(r as usize))
                .collect();
            within_limit(op, &tiled)?;
            let mut y = a.clone();
            for (axis, &r) in repeats.iter().enumerate() {
                let copies: Vec<&Array> = std::iter::repeat_n(&y, r as usize).collect();
                y = if copies.is_empty() {
                    let mut shape = y.shape().to_vec();
                    shape[axis] = 0;
                    y.clone().into_shape(&shape).unwrap_or(y.clone())
                } else {
                    concat(op, &copies, axis)?
                };
            }
            one(y)
        }
        "ConstantOfShape" => {
            let shape: Vec<usize> = x(0)?
                .to_i64_vec()?
                .iter()
                .map(|&d| d.max(0) as usize)
                .collect();
            let value = match op.attr_tensor("value")? {
                Some(t) => t.decode()?,
                None => Array::scalar(0f32),
            };
            if value.len() != 1 {
                return Err(Error::invalid(format!(
                    "{}: value must hold one element",
                    op.describe()
                )));
            }
            one(
                map_array!(&value, v => ArrayD::from_elem(IxDyn(&shape), *v.iter().next().expect("one element"))),
            )
        }
        "Range" => range(op, x(0)?, x(1)?, x(2)?).map(|a| Some(vec![a])),
        "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL2"
        | "ReduceSumSquare" => x(0)
            .and_then(|_| reduce(op, opset, inputs))
            .map(|a| a.map(|a| vec![a])),
        "MatMul" => matmul(op, x(0)?, x(1)?).map(|a| Some(vec![a])),
        "Constant" => Ok(op
            .constant_value()?
            .map(|t| t.decode())
            .transpose()?
            .map(|a| vec![a])),
        "Dropout" => {
            // Training mode drops at random: not a constant.
            let training = match opt(2) {
                Some(t) => t.to_f64_vec().first().is_some_and(|&v| v != 0.0),
                None => false,
            };
            if training {
                return Ok(None);
            }
            let a = x(0)?.clone();
            let mask = Array::Bool(ArrayD::from_elem(IxDyn(a.shape()), true));
            Ok(Some(vec![a, mask]))
        }
        _ => Ok(None),
    }
}

/// Ops that create data from a shape stop at this many elements (a hostile shape must not
/// allocate unbounded memory; `fold-constants` applies its own, smaller cap first).
pub const EVAL_LIMIT: usize = 1 << 26;

fn within_limit(op: &Op, shape: &[usize]) -> Result<()> {
    match shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) {
        Some(n) if n <= EVAL_LIMIT => Ok(()),
        _ => Err(Error::invalid(format!(
            "{}: a result of shape {shape:?} is too large to evaluate",
            op.describe()
        ))),
    }
}

fn vector(values: Vec<i64>) -> Array {
    let n = values.len();
    Array::from_vec(&[n], values).expect("1-d")
}

/// Normalises a possibly negative axis against `rank`.
pub fn normalize_axis(axis: i64, rank: usize, op: &Op) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(Error::invalid(format!(
            "{}: axis {axis} is out of range for rank {rank}",
            op.describe()
        )))
    }
}

/// Flatten's axis: in `[-rank, rank]`, negative counting from the end.
pub fn flatten_axis(axis: i64, rank: usize, op: &Op) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..=r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(Error::invalid(format!(
            "{}: axis {axis} is out of range for rank {rank}",
            op.describe()
        )))
    }
}

/// The `start`/`end` attributes of `Shape` (opset 15), clamped.
pub fn shape_range(op: &Op, rank: usize) -> Result<(usize, usize)> {
    let clamp = |v: i64| {
        let v = if v < 0 { v + rank as i64 } else { v };
        v.clamp(0, rank as i64) as usize
    };
    let start = clamp(op.attr_int("start", 0)?);
    let end = clamp(op.attr_int("end", rank as i64)?);
    Ok((start, end.max(start)))
}

/// Axes given as an attribute before `input_since`, as an optional input from then on.
pub fn axes_input_or_attr(
    op: &Op,
    opset: i64,
    input_since: i64,
    input: Option<&Array>,
) -> Result<Option<Vec<i64>>> {
    if opset < input_since {
        op.attr_ints("axes")
    } else {
        input.map(Array::to_i64_vec).transpose()
    }
}

/// The output shape of `Reshape` for a given shape input (0 copies a dim unless allowzero,
/// one -1 is inferred).
pub fn reshape_target(
    input: &[usize],
    shape: &[i64],
    allowzero: bool,
) -> std::result::Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &d) in shape.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(
                *input
                    .get(i)
                    .ok_or("0 copies a dimension the input does not have")?,
            ),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(format!("invalid shape {shape:?}")),
        }
    }
    if let Some(i) = infer {
        let known: usize = out.iter().product();
        if known == 0 || total % known != 0 {
            return Err(format!("cannot reshape {input:?} into {shape:?}"));
        }
        out[i] = total / known;
    }
    if out.iter().product::<usize>() != total {
        return Err(format!("cannot reshape {input:?} into {shape:?}"));
    }
    Ok(out)
}

// ----- elementwise -----

fn zip2<A: Copy, B: Copy, C>(
    a: ArrayD<A>,
    b: ArrayD<B>,
    mut f: impl FnMut(A, B) -> C,
) -> Result<ArrayD<C>> {
    let shape = broadcast_shapes(a.shape(), b.shape()).ok_or_else(|| {
        Error::invalid(format!(
            "shapes {:?} and {:?} do not broadcast",
            a.shape(),
            b.shape()
        ))
    })?;
    let (av, bv) = (
        a.broadcast(IxDyn(&shape)).expect("checked"),
        b.broadcast(IxDyn(&shape)).expect("checked"),
    );
    Ok(Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y)))
}

fn floats(a: &Array) -> ArrayD<f64> {
    for_each_array!(a, v => v.mapv(|x| x.to_f64()))
}

fn ints(a: &Array) -> Option<ArrayD<i128>> {
    for_each_array!(a, v => {
        let first = v.iter().next().map(|x| x.to_i128());
        if matches!(first, Some(None)) || (v.is_empty() && a.dtype().is_float()) {
            None
        } else {
            Some(v.mapv(|x| x.to_i128().expect("integer type")))
        }
    })
}

fn bools(op: &Op, a: &Array) -> Result<ArrayD<bool>> {
    match a {
        Array::Bool(v) => Ok(v.clone()),
        _ => Err(Error::invalid(format!(
            "{}: expected a bool input",
            op.describe()
        ))),
    }
}

fn from_f64(dtype: DataType, a: ArrayD<f64>) -> Result<Array> {
    Array::F64(a).cast(dtype)
}

fn from_i128(dtype: DataType, a: ArrayD<i128>) -> Result<Array> {
    fn wrap<T: Element>(a: &ArrayD<i128>) -> Array {
        T::wrap(a.mapv(T::from_i128_wrapping))
    }
    Ok(match dtype {
        DataType::Int8 => wrap::<i8>(&a),
        DataType::Int16 => wrap::<i16>(&a),
        DataType::Int32 => wrap::<i32>(&a),
        DataType::Int64 => wrap::<i64>(&a),
        DataType::Uint8 => wrap::<u8>(&a),
        DataType::Uint16 => wrap::<u16>(&a),
        DataType::Uint32 => wrap::<u32>(&a),
        DataType::Uint64 => wrap::<u64>(&a),
        DataType::Bool => wrap::<bool>(&a),
        other => {
            return Err(Error::unsupported(format!(
                "integer result of type {}",
                other.short_name()
            )));
        }
    })
}

/// Applies an integer function (wrapping back to the type) or a float one (in f64, rounded
/// once), by the inputs' element type. Both inputs must have the same type.
fn binary_float_or_int(
    a: &Array,
    b: &Array,
    fi: impl Fn(i128, i128) -> std::result::Result<i128, String>,
    ff: impl Fn(f64, f64) -> f64,
) -> Result<Array> {
    let dtype = a.dtype();
    if dtype != b.dtype() {
        return Err(Error::invalid(format!(
            "element types differ: {} and {}",
            dtype.short_name(),
            b.dtype().short_name()
        )));
    }
    if dtype.is_float() {
        from_f64(dtype, zip2(floats(a), floats(b), ff)?)
    } else {
        let (ia, ib) = (ints(a).expect("integer"), ints(b).expect("integer"));
        let mut failure = None;
        let out = zip2(ia, ib, |x, y| match fi(x, y) {
            Ok(v) => v,
            Err(e) => {
                failure.get_or_insert(e);
                0
            }
        })?;
        if let Some(e) = failure {
            return Err(Error::invalid(e));
        }
        from_i128(dtype, out)
    }
}

fn binary_arith(op: &Op, a: &Array, b: &Array) -> Result<Array> {
    let named = |e: Error| {
        Error::invalid(format!(
            "{}: {}",
            op.describe(),
            e.to_string().trim_start_matches("invalid model: ")
        ))
    };
    match op.op_type() {
        "Add" => binary_float_or_int(a, b, |x, y| Ok(x + y), |x, y| x + y),
        "Sub" => binary_float_or_int(a, b, |x, y| Ok(x - y), |x, y| x - y),
        "Mul" => binary_float_or_int(a, b, |x, y| Ok(x * y), |x, y| x * y),
        // Integer division truncates toward zero (Rust's `/`).
        "Div" => binary_float_or_int(
            a,
            b,
            |x, y| {
                if y == 0 {
                    Err("integer division by zero".into())
                } else {
                    Ok(x / y)
                }
            },
            |x, y| x / y,
        ),
        "Mod" => {
            let fmod = op.attr_int("fmod", 0)? != 0;
            if a.dtype().is_float() && !fmod {
                return Err(Error::invalid(format!(
                    "{}: fmod=0 needs integer inputs",
                    op.describe()
                )));
            }
            binary_float_or_int(
                a,
                b,
                move |x, y| match (y, fmod) {
                    (0, _) => Err("integer modulo by zero".into()),
                    (_, true) => Ok(x % y),
                    // Floor modulo: the result takes the divisor's sign.
                    (_, false) => Ok(((x % y) + y) % y),
                },
                |x, y| x % y,
            )
        }
        "Pow" => {
            // The exponent may have another type; the result has the base's type.
            let exp = b.cast(DataType::Double)?;
            let base = floats(a);
            let out = zip2(base, floats(&exp), f64::powf)?;
            if a.dtype().is_float() {
                from_f64(a.dtype(), out)
            } else {
                Array::F64(out.mapv(f64::trunc)).cast(a.dtype())
            }
        }
        other => Err(Error::unsupported(other.to_string())),
    }
    .map_err(named)
}

fn variadic_step(kind: &str, a: &Array, b: &Array) -> Result<Array> {
    match kind {
        "Max" => binary_float_or_int(
            a,
            b,
            |x, y| Ok(x.max(y)),
            |x, y| {
                if x.is_nan() || y.is_nan() {
                    f64::NAN
                } else {
                    x.max(y)
                }
            },
        ),
        "Min" => binary_float_or_int(
            a,
            b,
            |x, y| Ok(x.min(y)),
            |x, y| {
                if x.is_nan() || y.is_nan() {
                    f64::NAN
                } else {
                    x.min(y)
                }
            },
        ),
        _ => binary_float_or_int(a, b, |x, y| Ok(x + y), |x, y| x + y),
    }
}

fn compare(kind: &str, a: &Array, b: &Array) -> Result<Array> {
    if a.dtype() != b.dtype() {
        return Err(Error::invalid("compared element types differ".to_string()));
    }
    let f: fn(f64, f64) -> bool = match kind {
        "Equal" => |x, y| x == y,
        "Less" => |x, y| x < y,
        "LessOrEqual" => |x, y| x <= y,
        "Greater" => |x, y| x > y,
        _ => |x, y| x >= y,
    };
    if let (Some(ia), Some(ib)) = (ints(a), ints(b)) {
        let fi: fn(i128, i128) -> bool = match kind {
            "Equal" => |x, y| x == y,
            "Less" => |x, y| x < y,
            "LessOrEqual" => |x, y| x <= y,
            "Greater" => |x, y| x > y,
            _ => |x, y| x >= y,
        };
        return Ok(Array::Bool(zip2(ia, ib, fi)?));
    }
    Ok(Array::Bool(zip2(floats(a), floats(b), f)?))
}

fn where_op(op: &Op, cond: &Array, a: &Array, b: &Array) -> Result<Array> {
    let cond = bools(op, cond)?;
    if a.dtype() != b.dtype() {
        return Err(Error::invalid(format!(
            "{}: branch types differ",
            op.describe()
        )));
    }
    let shape = broadcast_shapes(cond.shape(), a.shape())
        .and_then(|s| broadcast_shapes(&s, b.shape()))
        .ok_or_else(|| Error::invalid(format!("{}: shapes do not broadcast", op.describe())))?;
    let c = cond.broadcast(IxDyn(&shape)).expect("checked");
    fn pick<T: Element>(
        c: &ndarray::ArrayViewD<bool>,
        a: &ArrayD<T>,
        b: &ArrayD<T>,
        shape: &[usize],
    ) -> Array {
        let (av, bv) = (
            a.broadcast(IxDyn(shape)).expect("checked"),
            b.broadcast(IxDyn(shape)).expect("checked"),
        );
        T::wrap(
            Zip::from(c)
                .and(&av)
                .and(&bv)
                .map_collect(|&c, &x, &y| if c { x } else { y }),
        )
    }
    Ok(for_each_array!(a, av => {
        let bv = b.as_array().expect("same type");
        pick(&c, av, bv, &shape)
    }))
}

fn unary(kind: &str, a: &Array) -> Result<Option<Array>> {
    let dtype = a.dtype();
    if let (false, Some(ia)) = (dtype.is_float(), ints(a)) {
        let f: fn(i128) -> i128 = match kind {
            "Neg" => |x| -x,
            "Abs" => i128::abs,
            "Sign" => i128::signum,
            "Relu" => |x| x.max(0),
            _ => return Ok(None),
        };
        return from_i128(dtype, ia.mapv(f)).map(Some);
    }
    let f: fn(f64) -> f64 = match kind {
        "Neg" => |x| -x,
        "Abs" => f64::abs,
        "Sign" => |x| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        },
        "Relu" => |x| if x > 0.0 { x } else { 0.0 },
        "Sqrt" => f64::sqrt,
        "Reciprocal" => |x| 1.0 / x,
        "Exp" => f64::exp,
        "Log" => f64::ln,
        "Floor" => f64::floor,
        "Ceil" => f64::ceil,
        "Round" => f64::round_ties_even,
        "Erf" => libm::erf,
        "Tanh" => f64::tanh,
        "Sigmoid" => |x| 1.0 / (1.0 + (-x).exp()),
        "Sin" => f64::sin,
        "Cos" => f64::cos,
        _ => return Ok(None),
    };
    // Float functions beyond + − × ÷ √ are rounded from f64; they agree with f32 runtimes to
    // within an ulp, which is all any two runtimes agree on.
    from_f64(dtype, floats(a).mapv(f)).map(Some)
}

// ----- data movement -----

fn concat(op: &Op, parts: &[&Array], axis: usize) -> Result<Array> {
    let dtype = parts[0].dtype();
    if parts.iter().any(|p| p.dtype() != dtype) {
        return Err(Error::invalid(format!(
            "{}: inputs have different element types",
            op.describe()
        )));
    }
    let fail = |e: ndarray::ShapeError| Error::invalid(format!("{}: {e}", op.describe()));
    fn join<T: Element>(
        parts: &[&Array],
        axis: usize,
    ) -> std::result::Result<Array, ndarray::ShapeError> {
        let views: Vec<_> = parts
            .iter()
            .map(|p| p.as_array::<T>().expect("same type").view())
            .collect();
        ndarray::concatenate(Axis(axis), &views).map(T::wrap)
    }
    for_each_array!(parts[0], first => {
        fn typed<T: Element>(_: &ArrayD<T>, parts: &[&Array], axis: usize) -> std::result::Result<Array, ndarray::ShapeError> {
            join::<T>(parts, axis)
        }
        typed(first, parts, axis).map_err(fail)
    })
}

fn gather(op: &Op, data: &Array, indices: &Array, axis: usize) -> Result<Array> {
    let dim = data.shape()[axis] as i64;
    let idx: Vec<usize> = indices
        .to_i64_vec()?
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + dim } else { i };
            if (0..dim).contains(&j) {
                Ok(j as usize)
            } else {
                Err(Error::invalid(format!(
                    "{}: index {i} out of range for a dimension of {dim}",
                    op.describe()
                )))
            }
        })
        .collect::<Result<_>>()?;
    let mut shape = data.shape()[..axis].to_vec();
    shape.extend_from_slice(indices.shape());
    shape.extend_from_slice(&data.shape()[axis + 1..]);
    let picked = map_array!(data, v => v.select(Axis(axis), &idx));
    picked.into_shape(&shape)
}

fn slice(op: &Op, opset: i64, inputs: &[Option<Array>]) -> Result<Array> {
    let data = inputs[0].as_ref().expect("checked by caller");
    let rank = data.shape().len();
    let get = |i: usize| {
        inputs
            .get(i)
            .and_then(Option::as_ref)
            .map(Array::to_i64_vec)
            .transpose()
    };
    let (starts, ends, axes, steps) = if opset < 10 {
        (
            op.attr_ints("starts")?.unwrap_or_default(),
            op.attr_ints("ends")?.unwrap_or_default(),
            op.attr_ints("axes")?,
            None,
        )
    } else {
        (
            get(1)?.unwrap_or_default(),
            get(2)?.unwrap_or_default(),
            get(3)?,
            get(4)?,
        )
    };
    let axes: Vec<i64> = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(Error::invalid(format!(
            "{}: starts, ends, axes and steps differ in length",
            op.describe()
        )));
    }
    let mut out = data.clone();
    for i in 0..starts.len() {
        let axis = normalize_axis(axes[i], rank, op)?;
        let idx = slice_indices(out.shape()[axis] as i64, starts[i], ends[i], steps[i])
            .ok_or_else(|| Error::invalid(format!("{}: step 0", op.describe())))?;
        out = map_array!(&out, v => v.select(Axis(axis), &idx));
    }
    Ok(out)
}

/// The indices ONNX `Slice` takes along one axis of length `dim`.
pub fn slice_indices(dim: i64, start: i64, end: i64, step: i64) -> Option<Vec<usize>> {
    if step == 0 {
        return None;
    }
    if dim <= 0 {
        return Some(Vec::new());
    }
    let norm = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
    let (s, e) = (norm(start), norm(end));
    let mut idx = Vec::new();
    if step > 0 {
        let (s, e) = (s.clamp(0, dim), e.clamp(0, dim));
        let mut i = s;
        while i < e {
            idx.push(i as usize);
            i += step;
        }
    } else {
        let (s, e) = (s.clamp(0, dim - 1), e.clamp(-1, dim - 1));
        let mut i = s;
        while i > e {
            idx.push(i as usize);
            i += step;
        }
    }
    Some(idx)
}

fn split(op: &Op, opset: i64, inputs: &[Option<Array>], outputs: usize) -> Result<Vec<Array>> {
    let data = inputs[0].as_ref().expect("checked by caller");
    let axis = normalize_axis(op.attr_int("axis", 0)?, data.shape().len(), op)?;
    let dim = data.shape()[axis];
    let outputs = outputs.max(1);
    let sizes: Vec<usize> = match split_sizes(op, opset, inputs.get(1).and_then(Option::as_ref))? {
        Some(s) => s.iter().map(|&v| v.max(0) as usize).collect(),
        None => {
            let n = if opset >= 18 {
                op.attr_int("num_outputs", outputs as i64)? as usize
            } else {
                outputs
            };
            let chunk = dim.div_ceil(n.max(1));
            (0..n)
                .map(|i| chunk.min(dim.saturating_sub(i * chunk)))
                .collect()
        }
    };
    if sizes.iter().sum::<usize>() != dim {
        return Err(Error::invalid(format!(
            "{}: split sizes {sizes:?} do not add up to {dim}",
            op.describe()
        )));
    }
    let mut start = 0;
    Ok(sizes
        .iter()
        .map(|&n| {
            let idx: Vec<usize> = (start..start + n).collect();
            start += n;
            map_array!(data, v => v.select(Axis(axis), &idx))
        })
        .collect())
}

/// `split` sizes: an attribute before opset 13, an optional input from then on.
pub fn split_sizes(op: &Op, opset: i64, input: Option<&Array>) -> Result<Option<Vec<i64>>> {
    if opset < 13 {
        op.attr_ints("split")
    } else {
        input.map(Array::to_i64_vec).transpose()
    }
}

fn range(op: &Op, start: &Array, limit: &Array, delta: &Array) -> Result<Array> {
    let dtype = start.dtype();
    let (s, l, d) = (
        start.to_f64_vec()[0],
        limit.to_f64_vec()[0],
        delta.to_f64_vec()[0],
    );
    if d == 0.0 {
        return Err(Error::invalid(format!("{}: delta is 0", op.describe())));
    }
    let n = ((l - s) / d).ceil().max(0.0) as usize;
    if n > 1 << 24 {
        return Err(Error::invalid(format!(
            "{}: {n} elements is too large to fold",
            op.describe()
        )));
    }
    if dtype.is_float() {
        from_f64(
            dtype,
            ArrayD::from_shape_fn(IxDyn(&[n]), |i| s + d * i[0] as f64),
        )
    } else {
        let first = |a: &Array| ints(a).and_then(|v| v.iter().next().copied()).unwrap_or(0);
        let (si, di) = (first(start), first(delta));
        from_i128(
            dtype,
            ArrayD::from_shape_fn(IxDyn(&[n]), |i| si + di * i[0] as i128),
        )
    }
}

fn reduce(op: &Op, opset: i64, inputs: &[Option<Array>]) -> Result<Option<Array>> {
    let data = inputs[0].as_ref().expect("checked by caller");
    let rank = data.shape().len();
    let input_since = if op.op_type() == "ReduceSum" { 13 } else { 18 };
    let axes = axes_input_or_attr(
        op,
        opset,
        input_since,
        inputs.get(1).and_then(Option::as_ref),
    )?;
    let keepdims = op.attr_int("keepdims", 1)? != 0;
    let axes: Vec<usize> = match axes {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|&x| normalize_axis(x, rank, op))
            .collect::<Result<_>>()?,
        _ if op.attr_int("noop_with_empty_axes", 0)? != 0 => return Ok(Some(data.clone())),
        _ => (0..rank).collect(),
    };
    let kind = op.op_type();
    let dtype = data.dtype();
    let count: usize = axes.iter().map(|&a| data.shape()[a]).product();
    let mut kept = data.shape().to_vec();
    for &a in &axes {
        kept[a] = 1;
    }
    // Square first (SumSquare, L2), then combine lanes axis by axis, then finish (mean, sqrt).
    let squared = matches!(kind, "ReduceSumSquare" | "ReduceL2");
    let combine = |lane: ndarray::ArrayView1<f64>| -> f64 {
        match kind {
            "ReduceMax" => lane.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            "ReduceMin" => lane.iter().copied().fold(f64::INFINITY, f64::min),
            "ReduceProd" => lane.product(),
            _ => lane.sum(),
        }
    };
    let out = if dtype.is_float() {
        let mut v = floats(data);
        if squared {
            v.mapv_inplace(|x| x * x);
        }
        for &a in &axes {
            v = reduce_axis(&v, a, &combine);
        }
        match kind {
            "ReduceMean" => v.mapv_inplace(|x| x / count as f64),
            "ReduceL2" => v.mapv_inplace(f64::sqrt),
            _ => {}
        }
        from_f64(dtype, v)?
    } else {
        if kind == "ReduceL2" {
            return Ok(None);
        }
        // Integers reduce exactly in i128; an empty max/min is the type's lowest/highest value.
        let (lowest, highest) = int_bounds(dtype);
        let combine = |lane: ndarray::ArrayView1<i128>| -> i128 {
            match kind {
                "ReduceMax" => lane.iter().copied().max().unwrap_or(lowest),
                "ReduceMin" => lane.iter().copied().min().unwrap_or(highest),
                "ReduceProd" => lane.product(),
                _ => lane.sum(),
            }
        };
        let mut v = ints(data).expect("integer");
        if squared {
            v.mapv_inplace(|x| x * x);
        }
        for &a in &axes {
            v = reduce_axis(&v, a, &combine);
        }
        if kind == "ReduceMean" {
            // Integer ReduceMean truncates, as onnxruntime and tract do.
            v.mapv_inplace(|x| x / (count.max(1) as i128));
        }
        from_i128(dtype, v)?
    };
    let final_shape: Vec<usize> = if keepdims {
        kept
    } else {
        (0..rank)
            .filter(|i| !axes.contains(i))
            .map(|i| data.shape()[i])
            .collect()
    };
    out.into_shape(&final_shape).map(Some)
}

/// Combines the lanes along `axis`, keeping it as a dimension of 1.
fn reduce_axis<T: Clone>(
    v: &ArrayD<T>,
    axis: usize,
    combine: &impl Fn(ndarray::ArrayView1<T>) -> T,
) -> ArrayD<T> {
    let mut shape = v.shape().to_vec();
    shape[axis] = 1;
    let reduced: Vec<T> = v.lanes(Axis(axis)).into_iter().map(combine).collect();
    ArrayD::from_shape_vec(IxDyn(&shape), reduced).expect("one value per lane")
}

fn int_bounds(dtype: DataType) -> (i128, i128) {
    match dtype {
        DataType::Int8 => (i8::MIN as i128, i8::MAX as i128),
        DataType::Int16 => (i16::MIN as i128, i16::MAX as i128),
        DataType::Int32 => (i32::MIN as i128, i32::MAX as i128),
        DataType::Int64 => (i64::MIN as i128, i64::MAX as i128),
        DataType::Uint8 => (0, u8::MAX as i128),
        DataType::Uint16 => (0, u16::MAX as i128),
        DataType::Uint32 => (0, u32::MAX as i128),
        DataType::Uint64 => (0, u64::MAX as i128),
        _ => (0, 1),
    }
}

fn matmul(op: &Op, a: &Array, b: &Array) -> Result<Array> {
    if a.dtype() != b.dtype() {
        return Err(Error::invalid(format!(
            "{}: element types differ",
            op.describe()
        )));
    }
    let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
    if sa.is_empty() || sb.is_empty() {
        return Err(Error::invalid(format!("{}: scalar operand", op.describe())));
    }
    // Promote 1-d operands as numpy does, then remove the added axes at the end.
    let (a2, drop_m) = if sa.len() == 1 {
        (vec![1, sa[0]], true)
    } else {
        (sa.clone(), false)
    };
    let (b2, drop_n) = if sb.len() == 1 {
        (vec![sb[0], 1], true)
    } else {
        (sb.clone(), false)
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(Error::invalid(format!(
            "{}: inner dimensions {k} and {k2} differ",
            op.describe()
        )));
    }
    let batch = broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2]).ok_or_else(|| {
        Error::invalid(format!(
            "{}: batch dimensions do not broadcast",
            op.describe()
        ))
    })?;
    let mut a_shape = batch.clone();
    a_shape.extend([m, k]);
    let mut b_shape = batch.clone();
    b_shape.extend([k, n]);
    let dtype = a.dtype();
    let is_float = dtype.is_float();
    let (fa, fb) = (
        floats(a)
            .into_shape_with_order(IxDyn(&a2))
            .expect("same count"),
        floats(b)
            .into_shape_with_order(IxDyn(&b2))
            .expect("same count"),
    );
    let (fa, fb) = (
        fa.broadcast(IxDyn(&a_shape)).expect("checked").to_owned(),
        fb.broadcast(IxDyn(&b_shape)).expect("checked").to_owned(),
    );
    let (ia, ib) = if is_float {
        (None, None)
    } else {
        let ia = ints(a)
            .expect("int")
            .into_shape_with_order(IxDyn(&a2))
            .expect("count");
        let ib = ints(b)
            .expect("int")
            .into_shape_with_order(IxDyn(&b2))
            .expect("count");
        (
            Some(ia.broadcast(IxDyn(&a_shape)).expect("checked").to_owned()),
            Some(ib.broadcast(IxDyn(&b_shape)).expect("checked").to_owned()),
        )
    };
    let batches: usize = batch.iter().product();
    let mut out_shape = batch.clone();
    out_shape.extend([m, n]);
    let fa = fa.into_shape_with_order((batches, m, k)).expect("count");
    let fb = fb.into_shape_with_order((batches, k, n)).expect("count");
    let mut result = if is_float {
        let mut out = ndarray::Array3::<f64>::zeros((batches, m, n));
        for bi in 0..batches {
            out.index_axis_mut(Axis(0), bi)
                .assign(&fa.index_axis(Axis(0), bi).dot(&fb.index_axis(Axis(0), bi)));
        }
        from_f64(
            dtype,
            out.into_dyn()
                .into_shape_with_order(IxDyn(&out_shape))
                .expect("count"),
        )?
    } else {
        let ia = ia
            .expect("int")
            .into_shape_with_order((batches, m, k))
            .expect("count");
        let ib = ib
            .expect("int")
            .into_shape_with_order((batches, k, n))
            .expect("count");
        let out = ndarray::Array3::from_shape_fn((batches, m, n), |(bi, i, j)| {
            (0..k)
                .map(|l| ia[[bi, i, l]] * ib[[bi, l, j]])
                .sum::<i128>()
        });
        from_i128(
            dtype,
            out.into_dyn()
                .into_shape_with_order(IxDyn(&out_shape))
                .expect("count"),
        )?
    };
    if drop_m || drop_n {
        let mut shape = batch;
        if !drop_m {
            shape.push(m);
        }
        if !drop_n {
            shape.push(n);
        }
        result = result.into_shape(&shape)?;
    }
    Ok(result)
}
