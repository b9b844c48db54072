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

use super::params::ParamLayout;
use super::spec::{InputKind, Loss, ModelSpec, OutputMode};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ops::align_up;
use crate::ops::index_lists;
use crate::ops::{Dropout, Gather, Matmul, Op, Reduce, Step, StepBufs, StepMode, step_state};
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
    pub fn training_state(
        &self,
        be: &mut B,
        optimizer: Optimizer,
        clip: Clip,
        rng: &Rng,
    ) -> Result<TrainingState> {
        let mut read =
            |b: &B::Buf| -> Result<Vec<f32>> { Ok(be.read(b)?.into_iter().map(|v| v.to_f32()).collect()) };
        let slots = self.opt.iter().map(&mut read).collect::<Result<_>>()?;
        Ok(TrainingState { optimizer, clip, slots, step_state: read(&self.step_state)?, rng: rng.state() })
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
    xw: B::Buf,
    states: B::Buf,
    cells: Option<B::Buf>,
    gates: Option<B::Buf>,
    dg: B::Buf,
    dgh: Option<B::Buf>,
    carry: B::Buf,
    /// Offset of slot 0: the reverse direction's h_prev rows (slots 1..=T) start aligned.
    state_base: usize,
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
    /// Initial states `[L*D, B, H]`: written by the host, gathered from learned parameters, or
    /// left holding the previous run's final states (truncated BPTT, streaming).
    pub h0: B::Buf,
    pub c0: Option<B::Buf>,
    /// Final states, and the gradients reaching them from outside the model (zero unless given).
    pub hn: B::Buf,
    pub cn: Option<B::Buf>,
    pub dhn: B::Buf,
    pub dcn: Option<B::Buf>,
    /// Gradients of the initial states and of a dense input.
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

impl Graph<'_> {
    fn bh(&self, batch: usize) -> usize {
        batch * self.spec.hidden
    }

    /// The head's input dropout: its own salt, past every layer's.
    fn output_dropout(&self) -> Dropout {
        Dropout { prob: self.spec.output_dropout, salt: self.spec.layers as u32 }
    }

    pub fn workspace<B: Backend>(&self, be: &mut B, steps: usize, batch: usize) -> Result<Workspace<B>> {
        let spec = self.spec;
        let (t, b, h) = (steps, batch, spec.hidden);
        let tb = t * b;
        let g = spec.cell.gates();
        let dh = spec.output_size();
        let lstm = spec.cell.has_cell_state();
        let states_len = spec.state_rows() * b * h;
        let opt = |be: &mut B, on: bool, what: &str, n: usize| -> Result<Option<B::Buf>> {
            if on { be.alloc(what, n).map(Some) } else { Ok(None) }
        };

        let mut layers = Vec::with_capacity(spec.layers);
        for k in 0..spec.layers {
            let dropped = k > 0 && spec.dropout > 0.0;
            let mut dirs = Vec::new();
            for d in 0..spec.directions() {
                let state_base = if d == 1 { align_up(b * h) - b * h } else { 0 };
                let state_len = (state_base + (t + 1) * b * h).div_ceil(4) * 4;
                dirs.push(DirWs {
                    xw: be.alloc("input projection", tb * g * h)?,
                    states: be.alloc("hidden states", state_len)?,
                    cells: opt(be, lstm, "cell states", state_len)?,
                    gates: opt(be, spec.cell.saved() > 0, "gates", tb * spec.cell.saved() * h)?,
                    // Bound as vec4 arrays by the step kernels: whole vec4s.
                    dg: be.alloc("gate gradients", (tb * g * h).div_ceil(4) * 4)?,
                    dgh: opt(
                        be,
                        spec.cell.splits_recurrent_gradient(),
                        "recurrent gate gradients",
                        (tb * g * h).div_ceil(4) * 4,
                    )?,
                    carry: be.alloc("carried gradients", 2 * b * h)?,
                    state_base,
                });
            }
            layers.push(LayerWs {
                x_drop: opt(be, dropped, "dropout output", tb * dh)?,
                dx_drop: opt(be, dropped, "dropout gradient", tb * dh)?,
                y: be.alloc("layer output", tb * dh)?,
                dy: be.alloc("layer output gradient", tb * dh)?,
                dirs,
            });
        }

        let head = match spec.head {
            None => None,
            Some(head) => {
                let rows = if head.mode == OutputMode::ManyToMany { tb } else { b };
                let o = head.outputs;
                Some(HeadWs {
                    rows,
                    z: if head.mode == OutputMode::ManyToOne {
                        Some((be.alloc("last outputs", b * dh)?, be.alloc("last outputs gradient", b * dh)?))
                    } else {
                        None
                    },
                    dropped: match spec.output_dropout > 0.0 {
                        true => Some((
                            be.alloc("head input after dropout", rows * dh)?,
                            be.alloc("head input after dropout, gradient", rows * dh)?,
                        )),
                        false => None,
                    },
                    logits: be.alloc("logits", rows * o)?,
                    dlogits: be.alloc("logits gradient", rows * o)?,
                    loss_rows: be.alloc("row losses", rows)?,
                    classes: be.alloc_u32("class targets", rows)?,
                    values: be.alloc("value targets", rows * o)?,
                    weights: be.alloc("loss weights", rows)?,
                    last: if head.mode == OutputMode::ManyToOne {
                        Some((
                            be.alloc_u32("last rows", b)?,
                            be.alloc_u32("last starts", tb + 1)?,
                            be.alloc_u32("last list", b)?,
                        ))
                    } else {
                        None
                    },
                })
            }
        };

        let (input, tokens) = match spec.input {
            InputKind::Dense(i) => (Some(be.alloc("input", tb * i)?), None),
            InputKind::Tokens(v) => (
                None,
                Some((
                    be.alloc_u32("tokens", tb)?,
                    be.alloc_u32("token starts", v + 1)?,
                    be.alloc_u32("token list", tb)?,
                )),
            ),
        };
        let rows = spec.state_rows();
        let init = if spec.learn_initial_state || spec.condition.is_some() {
            let learned = spec.learn_initial_state;
            // Learned: row r of [L*D, B, H] reads row r / B of rnn.h0 [L*D, H]. Conditioned: row
            // l * B + b reads row b * L*D + l of the projection [B, L*D, H].
            let idx: Vec<u32> =
                (0..rows * b).map(|r| if learned { r / b } else { (r % b) * rows + r / b } as u32).collect();
            let table_rows = if learned { rows } else { rows * b };
            let (starts, list) = index_lists(&idx, table_rows);
            let bufs = (
                be.alloc_u32("initial state rows", idx.len())?,
                be.alloc_u32("initial state starts", starts.len())?,
                be.alloc_u32("initial state list", list.len())?,
            );
            be.write_u32(&bufs.0, &idx)?;
            be.write_u32(&bufs.1, &starts)?;
            be.write_u32(&bufs.2, &list)?;
            let proj = |be: &mut B, on: bool| -> Result<Option<(B::Buf, B::Buf, B::Buf)>> {
                if !on {
                    return Ok(None);
                }
                Ok(Some((
                    be.alloc("conditioned state", states_len)?,
                    be.alloc("conditioned state gradient", states_len)?,
                    be.alloc("conditioned state pre-activation gradient", states_len)?,
                )))
            };
            let conditioned = spec.condition.is_some();
            Some(InitWs {
                rows: bufs.0,
                starts: bufs.1,
                list: bufs.2,
                h: proj(be, conditioned)?,
                c: proj(be, conditioned && lstm)?,
            })
        } else {
            None
        };
        Ok(Workspace {
            steps,
            batch,
            input,
            tokens,
            lengths: be.alloc_u32("lengths", b)?,
            seeds: be.alloc_u32("dropout seed", 1)?,
            h0: be.alloc("initial hidden state", states_len)?,
            c0: opt(be, lstm, "initial cell state", states_len)?,
            hn: be.alloc("final hidden state", states_len)?,
            cn: opt(be, lstm, "final cell state", states_len)?,
            dhn: be.alloc("final hidden state gradient", states_len)?,
            dcn: opt(be, lstm, "final cell state gradient", states_len)?,
            dh0: be.alloc("initial hidden state gradient", states_len)?,
            dc0: opt(be, lstm, "initial cell state gradient", states_len)?,
            d_input: match spec.input {
                InputKind::Dense(i) => Some(be.alloc("input gradient", tb * i)?),
                InputKind::Tokens(_) => None,
            },
            layers,
            head,
            init,
            condition: match spec.condition {
                Some(c) => Some(be.alloc("condition", b * c)?),
                None => None,
            },
        })
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

    /// Views of one layer direction's weights: W_ih, W_hh (padded to whole vec4s), the bias pair
    /// (b_ih, then b_hh at the returned offset), and their gradients.
    fn weights<B: Backend>(&self, be: &B, net: &Net<B>, k: usize, d: usize) -> Result<LayerViews<B>> {
        let p = self.layout.layer(self.prefix, k, d)?;
        let g = self.spec.cell.gates();
        let h = self.spec.hidden;
        let i = self.spec.layer_input(k);
        let bias_hh = p.b_hh - p.b_ih;
        let hh_len = (g * h * h).div_ceil(4) * 4;
        Ok(LayerViews {
            w_ih: be.view(&net.params, p.w_ih, g * h * i)?,
            w_hh: be.view(&net.params, p.w_hh, hh_len)?,
            bias: be.view(&net.params, p.b_ih, bias_hh + g * h)?,
            bias_hh,
            dw_ih: be.view(&net.grads, p.w_ih, g * h * i)?,
            dw_hh: be.view(&net.grads, p.w_hh, g * h * h)?,
            db_ih: be.view(&net.grads, p.b_ih, g * h)?,
            db_hh: be.view(&net.grads, p.b_hh, g * h)?,
        })
    }

    /// Records the forward pass: every layer, then the head's logits.
    pub fn forward<B: Backend>(
        &self,
        be: &mut B,
        net: &Net<B>,
        ws: &Workspace<B>,
        o: ForwardOpts,
    ) -> Result<()> {
        let spec = self.spec;
        let (t_len, b) = (ws.steps, ws.batch);
        let tb = t_len * b;
        let bh = self.bh(b);
        let (g, h) = (spec.cell.gates(), spec.hidden);
        let dh = spec.output_size();

        if o.model_init {
            self.init_forward(be, net, ws)?;
        }

        for k in 0..spec.layers {
            let lw = &ws.layers[k];
            // The layer's input: the batch, or the layer below (after dropout in training).
            let x: Option<B::Buf> = if k == 0 {
                ws.input.clone()
            } else if o.train && spec.dropout > 0.0 {
                let xd = lw.x_drop.as_ref().ok_or_else(|| Error::invalid("forward", "no dropout buffer"))?;
                be.run(Op::Dropout {
                    out: xd,
                    x: &ws.layers[k - 1].y,
                    seeds: &ws.seeds,
                    p: Dropout { prob: spec.dropout, salt: k as u32 },
                    backward: false,
                })?;
                Some(xd.clone())
            } else {
                Some(ws.layers[k - 1].y.clone())
            };
            let i = spec.layer_input(k);
            for (d, dw) in lw.dirs.iter().enumerate() {
                let w = self.weights(be, net, k, d)?;
                match (&x, &ws.tokens) {
                    (Some(x), _) => be.run(Op::Matmul {
                        c: &dw.xw,
                        a: x,
                        b: &w.w_ih,
                        p: Matmul::new(tb, g * h, i).trans_b(),
                        bias: None,
                    })?,
                    (None, Some((tokens, _, _))) => {
                        let p = Gather { n: tb, width: g * h, idx_stride: 1, col_stride: i };
                        be.run(Op::Gather { out: &dw.xw, table: &w.w_ih, idx: tokens, p })?;
                    }
                    (None, None) => return Err(Error::invalid("forward", "the workspace has no input")),
                }
                let chunk = (k * spec.directions() + d) * bh;
                let first = dw.state_base + self.first_slot(d, t_len) * bh;
                be.run(Op::Copy {
                    src: &be.view(&ws.h0, chunk, bh)?,
                    dst: &be.view(&dw.states, first, bh)?,
                })?;
                if let (Some(c0), Some(cells)) = (&ws.c0, &dw.cells) {
                    be.run(Op::Copy { src: &be.view(c0, chunk, bh)?, dst: &be.view(cells, first, bh)? })?;
                }
                let base = self.base_step(b, d, dw.state_base, w.bias_hh);
                let bufs = StepBufs::<B::Buf, B::IBuf> {
                    states: &dw.states,
                    cells: dw.cells.as_ref(),
                    gates: if o.keep { dw.gates.as_ref() } else { None },
                    y: &lw.y,
                    xw: &dw.xw,
                    w_hh: &w.w_hh,
                    bias: &w.bias,
                    lengths: &ws.lengths,
                    dy: None,
                    dg: None,
                    dgh: None,
                    carry: None,
                };
                for s in 0..t_len {
                    let t = self.time(d, s, t_len);
                    let (in_slot, out_slot) = self.slots(d, t);
                    be.run(Op::Step {
                        cell: spec.cell,
                        bufs,
                        s: Step { t, in_slot, out_slot, ..base },
                        backward: false,
                    })?;
                }
                let last = dw.state_base + self.final_slot(d, t_len) * bh;
                be.run(Op::Copy { src: &be.view(&dw.states, last, bh)?, dst: &be.view(&ws.hn, chunk, bh)? })?;
                if let (Some(cn), Some(cells)) = (&ws.cn, &dw.cells) {
                    be.run(Op::Copy { src: &be.view(cells, last, bh)?, dst: &be.view(cn, chunk, bh)? })?;
                }
            }
        }

        if let (Some(head), Some(hw)) = (spec.head, &ws.head) {
            let top = &ws.layers[spec.layers - 1].y;
            let z = match &hw.z {
                None => top.clone(),
                Some((z, _)) => {
                    let (last, _, _) =
                        hw.last.as_ref().ok_or_else(|| Error::invalid("forward", "no last-row list"))?;
                    be.run(Op::Gather {
                        out: z,
                        table: top,
                        idx: last,
                        p: Gather { n: b, width: dh, idx_stride: dh, col_stride: 1 },
                    })?;
                    z.clone()
                }
            };
            let z = match &hw.dropped {
                Some((zd, _)) if o.train => {
                    be.run(Op::Dropout {
                        out: zd,
                        x: &z,
                        seeds: &ws.seeds,
                        p: self.output_dropout(),
                        backward: false,
                    })?;
                    zd.clone()
                }
                _ => z,
            };
            let o = head.outputs;
            be.run(Op::Matmul {
                c: &hw.logits,
                a: &z,
                b: &self.param(be, net, "head.weight")?,
                bias: Some(&self.param(be, net, "head.bias")?),
                p: Matmul::new(hw.rows, o, dh).trans_b(),
            })?;
        }
        // The final states become the next run's initial states (truncated BPTT, streaming);
        // a run that starts afresh overwrites them first.
        be.run(Op::Copy { src: &ws.hn, dst: &ws.h0 })?;
        if let (Some(cn), Some(c0)) = (&ws.cn, &ws.c0) {
            be.run(Op::Copy { src: cn, dst: c0 })?;
        }
        Ok(())
    }

    /// Records the loss: per-row losses and their gradient, summed into the step state.
    pub fn loss<B: Backend>(&self, be: &mut B, net: &Net<B>, ws: &Workspace<B>) -> Result<()> {
        let (head, hw) = match (self.spec.head, &ws.head) {
            (Some(h), Some(w)) => (h, w),
            _ => return Err(Error::invalid("loss", "the model has no head")),
        };
        let o = head.outputs;
        match head.loss {
            Loss::CrossEntropy => be.run(Op::SoftmaxXent {
                loss: &hw.loss_rows,
                dx: &hw.dlogits,
                logits: &hw.logits,
                targets: &hw.classes,
                weights: &hw.weights,
                rows: hw.rows,
                cols: o,
            })?,
            Loss::Mse => be.run(Op::Mse {
                loss: &hw.loss_rows,
                dx: &hw.dlogits,
                pred: &hw.logits,
                target: &hw.values,
                weights: &hw.weights,
                rows: hw.rows,
                cols: o,
            })?,
        }
        be.run(Op::Reduce {
            out: &net.step_state,
            x: &hw.loss_rows,
            p: Reduce { index: step_state::LOSS, square: false, accumulate: false },
        })
    }

    /// Records backpropagation through time. Gradients accumulate into `net.grads`: the caller
    /// clears them first (a model of several stacks backpropagates through each in turn).
    pub fn backward<B: Backend>(
        &self,
        be: &mut B,
        net: &Net<B>,
        ws: &Workspace<B>,
        o: BackwardOpts,
    ) -> Result<()> {
        let spec = self.spec;
        let (t_len, b) = (ws.steps, ws.batch);
        let tb = t_len * b;
        let bh = self.bh(b);
        let (g, h) = (spec.cell.gates(), spec.hidden);
        let dh = spec.output_size();
        let top = spec.layers - 1;

        if o.from_loss {
            let (head, hw) = match (spec.head, &ws.head) {
                (Some(h), Some(w)) => (h, w),
                _ => return Err(Error::invalid("backward", "the model has no head")),
            };
            let out = head.outputs;
            let top_y = &ws.layers[top].y;
            let top_dy = &ws.layers[top].dy;
            let (z, dz) = match &hw.z {
                None => (top_y.clone(), top_dy.clone()),
                Some((z, dz)) => (z.clone(), dz.clone()),
            };
            // With output dropout the head read the dropped input, and its gradient passes back
            // through the same mask.
            let dropped = hw.dropped.as_ref().filter(|_| o.train);
            let (z_in, dz_in) = match dropped {
                Some((zd, dzd)) => (zd.clone(), dzd.clone()),
                None => (z.clone(), dz.clone()),
            };
            be.run(Op::Matmul {
                c: &self.grad(be, net, "head.weight")?,
                a: &hw.dlogits,
                b: &z_in,
                p: Matmul::new(out, dh, hw.rows).trans_a().accumulate(),
                bias: None,
            })?;
            be.run(Op::BiasGrad {
                db: &self.grad(be, net, "head.bias")?,
                dy: &hw.dlogits,
                rows: hw.rows,
                cols: out,
                db2: None,
            })?;
            be.run(Op::Matmul {
                c: &dz_in,
                a: &hw.dlogits,
                b: &self.param(be, net, "head.weight")?,
                p: Matmul::new(hw.rows, dh, out),
                bias: None,
            })?;
            if dropped.is_some() {
                be.run(Op::Clear { x: &dz })?;
                be.run(Op::Dropout {
                    out: &dz,
                    x: &dz_in,
                    seeds: &ws.seeds,
                    p: self.output_dropout(),
                    backward: true,
                })?;
            }
            if let Some((_, starts, list)) = &hw.last {
                be.run(Op::Clear { x: top_dy })?;
                be.run(Op::ScatterAdd {
                    dtable: top_dy,
                    dout: &dz,
                    starts,
                    rows: list,
                    p: Gather { n: tb, width: dh, idx_stride: dh, col_stride: 1 },
                })?;
            }
        }

        let init_grad = o.init_grad || o.model_init;
        for k in (0..spec.layers).rev() {
            let lw = &ws.layers[k];
            let i = spec.layer_input(k);
            // Where the gradient of this layer's input goes: the layer below's dy (through the
            // dropout buffer when dropout was applied), or the batch's input gradient.
            let dropped = k > 0 && o.train && spec.dropout > 0.0;
            let dx: Option<B::Buf> = if k > 0 {
                if dropped { lw.dx_drop.clone() } else { Some(ws.layers[k - 1].dy.clone()) }
            } else if o.input_grad {
                ws.d_input.clone()
            } else {
                None
            };
            let x: Option<B::Buf> = if k == 0 {
                ws.input.clone()
            } else if dropped {
                lw.x_drop.clone()
            } else {
                Some(ws.layers[k - 1].y.clone())
            };
            for (d, dw) in lw.dirs.iter().enumerate() {
                let w = self.weights(be, net, k, d)?;
                let chunk = (k * spec.directions() + d) * bh;
                be.run(Op::Copy { src: &be.view(&ws.dhn, chunk, bh)?, dst: &be.view(&dw.carry, 0, bh)? })?;
                match &ws.dcn {
                    Some(dcn) => be.run(Op::Copy {
                        src: &be.view(dcn, chunk, bh)?,
                        dst: &be.view(&dw.carry, bh, bh)?,
                    })?,
                    None => be.run(Op::Clear { x: &be.view(&dw.carry, bh, bh)? })?,
                }
                // The gate gradients at their exact size (the buffers are padded to whole vec4s).
                let dgx = be.view(&dw.dg, 0, tb * g * h)?;
                let dgh = be.view(dw.dgh.as_ref().unwrap_or(&dw.dg), 0, tb * g * h)?;
                let bufs = StepBufs::<B::Buf, B::IBuf> {
                    states: &dw.states,
                    cells: dw.cells.as_ref(),
                    gates: dw.gates.as_ref(),
                    y: &lw.y,
                    xw: &dw.xw,
                    w_hh: &w.w_hh,
                    bias: &w.bias,
                    lengths: &ws.lengths,
                    dy: Some(&lw.dy),
                    dg: Some(&dw.dg),
                    dgh: dw.dgh.as_ref(),
                    carry: Some(&dw.carry),
                };
                let base = self.base_step(b, d, dw.state_base, w.bias_hh);
                let mut later: Option<usize> = None;
                for s in (0..t_len).rev() {
                    let t = self.time(d, s, t_len);
                    let (in_slot, out_slot) = self.slots(d, t);
                    let (next_t, mode) = match later {
                        None => (t, StepMode::First),
                        Some(n) => (n, StepMode::Later),
                    };
                    be.run(Op::Step {
                        cell: spec.cell,
                        bufs,
                        s: Step { t, in_slot, out_slot, next_t, mode, ..base },
                        backward: true,
                    })?;
                    later = Some(t);
                }
                if init_grad {
                    let next_t = later.unwrap_or(0);
                    be.run(Op::Step {
                        cell: spec.cell,
                        bufs,
                        s: Step { next_t, mode: StepMode::Initial, ..base },
                        backward: true,
                    })?;
                    be.run(Op::Copy {
                        src: &be.view(&dw.carry, 0, bh)?,
                        dst: &be.view(&ws.dh0, chunk, bh)?,
                    })?;
                    if let Some(dc0) = &ws.dc0 {
                        be.run(Op::Copy {
                            src: &be.view(&dw.carry, bh, bh)?,
                            dst: &be.view(dc0, chunk, bh)?,
                        })?;
                    }
                }
                // The bias gradients, then the weight gradients: one GEMM each over all steps.
                // b_ih and b_hh enter the same sums except in the GRU (b_hn is inside r * (.)),
                // so elsewhere they get the same gradient, summed once.
                if dw.dgh.is_some() {
                    be.run(Op::BiasGrad { db: &w.db_ih, dy: &dgx, rows: tb, cols: g * h, db2: None })?;
                    be.run(Op::BiasGrad { db: &w.db_hh, dy: &dgh, rows: tb, cols: g * h, db2: None })?;
                } else {
                    be.run(Op::BiasGrad {
                        db: &w.db_ih,
                        db2: Some(&w.db_hh),
                        dy: &dgx,
                        rows: tb,
                        cols: g * h,
                    })?;
                }
                let hprev_start = if d == 0 { 0 } else { dw.state_base + bh };
                let hprev = be.view(&dw.states, hprev_start, tb * h)?;
                match (&x, &ws.tokens) {
                    (Some(x), _) => be.run(Op::Matmul {
                        c: &w.dw_ih,
                        a: &dgx,
                        b: x,
                        p: Matmul::new(g * h, i, tb).trans_a().accumulate(),
                        bias: None,
                    })?,
                    (None, Some((_, starts, list))) => {
                        let p = Gather { n: i, width: g * h, idx_stride: 1, col_stride: i };
                        be.run(Op::ScatterAdd { dtable: &w.dw_ih, dout: &dgx, starts, rows: list, p })?;
                    }
                    (None, None) => return Err(Error::invalid("backward", "the workspace has no input")),
                }
                be.run(Op::Matmul {
                    c: &w.dw_hh,
                    a: &dgh,
                    b: &hprev,
                    p: Matmul::new(g * h, h, tb).trans_a().accumulate(),
                    bias: None,
                })?;
                if let Some(dx) = &dx {
                    let mut p = Matmul::new(tb, i, g * h);
                    p.accumulate = d > 0;
                    be.run(Op::Matmul { c: dx, a: &dgx, b: &w.w_ih, p, bias: None })?;
                }
            }
            if dropped {
                let below = &ws.layers[k - 1].dy;
                let dxd =
                    lw.dx_drop.as_ref().ok_or_else(|| Error::invalid("backward", "no dropout buffer"))?;
                be.run(Op::Clear { x: below })?;
                be.run(Op::Dropout {
                    out: below,
                    x: dxd,
                    seeds: &ws.seeds,
                    p: Dropout { prob: spec.dropout, salt: k as u32 },
                    backward: true,
                })?;
            }
        }

        if o.model_init {
            self.init_backward(be, net, ws)?;
        }
        Ok(())
    }

    /// Records the model-made initial state: the learned `rnn.h0` broadcast over the batch, or
    /// `tanh(v · init.weightᵀ + init.bias)` from the conditioning vectors, into `h0` (and `c0`).
    fn init_forward<B: Backend>(&self, be: &mut B, net: &Net<B>, ws: &Workspace<B>) -> Result<()> {
        let spec = self.spec;
        let iw =
            ws.init.as_ref().ok_or_else(|| Error::invalid("forward", "this model makes no initial state"))?;
        let (b, h, rows) = (ws.batch, spec.hidden, spec.state_rows());
        let lookup = Gather { n: rows * b, width: h, idx_stride: h, col_stride: 1 };
        let targets = [("h", &ws.h0, &iw.h), ("c", &ws.c0.clone().unwrap_or_else(|| ws.h0.clone()), &iw.c)];
        for (which, dst, proj) in targets {
            if which == "c" && ws.c0.is_none() {
                continue;
            }
            match (spec.condition, proj) {
                (None, _) => be.run(Op::Gather {
                    out: dst,
                    table: &self.param(be, net, &format!("rnn.{which}0"))?,
                    idx: &iw.rows,
                    p: lookup,
                })?,
                (Some(c), Some((act, _, pre))) => {
                    let cond = ws
                        .condition
                        .as_ref()
                        .ok_or_else(|| Error::invalid("forward", "no condition buffer"))?;
                    let name = if which == "h" { "init" } else { "init_c" };
                    // The pre-activation goes through the gradient buffer, unused until backward.
                    let p = Matmul::new(b, rows * h, c).trans_b();
                    let (w, bias) = (
                        self.param(be, net, &format!("{name}.weight"))?,
                        self.param(be, net, &format!("{name}.bias"))?,
                    );
                    be.run(Op::Matmul { c: pre, a: cond, b: &w, bias: Some(&bias), p })?;
                    be.run(Op::TanhForward { y: act, x: pre })?;
                    be.run(Op::Gather { out: dst, table: act, idx: &iw.rows, p: lookup })?;
                }
                (Some(_), None) => return Err(Error::invalid("forward", "no conditioned state buffers")),
            }
        }
        Ok(())
    }

    /// Records the gradients of the model-made initial state from `dh0` (and `dc0`).
    fn init_backward<B: Backend>(&self, be: &mut B, net: &Net<B>, ws: &Workspace<B>) -> Result<()> {
        let spec = self.spec;
        let iw = ws
            .init
            .as_ref()
            .ok_or_else(|| Error::invalid("backward", "this model makes no initial state"))?;
        let (b, h, rows) = (ws.batch, spec.hidden, spec.state_rows());
        for (which, grad, proj) in [("h", Some(&ws.dh0), &iw.h), ("c", ws.dc0.as_ref(), &iw.c)] {
            let Some(grad) = grad else { continue };
            match (spec.condition, proj) {
                (None, _) => {
                    let p = Gather { n: rows, width: h, idx_stride: h, col_stride: 1 };
                    be.run(Op::ScatterAdd {
                        dtable: &self.grad(be, net, &format!("rnn.{which}0"))?,
                        dout: grad,
                        starts: &iw.starts,
                        rows: &iw.list,
                        p,
                    })?;
                }
                (Some(c), Some((act, dact, dpre))) => {
                    let cond = ws
                        .condition
                        .as_ref()
                        .ok_or_else(|| Error::invalid("backward", "no condition buffer"))?;
                    let name = if which == "h" { "init" } else { "init_c" };
                    be.run(Op::Clear { x: dact })?;
                    be.run(Op::ScatterAdd {
                        dtable: dact,
                        dout: grad,
                        starts: &iw.starts,
                        rows: &iw.list,
                        p: Gather { n: rows * b, width: h, idx_stride: h, col_stride: 1 },
                    })?;
                    be.run(Op::Clear { x: dpre })?;
                    be.run(Op::TanhBackward { dx: dpre, y: act, dy: dact })?;
                    let dw = self.grad(be, net, &format!("{name}.weight"))?;
                    be.run(Op::Matmul {
                        c: &dw,
                        a: dpre,
                        b: cond,
                        p: Matmul::new(rows * h, c, b).trans_a().accumulate(),
                        bias: None,
                    })?;
                    be.run(Op::BiasGrad {
                        db: &self.grad(be, net, &format!("{name}.bias"))?,
                        dy: dpre,
                        rows: b,
                        cols: rows * h,
                        db2: None,
                    })?;
                }
                (Some(_), None) => return Err(Error::invalid("backward", "no conditioned state buffers")),
            }
        }
        Ok(())
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
}
