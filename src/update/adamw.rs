//! AdamW as torch.optim.AdamW: Adam's hyperparameters and moments, with the weight decay
//! decoupled from the gradient: `p -= lr·wd·p`, then Adam's step on the gradient alone.

use super::adam::moment_step;
use super::{Adam, At, Rule};
use crate::error::Result;
use crate::real::Real;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW(pub Adam);

impl Rule for AdamW {
    const NAME: &'static str = "adamw";

    fn from_name(name: &str, lr: f32) -> Option<Self> {
        let adam = Adam::from_name("adam", lr)?;
        (name == Self::NAME).then_some(AdamW(Adam { weight_decay: 1e-2, ..adam }))
    }

    fn lr_mut(&mut self) -> &mut f32 {
        self.0.lr_mut()
    }

    fn slots(&self) -> usize {
        self.0.slots()
    }

    fn hyper(&self) -> [f32; 4] {
        self.0.hyper()
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        self.0.fields()
    }

    fn from_fields(lr: f32, get: &dyn Fn(&str) -> Result<String>) -> Result<Self> {
        Adam::from_fields(lr, get).map(AdamW)
    }

    fn validate(&self) -> Result<()> {
        self.0.validate()
    }

    #[inline(always)]
    fn element<T: Real>(&self, at: At<T>, p: &mut T, g: T, s: &mut [T]) {
        let a = self.0;
        *p -= at.lr * T::from_f32(a.weight_decay) * *p;
        *p -= moment_step(a.beta1, a.beta2, a.eps, at, g, s);
    }
}
