//! Model files and training checkpoints: safetensors with PyTorch's parameter names.
//!
//! A model file holds `rnn.*` (PyTorch's `nn.RNN/LSTM/GRU` names) and `head.*` tensors, in f32,
//! and metadata that describes the model (`format`, `cell`, `input`, `hidden`, `proj`, `layers`,
//! `bidirectional`, `dropout`, `output_dropout`, `learn_initial_state`, `head`, and `vocab` for
//! a character model). A bare PyTorch state_dict saved with safetensors (names without prefix, no metadata)
//! loads too: the cell is named by the caller, the sizes come from the shapes.
//!
//! Files are written atomically (a temporary file in the same folder, synced, then renamed): a
//! crash never leaves a half-written file in place of a good one. Reading checks every tensor's
//! dtype and shape against the model the metadata describes, and allocates only what the file's
//! real length holds.

mod checkpoint;
mod model;
mod spec;

pub use checkpoint::*;
pub use model::*;
pub use spec::*;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{Error, Result};

pub const FORMAT: &str = "rnn-gpu/1";

pub type Metadata = BTreeMap<String, String>;

/// Writes `bytes` to `path` atomically and durably: a temporary file in the same folder, synced,
/// renamed over `path`, then the folder synced so that the rename itself survives a power loss.
/// Temporary files that killed writers of the same `path` left behind are removed first.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| Error::file(path, "not a file name"))?;
    let prefix = format!(".{}.tmp", name.to_string_lossy());
    remove_stale_temps(dir, &prefix);
    let tmp = dir.join(format!("{prefix}{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Makes a rename in `dir` durable. Only Unix can open a folder to sync it.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    if cfg!(unix) { std::fs::File::open(dir)?.sync_all() } else { Ok(()) }
}

/// Removes `{prefix}{pid}` files in `dir` whose writer is gone: a process that no longer runs
/// (Linux), or a file over a day old (elsewhere, where a process cannot be looked up).
fn remove_stale_temps(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|n| n.strip_prefix(prefix)) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        let stale = if cfg!(target_os = "linux") {
            pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists()
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 24 * 3600)
        };
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A tensor read from a file, converted to f32 (or kept as integers).
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    /// Integer tensors (token ids, lengths), from any integer dtype.
    Int(Vec<i64>),
}

/// Every tensor of a safetensors file, with its shape, and the metadata.
pub struct TensorFile {
    pub tensors: BTreeMap<String, (Vec<usize>, TensorData)>,
    pub metadata: Metadata,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::file(path, msg)
}

fn read_view(path: &Path, name: &str, v: &TensorView<'_>) -> Result<TensorData> {
    let d = v.data();
    let ints =
        |width: usize, f: &dyn Fn(&[u8]) -> i64| TensorData::Int(d.chunks_exact(width).map(f).collect());
    Ok(match v.dtype() {
        Dtype::F32 => TensorData::F32(
            d.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect(),
        ),
        Dtype::F64 => TensorData::F32(
            d.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
        ),
        Dtype::I64 => ints(8, &|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))),
        Dtype::I32 => ints(4, &|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64),
        Dtype::U32 => ints(4, &|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as i64),
        Dtype::I16 => ints(2, &|b| i16::from_le_bytes(b.try_into().expect("2 bytes")) as i64),
        Dtype::U8 => ints(1, &|b| b[0] as i64),
        other => {
            return Err(bad(
                path,
                format!("tensor {name} has dtype {other:?}; expected F32, F64 or an integer type"),
            ));
        }
    })
}

/// Reads a whole safetensors file. The safetensors parser checks the header against the file's
/// real length before anything is allocated from it.
pub fn read_tensors(path: &Path) -> Result<TensorFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_tensors(path, &bytes)
}

/// A whole safetensors file from its bytes (a browser's download or file picker); `source` names
/// it in errors.
pub fn parse_tensors(source: &Path, bytes: &[u8]) -> Result<TensorFile> {
    let path = source;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(path, format!("not a valid safetensors file: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(path, e.to_string()))?;
    let metadata: Metadata = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data = read_view(path, &name, &view)?;
        tensors.insert(name, (view.shape().to_vec(), data));
    }
    Ok(TensorFile { tensors, metadata })
}

/// The metadata of a safetensors file, from its header alone (the tensors are not read).
pub fn read_metadata(path: &Path) -> Result<Metadata> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| bad(path, "not a valid safetensors file: shorter than its header length"))?;
    let n = u64::from_le_bytes(n);
    if n > file_len - 8 || n > 100 << 20 {
        return Err(bad(
            path,
            format!("not a valid safetensors file: a header of {n} bytes in a file of {file_len}"),
        ));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| bad(path, format!("not a valid safetensors file: its header is not JSON ({e})")))?;
    let mut meta = Metadata::new();
    if let Some(m) = json.get("__metadata__").and_then(|m| m.as_object()) {
        for (k, v) in m {
            let v = v.as_str().ok_or_else(|| bad(path, format!("metadata `{k}` is not a string")))?;
            meta.insert(k.clone(), v.to_string());
        }
    }
    Ok(meta)
}

/// Writes f32 and integer tensors with metadata, atomically.
pub fn write_tensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, TensorData)],
    metadata: &Metadata,
) -> Result<()> {
    write_atomic(path, &serialize_tensors(path, tensors, metadata)?)
}

/// A safetensors file's bytes; `path` names it in errors.
pub fn serialize_tensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, TensorData)],
    metadata: &Metadata,
) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, data)| match data {
            TensorData::F32(v) => {
                (name.clone(), Dtype::F32, shape.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())
            }
            TensorData::Int(v) => {
                (name.clone(), Dtype::I64, shape.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())
            }
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(path, format!("internal: {e}")))?;
    let meta: HashMap<String, String> = metadata.clone().into_iter().collect();
    safetensors::serialize(views, Some(meta)).map_err(|e| bad(path, e.to_string()))
}

// ---- the model description in metadata ---------------------------------------------------------
