//! The reference device: each op runs at once, through its plain-loop twin in `reference::kernels`. Generic over the
//! float type, so that the same model code runs in f64 for the gradient checks.

use std::marker::PhantomData;

use super::kernels as k;
use crate::backend::{Backend, ProgramKey, StepBufs};
use crate::error::{Error, Result};
use crate::host::{
    self, GruBackward, GruForward, HostMemory, HostTensor, LstmBackward, LstmForward, RnnBackward,
    RnnForward, StepKernels, check_matmul, rd, wr,
};
use crate::ops::{Attention, Cell, CopyCols, Dropout, Gather, Matmul, Reduce, Step};
use crate::real::Real;
use crate::update::{self, Optimizer};

#[derive(Debug)]
pub struct ReferenceBackend<T> {
    memory: HostMemory,
    _elem: PhantomData<T>,
}

impl<T: Real> Default for ReferenceBackend<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Real> ReferenceBackend<T> {
    pub fn new() -> Self {
        ReferenceBackend { memory: HostMemory::new(), _elem: PhantomData }
    }
}

impl<T: Real> Backend for ReferenceBackend<T> {
    type Elem = T;
    type Buf = HostTensor<T>;
    type IBuf = HostTensor<u32>;

    fn alloc(&mut self, what: &str, len: usize) -> Result<Self::Buf> {
        self.memory.alloc(what, len, T::ZERO)
    }

    fn alloc_u32(&mut self, what: &str, len: usize) -> Result<Self::IBuf> {
        self.memory.alloc(what, len, 0)
    }

    fn view(&self, t: &Self::Buf, start: usize, len: usize) -> Result<Self::Buf> {
        t.view(start, len)
    }

    fn len(t: &Self::Buf) -> usize {
        t.len()
    }

    fn write(&mut self, t: &Self::Buf, data: &[T]) -> Result<()> {
        t.write("write", data)
    }

    fn write_u32(&mut self, t: &Self::IBuf, data: &[u32]) -> Result<()> {
        t.write("write_u32", data)
    }

    fn read(&mut self, t: &Self::Buf) -> Result<Vec<T>> {
        t.read()
    }

    fn execute(
        &mut self,
        _key: ProgramKey,
        record: &mut (dyn FnMut(&mut Self) -> Result<()> + Send),
    ) -> Result<()> {
        record(self)
    }

    fn drop_programs(&mut self, _steps: usize, _tgt_steps: usize, _batch: usize) {}

    fn clear(&mut self, t: &Self::Buf) -> Result<()> {
        t.fill(T::ZERO)
    }

    fn copy(&mut self, src: &Self::Buf, dst: &Self::Buf) -> Result<()> {
        src.copy_to(dst)
    }

    fn matmul(&mut self, c: &Self::Buf, a: &Self::Buf, b: &Self::Buf, p: Matmul) -> Result<()> {
        check_matmul(c, a, b, p)?;
        k::matmul(&mut wr(c)?, &rd(a)?, &rd(b)?, p);
        Ok(())
    }

    fn matmul_bias(
        &mut self,
        c: &Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        bias: &Self::Buf,
        p: Matmul,
    ) -> Result<()> {
        check_matmul(c, a, b, p)?;
        if bias.len() != p.n {
            return Err(Error::shape("matmul", "bias", &[bias.len()], &[p.n]));
        }
        let mut c = wr(c)?;
        k::matmul(&mut c, &rd(a)?, &rd(b)?, p);
        k::add_bias(&mut c, &rd(bias)?, p.m, p.n);
        Ok(())
    }

    fn bias_grad(&mut self, db: &Self::Buf, dy: &Self::Buf, rows: usize, cols: usize) -> Result<()> {
        k::bias_grad(&mut wr(db)?, &rd(dy)?, rows, cols);
        Ok(())
    }

    fn axpy(&mut self, y: &Self::Buf, x: &Self::Buf, alpha: f32) -> Result<()> {
        k::axpy(&mut wr(y)?, &rd(x)?, T::from_f32(alpha));
        Ok(())
    }

