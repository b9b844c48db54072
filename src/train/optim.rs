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
