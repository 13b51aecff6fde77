//! External data: tensors whose bytes live in files next to the model (needed above 2 GB).
//!
//! On load, every external tensor (initializers, attribute tensors, subgraphs, functions,
//! training graphs) gets its bytes in `raw_data` while keeping `data_location = EXTERNAL` and its
//! `external_data` entries. On save, those bytes go back to the named file at the same offset and
//! `raw_data` is cleared, so the saved proto equals the loaded one.
//!
//! A location must stay inside the model's directory: absolute paths, `..` and symlinks that
//! lead out are refused.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use crate::schema::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, tensor_proto::DataLocation,
};
use crate::{Error, Result};

/// Visits every TensorProto of a model, mutably.
pub fn for_each_tensor(
    model: &mut ModelProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<()>,
) -> Result<()> {
    if let Some(g) = &mut model.graph {
        graph_tensors(g, f)?;
    }
    for t in &mut model.training_info {
        for g in t.initialization.iter_mut().chain(t.algorithm.iter_mut()) {
            graph_tensors(g, f)?;
        }
    }
    for func in &mut model.functions {
        for n in &mut func.node {
            node_tensors(n, f)?;
        }
        for a in &mut func.attribute_proto {
            attribute_tensors(a, f)?;
        }
    }
    Ok(())
}

fn graph_tensors(
    g: &mut GraphProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<()>,
) -> Result<()> {
    for t in &mut g.initializer {
        f(t)?;
    }
    for s in &mut g.sparse_initializer {
        for t in s.values.iter_mut().chain(s.indices.iter_mut()) {
            f(t)?;
        }
    }
    for n in &mut g.node {
        node_tensors(n, f)?;
    }
    Ok(())
}

fn node_tensors(
    n: &mut NodeProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<()>,
) -> Result<()> {
    for a in &mut n.attribute {
        attribute_tensors(a, f)?;
    }
    Ok(())
}

fn attribute_tensors(
    a: &mut AttributeProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<()>,
) -> Result<()> {
    for t in a.t.iter_mut().chain(a.tensors.iter_mut()) {
        f(t)?;
    }
    for s in a
        .sparse_tensor
        .iter_mut()
        .chain(a.sparse_tensors.iter_mut())
    {
        for t in s.values.iter_mut().chain(s.indices.iter_mut()) {
            f(t)?;
        }
    }
    for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
        graph_tensors(g, f)?;
    }
    Ok(())
}

/// Where one tensor's bytes are in its file.
struct Placement {
    location: String,
    offset: u64,
    length: Option<u64>,
}

fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(DataLocation::External as i32)
}

fn placement(t: &TensorProto) -> Result<Placement> {
    let err = |reason: String| Error::ExternalData {
        tensor: t.name().to_string(),
        reason,
    };
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for entry in &t.external_data {
        let number = |v: &str| {
            v.parse::<u64>().map_err(|_| {
                err(format!(
                    "{} '{v}' is not a non-negative integer",
                    entry.key()
                ))
            })
        };
        match entry.key() {
            "location" => location = Some(entry.value().to_string()),
            "offset" => offset = number(entry.value())?,
            "length" => length = Some(number(entry.value())?),
            _ => {}
        }
    }
    let location = location.ok_or_else(|| err("no 'location' entry".into()))?;
    Ok(Placement {
        location,
        offset,
        length,
    })
}

/// The file a location names, refused when it could leave `dir`.
fn checked_path(dir: &Path, location: &str, tensor: &str) -> Result<PathBuf> {
    let err = |reason: String| Error::ExternalData {
        tensor: tensor.to_string(),
        reason,
    };
    let relative = Path::new(location);
    if location.is_empty() {
        return Err(err("empty location".into()));
    }
    if relative.is_absolute() || location.starts_with('/') || location.starts_with('\\') {
        return Err(err(format!("location '{location}' is an absolute path")));
    }
    for c in relative.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => {
                return Err(err(format!(
                    "location '{location}' leaves the model's directory"
                )));
            }
        }
    }
    Ok(dir.join(relative))
}

