//! ONNX element types: sizes, names and classes.

pub use crate::schema::tensor_proto::DataType;

/// Facts about an element type that passes and the tensor decoder need.
pub trait DataTypeInfo: Copy {
    /// Storage size of one element in bits, `None` for strings and `Undefined`.
    fn bits(self) -> Option<usize>;
    /// Short name used in the text form: `f32`, `i64`, `u8`, ...
    fn short_name(self) -> &'static str;
    fn is_float(self) -> bool;
    fn is_integer(self) -> bool;
    fn is_signed_integer(self) -> bool;
}

impl DataTypeInfo for DataType {
    fn bits(self) -> Option<usize> {
        use DataType::*;
        Some(match self {
            Undefined | String => return None,
            Uint2 | Int2 => 2,
            Uint4 | Int4 | Float4e2m1 => 4,
            Float6e2m3 | Float6e3m2 => 6,
            Uint8 | Int8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz
            | Float8e8m0 => 8,
            Uint16 | Int16 | Float16 | Bfloat16 => 16,
            Float | Int32 | Uint32 => 32,
            Double | Int64 | Uint64 | Complex64 => 64,
            Complex128 => 128,
        })
    }

    fn short_name(self) -> &'static str {
        use DataType::*;
        match self {
            Undefined => "undefined",
            Float => "f32",
            Uint8 => "u8",
            Int8 => "i8",
            Uint16 => "u16",
            Int16 => "i16",
            Int32 => "i32",
            Int64 => "i64",
            String => "string",
            Bool => "bool",
            Float16 => "f16",
            Double => "f64",
            Uint32 => "u32",
            Uint64 => "u64",
            Complex64 => "c64",
            Complex128 => "c128",
            Bfloat16 => "bf16",
            Float8e4m3fn => "f8e4m3fn",
            Float8e4m3fnuz => "f8e4m3fnuz",
            Float8e5m2 => "f8e5m2",
            Float8e5m2fnuz => "f8e5m2fnuz",
            Uint4 => "u4",
            Int4 => "i4",
            Float4e2m1 => "f4e2m1",
            Float8e8m0 => "f8e8m0",
            Uint2 => "u2",
            Int2 => "i2",
            Float6e2m3 => "f6e2m3",
            Float6e3m2 => "f6e3m2",
        }
    }

    fn is_float(self) -> bool {
        use DataType::*;
        matches!(
            self,
            Float
                | Double
                | Float16
                | Bfloat16
                | Float8e4m3fn
                | Float8e4m3fnuz
                | Float8e5m2
                | Float8e5m2fnuz
                | Float8e8m0
                | Float4e2m1
                | Float6e2m3
                | Float6e3m2
        )
    }

    fn is_integer(self) -> bool {
        use DataType::*;
        matches!(
            self,
            Uint8
                | Int8
                | Uint16
                | Int16
                | Int32
                | Int64
                | Uint32
                | Uint64
                | Uint4
                | Int4
                | Uint2
                | Int2
        )
    }

    fn is_signed_integer(self) -> bool {
        use DataType::*;
        matches!(self, Int8 | Int16 | Int32 | Int64 | Int4 | Int2)
    }
}

/// The element type stored under an ONNX type code, or an error naming `what`.
pub fn data_type(code: i32, what: &str) -> crate::Result<DataType> {
    DataType::try_from(code)
        .map_err(|_| crate::Error::invalid(format!("{what}: unknown element type code {code}")))
}
