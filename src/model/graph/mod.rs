//! The recurrent network as a sequence of ops, written once for both devices (see
//! src/backend.rs): the forward pass over all steps, the loss, backpropagation through time and
//! the update. On the GPU these calls are recorded once per batch shape and replayed.
//!
//! Per layer and direction, the execution model of DESIGN.md:
//!   forward:  xw = X · W_ihᵀ for all T steps (one GEMM, or a column lookup for token input),
//!             then one fused step kernel per time step;
//!   backward: one fused step kernel per time step, then dW_ih, dW_hh and dX as one GEMM each
//!             over all steps, and the bias gradients as column sums.
//! The head and its loss run over all steps at once.
//!
//! The buffers and their views live here; the passes in their own files: workspace.rs (the
//! buffers of a batch shape), forward.rs (the forward pass and the loss), backward.rs.

mod backward;
mod forward;
mod workspace;

use super::params::ParamLayout;
use super::spec::{InputKind, Loss, ModelSpec, OutputMode};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ops::align_up;
use crate::ops::index_lists;
use crate::ops::{CopyCols, Dropout, Gather, Matmul, Op, Reduce, Step, StepBufs, StepMode, step_state};
use crate::real::Real;
use crate::rng::Rng;
use crate::train::TrainingState;
use crate::update::{Clip, Optimizer};

/// What a model keeps on its device for its whole life: parameters, their gradients, the
/// optimizer state and the step state.
pub struct Net<B: Backend> {
    pub params: B::Buf,
    pub grads: B::Buf,
    pub opt: Vec<B::Buf>,
    pub step_state: B::Buf,
}

impl<B: Backend> Net<B> {
    pub fn new(be: &mut B, layout: &ParamLayout, init: &[B::Elem]) -> Result<Self> {
        let params = be.alloc("parameters", layout.total())?;
        be.write(&params, init)?;
        Ok(Net {
            params,
            grads: be.alloc("gradients", layout.total())?,
            opt: Vec::new(),
            step_state: be.alloc("step state", step_state::LEN)?,
        })
    }

    /// The training state of a model trained with `optimizer`, `clip` and `rng`: its optimizer
    /// buffers and step state read back in f32, for a checkpoint.
    pub async fn training_state(
        &self,
        be: &mut B,
        optimizer: Optimizer,
        clip: Clip,
        rng: &Rng,
    ) -> Result<TrainingState> {
        let mut slots = Vec::with_capacity(self.opt.len());
        for b in self.opt.iter().chain([&self.step_state]) {
            slots.push(be.read(b).await?.into_iter().map(|v| v.to_f32()).collect::<Vec<f32>>());
        }
        let step_state = slots.pop().expect("the step state");
        Ok(TrainingState { optimizer, clip, slots, step_state, rng: rng.state() })
    }

    /// Restores the buffers of a training state (after `reset_optimizer` for its optimizer).
    pub fn write_training(&self, be: &mut B, slots: &[Vec<f32>], step: &[f32]) -> Result<()> {
        const OP: &str = "training state";
        if slots.len() != self.opt.len() {
            return Err(Error::shape(OP, "optimizer state buffers", &[slots.len()], &[self.opt.len()]));
        }
        for (buf, data) in self.opt.iter().zip(slots) {
            if data.len() != B::len(buf) {
                return Err(Error::shape(OP, "optimizer state", &[data.len()], &[B::len(buf)]));
            }
            crate::error::check_finite(OP, "optimizer state", data)?;
            be.write(buf, &data.iter().map(|&v| B::Elem::from_f32(v)).collect::<Vec<_>>())?;
        }
        if step.len() != step_state::LEN {
            return Err(Error::shape(OP, "step state", &[step.len()], &[step_state::LEN]));
        }
        crate::error::check_finite(OP, "step state", step)?;
        be.write(&self.step_state, &step.iter().map(|&v| B::Elem::from_f32(v)).collect::<Vec<_>>())
    }

    /// Allocates (zeroed) optimizer state for `opt`, replacing any.
    pub fn reset_optimizer(&mut self, be: &mut B, layout: &ParamLayout, opt: &Optimizer) -> Result<()> {
        self.opt = (0..opt.state_slots())
            .map(|_| be.alloc("optimizer state", layout.total()))
            .collect::<Result<_>>()?;
        Ok(())
    }
}

