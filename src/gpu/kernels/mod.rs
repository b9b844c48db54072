//! Launchers: one per WGSL entry point, named like it, arguments in the kernel's order (outputs,
//! then inputs, then a descriptor). Each checks its shapes, then appends a dispatch to a
//! `Program`. The plain-loop twin of each lives in `reference::kernels` under the same name.
//!
//! One file per kernel family (shaders/<family>.wgsl), re-exported here.

mod activation;
mod attention;
mod blas;
mod copy;
mod dropout;
mod gather;
mod loss;
mod matmul;
mod optim;
mod reduce;
mod step;

pub use activation::*;
pub use attention::*;
pub use blas::*;
pub use copy::*;
pub use dropout::*;
pub use gather::*;
pub use loss::*;
pub use matmul::*;
pub use optim::*;
pub use reduce::*;
pub use step::*;

use super::tensor::GpuTensor;
use crate::error::{Error, Result};

/// Threads of a workgroup of the elementwise and row kernels.
const WG: usize = 256;

pub(crate) fn need(op: &'static str, what: &str, t: &GpuTensor, n: usize) -> Result<()> {
    if t.len() != n {
        return Err(Error::shape(op, what, t.shape(), &[n]));
    }
    Ok(())
}

pub(crate) fn to_u32(op: &'static str, what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::range(op, what, n, "at most 4294967295"))
}
