//! A program: a recorded list of kernel dispatches (with their bind groups and parameters built
//! once), replayed into one command encoder and submitted once.
//!
//! A training step is built as a program the first time a batch shape is seen; every later step
//! only uploads its batch and replays the program: no pipeline compilation, no bind group or
//! buffer creation, one submit.

use std::ops::Range;
use std::sync::Arc;

use bytemuck::Pod;

use super::context::{GpuContext, Meter, Pipeline, STEP_ROWS, SharedRows, StepInputs};
use super::tensor::{GpuTensor, whole_vec4s};
use crate::error::{Error, Result};

/// Bytes of each parameter chunk; parameter structs are packed into chunks at 256-byte slots
/// (the largest storage-offset alignment WebGPU allows).
///
/// Parameters are read-only storage, not uniform buffers: lavapipe (Mesa 22) inlines the values
/// of uniforms that bound a loop and recompiles the shader at every dispatch when that shrinks it
/// enough, which made training with changing shapes (seq2seq batches) seconds a step and leaked
/// memory. Storage loads are never inlined; on GPUs the few scalar loads cost the same.
const PARAM_CHUNK: u64 = 64 * 1024;
const PARAM_SLOT: u64 = 256;

/// Texels (4 floats each) per row of a texture copy; must match
/// shaders/common.wgsl::TEXELS_PER_ROW.
const TEXELS_PER_ROW: u32 = 4096;

/// One timed replay of a program ([`Program::profile`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// (kernel name, seconds) per dispatch, in order.
    pub kernels: Vec<(&'static str, f64)>,
    /// Seconds from the first kernel's start to the last one's end: the kernels and what runs
    /// between them (copies, the driver's work for each dispatch).
    pub span: f64,
}

enum Command {
    Dispatch {
        pipeline: Arc<Pipeline>,
        bind_group: wgpu::BindGroup,
        groups: [u32; 3],
    },
    Copy {
        src: GpuTensor,
        dst: GpuTensor,
    },
    Clear {
        dst: GpuTensor,
    },
    /// Copies texels `texels` of `src` (4 elements each) into the texture copy `texture`.
    ToTexture {
        src: GpuTensor,
        texture: usize,
        texels: Range<u32>,
    },
}

/// A copy of a tensor in an rgba32float texture, bound as a read-only storage texture and read
/// by kernels with `textureLoad` (shaders/common.wgsl::texel): on lavapipe a texel load is one
/// gather, where a storage-buffer load is a loop over the SIMD lanes that inserts each lane's
/// value through memory, one component at a time (benches/loads.rs: 10 to 20 times the cost).
/// W_hh and the step kernels' other inputs on CPU adapters, B of the register matmul and the gate
/// gradients (bias_grad4, scatter_add4) are read so. The tensor stays the source of truth; the
/// program copies it into the texture before the first kernel that reads it, and after that
/// only the texels a command since may have written (a recurrent step writes one time step of
/// its outputs: the next step's copy is of that step alone).
struct TextureCopy {
    src: GpuTensor,
    texture: wgpu::Texture,
    view: wgpu::TextureView,
    /// Texel ranges written since the last copy, disjoint and not adjacent.
    stale: Vec<Range<u32>>,
}

/// Adds `r` to the disjoint ranges `stale`, merging it with those it overlaps or touches.
fn add_range(stale: &mut Vec<Range<u32>>, mut r: Range<u32>) {
    stale.retain(|s| {
        let apart = s.end < r.start || r.end < s.start;
        if !apart {
            r = s.start.min(r.start)..s.end.max(r.end);
        }
        apart
    });
    stale.push(r);
}

pub struct Program {
    ctx: Arc<GpuContext>,
    meter: Meter,
    commands: Vec<Command>,
    param_chunks: Vec<wgpu::Buffer>,
    param_used: u64,
    textures: Vec<TextureCopy>,
    shared_rows: SharedRows,
    step_rows: Option<usize>,
    step_inputs: StepInputs,
}

/// Whether two views share bytes of one buffer.
fn overlaps(a: &GpuTensor, b: &GpuTensor) -> bool {
    Arc::ptr_eq(&a.buffer, &b.buffer) && a.offset < b.offset + b.bytes() && b.offset < a.offset + a.bytes()
}

