//! The update rules: PyTorch's `torch.optim` rules, one file each. A rule is one description:
//! its name and hyperparameters (for the CLI and a checkpoint's metadata), the state it keeps per
//! parameter element (its slots), and its arithmetic on one element. The CPU devices run that
//! arithmetic as written (`apply`); the GPU runs the WGSL entry point the rule names in
//! shaders/optim.wgsl, on the numbers `hyper` packs.
//!
//! Every rule sees the gradient scaled by the step's clipping scale, and does nothing on a step
//! found non-finite (`ops::step_state`).
//!
//! A new rule: its file here, one line in `rules!` below, its entry point in optim.wgsl.

/// `Rule::lr_mut`, `Rule::fields` and `Rule::from_fields` of a rule whose hyperparameters beside
/// `lr` are the named fields, each saved under its own name.
macro_rules! named_fields {
    ($rule:ident { $($field:ident),* }) => {
        fn lr_mut(&mut self) -> &mut f32 {
            &mut self.lr
        }

        fn fields(&self) -> Vec<(&'static str, String)> {
            vec![$((stringify!($field), self.$field.to_string())),*]
        }

        fn from_fields(lr: f32, get: &dyn Fn(&str) -> Result<String>) -> Result<Self> {
            Ok($rule { lr, $($field: parse_field(get, stringify!($field))?),* })
        }
    };
}

mod adagrad;
mod adam;
mod adamw;
mod sgd;

use std::fmt::Debug;

pub use adagrad::Adagrad;
pub use adam::Adam;
pub use adamw::AdamW;
pub use sgd::Sgd;

use crate::error::{Error, Result};
use crate::ops::step_state;
use crate::real::Real;

/// The most state slots a rule keeps.
pub const MAX_SLOTS: usize = 2;

/// What a rule reads from the step: its number (1 for the first update) and learning rate.
#[derive(Clone, Copy, Debug)]
pub struct At<T> {
    pub step: T,
    pub lr: T,
}

pub trait Rule: Copy + Debug + PartialEq + Send + Sync + 'static {
    /// The name in the CLI, a checkpoint and errors.
    const NAME: &'static str;
    /// The names `from_name` knows: `NAME` and any alias.
    const CLI_NAMES: &'static [&'static str] = &[Self::NAME];

    /// The rule with PyTorch's defaults at learning rate `lr`, under a CLI name (a rule may
    /// answer to more than its own, as SGD does to `momentum`).
    fn from_name(name: &str, lr: f32) -> Option<Self>;
    /// Its learning rate, which every rule has (and which a checkpoint stores apart).
    fn lr_mut(&mut self) -> &mut f32;
    /// State buffers the size of the parameters (momentum, sums, moments): at most `MAX_SLOTS`.
    fn slots(&self) -> usize;
    /// Its entry point in shaders/optim.wgsl: by default its name.
    fn entry(&self) -> &'static str {
        Self::NAME
    }
    /// Its numbers as that entry point reads them (`Params.h`).
    fn hyper(&self) -> [f32; 4];
    /// Its hyperparameters by name, as a checkpoint stores them (`optimizer.<name>`); the
    /// learning rate is stored apart.
    fn fields(&self) -> Vec<(&'static str, String)>;
    /// The rule from those fields, at learning rate `lr`.
    fn from_fields(lr: f32, get: &dyn Fn(&str) -> Result<String>) -> Result<Self>;
    /// Refuses a hyperparameter outside its range, naming it (the learning rate is checked
    /// apart).
    fn validate(&self) -> Result<()>;
    /// Updates parameter element `p` with its (clipped) gradient `g` and its state `s`.
    fn element<T: Real>(&self, at: At<T>, p: &mut T, g: T, s: &mut [T]);
}

/// `Rule::from_fields`' parse of one field.
pub(crate) fn parse_field<V: std::str::FromStr>(
    get: &dyn Fn(&str) -> Result<String>,
    name: &str,
) -> Result<V> {
    let text = get(name)?;
    text.trim()
        .parse()
        .map_err(|_| Error::invalid("optimizer", format!("{name} = {text:?} is not a valid value")))
}

/// Checks shared by the rules' `validate`.
pub(crate) mod check {
    use crate::error::{Error, Result};

    pub fn positive(what: &str, v: f32) -> Result<()> {
        if v > 0.0 && v.is_finite() {
            Ok(())
        } else {
            Err(Error::range("optimizer", what, v, "a finite number > 0"))
        }
    }

    pub fn fraction(what: &str, v: f32) -> Result<()> {
        if (0.0..1.0).contains(&v) { Ok(()) } else { Err(Error::range("optimizer", what, v, "in [0, 1)")) }
    }

    pub fn decay(v: f32) -> Result<()> {
        if v >= 0.0 && v.is_finite() {
            Ok(())
        } else {
            Err(Error::range("optimizer", "weight_decay", v, "a finite number >= 0"))
        }
    }
}

