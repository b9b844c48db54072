//! Launchers of copy.wgsl.

use super::{WG, check, to_u32};
use crate::error::Result;
use crate::gpu::program::{Program, groups_1d};
use crate::gpu::tensor::GpuTensor;
use crate::ops::{CopyCols, Op};

kernel_params! {
    struct CopyParams {
        rows: u32, width: u32, y_stride: u32, y_offset: u32,
        x_stride: u32, x_offset: u32, accumulate: u32, _pad: u32,
    }
}

/// `y[r * y_stride + y_offset + c] (+)= x[r * x_stride + x_offset + c]` for `r < rows`,
/// `c < width`.
pub fn copy_cols(prog: &mut Program, y: &GpuTensor, x: &GpuTensor, p: CopyCols) -> Result<()> {
    const OP: &str = "copy_cols";
    check(Op::CopyCols { y, x, p })?;
    #[rustfmt::skip]
    let params = checked_params!(CopyParams, OP, p; rows, width, y_stride, y_offset, x_stride, x_offset;
        accumulate: p.accumulate as u32);
    let groups = groups_1d(prog.ctx(), p.rows * p.width, WG);
    prog.dispatch("copy", "copy_cols", &[], &[(1, y), (2, x)], &params, groups)
}
