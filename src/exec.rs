//! Running a network on one backend, whatever the model: the workspaces of the batch shapes in
//! use (the least recently used dropped with their programs), programs keyed by value, the update
//! at the end of a training program, and the step state. `Model` (model/exec.rs) and `Seq2Seq`
//! (seq2seq/exec.rs) add their own programs on top; what training keeps beside the network is
//! `Training`.

use std::collections::HashMap;

use crate::backend::{Backend, ProgramKey, Variant};
use crate::distributed::{self, Collective};
use crate::error::{Error, Result};
use crate::model::graph::Net;
use crate::model::params::ParamLayout;
use crate::ops::Op;
use crate::ops::step_state;
use crate::real::Real;
use crate::rng::Rng;
use crate::train::TrainingState;
use crate::update::{Clip, Optimizer};
use crate::wait::block_on;

/// Workspaces (and their recorded programs) kept at once; the least recently used shape goes
/// first, so that a stream of ever-new shapes (primes of every length) cannot exhaust memory.
pub(crate) const MAX_SHAPES: usize = 8;

/// A batch shape: time steps (the encoder's), the decoder's steps (0 for a plain model), rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub steps: usize,
    pub tgt_steps: usize,
    pub batch: usize,
}

/// The step state as read back after a training step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    pub loss: f32,
    pub grad_norm: f32,
    /// Training steps applied so far.
    pub step: u64,
    /// Steps refused so far because their loss or gradient was not finite.
    pub skipped: u32,
}

/// A network on backend `B`, with the workspaces `W` of its batch shapes.
pub struct Executor<B: Backend, W> {
    pub be: B,
    pub net: Net<B>,
    workspaces: HashMap<Shape, W>,
    /// Shapes, least recently used first.
    recent: Vec<Shape>,
    /// The gradients as read for a data-parallel reduction, kept between steps.
    reduce_scratch: (Vec<B::Elem>, Vec<f32>),
}

pub(crate) fn to_elem<T: Real>(v: &[f32]) -> Vec<T> {
    v.iter().map(|&x| T::from_f32(x)).collect()
}

impl<B: Backend, W: Sync> Executor<B, W> {
    pub fn new(mut be: B, layout: &ParamLayout, params: &[B::Elem]) -> Result<Self> {
        let net = Net::new(&mut be, layout, params)?;
        Ok(Executor {
            be,
            net,
            workspaces: HashMap::new(),
            recent: Vec::new(),
            reduce_scratch: Default::default(),
        })
    }

    /// Makes the workspace of `shape` on first use (`make` sees the workspaces there are), and
    /// drops the least recently used ones, with their programs, past `MAX_SHAPES`.
    pub(crate) fn ensure(
        &mut self,
        shape: Shape,
        make: impl FnOnce(&mut B, &HashMap<Shape, W>) -> Result<W>,
    ) -> Result<()> {
        self.recent.retain(|&k| k != shape);
        self.recent.push(shape);
        if !self.workspaces.contains_key(&shape) {
            let ws = make(&mut self.be, &self.workspaces)?;
            self.workspaces.insert(shape, ws);
        }
        while self.recent.len() > MAX_SHAPES {
            let old = self.recent.remove(0);
            self.workspaces.remove(&old);
            self.be.drop_programs(old.steps, old.tgt_steps, old.batch);
        }
        Ok(())
    }

    /// The workspace of `shape`, once a run has made it.
    pub fn ws(&self, shape: Shape) -> Result<&W> {
        self.workspaces
            .get(&shape)
            .ok_or_else(|| Error::invalid("workspace", "no run with this batch shape yet"))
    }

    /// The backend and the workspace of `shape`, borrowed together (for host writes into it).
    pub(crate) fn with_ws(&mut self, shape: Shape) -> Result<(&mut B, &W)> {
        let ws = self
            .workspaces
            .get(&shape)
            .ok_or_else(|| Error::invalid("workspace", "no run with this batch shape yet"))?;
        Ok((&mut self.be, ws))
    }

