//! The GPU context: adapter choice, the device and its limits, compiled pipelines, error capture
//! and the counters that show the execution model at work.
//!
//! wgpu reports validation errors to a callback that panics by default; the context installs its
//! own, collects them, and turns them into `Err` at the next check, so that no input a caller can
//! pass brings the process down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::wait::block_on;

/// Environment variable that picks an adapter by a part of its name or by backend
/// (`vulkan`, `metal`, `dx12`), for example `RNN_GPU_ADAPTER=llvmpipe`.
pub const ADAPTER_ENV: &str = "RNN_GPU_ADAPTER";
/// Environment variable that builds the shader modules with wgpu's runtime checks (bounds clamps
/// on every access, loop counters) when set to `checked`; the test command sets it. Without it the
/// audited kernels run as written (wgpu's trusted modules): every launcher checks each buffer
/// against the extent its kernel touches before recording it.
pub const SHADERS_ENV: &str = "RNN_GPU_SHADERS";
/// Environment variable that opens the device with WebGPU's default limits (what a browser
/// grants without asking) instead of the adapter's own, when set to `webgpu`.
pub const LIMITS_ENV: &str = "RNN_GPU_LIMITS";

/// What the engine does per training step on the GPU, counted. `bench --verbose` prints the
/// difference of two snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub submits: u64,
    pub dispatches: u64,
    pub host_waits: u64,
    pub bytes_allocated: u64,
    pub buffers_allocated: u64,
}

impl std::ops::Sub for Counters {
    type Output = Counters;
    fn sub(self, o: Counters) -> Counters {
        Counters {
            submits: self.submits - o.submits,
            dispatches: self.dispatches - o.dispatches,
            host_waits: self.host_waits - o.host_waits,
            bytes_allocated: self.bytes_allocated - o.bytes_allocated,
            buffers_allocated: self.buffers_allocated - o.buffers_allocated,
        }
    }
}

#[derive(Debug, Default)]
struct AtomicCounters {
    submits: AtomicU64,
    dispatches: AtomicU64,
    host_waits: AtomicU64,
    bytes_allocated: AtomicU64,
    buffers_allocated: AtomicU64,
}

/// Counts the work of one owner (a model's backend, a program): its submits, waits and
/// allocations, and nobody else's, so that two models sharing a context (tests running in
/// parallel) never see each other's work. Clones count into the same totals.
#[derive(Clone, Debug, Default)]
pub struct Meter(Arc<AtomicCounters>);

impl Meter {
    pub fn counters(&self) -> Counters {
        let c = &self.0;
        Counters {
            submits: c.submits.load(Ordering::Relaxed),
            dispatches: c.dispatches.load(Ordering::Relaxed),
            host_waits: c.host_waits.load(Ordering::Relaxed),
            bytes_allocated: c.bytes_allocated.load(Ordering::Relaxed),
            buffers_allocated: c.buffers_allocated.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn submit(&self, dispatches: u64) {
        self.0.submits.fetch_add(1, Ordering::Relaxed);
        self.0.dispatches.fetch_add(dispatches, Ordering::Relaxed);
    }

    pub(crate) fn wait(&self) {
        self.0.host_waits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn allocated(&self, bytes: u64) {
        self.0.bytes_allocated.fetch_add(bytes, Ordering::Relaxed);
        self.0.buffers_allocated.fetch_add(1, Ordering::Relaxed);
    }
}

/// A compiled compute pipeline and the layout of its bind group 0.
pub(crate) struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub name: &'static str,
    /// Threads per workgroup, from the entry point's `@workgroup_size`.
    pub threads: u32,
}

/// The threads per workgroup that `@workgroup_size(x, y, z)` declares for `entry` in `source`
/// (literal sizes, as every kernel under shaders/ writes them).
pub(crate) fn workgroup_threads(source: &str, entry: &str) -> Option<u32> {
    let at = source.find(&format!("fn {entry}("))?;
    let attr = source[..at].rfind("@workgroup_size(")?;
    let args = &source[attr + "@workgroup_size(".len()..at];
    let args = &args[..args.find(')')?];
    args.split(',').map(|a| a.trim().trim_end_matches('u').parse::<u32>().ok()).product()
}

type PipelineKey = (&'static str, &'static str, Vec<(&'static str, u64)>);

pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    timestamps: bool,
    checked: bool,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<Pipeline>>>,
    errors: Arc<Mutex<Vec<String>>>,
    lost: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .finish()
    }
}

fn device_type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn matches_selector(info: &wgpu::AdapterInfo, selector: &str) -> bool {
    let s = selector.to_lowercase();
    let backend = format!("{:?}", info.backend).to_lowercase();
    info.name.to_lowercase().contains(&s) || backend == s || info.driver.to_lowercase().contains(&s)
}

/// Whether shader modules are built checked (`RNN_GPU_SHADERS=checked`) or trusted (the default).
fn shaders_checked() -> Result<bool> {
    match std::env::var(SHADERS_ENV).ok().as_deref() {
        None | Some("") | Some("trusted") => Ok(false),
        Some("checked") => Ok(true),
        Some(other) => Err(Error::invalid(
            "GpuContext",
            format!("{SHADERS_ENV}={other}: expected `checked` or `trusted`"),
        )),
    }
}

/// Lists the adapters wgpu can see, best first (discrete, integrated, virtual, other, software).
pub fn list_adapters() -> Vec<wgpu::AdapterInfo> {
    let adapters = crate::wait::block_on("list_adapters", async { Ok(list_adapters_async().await) });
    adapters.unwrap_or_default()
}

pub async fn list_adapters_async() -> Vec<wgpu::AdapterInfo> {
    let instance = new_instance();
    let mut adapters: Vec<_> =
        instance.enumerate_adapters(wgpu::Backends::all()).await.into_iter().map(|a| a.get_info()).collect();
    adapters.sort_by_key(|i| device_type_rank(i.device_type));
    adapters
}

fn new_instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    // Validation layers are for debugging wgpu itself; they slow every call. WGPU_* variables
    // still switch them on.
    desc.flags = wgpu::InstanceFlags::empty().with_env();
    wgpu::Instance::new(desc)
}

impl GpuContext {
    /// Opens the best adapter, or the one named by `RNN_GPU_ADAPTER` when it is set.
    pub fn new() -> Result<Arc<Self>> {
        block_on("GpuContext::new", Self::new_async())
    }

