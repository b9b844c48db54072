//! The CPU reference: plain loops written from the equations. The oracle of every GPU test and
//! the fallback device.

pub mod backend;
pub mod kernels;

pub use backend::{CpuBackend, CpuTensor};
