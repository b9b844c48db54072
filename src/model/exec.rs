//! A plain model's programs on the shared executor (`crate::exec`): its workspaces of `[T, B]`
//! shapes, the host uploads, and the programs for inference, gradients and training steps.

use super::batch::{Batch, Input};
use super::graph::{BackwardOpts, ForwardOpts, Graph, Net, Workspace};
use super::params::ParamLayout;
use super::spec::{Loss, ModelSpec};
use crate::backend::{Backend, Variant};
use crate::error::{Error, Result};
pub use crate::exec::StepStats;
use crate::exec::{Executor, Shape, record_update, to_elem};
use crate::ops::index_lists;
use crate::ops::{Op, step_state};
use crate::real::Real;
use crate::update::{Clip, Optimizer};

/// Where a run's initial state comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Start<'a> {
    /// Zeros, or the learned initial state of a model that has one.
    Fresh,
    /// The final state of the previous run with the same batch size: truncated BPTT over chunks,
    /// or streaming inference. Gradients stop at the chunk boundary.
    Continue,
    /// Given states `h0` (and `c0` for an LSTM), `[L*D, B, H]` (`h0` `[L*D, B, P]` with a
    /// projection).
    Given { h0: &'a [f32], c0: Option<&'a [f32]> },
}

/// The executor of a plain model: its workspaces are `Workspace`s of `[T, B]` shapes.
pub type Exec<B> = Executor<B, Workspace<B>>;

/// Program kinds.
const FORWARD: &str = "forward";
const GRAD: &str = "gradient";
const TRAIN: &str = "train";
const EVALUATE: &str = "evaluate";
const LOSS_GRAD: &str = "loss gradient";
const ADD_LOSS_GRAD: [&str; 2] = ["add loss gradient", "first loss gradient"];
const ADD_OUTPUT_GRAD: [&str; 2] = ["add output gradient", "first output gradient"];

/// What a training program does with the gradients of its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradMode {
    /// Computes them afresh and updates: one whole training step.
    Step,
    /// Adds them to those accumulated since the last update (clearing those first when
    /// `first`); no update.
    Add { first: bool },
}

/// Records the forward pass and the loss, then, where `backward` says so, backpropagation (the
/// gradients cleared first when its flag is set).
fn record_loss<B: Backend>(
    graph: &Graph<'_>,
    be: &mut B,
    net: &Net<B>,
    ws: &Workspace<B>,
    fo: ForwardOpts,
    backward: Option<(BackwardOpts, bool)>,
) -> Result<()> {
    graph.forward(be, net, ws, fo)?;
    graph.loss(be, net, ws)?;
    if let Some((bo, clear)) = backward {
        if clear {
            be.run(Op::Clear { x: &net.grads })?;
        }
        graph.backward(be, net, ws, bo)?;
    }
    Ok(())
}

fn shape(batch: &Batch) -> Shape {
    Shape { steps: batch.steps, tgt_steps: 0, batch: batch.batch }
}

impl<B: Backend> Exec<B> {
    fn graph<'a>(spec: &'a ModelSpec, layout: &'a ParamLayout) -> Graph<'a> {
        Graph { spec, layout, prefix: "" }
    }

    /// The workspace for `[T, B]`, created on first use. Workspaces of one batch size share their
    /// state buffers, so that `Start::Continue` carries the state across chunk lengths (and
    /// dropping an older one loses nothing it needs).
    fn workspace(&mut self, spec: &ModelSpec, layout: &ParamLayout, batch: &Batch) -> Result<()> {
        self.ensure(shape(batch), |be, others| {
            let mut ws = Self::graph(spec, layout).workspace(be, batch.steps, batch.batch)?;
            if let Some((_, other)) = others.iter().find(|(s, _)| s.batch == batch.batch) {
                ws.h0 = other.h0.clone();
                ws.c0 = other.c0.clone();
            }
            Ok(ws)
        })
    }