    pub(crate) fn workspaces(&self) -> impl Iterator<Item = (&Shape, &W)> {
        self.workspaces.iter()
    }

    /// Runs `record` on `shape`'s workspace as the program `kind` with `variant` (recorded the
    /// first time on a GPU, replayed after).
    pub(crate) fn run(
        &mut self,
        kind: &'static str,
        shape: Shape,
        variant: Variant,
        mut record: impl FnMut(&mut B, &Net<B>, &W) -> Result<()> + Send,
    ) -> Result<()> {
        let key =
            ProgramKey { kind, steps: shape.steps, tgt_steps: shape.tgt_steps, batch: shape.batch, variant };
        let net = &self.net;
        let ws =
            self.workspaces.get(&shape).ok_or_else(|| Error::invalid(kind, "no workspace for this shape"))?;
        self.be.execute(key, &mut |be| record(be, net, ws))
    }

    /// Runs `record` on the network alone (no batch, no workspace) as the program `kind`.
    pub(crate) fn run_net(
        &mut self,
        kind: &'static str,
        variant: Variant,
        mut record: impl FnMut(&mut B, &Net<B>) -> Result<()> + Send,
    ) -> Result<()> {
        let key = ProgramKey { kind, steps: 0, tgt_steps: 0, batch: 0, variant };
        let net = &self.net;
        self.be.execute(key, &mut |be| record(be, net))
    }

    /// The update that ends an accumulation: clipping, the non-finite guard and the rule on the
    /// gradients accumulated, which it then clears for the next accumulation.
    pub fn apply_update(&mut self, layout: &ParamLayout, rule: &Optimizer, clip: Clip) -> Result<()> {
        self.prepare_update(layout, rule)?;
        let rule = *rule;
        self.run_net("apply update", Variant::default().with_update(&rule, clip), |be, net| {
            record_update(be, net, &rule, clip)?;
            be.run(Op::Clear { x: &net.grads })
        })
    }

    /// Data parallelism: the accumulated gradients and the step's loss become their mean over
    /// the ranks of `comm`, each rank's weighted by `weight`, its share of the loss's terms. One
    /// readback and one upload of the gradients on a GPU.
    pub fn reduce_gradients(&mut self, comm: &dyn Collective, weight: f32) -> Result<()> {
        block_on("reduce_gradients", self.reduce_gradients_async(comm, weight))
    }

    async fn reduce_gradients_async(&mut self, comm: &dyn Collective, weight: f32) -> Result<()> {
        let loss = self.be.view(&self.net.step_state, step_state::LOSS, 1)?;
        let local_loss = self.read_async(&loss).await?[0];
        let (elems, data) = &mut self.reduce_scratch;
        self.be.read_into(&self.net.grads, elems).await?;
        data.clear();
        data.extend(elems.iter().map(|v| v.to_f32()));
        let mean_loss = distributed::weighted_mean(comm, data, local_loss, weight)?;
        elems.clear();
        elems.extend(data.iter().map(|&v| B::Elem::from_f32(v)));
        self.be.write(&self.net.grads, elems)?;
        self.write(&loss, &[mean_loss])
    }

    /// Before a training step: the state buffers `rule` keeps, and its learning rate in the step
    /// state (read there by the update, so that a new rate needs no new program).
    pub(crate) fn prepare_update(&mut self, layout: &ParamLayout, rule: &Optimizer) -> Result<()> {
        if self.net.opt.len() != rule.state_slots() {
            self.net.reset_optimizer(&mut self.be, layout, rule)?;
        }
        let lr = self.be.view(&self.net.step_state, step_state::LR, 1)?;
        self.be.write(&lr, &[B::Elem::from_f32(rule.lr())])
    }

    /// Reads the step state (waits for the device).
    pub async fn stats_async(&mut self) -> Result<StepStats> {
        let s = self.read_async(&self.net.step_state.clone()).await?;
        Ok(StepStats {
            loss: s[step_state::LOSS],
            grad_norm: s[step_state::GRAD_NORM],
            step: s[step_state::STEP] as u64,
            skipped: s[step_state::SKIPPED] as u32,
        })
    }

