//! Training: optimizers and clipping settings.

pub mod optim;
