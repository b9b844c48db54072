//! SGD as torch.optim.SGD: `g += wd·p; buf = momentum·buf + g; p -= lr·(nesterov ? g + momentum·buf : buf)`
//! (no buffer without momentum).

use super::{At, Rule, check, parse_field};
use crate::error::Result;
use crate::real::Real;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
}

impl Rule for Sgd {
    const NAME: &'static str = "sgd";
    const CLI_NAMES: &'static [&'static str] = &["sgd", "momentum", "nesterov"];

    fn from_name(name: &str, lr: f32) -> Option<Self> {
        let momentum = match name {
            "sgd" => 0.0,
            "momentum" => 0.9,
            "nesterov" => 0.9,
            _ => return None,
        };
        Some(Sgd { lr, momentum, nesterov: name == "nesterov", weight_decay: 0.0 })
    }

    fn slots(&self) -> usize {
        (self.momentum != 0.0) as usize
    }

    fn entry(&self) -> &'static str {
        if self.momentum != 0.0 { "sgd_momentum" } else { "sgd" }
    }

    fn hyper(&self) -> [f32; 4] {
        [self.momentum, self.nesterov as u32 as f32, self.weight_decay, 0.0]
    }

    named_fields!(Sgd { momentum, nesterov, weight_decay });

    fn validate(&self) -> Result<()> {
        check::fraction("momentum", self.momentum)?;
        if self.nesterov && self.momentum == 0.0 {
            return Err(crate::error::Error::invalid("optimizer", "nesterov needs a momentum above 0"));
        }
        check::decay(self.weight_decay)
    }

    #[inline(always)]
    fn element<T: Real>(&self, at: At<T>, p: &mut T, g: T, s: &mut [T]) {
        let g = g + T::from_f32(self.weight_decay) * *p;
        let step = match s.first_mut() {
            Some(buf) => {
                let mu = T::from_f32(self.momentum);
                *buf = mu * *buf + g;
                if self.nesterov { g + mu * *buf } else { *buf }
            }
            None => g,
        };
        *p -= at.lr * step;
    }
}