    fn tanh_forward(&mut self, y: &Self::Buf, x: &Self::Buf) -> Result<()> {
        k::tanh_forward(&mut wr(y)?, &rd(x)?);
        Ok(())
    }

    fn tanh_backward(&mut self, dx: &Self::Buf, y: &Self::Buf, dy: &Self::Buf) -> Result<()> {
        k::tanh_backward(&mut wr(dx)?, &rd(y)?, &rd(dy)?);
        Ok(())
    }

    fn gather(&mut self, out: &Self::Buf, table: &Self::Buf, idx: &Self::IBuf, p: Gather) -> Result<()> {
        k::gather(&mut wr(out)?, &rd(table)?, &rd(idx)?, p);
        Ok(())
    }

    fn scatter_add(
        &mut self,
        dtable: &Self::Buf,
        dout: &Self::Buf,
        starts: &Self::IBuf,
        rows: &Self::IBuf,
        p: Gather,
    ) -> Result<()> {
        k::scatter_add(&mut wr(dtable)?, &rd(dout)?, &rd(starts)?, &rd(rows)?, p);
        Ok(())
    }

    fn softmax_rows(&mut self, y: &Self::Buf, x: &Self::Buf, rows: usize, cols: usize) -> Result<()> {
        k::softmax_rows(&mut wr(y)?, &rd(x)?, rows, cols);
        Ok(())
    }

    fn softmax_xent(
        &mut self,
        loss: &Self::Buf,
        dx: &Self::Buf,
        logits: &Self::Buf,
        targets: &Self::IBuf,
        weights: &Self::Buf,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        k::softmax_xent(&mut wr(loss)?, &mut wr(dx)?, &rd(logits)?, &rd(targets)?, &rd(weights)?, rows, cols);
        Ok(())
    }

    fn mse(
        &mut self,
        loss: &Self::Buf,
        dx: &Self::Buf,
        pred: &Self::Buf,
        target: &Self::Buf,
        weights: &Self::Buf,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        k::mse(&mut wr(loss)?, &mut wr(dx)?, &rd(pred)?, &rd(target)?, &rd(weights)?, rows, cols);
        Ok(())
    }

    fn reduce(&mut self, out: &Self::Buf, x: &Self::Buf, p: Reduce) -> Result<()> {
        k::reduce(&mut wr(out)?, &rd(x)?, p);
        Ok(())
    }

    fn dropout_forward(
        &mut self,
        out: &Self::Buf,
        x: &Self::Buf,
        seeds: &Self::IBuf,
        p: Dropout,
    ) -> Result<()> {
        k::dropout_forward(&mut wr(out)?, &rd(x)?, &rd(seeds)?, p);
        Ok(())
    }

    fn dropout_backward(
        &mut self,
        dx: &Self::Buf,
        dy: &Self::Buf,
        seeds: &Self::IBuf,
        p: Dropout,
    ) -> Result<()> {
        k::dropout_backward(&mut wr(dx)?, &rd(dy)?, &rd(seeds)?, p);
        Ok(())
    }

    fn finalize_step(&mut self, state: &Self::Buf, grads: &Self::Buf, max_norm: f32) -> Result<()> {
        k::finalize_step(&mut wr(state)?, &rd(grads)?, T::from_f32(max_norm));
        Ok(())
    }

    fn clip_by_value(&mut self, grad: &Self::Buf, lo: f32, hi: f32) -> Result<()> {
        k::clip_by_value(&mut wr(grad)?, T::from_f32(lo), T::from_f32(hi));
        Ok(())
    }

