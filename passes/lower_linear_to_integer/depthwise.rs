//! Depthwise `Conv` (`ops::depthwise`) as int32 tap sums: the input at its 16-bit plan in
//! int32, zero-padded, one `Slice` per tap multiplied by that tap's per-channel int8 weights
//! (int32 constants [1, C, 1, 1]) and summed. Plain int32 arithmetic: exact on every CPU
//! whatever the operand widths, and cheaper than the engines' grouped `ConvInteger`.

use super::*;
use crate::ops::depthwise::DepthwiseTaps;

/// The accumulator of a depthwise Conv of `x` with quantized weights `q` [C, 1, kh, kw] at
/// `s_x · scales[c]`, channels along axis 1.
pub(super) fn depthwise_taps(
    lw: &mut Lowering,
    x: ValueId,
    taps: &DepthwiseTaps,
    q: &ndarray::ArrayD<i8>,
    scales: &[f64],
) -> Result<IntRep> {
    let xw = wide_input(lw, x)?;
    let mut padded = xw.value;
    if taps.pads.iter().any(|&p| p != 0) {
        let [t, l, b, r] = taps.pads;
        let pads = lw.constant(
            "pads",
            &Array::from_vec(&[8], vec![0i64, 0, t, l, 0, 0, b, r])?,
        )?;
        padded = lw.op("Pad", "padded", &[padded, pads], vec![])?;
    }
    let axes = lw.constant("tap_axes", &Array::from_vec(&[2], vec![2i64, 3])?)?;
    let steps = lw.constant("tap_steps", &Array::from_vec(&[2], taps.strides.to_vec())?)?;
    let channels = taps.channels as usize;
    let mut acc: Option<ValueId> = None;
    for i in 0..taps.kernel[0] {
        for j in 0..taps.kernel[1] {
            let column: Vec<i32> = (0..channels)
                .map(|c| q[[c, 0, i as usize, j as usize]] as i32)
                .collect();
            if column.iter().all(|&w| w == 0) && acc.is_some() {
                continue;
            }
            let (starts, ends) = taps.slice(i, j);
            let starts = lw.constant("tap_starts", &Array::from_vec(&[2], starts.to_vec())?)?;
            let ends = lw.constant("tap_ends", &Array::from_vec(&[2], ends.to_vec())?)?;
            let window = lw.op("Slice", "tap", &[padded, starts, ends, axes, steps], vec![])?;
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
