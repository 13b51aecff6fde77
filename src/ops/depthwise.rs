//! A depthwise 2-D Conv (one filter per channel, `group` = channels, `weight` [C, 1, kh, kw]) as
//! its taps: output = Σ over taps (i, j) of `w[:, i, j] ⊙ x_padded[:, :, i·dh + sh·t, j·dw + sw·u]`.
//! Shared by `quantize` (which plans these inputs at 16 bits) and the integer lowering (which
//! computes the taps with int32 Slice/Mul/Add instead of `ConvInteger`: exact on every CPU for
//! any operand widths, and faster than the engines' grouped integer convolutions).

use crate::ir::Op;

#[derive(Clone, Debug, PartialEq)]
pub struct DepthwiseTaps {
    pub channels: i64,
    pub kernel: [i64; 2],
    pub strides: [i64; 2],
    pub dilations: [i64; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [i64; 4],
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
            if k != [kh, kw] {
                return Ok(None);
            }
        }
        Ok(Some(DepthwiseTaps {
            channels: m,
            kernel: [kh, kw],
            strides,
            dilations,
            pads,
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