    /// As [`GpuContext::new`], awaited (in a browser, the way to open the GPU).
    pub async fn new_async() -> Result<Arc<Self>> {
        let selector = std::env::var(ADAPTER_ENV).ok().filter(|s| !s.is_empty());
        Self::with_selector_async(selector.as_deref()).await
    }

    /// The best hardware adapter (discrete, integrated, virtual or other), passing over software
    /// rasterizers (lavapipe, SwiftShader, WARP), which run GPU code on the CPU: for those, the
    /// native CPU device is faster. An error names what was found when there is none.
    pub fn hardware() -> Result<Arc<Self>> {
        Self::hardware_at(0)
    }

    /// As [`GpuContext::hardware`], awaited.
    pub async fn hardware_async() -> Result<Arc<Self>> {
        Self::hardware_at_async(0).await
    }

    /// As `hardware`, for one of several processes on a machine with several GPUs: the adapter
    /// `index` (modulo their count) among those of the best kind.
    pub fn hardware_at(index: usize) -> Result<Arc<Self>> {
        block_on("GpuContext::hardware_at", Self::hardware_at_async(index))
    }

    /// As [`GpuContext::hardware_at`], awaited.
    pub async fn hardware_at_async(index: usize) -> Result<Arc<Self>> {
        let instance = new_instance();
        let mut adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
        let software: Vec<String> = adapters
            .iter()
            .map(|a| a.get_info())
            .filter(|i| i.device_type == wgpu::DeviceType::Cpu)
            .map(|i| i.name)
            .collect();
        adapters.retain(|a| a.get_info().device_type != wgpu::DeviceType::Cpu);
        adapters.sort_by_key(|a| device_type_rank(a.get_info().device_type));
        if adapters.is_empty() {
            let found = if software.is_empty() {
                "wgpu finds no adapter".to_string()
            } else {
                format!("only the software rasterizer {}, which --device gpu selects", software.join(", "))
            };
            return Err(Error::NoAdapter(found));
        }
        let best = adapters[0].get_info().device_type;
        adapters.retain(|a| a.get_info().device_type == best);
        // One GPU reached through two backends (Vulkan and DX12 on Windows) counts once.
        let mut seen = std::collections::HashSet::new();
        adapters.retain(|a| {
            let i = a.get_info();
            i.device == 0 || seen.insert((i.vendor, i.device))
        });
        let n = adapters.len();
        Self::from_adapter(adapters.remove(index % n)).await
    }

    /// Opens the best adapter whose name, driver or backend matches `selector` (any adapter when
    /// `None`).
    pub fn with_selector(selector: Option<&str>) -> Result<Arc<Self>> {
        block_on("GpuContext::with_selector", Self::with_selector_async(selector))
    }

