//! `expand-conv-transpose`: a `ConvTranspose` with a constant weight becomes a `Conv` and data
//! movement, which the linear lowering runs on integers.
//!
//! - Kernel equal to the stride (no overlap, no padding, one group, no dilation): a 1x1 `Conv`
//!   to `C_out·Πk` channels, then the pixel shuffle `Reshape → Transpose → Reshape` that puts
//!   channel `(o, a, b)` at position `(h·k₁ + a, w·k₂ + b)` of channel o.
//! - Otherwise: the input with `stride − 1` zeros after every element (`Unsqueeze → Pad →
//!   Reshape`), then a stride-1 `Conv` with the kernel flipped and its channel axes swapped
//!   per group, padded by `dilation·(k − 1) − pad` (cropped by a `Slice` where that is
//!   negative; `output_padding` adds to the end).
//!
//! Preconditions: the weight (and bias, if any) is an f32 constant; the input's spatial sizes
//! are known (the Reshapes need them).

use super::prelude::*;

use crate::ir::{Array, Graph, Op, attr};
use crate::ops::conv_transpose::ConvTransposeGeometry;
use crate::pass::matcher::out;
use ndarray::{ArrayD, IxDyn};

pub struct ExpandConvTranspose;

impl Pass for ExpandConvTranspose {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let facts = cx.facts(model)?;
        for id in model.graph.topological_order()? {
            let Some(op) = model.graph.op(id) else {
                continue;
            };
            if !(op.is("ConvTranspose") && op.domain().is_empty()) {
                continue;
            }
            cx.report.matched += 1;
            let who = model.graph.describe(id);
            let dims = model
                .graph
                .input(id, 0)
                .and_then(|v| facts.get(v))
                .and_then(|f| f.shape.clone());
            let plan = Plan::read(&model.graph, id, dims.as_deref());
            let plan = match plan {
                Ok(p) => p,
                Err(reason) => {
                    cx.report.skipped += 1;
                    cx.remark(who, format!("kept: {reason}"));
                    continue;
                }
            };
            let mut rw = Rewriter::new(model, id);
            let y = if plan.is_pixel_shuffle() {
                plan.pixel_shuffle(&mut rw)?
            } else {
                plan.zero_inserted(&mut rw)?
            };
            rw.replace(out(id), y)?;
            rw.finish()?;
            cx.report.rewritten += 1;
        }
        Ok(())
    }
}

struct Plan {
    x: ValueId,
    /// `[C_in, C_out / group, k…]`.
    weight: ArrayD<f32>,
    bias: Option<ArrayD<f32>>,
    geometry: ConvTransposeGeometry,
    /// The input's spatial sizes.
    spatial: Vec<i64>,
    /// Padding removed from the full output, per axis (begin, end).
    pads: Vec<(i64, i64)>,
}

