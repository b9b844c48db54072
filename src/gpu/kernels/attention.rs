//! Launchers of attention.wgsl.

use super::{WG, need, to_u32};
use crate::error::{Result, check_nonzero};
use crate::gpu::program::{Program, groups_1d};
use crate::gpu::tensor::GpuTensor;
use crate::ops::Attention;

kernel_params! {
    struct AttentionParams {
        // T_t, B, T_s and A
        tgt: u32, batch: u32, src: u32, width: u32,
        accumulate: u32, _pad: [u32; 3],
    }
}

fn attention_params(op: &'static str, a: Attention, accumulate: bool) -> Result<AttentionParams> {
    check_nonzero(op, "target steps", a.tgt)?;
    check_nonzero(op, "batch", a.batch)?;
    check_nonzero(op, "source steps", a.src)?;
    check_nonzero(op, "width", a.width)?;
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
    let params = attention_params(OP, a, false)?;
    need(OP, "out", out, a.tgt * a.batch * a.src)?;
    need(OP, "x", x, a.tgt * a.batch * a.width)?;
    need(OP, "enc", enc, a.src * a.batch * a.width)?;
    need(OP, "src_len", src_len, a.batch)?;
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

/// `out[t, b, :] (+)= sum_j w[t, b, j] enc[j, b, :]`
pub fn attention_mix(
    prog: &mut Program,
    out: &GpuTensor,
    w: &GpuTensor,
    enc: &GpuTensor,
    a: Attention,
    accumulate: bool,
) -> Result<()> {
    const OP: &str = "attention_mix";
    let params = attention_params(OP, a, accumulate)?;
    need(OP, "out", out, a.tgt * a.batch * a.width)?;
    need(OP, "w", w, a.tgt * a.batch * a.src)?;
    need(OP, "enc", enc, a.src * a.batch * a.width)?;
    let groups = groups_1d(prog.ctx(), a.tgt * a.batch * a.width, WG);
    prog.dispatch("attention", OP, &[], &[(1, out), (2, w), (3, enc)], &params, groups)
}

/// `out[j, b, :] (+)= sum_t w[t, b, j] x[t, b, :]`
pub fn attention_mix_t(
    prog: &mut Program,
    out: &GpuTensor,
    w: &GpuTensor,
    x: &GpuTensor,
    a: Attention,
    accumulate: bool,
) -> Result<()> {
    const OP: &str = "attention_mix_t";
    let params = attention_params(OP, a, accumulate)?;
    need(OP, "out", out, a.src * a.batch * a.width)?;
    need(OP, "w", w, a.tgt * a.batch * a.src)?;
    need(OP, "x", x, a.tgt * a.batch * a.width)?;
    let groups = groups_1d(prog.ctx(), a.src * a.batch * a.width, WG);
    prog.dispatch("attention", OP, &[], &[(1, out), (2, w), (3, x)], &params, groups)
}