/// Rows of `TEXELS_PER_ROW` texels in the texture copy of `t`.
fn texture_rows(t: &GpuTensor) -> u64 {
    (t.len().div_ceil(4) as u64).div_ceil(TEXELS_PER_ROW as u64).max(1)
}

/// Texels of the texture copy of `t`.
fn texels(t: &GpuTensor) -> u32 {
    t.len().div_ceil(4) as u32
}

/// Records the copy of texels `texels` of `src` into its texture: the part of the first row of
/// `TEXELS_PER_ROW` texels, the whole rows, then the part of the last.
fn record_to_texture(
    enc: &mut wgpu::CommandEncoder,
    src: &GpuTensor,
    texture: &wgpu::Texture,
    texels: &Range<u32>,
) {
    let row_bytes = TEXELS_PER_ROW as u64 * 16;
    // `height` rows of `width` texels from texel `first` (at the start of a row unless height is 1).
    let copy = |enc: &mut wgpu::CommandEncoder, first: u32, width: u32, height: u32| {
        enc.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo {
                buffer: &src.buffer,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: src.offset + first as u64 * 16,
                    bytes_per_row: Some(row_bytes as u32),
                    rows_per_image: None,
                },
            },
            wgpu::TexelCopyTextureInfo {
                texture,
                mip_level: 0,
                origin: wgpu::Origin3d { x: first % TEXELS_PER_ROW, y: first / TEXELS_PER_ROW, z: 0 },
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
        );
    };
    let (mut start, end) = (texels.start, texels.end);
    let head = (TEXELS_PER_ROW - start % TEXELS_PER_ROW) % TEXELS_PER_ROW;
    if head > 0 {
        let width = head.min(end - start);
        copy(enc, start, width, 1);
        start += width;
    }
    let rows = (end - start) / TEXELS_PER_ROW;
    if rows > 0 {
        copy(enc, start, TEXELS_PER_ROW, rows);
        start += rows * TEXELS_PER_ROW;
    }
    if start < end {
        copy(enc, start, end - start, 1);
    }
}

/// Workgroups for `n` threads of workgroups of `wg`, spread over y past the per-dimension limit
/// (shaders/common.wgsl::linear_id folds the grid back).
pub fn groups_1d(ctx: &GpuContext, n: usize, wg: usize) -> [u32; 3] {
    let groups = n.div_ceil(wg).max(1) as u64;
    let max = ctx.limits().max_compute_workgroups_per_dimension.max(1) as u64;
    if groups <= max { [groups as u32, 1, 1] } else { [max as u32, groups.div_ceil(max) as u32, 1] }
}

impl Program {
    /// A program counted by a meter of its own ([`Program::meter`]).
    pub fn new(ctx: &Arc<GpuContext>) -> Program {
        Program::metered(ctx, Meter::default())
    }

    /// A program whose replays and allocations count into `meter` (its model's).
    pub fn metered(ctx: &Arc<GpuContext>, meter: Meter) -> Program {
        Program {
            ctx: ctx.clone(),
            meter,
            commands: Vec::new(),
            param_chunks: Vec::new(),
            param_used: PARAM_CHUNK,
            textures: Vec::new(),
            shared_rows: ctx.shared_rows(),
            step_rows: None,
            step_inputs: ctx.step_inputs(),
        }
    }