/// One direction of one layer.
pub struct DirWs<B: Backend> {
    /// The input projection of every step `[T, B, G*H]` (unused where `table` is given).
    xw: B::Buf,
    /// A token-input layer on a device whose steps read the projection from a table
    /// (`Backend::STEPS_READ_INPUT_TABLE`): every token's projection, `W_ihᵀ` `[V, G*H]`, and the
    /// list 0..V that gathers it (one list for the layer's directions).
    table: Option<(B::Buf, B::IBuf)>,
    states: B::Buf,
    cells: Option<B::Buf>,
    gates: Option<B::Buf>,
    dg: B::Buf,
    dgh: Option<B::Buf>,
    carry: B::Buf,
    /// Offset of slot 0: the reverse direction's h_prev rows (slots 1..=T) start aligned.
    state_base: usize,
    proj: Option<ProjWs<B>>,
    /// With weight drop (`ModelSpec::weight_drop`): W_hh after it, which the training pass's
    /// steps read, and the gradient reaching that copy, `[G*H, H or P]`.
    dropped: Option<(B::Buf, B::Buf)>,
}

/// A projected LSTM's buffers (`ModelSpec::proj`). Its recurrence runs on the unprojected state
/// `r = o ⊙ tanh(c)` (H values), which the step kernels carry as their hidden state, with the
/// recurrent weight `W_eff = W_hh · W_hr` `[G*H, H]`: `W_hh · h_prev = W_eff · r_prev`. So every
/// device runs it with the LSTM's own step kernels, and the projection `h = W_hr · r` is one GEMM
/// over all steps. The initial state `h0` has no r: the steps start from r = 0, and
/// `W_hh · h0` is added to the input projection of each sequence's first step (`first`).
struct ProjWs<B: Backend> {
    /// W_eff, formed each pass where the device's steps read it (`Graph::factors` none); steps
    /// that multiply by the factors are given it unwritten, for the shapes.
    w_eff: B::Buf,
    dw_eff: B::Buf,
    /// The steps' outputs r `[T, B, H]` (zero past each sequence's end), and their gradient.
    r: B::Buf,
    dr: B::Buf,
    /// This direction's outputs `h = r · W_hrᵀ` `[T, B, P]`, or their gradient, before they are
    /// placed in (or after they are taken from) the layer's `[T, B, D*P]`.
    h: B::Buf,
    /// The initial hidden state `[B, P]`, and `W_hh · h0` `[B, G*H]` (in backward: the gate
    /// gradients of each sequence's first step).
    h0: B::Buf,
    first: B::Buf,
    /// The final r `[B, H]` and h (or their gradients) `[B, P]`: the state buffers' views of one
    /// direction need not start where a kernel can bind them.
    last_r: B::Buf,
    last_h: B::Buf,
    /// Row `t * B + b` of each sequence's first step (t = 0 forward, len - 1 in reverse), and
    /// their scatter lists over `T*B` rows.
    first_rows: (B::IBuf, B::IBuf, B::IBuf),
}

pub struct LayerWs<B: Backend> {
    /// The layer's input after dropout (layers past the first, in training with dropout).
    x_drop: Option<B::Buf>,
    /// The gradient of the layer's input before dropout is undone.
    dx_drop: Option<B::Buf>,
    pub y: B::Buf,
    pub dy: B::Buf,
    dirs: Vec<DirWs<B>>,
}

pub struct HeadWs<B: Backend> {
    pub rows: usize,
    /// Many-to-one: each sequence's last valid output `[B, D*H]`, and its gradient.
    z: Option<(B::Buf, B::Buf)>,
    /// With output dropout: the head's input after dropout `[rows, D*H]`, and its gradient.
    dropped: Option<(B::Buf, B::Buf)>,
    pub logits: B::Buf,
    dlogits: B::Buf,
    loss_rows: B::Buf,
    pub classes: B::IBuf,
    pub values: B::Buf,
    pub weights: B::Buf,
    /// Many-to-one: the rows read (`[B]`), and their scatter lists over `T*B` rows.
    pub last: Option<(B::IBuf, B::IBuf, B::IBuf)>,
}

