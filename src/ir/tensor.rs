//! Constant tensors. A `Tensor` keeps the original `TensorProto` (so export is lossless and
//! zero-copy) and decodes into an [`Array`] only when a pass asks for the values.

use bytes::Bytes;
use half::{bf16, f16};

use super::array::{Array, Element};
use super::dtype::{DataType, DataTypeInfo, data_type};
use crate::schema::{TensorProto, tensor_proto::DataLocation};
use crate::{Error, Result};

/// A constant tensor: an initializer or the value of a `Constant` node.
///
/// A tensor stored as external data keeps `data_location = EXTERNAL` and its `external_data`
/// entries; while the model is in memory its bytes sit in `raw_data` (see `onnx::external`).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    proto: TensorProto,
}

impl Tensor {
    pub fn from_proto(proto: TensorProto) -> Tensor {
        Tensor { proto }
    }

    /// A new inline tensor holding `array`, stored as little-endian `raw_data`.
    pub fn from_array(name: impl Into<String>, array: &Array) -> Tensor {
        Tensor::from_proto(TensorProto {
            name: Some(name.into()),
            dims: array.shape().iter().map(|&d| d as i64).collect(),
            data_type: Some(array.dtype() as i32),
            raw_data: Some(Bytes::from(array.to_le_bytes())),
            ..Default::default()
        })
    }

    /// A 0-d or 1-d tensor from a slice (handy for axes, shapes and scalars).
    pub fn from_slice<T: Element>(
        name: impl Into<String>,
        shape: &[usize],
        values: &[T],
    ) -> Tensor {
        let array = Array::from_vec(shape, values.to_vec()).expect("shape matches values");
        Tensor::from_array(name, &array)
    }

    pub fn proto(&self) -> &TensorProto {
        &self.proto
    }

    pub fn is_external(&self) -> bool {
        self.proto.data_location == Some(DataLocation::External as i32)
    }

    pub fn name(&self) -> &str {
        self.proto.name()
    }

    pub fn set_name(&mut self, name: impl Into<String>) {
        self.proto.name = Some(name.into());
    }

    pub fn dtype(&self) -> Result<DataType> {
        data_type(self.proto.data_type(), &format!("tensor '{}'", self.name()))
    }

    pub fn dims(&self) -> &[i64] {
        &self.proto.dims
    }