/// Reads every external tensor's bytes into its `raw_data`. `dir` is the model's directory.
pub fn load(model: &mut ModelProto, dir: &Path) -> Result<()> {
    let mut files: BTreeMap<String, Bytes> = BTreeMap::new();
    let canonical_dir = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    for_each_tensor(model, &mut |t| {
        if !is_external(t) {
            return Ok(());
        }
        let p = placement(t)?;
        let err = |reason: String| Error::ExternalData {
            tensor: t.name().to_string(),
            reason,
        };
        if !files.contains_key(&p.location) {
            let path = checked_path(dir, &p.location, t.name())?;
            let real = path
                .canonicalize()
                .map_err(|e| err(format!("cannot open '{}': {e}", path.display())))?;
            if !real.starts_with(&canonical_dir) {
                return Err(err(format!(
                    "location '{}' resolves outside the model's directory (symlink)",
                    p.location
                )));
            }
            let bytes = std::fs::read(&real)
                .map_err(|e| err(format!("cannot read '{}': {e}", path.display())))?;
            files.insert(p.location.clone(), Bytes::from(bytes));
        }
        let file = &files[&p.location];
        let size = file.len() as u64;
        let length = p.length.unwrap_or(size.saturating_sub(p.offset));
        let end = p
            .offset
            .checked_add(length)
            .filter(|&end| end <= size)
            .ok_or_else(|| {
                err(format!(
                    "'{}' has {size} bytes, but the tensor needs bytes {}..{}",
                    p.location,
                    p.offset,
                    p.offset as u128 + length as u128
                ))
            })?;
        t.raw_data = Some(file.slice(p.offset as usize..end as usize));
        Ok(())
    })
}

/// Writes every external tensor's bytes to its file under `dir` (through a temporary file
/// per location, renamed by the caller with `commit`), and clears their `raw_data`.
pub fn store(model: &mut ModelProto, dir: &Path) -> Result<PendingFiles> {
    let mut layout: BTreeMap<String, Vec<(u64, Bytes, String)>> = BTreeMap::new();
    for_each_tensor(model, &mut |t| {
        if !is_external(t) {
            return Ok(());
        }
        let p = placement(t)?;
        checked_path(dir, &p.location, t.name())?;
        let data = t.raw_data.take().ok_or_else(|| Error::ExternalData {
            tensor: t.name().to_string(),
            reason: "its data was not loaded".into(),
        })?;
        if let Some(length) = p.length {
            if length != data.len() as u64 {
                return Err(Error::ExternalData {
                    tensor: t.name().to_string(),
                    reason: format!("length entry {length} != data size {}", data.len()),
                });
            }
        }
        layout
            .entry(p.location)
            .or_default()
            .push((p.offset, data, t.name().to_string()));
        Ok(())
    })?;
    let mut pending = PendingFiles::default();
    for (location, mut pieces) in layout {
        pieces.sort_by_key(|(offset, _, _)| *offset);
        for pair in pieces.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.0 + a.1.len() as u64 > b.0 && a.1 != b.1 {
                return Err(Error::ExternalData {
                    tensor: b.2.clone(),
                    reason: format!("overlaps tensor '{}' in '{location}'", a.2),
                });
            }
        }
        let target = dir.join(&location);
        let parent = target.parent().unwrap_or(dir).to_path_buf();
        let mut tmp = super::temp_file_in(&parent)?;
        let file: &mut File = tmp.as_file_mut();
        for (offset, data, _) in &pieces {
            file.seek(SeekFrom::Start(*offset))
                .and_then(|_| file.write_all(data))
                .map_err(|e| Error::io(&target, e))?;
        }
        pending.files.push((tmp, target));
    }
    Ok(pending)
}

/// External data files written to temporary names, waiting for the model file to be ready.
#[derive(Default)]
pub struct PendingFiles {
    files: Vec<(tempfile::NamedTempFile, PathBuf)>,
}

impl PendingFiles {
    /// Moves every file to its final name.
    pub fn commit(self) -> Result<()> {
        for (tmp, target) in self.files {
            tmp.persist(&target)
                .map_err(|e| Error::io(&target, e.error))?;
        }
        Ok(())
    }
}
