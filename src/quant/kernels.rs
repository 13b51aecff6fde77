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

/// I-BERT's truncated ln 2 and √2: its kernels are defined with these, not the exact values.
#[allow(clippy::approx_constant)]
const IBERT_LN2: f64 = 0.6931;
#[allow(clippy::approx_constant)]
const IBERT_SQRT2: f64 = 1.4142;

/// The exponential an integer softmax uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ExpKernel {
    /// I-ViT ShiftExp: base change by shifts, linear 2^r on (−1, 0], `n` the clamp exponent.
    Shift { n: u32 },
    /// I-BERT i-exp: second-order polynomial on (−ln 2, 0], then `>> q` (n = 30).
    Polynomial,
    /// The exponential itself, rounded to 30 fractional bits: a table holds any function at
    /// the same cost, so the approximations above buy nothing once the input is an index.
    Exact,
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
    let x0 = (-IBERT_LN2 / s).floor() as i128;
    let x = (x as i128).max(N * x0);
    let q = floor_div(x, x0);
    let r = x - x0 * q;
    let b_int = (b / s).floor() as i128;
    let c_int = (c / (s * s)).floor() as i128;
    let z = r * (r + b_int) + c_int;
    (z << (N - q)).max(0)
}

/// The exact exponential table's entry for 0: `2^k` with k half of the 31 bits a row of
/// `max_row` entries leaves, so that the entries and the normalising factor `(2^31−1)/Σ` get
/// about as many bits each even for a uniform row (a full-width table leaves the factor 1–2).
fn exact_exp_one(max_row: i64) -> f64 {
    let row_bits = (max_row.max(1) as f64).log2().ceil();
    2f64.powf(((31.0 - row_bits) / 2.0).floor())
}

/// The table an integer softmax gathers from: entry `i` is the exponential of `−i` (input
/// scale `s`, after the row maximum is subtracted), right-shifted so that a row of up to
/// `max_row` entries sums below 2^31. The last entry is 0: inputs at or beyond it (masked
/// positions, and values below the kernel's clamp) contribute nothing.
pub fn exp_table(kernel: ExpKernel, s: f64, max_row: i64) -> Vec<i32> {
    let exp = |i: i64| match kernel {
        ExpKernel::Shift { n } => shift_exp(-i, s, n),
        ExpKernel::Polynomial => polynomial_exp(-i, s),
        ExpKernel::Exact => ((-(i as f64) * s).exp() * exact_exp_one(max_row)).round() as i128,
    };
    // Where the kernel clamps: every later entry would repeat the clamped value.
    let clamp_at = match kernel {
        ExpKernel::Shift { n } => {
            let x0 = (-1.0 / s).floor();
            // I_p = 1.4375·x (within rounding) reaches n·x0 at x = n·x0/1.4375.
            ((n as f64 * x0 / 1.4375).abs().ceil() as i64) + 2
        }
        ExpKernel::Polynomial | ExpKernel::Exact => ((30.0 * IBERT_LN2 / s).ceil() as i64) + 1,
    };
    let first = exp(0).max(1);
    let mut budget = ((1i128 << 31) - 1) / max_row.max(1) as i128;
    // i-exp's values reach 2^30: shifted as far as the exact table's, so that the normalising
    // factor keeps bits (at full width it was 2–5 and rows summed to 0.73–0.95).
    if kernel == ExpKernel::Polynomial {
        budget = budget.min(2 * exact_exp_one(max_row) as i128);
    }
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
    softmax_row_divided(x, table, i32::MAX as i64, 1 << (32 - out_bits), false)
}

/// Integer softmax of one row, `factor = floor(numerator / Σ)` and
/// `out = (e·factor [+ divisor/2]) / divisor`: the probability at scale `divisor/numerator`.
/// The lowering targets its reader's scale this way (numerator 2^30, rounded half up).
pub fn softmax_row_divided(
    x: &[i64],
    table: &[i32],
    numerator: i64,
    divisor: i64,
    half_up: bool,
) -> Vec<i64> {
    softmax_row_shifted(x, 0, 0, table, numerator, divisor, half_up)
}

