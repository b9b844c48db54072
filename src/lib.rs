#![doc = include_str!("../README.md")]

pub mod backend;
pub mod bench;
pub mod cell;
pub mod data;
pub mod device;
pub mod distributed;
pub mod error;
pub mod exec;
pub mod gpu;
pub mod host;
pub mod io;
pub mod model;
pub mod native;
pub mod ops;
pub mod real;
pub mod reference;
pub mod rng;
pub mod seq2seq;
pub mod train;
pub mod update;
pub mod verify;
pub mod wait;

pub use error::{Error, Result};
pub use model::batch::{Batch, Input, Targets};
pub use model::generate::Sampling;
pub use model::spec::{Cell, Head, InputKind, Loss, ModelSpec, OutputMode};
pub use model::{CarriedState, Device, Forward, Gradients, Model, Start, StepStats};
pub use update::{Clip, Optimizer};
