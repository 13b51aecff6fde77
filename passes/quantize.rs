//! `quantize(bits=8,residual-bits=16)`: decides how every calibrated float value will be
//! represented as integers, `real ≈ scale · q`, symmetric (zero point 0).
//!
//! Rule: a value that enters or leaves a residual Add (two activations summed) keeps
//! `residual-bits` (I-ViT keeps the residual stream at 16 bits, carried in int32); every other
//! value gets `bits`, unsigned when calibration never saw it negative (Softmax and ReLU outputs)
//! and signed otherwise. The clip comes from the observer (`--calibration-method`):
//! `scale = clip / levels`, levels = 2^(b−1) − 1 signed, 2^b − 1 unsigned. Scales are f32
//! numbers, as the ONNX graph will hold them.
//! An analysis: sets `Value::quant` on float values; lowering passes follow these plans.
//! Error bound: |x − scale·q| ≤ scale/2 inside the clip. I-ViT §3.1, I-BERT §3.1.

use super::prelude::*;

use crate::Error;
use crate::ir::quant::{ActivationPlan, Granularity, Scale, WeightPlan};
use crate::pass::ValueReport;
use crate::quant::CalibrationMethod;

pub struct Quantize {
    bits: u32,
    residual_bits: u32,
}

impl Quantize {
    pub fn new(options: &PassOptions) -> Result<Quantize> {
        let bits = options.get::<u32>("bits")?;
        let residual_bits = options.get::<u32>("residual-bits")?;
        for (name, b) in [("bits", bits), ("residual-bits", residual_bits)] {
            if !(2..=16).contains(&b) {
                return Err(Error::Usage(format!(
                    "quantize: {name}={b} is outside 2..=16"
                )));
            }
        }
        Ok(Quantize {
            bits,
            residual_bits,
        })
    }
}

/// True for an Add of two non-constant values: a residual connection.
fn is_residual_add(model: &Model, id: NodeId) -> bool {
    let g = &model.graph;
    g.op(id).is_some_and(|op| op.is("Add"))
        && g.inputs_of(id)
            .iter()
            .all(|v| v.is_some_and(|v| g.constant(v).is_none()))
}

impl Pass for Quantize {
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let method = cx
            .options
            .calibration
            .as_ref()
            .map(|c| c.method)
            .unwrap_or(CalibrationMethod::MinMax);
        let order = model.graph.topological_order()?;
        // Values that touch a residual Add.
        let mut residual = std::collections::HashSet::new();
        for &id in &order {
            if is_residual_add(model, id) {
                residual.insert(ValueId { node: id, slot: 0 });
                for v in model.graph.inputs_of(id).into_iter().flatten() {
                    residual.insert(v);
                }
            }
        }
        let mut candidates: Vec<ValueId> = model
            .graph
            .inputs()
            .iter()
            .map(|&id| ValueId { node: id, slot: 0 })
            .collect();
        for &id in &order {
            candidates.extend(model.graph.outputs_of(id));
        }
        let mut uncalibrated = 0;
        for v in candidates {
            let Some(stats) = model.graph.value(v).stats.clone() else {
                continue;
            };
            if stats.count == 0 {
                uncalibrated += 1;
                continue;
            }
            let is_residual = residual.contains(&v);
            let bits = if is_residual {
                self.residual_bits
            } else {
                self.bits
            };
            let signed = is_residual || stats.min < 0.0;
            let levels = crate::quant::levels(bits, signed) as f64;
            let clip = stats.clip(method, levels);
            // A value that is always 0 still needs a valid scale.
            let scale = if clip > 0.0 {
                (clip / levels) as f32 as f64
            } else {
                1.0
            };
            model.graph.value_mut(v).plan = Some(ActivationPlan {
                scale: Scale::PerTensor(scale),
                bits,
                signed,
            });
            cx.report.rewritten += 1;
            cx.report.values.push(ValueReport {
                value: model.graph.value_name(v).to_string(),
                bits,
                signed,
                scale,
                clip: (if signed { -clip } else { 0.0 }, clip),
                observed: (stats.min, stats.max),
                why: if is_residual {
                    "residual stream".into()
                } else if signed {
                    format!("{method} clip")
                } else {
                    format!("{method} clip, never negative")
                },
            });
        }
        plan_weights(model, cx.options.matmul_operands.weights().magnitude)?;
        if uncalibrated > 0 {
            cx.remark(
                "<quantize>",
                format!("{uncalibrated} values saw no samples and were left without a plan"),
            );
        }
        if cx.report.rewritten == 0 {
            return Err(Error::Usage(
                "quantize: no calibration statistics; run the calibrate pass first (--calibrate)"
                    .into(),
            ));
        }
        cx.report.matched = cx.report.rewritten;
        Ok(())
    }
}

/// Weight plans for the constant weights of MatMul, Gemm and Conv: per output channel, on the
/// grid of the matmul operand policy, one term.
fn plan_weights(model: &mut Model, magnitude: i64) -> Result<()> {
    let mut plans = Vec::new();
    for id in model.graph.topological_order()? {
        let g = &model.graph;
        let op = g.op(id).expect("op");
        let Some(w) = g.input(id, 1).filter(|&w| {
            g.constant(w)
                .is_some_and(|t| t.dtype().ok() == Some(crate::ir::DataType::Float))
        }) else {
            continue;
        };
        let rank = g.constant(w).map_or(0, |t| t.dims().len());
        let axis = match op.op_type() {
            "MatMul" if op.domain().is_empty() && rank == 2 => 1,
            "Gemm" if op.domain().is_empty() && rank == 2 => {
                if op.attr_int("transB", 0)? != 0 {
                    0
                } else {
                    1
                }
            }
            "Conv" if op.domain().is_empty() => 0,
            _ => continue,
        };
        plans.push((w, axis));
    }
    for (w, axis) in plans {
        model.graph.value_mut(w).weight_plan = Some(WeightPlan {
            granularity: Granularity::PerChannel { axis },
            magnitude,
            terms: 1,
        });
    }
    Ok(())
}
