//! Integer matmuls computed as exact f32 matmuls, for tract on CPUs where its integer kernels
//! are slow.
//!
//! tract-linalg 0.23.9 serves integer matmuls on x86_64 CPUs without VNNI with its
//! `avx2_mmm_i32_8x8` kernel, which runs about 100× slower than the f32 kernels (0.2 GMAC/s:
//! its inner loop loads A with a legacy-SSE `movq` between 256-bit VEX instructions, and perf
//! puts 90 % of the kernel's samples on that load and the instruction after it). The runner
//! does not change the model it was given: it hands tract an equivalent one, in which every
//! `MatMulInteger` whose products provably fit f32's 24-bit significand becomes
//! `Cast → Sub(zero point) → MatMul(f32) → Cast(int32)`. Every partial sum of such a product
//! is an integer of magnitude at most `K·max|a − a₀|·max|b − b₀| ≤ 2^24`, exactly representable
//! in f32, so any summation order gives the integer result bit for bit.

use std::collections::BTreeMap;

use crate::Result;
use crate::ir::{Array, DataType, Model, NodeId, ValueId, attr};
use crate::ops::{GraphFacts, analyze};
use crate::pass::Rewriter;

/// Integers up to this magnitude are exact in f32.
const F32_EXACT: i128 = 1 << 24;

/// How the runner hands integer matmuls to tract.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum IntegerMatmul {
    /// As they are: tract's integer kernels.
    Native,
    /// As exact f32 matmuls where the bound proves them exact (the rest stay integer).
    ExactF32,
}

impl IntegerMatmul {
    /// `INTONE_TRACT_INTEGER_MATMUL=native|f32` when set; otherwise f32 on x86_64 CPUs whose
    /// integer kernels in tract are the slow AVX2 one: no AVX512-VNNI and no AVX-VNNI in the
    /// features tract detected (which `TRACT_CPU_ISA` edits, so `TRACT_CPU_ISA=-avx512vnni,
    /// -avxvnni` reproduces such a CPU on a VNNI one).
    pub fn for_this_machine() -> Result<IntegerMatmul> {
        match std::env::var("INTONE_TRACT_INTEGER_MATMUL").as_deref() {
            Ok("native") => Ok(IntegerMatmul::Native),
            Ok("f32") => Ok(IntegerMatmul::ExactF32),
            Ok(other) => Err(crate::Error::Usage(format!(
                "INTONE_TRACT_INTEGER_MATMUL={other}: expected 'native' or 'f32'"
            ))),
            Err(_) => Ok(if slow_integer_kernels() {
                IntegerMatmul::ExactF32
            } else {
                IntegerMatmul::Native
            }),
        }
    }
}

fn slow_integer_kernels() -> bool {
    use tract_onnx::tract_core::tract_linalg::isa::{self, Isa};
    let detected = isa::native();
    detected.has(Isa::X86_64Avx2)
        && !detected.has(Isa::X86_64Avx512Vnni)
        && !detected.has(Isa::X86_64AvxVnni)
}

/// Rewrites the provably exact `MatMulInteger`s of `model` (input shapes pinned to `inputs`)
/// into f32 matmuls; returns how many it rewrote. Output names are kept.
pub fn rewrite(model: &mut Model, inputs: &BTreeMap<String, Vec<i64>>) -> Result<usize> {
    let facts = analyze(model, inputs, crate::ops::EVALUATION_LIMIT)?;
    let candidates: Vec<(NodeId, Operands)> = model
        .graph
        .topological_order()?
        .into_iter()
        .filter_map(|id| {
            let op = model.graph.op(id)?;
            (op.domain().is_empty() && op.op_type() == "MatMulInteger")
                .then(|| exact_operands(model, &facts, id))
                .flatten()
                .map(|o| (id, o))
        })
        .collect();
    let count = candidates.len();
    for (id, operands) in candidates {
        let output = ValueId { node: id, slot: 0 };
        let name = model.graph.value_name(output).to_string();
        let mut rw = Rewriter::new(model, id);
        let a = centered(&mut rw, operands.a, operands.a_zero, "a")?;
        let b = match operands.b_constant {
            Some(b) => rw.constant("b_f32", &b)?,
            None => centered(&mut rw, operands.b, operands.b_zero, "b")?,
        };
        let product = rw.op("MatMul", "f32_product", &[a, b], vec![])?;
        let int = rw.op(
            "Cast",
            "to_int32",
            &[product],
            vec![attr::int("to", DataType::Int32 as i32 as i64)],
        )?;
        rw.replace(output, int)?;
        rw.finish()?;
        if model.graph.find_value(&name).is_none() {
            model.graph.rename_value(int, &name)?;
        }
    }
    Ok(count)
}

