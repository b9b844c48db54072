//! rnn-gpu: recurrent neural networks (RNN, LSTM, GRU) trained and run on any GPU through wgpu
//! and WGSL compute shaders, with a plain CPU reference of the same math as oracle and fallback.

pub mod cpu;
pub mod error;
pub mod gpu;
pub mod ops;
pub mod real;
pub mod rng;
pub mod train;
pub mod verify;

pub use error::{Error, Result};
