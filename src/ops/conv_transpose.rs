//! ConvTranspose's geometry per spatial axis: output size and the padding that produces it
//! (explicit `pads`, `output_shape`, or `auto_pad`), as the ONNX spec defines them. Shared
//! by inference and `expand-conv-transpose`.

use super::facts::Dim;
use crate::ir::Op;

#[derive(Clone, Debug)]
pub struct ConvTransposeGeometry {
    pub group: usize,
    pub kernel: Vec<i64>,
    pub strides: Vec<i64>,
    pub dilations: Vec<i64>,
    pads: Vec<i64>,
    output_padding: Vec<i64>,
    output_shape: Option<Vec<i64>>,
    auto_pad: String,
}

impl ConvTransposeGeometry {
    /// Reads the attributes for `spatial` axes; the kernel from the weight's dims when
    /// `kernel_shape` is absent.
    pub fn read(op: &Op, spatial: usize, weight: Option<&[Dim]>) -> Result<Self, String> {
        let ints = |name: &str, default: i64, len: usize| -> Result<Vec<i64>, String> {
            let v = op
                .attr_ints(name)
                .map_err(|e| e.to_string())?
                .unwrap_or_else(|| vec![default; len]);
            if v.len() != len {
                return Err(format!("'{name}' has {} entries, expected {len}", v.len()));
            }
            Ok(v)
        };
        let kernel = match op.attr_ints("kernel_shape").map_err(|e| e.to_string())? {
            Some(k) => k,
            None => weight
                .filter(|w| w.len() == spatial + 2)
                .and_then(|w| w[2..].iter().map(Dim::known).collect())
                .ok_or("the kernel shape is not known")?,
        };
        let g = ConvTransposeGeometry {
            group: op.attr_int("group", 1).map_err(|e| e.to_string())?.max(1) as usize,
            strides: ints("strides", 1, spatial)?,
            dilations: ints("dilations", 1, spatial)?,
            pads: ints("pads", 0, 2 * spatial)?,
            output_padding: ints("output_padding", 0, spatial)?,
            output_shape: op.attr_ints("output_shape").map_err(|e| e.to_string())?,
            auto_pad: op
                .attr_string("auto_pad")
                .map_err(|e| e.to_string())?
                .unwrap_or_else(|| "NOTSET".into()),
            kernel,
        };
        let bad = |v: &[i64], low: i64| v.iter().any(|&x| !(low..=1 << 20).contains(&x));
        if g.kernel.len() != spatial
            || bad(&g.kernel, 1)
            || bad(&g.strides, 1)
            || bad(&g.dilations, 1)
            || bad(&g.pads, 0)
            || bad(&g.output_padding, 0)
        {
            return Err("kernel, strides, dilations, pads or output_padding out of range".into());
        }
        if let Some(s) = &g.output_shape {
            // output_shape may list only the spatial dims, or all of them.
            if s.len() != spatial && s.len() != spatial + 2 {
                return Err("'output_shape' has the wrong length".into());
            }
        }
        Ok(g)
    }

    fn span(&self, i: usize) -> i64 {
        self.dilations[i] * (self.kernel[i] - 1) + 1
    }

    /// Output length of axis `i` before padding is removed.
    fn full(&self, i: usize, n: i64) -> Option<i64> {
        self.strides[i]
            .checked_mul(n.checked_sub(1)?)?
            .checked_add(self.output_padding[i] + self.span(i))
    }

    /// The padding (begin, end) removed from the full output of axis `i` for input size `n`.
    pub fn pads(&self, i: usize, n: i64) -> Option<(i64, i64)> {
        let target = match (&self.output_shape, self.auto_pad.as_str()) {
            (Some(s), _) => Some(s[s.len() - self.kernel.len() + i]),
            (None, "SAME_UPPER" | "SAME_LOWER") => n.checked_mul(self.strides[i]),
            _ => None,
        };
        let spatial = self.kernel.len();
        match target {
            None if self.auto_pad == "VALID" => Some((0, 0)),
            None => Some((self.pads[i], self.pads[i + spatial])),
            Some(t) => {
                let total = self.full(i, n)?.checked_sub(t)?;
                if total < 0 {
                    return None;
                }
                let (small, large) = (total / 2, total - total / 2);
                Some(if self.auto_pad == "SAME_UPPER" {
                    (small, large)
                } else {
                    (large, small)
                })
            }
        }
    }

    /// Output size of axis `i` for input size `n`.
    pub fn output_size(&self, i: usize, n: i64) -> Option<i64> {
        let (begin, end) = self.pads(i, n)?;
        let out = self.full(i, n)? - begin - end;
        (out >= 1).then_some(out)
    }

    /// The `output_padding` of axis `i`.
    pub fn output_padding(&self, i: usize) -> i64 {
        self.output_padding[i]
    }
}
