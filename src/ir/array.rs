//! Dense host arrays: the decoded form of a tensor, used by constant folding, calibration,
//! the reference kernels and the runner. One variant per element type intone computes with.

use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};

use super::dtype::DataType;
use crate::{Error, Result};

/// A dense n-dimensional array of one of the numeric ONNX element types.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    F16(ArrayD<f16>),
    Bf16(ArrayD<bf16>),
    I8(ArrayD<i8>),
    I16(ArrayD<i16>),
    I32(ArrayD<i32>),
    I64(ArrayD<i64>),
    U8(ArrayD<u8>),
    U16(ArrayD<u16>),
    U32(ArrayD<u32>),
    U64(ArrayD<u64>),
    Bool(ArrayD<bool>),
}

/// Applies `$body` to the inner `ArrayD` of any variant, binding it to `$a`.
#[macro_export]
#[doc(hidden)]
macro_rules! for_each_array {
    ($value:expr, $a:ident => $body:expr) => {
        match $value {
            $crate::ir::Array::F32($a) => $body,
            $crate::ir::Array::F64($a) => $body,
            $crate::ir::Array::F16($a) => $body,
            $crate::ir::Array::Bf16($a) => $body,
            $crate::ir::Array::I8($a) => $body,
            $crate::ir::Array::I16($a) => $body,
            $crate::ir::Array::I32($a) => $body,
            $crate::ir::Array::I64($a) => $body,
            $crate::ir::Array::U8($a) => $body,
            $crate::ir::Array::U16($a) => $body,
            $crate::ir::Array::U32($a) => $body,
            $crate::ir::Array::U64($a) => $body,
            $crate::ir::Array::Bool($a) => $body,
        }
    };
}

/// Like `for_each_array!`, but rebuilds the same variant from the body's `ArrayD`.
#[macro_export]
#[doc(hidden)]
macro_rules! map_array {
    ($value:expr, $a:ident => $body:expr) => {
        match $value {
            $crate::ir::Array::F32($a) => $crate::ir::Array::F32($body),
            $crate::ir::Array::F64($a) => $crate::ir::Array::F64($body),
            $crate::ir::Array::F16($a) => $crate::ir::Array::F16($body),
            $crate::ir::Array::Bf16($a) => $crate::ir::Array::Bf16($body),
            $crate::ir::Array::I8($a) => $crate::ir::Array::I8($body),
            $crate::ir::Array::I16($a) => $crate::ir::Array::I16($body),
            $crate::ir::Array::I32($a) => $crate::ir::Array::I32($body),
            $crate::ir::Array::I64($a) => $crate::ir::Array::I64($body),
            $crate::ir::Array::U8($a) => $crate::ir::Array::U8($body),
            $crate::ir::Array::U16($a) => $crate::ir::Array::U16($body),
            $crate::ir::Array::U32($a) => $crate::ir::Array::U32($body),
            $crate::ir::Array::U64($a) => $crate::ir::Array::U64($body),
            $crate::ir::Array::Bool($a) => $crate::ir::Array::Bool($body),
        }
    };
}

/// An element type that an [`Array`] can hold.
pub trait Element: Copy + Default + PartialEq + std::fmt::Debug + 'static {
    const DTYPE: DataType;
    fn wrap(a: ArrayD<Self>) -> Array;
    fn unwrap(a: &Array) -> Option<&ArrayD<Self>>;
    fn from_le(bytes: &[u8]) -> Self;
    fn write_le(self, out: &mut Vec<u8>);
    /// The value as f64 (exact for every type but u64/i64 beyond 2^53).
    fn to_f64(self) -> f64;
    /// ONNX `Cast` from f64: floats round to nearest, integers truncate toward zero and
    /// saturate (the spec leaves out-of-range values undefined).
    fn from_f64(v: f64) -> Self;
    /// The value as i128 when it is an integer type (bool is 0/1), `None` for floats.
    fn to_i128(self) -> Option<i128>;
    /// Wrapping conversion from an integer, as ONNX `Cast` between integer types does.
    fn from_i128_wrapping(v: i128) -> Self;
}

