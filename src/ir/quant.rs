//! What passes hand each other on values: plans (how a float value or a weight is to be
//! quantized) and proven facts about integer values.

/// How a real value maps to the integers that represent it: `real = scale * q` (zero point 0).
#[derive(Clone, Debug, PartialEq)]
pub enum Scale {
    PerTensor(f64),
    /// One scale per index of `axis`.
    PerAxis {
        axis: usize,
        scales: Vec<f64>,
    },
}

/// How a float value is to be represented in integers (`real = scale · q`): written by
/// `quantize`, read by the lowerings. Proven facts about integer values are [`QuantFacts`].
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationPlan {
    pub scale: Scale,
    pub bits: u32,
    pub signed: bool,
    /// For a signed plan whose values stay well above `−clip` (GELU outputs): the least real
    /// value its uint8 matmul operand must cover, so the operand may take the finer
    /// asymmetric grid `[floor, clip]` (a zero point other than 128) instead of `[−clip, clip]`.
    pub floor: Option<f64>,
}

impl ActivationPlan {
    /// The largest stored magnitude of the planned grid ([`crate::quant::levels`]).
    pub fn levels(&self) -> i64 {
        crate::quant::levels(self.bits, self.signed)
    }
}

/// How the elements of a constant weight share scales.
#[derive(Clone, Debug, PartialEq)]
pub enum Granularity {
    PerTensor,
    /// One scale per index of `axis` (the output channels).
    PerChannel {
        axis: usize,
    },
    /// One scale per `size` consecutive indices of `axis` (block quantization).
    PerGroup {
        axis: usize,
        size: usize,
    },
}

/// How a constant weight is to be quantized: written by `quantize`, read by the lowerings.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightPlan {
    pub granularity: Granularity,
    /// The largest stored magnitude: the grid is `[−magnitude, magnitude]` (64 for the
    /// portable 7-bit grid, 127 for int8).
    pub magnitude: i64,
    /// Residual terms per weight (`W ≈ Σ_k λ_k·q_k`, `lower::residual`); 1 is plain
    /// quantization.
    pub terms: u32,
    /// The output channels that carry terms ≥ 2 (group sparsity); `None` is all of them.
    pub residual_channels: Option<Vec<usize>>,
    /// Branch `j` of `M` of an ensemble (`lower::residual::ensemble_branch`); `None` outside one.
    pub ensemble_branch: Option<(u32, u32)>,
    /// 8-bit terms of the activation this weight multiplies: 1, or 2 for a 16-bit activation
    /// entering as `256·hi + lo` (two integer matmuls on the same weights).
    pub activation_terms: u32,
}

/// What is known about an integer value that stands for a real one:
/// `real = scale · (q − zero_point)`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantFacts {
    pub scale: Scale,
    /// Width of the integer range the value is clamped to (8 for int8 activations).
    pub bits: u32,
    pub signed: bool,
    /// 0, or 128 for a signed 8-bit value stored as uint8 (MatMulInteger's fast operand form).
    pub zero_point: i64,
    /// Proven inclusive interval of the stored integers, from range analysis.
    pub range: Option<(i64, i64)>,
}

impl Scale {
    /// The scale of channel `c` (per-tensor scales apply to every channel).
    pub fn at(&self, c: usize) -> f64 {
        match self {
            Scale::PerTensor(s) => *s,
            Scale::PerAxis { scales, .. } => scales[c],
        }
    }

    pub fn max(&self) -> f64 {
        match self {
            Scale::PerTensor(s) => *s,
            Scale::PerAxis { scales, .. } => scales.iter().copied().fold(0.0, f64::max),
        }
    }
}

/// One-line summary of a plan for the text form: `i8 scale=0.0123`.
pub fn describe_plan(p: &ActivationPlan) -> String {
    describe(&QuantFacts {
        scale: p.scale.clone(),
        bits: p.bits,
        signed: p.signed,
        zero_point: 0,
        range: None,
    })
}

/// One-line summary for the text form: `i8 scale=0.0123`, `i32 scale=[3 per axis 0]`.
pub fn describe(q: &QuantFacts) -> String {
    let ty = format!("{}{}", if q.signed { "i" } else { "u" }, q.bits);
    let scale = match &q.scale {
        Scale::PerTensor(s) => format!("scale={s:e}"),
        Scale::PerAxis { axis, scales } => format!("scale=[{} on axis {axis}]", scales.len()),
    };
    let zp = if q.zero_point != 0 {
        format!(" zp={}", q.zero_point)
    } else {
        String::new()
    };
    match q.range {
        Some((lo, hi)) => format!("{ty} {scale}{zp} range=[{lo},{hi}]"),
        None => format!("{ty} {scale}{zp}"),
    }
}
