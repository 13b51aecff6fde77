//! 2-D windows (`ops::taps`) over int32 in plain int32 arithmetic, exact on every CPU whatever
//! the operand widths:
//! - depthwise `Conv` as tap sums: the input at its 16-bit plan, zero-padded, one `Slice` per
//!   tap times that tap's per-channel int8 weights (int32 constants [1, C, 1, 1]), summed;
//!   cheaper than the engines' grouped `ConvInteger`;
//! - `MaxPool` of an int32 value (a Conv's accumulator, per-channel scales included) read at
//!   more than 8 bits: the `Max` of its taps, padded with the value's proven minimum. The
//!   engines' MaxPool takes 8-bit integers only.

use super::*;
use crate::ops::taps::{DepthwiseTaps, Window};

/// `x` padded with `value` (zeros without one) by `window.pads`, ready to slice its taps.
fn tap_slices(
    lw: &mut Lowering,
    x: ValueId,
    window: &Window,
    value: Option<ValueId>,
) -> Result<TapSlicer> {
    let mut padded = x;
    if window.pads.iter().any(|&p| p != 0) {
        let [t, l, b, r] = window.pads;
        let pads = lw.constant(
            "pads",
            &Array::from_vec(&[8], vec![0i64, 0, t, l, 0, 0, b, r])?,
        )?;
        let inputs: Vec<ValueId> = [padded, pads].into_iter().chain(value).collect();
        padded = lw.op("Pad", "padded", &inputs, vec![])?;
    }
    let axes = lw.constant("tap_axes", &Array::from_vec(&[2], vec![2i64, 3])?)?;
    let steps = lw.constant(
        "tap_steps",
        &Array::from_vec(&[2], window.strides.to_vec())?,
    )?;
    Ok(TapSlicer {
        padded,
        axes,
        steps,
        window: window.clone(),
    })
}

struct TapSlicer {
    padded: ValueId,
    axes: ValueId,
    steps: ValueId,
    window: Window,
}

impl TapSlicer {
    /// Tap `(i, j)`: the strided slice of the padded input it reads at every output position.
    fn tap(&self, lw: &mut Lowering, i: i64, j: i64) -> Result<ValueId> {
        let (starts, ends) = self.window.slice(i, j);
        let starts = lw.constant("tap_starts", &Array::from_vec(&[2], starts.to_vec())?)?;
        let ends = lw.constant("tap_ends", &Array::from_vec(&[2], ends.to_vec())?)?;
        lw.op(
            "Slice",
            "tap",
            &[self.padded, starts, ends, self.axes, self.steps],
            vec![],
        )
    }
}

/// The accumulator of a depthwise Conv of `x` with integer weights `q` [C, 1, kh, kw] (the
/// aligned residual terms, within int32: `lower::residual::tap_sum_fits`) at
/// `s_x · scales[c]`, channels along axis 1.
pub(super) fn depthwise_taps(
    lw: &mut Lowering,
    x: ValueId,
    taps: &DepthwiseTaps,
    q: &ndarray::ArrayD<i64>,
    scales: &[f64],
) -> Result<IntRep> {
    let xw = wide_input(lw, x)?;
    let slicer = tap_slices(lw, xw.value, &taps.window, None)?;
    let channels = taps.channels as usize;
    let mut acc: Option<ValueId> = None;
    for i in 0..taps.window.kernel[0] {
        for j in 0..taps.window.kernel[1] {
            let column: Vec<i32> = (0..channels)
                .map(|c| q[[c, 0, i as usize, j as usize]] as i32)
                .collect();
            if column.iter().all(|&w| w == 0) && acc.is_some() {
                continue;
            }
            let window = slicer.tap(lw, i, j)?;
            let w = lw.constant(
                "tap_weight",
                &Array::from_vec(&[1, channels, 1, 1], column)?,
            )?;
            let product = lw.op("Mul", "tap_product", &[window, w], vec![])?;
            acc = Some(match acc {
                None => product,
                Some(sum) => lw.op("Add", "taps", &[sum, product], vec![])?,
            });
        }
    }
    let range = matmul_range(q, 0, xw.range);
    let s_x = xw.scale.at(0);
    Ok(IntRep {
        value: acc.expect("at least one tap"),
        scale: Scale::PerAxis {
            axis: 1,
            scales: scales.iter().map(|s| s * s_x).collect(),
        },
        zero_point: 0,
        dtype: DataType::Int32,
        range,
    })
}

/// `x` in int32 at its own plan (16 bits for a depthwise input), zero point 0.
fn wide_input(lw: &mut Lowering, x: ValueId) -> Result<IntRep> {
    let plan = lw.plan(x)?;
    let Scale::PerTensor(scale) = plan.scale else {
        return Err(crate::Error::unsupported("per-axis activation plans"));
    };
    let levels = plan.levels();
    let target = Target {
        scale,
        zero_point: 0,
        lo: if plan.signed { -levels } else { 0 },
        hi: levels,
        dtype: DataType::Int32,
    };
    let rep = lw.to_target(x, &target, "wide")?;
    lw.note(&rep, plan.bits, plan.signed);
    Ok(rep)
}

/// The MaxPool `window` of `rep`, an int32 value with channels along axis 1: the maximum of
/// its taps, at `rep`'s scales (a max commutes with a positive per-channel scale).
pub(super) fn max_pool_taps(lw: &mut Lowering, rep: &IntRep, window: &Window) -> Result<IntRep> {
    // Padding never wins: every window holds an input element (`Window::of_max_pool`).
    let floor = lw.constant("pad_value", &Array::scalar(rep.range.0 as i32))?;
    let slicer = tap_slices(lw, rep.value, window, Some(floor))?;
    let mut max: Option<ValueId> = None;
    for i in 0..window.kernel[0] {
        for j in 0..window.kernel[1] {
            let tap = slicer.tap(lw, i, j)?;
            max = Some(match max {
                None => tap,
                Some(m) => lw.op("Max", "tap_max", &[m, tap], vec![])?,
            });
        }
    }
    Ok(IntRep {
        value: max.expect("a window has a tap"),
        ..rep.clone()
    })
}