    pub fn stats(&mut self) -> Result<StepStats> {
        block_on("stats", self.stats_async())
    }

    pub async fn read_async(&mut self, buf: &B::Buf) -> Result<Vec<f32>> {
        Ok(self.be.read(buf).await?.into_iter().map(|v| v.to_f32()).collect())
    }

    pub fn read(&mut self, buf: &B::Buf) -> Result<Vec<f32>> {
        block_on("read", self.read_async(buf))
    }

    pub fn write(&mut self, buf: &B::Buf, data: &[f32]) -> Result<()> {
        self.be.write(buf, &to_elem(data))
    }
}

/// Records the update that ends a training program: clipping by value, the gradient norm with
/// the decision to apply the step and the clipping scale, then the rule (which applies the
/// scale).
pub(crate) fn record_update<B: Backend>(
    be: &mut B,
    net: &Net<B>,
    rule: &Optimizer,
    clip: Clip,
) -> Result<()> {
    if clip.value > 0.0 {
        be.run(Op::ClipByValue { grad: &net.grads, lo: -clip.value, hi: clip.value })?;
    }
    be.run(Op::FinalizeStep { state: &net.step_state, grads: &net.grads, max_norm: clip.max_norm })?;
    let slots: Vec<&B::Buf> = net.opt.iter().collect();
    be.run(Op::Update { param: &net.params, grad: &net.grads, slots: &slots, state: &net.step_state, rule })
}

/// What training keeps beside the network: the update rule and clipping, the generator of
/// dropout seeds, and how many refused steps have been reported.
#[derive(Debug)]
pub(crate) struct Training {
    pub optimizer: Optimizer,
    pub clip: Clip,
    pub rng: Rng,
    skipped_seen: u32,
}

impl Training {
    pub fn new(optimizer: Optimizer, rng: Rng) -> Training {
        Training { optimizer, clip: Clip::default(), rng, skipped_seen: 0 }
    }

    /// Sets the rule and clipping. The rule's state is reset when the rule or its slot count
    /// changes; a new learning rate alone keeps it.
    pub fn set<B: Backend, W: Sync>(
        &mut self,
        e: &mut Executor<B, W>,
        layout: &ParamLayout,
        optimizer: Optimizer,
        clip: Clip,
    ) -> Result<()> {
        clip.validate()?;
        optimizer.validate()?;
        if std::mem::discriminant(&optimizer) != std::mem::discriminant(&self.optimizer)
            || optimizer.state_slots() != e.net.opt.len()
        {
            e.net.reset_optimizer(&mut e.be, layout, &optimizer)?;
        }
        self.optimizer = optimizer;
        self.clip = clip;
        Ok(())
    }

    /// `stats`, or an error naming the loss and gradient norm when a step was refused since the
    /// last call.
    pub fn checked(&mut self, s: StepStats) -> Result<StepStats> {
        if s.skipped > self.skipped_seen {
            self.skipped_seen = s.skipped;
            return Err(Error::NonFiniteStep { loss: s.loss, grad_norm: s.grad_norm, skipped: s.skipped });
        }
        Ok(s)
    }

    /// The rule, its state, the step state and the generator: with the parameters, everything a
    /// training run needs to continue exactly.
    pub async fn state<B: Backend, W: Sync>(&self, e: &mut Executor<B, W>) -> Result<TrainingState> {
        e.net.training_state(&mut e.be, self.optimizer, self.clip, &self.rng).await
    }

    /// Restores what `state` returned.
    pub fn restore<B: Backend, W: Sync>(
        &mut self,
        e: &mut Executor<B, W>,
        layout: &ParamLayout,
        state: &TrainingState,
    ) -> Result<()> {
        self.set(e, layout, state.optimizer, state.clip)?;
        e.net.write_training(&mut e.be, &state.slots, &state.step_state)?;
        self.skipped_seen = state.step_state[step_state::SKIPPED] as u32;
        self.rng = Rng::from_state(state.rng);
        Ok(())
    }
}
