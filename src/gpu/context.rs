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

/// Environment variable that picks an adapter by a part of its name or by backend
/// (`vulkan`, `metal`, `dx12`), for example `RNN_GPU_ADAPTER=llvmpipe`.
pub const ADAPTER_ENV: &str = "RNN_GPU_ADAPTER";
/// Environment variable that forces a matmul variant (`register` or `shared`) on any adapter.
pub const MATMUL_ENV: &str = "RNN_GPU_MATMUL";

/// How a matmul is tiled. Every variant passes the same tests; the context picks one per adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulVariant {
    /// Each thread keeps a block of C in registers and reads A and B straight from memory; no
    /// workgroup barriers. Software rasterizers (lavapipe) run this one far faster.
    Register,
    /// 64x64 tiles of C staged through workgroup memory; what real GPUs want.
    Shared,
}

impl MatmulVariant {
    pub const ALL: [MatmulVariant; 2] = [MatmulVariant::Register, MatmulVariant::Shared];

    pub fn name(self) -> &'static str {
        match self {
            MatmulVariant::Register => "register",
            MatmulVariant::Shared => "shared",
        }
    }
}

/// How the matmul and the fused step kernels read the rows that all threads of a workgroup share
/// (A in the matmul, h or the gate gradients in the steps; shaders/*_rows_*.wgsl). Both variants
/// pass the same checks; the context picks `Subgroup` where the adapter offers subgroup
/// operations on at least 8 lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SharedRows {
    /// Every thread loads the rows itself.
    Loads,
    /// Lane i loads row i and `subgroupBroadcast` hands it to the others: one load where
    /// lavapipe would otherwise loop over the SIMD lanes eight times.
    Subgroup,
}

impl SharedRows {
    /// The shader family of `base` in this variant: `"matmul"`, `"lstm"`, `"gru"` and `"rnn"` have
    /// a subgroup family; any other family reads no shared rows and is its own.
    pub(crate) fn family(self, base: &'static str) -> &'static str {
        match (self, base) {
            (SharedRows::Loads, b) => b,
            (SharedRows::Subgroup, "matmul") => "matmul_subgroup",
            (SharedRows::Subgroup, "lstm") => "lstm_subgroup",
            (SharedRows::Subgroup, "gru") => "gru_subgroup",
            (SharedRows::Subgroup, "rnn") => "rnn_subgroup",
            (SharedRows::Subgroup, b) => b,
        }
    }
}

/// The batch rows per thread the step kernels come in (shaders/step_common.wgsl::ROWS).
pub const STEP_ROWS: [usize; 2] = [8, 16];

/// Where the fused step kernels read their inputs (states, gates, the input projection, the
/// gradients) from (shaders/step_reads_*.wgsl); W_hh is read through its texture copy in both.
/// Both variants pass the same checks; the context picks `Textures` on a CPU adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepInputs {
    /// Storage buffers, where the kernels write them: no copies.
    Storage,
    /// Texture copies of the buffers, refreshed by the program where a step wrote them
    /// (src/gpu/program.rs::Program::dispatch_writing). On lavapipe a storage load inserts each
    /// SIMD lane's value through memory, one component at a time; a texel load is one gather:
    /// the LSTM H=256 B=32 steps went 1.5x faster for copies of a few percent of that.
    Textures,
}

impl StepInputs {
    pub const ALL: [StepInputs; 2] = [StepInputs::Storage, StepInputs::Textures];

    /// The step shader family of `cell` (`"rnn"`, `"lstm"` or `"gru"`) read so, its shared rows
    /// read by `rows`. Any other family has no texture variant and is its own (the pipeline
    /// then fails to build with the family named, rather than running another cell's kernel).
    pub(crate) fn family(self, rows: SharedRows, cell: &'static str) -> &'static str {
        match (self, rows.family(cell)) {
            (StepInputs::Textures, "rnn") => "rnn_tex",
            (StepInputs::Textures, "lstm") => "lstm_tex",
            (StepInputs::Textures, "gru") => "gru_tex",
            (StepInputs::Textures, "rnn_subgroup") => "rnn_subgroup_tex",
            (StepInputs::Textures, "lstm_subgroup") => "lstm_subgroup_tex",
            (StepInputs::Textures, "gru_subgroup") => "gru_subgroup_tex",
            (_, family) => family,
        }
    }
}

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
}

