//! The CPU device: each op runs at once, through its twin in `cpu::kernels`. Generic over the
//! float type, so that the same model code runs in f64 for the gradient checks.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut, Range};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::kernels as k;
use crate::backend::{Backend, ProgramKey, StepBufs};
use crate::error::{Error, Result};
use crate::ops::{Attention, Cell, CopyCols, Dropout, Gather, Matmul, Reduce, Step};
use crate::real::Real;
use crate::train::optim::{Adagrad, Adam, Sgd};

/// A view of a host buffer.
#[derive(Clone, Debug)]
pub struct CpuTensor<T> {
    data: Arc<RwLock<Vec<T>>>,
    offset: usize,
    len: usize,
}

impl<T> CpuTensor<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A locked view. Reads share a buffer; a write excludes everything else, as on a GPU, where a
/// buffer bound writable in one dispatch cannot be bound again. An op handed such a pair gets an
/// error, not a deadlock.
struct Read<'a, T> {
    guard: RwLockReadGuard<'a, Vec<T>>,
    range: Range<usize>,
}

struct Write<'a, T> {
    guard: RwLockWriteGuard<'a, Vec<T>>,
    range: Range<usize>,
}

impl<T> Deref for Read<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.guard[self.range.clone()]
    }
}

impl<T> Deref for Write<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.guard[self.range.clone()]
    }
}

impl<T> DerefMut for Write<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.guard[self.range.clone()]
    }
}

fn aliasing() -> Error {
    Error::invalid(
        "cpu backend",
        "one op was handed a buffer it writes through another argument too (an engine bug)",
    )
}

fn rd<T>(t: &CpuTensor<T>) -> Result<Read<'_, T>> {
    let guard = t.data.try_read().map_err(|_| aliasing())?;
    Ok(Read { guard, range: t.offset..t.offset + t.len })
}

fn wr<T>(t: &CpuTensor<T>) -> Result<Write<'_, T>> {
    let guard = t.data.try_write().map_err(|_| aliasing())?;
    Ok(Write { guard, range: t.offset..t.offset + t.len })
}

fn new_tensor<T: Clone>(len: usize, zero: T) -> CpuTensor<T> {
    CpuTensor { data: Arc::new(RwLock::new(vec![zero; len])), offset: 0, len }
}

#[derive(Debug)]
pub struct CpuBackend<T> {
    /// Bytes of the buffers allocated so far, and what the machine had available at the start:
    /// an allocation past that is refused with the figures rather than left to the OOM killer.
    allocated: u64,
    available: Option<u64>,
    _elem: PhantomData<T>,
}

impl<T: Real> Default for CpuBackend<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Real> CpuBackend<T> {
    pub fn new() -> Self {
        CpuBackend { allocated: 0, available: crate::error::available_memory(), _elem: PhantomData }
    }

    fn reserve(&mut self, what: &str, bytes: u64) -> Result<()> {
        let total = self.allocated.saturating_add(bytes);
        if let Some(available) = self.available
            && total > available
        {
            return Err(Error::OutOfMemory { what: what.to_string(), needed: total, available });
        }
        self.allocated = total;
        Ok(())
    }
}

impl<T: Real> Backend for CpuBackend<T> {
    type Elem = T;
    type Buf = CpuTensor<T>;
    type IBuf = CpuTensor<u32>;

    fn alloc(&mut self, what: &str, len: usize) -> Result<Self::Buf> {
        self.reserve(what, (len as u64).saturating_mul(std::mem::size_of::<T>() as u64))?;
        Ok(new_tensor(len, T::ZERO))
    }

    fn alloc_u32(&mut self, what: &str, len: usize) -> Result<Self::IBuf> {
        self.reserve(what, (len as u64).saturating_mul(4))?;
        Ok(new_tensor(len, 0))
    }

    fn view(&self, t: &Self::Buf, start: usize, len: usize) -> Result<Self::Buf> {
        if start + len > t.len {
            return Err(Error::range("view", "end", start + len, format!("at most {}", t.len)));
        }
        Ok(CpuTensor { data: t.data.clone(), offset: t.offset + start, len })
    }

    fn len(t: &Self::Buf) -> usize {
        t.len
    }

    fn write(&mut self, t: &Self::Buf, data: &[T]) -> Result<()> {
        if data.len() != t.len {
            return Err(Error::shape("write", "data", &[data.len()], &[t.len]));
        }
        wr(t)?.copy_from_slice(data);
        Ok(())
    }

    fn write_u32(&mut self, t: &Self::IBuf, data: &[u32]) -> Result<()> {
        if data.len() != t.len {
            return Err(Error::shape("write_u32", "data", &[data.len()], &[t.len]));
        }
        wr(t)?.copy_from_slice(data);
        Ok(())
    }

    fn read(&mut self, t: &Self::Buf) -> Result<Vec<T>> {
        Ok(rd(t)?.to_vec())
    }

    fn execute(&mut self, _key: ProgramKey, record: &mut dyn FnMut(&mut Self) -> Result<()>) -> Result<()> {
        record(self)
    }

    fn drop_programs(&mut self, _steps: usize, _tgt_steps: usize, _batch: usize) {}

    fn clear(&mut self, t: &Self::Buf) -> Result<()> {
        wr(t)?.fill(T::ZERO);
        Ok(())
    }

    fn copy(&mut self, src: &Self::Buf, dst: &Self::Buf) -> Result<()> {
        if src.len != dst.len {
            return Err(Error::shape("copy", "source", &[src.len], &[dst.len]));
        }
        if Arc::ptr_eq(&src.data, &dst.data) {
            let mut g = src.data.try_write().map_err(|_| aliasing())?;
            g.copy_within(src.offset..src.offset + src.len, dst.offset);
            return Ok(());
        }
        wr(dst)?.copy_from_slice(&rd(src)?);
        Ok(())
    }