/// The buffers of one batch shape `[T, B]`. Inputs are written by the host before each run.
pub struct Workspace<B: Backend> {
    pub steps: usize,
    pub batch: usize,
    pub input: Option<B::Buf>,
    pub tokens: Option<(B::IBuf, B::IBuf, B::IBuf)>,
    pub lengths: B::IBuf,
    pub seeds: B::IBuf,
    /// Initial states `[L*D, B, H]` (hidden `[L*D, B, P]` with a projection): written by the host, gathered from learned parameters, or
    /// left holding the previous run's final states (truncated BPTT, streaming).
    pub h0: B::Buf,
    pub c0: Option<B::Buf>,
    /// Final states, and the gradients reaching them from outside the model (zero unless given).
    pub hn: B::Buf,
    pub cn: Option<B::Buf>,
    pub dhn: B::Buf,
    pub dcn: Option<B::Buf>,
    /// Gradients of the initial states and of a dense (or embedded) input.
    pub dh0: B::Buf,
    pub dc0: Option<B::Buf>,
    pub d_input: Option<B::Buf>,
    pub layers: Vec<LayerWs<B>>,
    pub head: Option<HeadWs<B>>,
    /// A model-made initial state (learned or conditioned): the buffers of `InitWs`.
    init: Option<InitWs<B>>,
    /// The per-sequence conditioning vectors `[B, C]`, written by the host.
    pub condition: Option<B::Buf>,
}

/// Buffers of a learned or conditioned initial state.
struct InitWs<B: Backend> {
    /// Learned: row `r / B` of `rnn.h0` for each row r of `[L*D, B, H]`, and the scatter lists of
    /// its gradient. Conditioned: row `b * L*D + l` of the `[B, L*D, H]` projection for row
    /// `l * B + b`, and likewise.
    rows: B::IBuf,
    starts: B::IBuf,
    list: B::IBuf,
    /// Conditioned: `tanh(v · init.weightᵀ + init.bias)` `[B, L*D*H]`, its gradient through the
    /// reorder, and through the tanh; then the same three for `init_c` (LSTM).
    h: Option<(B::Buf, B::Buf, B::Buf)>,
    c: Option<(B::Buf, B::Buf, B::Buf)>,
}

/// Options of a forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardOpts {
    /// Training: dropout on.
    pub train: bool,
    /// A backward pass follows: keep what it reads (the gates). Inference keeps nothing.
    pub keep: bool,
    /// Start from the model's own initial state, learned or conditioned (else from whatever `h0`
    /// holds).
    pub model_init: bool,
}

/// Options of a backward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackwardOpts {
    pub train: bool,
    /// Start from the loss (else from `dy` of the top layer, written by the host).
    pub from_loss: bool,
    /// Compute the gradient of a dense input.
    pub input_grad: bool,
    /// Compute the gradients of the initial states (always when they are learned).
    pub init_grad: bool,
    pub model_init: bool,
}

/// One stack (and its head) of a model, its tensors named under `prefix` (empty for a plain
/// model; `encoder.` and `decoder.` in a sequence-to-sequence model).
pub struct Graph<'a> {
    pub spec: &'a ModelSpec,
    pub layout: &'a ParamLayout,
    pub prefix: &'a str,
}

/// The sizes a pass over a workspace works with.
struct Dims {
    /// Steps T and batch B, and T·B rows.
    t_len: usize,
    b: usize,
    tb: usize,
    /// Values of a batch's cell states (B·H) and hidden states (B·H, or B·P with a projection).
    bh: usize,
    bs: usize,
    /// Gates G, hidden size H, and the layer's output width D·H (or D·P).
    g: usize,
    h: usize,
    dh: usize,
}

