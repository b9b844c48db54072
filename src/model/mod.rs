//! Models: RNN, LSTM and GRU stacks, one or two directions, with an optional linear head, on the
//! GPU or the CPU.

pub mod batch;
pub mod exec;
pub mod generate;
pub mod graph;
pub mod params;
pub mod spec;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{GpuBackend, GpuContext};
use crate::native::NativeBackend;
use crate::reference::ReferenceBackend;
use crate::rng::Rng;
use crate::update::{Clip, Optimizer};
use batch::Batch;
use exec::Exec;
pub use exec::{Start, StepStats};
use params::ParamLayout;
use spec::ModelSpec;

/// Where a model lives and runs.
#[derive(Clone, Debug)]
pub enum Device {
    /// The native CPU device: multi-threaded and vectorized, the engine of a machine without a
    /// GPU (see `native`).
    Cpu,
    /// The plain-loop reference (see `reference`): the oracle of the tests, slow, never chosen
    /// automatically.
    Reference,
    Gpu(Arc<GpuContext>),
}

impl Device {
    pub fn cpu() -> Device {
        Device::Cpu
    }

    /// The best GPU adapter (or the one `RNN_GPU_ADAPTER` names), software rasterizers included;
    /// an error when there is none.
    pub fn gpu() -> Result<Device> {
        Ok(Device::Gpu(GpuContext::new()?))
    }

    /// A hardware GPU when there is one, else the native CPU device; a software rasterizer only
    /// when `RNN_GPU_ADAPTER` names it. Says on stderr, in one line, what it chose and why (once
    /// per process).
    pub fn auto() -> Device {
        static SAID: std::sync::Once = std::sync::Once::new();
        let named = std::env::var(crate::gpu::context::ADAPTER_ENV).ok().filter(|s| !s.is_empty());
        let gpu = match &named {
            Some(_) => GpuContext::new(),
            None => GpuContext::hardware(),
        };
        let (device, why) = match gpu {
            Ok(ctx) => {
                let why = if named.is_some() { "named by RNN_GPU_ADAPTER" } else { "a hardware GPU" };
                let line = format!("running on {} ({why})", ctx.describe());
                (Device::Gpu(ctx), line)
            }
            Err(e) => {
                let reason = match e {
                    Error::NoAdapter(m) => m,
                    e => e.to_string(),
                };
                let line = format!(
                    "running on the {}, since there is no hardware GPU: {reason}",
                    crate::native::describe()
                );
                (Device::Cpu, line)
            }
        };
        SAID.call_once(|| eprintln!("rnn-gpu: {why}"));
        device
    }

    /// `cpu` (native), `reference`, `gpu` or `auto`.
    pub fn from_name(name: &str) -> Result<Device> {
        match name {
            "cpu" => Ok(Device::Cpu),
            "reference" => Ok(Device::Reference),
            "gpu" => Device::gpu(),
            "auto" => Ok(Device::auto()),
            other => Err(Error::invalid(
                "device",
                format!("unknown device {other:?}; use cpu, gpu, reference or auto"),
            )),
        }
    }

    /// The name `from_name` takes.
    pub fn name(&self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Reference => "reference",
            Device::Gpu(_) => "gpu",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => crate::native::describe(),
            Device::Reference => "CPU reference (plain loops, one thread)".to_string(),
            Device::Gpu(ctx) => ctx.describe(),
        }
    }
}

enum Engine {
    Cpu(Exec<NativeBackend>),
    Reference(Exec<ReferenceBackend<f32>>),
    Gpu(Exec<GpuBackend>),
}

/// Calls `$body` with `$e` bound to the engine's executor, whatever its backend.
macro_rules! with_exec {
    ($engine:expr, $e:ident => $body:expr) => {
        match $engine {
            Engine::Cpu($e) => $body,
            Engine::Reference($e) => $body,
            Engine::Gpu($e) => $body,
        }
    };
}

