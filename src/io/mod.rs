//! Model files and training checkpoints: safetensors with PyTorch's parameter names.
//!
//! A model file holds `rnn.*` (PyTorch's `nn.RNN/LSTM/GRU` names) and `head.*` tensors, in f32,
//! and metadata that describes the model (`format`, `cell`, `input`, `hidden`, `layers`,
//! `bidirectional`, `dropout`, `output_dropout`, `learn_initial_state`, `head`, and `vocab` for
//! a character model). A bare PyTorch state_dict saved with safetensors (names without prefix, no metadata)
//! loads too: the cell is named by the caller, the sizes come from the shapes.
//!
//! Files are written atomically (a temporary file in the same folder, synced, then renamed): a
//! crash never leaves a half-written file in place of a good one. Reading checks every tensor's
//! dtype and shape against the model the metadata describes, and allocates only what the file's
//! real length holds.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{Error, Result};
use crate::model::params::ParamLayout;
use crate::model::spec::{Cell, Head, InputKind, Loss, MAX_SIZE, ModelSpec, OutputMode};
use crate::model::{CarriedState, Device, Model};
use crate::train::TrainingState;
use crate::update::{Clip, MAX_SLOTS, Optimizer};

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
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(path, format!("not a valid safetensors file: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(path, e.to_string()))?;
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
    let out = safetensors::serialize(views, Some(meta)).map_err(|e| bad(path, e.to_string()))?;
    write_atomic(path, &out)
}

// ---- the model description in metadata ---------------------------------------------------------

pub fn spec_metadata(spec: &ModelSpec) -> Metadata {
    let mut m = Metadata::new();
    m.insert("format".into(), FORMAT.into());
    m.insert("cell".into(), spec.cell.name().into());
    m.insert(
        "input".into(),
        match spec.input {
            InputKind::Dense(n) => format!("dense:{n}"),
            InputKind::Tokens(v) => format!("tokens:{v}"),
        },
    );
    m.insert("hidden".into(), spec.hidden.to_string());
    m.insert("layers".into(), spec.layers.to_string());
    m.insert("bidirectional".into(), spec.bidirectional.to_string());
    m.insert("dropout".into(), spec.dropout.to_string());
    m.insert("output_dropout".into(), spec.output_dropout.to_string());
    m.insert("learn_initial_state".into(), spec.learn_initial_state.to_string());
    m.insert("condition".into(), spec.condition.map_or("none".into(), |c| c.to_string()));
    m.insert(
        "head".into(),
        match spec.head {
            None => "none".into(),
            Some(h) => format!(
                "{}:{}:{}",
                h.outputs,
                match h.mode {
                    OutputMode::ManyToMany => "many_to_many",
                    OutputMode::ManyToOne => "many_to_one",
                },
                match h.loss {
                    Loss::CrossEntropy => "cross_entropy",
                    Loss::Mse => "mse",
                }
            ),
        },
    );
    m
}

pub(crate) fn field<'a>(path: &Path, m: &'a Metadata, key: &str) -> Result<&'a str> {
    m.get(key).map(|s| s.as_str()).ok_or_else(|| bad(path, format!("metadata lacks `{key}`")))
}

pub(crate) fn parse<T: std::str::FromStr>(path: &Path, m: &Metadata, key: &str) -> Result<T> {
    let v = field(path, m, key)?;
    v.parse().map_err(|_| bad(path, format!("metadata `{key}` = {v:?} is not valid")))
}

/// A size from a file, refused before anything is allocated for it when absurd.
pub(crate) fn size(path: &Path, what: &str, v: usize) -> Result<usize> {
    if v == 0 || v > MAX_SIZE {
        return Err(bad(path, format!("{what} = {v} is absurd; expected 1..={MAX_SIZE}")));
    }
    Ok(v)
}

