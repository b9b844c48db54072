//! A program: a recorded list of kernel dispatches (with their bind groups and parameters built
//! once), replayed into one command encoder and submitted once.
//!
//! A training step is built as a program the first time a batch shape is seen; every later step
//! only uploads its batch and replays the program: no pipeline compilation, no bind group or
//! buffer creation, one submit.

use std::sync::Arc;

use bytemuck::Pod;

use super::context::{GpuContext, Meter, Pipeline};
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

/// One timed replay of a program ([`Program::profile`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// (kernel name, seconds) per dispatch, in order.
    pub kernels: Vec<(&'static str, f64)>,
    /// Seconds from the first kernel's start to the last one's end: the kernels and what runs
    /// between them (copies, the driver's work for each dispatch).
    pub span: f64,
}

/// One recorded dispatch as the hardware sees it: what `bench --verbose` lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub kernel: &'static str,
    /// Threads per workgroup.
    pub threads: u32,
    pub groups: [u32; 3],
    /// Multiply-adds of the whole dispatch, for the products (matmul, the fused steps); 0 for
    /// the others.
    pub macs: u64,
}

impl Mapping {
    pub fn workgroups(&self) -> u64 {
        self.groups.iter().map(|&g| g as u64).product()
    }

    /// Multiply-adds per thread launched (padding included), 0 where not counted.
    pub fn macs_per_thread(&self) -> u64 {
        self.macs / (self.workgroups() * self.threads as u64).max(1)
    }
}

enum Command {
    Dispatch { pipeline: Arc<Pipeline>, bind_group: wgpu::BindGroup, groups: [u32; 3], macs: u64 },
    Copy { src: GpuTensor, dst: GpuTensor },
    Clear { dst: GpuTensor },
}

pub struct Program {
    ctx: Arc<GpuContext>,
    meter: Meter,
    commands: Vec<Command>,
    param_chunks: Vec<wgpu::Buffer>,
    param_used: u64,
    scratch: Option<GpuTensor>,
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
            scratch: None,
        }
    }

    pub fn ctx(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// The number of kernel dispatches one replay records.
    pub fn dispatch_count(&self) -> usize {
        self.commands.iter().filter(|c| matches!(c, Command::Dispatch { .. })).count()
    }

    /// Each dispatch one replay records, in order: kernel, threads, workgroups, multiply-adds.
    pub fn mapping(&self) -> Vec<Mapping> {
        self.commands
            .iter()
            .filter_map(|c| match c {
                Command::Dispatch { pipeline, groups, macs, .. } => Some(Mapping {
                    kernel: pipeline.name,
                    threads: pipeline.threads,
                    groups: *groups,
                    macs: *macs,
                }),
                _ => None,
            })
            .collect()
    }

    /// Records that the last dispatch does `macs` multiply-adds ([`Mapping::macs`]).
    pub(crate) fn count_macs(&mut self, n: u64) {
        if let Some(Command::Dispatch { macs, .. }) = self.commands.last_mut() {
            *macs = n;
        }
    }

    /// `len` elements of the program's scratch: the intermediate of one kernel pair (the split-K
    /// partials), which the pair's second dispatch consumes before any later dispatch asks for
    /// scratch again. Grown (a new buffer) when too small; the dispatches recorded earlier keep
    /// theirs alive through their bind groups.
    pub(crate) fn scratch(&mut self, len: usize) -> Result<GpuTensor> {
        if self.scratch.as_ref().is_none_or(|t| t.len() < len) {
            let t = self.ctx.alloc("program scratch", &[len])?;
            self.meter.allocated(t.bytes());
            self.scratch = Some(t);
        }
        self.scratch.as_ref().expect("allocated above").view(0, &[len])
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
    /// `params` at binding 0 and each `(binding, tensor)` of `args` as a storage buffer.
    pub fn dispatch<P: Pod>(
        &mut self,
        shader: &'static str,
        entry: &'static str,
        constants: &[(&'static str, u64)],
        args: &[(u32, &GpuTensor)],
        params: &P,
        groups: [u32; 3],
    ) -> Result<()> {
        self.dispatch_with_uniforms(shader, entry, constants, args, &[], params, groups)
    }

    /// [`Program::dispatch`], with each `(binding, tensor, bytes)` of `uniforms` bound as a uniform
    /// buffer of `bytes` from the tensor's start (its buffer must hold them).
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch_with_uniforms<P: Pod>(
        &mut self,
        shader: &'static str,
        entry: &'static str,
        constants: &[(&'static str, u64)],
        args: &[(u32, &GpuTensor)],
        uniforms: &[(u32, &GpuTensor, u64)],
        params: &P,
        groups: [u32; 3],
    ) -> Result<()> {
        let pipeline = self.ctx.pipeline(shader, entry, constants)?;
        for (binding, t) in args.iter().copied().chain(uniforms.iter().map(|&(b, t, _)| (b, t))) {
            if t.offset % 256 != 0 {
                return Err(Error::invalid(
                    "Program::dispatch",
                    format!("{entry}: binding {binding} starts at byte {}, not a multiple of 256", t.offset),
                ));
            }
        }
        for &(binding, t, bytes) in uniforms {
            if t.buffer.size() < t.offset + bytes {
                return Err(Error::invalid(
                    "Program::dispatch",
                    format!(
                        "{entry}: binding {binding} needs {bytes} bytes of uniform buffer, its buffer has fewer"
                    ),
                ));
            }
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
        for &(binding, t, bytes) in uniforms {
            entries.push(wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &t.buffer,
                    offset: t.offset,
                    size: wgpu::BufferSize::new(bytes),
                }),
            });
        }
        let bind_group = self.ctx.scoped(
            wgpu::ErrorFilter::Validation,
            || format!("binding {shader}.wgsl::{entry}"),
            || {
                self.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(entry),
                    layout: &pipeline.layout,
                    entries: &entries,
                })
            },
        )?;
        self.commands.push(Command::Dispatch { pipeline, bind_group, groups, macs: 0 });
        Ok(())
    }

    /// Appends a copy of `src` into `dst` (same length).
    pub fn copy(&mut self, src: &GpuTensor, dst: &GpuTensor) -> Result<()> {
        if src.len() != dst.len() {
            return Err(Error::shape("Program::copy", "source", src.shape(), dst.shape()));
        }
        self.commands.push(Command::Copy { src: src.clone(), dst: dst.clone() });
        Ok(())
    }

    /// Appends a zeroing of `dst`.
    pub fn clear(&mut self, dst: &GpuTensor) {
        self.commands.push(Command::Clear { dst: dst.clone() });
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
                    while let Some(Command::Dispatch { pipeline, bind_group, groups, .. }) =
                        self.commands.get(i)
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
                Command::Dispatch { pipeline, bind_group, groups, .. } => {
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
            }
        }
        enc.resolve_query_set(&set, 0..count, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, staging.buffer(), 0, count as u64 * 8);
        self.ctx.submit(enc);
        self.meter.submit(n as u64);
        let bytes = crate::wait::block_on("Program::profile", staging.map_read(&self.ctx, count as u64 * 8))?;
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
