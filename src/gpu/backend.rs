//! The GPU device: ops are recorded into a program the first time a program key is seen; every
//! call replays the recorded program with one submit.

use std::collections::HashMap;
use std::sync::Arc;

use super::context::{Counters, GpuContext, Meter};
use super::kernels as k;
use super::program::Program;
use super::tensor::{GpuTensor, Staging};
use crate::backend::{Backend, ProgramKey, StepBufs};
use crate::error::{Error, Result};
use crate::ops::{Attention, Cell, CopyCols, Dropout, Gather, Matmul, Reduce, Step};
use crate::update::Optimizer;

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

fn need<'a>(cell: Cell, what: &str, b: Option<&'a GpuTensor>) -> Result<&'a GpuTensor> {
    b.ok_or_else(|| Error::invalid("step kernel", format!("{} needs {what}", cell.name())))
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

    fn write(&mut self, t: &GpuTensor, data: &[f32]) -> Result<()> {
        self.ctx.write(t, data)
    }

    fn write_u32(&mut self, t: &GpuTensor, data: &[u32]) -> Result<()> {
        self.ctx.write_u32(t, data)
    }

    fn read(&mut self, t: &GpuTensor) -> Result<Vec<f32>> {
        // One staging buffer, grown to the largest read: reading the loss every step allocates
        // nothing after the first.
        if self.staging.is_none() || t.bytes() > self.staging_size {
            self.staging = Some(Staging::new(&self.ctx, t.bytes(), self.meter.clone())?);
            self.staging_size = t.bytes();
        }
        let staging = self.staging.as_ref().expect("staging buffer");
        Ok(bytemuck::pod_collect_to_vec(&staging.read(&self.ctx, t)?))
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

    fn clear(&mut self, t: &GpuTensor) -> Result<()> {
        self.prog()?.clear(t);
        Ok(())
    }

    fn copy(&mut self, src: &GpuTensor, dst: &GpuTensor) -> Result<()> {
        self.prog()?.copy(src, dst)
    }

    fn matmul(&mut self, c: &GpuTensor, a: &GpuTensor, b: &GpuTensor, p: Matmul) -> Result<()> {
        k::matmul(self.prog()?, c, a, b, p)
    }

    fn matmul_bias(
        &mut self,
        c: &GpuTensor,
        a: &GpuTensor,
        b: &GpuTensor,
        bias: &GpuTensor,
        p: Matmul,
    ) -> Result<()> {
        k::matmul_bias(self.prog()?, c, a, b, Some(bias), p)
    }

    fn bias_grad(&mut self, db: &GpuTensor, dy: &GpuTensor, rows: usize, cols: usize) -> Result<()> {
        k::bias_grad(self.prog()?, db, None, dy, rows, cols)
    }

    fn bias_grad_pair(
        &mut self,
        db: &GpuTensor,
        db2: &GpuTensor,
        dy: &GpuTensor,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        k::bias_grad(self.prog()?, db, Some(db2), dy, rows, cols)
    }

    fn axpy(&mut self, y: &GpuTensor, x: &GpuTensor, alpha: f32) -> Result<()> {
        k::axpy(self.prog()?, y, x, alpha)
    }

    fn tanh_forward(&mut self, y: &GpuTensor, x: &GpuTensor) -> Result<()> {
        k::tanh_forward(self.prog()?, y, x)
    }

    fn tanh_backward(&mut self, dx: &GpuTensor, y: &GpuTensor, dy: &GpuTensor) -> Result<()> {
        k::tanh_backward(self.prog()?, dx, y, dy)
    }

    fn gather(&mut self, out: &GpuTensor, table: &GpuTensor, idx: &GpuTensor, p: Gather) -> Result<()> {
        k::gather(self.prog()?, out, table, idx, p)
    }

    fn scatter_add(
        &mut self,
        dtable: &GpuTensor,
        dout: &GpuTensor,
        starts: &GpuTensor,
        rows: &GpuTensor,
        p: Gather,
    ) -> Result<()> {
        k::scatter_add(self.prog()?, dtable, dout, starts, rows, p)
    }

    fn softmax_rows(&mut self, y: &GpuTensor, x: &GpuTensor, rows: usize, cols: usize) -> Result<()> {
        k::softmax_rows(self.prog()?, y, x, rows, cols)
    }

    fn softmax_xent(
        &mut self,
        loss: &GpuTensor,
        dx: &GpuTensor,
        logits: &GpuTensor,
        targets: &GpuTensor,
        weights: &GpuTensor,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        k::softmax_xent(self.prog()?, loss, dx, logits, targets, weights, rows, cols)
    }

    fn mse(
        &mut self,
        loss: &GpuTensor,
        dx: &GpuTensor,
        pred: &GpuTensor,
        target: &GpuTensor,
        weights: &GpuTensor,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        k::mse(self.prog()?, loss, dx, pred, target, weights, rows, cols)
    }

    fn reduce(&mut self, out: &GpuTensor, x: &GpuTensor, p: Reduce) -> Result<()> {
        let scratch = self.scratch.clone();
        k::reduce(self.prog()?, out, x, &scratch, p)
    }

    fn dropout_forward(
        &mut self,
        out: &GpuTensor,
        x: &GpuTensor,
        seeds: &GpuTensor,
        p: Dropout,
    ) -> Result<()> {
        k::dropout_forward(self.prog()?, out, x, seeds, p)
    }

    fn dropout_backward(
        &mut self,
        dx: &GpuTensor,
        dy: &GpuTensor,
        seeds: &GpuTensor,
        p: Dropout,
    ) -> Result<()> {
        k::dropout_backward(self.prog()?, dx, dy, seeds, p)
    }

    fn finalize_step(&mut self, state: &GpuTensor, grads: &GpuTensor, max_norm: f32) -> Result<()> {
        let scratch = self.scratch.clone();
        k::finalize_step(self.prog()?, state, grads, &scratch, max_norm)
    }

    fn clip_by_value(&mut self, grad: &GpuTensor, lo: f32, hi: f32) -> Result<()> {
        k::clip_by_value(self.prog()?, grad, lo, hi)
    }

    fn update(
        &mut self,
        param: &GpuTensor,
        grad: &GpuTensor,
        slots: &[&GpuTensor],
        state: &GpuTensor,
        rule: &Optimizer,
    ) -> Result<()> {
        k::update(self.prog()?, param, grad, slots, state, rule)
    }

    fn copy_cols(&mut self, y: &GpuTensor, x: &GpuTensor, p: CopyCols) -> Result<()> {
        k::copy_cols(self.prog()?, y, x, p)
    }

    fn attention_dots(
        &mut self,
        out: &GpuTensor,
        x: &GpuTensor,
        enc: &GpuTensor,
        src_len: &GpuTensor,
        a: Attention,
        mask: bool,
    ) -> Result<()> {
        k::attention_dots(self.prog()?, out, x, enc, src_len, a, mask)
    }

    fn attention_mix(
        &mut self,
        out: &GpuTensor,
        w: &GpuTensor,
        enc: &GpuTensor,
        a: Attention,
        accumulate: bool,
    ) -> Result<()> {
        k::attention_mix(self.prog()?, out, w, enc, a, accumulate)
    }

    fn attention_mix_t(
        &mut self,
        out: &GpuTensor,
        w: &GpuTensor,
        x: &GpuTensor,
        a: Attention,
        accumulate: bool,
    ) -> Result<()> {
        k::attention_mix_t(self.prog()?, out, w, x, a, accumulate)
    }

    fn softmax_backward(
        &mut self,
        dx: &GpuTensor,
        y: &GpuTensor,
        dy: &GpuTensor,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        k::softmax_backward(self.prog()?, dx, y, dy, rows, cols)
    }

    fn step_forward(&mut self, cell: Cell, b: &StepBufs<'_, Self>, s: Step) -> Result<()> {
        let prog = self.prog()?;
        match cell {
            Cell::Lstm => k::lstm_step_forward(
                prog,
                b.states,
                need(cell, "cells", b.cells)?,
                need(cell, "gates", b.gates)?,
                b.y,
                b.xw,
                b.w_hh,
                b.bias,
                b.lengths,
                s,
            ),
            Cell::Gru => k::gru_step_forward(
                prog,
                b.states,
                need(cell, "gates", b.gates)?,
                b.y,
                b.xw,
                b.w_hh,
                b.bias,
                b.lengths,
                s,
            ),
            Cell::Rnn { relu } => {
                k::rnn_step_forward(prog, b.states, b.y, b.xw, b.w_hh, b.bias, b.lengths, s, relu)
            }
        }
    }

    fn step_backward(&mut self, cell: Cell, b: &StepBufs<'_, Self>, s: Step) -> Result<()> {
        let prog = self.prog()?;
        let dy = need(cell, "dy", b.dy)?;
        let dg = need(cell, "dg", b.dg)?;
        let carry = need(cell, "carry", b.carry)?;
        match cell {
            Cell::Lstm => k::lstm_step_backward(
                prog,
                need(cell, "cells", b.cells)?,
                need(cell, "gates", b.gates)?,
                b.w_hh,
                b.lengths,
                dy,
                dg,
                carry,
                s,
            ),
            Cell::Gru => k::gru_step_backward(
                prog,
                b.states,
                need(cell, "gates", b.gates)?,
                b.w_hh,
                b.lengths,
                dy,
                dg,
                need(cell, "dgh", b.dgh)?,
                carry,
                s,
            ),
            Cell::Rnn { relu } => {
                k::rnn_step_backward(prog, b.states, b.w_hh, b.lengths, dy, dg, carry, s, relu)
            }
        }
    }
}
