//! The GRU (PyTorch's gate order r, z, n): `n = tanh(W_in x + b_in + r·(W_hn h + b_hn))`,
//! `h' = (1 - z)·n + z·h`. Kept for the backward step: r, z, n and `W_hn h + b_hn`.

use super::{Act, Backward, CellMath, Forward, Grad, Output, Shape};
use crate::real::Real;

#[derive(Clone, Copy, Debug)]
pub struct Gru;

impl CellMath for Gru {
    const SHAPE: Shape = Shape {
        gates: 3,
        saved: 4,
        reads_h_prev: true,
        splits_recurrent_gradient: true,
        family: "gru",
        ..Shape::PLAIN
    };
    #[inline(always)]
    fn forward<T: Real, A: Act<T>>(&self, u: &Forward<T>) -> Output<T> {
        let r = A::sigmoid(u.x[0] + u.b_ih[0] + (u.p[0] + u.b_hh[0]));
        let z = A::sigmoid(u.x[1] + u.b_ih[1] + (u.p[1] + u.b_hh[1]));
        let hn = u.p[2] + u.b_hh[2];
        let n = A::tanh(u.x[2] + u.b_ih[2] + r * hn);
        Output { saved: [r, z, n, hn], h: (T::ONE - z) * n + z * u.h_prev, c: T::ZERO }
    }

    #[inline(always)]
    fn backward<T: Real, A: Act<T>>(&self, u: &Backward<T>) -> Grad<T> {
        let [r, z, n, hn] = u.saved;
        let dn = u.dh * (T::ONE - z) * (T::ONE - n * n);
        let dz = u.dh * (u.h_prev - n) * z * (T::ONE - z);
        let dr = dn * hn * r * (T::ONE - r);
        Grad { dx: [dr, dz, dn, T::ZERO], dr: [dr, dz, dn * r, T::ZERO], carry_h: u.dh * z, carry_c: T::ZERO }
    }
}