    /// As [`GpuContext::with_selector`], awaited.
    pub async fn with_selector_async(selector: Option<&str>) -> Result<Arc<Self>> {
        let instance = new_instance();
        let mut adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
        if adapters.is_empty() {
            let advice = if cfg!(target_arch = "wasm32") {
                "the browser offers no WebGPU adapter (WebGPU is off, or this browser or GPU lacks it)"
            } else {
                "wgpu found no adapter; on Debian or Ubuntu install the software Vulkan driver with \
                 `apt-get install mesa-vulkan-drivers`, or use the CPU device"
            };
            return Err(Error::NoAdapter(advice.into()));
        }
        adapters.sort_by_key(|a| device_type_rank(a.get_info().device_type));
        let adapter = match selector {
            None => adapters.remove(0),
            Some(sel) => {
                let names: Vec<String> = adapters
                    .iter()
                    .map(|a| {
                        let i = a.get_info();
                        format!("{} ({:?})", i.name, i.backend)
                    })
                    .collect();
                let pos =
                    adapters.iter().position(|a| matches_selector(&a.get_info(), sel)).ok_or_else(|| {
                        Error::NoAdapter(format!(
                            "{ADAPTER_ENV}={sel} matches none of the adapters: {}",
                            names.join(", ")
                        ))
                    })?;
                adapters.remove(pos)
            }
        };
        Self::from_adapter(adapter).await
    }

    async fn from_adapter(adapter: wgpu::Adapter) -> Result<Arc<Self>> {
        let info = adapter.get_info();
        let wanted = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        let features = adapter.features() & wanted;
        let limits = match std::env::var(LIMITS_ENV).ok().as_deref() {
            None | Some("") | Some("adapter") => adapter.limits(),
            Some("webgpu") => wgpu::Limits::defaults(),
            Some(other) => {
                return Err(Error::invalid(
                    "GpuContext",
                    format!("{LIMITS_ENV}={other}: expected `webgpu` or `adapter`"),
                ));
            }
        };
        let checked = shaders_checked()?;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("rnn-gpu"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::NoAdapter(format!("{} refused a device: {e}", info.name)))?;
        Ok(Arc::new(Self::on_device(info, device, queue, limits, features.contains(wanted), checked)))
    }

    /// A context on a device the application already has (a game engine's, a UI's): rnn-gpu's
    /// buffers and pipelines live beside the application's, under the device's own limits.
    /// `info` is its adapter's (`wgpu::Adapter::get_info`). Timestamps are used where the device
    /// was created with them. rnn-gpu installs its handlers for the device's uncaptured errors and
    /// its loss (it reports them as errors of its next call), replacing any the application set.
    pub fn from_device(
        info: wgpu::AdapterInfo,
        device: wgpu::Device,
        queue: wgpu::Queue,
    ) -> Result<Arc<Self>> {
        let wanted = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        let timestamps = device.features().contains(wanted);
        let limits = device.limits();
        Ok(Arc::new(Self::on_device(info, device, queue, limits, timestamps, shaders_checked()?)))
    }