type PipelineKey = (&'static str, &'static str, Vec<(&'static str, u64)>);

pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    timestamps: bool,
    matmul_variant: MatmulVariant,
    shared_rows: SharedRows,
    step_rows: usize,
    step_inputs: StepInputs,
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

/// Lists the adapters wgpu can see, best first (discrete, integrated, virtual, other, software).
pub fn list_adapters() -> Vec<wgpu::AdapterInfo> {
    let instance = new_instance();
    let mut adapters: Vec<_> = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .into_iter()
        .map(|a| a.get_info())
        .collect();
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
        let selector = std::env::var(ADAPTER_ENV).ok().filter(|s| !s.is_empty());
        Self::with_selector(selector.as_deref())
    }

    /// The best hardware adapter (discrete, integrated, virtual or other), passing over software
    /// rasterizers (lavapipe, SwiftShader, WARP), which run GPU code on the CPU: for those, the
    /// native CPU device is faster. An error names what was found when there is none.
    pub fn hardware() -> Result<Arc<Self>> {
        let instance = new_instance();
        let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
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
        Self::from_adapter(adapters.remove(0))
    }

    /// Opens the best adapter whose name, driver or backend matches `selector` (any adapter when
    /// `None`).
    pub fn with_selector(selector: Option<&str>) -> Result<Arc<Self>> {
        let instance = new_instance();
        let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        if adapters.is_empty() {
            return Err(Error::NoAdapter(
                "wgpu found no adapter; on Debian or Ubuntu install the software Vulkan driver with \
                 `apt-get install mesa-vulkan-drivers`, or use the CPU device"
                    .into(),
            ));
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
        Self::from_adapter(adapter)
    }

    fn from_adapter(adapter: wgpu::Adapter) -> Result<Arc<Self>> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let wanted = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        // The subgroup variants broadcast from lanes 0 to 7.
        let subgroups = adapter.features().contains(wgpu::Features::SUBGROUP) && info.subgroup_min_size >= 8;
        let mut features = adapter.features() & wanted;
        if subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("rnn-gpu"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::NoAdapter(format!("{} refused a device: {e}", info.name)))?;

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

        let matmul_variant = match std::env::var(MATMUL_ENV).ok().as_deref() {
            Some("register") => MatmulVariant::Register,
            Some("shared") => MatmulVariant::Shared,
            _ if info.device_type == wgpu::DeviceType::Cpu => MatmulVariant::Register,
            _ => MatmulVariant::Shared,
        };

        // On a CPU adapter the step kernels' accumulators live in memory anyway (spills cost
        // little) and every texel of W_hh fetched is dear: 16 batch rows a thread halve the
        // fetches per multiply-add. A GPU would spill 256 accumulators a thread.
        let step_rows = if info.device_type == wgpu::DeviceType::Cpu { 16 } else { 8 };
        // On a GPU a storage load costs what a texel load does, and the copies would be extra
        // traffic; a CPU adapter needs 6 texture bindings a step kernel beside W_hh's.
        let step_inputs = if info.device_type == wgpu::DeviceType::Cpu
            && limits.max_storage_textures_per_shader_stage >= 8
        {
            StepInputs::Textures
        } else {
            StepInputs::Storage
        };

        Ok(Arc::new(GpuContext {
            device,
            queue,
            info,
            limits,
            timestamps: features.contains(wanted),
            matmul_variant,
            shared_rows: if subgroups { SharedRows::Subgroup } else { SharedRows::Loads },
            step_rows,
            step_inputs,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            errors,
            lost,
        }))
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

    pub fn matmul_variant(&self) -> MatmulVariant {
        self.matmul_variant
    }

    /// How this context's matmul and step kernels read the rows a workgroup shares (programs may
    /// pick the other variant, see [`crate::gpu::Program::set_shared_rows`]).
    pub fn shared_rows(&self) -> SharedRows {
        self.shared_rows
    }

    /// Batch rows per thread preferred in the step kernels of a batch larger than 8 (one of
    /// [`STEP_ROWS`]): 16 on a CPU adapter (8 where 16 would leave cores idle,
    /// src/gpu/kernels.rs::StepCheck), 8 on a GPU; programs may pick either, see
    /// [`crate::gpu::Program::set_step_rows`].
    pub fn step_rows(&self) -> usize {
        self.step_rows
    }

    /// Where this context's step kernels read their inputs from (programs may pick the other
    /// variant, see [`crate::gpu::Program::set_step_inputs`]).
    pub fn step_inputs(&self) -> StepInputs {
        self.step_inputs
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
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        match pollster::block_on(scope.pop()) {
            Some(e) => Err(Error::Gpu { op: format!("compiling {label}"), message: e.to_string() }),
            None => Ok(module),
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
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &float_constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu { op, message: e.to_string() });
        }
        let layout = pipeline.get_bind_group_layout(0);
        let p = Arc::new(Pipeline { pipeline, layout, name: entry });
        self.pipelines.lock().expect("pipeline cache").insert(key, p.clone());
        Ok(p)
    }

    /// Blocks until the queue is idle. (Whoever waits counts it in its `Meter`.)
    pub fn wait(&self, op: &str) -> Result<()> {
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
    use super::{SharedRows, StepInputs};

    /// Each combination of step inputs, shared rows and cell names a shader family of its own.
    #[test]
    fn every_step_variant_names_its_own_shader_family() {
        let mut seen = Vec::new();
        for inputs in StepInputs::ALL {
            for rows in [SharedRows::Loads, SharedRows::Subgroup] {
                for cell in ["rnn", "lstm", "gru"] {
                    let family = inputs.family(rows, cell);
                    assert!(crate::gpu::shaders::source(family).is_some(), "{family}: no such shader");
                    assert!(!seen.contains(&family), "{family} named twice");
                    seen.push(family);
                }
            }
        }
    }
}