/// Integer softmax of one row of inputs at scale `S` whose table index scale is `S·2^k`: the
/// index is `min(floor((max − x + h) / 2^k), L−1)` (`h` the rounding's half), then as
/// [`softmax_row_divided`].
pub fn softmax_row_shifted(
    x: &[i64],
    k: u32,
    h: i64,
    table: &[i32],
    numerator: i64,
    divisor: i64,
    half_up: bool,
) -> Vec<i64> {
    let half = if half_up { divisor / 2 } else { 0 };
    let last = table.len() as i64 - 1;
    let max = x.iter().copied().max().unwrap_or(0);
    let e: Vec<i64> = x
        .iter()
        .map(|&v| table[((max - v + h) >> k).min(last) as usize] as i64)
        .collect();
    let sum = e.iter().sum::<i64>().max(table[0] as i64);
    let factor = numerator / sum;
    e.iter().map(|&v| (v * factor + half) / divisor).collect()
}

/// The GELU approximation an integer lowering uses.
#[derive(Copy, Clone, Debug)]
pub enum GeluKernel {
    /// I-ViT ShiftGELU: `x·σ(1.6875·x)` with ShiftExp and an 8-bit sigmoid.
    Shift,
    /// I-BERT i-GELU: `x·(erf(x/√2) + 1)/2` with the second-order erf polynomial.
    Polynomial,
    /// The function itself (erf or tanh GELU, or QuickGelu), rounded at scale `s/128` (as
    /// ShiftGELU's result): over int8 inputs a table costs the same whatever it holds.
    Exact(fn(f64) -> f64),
}

/// GELU, `x·Φ(x)`.
pub fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// GELU's tanh form (`approximate="tanh"`, GPT-2's `gelu_new`).
pub fn gelu_tanh(x: f64) -> f64 {
    let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
    0.5 * x * (1.0 + inner.tanh())
}

/// QuickGelu, `x·σ(1.702x)`.
pub fn quick_gelu(x: f64) -> f64 {
    x / (1.0 + (-1.702 * x).exp())
}

/// The ShiftExp exponent ShiftGELU uses at input scale `s`: ShiftExp's values reach
/// `2^n / s`, and the normalising factor `floor((2^31−1)/Σ)` keeps only `31 − log2(2^n/s)`
/// bits. I-ViT's fixed n = 23 leaves 4 bits at an 8-bit scale of 1/16 (sigmoid steps of 6 %,
/// GELU(8) off by 0.5); intone keeps Σ near 2^21, i.e. ≥ 10 bits of factor.
pub fn shift_gelu_n(s: f64) -> u32 {
    let magnitude = (1.0 / s).log2().ceil().max(0.0) as u32;
    21u32.saturating_sub(magnitude).clamp(8, 23)
}

/// ShiftGELU of `x` at scale `s`; the result is at scale `s / 2^7`. The softmax-style
/// stabiliser is per element (`max(y, 0)`), so the kernel is a function of `x` alone.
pub fn shift_gelu(x: i64, s: f64) -> i64 {
    let n = shift_gelu_n(s);
    const SIGMOID_BITS: u32 = 8;
    let y = x as i128;
    let y = y + floor_div(y, 2) + floor_div(y, 8) + floor_div(y, 16);
    let m = y.max(0);
    let e = shift_exp((y - m) as i64, s, n);
    let e_max = shift_exp((-m) as i64, s, n);
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
    let erf = floor_div(y, 1 << ibert_erf_shift(s));
    let one = (1.0 / scale_erf).floor() as i128;
    (xi * (erf + one)) as i64
}

/// The right shift i-GELU applies to the erf polynomial. I-BERT fixes it at 14 for 32-bit
/// inputs, whose squares are huge; at an 8-bit input scale the polynomial's values are ~2^11
/// and a shift of 14 leaves nothing. intone shifts so that 12 bits remain.
pub fn ibert_erf_shift(s: f64) -> u32 {
    let s_e = s / IBERT_SQRT2;
    let c = (1.0 / 0.2888) / (s_e * s_e);
    (c.log2().ceil() as i64 - 12).clamp(0, 14) as u32
}

