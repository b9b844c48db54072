//! Adagrad as torch.optim.Adagrad: `g += wd·p; sum += g²; p -= lr·g / (√sum + eps)`.

use super::{At, Rule, check, parse_field};
use crate::error::Result;
use crate::real::Real;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adagrad {
    pub lr: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Rule for Adagrad {
    const NAME: &'static str = "adagrad";

    fn from_name(name: &str, lr: f32) -> Option<Self> {
        (name == Self::NAME).then_some(Adagrad { lr, eps: 1e-10, weight_decay: 0.0 })
    }

    fn slots(&self) -> usize {
        1
    }

    fn hyper(&self) -> [f32; 4] {
        [self.eps, self.weight_decay, 0.0, 0.0]
    }

    named_fields!(Adagrad { eps, weight_decay });

    fn validate(&self) -> Result<()> {
        check::positive("eps", self.eps)?;
        check::decay(self.weight_decay)
    }

    #[inline(always)]
    fn element<T: Real>(&self, at: At<T>, p: &mut T, g: T, s: &mut [T]) {
        let g = g + T::from_f32(self.weight_decay) * *p;
        s[0] += g * g;
        *p -= at.lr * g / (s[0].sqrt() + T::from_f32(self.eps));
    }
}
