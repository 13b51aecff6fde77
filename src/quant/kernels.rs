//! Reference integer kernels of the non-linear ops: the exponentials behind Shiftmax (I-ViT)
//! and I-BERT's softmax, ShiftGELU and i-GELU, and I-LayerNorm. Each function computes, in
//! plain integers, exactly what the lowered ONNX computes; tests compare the two bit for bit and
//! bound each kernel's error against the float function.
//!
//! Division conventions: `floor_div` floors (the papers' `>>` and `torch.floor`); integer
//! `Div` in ONNX truncates toward zero (tract and onnxruntime agree), so lowered graphs divide
//! only values they prove non-negative, or state that they truncate.

/// `floor(a / b)` for `b ≠ 0`.
pub fn floor_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if (a % b != 0) && ((a < 0) != (b < 0)) {
        q - 1
    } else {
        q
    }
}

/// The exponential an integer softmax uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ExpKernel {
    /// I-ViT ShiftExp: base change by shifts, linear 2^r on (−1, 0], `n` the clamp exponent.
    Shift { n: u32 },
    /// I-BERT i-exp: second-order polynomial on (−ln 2, 0], then `>> q` (n = 30).
    Polynomial,
}

/// I-ViT ShiftExp of `x ≤ 0` at scale `s`: returns `e` with `e^(s·x) ≈ e · s / 2^n`.
pub fn shift_exp(x: i64, s: f64, n: u32) -> i128 {
    let x = x as i128;
    let x0 = (-1.0 / s).floor() as i128;
    let p = x + floor_div(x, 2) - floor_div(x, 16);
    let p = p.max(n as i128 * x0);
    let q = floor_div(p, x0);
    let r = p - x0 * q;
    // (r/2 − x0) · 2^(n − q), r/2 real: (r − 2·x0) · 2^(n − q) / 2, floored.
    let e = floor_div((r - 2 * x0) << (n as i128 - q), 2);
    e.max(0)
}

/// I-BERT i-exp of `x ≤ 0` at scale `s`: returns `e` with `e^(s·x) ≈ e · a · s² / 2^30`.
pub fn polynomial_exp(x: i64, s: f64) -> i128 {
    const N: i128 = 30;
    const A: f64 = 0.358_151_47;
    let (b, c) = (0.969_632_38 / A, 1.0 / A);
    let x0 = (-0.6931 / s).floor() as i128;
    let x = (x as i128).max(N * x0);
    let q = floor_div(x, x0);
    let r = x - x0 * q;
    let b_int = (b / s).floor() as i128;
    let c_int = (c / (s * s)).floor() as i128;
    let z = r * (r + b_int) + c_int;
    (z << (N - q)).max(0)
}

/// The table an integer softmax gathers from: entry `i` is the exponential of `−i` (input
/// scale `s`, after the row maximum is subtracted), right-shifted so that a row of up to
/// `max_row` entries sums below 2^31. The last entry is 0: inputs at or beyond it (masked
/// positions, and values below the kernel's clamp) contribute nothing.
pub fn exp_table(kernel: ExpKernel, s: f64, max_row: i64) -> Vec<i32> {
    let exp = |i: i64| match kernel {
        ExpKernel::Shift { n } => shift_exp(-i, s, n),
        ExpKernel::Polynomial => polynomial_exp(-i, s),
    };
    // Where the kernel clamps: every later entry would repeat the clamped value.
    let clamp_at = match kernel {
        ExpKernel::Shift { n } => {
            let x0 = (-1.0 / s).floor();
            // I_p = 1.4375·x (within rounding) reaches n·x0 at x = n·x0/1.4375.
            ((n as f64 * x0 / 1.4375).abs().ceil() as i64) + 2
        }
        ExpKernel::Polynomial => ((30.0 * 0.6931 / s).ceil() as i64) + 1,
    };
    let first = exp(0).max(1);
    let budget = ((1i128 << 31) - 1) / max_row.max(1) as i128;
    let mut shift = 0;
    while (first >> shift) > budget {
        shift += 1;
    }
    let mut table: Vec<i32> = (0..clamp_at).map(|i| (exp(i) >> shift) as i32).collect();
    // Trailing zeros add nothing but length.
    while table.len() > 1 && table[table.len() - 1] == 0 {
        table.pop();
    }
    table.push(0);
    table
}