    pub fn ctx(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// How this program's matmul and step kernels read the rows a workgroup shares: the
    /// context's choice unless set.
    pub fn shared_rows(&self) -> SharedRows {
        self.shared_rows
    }

    /// Batch rows per thread of the step kernels this program records for batches larger than 8
    /// (smaller ones take 8), where set; `None`: the launcher's choice per kernel
    /// (src/gpu/kernels.rs::StepCheck).
    pub fn step_rows(&self) -> Option<usize> {
        self.step_rows
    }

    /// Records the step kernels with `rows` batch rows per thread from now on, one of
    /// [`STEP_ROWS`] (verify checks both).
    pub fn set_step_rows(&mut self, rows: usize) -> Result<()> {
        if !STEP_ROWS.contains(&rows) {
            return Err(Error::invalid(
                "Program::set_step_rows",
                format!("{rows} batch rows per thread; the step kernels take {STEP_ROWS:?}"),
            ));
        }
        self.step_rows = Some(rows);
        Ok(())
    }

    /// Where this program's step kernels read their inputs from: the context's choice unless set.
    pub fn step_inputs(&self) -> StepInputs {
        self.step_inputs
    }

    /// Records the step kernels reading their inputs from `inputs` from now on (verify checks
    /// both).
    pub fn set_step_inputs(&mut self, inputs: StepInputs) {
        self.step_inputs = inputs;
    }

    /// Records the matmul and step kernels in `rows` from now on (verify checks both where it
    /// can). The subgroup variant needs a context that chose it.
    pub fn set_shared_rows(&mut self, rows: SharedRows) -> Result<()> {
        if rows == SharedRows::Subgroup && self.ctx.shared_rows() != SharedRows::Subgroup {
            return Err(Error::invalid(
                "Program::set_shared_rows",
                "this adapter has no subgroup operations on 8 or more lanes",
            ));
        }
        self.shared_rows = rows;
        Ok(())
    }

    /// The number of kernel dispatches one replay records.
    pub fn dispatch_count(&self) -> usize {
        self.commands.iter().filter(|c| matches!(c, Command::Dispatch { .. })).count()
    }

    /// The buffer-to-texture copies one replay records (refreshing the texture copies that kernels
    /// read): how many, and their bytes in all.
    pub fn texture_copies(&self) -> (usize, u64) {
        self.commands.iter().fold((0, 0), |(n, bytes), c| match c {
            Command::ToTexture { texels, .. } => (n + 1, bytes + 16 * texels.len() as u64),
            _ => (n, bytes),
        })
    }

    fn param_slot<P: Pod>(&mut self, params: &P) -> Result<(usize, u64)> {
        let bytes = bytemuck::bytes_of(params);
        let size = whole_vec4s(bytes.len() as u64);
        if self.param_used + size > PARAM_CHUNK {
            let buffer = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kernel parameters"),
                size: PARAM_CHUNK,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            self.meter.allocated(PARAM_CHUNK);
            self.param_chunks.push(buffer);
            self.param_used = 0;
        }
        let chunk = self.param_chunks.len() - 1;
        let offset = self.param_used;
        let mut padded = bytes.to_vec();
        padded.resize(size as usize, 0);
        self.ctx.queue.write_buffer(&self.param_chunks[chunk], offset, &padded);
        self.param_used = (offset + size).div_ceil(PARAM_SLOT) * PARAM_SLOT;
        Ok((chunk, offset))
    }

    /// Appends a dispatch of `entry` from shaders/`shader`.wgsl, specialised by `constants`, with
    /// `params` at binding 0 and each `(binding, tensor)` of `args`.
    pub fn dispatch<P: Pod>(
        &mut self,
        shader: &'static str,
        entry: &'static str,
        constants: &[(&'static str, u64)],
        args: &[(u32, &GpuTensor)],
        params: &P,
        groups: [u32; 3],
    ) -> Result<()> {
        self.dispatch_textured(shader, entry, constants, args, &[], params, groups)
    }

    /// [`Program::dispatch`], with each `(binding, tensor)` of `textured` bound as its texture copy
    /// (a read-only `texture_storage_2d<rgba32float, read>` of `TEXELS_PER_ROW` texels a row,
    /// element i in texel i / 4).
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch_textured<P: Pod>(
        &mut self,
        shader: &'static str,
        entry: &'static str,
        constants: &[(&'static str, u64)],
        args: &[(u32, &GpuTensor)],
        textured: &[(u32, &GpuTensor)],
        params: &P,
        groups: [u32; 3],
    ) -> Result<()> {
        // Any storage binding may be written.
        let writes: Vec<GpuTensor> = args.iter().map(|(_, t)| (*t).clone()).collect();
        self.dispatch_writing(shader, entry, constants, args, textured, &writes, params, groups)
    }

    /// [`Program::dispatch_textured`] for a kernel that writes `writes` alone (views of its storage
    /// bindings; a recurrent step writes one time step of buffers that hold all of them): the
    /// texture copies of the other bytes of those buffers stay fresh.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch_writing<P: Pod>(
        &mut self,
        shader: &'static str,
        entry: &'static str,
        constants: &[(&'static str, u64)],
        args: &[(u32, &GpuTensor)],
        textured: &[(u32, &GpuTensor)],
        writes: &[GpuTensor],
        params: &P,
        groups: [u32; 3],
    ) -> Result<()> {
        let pipeline = self.ctx.pipeline(shader, entry, constants)?;
        for (binding, t) in args {
            if t.offset % 256 != 0 {
                return Err(Error::invalid(
                    "Program::dispatch",
                    format!("{entry}: binding {binding} starts at byte {}, not a multiple of 256", t.offset),
                ));
            }
        }
        let mut views = Vec::new();
        for (binding, t) in textured {
            views.push((*binding, self.texture_of(t)?));
        }
        let (chunk, offset) = self.param_slot(params)?;
        let size = whole_vec4s(std::mem::size_of::<P>() as u64);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.param_chunks[chunk],
                offset,
                size: wgpu::BufferSize::new(size),
            }),
        }];
        for (binding, t) in args {
            entries.push(wgpu::BindGroupEntry { binding: *binding, resource: t.binding() });
        }
        for &(binding, i) in &views {
            entries.push(wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::TextureView(&self.textures[i].view),
            });
        }
        let scope = self.ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind_group = self.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &pipeline.layout,
            entries: &entries,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu { op: format!("binding {shader}.wgsl::{entry}"), message: e.to_string() });
        }
        self.commands.push(Command::Dispatch { pipeline, bind_group, groups });
        // The texture copies of what the kernel writes go stale.
        for t in writes {
            self.invalidate(t);
        }
        Ok(())
    }

    /// Appends a copy of `src` into `dst` (same length).
    pub fn copy(&mut self, src: &GpuTensor, dst: &GpuTensor) -> Result<()> {
        if src.len() != dst.len() {
            return Err(Error::shape("Program::copy", "source", src.shape(), dst.shape()));
        }
        self.invalidate(dst);
        self.commands.push(Command::Copy { src: src.clone(), dst: dst.clone() });
        Ok(())
    }

    /// Appends a zeroing of `dst`.
    pub fn clear(&mut self, dst: &GpuTensor) {
        self.invalidate(dst);
        self.commands.push(Command::Clear { dst: dst.clone() });
    }

    /// Marks the texels of every texture copy that `written` overlaps as stale.
    fn invalidate(&mut self, written: &GpuTensor) {
        for t in &mut self.textures {
            if overlaps(&t.src, written) {
                let start = written.offset.max(t.src.offset) - t.src.offset;
                let end = (written.offset + written.bytes()).min(t.src.offset + t.src.bytes()) - t.src.offset;
                add_range(&mut t.stale, (start / 16) as u32..end.div_ceil(16) as u32);
            }
        }
    }

    /// Whether `t` fits a texture copy within the adapter's limits (kernels that read through
    /// one only for speed fall back to storage loads otherwise).
    pub fn fits_texture(&self, t: &GpuTensor) -> bool {
        let max = self.ctx.limits().max_texture_dimension_2d as u64;
        texture_rows(t) <= max && TEXELS_PER_ROW as u64 <= max
    }

    /// The index of `t`'s texture copy, made (and its copy recorded) if it has none, with the
    /// copies of the texels a command since may have written recorded.
    fn texture_of(&mut self, t: &GpuTensor) -> Result<usize> {
        let same = |w: &TextureCopy| {
            Arc::ptr_eq(&w.src.buffer, &t.buffer) && w.src.offset == t.offset && w.src.len() == t.len()
        };
        if let Some(i) = self.textures.iter().position(same) {
            for texels in std::mem::take(&mut self.textures[i].stale) {
                self.commands.push(Command::ToTexture { src: t.clone(), texture: i, texels });
            }
            return Ok(i);
        }
        let height = texture_rows(t);
        let max = self.ctx.limits().max_texture_dimension_2d as u64;
        if !self.fits_texture(t) {
            return Err(Error::range(
                "Program::texture_of",
                format!("texture rows for {t:?}"),
                height as usize,
                format!("at most max_texture_dimension_2d = {max}"),
            ));
        }
        let scope = self.ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let texture = self.ctx.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("texture copy"),
            size: wgpu::Extent3d { width: TEXELS_PER_ROW, height: height as u32, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu {
                op: format!("allocating the texture copy of {t:?}"),
                message: e.to_string(),
            });
        }
        let view = texture.create_view(&Default::default());
        self.meter.allocated(height * TEXELS_PER_ROW as u64 * 16);
        self.textures.push(TextureCopy { src: t.clone(), texture, view, stale: Vec::new() });
        let i = self.textures.len() - 1;
        self.commands.push(Command::ToTexture { src: t.clone(), texture: i, texels: 0..texels(t) });
        Ok(i)
    }

    /// Records every command into `enc`, in order. Dispatches that follow each other share one
    /// compute pass; wgpu orders the dependent ones with barriers.
    /// Returns the number of dispatches recorded.
    pub fn record(&self, enc: &mut wgpu::CommandEncoder) -> u64 {
        let mut i = 0;
        let mut dispatches = 0u64;
        while i < self.commands.len() {
            match &self.commands[i] {
                Command::Dispatch { .. } => {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: None,
                    });
                    while let Some(Command::Dispatch { pipeline, bind_group, groups }) = self.commands.get(i)
                    {
                        pass.set_pipeline(&pipeline.pipeline);
                        pass.set_bind_group(0, bind_group, &[]);
                        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                        dispatches += 1;
                        i += 1;
                    }
                }
                Command::Copy { src, dst } => {
                    enc.copy_buffer_to_buffer(&src.buffer, src.offset, &dst.buffer, dst.offset, src.bytes());
                    i += 1;
                }
                Command::Clear { dst } => {
                    enc.clear_buffer(&dst.buffer, dst.offset, Some(dst.bytes()));
                    i += 1;
                }
                Command::ToTexture { src, texture, texels } => {
                    record_to_texture(enc, src, &self.textures[*texture].texture, texels);
                    i += 1;
                }
            }
        }
        dispatches
    }

    /// Records and submits; does not wait.
    pub fn run(&self) -> Result<()> {
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        let dispatches = self.record(&mut enc);
        self.ctx.submit(enc);
        self.meter.submit(dispatches);
        self.ctx.check("running a program")
    }

    /// Records each dispatch in its own pass between two timestamps, submits and waits. Needs
    /// the adapter's timestamp queries.
    pub fn profile(&self) -> Result<Profile> {
        if !self.ctx.has_timestamps() {
            return Err(Error::invalid(
                "Program::profile",
                "this adapter has no timestamp queries; time kernel families alone instead",
            ));
        }
        let n = self.dispatch_count();
        let count = (2 * n).max(2) as u32;
        let set = self.ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let resolve = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile resolve"),
            size: count as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = super::tensor::Staging::new(&self.ctx, count as u64 * 8, self.meter.clone())?;
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        let mut names = Vec::new();
        let mut q = 0u32;
        for c in &self.commands {
            match c {
                Command::Dispatch { pipeline, bind_group, groups } => {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &set,
                            beginning_of_pass_write_index: Some(q),
                            end_of_pass_write_index: Some(q + 1),
                        }),
                    });
                    pass.set_pipeline(&pipeline.pipeline);
                    pass.set_bind_group(0, bind_group, &[]);
                    pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                    names.push(pipeline.name);
                    q += 2;
                }
                Command::Copy { src, dst } => {
                    enc.copy_buffer_to_buffer(&src.buffer, src.offset, &dst.buffer, dst.offset, src.bytes())
                }
                Command::Clear { dst } => enc.clear_buffer(&dst.buffer, dst.offset, Some(dst.bytes())),
                Command::ToTexture { src, texture, texels } => {
                    record_to_texture(&mut enc, src, &self.textures[*texture].texture, texels)
                }
            }
        }
        enc.resolve_query_set(&set, 0..count, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, staging.buffer(), 0, count as u64 * 8);
        self.ctx.submit(enc);
        self.meter.submit(n as u64);
        let bytes = staging.map_read(&self.ctx, count as u64 * 8)?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        let period = self.ctx.queue.get_timestamp_period() as f64 * 1e-9;
        let span = match names.len() {
            0 => 0.0,
            n => ticks[2 * n - 1].saturating_sub(ticks[0]) as f64 * period,
        };
        let kernels = names
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let dt = ticks[2 * i + 1].saturating_sub(ticks[2 * i]);
                (name, dt as f64 * period)
            })
            .collect();
        Ok(Profile { kernels, span })
    }
}
