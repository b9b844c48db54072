//! The reference device: plain loops written from the equations, in f32 and f64. The oracle of
//! every test and of the gradient checks; never chosen automatically.

pub mod backend;
pub mod kernels;

pub use backend::ReferenceBackend;
