//! Launchers of reduce.wgsl.

use super::optim::need_state;
use super::{need, to_u32};
use crate::error::{Error, Result};
use crate::gpu::program::Program;
use crate::gpu::tensor::GpuTensor;
use crate::ops::{Reduce, step_state};

kernel_params! {
    struct ReduceParams {
        // n: elements of x (partial) or partials (final)
        // parts: PARTS: the workgroups of the first pass (REDUCE_PARTS)
        // index: final: where in out the sum goes
        // accumulate: final: 1 adds to out[index]
        n: u32, parts: u32, index: u32, accumulate: u32,
        // max_norm: FINALIZE: the clipping norm, 0 for none
        max_norm: f32, _pad: [u32; 3],
    }
}

/// Partial sums the first pass leaves for the second: its workgroups, at most.
pub const REDUCE_PARTS: usize = 256;

/// Elements each thread of the first pass sums, at least, before the first pass uses fewer than
/// `REDUCE_PARTS` workgroups: a short buffer (a loss, a small model's gradients) then takes a few
/// workgroups rather than 256 nearly idle ones, which cost a GPU little but a CPU running WebGPU
/// (SwiftShader, lavapipe) a 256-thread barrier tree each.
const PER_THREAD: usize = 4;

/// The first pass's workgroups for `n` elements.
fn parts(n: usize) -> usize {
    n.div_ceil(256 * PER_THREAD).clamp(1, REDUCE_PARTS)
}

/// The squared norm of `grads` into `state[GRAD_SUMSQ]`, then the step's decision: finite or not,
/// and the clipping scale for `max_norm` (0: no clipping) that the optimizers apply. The decision
/// runs in the reduction's last dispatch.
pub fn finalize_step(
    prog: &mut Program,
    state: &GpuTensor,
    grads: &GpuTensor,
    scratch: &GpuTensor,
    max_norm: f32,
) -> Result<()> {
    need_state("finalize_step", state)?;
    reduce(prog, state, grads, scratch, step_state::GRAD_NORM_SQUARED, Some(max_norm))
}

/// `out[index] (+)= sum(x)` (or the sum of squares), in two passes through `scratch`
/// (`REDUCE_PARTS` elements); with `finalize`, the last dispatch decides the step for that
/// max_norm (`finalize_step`).
pub fn reduce(
    prog: &mut Program,
    out: &GpuTensor,
    x: &GpuTensor,
    scratch: &GpuTensor,
    p: Reduce,
    finalize: Option<f32>,
) -> Result<()> {
    const OP: &str = "reduce";
    need(OP, "scratch", scratch, REDUCE_PARTS)?;
    if p.index >= out.len() {
        return Err(Error::range(OP, "index", p.index, format!("below {}", out.len())));
    }
    let n = to_u32(OP, "n", x.len())?;
    let parts = parts(x.len()) as u32;
    let first = ReduceParams { n, parts, index: 0, accumulate: 0, max_norm: 0.0, ..Default::default() };
    prog.dispatch(
        "reduce",
        "reduce_partial",
        &[("SQUARE", p.square as u64)],
        &[(1, scratch), (2, x)],
        &first,
        [parts, 1, 1],
    )?;
    let second = ReduceParams {
        n: parts,
        parts,
        index: p.index as u32,
        accumulate: p.accumulate as u32,
        max_norm: finalize.unwrap_or(0.0),
        ..Default::default()
    };
    let constants = [("FINALIZE", finalize.is_some() as u64)];
    prog.dispatch("reduce", "reduce_final", &constants, &[(1, out), (2, scratch)], &second, [1, 1, 1])
}
