//! The GPU path: context and adapter choice, device tensors, recorded programs, and one launcher
//! per WGSL kernel.

pub mod backend;
pub mod context;
pub mod kernels;
pub mod program;
pub mod shaders;
pub mod tensor;

pub use backend::GpuBackend;
pub use context::{Counters, GpuContext, LIMITS_ENV, Meter, SHADERS_ENV, list_adapters};
pub use program::{Mapping, Profile, Program};
pub use tensor::GpuTensor;
