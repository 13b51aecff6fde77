//! Resize's geometry (ONNX Resize-11 to 19): the output size of each axis, and which input
//! elements each output index reads with which weights. Inference reads the sizes;
//! `expand-resize` turns the reads into Gathers and interpolation matrices.
//!
//! Coordinates are computed in f32, as onnxruntime does, so that a nearest index at an exact
//! half lands where the float model's does.

use super::facts::{Dim, Facts};
use crate::ir::{Array, Op};

/// How output values are made from input values.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Mode {
    Nearest(NearestRound),
    Linear,
    Cubic,
}

/// How a fractional nearest coordinate is rounded.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum NearestRound {
    PreferFloor,
    PreferCeil,
    Floor,
    Ceil,
}

/// `coordinate_transformation_mode`: the input coordinate of an output index.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Coordinates {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    /// Needs the region of interest; not expanded.
    TfCropAndResize,
}

/// The attributes that decide the geometry.
#[derive(Clone, Debug)]
pub struct Resize {
    pub mode: Mode,
    pub coordinates: Coordinates,
    /// `axes` (opset 18): the axes `scales`/`sizes` describe; all when absent.
    pub axes: Option<Vec<i64>>,
    /// `keep_aspect_ratio_policy` is `stretch` (the only one whose sizes are the given ones).
    pub stretch: bool,
    pub antialias: bool,
}

impl Resize {
    /// Reads the attributes; `Err` names what intone does not know.
    pub fn read(op: &Op) -> Result<Resize, String> {
        let string = |name: &str, default: &str| -> Result<String, String> {
            Ok(op
                .attr_string(name)
                .map_err(|e| e.to_string())?
                .unwrap_or_else(|| default.to_string()))
        };
        let nearest = match string("nearest_mode", "round_prefer_floor")?.as_str() {
            "round_prefer_floor" => NearestRound::PreferFloor,
            "round_prefer_ceil" => NearestRound::PreferCeil,
            "floor" => NearestRound::Floor,
            "ceil" => NearestRound::Ceil,
            other => return Err(format!("nearest_mode '{other}' is not an ONNX mode")),
        };
        let mode = match string("mode", "nearest")?.as_str() {
            "nearest" => Mode::Nearest(nearest),
            "linear" | "bilinear" => Mode::Linear,
            "cubic" => Mode::Cubic,
            other => return Err(format!("mode '{other}' is not an ONNX mode")),
        };
        let coordinates = match string("coordinate_transformation_mode", "half_pixel")?.as_str() {
            "half_pixel" => Coordinates::HalfPixel,
            "half_pixel_symmetric" => Coordinates::HalfPixelSymmetric,
            "pytorch_half_pixel" => Coordinates::PytorchHalfPixel,
            "align_corners" => Coordinates::AlignCorners,
            "asymmetric" => Coordinates::Asymmetric,
            "tf_crop_and_resize" => Coordinates::TfCropAndResize,
            other => {
                return Err(format!(
                    "coordinate_transformation_mode '{other}' is not an ONNX mode"
                ));
            }
        };
        let int = |name: &str| op.attr_int(name, 0).map_err(|e| e.to_string());
        Ok(Resize {
            mode,
            coordinates,
            axes: op.attr_ints("axes").map_err(|e| e.to_string())?,
            stretch: string("keep_aspect_ratio_policy", "stretch")? == "stretch",
            antialias: int("antialias")? != 0,
        })
    }

    /// The axes `scales`/`sizes` describe, normalized for `rank`.
    pub fn described_axes(&self, rank: usize) -> Option<Vec<usize>> {
        match &self.axes {
            None => Some((0..rank).collect()),
            Some(axes) => axes
                .iter()
                .map(|&a| {
                    let a = if a < 0 { a + rank as i64 } else { a };
                    (0..rank as i64).contains(&a).then_some(a as usize)
                })
                .collect(),
        }
    }

    /// Output dims from the input's and the scales' or sizes' facts (Resize-11 slots: 2 is
    /// scales, 3 is sizes). Unknown where they are not known.
    pub fn output_dims(
        &self,
        input: &[Dim],
        scales: Option<&Facts>,
        sizes: Option<&Facts>,
    ) -> Option<Vec<Dim>> {
        let axes = self.described_axes(input.len())?;
        let mut out = input.to_vec();
        if let Some(sizes) = sizes.and_then(|f| f.elements.as_ref()) {
            if sizes.len() != axes.len() {
                return None;
            }
            for (&a, s) in axes.iter().zip(sizes) {
                out[a] = if self.stretch {
                    s.clone()
                } else {
                    Dim::Unknown
                };
            }
            return Some(out);
        }
        let scales = float_values(scales?)?;
        if scales.len() != axes.len() {
            return None;
        }
        for (&a, &s) in axes.iter().zip(&scales) {
            if s != 1.0 {
                out[a] = match input[a].known() {
                    Some(n) => Dim::Known((n as f32 * s).floor() as i64),
                    None => Dim::Unknown,
                };
            }
        }
        Some(out)
    }