impl Graph<'_> {
    fn dims<B: Backend>(&self, ws: &Workspace<B>) -> Dims {
        let (spec, t_len, b) = (self.spec, ws.steps, ws.batch);
        Dims {
            t_len,
            b,
            tb: t_len * b,
            bh: b * spec.hidden,
            bs: b * spec.state_size(),
            g: spec.cell.gates(),
            h: spec.hidden,
            dh: spec.output_size(),
        }
    }

    /// The many-to-one head's lookup of each sequence's final outputs (`Batch::last_rows`): rows
    /// of H, one per sequence and direction.
    fn last_rows(&self, batch: usize) -> Gather {
        let h = self.spec.state_size();
        Gather { n: batch * self.spec.directions(), width: h, idx_stride: h, col_stride: 1 }
    }

    /// A projected direction's outputs `[T*B, P]` placed into the layer's `[T*B, D*P]` at this
    /// direction's columns, or (`take`) its columns of the layer's output gradient taken out.
    fn direction_cols(&self, tb: usize, dir: usize, take: bool) -> CopyCols {
        let p = self.spec.proj;
        CopyCols::columns(tb, self.spec.output_size(), (p, dir * p), take)
    }

    /// The head's input dropout: its own salt, past every layer's.
    fn output_dropout(&self) -> Dropout {
        Dropout { prob: self.spec.output_dropout, salt: self.spec.layers as u32 }
    }

    fn param<B: Backend>(&self, be: &B, net: &Net<B>, name: &str) -> Result<B::Buf> {
        let e = self.layout.get(&format!("{}{name}", self.prefix))?;
        be.view(&net.params, e.offset, e.len())
    }

    fn grad<B: Backend>(&self, be: &B, net: &Net<B>, name: &str) -> Result<B::Buf> {
        let e = self.layout.get(&format!("{}{name}", self.prefix))?;
        be.view(&net.grads, e.offset, e.len())
    }

    /// The slots step `t` reads and writes, and the slot holding the first and the final state.
    fn slots(&self, dir: usize, t: usize) -> (usize, usize) {
        if dir == 0 { (t, t + 1) } else { (t + 1, t) }
    }

    fn first_slot(&self, dir: usize, steps: usize) -> usize {
        if dir == 0 { 0 } else { steps }
    }

    fn final_slot(&self, dir: usize, steps: usize) -> usize {
        if dir == 0 { steps } else { 0 }
    }

    /// Time index of the `s`-th step processed forward in direction `dir`.
    fn time(&self, dir: usize, s: usize, steps: usize) -> usize {
        if dir == 0 { s } else { steps - 1 - s }
    }

    fn base_step(&self, ws_batch: usize, dir: usize, dws_base: usize, bias_hh: usize) -> Step {
        Step {
            t: 0,
            batch: ws_batch,
            hidden: self.spec.hidden,
            in_slot: 0,
            out_slot: 0,
            state_base: dws_base,
            out_stride: self.spec.output_size(),
            out_col: dir * self.spec.hidden,
            bias_hh,
            next_t: 0,
            mode: StepMode::First,
        }
    }

    /// Views of one layer direction's weights: W_ih, W_hh (padded to whole vec4s for the step
    /// kernels, which read W_eff instead with a projection), the bias pair (b_ih, then b_hh at the
    /// returned offset), W_hr, and their gradients. In training with weight drop, W_hh and its
    /// gradient are the direction's dropped copies (`DirWs::dropped`), and `weight_drop` holds
    /// the parameter's own.
    fn weights<B: Backend>(
        &self,
        be: &B,
        net: &Net<B>,
        (k, d): (usize, usize),
        dw: &DirWs<B>,
        train: bool,
    ) -> Result<LayerViews<B>> {
        let p = self.layout.layer(self.prefix, k, d)?;
        let g = self.spec.cell.gates();
        let h = self.spec.hidden;
        let i = self.spec.layer_input(k);
        let bias_hh = p.b_hh - p.b_ih;
        let s = self.spec.state_size();
        let hh_len = if p.w_hr.is_some() { g * h * s } else { (g * h * h).div_ceil(4) * 4 };
        let hr = |buf: &B::Buf| p.w_hr.map(|o| be.view(buf, o, s * h)).transpose();
        let w_hh = be.view(&net.params, p.w_hh, hh_len)?;
        let dw_hh = be.view(&net.grads, p.w_hh, g * h * s)?;
        let (w_hh, dw_hh, weight_drop) = match (&dw.dropped, train && self.spec.weight_drop > 0.0) {
            (Some((w, dw)), true) => {
                let salt = (self.spec.layers + 1 + k * self.spec.directions() + d) as u32;
                let p = Dropout { prob: self.spec.weight_drop, salt };
                (be.view(w, 0, hh_len)?, dw.clone(), Some(WeightDrop { w_hh, dw_hh, p }))
            }
            (None, true) => return Err(Error::invalid("graph", "no weight drop buffers")),
            (_, false) => (w_hh, dw_hh, None),
        };
        Ok(LayerViews {
            w_hr: hr(&net.params)?,
            dw_hr: hr(&net.grads)?,
            w_ih: be.view(&net.params, p.w_ih, g * h * i)?,
            w_hh,
            bias: be.view(&net.params, p.b_ih, bias_hh + g * h)?,
            bias_hh,
            dw_ih: be.view(&net.grads, p.w_ih, g * h * i)?,
            dw_hh,
            db_ih: be.view(&net.grads, p.b_ih, g * h)?,
            db_hh: be.view(&net.grads, p.b_hh, g * h)?,
            weight_drop,
        })
    }

    /// Records the weight drop of a layer direction's W_hh into the copy its steps read.
    fn drop_weights<B: Backend>(&self, be: &mut B, w: &LayerViews<B>, seeds: &B::IBuf) -> Result<()> {
        match &w.weight_drop {
            Some(wd) => be.run(Op::Dropout { out: &w.w_hh, x: &wd.w_hh, seeds, p: wd.p, backward: false }),
            None => Ok(()),
        }
    }

    /// Records the gradient of W_hh through its weight drop: the copy's gradient, accumulated
    /// over the backward pass from zero, masked into the parameter's.
    fn drop_weights_backward<B: Backend>(
        &self,
        be: &mut B,
        w: &LayerViews<B>,
        seeds: &B::IBuf,
    ) -> Result<()> {
        match &w.weight_drop {
            Some(wd) => be.run(Op::Dropout { out: &wd.dw_hh, x: &w.dw_hh, seeds, p: wd.p, backward: true }),
            None => Ok(()),
        }
    }
}

