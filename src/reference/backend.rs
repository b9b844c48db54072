//! The reference device: each op runs at once through its plain-loop twin in
//! `reference::kernels`. Generic over the float type, so that the same model code runs in f64 for
//! the gradient checks.

use std::marker::PhantomData;

use super::kernels as k;
use crate::cell::CellMath;
use crate::error::{Error, Result};
use crate::host::{self, HostBackend, HostKernels, HostOp, StepBackward, StepForward, StepKernels, rd, wr};
use crate::ops::{Op, Step, StepBufs};
use crate::real::Real;

/// The plain-loop twins, as the kernels of a CPU device.
#[derive(Debug, Default)]
pub struct Twins<T>(PhantomData<T>);

/// The reference device.
pub type ReferenceBackend<T> = HostBackend<Twins<T>>;

impl<T: Real> HostBackend<Twins<T>> {
    pub fn new() -> Self {
        Self::with_kernels(Twins(PhantomData))
    }
}

impl<T: Real> Default for HostBackend<Twins<T>> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Real> HostKernels for Twins<T> {
    type Elem = T;
    const ON_POOL: bool = false;

    fn launch(&mut self, op: HostOp<'_, T>) -> Result<()> {
        twin(op)
    }
}

/// Runs `op` through its plain-loop twin: every op of the reference device, and those of the
/// native device that have no kernel of their own.
pub(crate) fn twin<T: Real>(op: HostOp<'_, T>) -> Result<()> {
    match op {
        Op::Clear { x } => x.fill(T::ZERO)?,
        Op::Copy { dst, src } => src.copy_to(dst)?,
        Op::Matmul { c, a, b, bias, p } => {
            let mut c = wr(c)?;
            k::matmul(&mut c, &rd(a)?, &rd(b)?, p);
            if let Some(bias) = bias {
                k::add_bias(&mut c, &rd(bias)?, p.m, p.n);
            }
        }
        Op::BiasGrad { db, db2, dy, rows, cols } => {
            k::bias_grad(&mut wr(db)?, &rd(dy)?, rows, cols);
            if let Some(db2) = db2 {
                k::bias_grad(&mut wr(db2)?, &rd(dy)?, rows, cols);
            }
        }
        Op::TanhForward { y, x } => k::tanh_forward(&mut wr(y)?, &rd(x)?),
        Op::TanhBackward { dx, y, dy } => k::tanh_backward(&mut wr(dx)?, &rd(y)?, &rd(dy)?),
        Op::Gather { out, table, idx, p } => k::gather(&mut wr(out)?, &rd(table)?, &rd(idx)?, p),
        Op::ScatterAdd { dtable, dout, starts, rows, p } => {
            k::scatter_add(&mut wr(dtable)?, &rd(dout)?, &rd(starts)?, &rd(rows)?, p)
        }
        Op::SoftmaxRows { y, x, rows, cols } => k::softmax_rows(&mut wr(y)?, &rd(x)?, rows, cols),
        Op::SoftmaxXent { loss, dx, logits, targets, weights, rows, cols } => {
            let (logits, targets) = (rd(logits)?, rd(targets)?);
            host::row_loss((loss, dx, weights), (rows, cols), |out| k::softmax_xent(out, &logits, &targets))?
        }
        Op::Mse { loss, dx, pred, target, weights, rows, cols } => {
            let (pred, target) = (rd(pred)?, rd(target)?);
            host::row_loss((loss, dx, weights), (rows, cols), |out| k::mse(out, &pred, &target))?
        }
        Op::SoftmaxBackward { dx, y, dy, rows, cols } => {
            k::softmax_backward(&mut wr(dx)?, &rd(y)?, &rd(dy)?, rows, cols)
        }
        Op::Reduce { out, x, p } => k::reduce(&mut wr(out)?, &rd(x)?, p),
        Op::Dropout { out, x, seeds, p, backward: false } => {
            k::dropout_forward(&mut wr(out)?, &rd(x)?, &rd(seeds)?, p)
        }
        Op::Dropout { out, x, seeds, p, backward: true } => {
            k::dropout_backward(&mut wr(out)?, &rd(x)?, &rd(seeds)?, p)
        }
        Op::FinalizeStep { state, grads, max_norm } => {
            k::finalize_step(&mut wr(state)?, &rd(grads)?, T::from_f32(max_norm))
        }
        Op::ClipByValue { grad, lo, hi } => {
            k::clip_by_value(&mut wr(grad)?, T::from_f32(lo), T::from_f32(hi))
        }
        Op::Update { param, grad, slots, state, rule } => {
            let mut locked = slots.iter().map(|s| wr(s)).collect::<Result<Vec<_>>>()?;
            let mut views: Vec<&mut [T]> = locked.iter_mut().map(|w| &mut **w).collect();
            rule.apply(&mut wr(param)?, &rd(grad)?, &mut views, &rd(state)?);
        }
        Op::CopyCols { y, x, p } => k::copy_cols(&mut wr(y)?, &rd(x)?, p),
        Op::AttentionDots { out, x, enc, src_len, a, mask } => {
            k::attention_dots(&mut wr(out)?, &rd(x)?, &rd(enc)?, &rd(src_len)?, a, mask)
        }
        Op::AttentionMix { out, w, x, a, accumulate, transposed } => {
            let mix = if transposed { k::attention_mix_t } else { k::attention_mix };
            mix(&mut wr(out)?, &rd(w)?, &rd(x)?, a, accumulate)
        }
        Op::Step { bufs: StepBufs { xw_rows: Some(_), .. }, .. } => {
            return Err(Error::invalid(
                "step",
                "the reference's steps read a gathered projection, not a table",
            ));
        }
        Op::Step { cell, bufs, s, backward } => {
            host::step(&mut Twins(PhantomData), cell, &bufs, s, backward)?
        }
    }
    Ok(())
}

impl<T: Real> StepKernels<T> for Twins<T> {
    fn forward<C: CellMath>(&mut self, cell: C, f: StepForward<'_, T>, s: Step) {
        k::step_forward(cell, f, s)
    }

    fn backward<C: CellMath>(&mut self, cell: C, b: StepBackward<'_, T>, s: Step) {
        k::step_backward(cell, b, s)
    }
}
