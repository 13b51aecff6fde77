//! `expand-resize`: a `Resize` with compile-time sizes becomes ops the linear lowering already
//! runs on integers.
//!
//! - nearest: one `Gather` per resized axis, with the input index each output index reads
//!   (data movement: the integers pass through unchanged);
//! - linear: per resized axis, a `MatMul` by its interpolation matrix `[in, out]` (at most
//!   two non-zero weights per column, summing to 1), the axis moved last by a `Transpose`
//!   when it is not. The lowering quantizes the matrix as it does any weight.
//!
//! The geometry (coordinate modes, rounding, clamping at the border) is `ops::resize`'s.
//! Preconditions: opset ≥ 11 (`upgrade-opset` turns Upsample and Resize-10 into Resize-11);
//! constant scales or sizes whose resized axes have known input sizes. Cubic, antialiased
//! and crop-and-resize modes stay.

use super::prelude::*;

use crate::ir::{Array, attr};
use crate::ops::resize::{AxisResize, Mode, Resize, float_values};
use crate::ops::{Dim, Facts};
use crate::pass::matcher::out;

pub struct ExpandResize;

impl Pass for ExpandResize {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        if model.opset("").unwrap_or(1) < 11 {
            return Ok(());
        }
        let facts = cx.facts(model)?;
        for id in model.graph.topological_order()? {
            let Some(op) = model.graph.op(id) else {
                continue;
            };
            if !(op.is("Resize") && op.domain().is_empty()) {
                continue;
            }
            cx.report.matched += 1;
            let who = model.graph.describe(id);
            let fact = |slot: usize| model.graph.input(id, slot).and_then(|v| facts.get(v));
            let planned = Resize::read(op).and_then(|r| {
                let axes = plan(&r, fact(0), fact(2), fact(3))?;
                Ok((r, axes))
            });
            let (resize, axes) = match planned {
                Ok(p) => p,
                Err(reason) => {
                    cx.report.skipped += 1;
                    cx.remark(who, format!("kept: {reason}"));
                    continue;
                }
            };
            let x = model.graph.input(id, 0).expect("plan checks X");
            let mut rw = Rewriter::new(model, id);
            let mut y = x;
            for (a, axis) in axes.iter().enumerate() {
                if axis.is_identity(&resize) {
                    continue;
                }
                y = match resize.mode {
                    Mode::Nearest(round) => {
                        let idx = resize.nearest_indices(axis, round);
                        let idx = rw.constant("indices", &Array::from_vec(&[idx.len()], idx)?)?;
                        rw.op(
                            "Gather",
                            "nearest",
                            &[y, idx],
                            vec![attr::int("axis", a as i64)],
                        )?
                    }
                    _ => interpolate(&mut rw, y, a, axes.len(), &resize.linear_weights(axis))?,
                };
            }
            rw.replace(out(id), y)?;
            rw.finish()?;
            cx.report.rewritten += 1;
        }
        Ok(())
    }
}

/// The per-axis geometry of a Resize from its inputs' facts (slots: 0 X, 2 scales, 3 sizes).
/// Axes whose size does not change may have unknown (symbolic) sizes.
fn plan(
    r: &Resize,
    x: Option<&Facts>,
    scales: Option<&Facts>,
    sizes: Option<&Facts>,
) -> std::result::Result<Vec<AxisResize>, String> {
    match r.mode {
        Mode::Cubic => return Err("cubic interpolation is not expanded".into()),
        _ if r.antialias => return Err("antialiased resizing is not expanded".into()),
        _ if r.coordinates == crate::ops::resize::Coordinates::TfCropAndResize => {
            return Err("tf_crop_and_resize is not expanded".into());
        }
        _ => {}
    }
    let dims = x
        .and_then(|f| f.shape.clone())
        .ok_or("the input's shape is unknown (pin it with --input-shape)")?;
    let out_dims = r
        .output_dims(&dims, scales, sizes)
        .ok_or("scales and sizes are not known at compile time")?;
    // An axis that keeps its (possibly symbolic) size is planned as a size-1 identity.
    let unchanged: Vec<bool> = dims.iter().zip(&out_dims).map(|(a, b)| a == b).collect();
    let mut known = Vec::with_capacity(dims.len());
    for (i, d) in dims.iter().enumerate() {
        match d.known() {
            Some(n) if n > 0 => known.push(n as usize),
            _ if unchanged[i] => known.push(1),
            _ => {
                return Err(format!(
                    "the size of resized axis {i} is unknown (pin it with --input-shape)"
                ));
            }
        }
    }
    let sizes: Option<Vec<i64>> = match sizes.and_then(|f| f.elements.as_ref()) {
        Some(e) => Some(
            e.iter()
                .zip(
                    r.described_axes(dims.len())
                        .ok_or("an axis is out of range")?,
                )
                .map(|(d, a)| match d {
                    _ if unchanged[a] => Ok(known[a] as i64),
                    Dim::Known(v) => Ok(*v),
                    _ => Err("an output size is unknown"),
                })
                .collect::<std::result::Result<_, _>>()?,
        ),
        None => None,
    };
    let scales = match &sizes {
        Some(_) => None,
        None => Some(
            scales
                .and_then(float_values)
                .ok_or("scales and sizes are not known at compile time")?,
        ),
    };
    r.plan(&known, scales.as_deref(), sizes.as_deref())
}

/// `y` interpolated along `axis` by `weights` `[out, in]`: a MatMul over the last axis.
fn interpolate(
    rw: &mut Rewriter,
    y: ValueId,
    axis: usize,
    rank: usize,
    weights: &Array,
) -> Result<ValueId> {
    let Array::F32(w) = weights else {
        unreachable!("interpolation weights are f32")
    };
    let w = rw.constant("weights", &Array::F32(w.t().to_owned()))?;
    if axis + 1 == rank {
        return rw.op("MatMul", "linear", &[y, w], vec![]);
    }
    let mut perm: Vec<i64> = (0..rank as i64).collect();
    perm.swap(axis, rank - 1);
    let t = rw.op(
        "Transpose",
        "axis_last",
        &[y],
        vec![attr::ints("perm", &perm)],
    )?;
    let m = rw.op("MatMul", "linear", &[t, w], vec![])?;
    rw.op(
        "Transpose",
        "axis_back",
        &[m],
        vec![attr::ints("perm", &perm)],
    )
}