    /// Per axis of a static input: its size, output size and the scale the coordinate
    /// transform divides by (`out / in` when sizes are given).
    pub fn plan(
        &self,
        input: &[usize],
        scales: Option<&[f32]>,
        sizes: Option<&[i64]>,
    ) -> Result<Vec<AxisResize>, String> {
        let axes = self
            .described_axes(input.len())
            .ok_or("an axis in 'axes' is out of range")?;
        let mut plan: Vec<AxisResize> = input
            .iter()
            .map(|&n| AxisResize {
                input: n,
                output: n,
                scale: 1.0,
            })
            .collect();
        match (sizes, scales) {
            (Some(sizes), _) => {
                if sizes.len() != axes.len() {
                    return Err("'sizes' does not have one entry per axis".into());
                }
                if !self.stretch {
                    return Err("keep_aspect_ratio_policy other than stretch".into());
                }
                for (&a, &s) in axes.iter().zip(sizes) {
                    if s <= 0 || s > 1 << 24 {
                        return Err(format!("output size {s} of axis {a}"));
                    }
                    plan[a].output = s as usize;
                    plan[a].scale = s as f32 / input[a] as f32;
                }
            }
            (None, Some(scales)) => {
                if scales.len() != axes.len() {
                    return Err("'scales' does not have one entry per axis".into());
                }
                for (&a, &s) in axes.iter().zip(scales) {
                    let out = (input[a] as f32 * s).floor();
                    if !(s > 0.0 && out >= 1.0 && out <= (1 << 24) as f32) {
                        return Err(format!("scale {s} of axis {a}"));
                    }
                    plan[a].output = out as usize;
                    plan[a].scale = s;
                }
            }
            (None, None) => return Err("neither scales nor sizes is a constant".into()),
        }
        Ok(plan)
    }

    /// The input coordinate output index `x` of `axis` reads, before rounding or clamping.
    fn source(&self, axis: &AxisResize, x: usize) -> f32 {
        let (x, scale) = (x as f32, axis.scale);
        let (n_in, n_out) = (axis.input as f32, axis.output as f32);
        match self.coordinates {
            Coordinates::HalfPixel | Coordinates::TfCropAndResize => (x + 0.5) / scale - 0.5,
            Coordinates::HalfPixelSymmetric => {
                let adjustment = n_out / (scale * n_in);
                let offset = n_in / 2.0 * (1.0 - adjustment);
                offset + (x + 0.5) / scale - 0.5
            }
            Coordinates::PytorchHalfPixel if axis.output > 1 => (x + 0.5) / scale - 0.5,
            Coordinates::PytorchHalfPixel => 0.0,
            Coordinates::AlignCorners if axis.output > 1 => x * (n_in - 1.0) / (n_out - 1.0),
            Coordinates::AlignCorners => 0.0,
            Coordinates::Asymmetric => x / scale,
        }
    }

    /// For each output index of `axis`, the input index nearest mode reads.
    pub fn nearest_indices(&self, axis: &AxisResize, round: NearestRound) -> Vec<i64> {
        let last = axis.input as i64 - 1;
        (0..axis.output)
            .map(|x| {
                let c = self.source(axis, x);
                let i = match round {
                    NearestRound::PreferFloor if c - c.floor() == 0.5 => c.floor(),
                    NearestRound::PreferCeil if c - c.floor() == 0.5 => c.ceil(),
                    NearestRound::PreferFloor | NearestRound::PreferCeil => c.round(),
                    NearestRound::Floor => c.floor(),
                    NearestRound::Ceil => c.ceil(),
                };
                (i as i64).clamp(0, last)
            })
            .collect()
    }

    /// The linear interpolation matrix of `axis`, `[output, input]`: row x holds the weights
    /// of the (at most two) input elements output x mixes; each row sums to 1.
    pub fn linear_weights(&self, axis: &AxisResize) -> Array {
        let (n_in, n_out) = (axis.input, axis.output);
        let mut w = vec![0f32; n_out * n_in];
        for x in 0..n_out {
            let c = self.source(axis, x).clamp(0.0, (n_in - 1) as f32);
            let lo = c.floor() as usize;
            let hi = (lo + 1).min(n_in - 1);
            let frac = c - lo as f32;
            w[x * n_in + lo] += 1.0 - frac;
            w[x * n_in + hi] += frac;
        }
        Array::from_vec(&[n_out, n_in], w).expect("shape matches")
    }
}

/// One axis of a resize with static sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct AxisResize {
    pub input: usize,
    pub output: usize,
    pub scale: f32,
}

impl AxisResize {
    /// Whether the axis is left as it is (every output reads its own index).
    pub fn is_identity(&self, r: &Resize) -> bool {
        self.input == self.output
            && match r.mode {
                Mode::Nearest(round) => r
                    .nearest_indices(self, round)
                    .iter()
                    .enumerate()
                    .all(|(i, &j)| i as i64 == j),
                _ => (0..self.output).all(|x| r.source(self, x) == x as f32),
            }
    }
}

/// The f32 values of a constant float tensor's facts.
pub fn float_values(f: &Facts) -> Option<Vec<f32>> {
    match f.value.as_deref()? {
        Array::F32(a) => Some(a.iter().copied().collect()),
        Array::F64(a) => Some(a.iter().map(|&v| v as f32).collect()),
        _ => None,
    }
}
