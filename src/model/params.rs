//! The parameters of a model: PyTorch's names and shapes, one flat buffer.
//!
//! Every tensor starts on a 64-element (256-byte) boundary of the flat buffer, so that a kernel can
//! be bound to it directly; the padding between tensors is zero and stays zero (its gradient is
//! zero). One flat buffer means one dispatch for the gradient norm, the clipping and the update.

use super::spec::ModelSpec;
use crate::error::{Error, Result};
use crate::gpu::tensor::align_up;
use crate::rng::Rng;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamEntry {
    pub name: String,
    pub shape: Vec<usize>,
    /// Offset in the flat buffer, a multiple of 64.
    pub offset: usize,
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamLayout {
    entries: Vec<ParamEntry>,
    total: usize,
}

/// `_reverse` for the backward direction, as in PyTorch.
pub fn direction_suffix(dir: usize) -> &'static str {
    if dir == 0 { "" } else { "_reverse" }
}

impl ParamLayout {
    /// The layout of `spec`: recurrent tensors under `rnn.`, the head under `head.`.
    pub fn new(spec: &ModelSpec) -> ParamLayout {
        let mut l = ParamLayout { entries: Vec::new(), total: 0 };
        let g = spec.cell.gates();
        let h = spec.hidden;
        for k in 0..spec.layers {
            for d in 0..spec.directions() {
                let sfx = direction_suffix(d);
                l.push(format!("rnn.weight_ih_l{k}{sfx}"), vec![g * h, spec.layer_input(k)]);
                l.push(format!("rnn.weight_hh_l{k}{sfx}"), vec![g * h, h]);
                l.push(format!("rnn.bias_ih_l{k}{sfx}"), vec![g * h]);
                l.push(format!("rnn.bias_hh_l{k}{sfx}"), vec![g * h]);
            }
        }
        if spec.learn_initial_state {
            l.push("rnn.h0".into(), vec![spec.state_rows(), h]);
            if spec.cell.has_cell_state() {
                l.push("rnn.c0".into(), vec![spec.state_rows(), h]);
            }
        }
        if let Some(head) = spec.head {
            l.push("head.weight".into(), vec![head.outputs, spec.output_size()]);
            l.push("head.bias".into(), vec![head.outputs]);
        }
        l
    }

    fn push(&mut self, name: String, shape: Vec<usize>) {
        let len: usize = shape.iter().product();
        let offset = self.total;
        // The padding after each tensor also lets kernels bind it as whole vec4s.
        self.total = align_up(offset + len);
        self.entries.push(ParamEntry { name, shape, offset });
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

    pub fn layer(&self, k: usize, dir: usize) -> Result<LayerParams> {
        let sfx = direction_suffix(dir);
        Ok(LayerParams {
            w_ih: self.get(&format!("rnn.weight_ih_l{k}{sfx}"))?.offset,
            w_hh: self.get(&format!("rnn.weight_hh_l{k}{sfx}"))?.offset,
            b_ih: self.get(&format!("rnn.bias_ih_l{k}{sfx}"))?.offset,
            b_hh: self.get(&format!("rnn.bias_hh_l{k}{sfx}"))?.offset,
        })
    }

    /// PyTorch's initialisation from a seed: every recurrent tensor uniform in ±1/√H; the head like
    /// `nn.Linear` (uniform in ±1/√fan_in); learned initial states zero.
    pub fn init(&self, spec: &ModelSpec, seed: u64) -> Vec<f32> {
        let mut rng = Rng::seed_from_u64(seed);
        let mut flat = vec![0.0f32; self.total];
        let k_rnn = 1.0 / (spec.hidden as f64).sqrt();
        let k_head = 1.0 / (spec.output_size() as f64).sqrt();
        for e in &self.entries {
            let bound = if e.name.starts_with("rnn.h0") || e.name.starts_with("rnn.c0") {
                0.0
            } else if e.name.starts_with("head.") {
                k_head
            } else {
                k_rnn
            };
            for v in &mut flat[e.range()] {
                *v = rng.uniform_in(-bound, bound) as f32;
            }
        }
        flat
    }
}
