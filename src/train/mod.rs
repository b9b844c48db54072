//! Training: optimizers and clipping settings, the character-model training loop, the loss curve.

pub mod optim;
pub mod plot;
pub mod text;
