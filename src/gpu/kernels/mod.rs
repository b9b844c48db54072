//! Launchers: one per WGSL entry point, named like it, arguments in the kernel's order (outputs,
//! then inputs, then a descriptor). Each checks its shapes, then appends a dispatch to a
//! `Program`. The plain-loop twin of each lives in `reference::kernels` under the same name.
//!
//! One file per kernel family (shaders/<family>.wgsl), re-exported here.

/// Declares a kernel family's parameter struct once, in its launcher file: the `#[repr(C)]`
/// struct the launchers fill and, as `WGSL`, its twin in WGSL with the binding every kernel
/// reads it from (binding 0, read-only storage: src/gpu/program.rs::PARAM_CHUNK says why not
/// uniform) and the private copy `p` that its entry points read (shaders/common.wgsl says why).
/// src/gpu/shaders.rs puts it before the family's file. Fields are u32, f32, `[u32; N]`
/// (padding) or `[f32; 4]` (a `vec4<f32>`), and fill whole 16-byte rows.
macro_rules! kernel_params {
    ($(#[$doc:meta])* struct $name:ident { $($(#[$fdoc:meta])* $field:ident: $ty:tt,)* }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
        pub(crate) struct $name {
            $($(#[$fdoc])* $field: $ty,)*
        }

        impl $name {
            pub(crate) const WGSL: &'static str = concat!(
                "struct Params {\n",
                $("    ", stringify!($field), ": ", wgsl_type!($ty), ",\n",)*
                "}\n@group(0) @binding(0) var<storage, read> params: Params;\n",
                "var<private> p: Params;\n",
            );
        }

        const _: () = assert!(std::mem::size_of::<$name>() % 16 == 0, "whole 16-byte rows");
    };
}

/// A parameter struct of type `$ty` whose fields `$f` are the launcher's fields of the same name
/// in `$src`, each checked to fit a u32 (an error names `$op` and the field); the fields after
/// the second `;` are given, the padding zero.
macro_rules! checked_params {
    ($ty:ident, $op:expr, $src:expr; $($f:ident),*; $($g:ident: $v:expr),* $(,)?) => {
        $ty { $($f: to_u32($op, stringify!($f), $src.$f)?,)* $($g: $v,)* ..Default::default() }
    };
}

/// A parameter field's type in WGSL.
macro_rules! wgsl_type {
    (u32) => {
        "u32"
    };
    (f32) => {
        "f32"
    };
    ([f32; 4]) => {
        "vec4<f32>"
    };
    ([u32; $n:literal]) => {
        concat!("array<u32, ", $n, ">")
    };
}

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

/// `Op::check`, the shape checks every device runs (`Backend::run`), for a launcher called
/// directly.
pub(crate) fn check(op: crate::ops::Op<'_, GpuTensor, GpuTensor>) -> Result<()> {
    op.check(GpuTensor::len, GpuTensor::len)
}

pub(crate) fn need(op: &'static str, what: &str, t: &GpuTensor, n: usize) -> Result<()> {
    if t.len() != n {
        return Err(Error::shape(op, what, t.shape(), &[n]));
    }
    Ok(())
}

pub(crate) fn to_u32(op: &'static str, what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::range(op, what, n, "at most 4294967295"))
}
