//! Device tensors: f32 (or u32) buffers that stay on the GPU, with their shape.
//!
//! A `GpuTensor` is a view: a buffer, a byte offset and a length. Views that are bound to a
//! kernel start on a 256-byte boundary (the largest storage-offset alignment WebGPU allows), which
//! is why the flat parameter buffer aligns every tensor to `ops::ALIGN` elements.

use std::sync::Arc;

use super::context::{GpuContext, Meter};
use crate::error::{Error, Result};

/// The least bytes of a u32 buffer: the step kernels bind the sequence lengths as a uniform
/// array of this size (shaders/step_common.wgsl::lengths), WebGPU's default
/// max_uniform_buffer_binding_size.
pub const U32_BUFFER_BYTES: u64 = 65536;

/// Bytes rounded up to whole vec4s (16 bytes): how buffers are allocated and bound.
pub(crate) fn whole_vec4s(bytes: u64) -> u64 {
    bytes.div_ceil(16) * 16
}

#[derive(Clone)]
pub struct GpuTensor {
    pub(crate) buffer: Arc<wgpu::Buffer>,
    /// Offset of element 0, in bytes.
    pub(crate) offset: u64,
    shape: Vec<usize>,
}

impl std::fmt::Debug for GpuTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuTensor{:?}", self.shape)
    }
}

impl GpuTensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn bytes(&self) -> u64 {
        (self.len() * 4) as u64
    }

    /// A view of `shape` starting `start` elements into this tensor. `start` must be a multiple
    /// of [`ALIGN`](crate::ops::ALIGN) for the view to be bound to a kernel.
    pub fn view(&self, start: usize, shape: &[usize]) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        if start + n > self.len() {
            return Err(Error::range(
                "GpuTensor::view",
                "end",
                start + n,
                format!("at most {} elements", self.len()),
            ));
        }
        Ok(GpuTensor {
            buffer: self.buffer.clone(),
            offset: self.offset + (start * 4) as u64,
            shape: shape.to_vec(),
        })
    }

    /// The view as a kernel binding, rounded up to whole vec4s (16 bytes) so that a kernel may
    /// declare any buffer as `array<vec4<f32>>` and still reach its last elements. The rounding
    /// stays inside the buffer: buffers are allocated in whole vec4s and bound views start on
    /// 256-byte boundaries, with views in one buffer [`ALIGN`](crate::ops::ALIGN)ed apart. Kernels never write past
    /// the view's length.
    pub(crate) fn binding(&self) -> wgpu::BindingResource<'_> {
        let rounded = whole_vec4s(self.bytes());
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new(rounded.min(self.buffer.size() - self.offset)),
        })
    }
}

impl GpuContext {
    /// Checks a byte size against the adapter's limits (as allocated and bound: whole vec4s).
    pub(crate) fn check_size(&self, what: &str, bytes: u64) -> Result<()> {
        let l = self.limits();
        let bytes = whole_vec4s(bytes);
        let limits = [
            ("max_buffer_size", l.max_buffer_size),
            ("max_storage_buffer_binding_size", l.max_storage_buffer_binding_size),
        ];
        match limits.into_iter().find(|&(_, limit)| bytes > limit) {
            Some((limit_name, limit)) => {
                Err(Error::BufferTooLarge { what: what.to_string(), bytes, limit_name, limit })
            }
            None => Ok(()),
        }
    }

    /// A new tensor of `shape`, contents unspecified (zero on wgpu, which clears new buffers).
    pub fn alloc(&self, what: &str, shape: &[usize]) -> Result<GpuTensor> {
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        self.new_tensor("GpuContext::alloc", what, shape, usage, 0)
    }

    /// A new tensor of u32 `shape`: like [`GpuContext::alloc`], in a buffer of at least
    /// [`U32_BUFFER_BYTES`] that may also be bound as a uniform (the step kernels read the
    /// sequence lengths so).
    pub fn alloc_u32(&self, what: &str, shape: &[usize]) -> Result<GpuTensor> {
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::UNIFORM
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        self.new_tensor("GpuContext::alloc_u32", what, shape, usage, U32_BUFFER_BYTES)
    }

