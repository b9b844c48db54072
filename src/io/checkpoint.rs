//! Training checkpoints: a model file plus the optimizer, its state, the step, the random state
//! and the state carried between chunks.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::error::{Error, Result};
use crate::model::params::ParamLayout;
use crate::model::spec::ModelSpec;
use crate::model::{CarriedState, Device, Model};
use crate::train::TrainingState;
use crate::update::{Clip, MAX_SLOTS, Optimizer};

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
    let mut tensors = crate::wait::block_on("save_checkpoint", model_tensors(model))?;
    let mut meta = spec_metadata(model.spec());
    let state = model.training_state()?;
    tensors.extend(training_tensors(&state, model.layout().total(), &mut meta));
    if let Some(c) = carried {
        let spec = model.spec();
        let batch = c.h.len() / (spec.state_rows() * spec.state_size()).max(1);
        let shape = |width: usize| vec![spec.state_rows(), batch, width];
        tensors.push((CARRIED_H.into(), shape(spec.state_size()), TensorData::F32(c.h.clone())));
        if let Some(cs) = &c.c {
            tensors.push((CARRIED_C.into(), shape(spec.hidden), TensorData::F32(cs.clone())));
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

/// The carried state of a checkpoint, checked against the model: `[L*D, B, H]` finite floats
/// (the hidden state `[L*D, B, P]` with a projection), with a cell state of the same batch
/// exactly when the cell has one.
fn carried_from(
    path: &Path,
    spec: &ModelSpec,
    extra: &BTreeMap<String, (Vec<usize>, TensorData)>,
) -> Result<Option<CarriedState>> {
    let floats = |name: &str, width: usize| -> Result<Option<(usize, Vec<f32>)>> {
        match extra.get(name) {
            None => Ok(None),
            Some((shape, TensorData::F32(v))) => {
                if let [rows, b, h] = shape[..]
                    && rows == spec.state_rows()
                    && h == width
                    && b > 0
                {
                    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                        return Err(bad(
                            path,
                            format!("tensor {name} holds a non-finite value at index {i}"),
                        ));
                    }
                    return Ok(Some((b, v.clone())));
                }
                Err(bad(
                    path,
                    format!(
                        "tensor {name} has shape {shape:?}; expected [{}, B, {width}]",
                        spec.state_rows(),
                    ),
                ))
            }
            Some(_) => Err(bad(path, format!("tensor {name} holds integers; expected floats"))),
        }
    };
    let (h, c) = (floats(CARRIED_H, spec.state_size())?, floats(CARRIED_C, spec.hidden)?);
    match (h, c, spec.cell.has_cell_state()) {
        (None, None, _) => Ok(None),
        (Some((_, h)), None, false) => Ok(Some(CarriedState { h, c: None })),
        (Some((hs, h)), Some((cs, c)), true) if hs == cs => Ok(Some(CarriedState { h, c: Some(c) })),
        _ => Err(bad(
            path,
            format!(
                "tensors {CARRIED_H} and {CARRIED_C} do not fit a {}: {}",
                spec.cell.name(),
                if spec.cell.has_cell_state() { "both, of one batch" } else { "the hidden state only" }
            ),
        )),
    }
}
