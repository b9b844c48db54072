//! The parameters of a model: PyTorch's names and shapes, one flat buffer.
//!
//! Every tensor starts on a 64-element (256-byte) boundary of the flat buffer, so that a kernel can
//! be bound to it directly; the padding between tensors is zero and stays zero (its gradient is
//! zero). One flat buffer means one dispatch for the gradient norm, the clipping and the update.

use super::spec::{InputKind, ModelSpec};
use crate::error::{Error, Result};
use crate::ops::align_up;
use crate::rng::Rng;

/// How a parameter starts (PyTorch's defaults for the module it belongs to).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Uniform in ±bound: recurrent weights (1/√H), linear layers (1/√fan_in).
    Uniform(f32),
    /// Normal with this standard deviation: embeddings.
    Normal(f32),
    Zeros,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamEntry {
    pub name: String,
    pub shape: Vec<usize>,
    /// Offset in the flat buffer, a multiple of 64.
    pub offset: usize,
    pub init: Init,
}

impl ParamEntry {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Where one layer direction's tensors are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerParams {
    pub w_ih: usize,
    pub w_hh: usize,
    pub b_ih: usize,
    pub b_hh: usize,
    /// The projection `weight_hr` (`ModelSpec::proj`).
    pub w_hr: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamLayout {
    entries: Vec<ParamEntry>,
    total: usize,
}

/// `_reverse` for the backward direction, as in PyTorch.
pub fn direction_suffix(dir: usize) -> &'static str {
    if dir == 0 { "" } else { "_reverse" }
}

impl ParamLayout {
    /// The layout of a plain model: recurrent tensors under `rnn.`, the head under `head.`.
    pub fn new(spec: &ModelSpec) -> ParamLayout {
        let mut l = ParamLayout::empty();
        l.push_stack(spec, "");
        l
    }

    pub fn empty() -> ParamLayout {
        ParamLayout { entries: Vec::new(), total: 0 }
    }

    /// Appends the tensors of the stack `spec` under `prefix`: its `{prefix}embedding.weight`,
    /// `{prefix}rnn.weight_ih_l0`, ...,
    /// its learned or conditioned initial state, and `{prefix}head.*`.
    pub fn push_stack(&mut self, spec: &ModelSpec, prefix: &str) {
        if let InputKind::Embedding { vocab, dim } = spec.input {
            self.push(format!("{prefix}embedding.weight"), vec![vocab, dim], Init::Normal(1.0));
        }
        let g = spec.cell.gates();
        let h = spec.hidden;
        let k_rnn = Init::Uniform(1.0 / (h as f32).sqrt());
        for k in 0..spec.layers {
            for d in 0..spec.directions() {
                let sfx = direction_suffix(d);
                self.push(
                    format!("{prefix}rnn.weight_ih_l{k}{sfx}"),
                    vec![g * h, spec.layer_input(k)],
                    k_rnn,
                );
                self.push(format!("{prefix}rnn.weight_hh_l{k}{sfx}"), vec![g * h, spec.state_size()], k_rnn);
                self.push(format!("{prefix}rnn.bias_ih_l{k}{sfx}"), vec![g * h], k_rnn);
                self.push(format!("{prefix}rnn.bias_hh_l{k}{sfx}"), vec![g * h], k_rnn);
                if spec.proj > 0 {
                    self.push(format!("{prefix}rnn.weight_hr_l{k}{sfx}"), vec![spec.proj, h], k_rnn);
                }
            }
        }
        let states = spec.state_rows() * h;
        if spec.learn_initial_state {
            self.push(format!("{prefix}rnn.h0"), vec![spec.state_rows(), h], Init::Zeros);
            if spec.cell.has_cell_state() {
                self.push(format!("{prefix}rnn.c0"), vec![spec.state_rows(), h], Init::Zeros);
            }
        }
        if let Some(c) = spec.condition {
            let lin = Init::Uniform(1.0 / (c as f32).sqrt());
            self.push(format!("{prefix}init.weight"), vec![states, c], lin);
            self.push(format!("{prefix}init.bias"), vec![states], lin);
            if spec.cell.has_cell_state() {
                self.push(format!("{prefix}init_c.weight"), vec![states, c], lin);
                self.push(format!("{prefix}init_c.bias"), vec![states], lin);
            }
        }
        if let Some(head) = spec.head {
            let lin = Init::Uniform(1.0 / (spec.output_size() as f32).sqrt());
            self.push(format!("{prefix}head.weight"), vec![head.outputs, spec.output_size()], lin);
            self.push(format!("{prefix}head.bias"), vec![head.outputs], lin);
        }
    }

    /// Appends one tensor.
    pub fn push(&mut self, name: String, shape: Vec<usize>, init: Init) {
        let len: usize = shape.iter().product();
        let offset = self.total;
        // The padding after each tensor also lets kernels bind it as whole vec4s.
        self.total = align_up(offset + len);
        self.entries.push(ParamEntry { name, shape, offset, init });
    }

    /// Elements of the flat buffer, padding included.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Parameters a user would count (padding excluded).
    pub fn count(&self) -> usize {
        self.entries.iter().map(|e| e.len()).sum()
    }

    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    pub fn get(&self, name: &str) -> Result<&ParamEntry> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| Error::invalid("ParamLayout", format!("no parameter named {name}")))
    }

    /// One layer direction of the stack under `prefix`.
    pub fn layer(&self, prefix: &str, k: usize, dir: usize) -> Result<LayerParams> {
        let sfx = direction_suffix(dir);
        Ok(LayerParams {
            w_ih: self.get(&format!("{prefix}rnn.weight_ih_l{k}{sfx}"))?.offset,
            w_hh: self.get(&format!("{prefix}rnn.weight_hh_l{k}{sfx}"))?.offset,
            b_ih: self.get(&format!("{prefix}rnn.bias_ih_l{k}{sfx}"))?.offset,
            b_hh: self.get(&format!("{prefix}rnn.bias_hh_l{k}{sfx}"))?.offset,
            w_hr: self.get(&format!("{prefix}rnn.weight_hr_l{k}{sfx}")).ok().map(|e| e.offset),
        })
    }

    /// Every tensor drawn as its `Init` says, from `seed` (PyTorch's initialisation).
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = Rng::seed_from_u64(seed);
        let mut flat = vec![0.0f32; self.total];
        for e in &self.entries {
            for v in &mut flat[e.range()] {
                *v = match e.init {
                    Init::Uniform(b) => rng.uniform_in(-b as f64, b as f64) as f32,
                    Init::Normal(sd) => (rng.normal() * sd as f64) as f32,
                    Init::Zeros => 0.0,
                };
            }
        }
        flat
    }
}