    /// Writes the batch, its lengths and targets, and the initial state into the workspace.
    fn upload(&mut self, spec: &ModelSpec, batch: &Batch, start: Start<'_>) -> Result<()> {
        let (be, ws) = self.with_ws(shape(batch))?;
        match (&batch.input, &ws.input, &ws.tokens) {
            (Input::Dense(x), Some(buf), _) => be.write(buf, &to_elem(x))?,
            (Input::Tokens(ids), _, Some((tokens, starts, list))) => {
                be.write_u32(tokens, ids)?;
                let (s, l) = index_lists(ids, spec.input.vocab().unwrap_or(0));
                be.write_u32(starts, &s)?;
                be.write_u32(list, &l)?;
            }
            _ => return Err(Error::invalid("upload", "the batch input does not match the model input")),
        }
        be.write_u32(&ws.lengths, &batch.lengths_u32())?;
        ws.write_first_rows(be, &batch.lengths_u32())?;
        if let (Some(head), Some(hw)) = (spec.head, &ws.head) {
            be.write(&hw.weights, &to_elem(&batch.loss_weights(head.mode, head.loss, head.outputs)))?;
            match head.loss {
                Loss::CrossEntropy => be.write_u32(&hw.classes, &batch.class_targets(head.mode))?,
                Loss::Mse => be.write(&hw.values, &to_elem(&batch.value_targets(head.mode, head.outputs)))?,
            }
            if let Some((last, starts, list)) = &hw.last {
                let d = spec.directions();
                let rows = batch.last_rows(d);
                be.write_u32(last, &rows)?;
                let (s, l) = index_lists(&rows, batch.steps * batch.batch * d);
                be.write_u32(starts, &s)?;
                be.write_u32(list, &l)?;
            }
        }
        let n = B::len(&ws.h0);
        match start {
            Start::Continue => {}
            Start::Fresh if spec.condition.is_some() => {
                let c = spec.condition.unwrap_or(0);
                let v = batch.condition.as_ref().ok_or_else(|| {
                    Error::invalid(
                        "initial state",
                        format!(
                            "this model's initial state is conditioned: give each sequence a vector of {c}"
                        ),
                    )
                })?;
                if v.len() != batch.batch * c {
                    return Err(Error::shape("initial state", "condition", &[v.len()], &[batch.batch, c]));
                }
                crate::error::check_finite("initial state", "condition", v)?;
                let buf =
                    ws.condition.as_ref().ok_or_else(|| Error::invalid("upload", "no condition buffer"))?;
                be.write(buf, &to_elem(v))?;
            }
            Start::Fresh => {
                // A learned initial state is gathered by the program itself.
                if !spec.learn_initial_state {
                    be.write(&ws.h0, &vec![B::Elem::ZERO; n])?;
                    if let Some(c0) = &ws.c0 {
                        be.write(c0, &vec![B::Elem::ZERO; B::len(c0)])?;
                    }
                }
            }
            Start::Given { h0, c0 } => {
                crate::error::check_finite("initial state", "h0", h0)?;
                if h0.len() != n {
                    return Err(Error::shape(
                        "initial state",
                        "h0",
                        &[h0.len()],
                        &[spec.state_rows(), batch.batch, spec.state_size()],
                    ));
                }
                be.write(&ws.h0, &to_elem(h0))?;
                if let Some(c0buf) = &ws.c0 {
                    let c0 = c0.ok_or_else(|| Error::invalid("initial state", "an LSTM needs c0 with h0"))?;
                    crate::error::check_finite("initial state", "c0", c0)?;
                    if c0.len() != B::len(c0buf) {
                        return Err(Error::shape(
                            "initial state",
                            "c0",
                            &[c0.len()],
                            &[spec.state_rows(), batch.batch, spec.hidden],
                        ));
                    }
                    be.write(c0buf, &to_elem(c0))?;
                }
            }
        }
        Ok(())
    }

    /// Whether the program makes the initial state itself (learned or conditioned).
    fn model_init(spec: &ModelSpec, start: Start<'_>) -> bool {
        (spec.learn_initial_state || spec.condition.is_some()) && start == Start::Fresh
    }

    /// What every run does first: checks the batch, makes its workspace, uploads it and its
    /// initial state. Returns whether the program makes the initial state.
    fn begin(
        &mut self,
        spec: &ModelSpec,
        layout: &ParamLayout,
        batch: &Batch,
        start: Start<'_>,
        targets: bool,
    ) -> Result<bool> {
        batch.validate(spec, targets)?;
        self.workspace(spec, layout, batch)?;
        self.upload(spec, batch, start)?;
        Ok(Self::model_init(spec, start))
    }

    /// Runs the forward pass (no dropout).
    pub fn forward(
        &mut self,
        spec: &ModelSpec,
        layout: &ParamLayout,
        batch: &Batch,
        start: Start<'_>,
    ) -> Result<()> {
        let model_init = self.begin(spec, layout, batch, start, false)?;
        let graph = Self::graph(spec, layout);
        let opts = ForwardOpts { train: false, keep: false, model_init };
        let variant = Variant { model_init, ..Variant::default() };
        self.run(FORWARD, shape(batch), variant, |be, net, ws| graph.forward(be, net, ws, opts))
    }

