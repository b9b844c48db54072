//! Optimizer settings, with PyTorch's defaults and update rules (torch.optim.SGD, Adagrad, Adam).
//!
//! The kernels read the learning rate from the step state (`ops::step_state::LR`), which the
//! trainer writes before every step from the `lr` here: changing it needs no new program.

/// SGD with optional momentum (PyTorch's form: `buf = momentum*buf + g; p -= lr*buf`) and
/// Nesterov momentum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
}

/// Adagrad: `sum += g^2; p -= lr * g / (sqrt(sum) + eps)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adagrad {
    pub lr: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

/// Adam with bias correction and L2 weight decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adam {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    Sgd(Sgd),
    Adagrad(Adagrad),
    Adam(Adam),
}

impl Optimizer {
    pub fn sgd(lr: f32, momentum: f32) -> Optimizer {
        Optimizer::Sgd(Sgd { lr, momentum, nesterov: false, weight_decay: 0.0 })
    }

    pub fn adagrad(lr: f32) -> Optimizer {
        Optimizer::Adagrad(Adagrad { lr, eps: 1e-10, weight_decay: 0.0 })
    }

    pub fn adam(lr: f32) -> Optimizer {
        Optimizer::Adam(Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd(_) => "sgd",
            Optimizer::Adagrad(_) => "adagrad",
            Optimizer::Adam(_) => "adam",
        }
    }

    pub fn lr(&self) -> f32 {
        match self {
            Optimizer::Sgd(o) => o.lr,
            Optimizer::Adagrad(o) => o.lr,
            Optimizer::Adam(o) => o.lr,
        }
    }

    pub fn set_lr(&mut self, lr: f32) {
        match self {
            Optimizer::Sgd(o) => o.lr = lr,
            Optimizer::Adagrad(o) => o.lr = lr,
            Optimizer::Adam(o) => o.lr = lr,
        }
    }

    /// How many state buffers the size of the parameters it keeps (momentum, sums, moments).
    pub fn state_slots(&self) -> usize {
        match self {
            Optimizer::Sgd(o) if o.momentum == 0.0 => 0,
            Optimizer::Sgd(_) | Optimizer::Adagrad(_) => 1,
            Optimizer::Adam(_) => 2,
        }
    }

    /// Refuses hyperparameters outside their meaningful range (a corrupt checkpoint, a typo),
    /// naming the one at fault.
    pub fn validate(&self) -> crate::Result<()> {
        use crate::error::Error;
        const OP: &str = "optimizer";
        let positive = |what: &str, v: f32| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(Error::range(OP, what, v, "a finite number > 0"))
            }
        };
        let fraction = |what: &str, v: f32| {
            if (0.0..1.0).contains(&v) { Ok(()) } else { Err(Error::range(OP, what, v, "in [0, 1)")) }
        };
        let decay = |v: f32| {
            if v >= 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(Error::range(OP, "weight_decay", v, "a finite number >= 0"))
            }
        };
        positive("learning rate", self.lr())?;
        match *self {
            Optimizer::Sgd(o) => {
                fraction("momentum", o.momentum)?;
                decay(o.weight_decay)
            }
            Optimizer::Adagrad(o) => {
                positive("eps", o.eps)?;
                decay(o.weight_decay)
            }
            Optimizer::Adam(o) => {
                fraction("beta1", o.beta1)?;
                fraction("beta2", o.beta2)?;
                positive("eps", o.eps)?;
                decay(o.weight_decay)
            }
        }
    }

    /// Parses a CLI name with a learning rate.
    pub fn from_name(name: &str, lr: f32) -> Option<Optimizer> {
        match name {
            "sgd" => Some(Optimizer::sgd(lr, 0.0)),
            "momentum" => Some(Optimizer::sgd(lr, 0.9)),
            "adagrad" => Some(Optimizer::adagrad(lr)),
            "adam" => Some(Optimizer::adam(lr)),
            _ => None,
        }
    }
}

/// Gradient clipping applied before the update: by value first, then by global norm.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Clip {
    /// Scale all gradients so their global L2 norm is at most this (0: off).
    pub max_norm: f32,
    /// Clamp each gradient element to [-value, value] (0: off).
    pub value: f32,
}

impl Clip {
    /// Thresholds must be finite and >= 0 (0 turns one off).
    pub fn validate(&self) -> crate::Result<()> {
        for (what, v) in [("clip max_norm", self.max_norm), ("clip value", self.value)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(crate::error::Error::range(
                    "optimizer",
                    what,
                    v,
                    "a finite number >= 0 (0: off)",
                ));
            }
        }
        Ok(())
    }
}
