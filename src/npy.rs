//! `.npy` files (NumPy format versions 1–3): little-endian numeric arrays, C or Fortran order.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};

use crate::ir::{Array, Element};
use crate::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Reads an array from a `.npy` file.
pub fn read(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(|reason| {
        Error::Usage(format!(
            "{}: not a usable .npy file: {reason}",
            path.display()
        ))
    })
}

/// Decodes `.npy` bytes.
pub fn parse(bytes: &[u8]) -> std::result::Result<Array, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("missing the \\x93NUMPY magic".into());
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported format version {v}")),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran =
        dict_value(header, "fortran_order").ok_or("header has no 'fortran_order'")? == "True";
    let shape_text = dict_value(header, "shape").ok_or("header has no 'shape'")?;
    let shape: Vec<usize> = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad dimension '{s}'"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or("element count overflows")?;
    let data = &bytes[start + header_len..];
    let (endian, code) = descr.split_at(1);
    if endian == ">" && !code.ends_with('1') {
        return Err(format!("big-endian data ('{descr}') is not supported"));
    }
    fn load<T: Element>(
        data: &[u8],
        count: usize,
        shape: &[usize],
        fortran: bool,
    ) -> std::result::Result<Array, String> {
        let width = std::mem::size_of::<T>();
        let needed = count.checked_mul(width).ok_or("size overflows")?;
        if data.len() < needed {
            return Err(format!(
                "data has {} bytes, shape {shape:?} needs {needed}",
                data.len()
            ));
        }
        let values: Vec<T> = data[..needed].chunks_exact(width).map(T::from_le).collect();
        let array = if fortran {
            let reversed: Vec<usize> = shape.iter().rev().copied().collect();
            ArrayD::from_shape_vec(IxDyn(&reversed), values)
                .map_err(|e| e.to_string())?
                .reversed_axes()
                .as_standard_layout()
                .into_owned()
        } else {
            ArrayD::from_shape_vec(IxDyn(shape), values).map_err(|e| e.to_string())?
        };
        Ok(T::wrap(array))
    }
    match code {
        "f4" => load::<f32>(data, count, &shape, fortran),
        "f8" => load::<f64>(data, count, &shape, fortran),
        "f2" => load::<half::f16>(data, count, &shape, fortran),
        "i1" => load::<i8>(data, count, &shape, fortran),
        "u1" => load::<u8>(data, count, &shape, fortran),
        "i2" => load::<i16>(data, count, &shape, fortran),
        "u2" => load::<u16>(data, count, &shape, fortran),
        "i4" => load::<i32>(data, count, &shape, fortran),
        "u4" => load::<u32>(data, count, &shape, fortran),
        "i8" => load::<i64>(data, count, &shape, fortran),
        "u8" => load::<u64>(data, count, &shape, fortran),
        "b1" => load::<bool>(data, count, &shape, fortran),
        _ => Err(format!("element type '{descr}' is not supported")),
    }
}

/// The value of `key` in the header's Python dict literal.
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// Encodes an array as `.npy` (version 1.0, C order).
pub fn to_bytes(array: &Array) -> Vec<u8> {
    let descr = match array {
        Array::F32(_) => "<f4",
        Array::F64(_) => "<f8",
        Array::F16(_) => "<f2",
        Array::Bf16(_) => "<u2",
        Array::I8(_) => "|i1",
        Array::U8(_) => "|u1",
        Array::I16(_) => "<i2",
        Array::U16(_) => "<u2",
        Array::I32(_) => "<i4",
        Array::U32(_) => "<u4",
        Array::I64(_) => "<i8",
        Array::U64(_) => "<u8",
        Array::Bool(_) => "|b1",
    };
    let dims: Vec<String> = array.shape().iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, ending the header with a newline.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(header.len() + 10 + array.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&array.to_le_bytes());
    out
}

/// Writes an array to a `.npy` file.
pub fn write(path: &Path, array: &Array) -> Result<()> {
    std::fs::write(path, to_bytes(array)).map_err(|e| Error::io(path, e))
}
