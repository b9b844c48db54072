//! Launchers of loss.wgsl.

use super::{WG, check, to_u32};
use crate::error::Result;
use crate::gpu::program::{Program, groups_1d};
use crate::gpu::tensor::GpuTensor;
use crate::ops::Op;

kernel_params! {
    struct RowParams {
        rows: u32, cols: u32, _pad: [u32; 2],
    }
}

fn row_params(op: &'static str, rows: usize, cols: usize) -> Result<RowParams> {
    Ok(RowParams { rows: to_u32(op, "rows", rows)?, cols: to_u32(op, "cols", cols)?, ..Default::default() })
}

/// `y = softmax(x)` along each row of `(rows, cols)`.
pub fn softmax_rows(
    prog: &mut Program,
    y: &GpuTensor,
    x: &GpuTensor,
    rows: usize,
    cols: usize,
) -> Result<()> {
    check(Op::SoftmaxRows { y, x, rows, cols })?;
    let p = row_params("softmax_rows", rows, cols)?;
    let groups = groups_1d(prog.ctx(), rows, WG);
    prog.dispatch("loss", "softmax_rows", &[], &[(1, y), (3, x)], &p, groups)
}

/// Softmax cross-entropy per row: `loss[r] = w[r] * (lse(x[r]) - x[r, t[r]])`,
/// `dx[r] = w[r] * (softmax(x[r]) - onehot(t[r]))`. Targets must be below `cols`.
#[allow(clippy::too_many_arguments)]
pub fn softmax_xent(
    prog: &mut Program,
    loss: &GpuTensor,    // (rows)
    dx: &GpuTensor,      // (rows, cols)
    logits: &GpuTensor,  // (rows, cols)
    targets: &GpuTensor, // (rows) u32
    weights: &GpuTensor, // (rows)
    rows: usize,
    cols: usize,
) -> Result<()> {
    const OP: &str = "softmax_xent";
    check(Op::SoftmaxXent { loss, dx, logits, targets, weights, rows, cols })?;
    let p = row_params(OP, rows, cols)?;
    let groups = groups_1d(prog.ctx(), rows, WG);
    prog.dispatch(
        "loss",
        "softmax_xent",
        &[],
        &[(1, loss), (2, dx), (3, logits), (4, targets), (6, weights)],
        &p,
        groups,
    )
}

/// Squared error per row: `loss[r] = w[r] * sum_j (x - t)^2`, `dx = 2 w (x - t)`.
#[allow(clippy::too_many_arguments)]
pub fn mse(
    prog: &mut Program,
    loss: &GpuTensor,    // (rows)
    dx: &GpuTensor,      // (rows, cols)
    pred: &GpuTensor,    // (rows, cols)
    target: &GpuTensor,  // (rows, cols)
    weights: &GpuTensor, // (rows)
    rows: usize,
    cols: usize,
) -> Result<()> {
    const OP: &str = "mse";
    check(Op::Mse { loss, dx, pred, target, weights, rows, cols })?;
    let p = row_params(OP, rows, cols)?;
    let groups = groups_1d(prog.ctx(), rows, WG);
    prog.dispatch("loss", "mse", &[], &[(1, loss), (2, dx), (3, pred), (5, target), (6, weights)], &p, groups)
}

/// `dx[r] = y[r] * (dy[r] - y[r] · dy[r])` for a row-wise softmax `y`.
pub fn softmax_backward(
    prog: &mut Program,
    dx: &GpuTensor,
    y: &GpuTensor,
    dy: &GpuTensor,
    rows: usize,
    cols: usize,
) -> Result<()> {
    const OP: &str = "softmax_backward";
    check(Op::SoftmaxBackward { dx, y, dy, rows, cols })?;
    let p = row_params(OP, rows, cols)?;
    let groups = groups_1d(prog.ctx(), rows, WG);
    prog.dispatch("loss", OP, &[], &[(2, dx), (3, y), (5, dy)], &p, groups)
}