/// The outputs of a forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    /// The top layer's outputs `[T, B, D*H]` (zero at padded steps).
    pub output: Vec<f32>,
    /// Final states `[L*D, B, H]` (each sequence's state after its last valid step).
    pub h_n: Vec<f32>,
    pub c_n: Option<Vec<f32>>,
    /// The head's outputs: `[T, B, O]` many-to-many, `[B, O]` many-to-one.
    pub logits: Option<Vec<f32>>,
}

/// Refuses, before anything is allocated, a model whose parameters, gradients and optimizer
/// moments (four copies; on the GPU only the host copies of the parameters, two) cannot fit in
/// the memory this machine has available.
pub(crate) fn check_host_memory(what: &str, params: u64, device: &Device) -> Result<()> {
    let copies = match device {
        Device::Cpu | Device::Reference => 4,
        Device::Gpu(_) => 2,
    };
    let needed = params.saturating_mul(4 * copies);
    match crate::error::available_memory() {
        Some(available) if needed > available => {
            Err(Error::OutOfMemory { what: format!("{what} of {params} parameters"), needed, available })
        }
        _ => Ok(()),
    }
}

/// The recurrent state one run leaves for the next (`Start::Continue`): truncated BPTT's carried
/// state, saved in checkpoints so that a resumed run continues exactly. `[L*D, B, H]` each.
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
    engine: Engine,
    optimizer: Optimizer,
    clip: Clip,
    rng: Rng,
    skipped_seen: u32,
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
        let engine = match device {
            Device::Cpu => Engine::Cpu(Exec::new(NativeBackend::new()?, &layout, params)?),
            Device::Reference => Engine::Reference(Exec::new(ReferenceBackend::new(), &layout, params)?),
            Device::Gpu(ctx) => Engine::Gpu(Exec::new(GpuBackend::new(ctx)?, &layout, params)?),
        };
        Ok(Model {
            spec,
            layout,
            device: device.clone(),
            engine,
            optimizer: Optimizer::adam(2e-3),
            clip: Clip::default(),
            rng: Rng::seed_from_u64(seed ^ 0x5eed_0fd2_0f),
            skipped_seen: 0,
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

    /// The GPU context, when the model is on a GPU.
    pub fn gpu(&self) -> Option<&Arc<GpuContext>> {
        match &self.device {
            Device::Gpu(ctx) => Some(ctx),
            Device::Cpu | Device::Reference => None,
        }
    }

    /// The flat parameter buffer (waits for the device).
    pub fn flat_params(&mut self) -> Result<Vec<f32>> {
        with_exec!(&mut self.engine, e => { let p = e.net.params.clone(); e.read(&p) })
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
        with_exec!(&mut self.engine, e => { let p = e.net.params.clone(); e.write(&p, params) })
    }

    /// Every parameter by name, in layout order.
    pub fn named_params(&mut self) -> Result<Vec<(String, Vec<f32>)>> {
        let flat = self.flat_params()?;
        Ok(self.layout.entries().iter().map(|e| (e.name.clone(), flat[e.range()].to_vec())).collect())
    }

    /// Sets the optimizer and clipping used by `train_step`. The optimizer state is reset when
    /// the kind of optimizer changes; a new learning rate alone keeps it.
    pub fn set_optimizer(&mut self, optimizer: Optimizer, clip: Clip) -> Result<()> {
        clip.validate()?;
        optimizer.validate()?;
        let slots = with_exec!(&self.engine, e => e.net.opt.len());
        if std::mem::discriminant(&optimizer) != std::mem::discriminant(&self.optimizer)
            || optimizer.state_slots() != slots
        {
            let layout = &self.layout;
            with_exec!(&mut self.engine, e => e.net.reset_optimizer(&mut e.be, layout, &optimizer))?;
        }
        self.optimizer = optimizer;
        self.clip = clip;
        Ok(())
    }

    pub fn optimizer(&self) -> Optimizer {
        self.optimizer
    }

    pub fn clip(&self) -> Clip {
        self.clip
    }

    /// Changes only the learning rate (a schedule); no new program is recorded.
    pub fn set_lr(&mut self, lr: f32) -> Result<()> {
        let mut o = self.optimizer;
        o.set_lr(lr);
        self.set_optimizer(o, self.clip)
    }

    /// One training step on `batch` (targets required): forward, loss, backpropagation through
    /// time, clipping and the update, submitted as one program. Nothing is read back: call
    /// `stats` for the loss. A step whose loss or gradient norm is not finite is refused on the
    /// device, leaving the weights untouched, and reported by the next `stats`.
    pub fn train_step(&mut self, batch: &Batch, start: Start<'_>) -> Result<()> {
        let seed = self.rng.next_u32();
        let (spec, layout, opt, clip) = (&self.spec, &self.layout, self.optimizer, self.clip);
        with_exec!(&mut self.engine, e => e.train_step(spec, layout, batch, start, &opt, clip, seed))
    }

    /// The step state after the last training step (waits for the device). An error when a step
    /// was refused since the last call, naming the loss and gradient norm.
    pub fn stats(&mut self) -> Result<StepStats> {
        let s = with_exec!(&mut self.engine, e => e.stats())?;
        if s.skipped > self.skipped_seen {
            self.skipped_seen = s.skipped;
            return Err(Error::NonFiniteStep { loss: s.loss, grad_norm: s.grad_norm, skipped: s.skipped });
        }
        Ok(s)
    }

    /// `train_step`, then `stats`.
    pub fn train_step_stats(&mut self, batch: &Batch, start: Start<'_>) -> Result<StepStats> {
        self.train_step(batch, start)?;
        self.stats()
    }

    /// The loss on `batch` (targets required), without dropout and without updating anything.
    pub fn evaluate(&mut self, batch: &Batch, start: Start<'_>) -> Result<f32> {
        let (spec, layout) = (&self.spec, &self.layout);
        with_exec!(&mut self.engine, e => {
            e.evaluate(spec, layout, batch, start, None)?;
            Ok(e.stats()?.loss)
        })
    }

    /// The loss on `batch` and its gradients with respect to every parameter, a dense input and
    /// the initial states (no dropout, no update).
    pub fn loss_gradients(&mut self, batch: &Batch, start: Start<'_>) -> Result<(f32, Gradients)> {
        let (spec, layout) = (&self.spec, &self.layout);
        with_exec!(&mut self.engine, e => {
            e.loss_gradients(spec, layout, batch, start, None)?;
            let loss = e.stats()?.loss;
            Ok((loss, Self::read_gradients(e, layout, batch)?))
        })
    }

    fn read_gradients<B: crate::backend::Backend>(
        e: &mut Exec<B>,
        layout: &ParamLayout,
        batch: &Batch,
    ) -> Result<Gradients> {
        let ws = e.workspace_of(batch)?;
        let (grads, d_input, dh0, dc0) =
            (e.net.grads.clone(), ws.d_input.clone(), ws.dh0.clone(), ws.dc0.clone());
        let flat = e.read(&grads)?;
        Ok(Gradients {
            params: layout.entries().iter().map(|p| (p.name.clone(), flat[p.range()].to_vec())).collect(),
            input: d_input.map(|d| e.read(&d)).transpose()?,
            h0: e.read(&dh0)?,
            c0: dc0.map(|d| e.read(&d)).transpose()?,
        })
    }

    /// Runs the model on `batch` (no dropout) and reads back outputs, final states and logits.
    pub fn forward(&mut self, batch: &Batch, start: Start<'_>) -> Result<Forward> {
        let (spec, layout) = (&self.spec, &self.layout);
        with_exec!(&mut self.engine, e => {
            e.forward(spec, layout, batch, start)?;
            let ws = e.workspace_of(batch)?;
            let (y, hn, cn) = (ws.layers[spec.layers - 1].y.clone(), ws.hn.clone(), ws.cn.clone());
            let logits = ws.head.as_ref().map(|h| h.logits.clone());
            Ok(Forward {
                output: e.read(&y)?,
                h_n: e.read(&hn)?,
                c_n: cn.map(|c| e.read(&c)).transpose()?,
                logits: logits.map(|l| e.read(&l)).transpose()?,
            })
        })
    }

    /// Runs the forward pass and leaves everything on the device (the state for `Start::Continue`
    /// included); nothing is read back.
    pub fn run(&mut self, batch: &Batch, start: Start<'_>) -> Result<()> {
        let (spec, layout) = (&self.spec, &self.layout);
        with_exec!(&mut self.engine, e => e.forward(spec, layout, batch, start))
    }

    /// Waits until the device has finished all submitted work.
    pub fn sync(&self) -> Result<()> {
        match &self.engine {
            Engine::Gpu(e) => e.be.sync("sync"),
            Engine::Cpu(_) | Engine::Reference(_) => Ok(()),
        }
    }

    /// What this model has done on its GPU so far (submits, dispatches, host waits, allocations),
    /// its own work only; `None` on the CPU.
    pub fn counters(&self) -> Option<crate::gpu::Counters> {
        match &self.engine {
            Engine::Gpu(e) => Some(e.be.counters()),
            Engine::Cpu(_) | Engine::Reference(_) => None,
        }
    }

    /// Runs the model on `batch` and reads back only the head's outputs.
    pub fn logits(&mut self, batch: &Batch, start: Start<'_>) -> Result<Vec<f32>> {
        let (spec, layout) = (&self.spec, &self.layout);
        with_exec!(&mut self.engine, e => {
            e.forward(spec, layout, batch, start)?;
            let logits = e.workspace_of(batch)?.head.as_ref().map(|h| h.logits.clone());
            let logits = logits.ok_or_else(|| Error::invalid("logits", "the model has no head"))?;
            e.read(&logits)
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
        let (spec, layout) = (&self.spec, &self.layout);
        with_exec!(&mut self.engine, e => {
            e.gradients(spec, layout, batch, start, d_output, d_hn, d_cn)?;
            Self::read_gradients(e, layout, batch)
        })
    }

    /// The optimizer, its state, the step state and the random generator: with the parameters,
    /// everything a training run needs to continue exactly.
    pub fn training_state(&mut self) -> Result<crate::train::TrainingState> {
        let (optimizer, clip, rng) = (self.optimizer, self.clip, &self.rng);
        with_exec!(&mut self.engine, e => e.net.training_state(&mut e.be, optimizer, clip, rng))
    }

    /// Restores what `training_state` returned.
    pub fn set_training_state(&mut self, state: &crate::train::TrainingState) -> Result<()> {
        self.set_optimizer(state.optimizer, state.clip)?;
        with_exec!(&mut self.engine, e => e.net.write_training(&mut e.be, &state.slots, &state.step_state))?;
        self.skipped_seen = state.step_state[crate::ops::step_state::SKIPPED] as u32;
        self.rng = Rng::from_state(state.rng);
        Ok(())
    }

    /// The state a `Start::Continue` run of batch size `batch` would start from: the final state
    /// of the last run of that batch size (none before the first).
    pub fn carried_state(&mut self, batch: usize) -> Result<Option<CarriedState>> {
        with_exec!(&mut self.engine, e => {
            let Some((h, c)) = e.carried_buffers(batch) else { return Ok(None) };
            Ok(Some(CarriedState { h: e.read(&h)?, c: c.map(|c| e.read(&c)).transpose()? }))
        })
    }

    /// The recorded GPU program of `kind` ("train", "forward", ...) for this batch shape, once a
    /// call has recorded it.
    pub fn program(&self, batch: &Batch, kind: &str) -> Option<&crate::gpu::Program> {
        match &self.engine {
            Engine::Gpu(e) => {
                e.be.programs()
                    .find(|(k, _)| k.kind == kind && k.steps == batch.steps && k.batch == batch.batch)
                    .map(|(_, p)| p)
            }
            Engine::Cpu(_) | Engine::Reference(_) => None,
        }
    }
}
