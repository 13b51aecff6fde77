//! Averages over space in integers: the sum is exact, the division by the count goes into the
//! scale.
//!
//! - `GlobalAveragePool(x)`, `ReduceMean(x, axes)`: `ReduceSum` of int32 `q − zp` at scale
//!   `s / count` (the counts are static sizes). Exact.
//! - `AveragePool(x)`: a depthwise `ConvInteger` with a kernel of ones over the 8-bit form
//!   (zero point 0, so zero padding pads with real zeros) at scale `s / Πk`. Where the count
//!   differs per position (`count_include_pad = 0` with pads), each sum is multiplied by the
//!   integer `round(2^p / count)` and the scale is `s / 2^p`: relative error ≤ Πk / 2^(p+1).

use super::elementwise::widen_to_i32;
use super::*;

/// `v`'s dimension sizes, with the batch (axis 0) as 1 when it is dynamic: sizes after it
/// must all be static.
fn static_shape(lw: &Lowering, v: ValueId) -> Option<Vec<i64>> {
    let dims = lw.facts.get(v)?.shape.as_ref()?;
    dims.iter()
        .enumerate()
        .map(|(i, d)| d.known().or((i == 0).then_some(1)))
        .collect()
}

/// `rep` summed over `axes` (kept when `keepdims`): the result's representation at the
/// scale divided by `count`, or why not.
fn sum_over(
    lw: &mut Lowering,
    x: ValueId,
    rep: &IntRep,
    axes: &[usize],
    keepdims: bool,
    count: i64,
) -> Result<std::result::Result<IntRep, String>> {
    let scale = match &rep.scale {
        Scale::PerTensor(s) => Scale::PerTensor(s / count as f64),
        Scale::PerAxis { axis, scales } => {
            if axes.contains(axis) {
                return Ok(Err("averages over the per-channel axis".into()));
            }
            let shift = if keepdims {
                0
            } else {
                axes.iter().filter(|&&a| a < *axis).count()
            };
            Scale::PerAxis {
                axis: axis - shift,
                scales: scales.iter().map(|s| s / count as f64).collect(),
            }
        }
    };
    let fits = |r: &IntRep| {
        let range = (r.range.0.min(0) * count, r.range.1.max(0) * count);
        (range.0 >= i32::MIN as i64 && range.1 <= i32::MAX as i64).then_some(range)
    };
    let wide = widen_to_i32(lw, rep)?;
    let range = fits(&wide);
    if range.is_none() && rep.dtype == DataType::Int32 && lw.model().graph.value(x).plan.is_some() {
        // An accumulator over a large map: its 8-bit form at the planned scale (what the
        // reader would requantize to anyway) sums without overflow.
        let narrow = lw.operand(x, Form::Stored8)?;
        return sum_over(lw, x, &narrow, axes, keepdims, count);
    }
    let Some(range) = range else {
        let reach = |v: i64| v as i128 * count as i128;
        let r = (reach(wide.range.0.min(0)), reach(wide.range.1.max(0)));
        return Ok(Err(format!("the int32 sum could reach {r:?}")));
    };
    let axes: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
    let axes = lw.constant("axes", &Array::from_vec(&[axes.len()], axes)?)?;
    let sum = lw.op(
        "ReduceSum",
        "sum",
        &[wide.value, axes],
        vec![crate::ir::attr::int("keepdims", keepdims as i64)],
    )?;
    Ok(Ok(IntRep {
        value: sum,
        scale,
        range,
        ..wide
    }))
}

pub(super) fn lower_global_average_pool(
    lw: &mut Lowering,
    id: NodeId,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let Some(x) = inputs[0] else {
        return Ok(Outcome::NotACandidate);
    };
    let Some(shape) = static_shape(lw, x).filter(|s| s.len() >= 3) else {
        return Ok(Outcome::Kept(
            "the spatial size is not static (pin it with --input-shape)".into(),
        ));
    };
    let rep = match lw.rep(x).cloned() {
        Some(rep) => rep,
        // The output of a float op (or of a later lowering's table): its 8-bit form.
        None if lw.model().graph.value(x).plan.is_some() => lw.operand(x, Form::Stored8)?,
        None => return Ok(Outcome::NotACandidate),
    };
    let count: i64 = shape[2..].iter().product();
    let axes: Vec<usize> = (2..shape.len()).collect();
    let sum = sum_over(lw, x, &rep, &axes, true, count)?;
    finish(lw, id, sum)
}

