//! What a model is: cell, sizes, stacking, directions, head. Everything else (parameter names and
//! shapes, buffer sizes) is derived from this.

pub use crate::cell::Cell;
use crate::error::{Error, Result, check_nonzero};

/// What the first layer reads at each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// `size` features per step: input `[T, B, size]` f32.
    Dense(usize),
    /// Token ids below `vocab` per step: input `[T, B]`. The first layer reads the id as a one-hot
    /// vector, which is a column lookup of `weight_ih_l0` `[G*H, vocab]`; no one-hot is built.
    Tokens(usize),
    /// Token ids below `vocab` per step, `[T, B]`, through a learned table `embedding.weight`
    /// `[vocab, dim]` (PyTorch's `nn.Embedding`) whose rows the first layer reads.
    Embedding { vocab: usize, dim: usize },
}

impl InputKind {
    /// Columns of `weight_ih_l0`: the features, the vocabulary, or the embedding's width.
    pub fn size(self) -> usize {
        match self {
            InputKind::Dense(n) | InputKind::Tokens(n) | InputKind::Embedding { dim: n, .. } => n,
        }
    }

    /// The vocabulary of token input.
    pub fn vocab(self) -> Option<usize> {
        match self {
            InputKind::Dense(_) => None,
            InputKind::Tokens(v) | InputKind::Embedding { vocab: v, .. } => Some(v),
        }
    }
}

/// Where the head reads the recurrent outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    /// At every step: targets `[T, B]` (classes) or `[T, B, O]` (values).
    ManyToMany,
    /// On each sequence's final outputs: the forward direction's at its last valid step, the
    /// reverse direction's at step 0 (where it ends). Targets `[B]` or `[B, O]`.
    ManyToOne,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Softmax cross-entropy over O classes, the mean over counted positions.
    CrossEntropy,
    /// Mean squared error over O values, the mean over counted positions and values.
    Mse,
}

/// The linear output layer `head.weight [O, D*H]`, `head.bias [O]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub outputs: usize,
    pub mode: OutputMode,
    pub loss: Loss,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub cell: Cell,
    pub input: InputKind,
    pub hidden: usize,
    /// The LSTM's projection size P (PyTorch's `proj_size`), 0 for none: the hidden state is
    /// `h = W_hr · (o ⊙ tanh(c))` of P < H values, and what the layer outputs and feeds back.
    /// Wherever a shape names the hidden state (`h0`, `h_n`, outputs `D*H`), read P for H then;
    /// the cell state keeps H.
    pub proj: usize,
    pub layers: usize,
    pub bidirectional: bool,
    /// Dropout on the outputs of every layer but the last, in training (PyTorch's `dropout`).
    pub dropout: f32,
    /// Dropout on the head's input (the top layer's outputs), in training: what a PyTorch model
    /// does with an `nn.Dropout` between its `nn.LSTM` and its `nn.Linear`.
    pub output_dropout: f32,
    /// DropConnect on the recurrent weights in training (AWD-LSTM's weight drop): each training
    /// pass zeroes this fraction of every W_hh's elements, the same ones at every time step, and
    /// scales the rest by `1 / (1 - p)`. Regularizes the recurrence itself, where dropout between
    /// the layers cannot reach. Inference uses W_hh as it is.
    pub weight_drop: f32,
    /// Learn the initial states `rnn.h0` (and `rnn.c0`) `[L*D, H]` instead of starting from zeros.
    pub learn_initial_state: bool,
    /// Condition the initial state on a per-sequence vector of this size (a class, features):
    /// `h0 = tanh(init.weight · v + init.bias)` (and `c0` through `init_c.*` for an LSTM),
    /// learned end to end. Batches then carry the vectors.
    pub condition: Option<usize>,
    pub head: Option<Head>,
}

/// The largest hidden, input, vocabulary, head or condition size.
pub const MAX_SIZE: usize = 1 << 24;
/// The deepest stack.
pub const MAX_LAYERS: usize = 1024;
/// The most elements of one weight, and of all parameters: both inside u32 indexing on the GPU.
const MAX_TENSOR: u64 = 1 << 31;
const MAX_PARAMS: u64 = 1 << 31;

fn check_at_most(op: &'static str, what: &str, v: usize, max: usize) -> Result<()> {
    if v > max {
        return Err(Error::range(op, what, v, format!("at most {max}")));
    }
    Ok(())
}

impl ModelSpec {
    /// A one-layer, one-direction model without head; adjust the fields from there.
    pub fn new(cell: Cell, input: InputKind, hidden: usize) -> ModelSpec {
        ModelSpec {
            cell,
            input,
            hidden,
            proj: 0,
            layers: 1,
            bidirectional: false,
            dropout: 0.0,
            output_dropout: 0.0,
            weight_drop: 0.0,
            learn_initial_state: false,
            condition: None,
            head: None,
        }
    }

    /// A character model: token input, a softmax head over the same vocabulary at every step.
    pub fn char_model(cell: Cell, vocab: usize, hidden: usize, layers: usize) -> ModelSpec {
        ModelSpec {
            layers,
            head: Some(Head { outputs: vocab, mode: OutputMode::ManyToMany, loss: Loss::CrossEntropy }),
            ..ModelSpec::new(cell, InputKind::Tokens(vocab), hidden)
        }
    }

