//! Launchers of gather.wgsl.

use super::{WG, check, to_u32};
use crate::error::Result;
use crate::gpu::program::{Program, groups_1d};
use crate::gpu::tensor::GpuTensor;
use crate::ops::{Gather, Op};

kernel_params! {
    struct GatherParams {
        // n: gather: rows of out; scatter_add: rows of the table (V)
        n: u32, width: u32, idx_stride: u32, col_stride: u32,
    }
}

fn gather_params(op: &'static str, p: Gather) -> Result<GatherParams> {
    to_u32(op, "n * width", p.n * p.width)?;
    Ok(checked_params!(GatherParams, op, p; n, width, idx_stride, col_stride;))
}

/// `out[i, j] = table[idx[i] * idx_stride + j * col_stride]`. Indices must address inside
/// `table` (the callers check token ids against the vocabulary on upload).
pub fn gather(
    prog: &mut Program,
    out: &GpuTensor,
    table: &GpuTensor,
    idx: &GpuTensor,
    p: Gather,
) -> Result<()> {
    check(Op::Gather { out, table, idx, p })?;
    let params = gather_params("gather", p)?;
    let groups = groups_1d(prog.ctx(), p.n * p.width, WG);
    prog.dispatch("gather", "gather", &[], &[(1, out), (2, table), (3, idx)], &params, groups)
}

/// The gradient of `gather`: `dtable[v * idx_stride + j * col_stride] += sum of dout[r, j]` over
/// the rows r listed for v in `rows[starts[v]..starts[v + 1]]`; `p.n` is the number of table
/// rows V.
pub fn scatter_add(
    prog: &mut Program,
    dtable: &GpuTensor,
    dout: &GpuTensor,   // (rows, width)
    starts: &GpuTensor, // (V + 1) u32
    rows: &GpuTensor,   // (rows) u32
    p: Gather,
) -> Result<()> {
    check(Op::ScatterAdd { dtable, dout, starts, rows, p })?;
    let params = gather_params("scatter_add", p)?;
    let groups = groups_1d(prog.ctx(), p.n * p.width, WG);
    prog.dispatch(
        "gather",
        "scatter_add",
        &[],
        &[(1, dtable), (2, dout), (3, starts), (4, rows)],
        &params,
        groups,
    )
}