/// The rules as one enum, whose methods dispatch to the rule.
macro_rules! rules {
    ($($rule:ident),* $(,)?) => {
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub enum Optimizer {
            $($rule($rule),)*
        }

        $(impl From<$rule> for Optimizer {
            fn from(r: $rule) -> Optimizer {
                Optimizer::$rule(r)
            }
        })*

        /// The rules' names.
        pub const NAMES: &[&str] = &[$($rule::NAME),*];

        /// Every name `Optimizer::from_name` knows (a rule's own and its aliases).
        pub fn cli_names() -> Vec<&'static str> {
            [$($rule::CLI_NAMES),*].concat()
        }

        impl Optimizer {
            /// The rule a CLI name names, with its defaults at learning rate `lr`.
            pub fn from_name(name: &str, lr: f32) -> Option<Optimizer> {
                None$(.or_else(|| $rule::from_name(name, lr).map(Optimizer::from)))*
            }

            /// The rule named `name` from a checkpoint's fields.
            pub fn from_fields(name: &str, lr: f32, get: &dyn Fn(&str) -> Result<String>) -> Result<Optimizer> {
                $(if name == $rule::NAME {
                    return Ok(Optimizer::$rule($rule::from_fields(lr, get)?));
                })*
                Err(Error::invalid("optimizer", format!("unknown optimizer {name:?} (known: {})", NAMES.join(", "))))
            }

            pub fn name(&self) -> &'static str {
                match self { $(Optimizer::$rule(_) => $rule::NAME,)* }
            }

            pub fn lr(&self) -> f32 {
                let mut rule = *self;
                *rule.lr_mut()
            }

            pub fn set_lr(&mut self, lr: f32) {
                *self.lr_mut() = lr;
            }

            fn lr_mut(&mut self) -> &mut f32 {
                match self { $(Optimizer::$rule(r) => r.lr_mut(),)* }
            }

            /// State buffers the size of the parameters the rule keeps.
            pub fn state_slots(&self) -> usize {
                match self { $(Optimizer::$rule(r) => r.slots(),)* }
            }

            pub fn entry(&self) -> &'static str {
                match self { $(Optimizer::$rule(r) => r.entry(),)* }
            }

            pub fn hyper(&self) -> [f32; 4] {
                match self { $(Optimizer::$rule(r) => r.hyper(),)* }
            }

            pub fn fields(&self) -> Vec<(&'static str, String)> {
                match self { $(Optimizer::$rule(r) => r.fields(),)* }
            }

            /// Refuses hyperparameters outside their meaningful range (a corrupt checkpoint, a
            /// typo), naming the one at fault.
            pub fn validate(&self) -> Result<()> {
                check::positive("learning rate", self.lr())?;
                match self { $(Optimizer::$rule(r) => r.validate(),)* }
            }

            /// The update of every element: `param -= rule(grad · clip scale, slots)`, unless the
            /// step was found non-finite. The CPU devices' update, and the GPU's twin.
            pub fn apply<T: Real>(&self, param: &mut [T], grad: &[T], slots: &mut [&mut [T]], state: &[T]) {
                match self { $(Optimizer::$rule(r) => apply(r, param, grad, slots, state),)* }
            }
        }
    };
}

rules!(Sgd, Adagrad, Adam, AdamW);

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

    pub fn adamw(lr: f32) -> Optimizer {
        Optimizer::AdamW(AdamW(Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }))
    }

    /// The same rule with another of its hyperparameters (a name of `fields`: `momentum`,
    /// `nesterov`, `weight_decay`...) set from `value`; an error naming the rule's hyperparameters
    /// when it has no such one, or naming the value when it is not valid.
    pub fn with_field(&self, name: &str, value: &str) -> Result<Optimizer> {
        let fields = self.fields();
        if !fields.iter().any(|(k, _)| *k == name) {
            let known: Vec<&str> = fields.iter().map(|f| f.0).collect();
            return Err(Error::invalid(
                "optimizer",
                format!("{} has no {name}; its hyperparameters: {}", self.name(), known.join(", ")),
            ));
        }
        let get = |k: &str| {
            Ok(if k == name {
                value.to_string()
            } else {
                fields.iter().find(|(f, _)| *f == k).map_or_else(String::new, |(_, v)| v.clone())
            })
        };
        let rule = Optimizer::from_fields(self.name(), self.lr(), &get)?;
        rule.validate()?;
        Ok(rule)
    }
}

/// The buffers of an update must hold: `grad` and each of the rule's slots as many elements as
/// `param`, the step state all of its numbers. Every device checks this before it updates.
pub fn check_buffers(
    rule: &Optimizer,
    param: usize,
    grad: usize,
    slots: &[usize],
    state: usize,
) -> Result<()> {
    const OP: &str = "update";
    if slots.len() != rule.state_slots() {
        return Err(Error::invalid(
            OP,
            format!("{} keeps {} state buffers; {} were given", rule.name(), rule.state_slots(), slots.len()),
        ));
    }
    for (what, len) in [("grad", grad)].into_iter().chain(slots.iter().map(|&l| ("optimizer state", l))) {
        if len != param {
            return Err(Error::shape(OP, what, &[len], &[param]));
        }
    }
    if state < step_state::LEN {
        return Err(Error::shape(OP, "step state", &[state], &[step_state::LEN]));
    }
    Ok(())
}

fn apply<R: Rule, T: Real>(rule: &R, param: &mut [T], grad: &[T], slots: &mut [&mut [T]], state: &[T]) {
    if state[step_state::OK] == T::ZERO {
        return;
    }
    let at = At { step: state[step_state::STEP], lr: state[step_state::LR] };
    let scale = state[step_state::CLIP_SCALE];
    let n = rule.slots();
    let mut s = [T::ZERO; MAX_SLOTS];
    for i in 0..param.len() {
        for (k, slot) in slots[..n].iter().enumerate() {
            s[k] = slot[i];
        }
        rule.element(at, &mut param[i], grad[i] * scale, &mut s[..n]);
        for (k, slot) in slots[..n].iter_mut().enumerate() {
            slot[i] = s[k];
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
    pub fn validate(&self) -> Result<()> {
        for (what, v) in [("clip max_norm", self.max_norm), ("clip value", self.value)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(Error::range("optimizer", what, v, "a finite number >= 0 (0: off)"));
            }
        }
        Ok(())
    }
}
