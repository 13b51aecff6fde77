//! Static facts about one value: element type, shape (with symbolic dimensions), and the value
//! itself when it is known at compile time — fully (constants) or element by element (shape
//! vectors whose entries are dimensions). [`super::analysis`] computes them for a graph.

use std::fmt;
use std::sync::Arc;

use crate::ir::{Array, DataType, DataTypeInfo};

/// One dimension, or one element of an integer vector that holds dimensions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(i64),
    /// A named dimension (`batch`, `sequence`): equal names are equal sizes.
    Symbol(String),
    Unknown,
}

impl Dim {
    pub fn known(&self) -> Option<i64> {
        match self {
            Dim::Known(v) => Some(*v),
            _ => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(v) => write!(f, "{v}"),
            Dim::Symbol(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// What is known about one value.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub dtype: Option<DataType>,
    pub shape: Option<Vec<Dim>>,
    /// The value, when known at compile time.
    pub value: Option<Arc<Array>>,
    /// For small integer tensors (shape vectors and their pieces): each element, row-major,
    /// as far as it is known.
    pub elements: Option<Vec<Dim>>,
}

impl Facts {
    pub fn of_array(array: Arc<Array>) -> Facts {
        let elements = small_int_elements(&array);
        Facts {
            dtype: Some(array.dtype()),
            shape: Some(
                array
                    .shape()
                    .iter()
                    .map(|&d| Dim::Known(d as i64))
                    .collect(),
            ),
            elements,
            value: Some(array),
        }
    }

    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Vec::len)
    }

    /// The shape when every dimension is known.
    pub fn concrete_shape(&self) -> Option<Vec<usize>> {
        self.shape
            .as_ref()?
            .iter()
            .map(|d| d.known().and_then(|v| usize::try_from(v).ok()))
            .collect()
    }

    /// The number of elements when the shape is concrete.
    pub fn element_count(&self) -> Option<usize> {
        self.concrete_shape()?
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
    }

    /// Element values as i64, when all are known.
    pub fn known_ints(&self) -> Option<Vec<i64>> {
        self.elements.as_ref()?.iter().map(Dim::known).collect()
    }
}

impl fmt::Display for Facts {
    /// `f32[batch,4,?]`, `i64[2] = [batch, 8]`, `?` when nothing is known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::ir::DataTypeInfo;
        let dtype = self.dtype.map_or("?", |d| d.short_name());
        match &self.shape {
            Some(s) => {
                let dims: Vec<String> = s.iter().map(Dim::to_string).collect();
                write!(f, "{dtype}[{}]", dims.join(","))?;
            }
            None => write!(f, "{dtype}[..]")?,
        }
        if let Some(el) = &self.elements {
            if self.value.is_none() {
                let items: Vec<String> = el.iter().map(Dim::to_string).collect();
                write!(f, " = [{}]", items.join(", "))?;
            }
        }
        Ok(())
    }
}

/// Integer tensors of up to this many elements are tracked element by element.
pub(super) const ELEMENT_TRACKING_LIMIT: usize = 64;

pub(super) fn small_int_elements(array: &Array) -> Option<Vec<Dim>> {
    if array.dtype().is_integer() && array.len() <= ELEMENT_TRACKING_LIMIT {
        array
            .to_i64_vec()
            .ok()
            .map(|v| v.into_iter().map(Dim::Known).collect())
    } else {
        None
    }
}
