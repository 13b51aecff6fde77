//! Which `MatMulInteger`/`ConvInteger` operands the engines' kernels compute exactly.
//!
//! Both ops multiply the *stored* integers and correct for zero points afterwards, so what a
//! kernel can get wrong depends on the stored operand types and ranges, not on the real values.
//! The rules, per operand pair (A × B), with the kernels they come from:
//!
//! | A × B | onnxruntime x86 without VNNI (AVX2, AVX512BW) | with VNNI / AMX, ARM64 | tract |
//! |---|---|---|---|
//! | u8 × s8 | `VPMADDUBSW`: each pair of products `a₀b₀ + a₁b₁` is added into int16 **with saturation** | `VPDPBUSD` / `SDOT`: exact | exact |
//! | u8 × u8 | widened to int16, `VPMADDWD`: exact | exact | exact |
//! | s8 × s8, s8 × u8 | widened to int16: exact (slow) | exact | exact |
//!
//! Every kernel accumulates the raw products in int32, so `K · max|a·b|` must fit as well.
//! ConvInteger is held to the same rule. (onnxruntime 1.32 happens to compute it as
//! W × im2col(X), an s8 × u8 GEMM that widens; the rule does not rely on that operand order.)
//! Measured: `../shared/reference/op-semantics/matmul_saturation.py`, and the
//! `matmul_kernels` tests, which run onnxruntime under an emulated AVX2-only CPU.

use std::fmt;
use std::str::FromStr;

use crate::ir::DataType;

/// An inclusive interval of stored integers.
pub type Interval = (i128, i128);

/// Which integer matmul kernels a compiled model must be exact on, and so which operands the
/// lowering emits.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum MatmulOperands {
    /// Exact on every CPU, chosen per matmul by measured accuracy and speed: weights as
    /// u8 × s8 on the 7-bit grid [−64, 64] (`2·255·64 = 32640` fits int16, so even the
    /// saturating kernel is exact; the fastest kernel everywhere; per-channel weights lose
    /// little), activation × activation as u8 × u8 with zero points 128 (a 7-bit activation
    /// grid there costs most of the accuracy; these matmuls are a small share of the work).
    #[default]
    Portable,
    /// Every matmul u8 × u8 with zero points 128: the full 8-bit grid, exact on every CPU,
    /// on onnxruntime's slower u8 × u8 kernel.
    U8U8,
    /// Every matmul u8 × s8 on the full int8 grid: exact only on CPUs whose kernel does not
    /// saturate (x86 with AVX-VNNI/AVX512-VNNI/AMX, ARM64). Wrong on AVX2-only x86 CPUs.
    Vnni,
}

/// How a signed B operand is stored.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Storage {
    /// Largest |q| (symmetric).
    pub magnitude: i64,
    /// int8 (`q` as is) or uint8 (`q + zero_point`).
    pub dtype: DataType,
    pub zero_point: i64,
}

impl Storage {
    const S8_FULL: Storage = Storage {
        magnitude: 127,
        dtype: DataType::Int8,
        zero_point: 0,
    };
    const S8_HALF: Storage = Storage {
        magnitude: 64,
        dtype: DataType::Int8,
        zero_point: 0,
    };
    const U8: Storage = Storage {
        magnitude: 127,
        dtype: DataType::Uint8,
        zero_point: 128,
    };
}

impl MatmulOperands {
    pub const ALL: [MatmulOperands; 3] = [
        MatmulOperands::Portable,
        MatmulOperands::U8U8,
        MatmulOperands::Vnni,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MatmulOperands::Portable => "portable",
            MatmulOperands::U8U8 => "u8u8",
            MatmulOperands::Vnni => "vnni",
        }
    }

    /// The B operand of a matmul or convolution by a constant weight.
    pub fn weights(self) -> Storage {
        match self {
            MatmulOperands::Portable => Storage::S8_HALF,
            MatmulOperands::U8U8 => Storage::U8,
            MatmulOperands::Vnni => Storage::S8_FULL,
        }
    }

    /// The B operand of an activation × activation matmul.
    pub fn activations(self) -> Storage {
        match self {
            MatmulOperands::Portable | MatmulOperands::U8U8 => Storage::U8,
            MatmulOperands::Vnni => Storage::S8_FULL,
        }
    }

    /// True when the compiled model must also be exact on saturating u8 × s8 kernels.
    pub fn exact_without_vnni(self) -> bool {
        self != MatmulOperands::Vnni
    }
}

impl fmt::Display for MatmulOperands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MatmulOperands {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        MatmulOperands::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("'{s}' is not one of portable, u8u8, vnni"))
    }
}

/// The stored operands of one integer matmul or convolution.
#[derive(Copy, Clone, Debug)]
pub struct Operands {
    pub a_type: DataType,
    pub a: Interval,
    pub b_type: DataType,
    pub b: Interval,
    /// Products summed into one output (K, or C·kH·kW for a convolution).
    pub inner: i128,
}

/// Why a kernel of an engine in `policy` could compute `ops` wrongly, or `None` when every
/// kernel computes it exactly.
pub fn saturation(ops: &Operands, policy: MatmulOperands) -> Option<String> {
    let products = [
        ops.a.0 * ops.b.0,
        ops.a.0 * ops.b.1,
        ops.a.1 * ops.b.0,
        ops.a.1 * ops.b.1,
    ];
    let (lo, hi) = (
        *products.iter().min().expect("4"),
        *products.iter().max().expect("4"),
    );
    let int16 = (i16::MIN as i128, i16::MAX as i128);
    if policy.exact_without_vnni()
        && ops.a_type == DataType::Uint8
        && ops.b_type == DataType::Int8
        && (2 * lo < int16.0 || 2 * hi > int16.1)
    {
        return Some(format!(
            "u8 × s8 operands in [{}, {}] × [{}, {}]: a pair of products can reach [{}, {}], which \
             onnxruntime's AVX2 kernel (VPMADDUBSW) saturates to int16 on x86 CPUs without VNNI; \
             the B operand must stay in ±{}",
            ops.a.0,
            ops.a.1,
            ops.b.0,
            ops.b.1,
            2 * lo,
            2 * hi,
            int16.1 / (2 * ops.a.0.abs().max(ops.a.1.abs()).max(1)),
        ));
    }
    let acc = (lo.min(0) * ops.inner, hi.max(0) * ops.inner);
    if acc.0 < i32::MIN as i128 || acc.1 > i32::MAX as i128 {
        return Some(format!(
            "{} stored products in [{lo}, {hi}] can sum to [{}, {}], outside the int32 accumulator",
            ops.inner, acc.0, acc.1
        ));
    }
    None
}
