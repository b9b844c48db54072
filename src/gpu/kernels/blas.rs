//! Launchers of blas.wgsl.

use bytemuck::{Pod, Zeroable};

use super::{WG, need, to_u32};
use crate::error::Result;
use crate::gpu::program::{Program, groups_1d};
use crate::gpu::tensor::GpuTensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BlasParams {
    // must match shaders/blas.wgsl::Params
    n: u32,
    cols: u32,
    rows: u32,
    alpha: f32,
}

fn blas(
    prog: &mut Program,
    entry: &'static str,
    y: &GpuTensor,
    x: Option<&GpuTensor>,
    params: BlasParams,
    threads: usize,
) -> Result<()> {
    let mut args = vec![(1, y)];
    if let Some(x) = x {
        args.push((2, x));
    }
    let groups = groups_1d(prog.ctx(), threads, WG);
    prog.dispatch("blas", entry, &[], &args, &params, groups)
}

/// `x = value`
pub fn fill(prog: &mut Program, x: &GpuTensor, value: f32) -> Result<()> {
    let n = x.len();
    let p = BlasParams { n: to_u32("fill", "n", n)?, cols: 1, rows: 1, alpha: value };
    blas(prog, "fill", x, None, p, n)
}

/// `x *= alpha`
pub fn scale(prog: &mut Program, x: &GpuTensor, alpha: f32) -> Result<()> {
    let n = x.len();
    let p = BlasParams { n: to_u32("scale", "n", n)?, cols: 1, rows: 1, alpha };
    blas(prog, "scale", x, None, p, n)
}

/// `y += alpha * x`
pub fn axpy(prog: &mut Program, y: &GpuTensor, x: &GpuTensor, alpha: f32) -> Result<()> {
    let n = y.len();
    need("axpy", "x", x, n)?;
    let p = BlasParams { n: to_u32("axpy", "n", n)?, cols: 1, rows: 1, alpha };
    blas(prog, "axpy", y, Some(x), p, n)
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
    need("bias_grad", "db", db, cols)?;
    need("bias_grad", "dy", dy, rows * cols)?;
    let p = BlasParams {
        n: to_u32("bias_grad", "cols", cols)?,
        cols: cols as u32,
        rows: to_u32("bias_grad", "rows", rows)?,
        alpha: 0.0,
    };
    let groups = [to_u32("bias_grad", "workgroups", cols.div_ceil(BIAS_GRAD_COLS))?, 1, 1];
    match db2 {
        None => prog.dispatch("blas", "bias_grad", &[], &[(1, db), (2, dy)], &p, groups),
        Some(db2) => {
            need("bias_grad", "db2", db2, cols)?;
            prog.dispatch("blas", "bias_grad_pair", &[], &[(1, db), (2, dy), (3, db2)], &p, groups)
        }
    }
}

/// Columns per workgroup of `bias_grad`; must match shaders/blas.wgsl::BIAS_COLS.
const BIAS_GRAD_COLS: usize = 32;