    /// The shape, checked: no negative dimension, and the element count and byte size fit.
    pub fn shape(&self) -> Result<Vec<usize>> {
        let what = || format!("tensor '{}' with dims {:?}", self.name(), self.proto.dims);
        let shape = self
            .proto
            .dims
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|_| Error::invalid(format!("{}: negative dimension", what())))?;
        let count = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| Error::invalid(format!("{}: element count overflows", what())))?;
        let bits = self.dtype()?.bits().unwrap_or(8);
        count
            .checked_mul(bits)
            .filter(|&b| b / 8 <= isize::MAX as usize)
            .ok_or_else(|| Error::invalid(format!("{}: byte size overflows", what())))?;
        Ok(shape)
    }

    pub fn element_count(&self) -> Result<usize> {
        Ok(self.shape()?.iter().product())
    }

    /// Little-endian packed element bytes, when the tensor stores them that way.
    pub fn raw_bytes(&self) -> Option<&Bytes> {
        self.proto.raw_data.as_ref()
    }

    pub fn into_proto(self) -> TensorProto {
        self.proto
    }

    /// Checks that the stored data matches dims and type, without decoding it.
    pub fn validate(&self) -> Result<()> {
        let dtype = self.dtype()?;
        let count = self.element_count()?;
        let mismatch = |found: usize, unit: &str| {
            Error::invalid(format!(
                "tensor '{}': {found} {unit} of data, but dims {:?} of {} need {}",
                self.name(),
                self.proto.dims,
                dtype.short_name(),
                match unit {
                    "bytes" => (count * dtype.bits().unwrap_or(8)).div_ceil(8),
                    _ => count,
                }
            ))
        };
        if self.is_external() && self.raw_bytes().is_none() {
            return Err(Error::ExternalData {
                tensor: self.name().to_string(),
                reason: "data was not loaded".into(),
            });
        }
        if let Some(raw) = self.raw_bytes() {
            if let Some(bits) = dtype.bits() {
                if raw.len() != (count * bits).div_ceil(8) {
                    return Err(mismatch(raw.len(), "bytes"));
                }
            }
            return Ok(());
        }
        let p = &self.proto;
        let stored = p.float_data.len()
            + p.int32_data.len()
            + p.string_data.len()
            + p.int64_data.len()
            + p.double_data.len()
            + p.uint64_data.len();
        let expected = match dtype {
            DataType::Complex64 | DataType::Complex128 => count * 2,
            // Sub-byte types pack several elements into each int32_data entry.
            t if t.bits().is_some_and(|b| b < 8) => stored,
            _ => count,
        };
        if stored != expected && p.segment.is_none() {
            return Err(mismatch(stored, "elements"));
        }
        Ok(())
    }

    /// Decodes the values. Fails for element types intone does not compute with.
    pub fn decode(&self) -> Result<Array> {
        self.validate()?;
        let dtype = self.dtype()?;
        let shape = self.shape()?;
        if let Some(raw) = self.raw_bytes() {
            return decode_raw(raw, dtype, &shape, self.name());
        }
        let p = &self.proto;
        fn narrow<T: Element>(values: impl Iterator<Item = i128>) -> Vec<T> {
            values.map(T::from_i128_wrapping).collect()
        }
        let ints = || p.int32_data.iter().map(|&v| v as i128);
        match dtype {
            DataType::Float => Array::from_vec(&shape, p.float_data.clone()),
            DataType::Double => Array::from_vec(&shape, p.double_data.clone()),
            DataType::Int64 => Array::from_vec(&shape, p.int64_data.clone()),
            DataType::Int32 => Array::from_vec(&shape, p.int32_data.clone()),
            DataType::Int16 => Array::from_vec::<i16>(&shape, narrow(ints())),
            DataType::Int8 => Array::from_vec::<i8>(&shape, narrow(ints())),
            DataType::Uint16 => Array::from_vec::<u16>(&shape, narrow(ints())),
            DataType::Uint8 => Array::from_vec::<u8>(&shape, narrow(ints())),
            DataType::Bool => Array::from_vec::<bool>(&shape, narrow(ints())),
            DataType::Uint32 => {
                Array::from_vec::<u32>(&shape, narrow(p.uint64_data.iter().map(|&v| v as i128)))
            }
            DataType::Uint64 => Array::from_vec(&shape, p.uint64_data.clone()),
            DataType::Float16 => Array::from_vec(
                &shape,
                p.int32_data
                    .iter()
                    .map(|&v| f16::from_bits(v as u16))
                    .collect(),
            ),
            DataType::Bfloat16 => Array::from_vec(
                &shape,
                p.int32_data
                    .iter()
                    .map(|&v| bf16::from_bits(v as u16))
                    .collect(),
            ),
            other => Err(Error::unsupported(format!(
                "tensor '{}': decoding element type {}",
                self.name(),
                other.short_name()
            ))),
        }
    }
}

fn decode_raw(raw: &[u8], dtype: DataType, shape: &[usize], name: &str) -> Result<Array> {
    fn le<T: Element>(raw: &[u8], shape: &[usize]) -> Result<Array> {
        let width = std::mem::size_of::<T>();
        Array::from_vec(shape, raw.chunks_exact(width).map(T::from_le).collect())
    }
    match dtype {
        DataType::Float => le::<f32>(raw, shape),
        DataType::Double => le::<f64>(raw, shape),
        DataType::Float16 => le::<f16>(raw, shape),
        DataType::Bfloat16 => le::<bf16>(raw, shape),
        DataType::Int8 => le::<i8>(raw, shape),
        DataType::Int16 => le::<i16>(raw, shape),
        DataType::Int32 => le::<i32>(raw, shape),
        DataType::Int64 => le::<i64>(raw, shape),
        DataType::Uint8 => le::<u8>(raw, shape),
        DataType::Uint16 => le::<u16>(raw, shape),
        DataType::Uint32 => le::<u32>(raw, shape),
        DataType::Uint64 => le::<u64>(raw, shape),
        DataType::Bool => le::<bool>(raw, shape),
        other => Err(Error::unsupported(format!(
            "tensor '{name}': decoding element type {}",
            other.short_name()
        ))),
    }
}