impl Plan {
    fn read(
        g: &Graph,
        id: NodeId,
        dims: Option<&[crate::ops::Dim]>,
    ) -> std::result::Result<Plan, String> {
        let op = g.op(id).expect("an op");
        let x = g.input(id, 0).ok_or("its input is omitted")?;
        let constant = |slot: usize| match g.input(id, slot).map(|v| g.constant(v)) {
            None => Ok(None),
            Some(Some(t)) => match t.decode().map_err(|e| e.to_string())? {
                Array::F32(a) => Ok(Some(a)),
                _ => Err("the weight or bias is not f32".to_string()),
            },
            Some(None) => Err("the weight or bias is not a constant".to_string()),
        };
        let weight = constant(1)?.ok_or("the weight is omitted")?;
        let bias = constant(2)?;
        let dims = dims.ok_or("the input's shape is unknown (pin it with --input-shape)")?;
        if dims.len() < 3 || weight.ndim() != dims.len() {
            return Err("the input and weight ranks do not match a convolution".into());
        }
        let w_dims: Vec<crate::ops::Dim> = weight
            .shape()
            .iter()
            .map(|&d| crate::ops::Dim::Known(d as i64))
            .collect();
        let geometry = ConvTransposeGeometry::read(op, dims.len() - 2, Some(&w_dims))?;
        let spatial: Vec<i64> = dims[2..]
            .iter()
            .map(|d| d.known().filter(|&n| n > 0))
            .collect::<Option<_>>()
            .ok_or("a spatial size of the input is unknown (pin it with --input-shape)")?;
        let c_in = weight.shape()[0];
        let group = geometry.group;
        if c_in % group != 0 || dims[1].known().is_some_and(|c| c as usize != c_in) {
            return Err("the weight's input channels do not match the input".into());
        }
        if geometry
            .kernel
            .iter()
            .zip(&weight.shape()[2..])
            .any(|(&k, &w)| k as usize != w)
        {
            return Err("kernel_shape does not match the weight".into());
        }
        let c_out = weight.shape()[1] * group;
        if bias.as_ref().is_some_and(|b| b.len() != c_out) {
            return Err("the bias is not one value per output channel".into());
        }
        let pads = spatial
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                geometry
                    .pads(i, n)
                    .filter(|_| geometry.output_size(i, n).is_some())
            })
            .collect::<Option<_>>()
            .ok_or("the output shape does not follow from the attributes")?;
        Ok(Plan {
            x,
            weight,
            bias,
            geometry,
            spatial,
            pads,
        })
    }

    fn rank(&self) -> usize {
        self.spatial.len()
    }

    fn c_out(&self) -> usize {
        self.weight.shape()[1] * self.geometry.group
    }

    fn is_pixel_shuffle(&self) -> bool {
        let g = &self.geometry;
        g.group == 1
            && g.kernel == g.strides
            && g.dilations.iter().all(|&d| d == 1)
            && self.pads.iter().all(|&p| p == (0, 0))
            && (0..self.rank()).all(|i| g.output_padding(i) == 0)
    }

    /// 1x1 Conv to channels `(o, a, b, …)`, then each channel's block moved into place.
    fn pixel_shuffle(&self, rw: &mut Rewriter) -> Result<ValueId> {
        let r = self.rank();
        let (c_in, c_out) = (self.weight.shape()[0], self.c_out());
        let block: usize = self.weight.shape()[2..].iter().product();
        // [C_in, C_out, k…] → [C_out, k…, C_in] → [C_out·Πk, C_in, 1…].
        let mut perm: Vec<usize> = (1..r + 2).collect();
        perm.push(0);
        let w = self.weight.clone().permuted_axes(IxDyn(&perm));
        let mut shape = vec![c_out * block, c_in];
        shape.extend(std::iter::repeat_n(1, r));
        let w = w
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&shape))
            .expect("same element count");
        let bias = self.bias.as_ref().map(|b| {
            let v: Vec<f32> = b
                .iter()
                .flat_map(|&v| std::iter::repeat_n(v, block))
                .collect();
            ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).expect("one per channel")
        });
        let conv = conv(
            rw,
            self.x,
            w,
            bias,
            vec![attr::ints("kernel_shape", &vec![1; r])],
        )?;
        // [N, C_out·Πk, d…] → [N, C_out, k…, d…] → [N, C_out, d₁, k₁, d₂, k₂, …] → [N, C_out, d·k…].
        let kernel = &self.geometry.kernel;
        let mut split = vec![0, c_out as i64];
        split.extend(kernel);
        split.extend(&self.spatial);
        let split = shape_constant(rw, "blocks", &split)?;
        let blocks = rw.op("Reshape", "blocks", &[conv, split], vec![])?;
        let mut perm = vec![0i64, 1];
        for i in 0..r {
            perm.extend([(2 + r + i) as i64, (2 + i) as i64]);
        }
        let moved = rw.op(
            "Transpose",
            "interleave",
            &[blocks],
            vec![attr::ints("perm", &perm)],
        )?;
        let mut merged = vec![0, 0];
        merged.extend(self.spatial.iter().zip(kernel).map(|(d, k)| d * k));
        let merged = shape_constant(rw, "shuffled", &merged)?;
        rw.op("Reshape", "shuffled", &[moved, merged], vec![])
    }

    /// Zeros between the input's elements, then a stride-1 Conv with the flipped kernel.
    fn zero_inserted(&self, rw: &mut Rewriter) -> Result<ValueId> {
        let r = self.rank();
        let g = &self.geometry;
        let mut x = self.x;
        // Length of each axis after insertion: d·s, its last s − 1 zeros past the data.
        let stretched: Vec<i64> = self
            .spatial
            .iter()
            .zip(&g.strides)
            .map(|(d, s)| d * s)
            .collect();
        if g.strides.iter().any(|&s| s > 1) {
            let axes: Vec<i64> = (0..r).map(|i| (3 + 2 * i) as i64).collect();
            let axes = shape_constant(rw, "gap_axes", &axes)?;
            let u = rw.op("Unsqueeze", "gaps", &[x, axes], vec![])?;
            let mut pads = vec![0i64; 2 * (2 + 2 * r)];
            for (i, &s) in g.strides.iter().enumerate() {
                pads[2 + 2 * r + 3 + 2 * i] = s - 1;
            }
            let pads = shape_constant(rw, "gap_pads", &pads)?;
            let padded = rw.op("Pad", "zeros", &[u, pads], vec![])?;
            let mut merged = vec![0, 0];
            merged.extend(&stretched);
            let merged = shape_constant(rw, "stretched", &merged)?;
            x = rw.op("Reshape", "stretched", &[padded, merged], vec![])?;
        }
        // Conv padding per side; negative = crop.
        let sides: Vec<(i64, i64)> = (0..r)
            .map(|i| {
                let reach = g.dilations[i] * (g.kernel[i] - 1);
                let (pb, pe) = self.pads[i];
                (
                    reach - pb,
                    reach - pe + g.output_padding(i) - (g.strides[i] - 1),
                )
            })
            .collect();
        if sides.iter().any(|&(b, e)| b < 0 || e < 0) {
            let starts: Vec<i64> = sides.iter().map(|&(b, _)| (-b).max(0)).collect();
            let ends: Vec<i64> = sides
                .iter()
                .zip(&stretched)
                .map(|(&(_, e), &n)| n - (-e).max(0))
                .collect();
            let axes: Vec<i64> = (2..2 + r as i64).collect();
            let inputs = [
                shape_constant(rw, "crop_starts", &starts)?,
                shape_constant(rw, "crop_ends", &ends)?,
                shape_constant(rw, "crop_axes", &axes)?,
            ];
            x = rw.op(
                "Slice",
                "crop",
                &[x, inputs[0], inputs[1], inputs[2]],
                vec![],
            )?;
        }
        let mut pads: Vec<i64> = sides.iter().map(|&(b, _)| b.max(0)).collect();
        pads.extend(sides.iter().map(|&(_, e)| e.max(0)));
        let attrs = vec![
            attr::ints("kernel_shape", &g.kernel),
            attr::ints("dilations", &g.dilations),
            attr::ints("pads", &pads),
            attr::int("group", g.group as i64),
        ];
        conv(rw, x, self.flipped_weight(), self.bias.clone(), attrs)
    }

    /// `[C_out, C_in / group, k…]` with `W'[g·Cog + o, i, κ] = W[g·Cig + i, o, k − 1 − κ]`.
    fn flipped_weight(&self) -> ArrayD<f32> {
        let w = &self.weight;
        let (c_in, per_group) = (w.shape()[0], w.shape()[1]);
        let group = self.geometry.group;
        let in_per_group = c_in / group;
        let mut shape = vec![per_group * group, in_per_group];
        shape.extend(&w.shape()[2..]);
        let kernel = &w.shape()[2..];
        ArrayD::from_shape_fn(IxDyn(&shape), |idx| {
            let (o, i) = (idx[0], idx[1]);
            let g = o / per_group;
            let mut src = vec![g * in_per_group + i, o % per_group];
            src.extend((0..kernel.len()).map(|j| kernel[j] - 1 - idx[2 + j]));
            w[IxDyn(&src)]
        })
    }
}

fn shape_constant(rw: &mut Rewriter, name: &str, v: &[i64]) -> Result<ValueId> {
    rw.constant(name, &Array::from_vec(&[v.len()], v.to_vec())?)
}

/// A Conv of `x` by constant `w` (and `bias`).
fn conv(
    rw: &mut Rewriter,
    x: ValueId,
    w: ArrayD<f32>,
    bias: Option<ArrayD<f32>>,
    attrs: Vec<crate::schema::AttributeProto>,
) -> Result<ValueId> {
    let mut inputs = vec![Some(x), Some(rw.constant("weight", &Array::F32(w))?)];
    // No empty trailing slot for an absent bias: tract reads it as a third input.
    if let Some(b) = bias {
        inputs.push(Some(rw.constant("bias", &Array::F32(b))?));
    }
    let node = rw.op_node(Op::new("Conv", ""), "conv", &inputs, attrs, 1)?;
    Ok(out(node))
}