    /// A buffer of 4-byte elements for `shape` (at least `min_bytes`), its size checked against
    /// the device's limits first, and the device's refusal returned as an error.
    fn new_tensor(
        &self,
        op: &'static str,
        what: &str,
        shape: &[usize],
        usage: wgpu::BufferUsages,
        min_bytes: u64,
    ) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        if n == 0 {
            return Err(Error::range(op, format!("size of {what} {shape:?}"), 0, "at least one element"));
        }
        let bytes =
            (n as u64).checked_mul(4).ok_or_else(|| Error::range(op, what, n, "a size that fits in u64"))?;
        self.check_size(what, bytes)?;
        let size = whole_vec4s(bytes).max(min_bytes);
        let buffer = self.scoped(
            wgpu::ErrorFilter::OutOfMemory,
            || format!("allocating {what} ({bytes} bytes)"),
            || {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(what),
                    size,
                    usage,
                    mapped_at_creation: false,
                })
            },
        )?;
        Ok(GpuTensor { buffer: Arc::new(buffer), offset: 0, shape: shape.to_vec() })
    }

    /// A new tensor holding `data`.
    pub fn upload(&self, what: &str, shape: &[usize], data: &[f32]) -> Result<GpuTensor> {
        let t = self.alloc(what, shape)?;
        self.write(&t, data)?;
        Ok(t)
    }

    /// A new tensor holding the integers `data` (token ids, lengths, targets).
    pub fn upload_u32(&self, what: &str, shape: &[usize], data: &[u32]) -> Result<GpuTensor> {
        let t = self.alloc_u32(what, shape)?;
        self.write_u32(&t, data)?;
        Ok(t)
    }

    /// Overwrites the contents of `t` (queued; takes effect before the next submit).
    pub fn write(&self, t: &GpuTensor, data: &[f32]) -> Result<()> {
        if data.len() != t.len() {
            return Err(Error::shape("GpuContext::write", "data", &[data.len()], t.shape()));
        }
        self.queue.write_buffer(&t.buffer, t.offset, bytemuck::cast_slice(data));
        Ok(())
    }

    pub fn write_u32(&self, t: &GpuTensor, data: &[u32]) -> Result<()> {
        if data.len() != t.len() {
            return Err(Error::shape("GpuContext::write_u32", "data", &[data.len()], t.shape()));
        }
        self.queue.write_buffer(&t.buffer, t.offset, bytemuck::cast_slice(data));
        Ok(())
    }

    /// Reads `t` back through a staging buffer. Waits for the GPU.
    pub fn download(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        crate::wait::block_on("GpuContext::download", self.download_async(t))
    }

    /// As [`GpuContext::download`], awaited.
    pub async fn download_async(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        // Counted by nobody: a context-level helper (verify, tests), not a model's work.
        let staging = Staging::new(self, t.bytes(), Meter::default())?;
        Ok(bytemuck::pod_collect_to_vec(&staging.read(self, t).await?))
    }

    /// Copies `src` into `dst` (same length), recorded and submitted at once.
    pub fn copy(&self, src: &GpuTensor, dst: &GpuTensor) -> Result<()> {
        if src.len() != dst.len() {
            return Err(Error::shape("GpuContext::copy", "source", src.shape(), dst.shape()));
        }
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&src.buffer, src.offset, &dst.buffer, dst.offset, src.bytes());
        self.submit(enc);
        self.check("copy")
    }
}

/// A reusable buffer for reading results back to the host, sized once. Training keeps one so
/// that reading the loss allocates nothing.
pub(crate) struct Staging {
    buffer: wgpu::Buffer,
    size: u64,
    /// Counts this buffer, and the submits and waits of reading through it.
    meter: Meter,
}

impl Staging {
    pub fn new(ctx: &GpuContext, size: u64, meter: Meter) -> Result<Staging> {
        let size = size.div_ceil(8) * 8;
        ctx.check_size("staging buffer", size)?;
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        meter.allocated(size);
        Ok(Staging { buffer, size, meter })
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Records the copy of `t` into this staging buffer.
    pub fn record_copy(&self, enc: &mut wgpu::CommandEncoder, t: &GpuTensor) {
        enc.copy_buffer_to_buffer(&t.buffer, t.offset, &self.buffer, 0, t.bytes());
    }

    /// Copies `t` here, submits, waits and returns its bytes.
    pub async fn read(&self, ctx: &GpuContext, t: &GpuTensor) -> Result<Vec<u8>> {
        if t.bytes() > self.size {
            return Err(Error::range("Staging::read", "bytes", t.bytes(), format!("at most {}", self.size)));
        }
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        self.record_copy(&mut enc, t);
        ctx.submit(enc);
        self.meter.submit(0);
        self.map_read(ctx, t.bytes()).await
    }

    /// Maps the first `bytes` after a submitted copy, waits, and returns them. However the read
    /// ends (an error, or the future dropped while it waits), the buffer is left unmapped, so
    /// that the next read through it works.
    pub async fn map_read(&self, ctx: &GpuContext, bytes: u64) -> Result<Vec<u8>> {
        let len = bytes.div_ceil(8) * 8;
        let slice = self.buffer.slice(0..len);
        let (mapped, on_map) = crate::wait::promise();
        slice.map_async(wgpu::MapMode::Read, move |r| mapped.resolve(r));
        let mut unmap = Unmap(Some(&self.buffer));
        // Natively the device is polled until the callback has run; in a browser the promise
        // resolves once the page's event loop has run the GPU's reply, and only then are the
        // errors reported that arrived meanwhile.
        #[cfg(not(target_arch = "wasm32"))]
        ctx.wait("reading a buffer back")?;
        let outcome = on_map.await;
        #[cfg(target_arch = "wasm32")]
        ctx.wait("reading a buffer back")?;
        self.meter.wait();
        let failed = |message: String| Error::Gpu { op: "mapping a staging buffer".into(), message };
        match outcome {
            Some(Ok(())) => {}
            // Nothing was mapped: nothing to unmap.
            Some(Err(e)) => {
                unmap.0 = None;
                return Err(failed(e.to_string()));
            }
            None => {
                unmap.0 = None;
                return Err(failed("the map callback never ran".into()));
            }
        }
        let view = slice.get_mapped_range().map_err(|e| failed(format!("{e:?}")))?;
        let out = view[..bytes as usize].to_vec();
        drop(view);
        Ok(out)
    }
}

/// Unmaps a staging buffer when dropped: after a read, after a failed one, or when the read's
/// future is dropped while the map is pending (which unmapping cancels).
struct Unmap<'a>(Option<&'a wgpu::Buffer>);

impl Drop for Unmap<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.0 {
            b.unmap();
        }
    }
}