    /// Runs forward and backward from the gradients of the top layer's outputs `d_output`
    /// `[T, B, D*H]` and of the final states (zero when `None`). The gradients land in the
    /// workspace and `net.grads`.
    #[allow(clippy::too_many_arguments)]
    pub fn gradients(
        &mut self,
        spec: &ModelSpec,
        layout: &ParamLayout,
        batch: &Batch,
        start: Start<'_>,
        d_output: &[f32],
        d_hn: Option<&[f32]>,
        d_cn: Option<&[f32]>,
    ) -> Result<()> {
        let model_init = self.begin(spec, layout, batch, start, false)?;
        self.upload_output_gradients(spec, batch, d_output, d_hn, d_cn)?;
        let graph = Self::graph(spec, layout);
        let fo = ForwardOpts { train: false, keep: true, model_init };
        let bo =
            BackwardOpts { train: false, from_loss: false, input_grad: true, init_grad: true, model_init };
        self.run(GRAD, shape(batch), Variant { model_init, ..Variant::default() }, |be, net, ws| {
            graph.forward(be, net, ws, fo)?;
            be.run(Op::Clear { x: &net.grads })?;
            graph.backward(be, net, ws, bo)
        })?;
        // Leave the final-state gradients zero for later runs.
        let (be, ws) = self.with_ws(shape(batch))?;
        for buf in [Some(&ws.dhn), ws.dcn.as_ref()].into_iter().flatten() {
            be.write(buf, &vec![B::Elem::ZERO; B::len(buf)])?;
        }
        Ok(())
    }

    /// Writes the gradients of the top layer's outputs and of the final states (zero when `None`)
    /// where the backward pass starts from, each checked for its shape and finiteness.
    fn upload_output_gradients(
        &mut self,
        spec: &ModelSpec,
        batch: &Batch,
        d_output: &[f32],
        d_hn: Option<&[f32]>,
        d_cn: Option<&[f32]>,
    ) -> Result<()> {
        let want = batch.steps * batch.batch * spec.output_size();
        if d_output.len() != want {
            return Err(Error::shape(
                "gradients",
                "output gradient",
                &[d_output.len()],
                &[batch.steps, batch.batch, spec.output_size()],
            ));
        }
        crate::error::check_finite("gradients", "output gradient", d_output)?;
        let (be, ws) = self.with_ws(shape(batch))?;
        let top = &ws.layers[spec.layers - 1].dy;
        be.write(top, &to_elem(d_output))?;
        for (buf, given, what, width) in [
            (Some(&ws.dhn), d_hn, "final hidden state gradient", spec.state_size()),
            (ws.dcn.as_ref(), d_cn, "final cell state gradient", spec.hidden),
        ] {
            let Some(buf) = buf else { continue };
            let n = B::len(buf);
            let v = given.map(|v| v.to_vec()).unwrap_or_else(|| vec![0.0; n]);
            if v.len() != n {
                return Err(Error::shape(
                    "gradients",
                    what,
                    &[v.len()],
                    &[spec.state_rows(), batch.batch, width],
                ));
            }
            crate::error::check_finite("gradients", what, &v)?;
            be.write(buf, &to_elem(&v))?;
        }
        Ok(())
    }