/// Integer softmax of one row at the table's input scale: `out_bits` of probability at scale
/// `2^−(out_bits−1)`, I-ViT's normalisation `factor = floor((2^31−1)/Σ)`,
/// `out = floor(e·factor / 2^(32−out_bits))`. `x` must lie within ±2^29.
pub fn softmax_row(x: &[i64], table: &[i32], out_bits: u32) -> Vec<i64> {
    let last = table.len() as i64 - 1;
    let max = x.iter().copied().max().unwrap_or(0);
    let e: Vec<i64> = x
        .iter()
        .map(|&v| table[(max - v).min(last) as usize] as i64)
        .collect();
    let sum = e.iter().sum::<i64>().max(table[0] as i64);
    let factor = ((1i64 << 31) - 1) / sum;
    e.iter().map(|&v| v * factor >> (32 - out_bits)).collect()
}

/// The GELU approximation an integer lowering uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GeluKernel {
    /// I-ViT ShiftGELU: `x·σ(1.6875·x)` with ShiftExp (n = 23) and an 8-bit sigmoid.
    Shift,
    /// I-BERT i-GELU: `x·(erf(x/√2) + 1)/2` with the second-order erf polynomial.
    Polynomial,
}

/// ShiftGELU of `x` at scale `s`; the result is at scale `s / 2^7`. The softmax-style
/// stabiliser is per element (`max(y, 0)`), so the kernel is a function of `x` alone.
pub fn shift_gelu(x: i64, s: f64) -> i64 {
    const N: u32 = 23;
    const SIGMOID_BITS: u32 = 8;
    let y = x as i128;
    let y = y + floor_div(y, 2) + floor_div(y, 8) + floor_div(y, 16);
    let m = y.max(0);
    let e = shift_exp((y - m) as i64, s, N);
    let e_max = shift_exp((-m) as i64, s, N);
    let sum = (e + e_max).clamp(1, (1 << 31) - 1);
    let factor = ((1i128 << 31) - 1) / sum;
    let sigmoid = floor_div(e * factor, 1 << (31 - SIGMOID_BITS + 1));
    (x as i128 * sigmoid) as i64
}

/// Scale of `shift_gelu`'s result for input scale `s`.
pub fn shift_gelu_scale(s: f64) -> f64 {
    s / 128.0
}

/// i-GELU of `x` at scale `s`; returns `(y, scale)` with `GELU(s·x) ≈ y·scale`.
pub fn polynomial_gelu(x: i64, s: f64) -> i64 {
    let (scale_erf, b_int, c_int) = ibert_erf_constants(s);
    let xi = x as i128;
    let abs = xi.abs().min(-b_int);
    let y = xi.signum() * ((abs + b_int) * (abs + b_int) + c_int);
    let erf = floor_div(y, 1 << 14);
    let one = (1.0 / scale_erf).floor() as i128;
    (xi * (erf + one)) as i64
}

/// `(erf scale, b_int, c_int)` of i-GELU at input scale `s` (k = 1.4142, a = −0.2888).
fn ibert_erf_constants(s: f64) -> (f64, i128, i128) {
    const A: f64 = -0.2888;
    const B: f64 = -1.769;
    let s_e = s / 1.4142;
    let b_int = (B / s_e).floor() as i128;
    let c_int = ((1.0 / A) / (s_e * s_e)).floor() as i128;
    (s_e * s_e * A * (1 << 14) as f64, b_int, c_int)
}

/// Scale of `polynomial_gelu`'s result (negative: the polynomial's leading coefficient is).
pub fn polynomial_gelu_scale(s: f64) -> f64 {
    s * ibert_erf_constants(s).0 / 2.0
}

/// The 256-entry table of a GELU kernel over int8 inputs (`table[i] = gelu(i − 128)`), and its
/// scale; a negative kernel scale is folded into the entries.
pub fn gelu_table(kernel: GeluKernel, s: f64) -> (Vec<i64>, f64) {
    let (f, scale): (Box<dyn Fn(i64) -> i64>, f64) = match kernel {
        GeluKernel::Shift => (Box::new(move |x| shift_gelu(x, s)), shift_gelu_scale(s)),
        GeluKernel::Polynomial => (
            Box::new(move |x| polynomial_gelu(x, s)),
            polynomial_gelu_scale(s),
        ),
    };
    let sign = if scale < 0.0 { -1 } else { 1 };
    ((-128..128).map(|x| sign * f(x)).collect(), scale.abs())
}

