//! Models: RNN, LSTM and GRU stacks, one or two directions, with an optional linear head, on the
//! GPU or the CPU.

pub mod batch;
pub mod exec;
pub mod generate;
pub mod graph;
pub mod params;
pub mod session;
pub mod spec;

use crate::backend::Backend;
pub use crate::device::Device;
use crate::device::{Engine, Plan, check_host_memory, with_engine};
use crate::error::{Error, Result};
use crate::exec::Training;
use crate::rng::Rng;
use crate::update::{Clip, Optimizer};
use crate::wait::block_on;
use batch::Batch;
use exec::{Exec, GradMode};
pub use exec::{Start, StepStats};
use graph::Workspace;
use params::ParamLayout;
use spec::{InputKind, ModelSpec};

/// A plain model keeps a `Workspace` per batch shape.
pub(crate) struct ModelPlan;

impl Plan for ModelPlan {
    type Ws<B: Backend> = Workspace<B>;
}

/// The outputs of a forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    /// The top layer's outputs `[T, B, D*H]` (`D*P` with a projection; zero at padded steps).
    pub output: Vec<f32>,
    /// Final states `[L*D, B, H]` (each sequence's state after its last valid step); with a
    /// projection `h_n` has P values a row, `c_n` H.
    pub h_n: Vec<f32>,
    pub c_n: Option<Vec<f32>>,
    /// The head's outputs: `[T, B, O]` many-to-many, `[B, O]` many-to-one.
    pub logits: Option<Vec<f32>>,
}

/// The recurrent state one run leaves for the next (`Start::Continue`): truncated BPTT's carried
/// state, saved in checkpoints so that a resumed run continues exactly. `[L*D, B, H]` each (the
/// hidden state `[L*D, B, P]` with a projection).
#[derive(Clone, Debug, PartialEq)]
pub struct CarriedState {
    pub h: Vec<f32>,
    pub c: Option<Vec<f32>>,
}

impl CarriedState {
    /// The same state as a `Start` for the next run.
    pub fn start(&self) -> Start<'_> {
        Start::Given { h0: &self.h, c0: self.c.as_deref() }
    }
}

/// Gradients from `Model::gradients`.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients {
    /// Every parameter's gradient, by name (PyTorch's), in layout order.
    pub params: Vec<(String, Vec<f32>)>,
    /// The gradient of a dense input `[T, B, I]`.
    pub input: Option<Vec<f32>>,
    pub h0: Vec<f32>,
    pub c0: Option<Vec<f32>>,
}

/// A recurrent model resident on its device: parameters, gradients and optimizer state stay there
/// between calls.
pub struct Model {
    spec: ModelSpec,
    layout: ParamLayout,
    device: Device,
    pub(crate) engine: Engine<ModelPlan>,
    training: Training,
    /// Gradients are being accumulated (`accumulate`) toward an `apply_update`.
    accumulating: bool,
}

impl Model {
    /// A new model initialised like PyTorch's from `seed`.
    pub fn new(spec: ModelSpec, device: &Device, seed: u64) -> Result<Model> {
        spec.validate()?;
        check_host_memory(&format!("the {} model", spec.cell.name()), spec.param_count(), device)?;
        let layout = ParamLayout::new(&spec);
        let params = layout.init(seed);
        Self::with_flat_params(spec, device, &params, seed)
    }

