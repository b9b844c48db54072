//! The LSTM (PyTorch's gate order i, f, g, o): `c' = f·c + i·g`, `h' = o·tanh(c')`. Kept for the
//! backward step: i, f, g, o.

use super::{Act, Backward, CellMath, Forward, Grad, Output, Shape};
use crate::real::Real;

#[derive(Clone, Copy, Debug)]
pub struct Lstm;

impl CellMath for Lstm {
    const SHAPE: Shape = Shape { gates: 4, saved: 4, cell_state: true, family: "lstm", ..Shape::PLAIN };
    #[inline(always)]
    fn forward<T: Real, A: Act<T>>(&self, u: &Forward<T>) -> Output<T> {
        let pre = |k: usize| u.x[k] + u.b_ih[k] + u.p[k] + u.b_hh[k];
        let (i, f, g, o) = (A::sigmoid(pre(0)), A::sigmoid(pre(1)), A::tanh(pre(2)), A::sigmoid(pre(3)));
        let c = f * u.c_prev + i * g;
        Output { saved: [i, f, g, o], h: o * A::tanh(c), c }
    }

    #[inline(always)]
    fn backward<T: Real, A: Act<T>>(&self, u: &Backward<T>) -> Grad<T> {
        let [i, f, g, o] = u.saved;
        let tc = A::tanh(u.c);
        let dc = u.dh * o * (T::ONE - tc * tc) + u.dc;
        let dx = [
            dc * g * i * (T::ONE - i),
            dc * u.c_prev * f * (T::ONE - f),
            dc * i * (T::ONE - g * g),
            u.dh * tc * o * (T::ONE - o),
        ];
        Grad { dx, dr: dx, carry_h: T::ZERO, carry_c: dc * f }
    }
}
