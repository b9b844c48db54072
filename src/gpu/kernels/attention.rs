//! Launchers of attention.wgsl.

use super::{WG, check, to_u32};
use crate::error::Result;
use crate::gpu::program::{Program, groups_1d};
use crate::gpu::tensor::GpuTensor;
use crate::ops::{Attention, Op};

kernel_params! {
    struct AttentionParams {
        // T_t, B, T_s and A
        tgt: u32, batch: u32, src: u32, width: u32,
        accumulate: u32, _pad: [u32; 3],
    }
}

fn attention_params(op: &'static str, a: Attention, accumulate: bool) -> Result<AttentionParams> {
    Ok(checked_params!(AttentionParams, op, a; tgt, batch, src, width; accumulate: accumulate as u32))
}

/// `out[t, b, j] = x[t, b, :] · enc[j, b, :]`; with `mask`, `-1e30` where `j >= src_len[b]`.
pub fn attention_dots(
    prog: &mut Program,
    out: &GpuTensor,     // (T_t * B, T_s)
    x: &GpuTensor,       // (T_t, B, A)
    enc: &GpuTensor,     // (T_s, B, A)
    src_len: &GpuTensor, // (B) u32
    a: Attention,
    mask: bool,
) -> Result<()> {
    const OP: &str = "attention_dots";
    check(Op::AttentionDots { out, x, enc, src_len, a, mask })?;
    let params = attention_params(OP, a, false)?;
    let groups = groups_1d(prog.ctx(), a.tgt * a.batch * a.src, WG);
    prog.dispatch(
        "attention",
        OP,
        &[("MASK", mask as u64)],
        &[(1, out), (2, x), (3, enc), (4, src_len)],
        &params,
        groups,
    )
}

/// `out[t, b, :] (+)= sum_j w[t, b, j] x[j, b, :]` (x the encoder's outputs), or `transposed`:
/// `out[j, b, :] (+)= sum_t w[t, b, j] x[t, b, :]`.
pub fn attention_mix(
    prog: &mut Program,
    out: &GpuTensor,
    w: &GpuTensor,
    x: &GpuTensor,
    a: Attention,
    accumulate: bool,
    transposed: bool,
) -> Result<()> {
    const OP: &str = "attention_mix";
    check(Op::AttentionMix { out, w, x, a, accumulate, transposed })?;
    let params = attention_params(OP, a, accumulate)?;
    let rows = if transposed { a.src } else { a.tgt };
    let groups = groups_1d(prog.ctx(), rows * a.batch * a.width, WG);
    let constants = [("TRANSPOSED", transposed as u64)];
    prog.dispatch("attention", OP, &constants, &[(1, out), (2, w), (3, x)], &params, groups)
}