/// A projected layer direction's buffers and its W_hr (and gradient) together.
struct Projected<'a, B: Backend> {
    ws: &'a ProjWs<B>,
    w_hr: &'a B::Buf,
    dw_hr: &'a B::Buf,
}

impl Graph<'_> {
    /// A layer direction's projection, or none for an unprojected layer: its buffers and its
    /// weights come from the same spec, so they agree or the engine has a bug.
    fn projection<'a, B: Backend>(
        &self,
        dw: &'a DirWs<B>,
        w: &'a LayerViews<B>,
    ) -> Result<Option<Projected<'a, B>>> {
        match (&dw.proj, &w.w_hr, &w.dw_hr) {
            (None, None, None) => Ok(None),
            (Some(ws), Some(w_hr), Some(dw_hr)) => Ok(Some(Projected { ws, w_hr, dw_hr })),
            _ => Err(Error::invalid("graph", "a layer's projection buffers and its weight_hr disagree")),
        }
    }
}

impl Graph<'_> {
    /// The factors W_hh and W_hr that a projected layer's steps multiply by, where the device
    /// takes them for this shape (`Backend::steps_take_factors`); none where the steps read
    /// their product W_eff.
    fn factors<'a, B: Backend>(
        &self,
        w: &'a LayerViews<B>,
        pj: &Projected<'a, B>,
    ) -> Option<(&'a B::Buf, &'a B::Buf)> {
        let s = self.spec;
        B::steps_take_factors(s.cell.gates(), s.hidden, s.proj).then_some((&w.w_hh, pj.w_hr))
    }
}

struct LayerViews<B: Backend> {
    w_ih: B::Buf,
    w_hh: B::Buf,
    bias: B::Buf,
    bias_hh: usize,
    dw_ih: B::Buf,
    dw_hh: B::Buf,
    db_ih: B::Buf,
    db_hh: B::Buf,
    w_hr: Option<B::Buf>,
    dw_hr: Option<B::Buf>,
    weight_drop: Option<WeightDrop<B>>,
}

/// A weight-dropped W_hh's parameter and gradient views, and its mask.
struct WeightDrop<B: Backend> {
    w_hh: B::Buf,
    dw_hh: B::Buf,
    p: Dropout,
}