pub fn spec_from_metadata(path: &Path, m: &Metadata) -> Result<ModelSpec> {
    let cell_name = field(path, m, "cell")?;
    let cell = Cell::from_name(cell_name).ok_or_else(|| bad(path, format!("unknown cell {cell_name:?}")))?;
    let input = field(path, m, "input")?;
    let input = match input.split_once(':') {
        Some(("dense", n)) => {
            InputKind::Dense(size(path, "input size", n.parse().map_err(|_| bad(path, "bad input size"))?)?)
        }
        Some(("tokens", n)) => {
            InputKind::Tokens(size(path, "vocabulary", n.parse().map_err(|_| bad(path, "bad vocabulary"))?)?)
        }
        _ => return Err(bad(path, format!("metadata `input` = {input:?}; expected dense:N or tokens:N"))),
    };
    let head = match field(path, m, "head")? {
        "none" => None,
        h => {
            let parts: Vec<&str> = h.split(':').collect();
            let [outputs, mode, loss] = parts[..] else {
                return Err(bad(path, format!("metadata `head` = {h:?}; expected outputs:mode:loss")));
            };
            Some(Head {
                outputs: size(
                    path,
                    "head outputs",
                    outputs.parse().map_err(|_| bad(path, "bad head outputs"))?,
                )?,
                mode: match mode {
                    "many_to_many" => OutputMode::ManyToMany,
                    "many_to_one" => OutputMode::ManyToOne,
                    _ => return Err(bad(path, format!("unknown head mode {mode:?}"))),
                },
                loss: match loss {
                    "cross_entropy" => Loss::CrossEntropy,
                    "mse" => Loss::Mse,
                    _ => return Err(bad(path, format!("unknown loss {loss:?}"))),
                },
            })
        }
    };
    let spec = ModelSpec {
        cell,
        input,
        hidden: size(path, "hidden", parse(path, m, "hidden")?)?,
        layers: size(path, "layers", parse(path, m, "layers")?)?,
        bidirectional: parse(path, m, "bidirectional")?,
        dropout: parse(path, m, "dropout")?,
        // Files written before output dropout existed have none.
        output_dropout: match m.contains_key("output_dropout") {
            true => parse(path, m, "output_dropout")?,
            false => 0.0,
        },
        learn_initial_state: parse(path, m, "learn_initial_state")?,
        // Files written before conditioned states existed have no `condition`: none.
        condition: match m.get("condition").map(|s| s.as_str()).unwrap_or("none") {
            "none" => None,
            c => Some(size(
                path,
                "condition size",
                c.parse().map_err(|_| bad(path, format!("bad condition size {c:?}")))?,
            )?),
        },
        head,
    };
    spec.validate().map_err(|e| bad(path, e.to_string()))?;
    Ok(spec)
}

/// Infers the model of a bare PyTorch state_dict (`weight_ih_l0`, ...) for `cell`.
pub fn spec_from_state_dict(
    path: &Path,
    shapes: &BTreeMap<String, Vec<usize>>,
    cell: Cell,
) -> Result<ModelSpec> {
    let shape = |name: &str| shapes.get(name).ok_or_else(|| bad(path, format!("missing tensor {name}")));
    let w_ih = shape("weight_ih_l0")?;
    let w_hh = shape("weight_hh_l0")?;
    if w_ih.len() != 2 || w_hh.len() != 2 {
        return Err(bad(path, "weight_ih_l0 and weight_hh_l0 must be matrices"));
    }
    let hidden = w_hh[1];
    if w_hh[0] != cell.gates() * hidden {
        return Err(bad(
            path,
            format!(
                "weight_hh_l0 has shape {w_hh:?}; a {} of hidden size {hidden} needs [{}, {hidden}]. Is the cell right?",
                cell.name(),
                cell.gates() * hidden
            ),
        ));
    }
    let layers = (0..).take_while(|k| shapes.contains_key(&format!("weight_ih_l{k}"))).count();
    let spec = ModelSpec {
        layers: size(path, "layers", layers)?,
        bidirectional: shapes.contains_key("weight_ih_l0_reverse"),
        ..ModelSpec::new(
            cell,
            InputKind::Dense(size(path, "input size", w_ih[1])?),
            size(path, "hidden", hidden)?,
        )
    };
    spec.validate().map_err(|e| bad(path, e.to_string()))?;
    Ok(spec)
}

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
    let file = read_tensors(path)?;
    let shapes: BTreeMap<String, Vec<usize>> =
        file.tensors.iter().map(|(k, (s, _))| (k.clone(), s.clone())).collect();
    let (spec, prefix) = if file.metadata.get("format").map(|s| s.as_str()) == Some(FORMAT) {
        (spec_from_metadata(path, &file.metadata)?, "rnn.")
    } else if let Some(cell) = cell {
        (spec_from_state_dict(path, &shapes, cell)?, "")
    } else if shapes.contains_key("weight_ih_l0") {
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

fn model_tensors(model: &mut Model) -> Result<Vec<(String, Vec<usize>, TensorData)>> {
    let flat = model.flat_params()?;
    Ok(model
        .layout()
        .entries()
        .iter()
        .map(|e| (e.name.clone(), e.shape.clone(), TensorData::F32(flat[e.range()].to_vec())))
        .collect())
}

/// Saves a model with its description and `extra` metadata (a character model's `vocab`).
pub fn save_model(path: &Path, model: &mut Model, extra: &Metadata) -> Result<()> {
    let mut meta = spec_metadata(model.spec());
    meta.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    write_tensors(path, &model_tensors(model)?, &meta)
}

/// Loads a model file onto `device`.
pub fn load_model(path: &Path, device: &Device, cell: Option<Cell>) -> Result<(Model, Metadata)> {
    // A checkpoint (it describes its optimizer) is a model file too; its state is not needed here.
    let f = read_model(path, cell, &|meta, name| {
        meta.contains_key("optimizer.name") && is_checkpoint_tensor(name)
    })?;
    let model = Model::with_flat_params(f.spec, device, &f.params, 0)?;
    Ok((model, f.metadata))
}

// ---- training checkpoints -----------------------------------------------------------------------

fn optimizer_metadata(opt: &Optimizer, clip: Clip, m: &mut Metadata) {
    let mut put = |k: &str, v: String| {
        m.insert(format!("optimizer.{k}"), v);
    };
    put("name", opt.name().into());
    put("lr", opt.lr().to_string());
    for (k, v) in opt.fields() {
        put(k, v);
    }
    put("clip_max_norm", clip.max_norm.to_string());
    put("clip_value", clip.value.to_string());
}

pub fn optimizer_from_metadata(path: &Path, m: &Metadata) -> Result<(Optimizer, Clip)> {
    let f = |k: &str| parse::<f32>(path, m, &format!("optimizer.{k}"));
    let get = |k: &str| field(path, m, &format!("optimizer.{k}")).map(str::to_string);
    // A field that is missing is already named with the file; one that does not parse is not.
    let opt =
        Optimizer::from_fields(field(path, m, "optimizer.name")?, f("lr")?, &get).map_err(|e| match e {
            Error::Invalid { message, .. } => bad(path, format!("metadata: optimizer {message}")),
            e => e,
        })?;
    Ok((opt, Clip { max_norm: f("clip_max_norm")?, value: f("clip_value")? }))
}

/// The tensors a checkpoint holds beyond the model's.
pub(crate) fn is_checkpoint_tensor(name: &str) -> bool {
    matches!(name, "optimizer.step_state" | "rng.state" | CARRIED_H | CARRIED_C)
        || name
            .strip_prefix("optimizer.state")
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i < MAX_SLOTS)
}