    /// A model holding `params`, the flat buffer of its layout (see `ParamLayout`).
    pub fn with_flat_params(spec: ModelSpec, device: &Device, params: &[f32], seed: u64) -> Result<Model> {
        spec.validate()?;
        let layout = ParamLayout::new(&spec);
        crate::error::check_flat_params("Model", params, layout.total())?;
        Ok(Model {
            engine: Engine::new(device, &layout, params)?,
            spec,
            layout,
            device: device.clone(),
            training: Training::new(Optimizer::adam(2e-3), Rng::seed_from_u64(seed ^ 0x5eed_0fd2_0f)),
            accumulating: false,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The flat parameter buffer (waits for the device).
    pub fn flat_params(&mut self) -> Result<Vec<f32>> {
        block_on("Model::flat_params", self.flat_params_async())
    }

    pub async fn flat_params_async(&mut self) -> Result<Vec<f32>> {
        with_engine!(&mut self.engine, e => { let p = e.net.params.clone(); e.read_async(&p).await })
    }

    /// Overwrites every parameter from a flat buffer of this layout.
    pub fn set_flat_params(&mut self, params: &[f32]) -> Result<()> {
        if params.len() != self.layout.total() {
            return Err(Error::shape(
                "set_flat_params",
                "parameters",
                &[params.len()],
                &[self.layout.total()],
            ));
        }
        crate::error::check_finite("set_flat_params", "parameters", params)?;
        with_engine!(&mut self.engine, e => { let p = e.net.params.clone(); e.write(&p, params) })
    }

    /// Every parameter by name, in layout order.
    pub fn named_params(&mut self) -> Result<Vec<(String, Vec<f32>)>> {
        block_on("Model::named_params", self.named_params_async())
    }

    pub async fn named_params_async(&mut self) -> Result<Vec<(String, Vec<f32>)>> {
        let flat = self.flat_params_async().await?;
        Ok(self.layout.entries().iter().map(|e| (e.name.clone(), flat[e.range()].to_vec())).collect())
    }

    /// Sets the optimizer and clipping used by `train_step`. The optimizer state is reset when
    /// the kind of optimizer changes; a new learning rate alone keeps it.
    pub fn set_optimizer(&mut self, optimizer: Optimizer, clip: Clip) -> Result<()> {
        let (layout, t) = (&self.layout, &mut self.training);
        with_engine!(&mut self.engine, e => t.set(e, layout, optimizer, clip))
    }

    pub fn optimizer(&self) -> Optimizer {
        self.training.optimizer
    }

    pub fn clip(&self) -> Clip {
        self.training.clip
    }

    /// Changes only the learning rate (a schedule); no new program is recorded.
    pub fn set_lr(&mut self, lr: f32) -> Result<()> {
        let mut o = self.training.optimizer;
        o.set_lr(lr);
        self.set_optimizer(o, self.training.clip)
    }

    /// One training step on `batch` (targets required): forward, loss, backpropagation through
    /// time, clipping and the update, submitted as one program. Nothing is read back: call
    /// `stats` for the loss. A step whose loss or gradient norm is not finite is refused on the
    /// device, leaving the weights untouched, and reported by the next `stats`.
    pub fn train_step(&mut self, batch: &Batch, start: Start<'_>) -> Result<()> {
        self.not_accumulating("train_step")?;
        self.step_with(batch, start, GradMode::Step, 0)
    }

    /// A training program; `salt` varies the dropout seed (each rank of a data-parallel job
    /// draws its own masks).
    fn step_with(&mut self, batch: &Batch, start: Start<'_>, grads: GradMode, salt: u32) -> Result<()> {
        let seed = self.training.rng.next_u32() ^ salt;
        let (spec, layout, opt, clip) =
            (&self.spec, &self.layout, self.training.optimizer, self.training.clip);
        with_engine!(&mut self.engine, e => e.train_step(spec, layout, batch, start, &opt, clip, seed, grads))
    }

    /// Forward, loss and backward on `batch` (targets required, dropout on), adding its gradients
    /// to those accumulated since the last update, as `loss.backward()` adds into PyTorch's
    /// `.grad`: after k calls they are the gradient of the sum of the k losses (divide the
    /// learning rate by k for their mean). Nothing is updated until `apply_update`. The step
    /// state's loss is the last batch's.
    pub fn accumulate(&mut self, batch: &Batch, start: Start<'_>) -> Result<()> {
        let first = !self.accumulating;
        self.step_with(batch, start, GradMode::Add { first }, 0)?;
        self.accumulating = true;
        Ok(())
    }

    /// Backpropagation from the caller's own loss, accumulated as `accumulate` does: `batch` runs
    /// forward in training mode (dropout on, no targets needed), then backward from `d_output`,
    /// the loss's gradient with respect to the top layer's outputs `[T, B, D*H]` (the head, if
    /// any, is not used). `loss` is its value: `stats` reports it, and `apply_update` refuses the
    /// update when it or the gradients are not finite.
    pub fn accumulate_output_gradient(
        &mut self,
        batch: &Batch,
        start: Start<'_>,
        loss: f32,
        d_output: &[f32],
    ) -> Result<()> {
        let first = !self.accumulating;
        let seed = self.training.rng.next_u32();
        let (spec, layout) = (&self.spec, &self.layout);
        with_engine!(&mut self.engine, e => e.add_output_gradient(spec, layout, batch, start, seed, loss, d_output, first))?;
        self.accumulating = true;
        Ok(())
    }

    /// Clipping, the non-finite guard and the optimizer's update on the gradients accumulated
    /// since the last update, which it then clears: the end of an accumulation, as one program.
    /// A refused update is reported by the next `stats`, as a refused `train_step` is.
    pub fn apply_update(&mut self) -> Result<()> {
        if !self.accumulating {
            return Err(Error::invalid("apply_update", "no gradients accumulated since the last update"));
        }
        let (layout, opt, clip) = (&self.layout, self.training.optimizer, self.training.clip);
        with_engine!(&mut self.engine, e => e.apply_update(layout, &opt, clip))?;
        self.accumulating = false;
        Ok(())
    }

    /// One data-parallel training step: this rank's share of the batch forward and backward,
    /// then the gradients and the loss averaged over the ranks of `comm` (each rank weighted by
    /// its valid rows), then clipping, the guard and the update, alike on every rank. N ranks
    /// with B/N sequences each take the step one rank takes with all B (dropout aside: its masks
    /// follow the batch's shape). `stats` reports the mean loss over the ranks.
    pub fn train_step_distributed(
        &mut self,
        batch: &Batch,
        start: Start<'_>,
        comm: &dyn crate::distributed::Collective,
    ) -> Result<()> {
        if comm.size() == 1 {
            return self.train_step(batch, start);
        }
        self.not_accumulating("train_step_distributed")?;
        let head = self
            .spec
            .head
            .ok_or_else(|| Error::invalid("train_step_distributed", "the model has no head, so no loss"))?;
        self.step_with(batch, start, GradMode::Add { first: true }, rank_salt(comm.rank()))?;
        let weight = batch.loss_rows(head.mode) as f32;
        // Until the update, the gradients are this step's alone: a failed reduction leaves no
        // accumulation open (the next step clears them).
        with_engine!(&mut self.engine, e => {
            e.reduce_gradients(comm, weight)?;
            e.apply_update(&self.layout, &self.training.optimizer, self.training.clip)
        })
    }

    /// Calls that overwrite the gradients are refused while some are being accumulated, rather
    /// than silently dropping them.
    fn not_accumulating(&self, op: &'static str) -> Result<()> {
        match self.accumulating {
            true => Err(Error::invalid(
                op,
                "gradients are being accumulated; end the accumulation with apply_update first",
            )),
            false => Ok(()),
        }
    }

    /// The step state after the last training step (waits for the device). An error when a step
    /// was refused since the last call, naming the loss and gradient norm.
    pub fn stats(&mut self) -> Result<StepStats> {
        block_on("Model::stats", self.stats_async())
    }

    pub async fn stats_async(&mut self) -> Result<StepStats> {
        let s = with_engine!(&mut self.engine, e => e.stats_async().await)?;
        self.training.checked(s)
    }

    /// `train_step`, then `stats`.
    pub fn train_step_stats(&mut self, batch: &Batch, start: Start<'_>) -> Result<StepStats> {
        self.train_step(batch, start)?;
        self.stats()
    }

    /// The loss on `batch` (targets required), without dropout and without updating anything.
    pub fn evaluate(&mut self, batch: &Batch, start: Start<'_>) -> Result<f32> {
        block_on("Model::evaluate", self.evaluate_async(batch, start))
    }

    pub async fn evaluate_async(&mut self, batch: &Batch, start: Start<'_>) -> Result<f32> {
        let (spec, layout) = (&self.spec, &self.layout);
        with_engine!(&mut self.engine, e => {
            e.loss(spec, layout, batch, start, None, false)?;
            Ok(e.stats_async().await?.loss)
        })
    }

    /// The loss on `batch` and its gradients with respect to every parameter, a dense input and
    /// the initial states (no dropout, no update).
    pub fn loss_gradients(&mut self, batch: &Batch, start: Start<'_>) -> Result<(f32, Gradients)> {
        block_on("Model::loss_gradients", self.loss_gradients_async(batch, start))
    }

    pub async fn loss_gradients_async(
        &mut self,
        batch: &Batch,
        start: Start<'_>,
    ) -> Result<(f32, Gradients)> {
        self.not_accumulating("loss_gradients")?;
        let (spec, layout) = (&self.spec, &self.layout);
        with_engine!(&mut self.engine, e => {
            e.loss(spec, layout, batch, start, None, true)?;
            let loss = e.stats_async().await?.loss;
            Ok((loss, Self::read_gradients(e, spec, layout, batch).await?))
        })
    }

    async fn read_gradients<B: Backend>(
        e: &mut Exec<B>,
        spec: &ModelSpec,
        layout: &ParamLayout,
        batch: &Batch,
    ) -> Result<Gradients> {
        let ws = e.workspace_of(batch)?;
        let (grads, d_input, dh0, dc0) =
            (e.net.grads.clone(), ws.d_input.clone(), ws.dh0.clone(), ws.dc0.clone());
        let flat = e.read_async(&grads).await?;
        // A dense input's; an embedded one's gradient is the embedding's.
        let input = match d_input.filter(|_| matches!(spec.input, InputKind::Dense(_))) {
            Some(d) => Some(e.read_async(&d).await?),
            None => None,
        };
        Ok(Gradients {
            params: layout.entries().iter().map(|p| (p.name.clone(), flat[p.range()].to_vec())).collect(),
            input,
            h0: e.read_async(&dh0).await?,
            c0: read_optional(e, dc0).await?,
        })
    }

    /// Runs the model on `batch` (no dropout) and reads back outputs, final states and logits.
    pub fn forward(&mut self, batch: &Batch, start: Start<'_>) -> Result<Forward> {
        block_on("Model::forward", self.forward_async(batch, start))
    }

    pub async fn forward_async(&mut self, batch: &Batch, start: Start<'_>) -> Result<Forward> {
        let (spec, layout) = (&self.spec, &self.layout);
        with_engine!(&mut self.engine, e => {
            e.forward(spec, layout, batch, start)?;
            let ws = e.workspace_of(batch)?;
            let (y, hn, cn) = (ws.layers[spec.layers - 1].y.clone(), ws.hn.clone(), ws.cn.clone());
            let logits = ws.head.as_ref().map(|h| h.logits.clone());
            Ok(Forward {
                output: e.read_async(&y).await?,
                h_n: e.read_async(&hn).await?,
                c_n: read_optional(e, cn).await?,
                logits: read_optional(e, logits).await?,
            })
        })
    }

    /// Runs the forward pass and leaves everything on the device (the state for `Start::Continue`
    /// included); nothing is read back.
    pub fn run(&mut self, batch: &Batch, start: Start<'_>) -> Result<()> {
        let (spec, layout) = (&self.spec, &self.layout);
        with_engine!(&mut self.engine, e => e.forward(spec, layout, batch, start))
    }

    /// Waits until the device has finished all submitted work.
    pub fn sync(&self) -> Result<()> {
        self.engine.sync()
    }

    /// Runs the model on `batch` and reads back only the head's outputs.
    pub fn logits(&mut self, batch: &Batch, start: Start<'_>) -> Result<Vec<f32>> {
        block_on("Model::logits", self.logits_async(batch, start))
    }

    pub async fn logits_async(&mut self, batch: &Batch, start: Start<'_>) -> Result<Vec<f32>> {
        let (spec, layout) = (&self.spec, &self.layout);
        with_engine!(&mut self.engine, e => {
            e.forward(spec, layout, batch, start)?;
            let logits = e.workspace_of(batch)?.head.as_ref().map(|h| h.logits.clone());
            let logits = logits.ok_or_else(|| Error::invalid("logits", "the model has no head"))?;
            e.read_async(&logits).await
        })
    }

    /// The gradients of `sum(output * d_output) + sum(h_n * d_hn) + sum(c_n * d_cn)` with respect
    /// to every parameter, a dense input and the initial states: backpropagation from given
    /// output gradients, as `torch.autograd.backward(output, d_output)` would do.
    pub fn gradients(
        &mut self,
        batch: &Batch,
        start: Start<'_>,
        d_output: &[f32],
        d_hn: Option<&[f32]>,
        d_cn: Option<&[f32]>,
    ) -> Result<Gradients> {
        block_on("Model::gradients", self.gradients_async(batch, start, d_output, d_hn, d_cn))
    }

    pub async fn gradients_async(
        &mut self,
        batch: &Batch,
        start: Start<'_>,
        d_output: &[f32],
        d_hn: Option<&[f32]>,
        d_cn: Option<&[f32]>,
    ) -> Result<Gradients> {
        self.not_accumulating("gradients")?;
        let (spec, layout) = (&self.spec, &self.layout);
        with_engine!(&mut self.engine, e => {
            e.gradients(spec, layout, batch, start, d_output, d_hn, d_cn)?;
            Self::read_gradients(e, spec, layout, batch).await
        })
    }

    /// The optimizer, its state, the step state and the random generator: with the parameters,
    /// everything a training run needs to continue exactly.
    pub fn training_state(&mut self) -> Result<crate::train::TrainingState> {
        block_on("Model::training_state", self.training_state_async())
    }

    pub async fn training_state_async(&mut self) -> Result<crate::train::TrainingState> {
        let t = &self.training;
        with_engine!(&mut self.engine, e => t.state(e).await)
    }

    /// Restores what `training_state` returned.
    pub fn set_training_state(&mut self, state: &crate::train::TrainingState) -> Result<()> {
        let (layout, t) = (&self.layout, &mut self.training);
        with_engine!(&mut self.engine, e => t.restore(e, layout, state))
    }

    /// The state a `Start::Continue` run of batch size `batch` would start from: the final state
    /// of the last run of that batch size (none before the first).
    pub fn carried_state(&mut self, batch: usize) -> Result<Option<CarriedState>> {
        block_on("Model::carried_state", self.carried_state_async(batch))
    }

    pub async fn carried_state_async(&mut self, batch: usize) -> Result<Option<CarriedState>> {
        with_engine!(&mut self.engine, e => {
            let Some((h, c)) = e.carried_buffers(batch) else { return Ok(None) };
            Ok(Some(CarriedState { h: e.read_async(&h).await?, c: read_optional(e, c).await? }))
        })
    }
}

/// Reads `buf` where there is one.
async fn read_optional<B: Backend, W: Sync>(
    e: &mut crate::exec::Executor<B, W>,
    buf: Option<B::Buf>,
) -> Result<Option<Vec<f32>>> {
    match buf {
        Some(b) => Ok(Some(e.read_async(&b).await?)),
        None => Ok(None),
    }
}

/// What a rank mixes into its dropout seeds, so that ranks with equal shares do not draw equal
/// masks.
pub(crate) fn rank_salt(rank: usize) -> u32 {
    (rank as u32).wrapping_mul(0x9e37_79b9)
}
