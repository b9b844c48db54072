//! A model's description in a file's metadata, and inferred from a bare state_dict's shapes.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::error::Result;
use crate::model::spec::{Cell, Head, InputKind, Loss, MAX_SIZE, ModelSpec, OutputMode};

pub fn spec_metadata(spec: &ModelSpec) -> Metadata {
    let mut m = Metadata::new();
    m.insert("format".into(), FORMAT.into());
    m.insert("cell".into(), spec.cell.name().into());
    m.insert(
        "input".into(),
        match spec.input {
            InputKind::Dense(n) => format!("dense:{n}"),
            InputKind::Tokens(v) => format!("tokens:{v}"),
            InputKind::Embedding { vocab, dim } => format!("embedding:{vocab}:{dim}"),
        },
    );
    m.insert("hidden".into(), spec.hidden.to_string());
    m.insert("proj".into(), spec.proj.to_string());
    m.insert("layers".into(), spec.layers.to_string());
    m.insert("bidirectional".into(), spec.bidirectional.to_string());
    m.insert("dropout".into(), spec.dropout.to_string());
    m.insert("output_dropout".into(), spec.output_dropout.to_string());
    m.insert("weight_drop".into(), spec.weight_drop.to_string());
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

/// A field that files written before it existed lack, read as `default` there.
fn parse_or<T: std::str::FromStr>(path: &Path, m: &Metadata, key: &str, default: T) -> Result<T> {
    if m.contains_key(key) { parse(path, m, key) } else { Ok(default) }
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
        Some(("embedding", vd)) => {
            let (v, d) =
                vd.split_once(':').ok_or_else(|| bad(path, "bad embedding: expected embedding:V:E"))?;
            InputKind::Embedding {
                vocab: size(path, "vocabulary", v.parse().map_err(|_| bad(path, "bad vocabulary"))?)?,
                dim: size(path, "embedding width", d.parse().map_err(|_| bad(path, "bad embedding width"))?)?,
            }
        }
        _ => {
            return Err(bad(
                path,
                format!("metadata `input` = {input:?}; expected dense:N, tokens:N or embedding:V:E"),
            ));
        }
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
        proj: parse_or(path, m, "proj", 0)?,
        layers: size(path, "layers", parse(path, m, "layers")?)?,
        bidirectional: parse(path, m, "bidirectional")?,
        dropout: parse(path, m, "dropout")?,
        output_dropout: parse_or(path, m, "output_dropout", 0.0)?,
        weight_drop: parse_or(path, m, "weight_drop", 0.0)?,
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

/// Infers the model of a PyTorch state_dict saved with safetensors, for `cell`, and the prefix of
/// its recurrent tensors' names: a bare `nn.RNN/LSTM/GRU`'s (`weight_ih_l0`, ...), or a module's
/// whose recurrent part is named `rnn` (`rnn.weight_ih_l0`, ...), with an `nn.Embedding` named
/// `embedding` (token input through it) and an `nn.Linear` named `head` (a head at every step;
/// its loss is taken to be cross-entropy).
pub fn spec_from_state_dict(
    path: &Path,
    shapes: &BTreeMap<String, Vec<usize>>,
    cell: Cell,
) -> Result<(ModelSpec, &'static str)> {
    let prefix = if shapes.contains_key("rnn.weight_ih_l0") { "rnn." } else { "" };
    let shape = |name: &str| {
        let name = format!("{prefix}{name}");
        shapes.get(&name).ok_or_else(|| bad(path, format!("missing tensor {name}")))
    };
    let w_ih = shape("weight_ih_l0")?;
    let w_hh = shape("weight_hh_l0")?;
    if w_ih.len() != 2 || w_hh.len() != 2 {
        return Err(bad(path, "weight_ih_l0 and weight_hh_l0 must be matrices"));
    }
    // With a projection (PyTorch's proj_size), weight_hr_l0 [P, H] gives the hidden size and
    // weight_hh_l0 is [G*H, P].
    if cell != Cell::Lstm && shapes.contains_key(&format!("{prefix}weight_hr_l0")) {
        return Err(bad(
            path,
            format!("weight_hr_l0 is an LSTM's projection, but the cell named is a {}", cell.name()),
        ));
    }
    let (hidden, proj) = match shapes.get(&format!("{prefix}weight_hr_l0")).map(|s| &s[..]) {
        None => (w_hh[1], 0),
        Some(&[p, h]) => (h, p),
        Some(s) => {
            return Err(bad(path, format!("weight_hr_l0 has shape {s:?}; expected [proj_size, hidden]")));
        }
    };
    let state = if proj > 0 { proj } else { hidden };
    if w_hh[0] != cell.gates() * hidden || w_hh[1] != state {
        return Err(bad(
            path,
            format!(
                "weight_hh_l0 has shape {w_hh:?}; a {} of hidden size {hidden} needs [{}, {state}]. Is the cell right?",
                cell.name(),
                cell.gates() * hidden
            ),
        ));
    }
    let layers = (0..).take_while(|k| shapes.contains_key(&format!("{prefix}weight_ih_l{k}"))).count();
    let module = |name: &str| if prefix.is_empty() { None } else { shapes.get(name) };
    let input = match module("embedding.weight").map(|s| &s[..]) {
        None => InputKind::Dense(size(path, "input size", w_ih[1])?),
        Some(&[vocab, dim]) => InputKind::Embedding {
            vocab: size(path, "vocabulary", vocab)?,
            dim: size(path, "embedding width", dim)?,
        },
        Some(s) => {
            return Err(bad(path, format!("embedding.weight has shape {s:?}; expected [vocab, width]")));
        }
    };
    let head = match module("head.weight").map(|s| &s[..]) {
        None => None,
        Some(&[outputs, _]) => Some(Head {
            outputs: size(path, "head outputs", outputs)?,
            mode: OutputMode::ManyToMany,
            loss: Loss::CrossEntropy,
        }),
        Some(s) => return Err(bad(path, format!("head.weight has shape {s:?}; expected [outputs, inputs]"))),
    };
    let spec = ModelSpec {
        layers: size(path, "layers", layers)?,
        bidirectional: shapes.contains_key(&format!("{prefix}weight_ih_l0_reverse")),
        proj,
        head,
        ..ModelSpec::new(cell, input, size(path, "hidden", hidden)?)
    };
    spec.validate().map_err(|e| bad(path, e.to_string()))?;
    Ok((spec, prefix))
}
