//! Learning-rate schedules: a linear warmup, then a decay, as a factor of the base rate at each
//! update. The training loop sets the rate before each update (`Model::set_lr`, a parameter write
//! on the device, no new program).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The rate of update `n` (counted from 0) is `base · factor(n)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Updates over which the rate rises linearly to the base rate: update n < warmup gets
    /// `(n + 1) / warmup` of it.
    pub warmup: usize,
    pub decay: Decay,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decay {
    Constant,
    /// Multiplied by `gamma` after every `every` updates.
    Step {
        every: usize,
        gamma: f32,
    },
    /// Half a cosine from 1 down to `floor` over `steps` updates, then `floor`.
    Cosine {
        steps: usize,
        floor: f32,
    },
}

impl Schedule {
    pub const CONSTANT: Schedule = Schedule { warmup: 0, decay: Decay::Constant };

    /// The factor of the base rate for update `n`.
    pub fn factor(&self, n: usize) -> f32 {
        let warm = if n < self.warmup { (n + 1) as f32 / self.warmup as f32 } else { 1.0 };
        let decay = match self.decay {
            Decay::Constant => 1.0,
            Decay::Step { every, gamma } => gamma.powf((n / every.max(1)) as f32),
            Decay::Cosine { steps, floor } => {
                let t = n.min(steps) as f64 / steps.max(1) as f64;
                floor + (1.0 - floor) * (0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
            }
        };
        warm * decay
    }

    /// Refuses a schedule that would not make sense, naming the value.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "schedule";
        match self.decay {
            Decay::Constant => Ok(()),
            Decay::Step { every, gamma } => {
                if every == 0 {
                    return Err(Error::range(OP, "step every", every, "at least 1"));
                }
                if !(gamma > 0.0 && gamma <= 1.0) {
                    return Err(Error::range(OP, "step gamma", gamma, "in (0, 1]"));
                }
                Ok(())
            }
            Decay::Cosine { steps, floor } => {
                if steps == 0 {
                    return Err(Error::range(OP, "cosine steps", steps, "at least 1"));
                }
                if !(0.0..=1.0).contains(&floor) {
                    return Err(Error::range(OP, "cosine floor", floor, "in [0, 1]"));
                }
                Ok(())
            }
        }
    }
}

/// `constant`, `step:EVERY:GAMMA` or `cosine:STEPS:FLOOR`.
impl fmt::Display for Decay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decay::Constant => write!(f, "constant"),
            Decay::Step { every, gamma } => write!(f, "step:{every}:{gamma}"),
            Decay::Cosine { steps, floor } => write!(f, "cosine:{steps}:{floor}"),
        }
    }
}

impl FromStr for Decay {
    type Err = Error;

    fn from_str(s: &str) -> Result<Decay> {
        let bad = || {
            Error::invalid(
                "schedule",
                format!("{s:?} is not a decay; use constant, step:EVERY:GAMMA or cosine:STEPS:FLOOR"),
            )
        };
        let parts: Vec<&str> = s.split(':').collect();
        let decay = match parts[..] {
            ["constant"] => Decay::Constant,
            ["step", every, gamma] => Decay::Step {
                every: every.parse().map_err(|_| bad())?,
                gamma: gamma.parse().map_err(|_| bad())?,
            },
            ["cosine", steps, floor] => Decay::Cosine {
                steps: steps.parse().map_err(|_| bad())?,
                floor: floor.parse().map_err(|_| bad())?,
            },
            _ => return Err(bad()),
        };
        Schedule { warmup: 0, decay }.validate()?;
        Ok(decay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_follow_the_warmup_and_the_decay() {
        let s = Schedule { warmup: 4, decay: Decay::Step { every: 10, gamma: 0.5 } };
        assert_eq!(s.factor(0), 0.25);
        assert_eq!(s.factor(3), 1.0);
        assert_eq!(s.factor(9), 1.0);
        assert_eq!(s.factor(10), 0.5);
        assert_eq!(s.factor(25), 0.25);
        let c = Schedule { warmup: 0, decay: Decay::Cosine { steps: 100, floor: 0.1 } };
        assert_eq!(c.factor(0), 1.0);
        assert!((c.factor(50) - 0.55).abs() < 1e-6);
        assert!((c.factor(100) - 0.1).abs() < 1e-6);
        assert!((c.factor(1000) - 0.1).abs() < 1e-6);
        assert_eq!(Schedule::CONSTANT.factor(12345), 1.0);
    }

    #[test]
    fn decays_parse_print_and_refuse_nonsense() {
        for d in ["constant", "step:250:0.93", "cosine:4000:0.05"] {
            assert_eq!(d.parse::<Decay>().unwrap().to_string(), d);
        }
        for (bad, says) in [
            ("step:0:0.5", "every"),
            ("step:10:1.5", "gamma"),
            ("step:10:-1", "gamma"),
            ("cosine:0:0.1", "cosine steps"),
            ("cosine:10:2", "floor"),
            ("cosine:10:NaN", "floor"),
            ("linear", "not a decay"),
            ("step:10", "not a decay"),
            ("step:x:0.5", "not a decay"),
        ] {
            let e = bad.parse::<Decay>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