    fn update(
        &mut self,
        param: &Self::Buf,
        grad: &Self::Buf,
        slots: &[&Self::Buf],
        state: &Self::Buf,
        rule: &Optimizer,
    ) -> Result<()> {
        let lens: Vec<usize> = slots.iter().map(|s| s.len()).collect();
        update::check_buffers(rule, param.len(), grad.len(), &lens, state.len())?;
        let mut locked = slots.iter().map(|s| wr(s)).collect::<Result<Vec<_>>>()?;
        let mut views: Vec<&mut [T]> = locked.iter_mut().map(|w| &mut **w).collect();
        rule.apply(&mut wr(param)?, &rd(grad)?, &mut views, &rd(state)?);
        Ok(())
    }

    fn copy_cols(&mut self, y: &Self::Buf, x: &Self::Buf, p: CopyCols) -> Result<()> {
        k::copy_cols(&mut wr(y)?, &rd(x)?, p);
        Ok(())
    }

    fn attention_dots(
        &mut self,
        out: &Self::Buf,
        x: &Self::Buf,
        enc: &Self::Buf,
        src_len: &Self::IBuf,
        a: Attention,
        mask: bool,
    ) -> Result<()> {
        k::attention_dots(&mut wr(out)?, &rd(x)?, &rd(enc)?, &rd(src_len)?, a, mask);
        Ok(())
    }

    fn attention_mix(
        &mut self,
        out: &Self::Buf,
        w: &Self::Buf,
        enc: &Self::Buf,
        a: Attention,
        accumulate: bool,
    ) -> Result<()> {
        k::attention_mix(&mut wr(out)?, &rd(w)?, &rd(enc)?, a, accumulate);
        Ok(())
    }

    fn attention_mix_t(
        &mut self,
        out: &Self::Buf,
        w: &Self::Buf,
        x: &Self::Buf,
        a: Attention,
        accumulate: bool,
    ) -> Result<()> {
        k::attention_mix_t(&mut wr(out)?, &rd(w)?, &rd(x)?, a, accumulate);
        Ok(())
    }

    fn softmax_backward(
        &mut self,
        dx: &Self::Buf,
        y: &Self::Buf,
        dy: &Self::Buf,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        k::softmax_backward(&mut wr(dx)?, &rd(y)?, &rd(dy)?, rows, cols);
        Ok(())
    }

    fn step_forward(&mut self, cell: Cell, b: &StepBufs<'_, Self>, s: Step) -> Result<()> {
        host::step_forward(&mut Twins, cell, b, s)
    }

    fn step_backward(&mut self, cell: Cell, b: &StepBufs<'_, Self>, s: Step) -> Result<()> {
        host::step_backward(&mut Twins, cell, b, s)
    }
}

/// The step kernels of the reference: the plain-loop twins.
struct Twins;

impl<T: Real> StepKernels<T> for Twins {
    fn lstm_forward(&mut self, f: LstmForward<'_, T>, s: Step) {
        k::lstm_step_forward(f.states, f.cells, f.gates, f.y, f.xw, f.w_hh, f.bias, f.lengths, s)
    }
    fn gru_forward(&mut self, f: GruForward<'_, T>, s: Step) {
        k::gru_step_forward(f.states, f.gates, f.y, f.xw, f.w_hh, f.bias, f.lengths, s)
    }
    fn rnn_forward(&mut self, f: RnnForward<'_, T>, s: Step, relu: bool) {
        k::rnn_step_forward(f.states, f.y, f.xw, f.w_hh, f.bias, f.lengths, s, relu)
    }
    fn lstm_backward(&mut self, b: LstmBackward<'_, T>, s: Step) {
        k::lstm_step_backward(b.cells, b.gates, b.w_hh, b.lengths, b.dy, b.dg, b.carry, s)
    }
    fn gru_backward(&mut self, b: GruBackward<'_, T>, s: Step) {
        k::gru_step_backward(b.states, b.gates, b.w_hh, b.lengths, b.dy, b.dg, b.dgh, b.carry, s)
    }
    fn rnn_backward(&mut self, b: RnnBackward<'_, T>, s: Step, relu: bool) {
        k::rnn_step_backward(b.states, b.w_hh, b.lengths, b.dy, b.dg, b.carry, s, relu)
    }
}
