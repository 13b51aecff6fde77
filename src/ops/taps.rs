//! 2-D sliding windows as their taps: tap `(i, j)` of a window reads
//! `x_padded[:, :, i·dh + sh·t, j·dw + sw·u]` for every output position `(t, u)`, one strided
//! `Slice`. A depthwise Conv (one filter per channel, `group` = channels, weight [C, 1, kh, kw])
//! is the sum of its taps times their per-channel weights; a MaxPool is their maximum. Shared
//! by `quantize` (which plans depthwise inputs at 16 bits) and the integer lowering (which
//! computes taps in int32 where the engines' integer kernels would need 8-bit operands: exact
//! on every CPU for any width).

use crate::ir::Op;

/// The geometry of a 2-D window.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub kernel: [i64; 2],
    pub strides: [i64; 2],
    pub dilations: [i64; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [i64; 4],
}

#[derive(Clone, Debug, PartialEq)]
pub struct DepthwiseTaps {
    pub channels: i64,
    pub window: Window,
}

impl Window {
    /// The window of a Conv or pool with these attributes and kernel size, when its padding is
    /// explicit (or VALID) and its strides and dilations positive.
    fn of(op: &Op, kernel: [i64; 2]) -> crate::Result<Option<Window>> {
        let auto_pad = op
            .attr_string("auto_pad")?
            .unwrap_or_else(|| "NOTSET".into());
        let pair = |name: &str| -> crate::Result<Option<[i64; 2]>> {
            Ok(match op.attr_ints(name)?.as_deref() {
                None => Some([1, 1]),
                Some(&[a, b]) if a >= 1 && b >= 1 => Some([a, b]),
                Some(_) => None,
            })
        };
        let (Some(strides), Some(dilations)) = (pair("strides")?, pair("dilations")?) else {
            return Ok(None);
        };
        let pads = match (auto_pad.as_str(), op.attr_ints("pads")?.as_deref()) {
            ("VALID", _) | ("NOTSET", None) => [0; 4],
            ("NOTSET", Some(&[t, l, b, r])) if [t, l, b, r].iter().all(|&p| p >= 0) => [t, l, b, r],
            _ => return Ok(None),
        };
        if let Some(k) = op.attr_ints("kernel_shape")? {
            if k != kernel {
                return Ok(None);
            }
        }
        Ok(Some(Window {
            kernel,
            strides,
            dilations,
            pads,
        }))
    }

    /// The window of a 2-D MaxPool with one output (no indices), floor rounding and explicit
    /// padding smaller than the kernel (so every window holds an input element).
    pub fn of_max_pool(op: &Op, outputs: usize) -> crate::Result<Option<Window>> {
        if !(op.is("MaxPool") && op.domain().is_empty()) || outputs != 1 {
            return Ok(None);
        }
        if op.attr_int("ceil_mode", 0)? != 0 {
            return Ok(None);
        }
        let Some(&[kh, kw]) = op.attr_ints("kernel_shape")?.as_deref() else {
            return Ok(None);
        };
        if kh < 1 || kw < 1 {
            return Ok(None);
        }
        let window = Window::of(op, [kh, kw])?;
        Ok(window.filter(|w| {
            let [t, l, b, r] = w.pads;
            t.max(b) < w.kernel[0] && l.max(r) < w.kernel[1]
        }))
    }

    /// Slice bounds of tap `(i, j)` on the padded input along axes 2 and 3: starts and ends
    /// (counted from the end, so they hold for any input size); the steps are the strides.
    pub fn slice(&self, i: i64, j: i64) -> ([i64; 2], [i64; 2]) {
        let end = |tap: i64, axis: usize| {
            // Every tap reads Ho = ⌊(Hp − d·(k−1) − 1)/s⌋ + 1 rows from i·d: up to Hp − (k−1−i)·d.
            let short = (self.kernel[axis] - 1 - tap) * self.dilations[axis];
            if short == 0 { i64::MAX } else { -short }
        };
        (
            [i * self.dilations[0], j * self.dilations[1]],
            [end(i, 0), end(j, 1)],
        )
    }
}

impl DepthwiseTaps {
    /// The taps of `op` with a weight of `weight_dims`, when it is a depthwise 2-D Conv with
    /// explicit (or VALID) padding and a channel multiplier of 1.
    pub fn of(op: &Op, weight_dims: &[i64]) -> crate::Result<Option<DepthwiseTaps>> {
        if !(op.is("Conv") && op.domain().is_empty()) {
            return Ok(None);
        }
        let group = op.attr_int("group", 1)?;
        let &[m, 1, kh, kw] = weight_dims else {
            return Ok(None);
        };
        if group <= 1 || m != group || kh < 1 || kw < 1 {
            return Ok(None);
        }
        Ok(Window::of(op, [kh, kw])?.map(|window| DepthwiseTaps {
            channels: m,
            window,
        }))
    }
}