/// What the f32 form needs of one `MatMulInteger`.
struct Operands {
    a: ValueId,
    a_zero: Option<ValueId>,
    b: ValueId,
    b_zero: Option<ValueId>,
    /// `b − b₀` in f32 when `b` is a constant.
    b_constant: Option<Array>,
}

/// The operands when the product is provably exact in f32 (known contraction size, scalar
/// activation zero points); `None` leaves the matmul to tract's integer kernels.
fn exact_operands(model: &Model, facts: &GraphFacts, id: NodeId) -> Option<Operands> {
    let g = &model.graph;
    let (a, b) = (g.input(id, 0)?, g.input(id, 1)?);
    let (a_zero, b_zero) = (g.input(id, 2), g.input(id, 3));
    let k = facts.get(a)?.shape.as_ref()?.last()?.known()?;
    let constant = |v: Option<ValueId>| -> Option<Option<Array>> {
        match v {
            None => Some(None),
            Some(v) => g.constant(v)?.decode().ok().map(Some),
        }
    };
    let (a_zp, b_zp) = (constant(a_zero)?, constant(b_zero)?);
    // A zero point per row of `a` (or per column of an activation `b`) is not handled.
    let scalar_zp = |zp: &Option<Array>| zp.as_ref().is_none_or(|z| z.len() == 1);
    let a_bound = type_bound(facts.get(a)?.dtype?, a_zp.as_ref())?;
    scalar_zp(&a_zp).then_some(())?;
    let (b_bound, b_constant) = match g.constant(b).and_then(|t| t.decode().ok()) {
        Some(w) => {
            let centered = centered_weights(&w, b_zp.as_ref())?;
            let bound = centered.iter().map(|v| v.abs() as i128).max().unwrap_or(0);
            let shape: Vec<usize> = w.shape().to_vec();
            let values: Vec<f32> = centered.iter().map(|&v| v as f32).collect();
            (bound, Some(Array::from_vec(&shape, values).ok()?))
        }
        None => {
            scalar_zp(&b_zp).then_some(())?;
            (type_bound(facts.get(b)?.dtype?, b_zp.as_ref())?, None)
        }
    };
    (k as i128 * a_bound * b_bound <= F32_EXACT).then_some(Operands {
        a,
        a_zero,
        b,
        b_zero,
        b_constant,
    })
}

/// Largest `|x − zp|` over the element type's values.
fn type_bound(dtype: DataType, zp: Option<&Array>) -> Option<i128> {
    let (lo, hi) = crate::lower::range::type_interval(dtype)?;
    let zp = zp.map_or(Some(0), |z| z.to_i64_vec().ok()?.first().copied())? as i128;
    Some((lo - zp).abs().max((hi - zp).abs()))
}

/// `w − zp` with a scalar zero point or one per column (the last axis).
fn centered_weights(w: &Array, zp: Option<&Array>) -> Option<Vec<i64>> {
    let values = w.to_i64_vec().ok()?;
    let Some(zp) = zp else { return Some(values) };
    let zp = zp.to_i64_vec().ok()?;
    let columns = *w.shape().last()?;
    match zp.len() {
        1 => Some(values.iter().map(|v| v - zp[0]).collect()),
        n if n == columns => Some(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| v - zp[i % columns])
                .collect(),
        ),
        _ => None,
    }
}

/// `Cast(x → f32) − zp`.
fn centered(rw: &mut Rewriter, x: ValueId, zp: Option<ValueId>, which: &str) -> Result<ValueId> {
    let float = attr::int("to", DataType::Float as i32 as i64);
    let x = rw.op("Cast", &format!("{which}_f32"), &[x], vec![float.clone()])?;
    match zp {
        None => Ok(x),
        Some(zp) => {
            let zp = rw.op("Cast", &format!("{which}_zero_f32"), &[zp], vec![float])?;
            rw.op("Sub", &format!("{which}_centered"), &[x, zp], vec![])
        }
    }
}
