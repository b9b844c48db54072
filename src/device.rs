//! The devices a model can live on, and the one place that names their backends: `Engine`, a
//! model's executor on whichever backend its device has.

use std::sync::Arc;

use crate::backend::{Backend, ProgramKey};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::gpu::{GpuBackend, GpuContext, Program};
use crate::model::params::ParamLayout;
use crate::native::NativeBackend;
use crate::reference::ReferenceBackend;

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
    /// when `RNN_GPU_ADAPTER` names it. Says in one line what it chose and why, once per process,
    /// through the `log` crate at level info (the command line prints it on stderr).
    pub fn auto() -> Device {
        Device::auto_at(0)
    }

    /// `auto` for the process of local rank `local_rank` among several on one machine: with
    /// several GPUs, each rank gets its own (`GpuContext::hardware_at`).
    pub fn auto_at(local_rank: usize) -> Device {
        static SAID: std::sync::Once = std::sync::Once::new();
        let named = std::env::var(crate::gpu::context::ADAPTER_ENV).ok().filter(|s| !s.is_empty());
        let gpu = match &named {
            Some(_) => GpuContext::new(),
            None => GpuContext::hardware_at(local_rank),
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
        SAID.call_once(|| log::info!("{why}"));
        device
    }

    /// `cpu` (native), `reference`, `gpu` or `auto`.
    pub fn from_name(name: &str) -> Result<Device> {
        Device::from_name_at(name, 0)
    }

    /// `from_name` for the process of local rank `local_rank` among several on one machine:
    /// `gpu` and `auto` give each rank its own GPU where there are several.
    pub fn from_name_at(name: &str, local_rank: usize) -> Result<Device> {
        let named = std::env::var(crate::gpu::context::ADAPTER_ENV).is_ok_and(|s| !s.is_empty());
        match name {
            "cpu" => Ok(Device::Cpu),
            "reference" => Ok(Device::Reference),
            "gpu" if local_rank > 0 && !named => {
                GpuContext::hardware_at(local_rank).or_else(|_| GpuContext::new()).map(Device::Gpu)
            }
            "gpu" => Device::gpu(),
            "auto" => Ok(Device::auto_at(local_rank)),
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

/// A kind of model, by the workspace it keeps per batch shape on backend `B`.
pub(crate) trait Plan {
    type Ws<B: Backend>: Sync;
}

/// A model's executor, on the backend of its device.
pub(crate) enum Engine<P: Plan> {
    Cpu(Executor<NativeBackend, P::Ws<NativeBackend>>),
    Reference(Executor<ReferenceBackend<f32>, P::Ws<ReferenceBackend<f32>>>),
    Gpu(Executor<GpuBackend, P::Ws<GpuBackend>>),
}

/// Calls `$body` with `$e` bound to the engine's executor, whatever its backend.
macro_rules! with_engine {
    ($engine:expr, $e:ident => $body:expr) => {
        match $engine {
            $crate::device::Engine::Cpu($e) => $body,
            $crate::device::Engine::Reference($e) => $body,
            $crate::device::Engine::Gpu($e) => $body,
        }
    };
}
pub(crate) use with_engine;

impl<P: Plan> Engine<P> {
    /// The network of `layout` holding `params` on `device`.
    pub fn new(device: &Device, layout: &ParamLayout, params: &[f32]) -> Result<Engine<P>> {
        Ok(match device {
            Device::Cpu => Engine::Cpu(Executor::new(NativeBackend::new()?, layout, params)?),
            Device::Reference => Engine::Reference(Executor::new(ReferenceBackend::new(), layout, params)?),
            Device::Gpu(ctx) => Engine::Gpu(Executor::new(GpuBackend::new(ctx)?, layout, params)?),
        })
    }

    /// Waits until the device has finished all submitted work.
    pub fn sync(&self) -> Result<()> {
        match self {
            Engine::Gpu(e) => e.be.sync("sync"),
            Engine::Cpu(_) | Engine::Reference(_) => Ok(()),
        }
    }

    /// What the model has done on its GPU so far; `None` on the CPU.
    pub fn counters(&self) -> Option<crate::gpu::Counters> {
        match self {
            Engine::Gpu(e) => Some(e.be.counters()),
            Engine::Cpu(_) | Engine::Reference(_) => None,
        }
    }

    /// The recorded GPU program that `matches` picks, once a call has recorded it.
    pub fn program(&self, matches: impl Fn(&ProgramKey) -> bool) -> Option<&Program> {
        match self {
            Engine::Gpu(e) => e.be.programs().find(|(k, _)| matches(k)).map(|(_, p)| p),
            Engine::Cpu(_) | Engine::Reference(_) => None,
        }
    }
}

/// A model's GPU, seen from the model: its context, counters and recorded programs (`None` on
/// the CPU devices).
impl crate::model::Model {
    /// The GPU context, when the model is on a GPU.
    pub fn gpu(&self) -> Option<&Arc<GpuContext>> {
        match self.device() {
            Device::Gpu(ctx) => Some(ctx),
            Device::Cpu | Device::Reference => None,
        }
    }

    /// What this model has done on its GPU so far (submits, dispatches, host waits, allocations),
    /// its own work only; `None` on the CPU.
    pub fn counters(&self) -> Option<crate::gpu::Counters> {
        self.engine.counters()
    }

    /// The recorded GPU program of `kind` ("train", "forward", ...) for this batch shape, once a
    /// call has recorded it.
    pub fn program(&self, batch: &crate::Batch, kind: &str) -> Option<&Program> {
        self.engine.program(|k| k.kind == kind && k.steps == batch.steps && k.batch == batch.batch)
    }
}
