//! Adam as torch.optim.Adam (AdamW shares its hyperparameters and moments), with L2 weight decay added to the gradient:
//! `m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²; p -= (lr / (1-β1ᵗ))·m / (√v / √(1-β2ᵗ) + eps)`.

use super::{At, Rule, check, parse_field};
use crate::error::Result;
use crate::real::Real;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adam {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Rule for Adam {
    const NAME: &'static str = "adam";

    fn from_name(name: &str, lr: f32) -> Option<Self> {
        (name == Self::NAME).then_some(Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 })
    }

    fn slots(&self) -> usize {
        2
    }

    fn hyper(&self) -> [f32; 4] {
        [self.beta1, self.beta2, self.eps, self.weight_decay]
    }

    named_fields!(Adam { beta1, beta2, eps, weight_decay });

    fn validate(&self) -> Result<()> {
        check::fraction("beta1", self.beta1)?;
        check::fraction("beta2", self.beta2)?;
        check::positive("eps", self.eps)?;
        check::decay(self.weight_decay)
    }

    #[inline(always)]
    fn element<T: Real>(&self, at: At<T>, p: &mut T, g: T, s: &mut [T]) {
        let g = g + T::from_f32(self.weight_decay) * *p;
        *p -= moment_step(self.beta1, self.beta2, self.eps, at, g, s);
    }
}

/// Updates the moments `s = [m, v]` with `g` and returns the step Adam takes.
#[inline(always)]
pub(super) fn moment_step<T: Real>(beta1: f32, beta2: f32, eps: f32, at: At<T>, g: T, s: &mut [T]) -> T {
    let (b1, b2) = (T::from_f32(beta1), T::from_f32(beta2));
    let t = at.step.to_f64() as i32;
    let (bc1, bc2) = (T::ONE - b1.powi(t), T::ONE - b2.powi(t));
    s[0] = b1 * s[0] + (T::ONE - b1) * g;
    s[1] = b2 * s[1] + (T::ONE - b2) * g * g;
    (at.lr / bc1) * s[0] / (s[1].sqrt() / bc2.sqrt() + T::from_f32(eps))
}