/// `(erf scale, b_int, c_int)` of i-GELU at input scale `s` (k = 1.4142, a = −0.2888).
fn ibert_erf_constants(s: f64) -> (f64, i128, i128) {
    const A: f64 = -0.2888;
    const B: f64 = -1.769;
    let s_e = s / IBERT_SQRT2;
    let b_int = (B / s_e).floor() as i128;
    let c_int = ((1.0 / A) / (s_e * s_e)).floor() as i128;
    let shift = (1u64 << ibert_erf_shift(s)) as f64;
    (s_e * s_e * A * shift, b_int, c_int)
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
        GeluKernel::Exact(f) => (
            Box::new(move |x| (f(x as f64 * s) * 128.0 / s).round() as i64),
            s / 128.0,
        ),
    };
    let sign = if scale < 0.0 { -1 } else { 1 };
    ((-128..128).map(|x| sign * f(x)).collect(), scale.abs())
}

/// Scale of [`function_table`]'s entries.
pub const FUNCTION_TABLE_SCALE: f64 = 1.0 / (1 << 14) as f64;

/// The logistic function.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `ln(1 + e^x)`, without overflow for large x.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `x · relu6(x + 3) / 6`.
pub fn hard_swish(x: f64) -> f64 {
    x * (x / 6.0 + 0.5).clamp(0.0, 1.0)
}

/// The table of a float function over int8 inputs at scale `s` (`table[i] = f((i − 128)·s)`),
/// rounded half away from zero to 2^−14, and that scale. Exact up to the rounding: ±2^−15.
pub fn function_table(s: f64, f: &dyn Fn(f64) -> f64) -> (Vec<i64>, f64) {
    let entries = (-128..128)
        .map(|i| (f(i as f64 * s) / FUNCTION_TABLE_SCALE).round() as i64)
        .collect();
    (entries, FUNCTION_TABLE_SCALE)
}

/// Entries of Newton's start tables: 2^12 each.
const SQRT_TABLE_BITS: u32 = 12;

/// `floor(√v)`, exactly.
fn isqrt_floor(v: i128) -> i128 {
    let mut r = (v as f64).sqrt() as i128;
    while r * r > v {
        r -= 1;
    }
    while (r + 1) * (r + 1) <= v {
        r += 1;
    }
    r
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
    /// Newton's start comes from two tables of upper bounds of √v: `coarse[v >> coarse_shift]`
    /// and `fine[min(v >> fine_shift, fine.len() − 1)]` (the last entry a sentinel above every
    /// root), the smaller of the two. Within a fine bucket the start is at most √2 above the
    /// root (8× in the first one), so few Newton steps remain.
    pub coarse: Vec<i32>,
    pub coarse_shift: u32,
    pub fine: Vec<i32>,
    pub fine_shift: u32,
    pub iterations: u32,
    /// Normalised outputs are clipped to ±bound (they provably stay near ±2^(p+k)).
    pub bound: i64,
}