    fn on_device(
        info: wgpu::AdapterInfo,
        device: wgpu::Device,
        queue: wgpu::Queue,
        limits: wgpu::Limits,
        timestamps: bool,
        checked: bool,
    ) -> GpuContext {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        let lost = Arc::new(Mutex::new(None));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut l) = lost_sink.lock() {
                *l = Some(format!("{reason:?}: {message}"));
            }
        });

        GpuContext {
            device,
            queue,
            info,
            limits,
            timestamps,
            checked,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            errors,
            lost,
        }
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Whether the adapter can time kernels with timestamp queries.
    pub fn has_timestamps(&self) -> bool {
        self.timestamps
    }

    /// Whether the shader modules keep wgpu's runtime checks ([`SHADERS_ENV`]).
    pub fn checked_shaders(&self) -> bool {
        self.checked
    }

    /// A one-line description: name, backend, device type.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            self.info.name, self.info.backend, self.info.device_type, self.info.driver, self.info.driver_info
        )
    }

    /// Turns errors that wgpu reported since the last check into an `Err`.
    pub(crate) fn check(&self, op: &str) -> Result<()> {
        if let Some(reason) = self.lost.lock().ok().and_then(|l| l.clone()) {
            return Err(Error::DeviceLost(reason));
        }
        let mut errors = self
            .errors
            .lock()
            .map_err(|_| Error::Gpu { op: op.to_string(), message: "error log poisoned".into() })?;
        if errors.is_empty() {
            return Ok(());
        }
        let message = errors.join("; ");
        errors.clear();
        Err(Error::Gpu { op: op.to_string(), message })
    }

    /// Compiles WGSL source; a validation error comes back as `Err` with the compiler's message.
    pub fn compile(&self, label: &str, source: &str) -> Result<wgpu::ShaderModule> {
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        self.scoped(
            wgpu::ErrorFilter::Validation,
            || format!("compiling {label}"),
            || {
                if self.checked {
                    return self.device.create_shader_module(desc);
                }
                // SAFETY: the kernels under shaders/ index only within the extents their launchers
                // (src/gpu/kernels/) check every buffer against, and every loop is bounded by its
                // parameters. Validation still runs; only the injected bounds clamps and loop
                // counters are left out.
                unsafe {
                    self.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
                }
            },
        )
    }

    /// Runs `make`, which creates a wgpu object, with the errors of `filter` it raises as this
    /// call's `Err` (`op` names the call). Natively an error scope catches them; a browser
    /// delivers a scope's result only after control returns to its event loop, so there the
    /// device's uncaptured-error handler collects them, and the next `check` reports them.
    pub(crate) fn scoped<T>(
        &self,
        filter: wgpu::ErrorFilter,
        op: impl FnOnce() -> String,
        make: impl FnOnce() -> T,
    ) -> Result<T> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let scope = self.device.push_error_scope(filter);
            let made = make();
            match pollster::block_on(scope.pop()) {
                Some(e) => Err(Error::Gpu { op: op(), message: e.to_string() }),
                None => Ok(made),
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = filter;
            let made = make();
            self.check(&op())?;
            Ok(made)
        }
    }

    /// The pipeline for `entry` in `shader` (a file under shaders/), specialised by the override
    /// constants given; compiled once and cached. WGSL errors come back as `Err`.
    pub(crate) fn pipeline(
        &self,
        shader: &'static str,
        entry: &'static str,
        constants: &[(&'static str, u64)],
    ) -> Result<Arc<Pipeline>> {
        let key = (shader, entry, constants.to_vec());
        if let Some(p) = self.pipelines.lock().expect("pipeline cache").get(&key) {
            return Ok(p.clone());
        }
        let source = crate::gpu::shaders::source(shader).ok_or_else(|| Error::Gpu {
            op: format!("{shader}::{entry}"),
            message: format!("no shader file named {shader}"),
        })?;
        let op = format!("compiling shaders/{shader}.wgsl::{entry}");
        let module = {
            let mut modules = self.modules.lock().expect("module cache");
            match modules.get(shader) {
                Some(m) => m.clone(),
                None => {
                    let m = self
                        .compile(shader, source)
                        .map_err(|e| Error::Gpu { op: op.clone(), message: e.to_string() })?;
                    modules.insert(shader, m.clone());
                    m
                }
            }
        };
        let float_constants: Vec<(&str, f64)> = constants.iter().map(|&(k, v)| (k, v as f64)).collect();
        let pipeline = self.scoped(
            wgpu::ErrorFilter::Validation,
            || op.clone(),
            || {
                self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: None,
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &float_constants,
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                })
            },
        )?;
        let layout = pipeline.get_bind_group_layout(0);
        let threads = workgroup_threads(source, entry).ok_or_else(|| Error::Gpu {
            op: op.clone(),
            message: "no literal @workgroup_size for this entry point".into(),
        })?;
        let p = Arc::new(Pipeline { pipeline, layout, name: entry, threads });
        self.pipelines.lock().expect("pipeline cache").insert(key, p.clone());
        Ok(p)
    }

    /// Natively, blocks until the queue is idle; in a browser the GPU progresses on its own, and
    /// the future that waits for a result is what is awaited. (Whoever waits counts it in its
    /// `Meter`.)
    pub fn wait(&self, op: &str) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu { op: op.to_string(), message: e.to_string() })?;
        self.check(op)
    }

    pub(crate) fn submit(&self, encoder: wgpu::CommandEncoder) {
        self.queue.submit(Some(encoder.finish()));
    }
}

#[cfg(test)]
mod tests {
    /// Every entry point of every family declares a workgroup size the profile can read.
    #[test]
    fn every_entry_point_has_a_literal_workgroup_size() {
        for (family, source) in crate::gpu::shaders::families() {
            for (i, _) in source.match_indices("@compute") {
                let name = source[i..].split("fn ").nth(1).and_then(|r| r.split('(').next()).unwrap_or("");
                let threads = super::workgroup_threads(source, name);
                assert!(threads.is_some_and(|t| (1..=256).contains(&t)), "{family}::{name}: {threads:?}");
            }
        }
    }
}
