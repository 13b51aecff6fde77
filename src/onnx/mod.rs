//! The ONNX format boundary: decoding and encoding files, external data, and the conversion
//! between `ModelProto` and the IR.

mod export;
pub mod external;
mod import;
pub mod text;

mod wire;

use std::io::{BufWriter, Write};
use std::path::Path;

use bytes::Bytes;
use prost::Message;

use crate::schema::ModelProto;
pub use export::export;
pub use import::import;

use crate::ir::Model;
use crate::{Error, Result};

/// Reads a model file, with its external data, into the IR.
pub fn load(path: &Path) -> Result<Model> {
    import(read_proto(path)?)
}

/// Reads and decodes a model file and loads its external data. Tensor bytes are not copied:
/// they stay slices of the file buffer.
pub fn read_proto(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut proto = decode(Bytes::from(bytes), &path.display().to_string())?;
    let dir = model_dir(path);
    external::load(&mut proto, dir)?;
    Ok(proto)
}

/// Decodes a ModelProto from bytes. `what` names the source in errors.
pub fn decode(bytes: Bytes, what: &str) -> Result<ModelProto> {
    let fail = |reason: String| Error::Decode {
        what: what.to_string(),
        reason,
    };
    if bytes.is_empty() {
        return Err(fail("the file is empty".into()));
    }
    let proto = ModelProto::decode(bytes).map_err(|e| fail(e.to_string()))?;
    if proto.graph.is_none() && proto.ir_version.is_none() && proto.opset_import.is_empty() {
        return Err(fail(
            "no ModelProto fields found (not a model file?)".into(),
        ));
    }
    Ok(proto)
}

/// Writes a model to `path` atomically: everything goes to temporary files first and is
/// renamed into place only once complete, so a failure never leaves a partial output.
pub fn save(model: &Model, path: &Path) -> Result<()> {
    write_proto(export(model)?, path)
}

/// Encodes a ModelProto to `path` atomically, with its external data files.
pub fn write_proto(mut proto: ModelProto, path: &Path) -> Result<()> {
    let dir = model_dir(path);
    let data_files = external::store(&mut proto, dir)?;
    let mut tmp = temp_file_in(dir)?;
    {
        let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        wire::write_model(&proto, &mut out)
            .and_then(|_| out.flush())
            .map_err(|e| Error::io(path, e))?;
    }
    data_files.commit()?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Encodes a model to bytes (for in-memory use such as handing it to tract).
pub fn encode(model: &Model) -> Result<Vec<u8>> {
    let proto = export(model)?;
    let mut out = Vec::with_capacity(proto.encoded_len());
    wire::write_model(&proto, &mut out).map_err(|e| Error::io("<memory>", e))?;
    Ok(out)
}

/// A temporary file next to its destination, created with the usual `0666 & !umask` mode
/// (not tempfile's private 0600), so the renamed result has ordinary permissions.
pub fn temp_file_in(dir: &Path) -> Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".intone-");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    builder.tempfile_in(dir).map_err(|e| Error::io(dir, e))
}

fn model_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