impl LayerNormPlan {
    /// The plan for rows of `d` values in `[-x_max, x_max]` at scale `s`, with ε. The
    /// centred values are `y = x − trunc(Σx / d)` (the mean is off by less than one unit).
    pub fn new(d: i64, x_max: i64, s: f64, epsilon: f64) -> LayerNormPlan {
        let y_max = 2 * x_max as i128 + 1;
        // (|y| + 2^(k−1)) >> k, squared and summed over the row, stays below 2^30.
        let narrowed = |k: u32| {
            if k == 0 {
                y_max
            } else {
                (y_max + (1 << (k - 1))) >> k
            }
        };
        // ε in units of the sum of squares: Σ(y/2^k)² = D·var/(s·2^k)².
        let epsilon_at = |k: u32| {
            let unit = s * (1u64 << k) as f64;
            let eps = (d as f64 * epsilon / (unit * unit)).round();
            if eps.is_finite() {
                eps.min((1u64 << 29) as f64) as i64
            } else {
                0
            }
        };
        // The sum of squares plus ε stays below 2^30, so that Newton's `root + v / root`
        // (which interval analysis bounds by 2·v) fits int32.
        let mut square_shift = 0;
        while d as i128 * narrowed(square_shift).pow(2) + epsilon_at(square_shift) as i128
            >= 1 << 30
        {
            square_shift += 1;
        }
        let eps = epsilon_at(square_shift);
        let var_max = d as i128 * narrowed(square_shift).pow(2) + eps as i128;
        let bits = 128 - var_max.leading_zeros();
        let coarse_shift = bits.saturating_sub(SQRT_TABLE_BITS);
        let fine_shift = coarse_shift.saturating_sub(SQRT_TABLE_BITS);
        // An upper bound of √v for every v in a bucket of width 2^shift.
        let bound = |i: i128, shift: u32| (isqrt_floor(((i + 1) << shift) - 1) + 1) as i32;
        let coarse: Vec<i32> = (0..=(var_max >> coarse_shift))
            .map(|i| bound(i, coarse_shift))
            .collect();
        let mut fine: Vec<i32> = (0..(1i128 << SQRT_TABLE_BITS))
            .map(|i| bound(i, fine_shift))
            .collect();
        // Above every coarse bound: for v beyond the fine buckets the coarse bound is taken.
        fine.push(coarse.iter().max().copied().unwrap_or(1) + 1);
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
            coarse,
            coarse_shift,
            fine,
            fine_shift,
            // The first fine bucket starts up to 2^(fine_shift/2) above the root (that many
            // halvings); from within √2 the quadratic phase needs five more.
            iterations: fine_shift.div_ceil(2) + 5,
            bound: 1 << (numerator_shift + square_shift + 1),
        }
    }

    /// Scale of the normalised output: `z ≈ ŷ · √D / 2^(p+k)`.
    pub fn output_scale(&self) -> f64 {
        (self.d as f64).sqrt() / (1u64 << (self.numerator_shift + self.square_shift)) as f64
    }

    /// Newton's start for `var`, from the two tables.
    pub fn start(&self, var: i64) -> i64 {
        let coarse = self.coarse[((var >> self.coarse_shift) as usize).min(self.coarse.len() - 1)];
        let fine = self.fine[((var >> self.fine_shift) as usize).min(self.fine.len() - 1)];
        coarse.min(fine) as i64
    }

    /// Newton's integer square root, unrolled, as the graph computes it.
    pub fn isqrt(&self, var: i64) -> i64 {
        let mut k = self.start(var);
        for _ in 0..self.iterations {
            k = ((k + var / k) / 2).max(1);
        }
        k
    }

    /// Normalises one row (γ and β are applied by the scale and bias of the output).
    pub fn normalize(&self, x: &[i64]) -> Vec<i64> {
        let mean = x.iter().sum::<i64>() / self.d;
        let y: Vec<i64> = x.iter().map(|&v| v - mean).collect();
        let var: i64 = y
            .iter()
            .map(|&v| {
                let a = match self.square_shift {
                    0 => v.abs(),
                    k => (v.abs() + (1 << (k - 1))) / (1 << k),
                };
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

/// Measured error of one kernel over its input range, against the float function.
#[derive(Clone, Debug)]
pub struct KernelError {
    pub kernel: &'static str,
    pub setting: String,
    /// Over what the error was measured.
    pub domain: String,
    pub max_abs: f64,
    pub mean_abs: f64,
}

fn summarize(kernel: &'static str, setting: String, domain: String, errors: &[f64]) -> KernelError {
    let max_abs = errors.iter().fold(0f64, |m, e| m.max(e.abs()));
    let mean_abs = errors.iter().map(|e| e.abs()).sum::<f64>() / errors.len().max(1) as f64;
    KernelError {
        kernel,
        setting,
        domain,
        max_abs,
        mean_abs,
    }
}

/// Deterministic pseudo-random numbers in [0, 1) (a 64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn erf_gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// The error of every kernel against its float function, measured the same way by the tests
/// (which bound it) and by `cargo bench --bench kernels` (which prints it).
pub fn measure_errors() -> Vec<KernelError> {
    let mut out = Vec::new();
    // Exponentials on their table inputs: e^(−i·s) for the table's whole range.
    for (name, kernel) in [
        ("ShiftExp (I-ViT), n=15", ExpKernel::Shift { n: 15 }),
        ("i-exp (I-BERT)", ExpKernel::Polynomial),
    ] {
        let s = 0.005;
        let table = exp_table(kernel, s, 1);
        let errors: Vec<f64> = (0..table.len() - 1)
            .map(|i| table[i] as f64 / table[0] as f64 - (-(i as f64) * s).exp())
            .collect();
        out.push(summarize(
            "exp",
            name.into(),
            format!(
                "e^x, x in [-{:.1}, 0], relative to e^0",
                (table.len() - 1) as f64 * s
            ),
            &errors,
        ));
    }
    // Softmax rows of logits ~ U(−8, 8), 8- and 16-bit probabilities.
    for (name, kernel) in [
        ("Shiftmax", ExpKernel::Shift { n: 15 }),
        ("I-BERT softmax", ExpKernel::Polynomial),
    ] {
        for bits in [8, 16] {
            let s = 0.005;
            let table = exp_table(kernel, s, 197);
            let mut rng = Lcg(7);
            let mut errors = Vec::new();
            for _ in 0..200 {
                let logits: Vec<f64> = (0..197).map(|_| rng.next() * 16.0 - 8.0).collect();
                let q: Vec<i64> = logits.iter().map(|&v| (v / s).round() as i64).collect();
                let max = logits.iter().cloned().fold(f64::MIN, f64::max);
                let sum: f64 = logits.iter().map(|v| (v - max).exp()).sum();
                let out_scale = 1.0 / (1u64 << (bits - 1)) as f64;
                for (p, l) in softmax_row(&q, &table, bits).iter().zip(&logits) {
                    errors.push(*p as f64 * out_scale - (l - max).exp() / sum);
                }
            }
            out.push(summarize(
                "softmax",
                format!("{name}, {bits}-bit output"),
                "rows of 197 logits ~ U(-8, 8)".into(),
                &errors,
            ));
        }
    }
    // GELU over every int8 input at a typical fc1 scale (clip 8 → s = 8/127).
    for (name, kernel) in [
        ("ShiftGELU", GeluKernel::Shift),
        ("i-GELU (I-BERT)", GeluKernel::Polynomial),
    ] {
        let s = (8.0f64 / 127.0) as f32 as f64;
        let (table, scale) = gelu_table(kernel, s);
        let errors: Vec<f64> = (-127..=127)
            .map(|x: i64| table[(x + 128) as usize] as f64 * scale - erf_gelu(x as f64 * s))
            .collect();
        out.push(summarize(
            "gelu",
            format!("{name}, int8 input"),
            "x in [-8, 8] (every int8 value)".into(),
            &errors,
        ));
    }
    // Activation tables at a typical int8 scale (clip 8), against the float function of
    // the unquantized input: the table's rounding (2^-15) plus the input's (s/2 · slope).
    let silu = |x: f64| x * sigmoid(x);
    let mish = |x: f64| x * softplus(x).tanh();
    let functions: [(&str, &dyn Fn(f64) -> f64); 4] = [
        ("HardSwish", &hard_swish),
        ("Sigmoid", &sigmoid),
        ("SiLU (gated)", &silu),
        ("Mish", &mish),
    ];
    for (name, f) in functions {
        let s = (8.0f64 / 127.0) as f32 as f64;
        let (table, scale) = function_table(s, f);
        let errors: Vec<f64> = (0..=2000)
            .map(|i| {
                let x = -8.0 + 16.0 * i as f64 / 2000.0;
                let q = ((x / s).round() as i64).clamp(-128, 127);
                table[(q + 128) as usize] as f64 * scale - f(x)
            })
            .collect();
        out.push(summarize(
            "activation",
            format!("{name} table, int8 input"),
            "x in [-8, 8] (2001 points)".into(),
            &errors,
        ));
    }
    // I-LayerNorm on rows of 16-bit residual values, D = 64 and 384.
    for d in [64usize, 384] {
        let mut rng = Lcg(11);
        let s = 0.001;
        let plan = LayerNormPlan::new(d as i64, 32767, s, 1e-12);
        let mut errors = Vec::new();
        for _ in 0..100 {
            // Rows whose deviation is 1/50 to 1/8 of the 16-bit range, off centre.
            let spread = 2000.0 + rng.next() * 14000.0;
            let offset = (rng.next() - 0.5) * 8000.0;
            let x: Vec<i64> = (0..d)
                .map(|_| ((rng.next() - 0.5) * spread + offset).round() as i64)
                .collect();
            let mean = x.iter().sum::<i64>() as f64 / d as f64;
            let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            let z_scale = plan.output_scale();
            for (y, &v) in plan.normalize(&x).iter().zip(&x) {
                errors.push(*y as f64 * z_scale - (v as f64 - mean) / var.sqrt());
            }
        }
        out.push(summarize(
            "layer_norm",
            format!("I-LayerNorm, D={d}, 16-bit input"),
            "normalised z of random rows".into(),
            &errors,
        ));
    }
    out
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
}