macro_rules! int_element {
    ($t:ty, $variant:ident, $dtype:ident) => {
        impl Element for $t {
            const DTYPE: DataType = DataType::$dtype;
            fn wrap(a: ArrayD<Self>) -> Array {
                Array::$variant(a)
            }
            fn unwrap(a: &Array) -> Option<&ArrayD<Self>> {
                match a {
                    Array::$variant(x) => Some(x),
                    _ => None,
                }
            }
            fn from_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("element width"))
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_i128(self) -> Option<i128> {
                Some(self as i128)
            }
            fn from_i128_wrapping(v: i128) -> Self {
                v as $t
            }
        }
    };
}

int_element!(i8, I8, Int8);
int_element!(i16, I16, Int16);
int_element!(i32, I32, Int32);
int_element!(i64, I64, Int64);
int_element!(u8, U8, Uint8);
int_element!(u16, U16, Uint16);
int_element!(u32, U32, Uint32);
int_element!(u64, U64, Uint64);

macro_rules! float_element {
    ($t:ty, $variant:ident, $dtype:ident, $to:expr, $from:expr) => {
        impl Element for $t {
            const DTYPE: DataType = DataType::$dtype;
            fn wrap(a: ArrayD<Self>) -> Array {
                Array::$variant(a)
            }
            fn unwrap(a: &Array) -> Option<&ArrayD<Self>> {
                match a {
                    Array::$variant(x) => Some(x),
                    _ => None,
                }
            }
            fn from_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("element width"))
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn to_f64(self) -> f64 {
                let f: fn($t) -> f64 = $to;
                f(self)
            }
            fn from_f64(v: f64) -> Self {
                let f: fn(f64) -> $t = $from;
                f(v)
            }
            fn to_i128(self) -> Option<i128> {
                None
            }
            fn from_i128_wrapping(v: i128) -> Self {
                Self::from_f64(v as f64)
            }
        }
    };
}

float_element!(f32, F32, Float, |x| x as f64, |v| v as f32);
float_element!(f64, F64, Double, |x| x, |v| v);
float_element!(f16, F16, Float16, |x| x.to_f64(), f16::from_f64);
float_element!(bf16, Bf16, Bfloat16, |x| x.to_f64(), bf16::from_f64);

impl Element for bool {
    const DTYPE: DataType = DataType::Bool;
    fn wrap(a: ArrayD<Self>) -> Array {
        Array::Bool(a)
    }
    fn unwrap(a: &Array) -> Option<&ArrayD<Self>> {
        match a {
            Array::Bool(x) => Some(x),
            _ => None,
        }
    }
    fn from_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn to_i128(self) -> Option<i128> {
        Some(self as i128)
    }
    fn from_i128_wrapping(v: i128) -> Self {
        v != 0
    }
}

impl Array {
    /// An array of the given element type and shape from row-major elements.
    pub fn from_vec<T: Element>(shape: &[usize], data: Vec<T>) -> Result<Array> {
        let n = data.len();
        ArrayD::from_shape_vec(IxDyn(shape), data)
            .map(T::wrap)
            .map_err(|_| Error::invalid(format!("{n} elements do not fill shape {shape:?}")))
    }

    /// A zero-dimensional array.
    pub fn scalar<T: Element>(value: T) -> Array {
        T::wrap(ArrayD::from_elem(IxDyn(&[]), value))
    }

    pub fn dtype(&self) -> DataType {
        match self {
            Array::F32(_) => DataType::Float,
            Array::F64(_) => DataType::Double,
            Array::F16(_) => DataType::Float16,
            Array::Bf16(_) => DataType::Bfloat16,
            Array::I8(_) => DataType::Int8,
            Array::I16(_) => DataType::Int16,
            Array::I32(_) => DataType::Int32,
            Array::I64(_) => DataType::Int64,
            Array::U8(_) => DataType::Uint8,
            Array::U16(_) => DataType::Uint16,
            Array::U32(_) => DataType::Uint32,
            Array::U64(_) => DataType::Uint64,
            Array::Bool(_) => DataType::Bool,
        }
    }

