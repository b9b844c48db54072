//! Model files: the parameters under PyTorch's names and the metadata that describes them.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::error::Result;
use crate::model::params::ParamLayout;
use crate::model::spec::{Cell, ModelSpec};
use crate::model::{Device, Model};

/// The flat parameter buffer of `layout` from named tensors. Every tensor the layout names must be
/// there, with its exact shape, as finite floats; and every tensor of the file must be one of
/// them, or one `extra` accepts (a checkpoint's optimizer state), so that nothing in a file is
/// silently ignored. All of it is checked before the buffer is allocated: its size is then
/// bounded by what the file really holds.
pub(crate) fn flat_params(
    path: &Path,
    layout: &ParamLayout,
    tensors: &BTreeMap<String, (Vec<usize>, TensorData)>,
    prefix: &str,
    extra: &dyn Fn(&str) -> bool,
) -> Result<Vec<f32>> {
    let file_name = |name: &str| name.replacen("rnn.", prefix, 1);
    let mut found = Vec::with_capacity(layout.entries().len());
    for e in layout.entries() {
        let name = file_name(&e.name);
        let (shape, data) =
            tensors.get(&name).ok_or_else(|| bad(path, format!("missing tensor {name} {:?}", e.shape)))?;
        if *shape != e.shape {
            return Err(bad(
                path,
                format!("tensor {name} has shape {shape:?}; the model needs {:?}", e.shape),
            ));
        }
        let TensorData::F32(v) = data else {
            return Err(bad(path, format!("tensor {name} holds integers; expected floats")));
        };
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(bad(path, format!("tensor {name} holds a non-finite value at index {i}")));
        }
        found.push((e, v));
    }
    let known: std::collections::BTreeSet<String> =
        layout.entries().iter().map(|e| file_name(&e.name)).collect();
    if let Some(name) = tensors.keys().find(|k| !known.contains(*k) && !extra(k)) {
        return Err(bad(
            path,
            format!(
                "tensor {name} is not part of the model the file describes; the file is inconsistent \
                 (its metadata or its tensors are wrong)"
            ),
        ));
    }
    let mut flat = vec![0.0f32; layout.total()];
    for (e, v) in found {
        flat[e.range()].copy_from_slice(v);
    }
    Ok(flat)
}

/// A model file: the model it describes, its flat parameters, and its metadata.
pub struct ModelFile {
    pub spec: ModelSpec,
    pub params: Vec<f32>,
    pub metadata: Metadata,
    /// Tensors beyond the model's (a checkpoint's optimizer state).
    pub extra: BTreeMap<String, (Vec<usize>, TensorData)>,
}

/// Reads a model file written by `save_model`, or a bare PyTorch state_dict when `cell` is given
/// and the file has no rnn-gpu metadata. Tensors beyond the model's are refused unless `extra`
/// accepts their names.
pub fn read_model(
    path: &Path,
    cell: Option<Cell>,
    extra: &dyn Fn(&Metadata, &str) -> bool,
) -> Result<ModelFile> {
    model_file(path, read_tensors(path)?, cell, extra)
}

/// The model a safetensors file (read or parsed) describes; `path` names it in errors.
fn model_file(
    path: &Path,
    file: TensorFile,
    cell: Option<Cell>,
    extra: &dyn Fn(&Metadata, &str) -> bool,
) -> Result<ModelFile> {
    let shapes: BTreeMap<String, Vec<usize>> =
        file.tensors.iter().map(|(k, (s, _))| (k.clone(), s.clone())).collect();
    let (spec, prefix) = if file.metadata.get("format").map(|s| s.as_str()) == Some(FORMAT) {
        (spec_from_metadata(path, &file.metadata)?, "rnn.")
    } else if let Some(cell) = cell {
        spec_from_state_dict(path, &shapes, cell)?
    } else if shapes.contains_key("weight_ih_l0") || shapes.contains_key("rnn.weight_ih_l0") {
        return Err(bad(
            path,
            "this looks like a bare PyTorch state_dict: name its cell (--cell rnn|rnn_relu|lstm|gru)",
        ));
    } else {
        return Err(bad(path, format!("not an rnn-gpu model file (metadata `format` is not {FORMAT:?})")));
    };
    let layout = ParamLayout::new(&spec);
    let meta = &file.metadata;
    let params = flat_params(path, &layout, &file.tensors, prefix, &|name| extra(meta, name))?;
    let extra = file.tensors.into_iter().filter(|(k, _)| extra(&file.metadata, k)).collect();
    Ok(ModelFile { spec, params, metadata: file.metadata, extra })
}

pub(super) async fn model_tensors(model: &mut Model) -> Result<Vec<(String, Vec<usize>, TensorData)>> {
    let flat = model.flat_params_async().await?;
    Ok(model
        .layout()
        .entries()
        .iter()
        .map(|e| (e.name.clone(), e.shape.clone(), TensorData::F32(flat[e.range()].to_vec())))
        .collect())
}

/// Saves a model with its description and `extra` metadata (a character model's `vocab`).
pub fn save_model(path: &Path, model: &mut Model, extra: &Metadata) -> Result<()> {
    write_atomic(path, &crate::wait::block_on("save_model", model_file_bytes(path, model, extra))?)
}

/// A model file's bytes, as `save_model` writes them (a browser saves them as a download).
pub async fn model_bytes_async(model: &mut Model, extra: &Metadata) -> Result<Vec<u8>> {
    model_file_bytes(Path::new("model"), model, extra).await
}

/// The bytes of the model file `path` (named in errors).
async fn model_file_bytes(path: &Path, model: &mut Model, extra: &Metadata) -> Result<Vec<u8>> {
    let mut meta = spec_metadata(model.spec());
    meta.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    serialize_tensors(path, &model_tensors(model).await?, &meta)
}

/// Loads a model file onto `device`.
pub fn load_model(path: &Path, device: &Device, cell: Option<Cell>) -> Result<(Model, Metadata)> {
    model_on(read_tensors(path)?, path, device, cell)
}

/// Loads a model file from its bytes onto `device`; `name` names it in errors.
pub fn load_model_bytes(
    name: &str,
    bytes: &[u8],
    device: &Device,
    cell: Option<Cell>,
) -> Result<(Model, Metadata)> {
    let path = Path::new(name);
    model_on(parse_tensors(path, bytes)?, path, device, cell)
}

fn model_on(file: TensorFile, path: &Path, device: &Device, cell: Option<Cell>) -> Result<(Model, Metadata)> {
    // A checkpoint (it describes its optimizer) is a model file too; its state is not needed here.
    let f = model_file(path, file, cell, &|meta, name| {
        meta.contains_key("optimizer.name") && is_checkpoint_tensor(name)
    })?;
    let model = Model::with_flat_params(f.spec, device, &f.params, 0)?;
    Ok((model, f.metadata))
}

/// A character model (as `rnn-gpu train` writes) and its vocabulary, from a loaded file's
/// metadata; `path` names the file in errors.
pub fn char_vocab(path: &Path, model: &Model, meta: &Metadata) -> Result<Vec<char>> {
    let chars = meta.get("vocab").ok_or_else(|| Error::file(path, "no vocabulary: not a character model"))?;
    crate::data::checked_vocab(path, "character", chars, model.spec().input.vocab().unwrap_or(0))
}

// ---- training checkpoints -----------------------------------------------------------------------