pub(super) fn lower_reduce_mean(
    lw: &mut Lowering,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let Some(x) = inputs[0] else {
        return Ok(Outcome::NotACandidate);
    };
    let Some(rep) = lw.rep(x).cloned() else {
        return Ok(Outcome::NotACandidate);
    };
    let Some(shape) = static_shape(lw, x) else {
        return Ok(Outcome::Kept("the reduced sizes are not static".into()));
    };
    let r = shape.len() as i64;
    let axes: Vec<i64> = match inputs.get(1).copied().flatten() {
        Some(v) => match lw.model().graph.constant(v).and_then(|t| t.decode().ok()) {
            Some(a) => a.to_f64_vec().iter().map(|&a| a as i64).collect(),
            None => return Ok(Outcome::Kept("axes are not constant".into())),
        },
        // Before opset 18 the axes are an attribute.
        None => match op.attr_ints("axes")? {
            Some(axes) => axes,
            None if op.attr_int("noop_with_empty_axes", 0)? != 0 => {
                return Ok(Outcome::NotACandidate);
            }
            None => (0..r).collect(),
        },
    };
    let mut axes: Vec<usize> = axes
        .iter()
        .map(|&a| if a < 0 { a + r } else { a })
        .filter(|a| (0..r).contains(a))
        .map(|a| a as usize)
        .collect();
    axes.sort_unstable();
    axes.dedup();
    let batch_known = lw
        .facts
        .get(x)
        .and_then(|f| f.shape.as_ref()?.first()?.known())
        .is_some();
    if axes.contains(&0) && !batch_known {
        return Ok(Outcome::Kept("averages over a dynamic batch".into()));
    }
    let count: i64 = axes.iter().map(|&a| shape[a]).product();
    if count <= 0 {
        return Ok(Outcome::Kept("empty reduction".into()));
    }
    let keepdims = op.attr_int("keepdims", 1)? != 0;
    let sum = sum_over(lw, x, &rep, &axes, keepdims, count)?;
    finish(lw, id, sum)
}

fn finish(
    lw: &mut Lowering,
    id: NodeId,
    result: std::result::Result<IntRep, String>,
) -> Result<Outcome> {
    match result {
        Ok(rep) => {
            lw.set_rep(out(id, 0), rep, 32, true);
            Ok(Outcome::Lowered)
        }
        Err(reason) => Ok(Outcome::Kept(reason)),
    }
}

/// Window geometry of an `AveragePool`, per spatial axis.
struct Windows {
    kernel: Vec<i64>,
    strides: Vec<i64>,
    dilations: Vec<i64>,
    /// Begin pads, then end pads.
    pads: Vec<i64>,
}

impl Windows {
    fn read(op: &Op, spatial: usize) -> Result<std::result::Result<Windows, String>> {
        let ints = |name: &str, default: i64| -> Result<Vec<i64>> {
            Ok(op
                .attr_ints(name)?
                .unwrap_or_else(|| vec![default; spatial]))
        };
        let auto_pad = op
            .attr_string("auto_pad")?
            .unwrap_or_else(|| "NOTSET".into());
        if auto_pad != "NOTSET" && auto_pad != "VALID" {
            return Ok(Err(format!("auto_pad {auto_pad}")));
        }
        if op.attr_int("ceil_mode", 0)? != 0 {
            return Ok(Err("ceil_mode".into()));
        }
        let w = Windows {
            kernel: ints("kernel_shape", 1)?,
            strides: ints("strides", 1)?,
            dilations: ints("dilations", 1)?,
            pads: match op.attr_ints("pads")? {
                Some(p) if auto_pad != "VALID" => p,
                _ => vec![0; 2 * spatial],
            },
        };
        if w.kernel.len() != spatial || w.pads.len() != 2 * spatial {
            return Ok(Err("kernel or pads do not match the input's rank".into()));
        }
        Ok(Ok(w))
    }

    /// Input positions inside the unpadded input that each output position's window covers.
    fn counts(&self, input: &[i64]) -> (Vec<usize>, Vec<i64>) {
        let n = input.len();
        let per_axis: Vec<Vec<i64>> = (0..n)
            .map(|a| {
                let reach = self.dilations[a] * (self.kernel[a] - 1) + 1;
                let size =
                    (input[a] + self.pads[a] + self.pads[a + n] - reach) / self.strides[a] + 1;
                (0..size.max(0))
                    .map(|o| {
                        let start = o * self.strides[a] - self.pads[a];
                        (0..self.kernel[a])
                            .filter(|k| (0..input[a]).contains(&(start + k * self.dilations[a])))
                            .count() as i64
                    })
                    .collect()
            })
            .collect();
        let shape: Vec<usize> = per_axis.iter().map(|c| c.len()).collect();
        let total: usize = shape.iter().product();
        let mut counts = Vec::with_capacity(total);
        for flat in 0..total {
            let mut rest = flat;
            let mut c = 1;
            for a in (0..n).rev() {
                c *= per_axis[a][rest % shape[a]];
                rest /= shape[a];
            }
            counts.push(c);
        }
        (shape, counts)
    }
}