    pub fn shape(&self) -> &[usize] {
        for_each_array!(self, a => a.shape())
    }

    pub fn len(&self) -> usize {
        for_each_array!(self, a => a.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The inner array when it holds `T`.
    pub fn as_array<T: Element>(&self) -> Option<&ArrayD<T>> {
        T::unwrap(self)
    }

    /// Elements as f64, in row-major order.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        for_each_array!(self, a => a.iter().map(|x| x.to_f64()).collect())
    }

    /// Elements of an integer array as i64 (for shapes, axes, indices). Fails on floats and on
    /// u64 values above i64::MAX.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        for_each_array!(self, a => a
            .iter()
            .map(|x| {
                x.to_i128()
                    .and_then(|v| i64::try_from(v).ok())
                    .ok_or_else(|| Error::invalid(format!("{:?} is not an i64 integer", x)))
            })
            .collect())
    }

    /// ONNX `Cast` to another element type.
    pub fn cast(&self, target: DataType) -> Result<Array> {
        fn convert<S: Element, D: Element>(a: &ArrayD<S>) -> Array {
            D::wrap(a.mapv(|x| match (x.to_i128(), D::DTYPE) {
                // Integer to integer (or bool): wrap like C casts, exactly.
                (Some(i), d)
                    if d != DataType::Float
                        && d != DataType::Double
                        && d != DataType::Float16
                        && d != DataType::Bfloat16 =>
                {
                    D::from_i128_wrapping(i)
                }
                _ => D::from_f64(x.to_f64()),
            }))
        }
        fn to<D: Element>(a: &Array) -> Array {
            for_each_array!(a, x => convert::<_, D>(x))
        }
        Ok(match target {
            DataType::Float => to::<f32>(self),
            DataType::Double => to::<f64>(self),
            DataType::Float16 => to::<f16>(self),
            DataType::Bfloat16 => to::<bf16>(self),
            DataType::Int8 => to::<i8>(self),
            DataType::Int16 => to::<i16>(self),
            DataType::Int32 => to::<i32>(self),
            DataType::Int64 => to::<i64>(self),
            DataType::Uint8 => to::<u8>(self),
            DataType::Uint16 => to::<u16>(self),
            DataType::Uint32 => to::<u32>(self),
            DataType::Uint64 => to::<u64>(self),
            DataType::Bool => to::<bool>(self),
            other => {
                return Err(Error::unsupported(format!(
                    "casting to element type {other:?}"
                )));
            }
        })
    }

    /// Little-endian packed bytes of the elements (the ONNX `raw_data` layout).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        fn bytes<T: Element>(a: &ArrayD<T>) -> Vec<u8> {
            let mut out = Vec::with_capacity(a.len() * std::mem::size_of::<T>());
            for x in a.iter() {
                x.write_le(&mut out);
            }
            out
        }
        for_each_array!(self, a => bytes(a))
    }

    /// Reshapes without moving elements (row-major).
    pub fn into_shape(self, shape: &[usize]) -> Result<Array> {
        let from = self.shape().to_vec();
        let reshape = |n: usize| {
            if n == shape.iter().product::<usize>() {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "cannot reshape {from:?} into {shape:?}"
                )))
            }
        };
        reshape(self.len())?;
        Ok(map_array!(self, a => {
            let data: Vec<_> = a.iter().copied().collect();
            ArrayD::from_shape_vec(IxDyn(shape), data).expect("element count checked")
        }))
    }
}

impl std::fmt::Display for Array {
    /// Elements in row-major order, e.g. `[1, 2, 3]`; floats in shortest round-trip form.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[")?;
        for_each_array!(self, a => {
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{x:?}")?;
            }
        });
        f.write_str("]")
    }
}
