//! Training: the character-model training loop, the loss curve, and the state a checkpoint keeps
//! (the update rules are `crate::update`).

#[cfg(feature = "plot")]
pub mod plot;
pub mod schedule;
pub mod text;

pub use schedule::{Decay, Schedule};

use crate::update::{Clip, Optimizer};

/// Everything training keeps beyond the parameters, as a checkpoint saves it: the optimizer and
/// its state, the clipping, the step state (`ops::step_state`) and the random generator of
/// dropout masks.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingState {
    pub optimizer: Optimizer,
    pub clip: Clip,
    /// One buffer per optimizer slot (momentum, sums, moments), flat like the parameters.
    pub slots: Vec<Vec<f32>>,
    pub step_state: Vec<f32>,
    pub rng: [u64; 4],
}
