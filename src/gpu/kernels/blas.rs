//! Launchers of blas.wgsl: the bias gradients.

use super::{check, to_u32};
use crate::error::Result;
use crate::gpu::program::Program;
use crate::gpu::tensor::GpuTensor;
use crate::ops::Op;

kernel_params! {
    struct BlasParams {
        // n: columns
        n: u32, cols: u32, rows: u32, _pad: u32,
    }
}

/// `db[j] += sum_r dy[r, j]` for dy `(rows, cols)`, and `db2[j] +=` the same where given: one
/// dispatch for two biases with one gradient.
pub fn bias_grad(
    prog: &mut Program,
    db: &GpuTensor,
    db2: Option<&GpuTensor>,
    dy: &GpuTensor,
    rows: usize,
    cols: usize,
) -> Result<()> {
    check(Op::BiasGrad { db, db2, dy, rows, cols })?;
    let p = BlasParams {
        n: to_u32("bias_grad", "cols", cols)?,
        cols: cols as u32,
        rows: to_u32("bias_grad", "rows", rows)?,
        ..Default::default()
    };
    let groups = [to_u32("bias_grad", "workgroups", cols.div_ceil(BIAS_GRAD_COLS))?, 1, 1];
    match db2 {
        None => prog.dispatch("blas", "bias_grad", &[], &[(1, db), (2, dy)], &p, groups),
        Some(db2) => prog.dispatch("blas", "bias_grad_pair", &[], &[(1, db), (2, dy), (3, db2)], &p, groups),
    }
}

/// Columns per workgroup of `bias_grad`; must match shaders/blas.wgsl::BIAS_COLS.
const BIAS_GRAD_COLS: usize = 32;