    fn matmul(&mut self, c: &Self::Buf, a: &Self::Buf, b: &Self::Buf, p: Matmul) -> Result<()> {
        if c.len != p.m * p.n || a.len != p.m * p.k || b.len != p.k * p.n {
            return Err(Error::shape(
                "matmul",
                "C, A, B",
                &[c.len, a.len, b.len],
                &[p.m * p.n, p.m * p.k, p.k * p.n],
            ));
        }
        k::matmul(&mut wr(c)?, &rd(a)?, &rd(b)?, p);
        Ok(())
    }

    fn add_bias(&mut self, y: &Self::Buf, bias: &Self::Buf, rows: usize, cols: usize) -> Result<()> {
        k::add_bias(&mut wr(y)?, &rd(bias)?, rows, cols);
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

    fn finalize_step(&mut self, state: &Self::Buf, max_norm: f32) -> Result<()> {
        k::finalize_step(&mut wr(state)?, T::from_f32(max_norm));
        Ok(())
    }

    fn clip_by_norm(&mut self, grad: &Self::Buf, state: &Self::Buf) -> Result<()> {
        k::clip_by_norm(&mut wr(grad)?, &rd(state)?);
        Ok(())
    }

    fn clip_by_value(&mut self, grad: &Self::Buf, lo: f32, hi: f32) -> Result<()> {
        k::clip_by_value(&mut wr(grad)?, T::from_f32(lo), T::from_f32(hi));
        Ok(())
    }

    fn sgd(
        &mut self,
        param: &Self::Buf,
        grad: &Self::Buf,
        momentum: Option<&Self::Buf>,
        state: &Self::Buf,
        o: Sgd,
    ) -> Result<()> {
        let mut mom = momentum.map(wr).transpose()?;
        k::sgd(&mut wr(param)?, &rd(grad)?, mom.as_deref_mut(), &rd(state)?, o);
        Ok(())
    }

    fn adagrad(
        &mut self,
        param: &Self::Buf,
        grad: &Self::Buf,
        sum: &Self::Buf,
        state: &Self::Buf,
        o: Adagrad,
    ) -> Result<()> {
        k::adagrad(&mut wr(param)?, &rd(grad)?, &mut wr(sum)?, &rd(state)?, o);
        Ok(())
    }

    fn adam(
        &mut self,
        param: &Self::Buf,
        grad: &Self::Buf,
        m: &Self::Buf,
        v: &Self::Buf,
        state: &Self::Buf,
        o: Adam,
    ) -> Result<()> {
        k::adam(&mut wr(param)?, &rd(grad)?, &mut wr(m)?, &mut wr(v)?, &rd(state)?, o);
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
        let missing = || Error::invalid("step_forward", format!("{} needs its gates buffer", cell.name()));
        match cell {
            Cell::Lstm => {
                let cells = b.cells.ok_or_else(missing)?;
                let gates = b.gates.ok_or_else(missing)?;
                k::lstm_step_forward(
                    &mut wr(b.states)?,
                    &mut wr(cells)?,
                    &mut wr(gates)?,
                    &mut wr(b.y)?,
                    &rd(b.xw)?,
                    &rd(b.w_hh)?,
                    &rd(b.bias)?,
                    &rd(b.lengths)?,
                    s,
                )
            }
            Cell::Gru => k::gru_step_forward(
                &mut wr(b.states)?,
                &mut wr(b.gates.ok_or_else(missing)?)?,
                &mut wr(b.y)?,
                &rd(b.xw)?,
                &rd(b.w_hh)?,
                &rd(b.bias)?,
                &rd(b.lengths)?,
                s,
            ),
            Cell::Rnn { relu } => k::rnn_step_forward(
                &mut wr(b.states)?,
                &mut wr(b.y)?,
                &rd(b.xw)?,
                &rd(b.w_hh)?,
                &rd(b.bias)?,
                &rd(b.lengths)?,
                s,
                relu,
            ),
        }
        Ok(())
    }

    fn step_backward(&mut self, cell: Cell, b: &StepBufs<'_, Self>, s: Step) -> Result<()> {
        let missing = |what: &str| Error::invalid("step_backward", format!("{} needs {what}", cell.name()));
        let dy = b.dy.ok_or_else(|| missing("dy"))?;
        let dg = b.dg.ok_or_else(|| missing("dg"))?;
        let carry = b.carry.ok_or_else(|| missing("carry"))?;
        match cell {
            Cell::Lstm => k::lstm_step_backward(
                &rd(b.cells.ok_or_else(|| missing("cells"))?)?,
                &rd(b.gates.ok_or_else(|| missing("gates"))?)?,
                &rd(b.w_hh)?,
                &rd(b.lengths)?,
                &rd(dy)?,
                &mut wr(dg)?,
                &mut wr(carry)?,
                s,
            ),
            Cell::Gru => k::gru_step_backward(
                &rd(b.states)?,
                &rd(b.gates.ok_or_else(|| missing("gates"))?)?,
                &rd(b.w_hh)?,
                &rd(b.lengths)?,
                &rd(dy)?,
                &mut wr(dg)?,
                &mut wr(b.dgh.ok_or_else(|| missing("dgh"))?)?,
                &mut wr(carry)?,
                s,
            ),
            Cell::Rnn { relu } => k::rnn_step_backward(
                &rd(b.states)?,
                &rd(b.w_hh)?,
                &rd(b.lengths)?,
                &rd(dy)?,
                &mut wr(dg)?,
                &mut wr(carry)?,
                s,
                relu,
            ),
        }
        Ok(())
    }
}