/// `round(2^p / count)` for each count.
fn factors_i64(counts: &[i64], p: u32) -> Vec<i64> {
    counts
        .iter()
        .map(|&c| ((1i64 << p) as f64 / c.max(1) as f64).round() as i64)
        .collect()
}

pub(super) fn lower_average_pool(
    lw: &mut Lowering,
    id: NodeId,
    op: &Op,
    inputs: &[Option<ValueId>],
) -> Result<Outcome> {
    let Some(x) = inputs[0] else {
        return Ok(Outcome::NotACandidate);
    };
    if lw.model().graph.value(x).plan.is_none() {
        return Ok(Outcome::NotACandidate);
    }
    let Some(shape) = static_shape(lw, x).filter(|s| s.len() >= 3) else {
        return Ok(Outcome::Kept(
            "the input's size is not static (pin it with --input-shape)".into(),
        ));
    };
    let spatial = shape.len() - 2;
    let w = match Windows::read(op, spatial)? {
        Ok(w) => w,
        Err(reason) => return Ok(Outcome::Kept(reason)),
    };
    // 8 bits, zero point 0: padding with 0 pads with real zeros in both engines.
    let a = lw.operand(x, Form::Stored8)?;
    let channels = shape[1] as usize;
    let mut kshape = vec![channels, 1];
    kshape.extend(w.kernel.iter().map(|&k| k as usize));
    let ones = Array::from_vec(&kshape, vec![1i8; kshape.iter().product()])?;
    let ones = lw.constant("ones", &ones)?;
    let mut attrs = copy_attrs(op, &["dilations", "strides"]);
    attrs.push(crate::ir::attr::ints("kernel_shape", &w.kernel));
    attrs.push(crate::ir::attr::ints("pads", &w.pads));
    attrs.push(crate::ir::attr::int("group", channels as i64));
    let sum = lw.op("ConvInteger", "window_sum", &[a.value, ones], attrs)?;
    let window: i64 = w.kernel.iter().product();
    let magnitude = a.magnitude() as i64 * window;
    let rep = IntRep {
        value: sum,
        scale: a.scale.clone(),
        zero_point: 0,
        dtype: DataType::Int32,
        range: (a.range.0.min(0) * window, a.range.1.max(0) * window),
    };
    lw.note(&rep, 32, true);
    let include_pad = op.attr_int("count_include_pad", 0)? != 0;
    let (out_shape, counts) = w.counts(&shape[2..]);
    let uniform = include_pad || counts.iter().all(|&c| c == window);
    let s = a.scale.at(0);
    let rep = if uniform {
        IntRep {
            scale: Scale::PerTensor(s / window as f64),
            ..rep
        }
    } else {
        // round(2^p / count) per position, p as large as int32 allows (at most 16).
        let bits = 64 - (magnitude.max(1) as u64).leading_zeros() as i64;
        let p = (30 - bits).clamp(0, 16) as u32;
        if p < 8 {
            return Ok(Outcome::Kept(
                "window sums too large for a per-position divisor".into(),
            ));
        }
        let factors: Vec<i32> = factors_i64(&counts, p).iter().map(|&f| f as i32).collect();
        let mut fshape = vec![1, 1];
        fshape.extend(out_shape);
        let factors = lw.constant("per_count", &Array::from_vec(&fshape, factors)?)?;
        let value = lw.op("Mul", "average", &[sum, factors], vec![])?;
        // Each result is at most count · factor elements' worth.
        let most = counts
            .iter()
            .zip(&factors_i64(&counts, p))
            .map(|(c, f)| c * f)
            .max()
            .unwrap_or(0);
        IntRep {
            value,
            scale: Scale::PerTensor(s / (1i64 << p) as f64),
            range: (a.range.0.min(0) * most, a.range.1.max(0) * most),
            ..rep
        }
    };
    lw.set_rep(out(id, 0), rep, 32, true);
    Ok(Outcome::Lowered)
}
