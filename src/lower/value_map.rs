//! The value map a compiled model carries in its metadata (`intone.values`): for each integer
//! value that stands for a float value of the input model, the float value's name and the
//! scale and zero point that relate them (`real ≈ scale · (q − zero_point)`). `intone check
//! --per-layer` uses it to compare a compiled model with its float original value by value.

use serde::{Deserialize, Serialize};

use crate::ir::quant::Scale;
use crate::ir::{DataTypeInfo, Model};
use crate::schema::StringStringEntryProto;
use crate::{Error, Result};

/// The metadata key.
pub const KEY: &str = "intone.values";

/// One mapped value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The integer value in the compiled model.
    pub value: String,
    /// The float value of the input model it stands for.
    pub source: String,
    /// One scale, or one per index of `axis`.
    pub scale: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub axis: Option<usize>,
    pub zero_point: i64,
    pub bits: u32,
}

/// Writes the map of the model's integer values into its metadata (replacing an old one).
pub fn record(model: &mut Model) -> Result<usize> {
    let facts = crate::ops::analyze(model, &Default::default(), crate::ops::EVALUATION_LIMIT)?;
    let g = &model.graph;
    let mut entries = Vec::new();
    for id in g.topological_order()? {
        for v in g.outputs_of(id) {
            let value = g.value(v);
            let (Some(q), Some(origin)) = (&value.quant, &value.origin) else {
                continue;
            };
            if !facts
                .get(v)
                .and_then(|f| f.dtype)
                .is_some_and(|t| t.is_integer())
            {
                continue;
            }
            let (scale, axis) = match &q.scale {
                Scale::PerTensor(s) => (vec![*s], None),
                Scale::PerAxis { axis, scales } => (scales.clone(), Some(*axis)),
            };
            entries.push(Entry {
                value: value.name.clone(),
                source: origin.clone(),
                scale,
                axis,
                zero_point: q.zero_point,
                bits: q.bits,
            });
        }
    }
    let count = entries.len();
    let json = serde_json::to_string(&entries).map_err(|e| Error::invalid(e.to_string()))?;
    let props = &mut model.header.metadata_props;
    props.retain(|p| p.key() != KEY);
    if count > 0 {
        props.push(StringStringEntryProto {
            key: Some(KEY.into()),
            value: Some(json),
        });
    }
    Ok(count)
}

/// Reads the map from a compiled model (empty when it has none).
pub fn read(model: &Model) -> Result<Vec<Entry>> {
    match model.header.metadata_props.iter().find(|p| p.key() == KEY) {
        None => Ok(Vec::new()),
        Some(p) => serde_json::from_str(p.value())
            .map_err(|e| Error::invalid(format!("metadata '{KEY}' is not a valid value map: {e}"))),
    }
}
