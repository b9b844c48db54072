//! The GPU device: ops are recorded into a program the first time a program key is seen; every
//! call replays the recorded program with one submit.

use std::collections::HashMap;
use std::sync::Arc;

use super::context::{Counters, GpuContext, Meter};
use super::kernels as k;
use super::program::Program;
use super::tensor::{GpuTensor, Staging};
use crate::backend::{Backend, ProgramKey};
use crate::error::{Error, Result};
use crate::ops::Op;

pub struct GpuBackend {
    ctx: Arc<GpuContext>,
    recording: Option<Program>,
    programs: HashMap<ProgramKey, Program>,
    scratch: GpuTensor,
    staging: Option<Staging>,
    staging_size: u64,
    /// Everything this backend's model does on the device, counted.
    meter: Meter,
}

impl GpuBackend {
    pub fn new(ctx: &Arc<GpuContext>) -> Result<Self> {
        let meter = Meter::default();
        let scratch = ctx.alloc("reduce scratch", &[k::REDUCE_PARTS])?;
        meter.allocated(scratch.bytes());
        Ok(GpuBackend {
            ctx: ctx.clone(),
            recording: None,
            programs: HashMap::new(),
            scratch,
            staging: None,
            staging_size: 0,
            meter,
        })
    }

    /// What this backend has done on the device so far (submits, dispatches, host waits,
    /// allocations): its own work only, whatever else shares the context.
    pub fn counters(&self) -> Counters {
        self.meter.counters()
    }

    /// Waits until the device has finished this backend's submitted work.
    pub fn sync(&self, op: &str) -> Result<()> {
        self.meter.wait();
        self.ctx.wait(op)
    }

    pub fn ctx(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// The recorded programs (for counting their dispatches).
    pub fn programs(&self) -> impl Iterator<Item = (&ProgramKey, &Program)> {
        self.programs.iter()
    }

    fn prog(&mut self) -> Result<&mut Program> {
        self.recording.as_mut().ok_or_else(|| {
            Error::invalid("gpu backend", "a kernel was launched outside a program (an engine bug)")
        })
    }
}

impl Backend for GpuBackend {
    type Elem = f32;
    type Buf = GpuTensor;
    type IBuf = GpuTensor;

    fn alloc(&mut self, what: &str, len: usize) -> Result<GpuTensor> {
        let t = self.ctx.alloc(what, &[len])?;
        self.meter.allocated(t.bytes());
        Ok(t)
    }

    fn alloc_u32(&mut self, what: &str, len: usize) -> Result<GpuTensor> {
        let t = self.ctx.alloc_u32(what, &[len])?;
        self.meter.allocated(t.buffer.size());
        Ok(t)
    }

    fn view(&self, t: &GpuTensor, start: usize, len: usize) -> Result<GpuTensor> {
        t.view(start, &[len])
    }

    fn len(t: &GpuTensor) -> usize {
        t.len()
    }

    fn ilen(t: &GpuTensor) -> usize {
        t.len()
    }

    fn write(&mut self, t: &GpuTensor, data: &[f32]) -> Result<()> {
        self.ctx.write(t, data)
    }

    fn write_u32(&mut self, t: &GpuTensor, data: &[u32]) -> Result<()> {
        self.ctx.write_u32(t, data)
    }

    async fn read_into(&mut self, t: &GpuTensor, out: &mut Vec<f32>) -> Result<()> {
        // One staging buffer, grown to the largest read: reading the loss every step allocates
        // nothing after the first.
        if self.staging.is_none() || t.bytes() > self.staging_size {
            self.staging = Some(Staging::new(&self.ctx, t.bytes(), self.meter.clone())?);
            self.staging_size = t.bytes();
        }
        let staging = self.staging.as_ref().expect("staging buffer");
        let bytes = staging.read(&self.ctx, t).await?;
        out.clear();
        out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        Ok(())
    }

    fn execute(
        &mut self,
        key: ProgramKey,
        record: &mut (dyn FnMut(&mut Self) -> Result<()> + Send),
    ) -> Result<()> {
        if !self.programs.contains_key(&key) {
            self.recording = Some(Program::metered(&self.ctx, self.meter.clone()));
            let recorded = record(self);
            let prog = self.recording.take().expect("recording");
            recorded?;
            self.ctx.check("recording a program")?;
            self.programs.insert(key.clone(), prog);
        }
        self.programs[&key].run()
    }

    fn drop_programs(&mut self, steps: usize, tgt_steps: usize, batch: usize) {
        self.programs.retain(|k, _| !(k.steps == steps && k.tgt_steps == tgt_steps && k.batch == batch));
    }

    fn launch(&mut self, op: Op<'_, GpuTensor, GpuTensor>) -> Result<()> {
        let scratch = self.scratch.clone();
        let prog = self.prog()?;
        match op {
            Op::Clear { x } => {
                prog.clear(x);
                Ok(())
            }
            Op::Copy { dst, src } => prog.copy(src, dst),
            Op::Matmul { c, a, b, bias: None, p } => k::matmul(prog, c, a, b, p),
            Op::Matmul { c, a, b, bias, p } => k::matmul_bias(prog, c, a, b, bias, p),
            Op::BiasGrad { db, db2, dy, rows, cols } => k::bias_grad(prog, db, db2, dy, rows, cols),
            Op::TanhForward { y, x } => k::tanh_forward(prog, y, x),
            Op::TanhBackward { dx, y, dy } => k::tanh_backward(prog, dx, y, dy),
            Op::Gather { out, table, idx, p } => k::gather(prog, out, table, idx, p),
            Op::ScatterAdd { dtable, dout, starts, rows, p } => {
                k::scatter_add(prog, dtable, dout, starts, rows, p)
            }
            Op::SoftmaxRows { y, x, rows, cols } => k::softmax_rows(prog, y, x, rows, cols),
            Op::SoftmaxXent { loss, dx, logits, targets, weights, rows, cols } => {
                k::softmax_xent(prog, loss, dx, logits, targets, weights, rows, cols)
            }
            Op::Mse { loss, dx, pred, target, weights, rows, cols } => {
                k::mse(prog, loss, dx, pred, target, weights, rows, cols)
            }
            Op::SoftmaxBackward { dx, y, dy, rows, cols } => k::softmax_backward(prog, dx, y, dy, rows, cols),
            Op::Reduce { out, x, p } => k::reduce(prog, out, x, &scratch, p, None),
            Op::Dropout { out, x, seeds, p, backward } => k::dropout(prog, out, x, seeds, p, backward),
            Op::FinalizeStep { state, grads, max_norm } => {
                k::finalize_step(prog, state, grads, &scratch, max_norm)
            }
            Op::ClipByValue { grad, lo, hi } => k::clip_by_value(prog, grad, lo, hi),
            Op::Update { param, grad, slots, state, rule } => {
                k::update(prog, param, grad, slots, state, rule)
            }
            Op::CopyCols { y, x, p } => k::copy_cols(prog, y, x, p),
            Op::AttentionDots { out, x, enc, src_len, a, mask } => {
                k::attention_dots(prog, out, x, enc, src_len, a, mask)
            }
            Op::AttentionMix { out, w, x, a, accumulate, transposed } => {
                k::attention_mix(prog, out, w, x, a, accumulate, transposed)
            }
            Op::Step { cell, bufs, s, backward } => k::step(prog, cell, &bufs, s, backward),
        }
    }
}