const CARRIED_H: &str = "train.carried.h";
const CARRIED_C: &str = "train.carried.c";

/// The tensors and metadata of a training state, for a checkpoint of a model whose flat
/// parameters have `total` elements.
pub(crate) fn training_tensors(
    state: &TrainingState,
    total: usize,
    meta: &mut Metadata,
) -> Vec<(String, Vec<usize>, TensorData)> {
    optimizer_metadata(&state.optimizer, state.clip, meta);
    let mut tensors: Vec<_> = state
        .slots
        .iter()
        .enumerate()
        .map(|(i, slot)| (format!("optimizer.state{i}"), vec![total], TensorData::F32(slot.clone())))
        .collect();
    let step = state.step_state.clone();
    tensors.push(("optimizer.step_state".into(), vec![step.len()], TensorData::F32(step)));
    tensors.push((
        "rng.state".into(),
        vec![4],
        TensorData::Int(state.rng.iter().map(|&w| w as i64).collect()),
    ));
    tensors
}

/// The training state of a checkpoint, each part checked: the optimizer's hyperparameters, one
/// state buffer per slot it keeps and no other, the step state and the generator.
pub(crate) fn training_state(
    path: &Path,
    meta: &Metadata,
    extra: &BTreeMap<String, (Vec<usize>, TensorData)>,
    total: usize,
) -> Result<TrainingState> {
    let (optimizer, clip) = optimizer_from_metadata(path, meta)?;
    optimizer.validate().map_err(|e| bad(path, e.to_string()))?;
    clip.validate().map_err(|e| bad(path, e.to_string()))?;
    let mut slots = Vec::new();
    for i in 0..MAX_SLOTS {
        let name = format!("optimizer.state{i}");
        match (extra.get(&name), i < optimizer.state_slots()) {
            (Some((shape, TensorData::F32(v))), true) if *shape == [total] => slots.push(v.clone()),
            (Some((shape, _)), true) => {
                return Err(bad(
                    path,
                    format!("tensor {name} has shape {shape:?}; expected [{total}] floats"),
                ));
            }
            (None, true) => return Err(bad(path, format!("missing tensor {name}"))),
            (Some(_), false) => {
                return Err(bad(
                    path,
                    format!("tensor {name} is not state of the {} optimizer", optimizer.name()),
                ));
            }
            (None, false) => {}
        }
    }
    let step_state = match extra.get("optimizer.step_state") {
        Some((shape, TensorData::F32(v))) if *shape == [crate::ops::step_state::LEN] => v.clone(),
        _ => return Err(bad(path, "missing or malformed tensor optimizer.step_state")),
    };
    let rng = match extra.get("rng.state") {
        Some((shape, TensorData::Int(v))) if *shape == [4] => {
            [v[0] as u64, v[1] as u64, v[2] as u64, v[3] as u64]
        }
        _ => return Err(bad(path, "missing or malformed tensor rng.state")),
    };
    Ok(TrainingState { optimizer, clip, slots, step_state, rng })
}

