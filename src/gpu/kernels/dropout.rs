//! Launchers of dropout.wgsl.

use super::{WG, check, to_u32};
use crate::error::Result;
use crate::gpu::program::{Program, groups_1d};
use crate::gpu::tensor::GpuTensor;
use crate::ops::{Dropout, Op};

kernel_params! {
    struct DropoutParams {
        n: u32, seed: u32, prob: f32, _pad: u32,
    }
}

/// Forward: `out = keep ? x / (1 - p) : 0`, the mask drawn from (`seeds[0] ^ salt`, index).
/// Backward: `out += keep ? x / (1 - p) : 0` (x the output's gradient), the same mask.
pub fn dropout(
    prog: &mut Program,
    out: &GpuTensor,
    x: &GpuTensor,
    seeds: &GpuTensor,
    p: Dropout,
    backward: bool,
) -> Result<()> {
    check(Op::Dropout { out, x, seeds, p, backward })?;
    let entry = if backward { "dropout_backward" } else { "dropout_forward" };
    let n = out.len();
    let params =
        DropoutParams { n: to_u32(entry, "n", n)?, seed: p.salt, prob: p.prob, ..Default::default() };
    let groups = groups_1d(prog.ctx(), n, WG);
    prog.dispatch("dropout", entry, &[], &[(1, out), (2, x), (3, seeds)], &params, groups)
}