    pub fn directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// Values of the hidden state `h`: P with a projection, else H (the cell state has H).
    pub fn state_size(&self) -> usize {
        if self.proj > 0 { self.proj } else { self.hidden }
    }

    /// Columns of each layer's output, `D*H` (`D*P` with a projection).
    pub fn output_size(&self) -> usize {
        self.directions() * self.state_size()
    }

    /// Columns of the input of layer `k`.
    pub fn layer_input(&self, k: usize) -> usize {
        if k == 0 { self.input.size() } else { self.output_size() }
    }

    /// Rows of the initial and final states `[L*D, B, H]`.
    pub fn state_rows(&self) -> usize {
        self.layers * self.directions()
    }

    /// Parameters of the model (the recurrent stack, its learned or conditioned initial state,
    /// and the head), counted in u64 so that an absurd spec cannot overflow the count.
    pub fn param_count(&self) -> u64 {
        let (g, h, d) = (self.cell.gates() as u64, self.hidden as u64, self.directions() as u64);
        let (hs, p) = (self.state_size() as u64, self.proj as u64);
        let mut n = match self.input {
            InputKind::Embedding { vocab, dim } => vocab as u64 * dim as u64,
            _ => 0,
        };
        for k in 0..self.layers.min(MAX_LAYERS + 1) {
            let input = self.layer_input(k) as u64;
            n = n.saturating_add(d.saturating_mul(g * h * (input + hs) + 2 * g * h + p * h));
        }
        let states = if self.cell.has_cell_state() { 2 } else { 1 };
        let rows = self.state_rows() as u64;
        if self.learn_initial_state {
            n = n.saturating_add(states * rows * h);
        }
        if let Some(c) = self.condition {
            n = n.saturating_add(states * rows * h * (c as u64 + 1));
        }
        if let Some(head) = self.head {
            n = n.saturating_add(head.outputs as u64 * (self.output_size() as u64 + 1));
        }
        n
    }

    pub fn validate(&self) -> Result<()> {
        const OP: &str = "ModelSpec";
        check_nonzero(OP, "hidden", self.hidden)?;
        check_nonzero(OP, "layers", self.layers)?;
        check_nonzero(OP, "input size", self.input.size())?;
        if let Some(v) = self.input.vocab() {
            check_nonzero(OP, "vocabulary", v)?;
        }
        let rates = [
            ("dropout", self.dropout),
            ("output dropout", self.output_dropout),
            ("weight drop", self.weight_drop),
        ];
        for (what, p) in rates {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::range(OP, what, p, "in [0, 1)"));
            }
        }
        if self.output_dropout > 0.0 && self.head.is_none() {
            return Err(Error::invalid(
                OP,
                "output dropout applies to a head's input; the model has no head",
            ));
        }
        if let Some(h) = self.head {
            check_nonzero(OP, "head outputs", h.outputs)?;
        }
        if self.proj > 0 {
            if self.cell != Cell::Lstm {
                return Err(Error::invalid(
                    OP,
                    "a projection (proj_size) is for the LSTM only, as in PyTorch",
                ));
            }
            if self.proj >= self.hidden {
                return Err(Error::range(
                    OP,
                    "proj_size",
                    self.proj,
                    format!("below hidden = {}", self.hidden),
                ));
            }
            if self.learn_initial_state || self.condition.is_some() {
                return Err(Error::invalid(
                    OP,
                    "a learned or conditioned initial state is not supported with a projection yet",
                ));
            }
        }
        if let Some(c) = self.condition {
            check_nonzero(OP, "condition size", c)?;
            if self.learn_initial_state {
                return Err(Error::invalid(
                    OP,
                    "an initial state is either learned or conditioned, not both",
                ));
            }
        }
        // Bound each size before any product of them, so that no product can overflow, and the
        // whole model to what u32 indexing on the GPU (and any real machine) can hold.
        check_at_most(OP, "hidden", self.hidden, MAX_SIZE)?;
        check_at_most(OP, "input size", self.input.size(), MAX_SIZE)?;
        check_at_most(OP, "vocabulary", self.input.vocab().unwrap_or(0), MAX_SIZE)?;
        check_at_most(OP, "layers", self.layers, MAX_LAYERS)?;
        if let Some(h) = self.head {
            check_at_most(OP, "head outputs", h.outputs, MAX_SIZE)?;
        }
        if let Some(c) = self.condition {
            check_at_most(OP, "condition size", c, MAX_SIZE)?;
        }
        let table = match self.input {
            InputKind::Embedding { vocab, dim } => vocab as u64 * dim as u64,
            _ => 0,
        };
        // A projected layer's steps multiply by W_hh · W_hr, `[G*H, H]`.
        let widest =
            self.input.size().max(self.output_size()).max(if self.proj > 0 { self.hidden } else { 0 });
        let biggest = (self.cell.gates() as u64 * self.hidden as u64 * widest as u64).max(table);
        if biggest > MAX_TENSOR {
            return Err(Error::range(
                OP,
                "a weight's element count",
                biggest,
                format!("at most {MAX_TENSOR}"),
            ));
        }
        let params = self.param_count();
        if params > MAX_PARAMS {
            return Err(Error::range(OP, "the parameter count", params, format!("at most {MAX_PARAMS}")));
        }
        Ok(())
    }
}