    /// One training step, forward, loss, backward, clipping and update, as one program; or, with
    /// `GradMode::Add`, forward, loss and backward adding to the gradients accumulated.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &mut self,
        spec: &ModelSpec,
        layout: &ParamLayout,
        batch: &Batch,
        start: Start<'_>,
        opt: &Optimizer,
        clip: Clip,
        seed: u32,
        grads: GradMode,
    ) -> Result<()> {
        if grads == GradMode::Step {
            self.prepare_update(layout, opt)?;
        }
        let model_init = self.begin(spec, layout, batch, start, true)?;
        let (be, ws) = self.with_ws(shape(batch))?;
        be.write_u32(&ws.seeds, &[seed])?;
        let graph = Self::graph(spec, layout);
        let fo = ForwardOpts { train: true, keep: true, model_init };
        let bo =
            BackwardOpts { train: true, from_loss: true, input_grad: false, init_grad: false, model_init };
        let variant = Variant { model_init, train: true, ..Variant::default() };
        let opt = *opt;
        let (kind, variant, clear) = match grads {
            GradMode::Step => (TRAIN, variant.with_update(&opt, clip), true),
            GradMode::Add { first } => (ADD_LOSS_GRAD[first as usize], variant, first),
        };
        self.run(kind, shape(batch), variant, |be, net, ws| {
            record_loss(&graph, be, net, ws, fo, Some((bo, clear)))?;
            match grads {
                GradMode::Step => record_update(be, net, &opt, clip),
                GradMode::Add { .. } => Ok(()),
            }
        })
    }

    /// Forward in training mode (dropout from `seed`), then backward from the caller's own loss:
    /// `d_output`, its gradient with respect to the top layer's outputs `[T, B, D*H]`, added to
    /// the gradients accumulated (cleared first when `first`). `loss`, the caller's value, goes
    /// into the step state, where `stats` reports it and the update's guard checks it.
    #[allow(clippy::too_many_arguments)]
    pub fn add_output_gradient(
        &mut self,
        spec: &ModelSpec,
        layout: &ParamLayout,
        batch: &Batch,
        start: Start<'_>,
        seed: u32,
        loss: f32,
        d_output: &[f32],
        first: bool,
    ) -> Result<()> {
        let model_init = self.begin(spec, layout, batch, start, false)?;
        self.upload_output_gradients(spec, batch, d_output, None, None)?;
        let (be, ws) = self.with_ws(shape(batch))?;
        be.write_u32(&ws.seeds, &[seed])?;
        let state = self.net.step_state.clone();
        self.be.write(&self.be.view(&state, step_state::LOSS, 1)?, &[B::Elem::from_f32(loss)])?;
        let graph = Self::graph(spec, layout);
        let fo = ForwardOpts { train: true, keep: true, model_init };
        let bo =
            BackwardOpts { train: true, from_loss: false, input_grad: false, init_grad: false, model_init };
        let variant = Variant { model_init, train: true, ..Variant::default() };
        self.run(ADD_OUTPUT_GRAD[first as usize], shape(batch), variant, |be, net, ws| {
            graph.forward(be, net, ws, fo)?;
            if first {
                be.run(Op::Clear { x: &net.grads })?;
            }
            graph.backward(be, net, ws, bo)
        })
    }

    /// The loss on `batch` without any update; it lands in the step state. With `gradients`,
    /// its gradients too (parameters in `net.grads`, the dense input and the initial states in the
    /// workspace). With a dropout seed the pass runs in training mode (dropout on, masks drawn
    /// from the seed).
    pub fn loss(
        &mut self,
        spec: &ModelSpec,
        layout: &ParamLayout,
        batch: &Batch,
        start: Start<'_>,
        dropout_seed: Option<u32>,
        gradients: bool,
    ) -> Result<()> {
        let model_init = self.begin(spec, layout, batch, start, true)?;
        let graph = Self::graph(spec, layout);
        let train = self.set_seed(batch, dropout_seed)?;
        let fo = ForwardOpts { train, keep: gradients, model_init };
        let bo = BackwardOpts { train, from_loss: true, input_grad: true, init_grad: true, model_init };
        let variant = Variant { model_init, train, ..Variant::default() };
        let kind = if gradients { LOSS_GRAD } else { EVALUATE };
        self.run(kind, shape(batch), variant, |be, net, ws| {
            record_loss(&graph, be, net, ws, fo, gradients.then_some((bo, true)))
        })
    }

    fn set_seed(&mut self, batch: &Batch, seed: Option<u32>) -> Result<bool> {
        match seed {
            None => Ok(false),
            Some(s) => {
                let (be, ws) = self.with_ws(shape(batch))?;
                be.write_u32(&ws.seeds, &[s])?;
                Ok(true)
            }
        }
    }

    /// The initial-state buffers `Start::Continue` reads for batch size `batch`, if a run of that
    /// batch size has made them.
    /// Sets the carried state of `streams` (of the runs of batch size `batch`) to the model's
    /// initial state: zeros, or its learned `rnn.h0` (and `rnn.c0`) rows.
    pub fn reset_streams(
        &mut self,
        spec: &ModelSpec,
        layout: &ParamLayout,
        batch: usize,
        streams: &[usize],
    ) -> Result<()> {
        let Some((h, c)) = self.carried_buffers(batch) else { return Ok(()) };
        let rows = spec.state_rows();
        for (buf, name, hidden) in [(Some(h), "rnn.h0", spec.state_size()), (c, "rnn.c0", spec.hidden)] {
            let Some(buf) = buf else { continue };
            let initial = match layout.entries().iter().find(|e| e.name == name) {
                Some(e) if spec.learn_initial_state => {
                    let params = self.net.params.clone();
                    self.read(&self.be.view(&params, e.offset, rows * hidden)?)?
                }
                _ => vec![0.0; rows * hidden],
            };
            for r in 0..rows {
                for &b in streams {
                    let row = self.be.view(&buf, (r * batch + b) * hidden, hidden)?;
                    self.write(&row, &initial[r * hidden..][..hidden])?;
                }
            }
        }
        Ok(())
    }

    pub fn carried_buffers(&self, batch: usize) -> Option<(B::Buf, Option<B::Buf>)> {
        self.workspaces().find(|(s, _)| s.batch == batch).map(|(_, w)| (w.h0.clone(), w.c0.clone()))
    }

    pub fn workspace_of(&self, batch: &Batch) -> Result<&Workspace<B>> {
        self.ws(shape(batch))
    }
}