/// Saves everything a run needs to resume exactly: the model, its training state, the state
/// carried into the next chunk (truncated BPTT), and `progress` (the caller's own counters).
pub fn save_checkpoint(
    path: &Path,
    model: &mut Model,
    carried: Option<&CarriedState>,
    progress: &Metadata,
) -> Result<()> {
    let mut tensors = model_tensors(model)?;
    let mut meta = spec_metadata(model.spec());
    let state = model.training_state()?;
    tensors.extend(training_tensors(&state, model.layout().total(), &mut meta));
    if let Some(c) = carried {
        let spec = model.spec();
        let rows = spec.state_rows() * spec.hidden;
        let shape = vec![spec.state_rows(), c.h.len() / rows.max(1), spec.hidden];
        tensors.push((CARRIED_H.into(), shape.clone(), TensorData::F32(c.h.clone())));
        if let Some(cs) = &c.c {
            tensors.push((CARRIED_C.into(), shape, TensorData::F32(cs.clone())));
        }
    }
    meta.extend(progress.iter().map(|(k, v)| (k.clone(), v.clone())));
    write_tensors(path, &tensors, &meta)
}

/// A checkpoint as loaded: the model ready to continue, its metadata, and the state to carry into
/// the next chunk when the run was between evaluations.
pub struct Checkpoint {
    pub model: Model,
    pub metadata: Metadata,
    pub carried: Option<CarriedState>,
}

/// Loads a checkpoint onto `device`, ready to continue training where it stopped.
pub fn load_checkpoint(path: &Path, device: &Device) -> Result<Checkpoint> {
    let f = read_model(path, None, &|_, name| is_checkpoint_tensor(name))?;
    let total = ParamLayout::new(&f.spec).total();
    let state = training_state(path, &f.metadata, &f.extra, total)?;
    let mut model = Model::with_flat_params(f.spec, device, &f.params, 0)?;
    model.set_training_state(&state).map_err(|e| bad(path, e.to_string()))?;
    let carried = carried_from(path, model.spec(), &f.extra)?;
    Ok(Checkpoint { model, metadata: f.metadata, carried })
}

/// The carried state of a checkpoint, checked against the model: `[L*D, B, H]` finite floats,
/// with a cell state exactly when the cell has one.
fn carried_from(
    path: &Path,
    spec: &ModelSpec,
    extra: &BTreeMap<String, (Vec<usize>, TensorData)>,
) -> Result<Option<CarriedState>> {
    let floats = |name: &str| -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        match extra.get(name) {
            None => Ok(None),
            Some((shape, TensorData::F32(v))) => {
                if let [rows, b, h] = shape[..]
                    && rows == spec.state_rows()
                    && h == spec.hidden
                    && b > 0
                {
                    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                        return Err(bad(
                            path,
                            format!("tensor {name} holds a non-finite value at index {i}"),
                        ));
                    }
                    return Ok(Some((shape.clone(), v.clone())));
                }
                Err(bad(
                    path,
                    format!(
                        "tensor {name} has shape {shape:?}; expected [{}, B, {}]",
                        spec.state_rows(),
                        spec.hidden
                    ),
                ))
            }
            Some(_) => Err(bad(path, format!("tensor {name} holds integers; expected floats"))),
        }
    };
    let (h, c) = (floats(CARRIED_H)?, floats(CARRIED_C)?);
    match (h, c, spec.cell.has_cell_state()) {
        (None, None, _) => Ok(None),
        (Some((_, h)), None, false) => Ok(Some(CarriedState { h, c: None })),
        (Some((hs, h)), Some((cs, c)), true) if hs == cs => Ok(Some(CarriedState { h, c: Some(c) })),
        _ => Err(bad(
            path,
            format!(
                "tensors {CARRIED_H} and {CARRIED_C} do not fit a {}: {}",
                spec.cell.name(),
                if spec.cell.has_cell_state() { "both, of one shape" } else { "the hidden state only" }
            ),
        )),
    }
}
