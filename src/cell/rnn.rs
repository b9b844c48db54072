//! The Elman RNN: `h' = act(W_ih x + b_ih + W_hh h + b_hh)`, act tanh or relu. It keeps nothing
//! for the backward step, which reads the new state.

use super::{Act, Backward, CellMath, Forward, Grad, Output, Shape};
use crate::real::Real;

#[derive(Clone, Copy, Debug)]
pub struct Rnn {
    pub relu: bool,
}

impl CellMath for Rnn {
    const SHAPE: Shape = Shape { gates: 1, reads_h: true, family: "rnn", ..Shape::PLAIN };

    fn constants(&self) -> Vec<(&'static str, u64)> {
        vec![("RELU", self.relu as u64)]
    }
    #[inline(always)]
    fn forward<T: Real, A: Act<T>>(&self, u: &Forward<T>) -> Output<T> {
        let a = u.x[0] + u.b_ih[0] + u.p[0] + u.b_hh[0];
        let h = if self.relu { a.max(T::ZERO) } else { A::tanh(a) };
        Output { saved: [T::ZERO; 4], h, c: T::ZERO }
    }

    #[inline(always)]
    fn backward<T: Real, A: Act<T>>(&self, u: &Backward<T>) -> Grad<T> {
        let d =
            if self.relu { if u.h > T::ZERO { u.dh } else { T::ZERO } } else { u.dh * (T::ONE - u.h * u.h) };
        Grad {
            dx: [d, T::ZERO, T::ZERO, T::ZERO],
            dr: [d, T::ZERO, T::ZERO, T::ZERO],
            carry_h: T::ZERO,
            carry_c: T::ZERO,
        }
    }
}