/// The integer constants of one I-LayerNorm lowering.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNormPlan {
    /// Row length.
    pub d: i64,
    /// Centred values are divided by `2^square_shift` before squaring (no int32 overflow).
    pub square_shift: u32,
    /// Centred values are multiplied by `2^numerator_shift` before the division by the root.
    pub numerator_shift: u32,
    /// Added to the sum of squares (ε at the variance's scale), at least 0.
    pub epsilon: i64,
    /// Newton's start (a power of two at or above the largest root) and iteration count.
    pub start: i64,
    pub iterations: u32,
    /// Normalised outputs are clipped to ±bound (they provably stay near ±2^(p+k)).
    pub bound: i64,
}

impl LayerNormPlan {
    /// The plan for rows of `d` values in `[-x_max, x_max]` at scale `s`, with ε. The
    /// centred values are `y = d·x − Σx` (exact: the mean is never rounded), at scale `s/d`.
    pub fn new(d: i64, x_max: i64, s: f64, epsilon: f64) -> LayerNormPlan {
        let y_max = 2 * d as i128 * x_max as i128;
        let mut square_shift = 0;
        while d as i128 * (y_max >> square_shift).pow(2) >= 1 << 30 {
            square_shift += 1;
        }
        let var_max = d as i128 * (y_max >> square_shift).pow(2);
        // ε in units of the sum of squares: Σ(y/2^k)² = D·var/(s·2^k/D)².
        let unit = s * (1u64 << square_shift) as f64 / d as f64;
        let eps = (d as f64 * epsilon / (unit * unit)).round();
        let eps = if eps.is_finite() {
            eps.min((1u64 << 29) as f64) as i64
        } else {
            0
        };
        let var_max = var_max + eps as i128;
        let mut h = 0;
        while (1i128 << h) * (1i128 << h) < var_max {
            h += 1;
        }
        // ŷ ≈ z·2^(p+k)/√D keeps 16 bits: 2^(p+k+1) ≤ 2^16, and y·2^p stays in int32.
        let bits_y = 128 - y_max.leading_zeros();
        let numerator_shift = 15u32
            .saturating_sub(square_shift)
            .min(30u32.saturating_sub(bits_y));
        LayerNormPlan {
            d,
            square_shift,
            numerator_shift,
            epsilon: eps,
            start: 1 << h,
            // Halving from 2^h to √var takes at most h steps, the quadratic phase ≤ 6 more.
            iterations: h + 6,
            bound: 1 << (numerator_shift + square_shift + 1),
        }
    }

    /// Scale of the normalised output: `z ≈ ŷ · √D / 2^(p+k)`.
    pub fn output_scale(&self) -> f64 {
        (self.d as f64).sqrt() / (1u64 << (self.numerator_shift + self.square_shift)) as f64
    }

    /// Newton's integer square root, unrolled, as the graph computes it.
    pub fn isqrt(&self, var: i64) -> i64 {
        let mut k = self.start;
        for _ in 0..self.iterations {
            k = ((k + var / k) / 2).max(1);
        }
        k
    }

    /// Normalises one row (γ and β are applied by the scale and bias of the output).
    pub fn normalize(&self, x: &[i64]) -> Vec<i64> {
        let sum: i64 = x.iter().sum();
        let y: Vec<i64> = x.iter().map(|&v| self.d * v - sum).collect();
        let var: i64 = y
            .iter()
            .map(|&v| {
                let a = v.abs() / (1 << self.square_shift);
                a * a
            })
            .sum::<i64>()
            + self.epsilon;
        let root = self.isqrt(var.max(1));
        y.iter()
            .map(|&v| ((v << self.numerator_shift) / root).clamp(-self.bound, self.bound))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_div_floors() {
        assert_eq!(floor_div(-7, 2), -4);
        assert_eq!(floor_div(7, 2), 3);
        assert_eq!(floor_div(-8, 2), -4);
        assert_eq!(floor_div(7, -2), -4);
    }

    #[test]
    fn isqrt_is_floor_sqrt_or_one_above() {
        let plan = LayerNormPlan::new(384, 32767, 0.01, 1e-12);
        for v in (1..2_000_000i64).step_by(997).chain([1, 2, 3, 4, 15, 16, 17, 1 << 30]) {
            let r = plan.isqrt(v);
            let f = (v as f64).sqrt().floor() as i64;
            assert!(r == f || r == f + 1, "isqrt({v}) = {r}, floor sqrt {f}");
        }
    }
}
