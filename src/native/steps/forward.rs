//! The forward step's epilogue: a cell's gate arithmetic and state update on a task's tile.

use super::*;

/// The forward step's arithmetic for the cell `C` on its units: the cell's own (`CellMath`),
/// with the device's vectorized activations.
pub(super) struct Fwd<C> {
    pub(super) cell: C,
    pub(super) at: Place,
    pub(super) input: Input,
    pub(super) h_prev: Shared<*const f32>,
    pub(super) c_prev: Option<Shared<*const f32>>,
    pub(super) states: Shared<*mut f32>,
    pub(super) cells: Option<Shared<*mut f32>>,
    pub(super) gates: Option<Shared<*mut f32>>,
    pub(super) y: Shared<*mut f32>,
}

impl<C: CellMath> Epilogue for Fwd<C> {
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    fn apply<M: MulAdd>(&self, rows: Range<usize>, units: Range<usize>, tile: &[f32]) {
        let (h, g, u0, n) = (self.at.h, C::SHAPE.gates, units.start, units.len());
        // The cell's arithmetic runs over UNITS lanes of local copies (the padding of a last,
        // partial block computed and never stored): local, so that it vectorizes without
        // checks of aliasing. The biases are the same for every row.
        let (mut b_ih, mut b_hh) = ([[0.0f32; UNITS]; 4], [[0.0f32; UNITS]; 4]);
        for k in 0..g {
            // SAFETY: see the section's header.
            let [bi, bh] = unsafe { self.input.biases(h, k, u0, n) };
            load(&mut b_ih[k], bi);
            load(&mut b_hh[k], bh);
        }
        let (mut x, mut p, mut saved) = ([[0.0f32; UNITS]; 4], [[0.0f32; UNITS]; 4], [[0.0f32; UNITS]; 4]);
        let (mut hp, mut cp, mut hs, mut cs) = ([0.0f32; UNITS], [0.0; UNITS], [0.0; UNITS], [0.0; UNITS]);
        for b in rows.clone() {
            if b + AHEAD < rows.end {
                self.input.prefetch(g, h, b + AHEAD, u0, n);
            }
            let tr = &tile[(b - rows.start) * g * UNITS..][..g * UNITS];
            // SAFETY: see the section's header.
            let (hprev, cprev) =
                unsafe { (get(self.h_prev, b * h + u0, n), self.c_prev.map(|c| get(c, b * h + u0, n))) };
            for k in 0..g {
                // SAFETY: as above.
                load(&mut x[k], unsafe { self.input.x(g, h, b, k, u0, n) });
                load(&mut p[k], &tr[k * UNITS..][..n]);
            }
            load(&mut hp, hprev);
            if let Some(c) = cprev {
                load(&mut cp, c);
            }
            for j in 0..UNITS {
                let mut f = cell::Forward { h_prev: hp[j], c_prev: cp[j], ..Default::default() };
                for k in 0..C::SHAPE.gates {
                    (f.x[k], f.b_ih[k], f.p[k], f.b_hh[k]) = (x[k][j], b_ih[k][j], p[k][j], b_hh[k][j]);
                }
                let o = self.cell.forward::<f32, Fast<M>>(&f);
                for k in 0..C::SHAPE.saved {
                    saved[k][j] = o.saved[k];
                }
                (hs[j], cs[j]) = (o.h, o.c);
            }
            // SAFETY: see the section's header.
            unsafe {
                if let Some(gates) = self.gates {
                    for k in 0..C::SHAPE.saved {
                        store(put(gates, b * C::SHAPE.saved * h + k * h + u0, n), &saved[k]);
                    }
                }
                let valid = self.at.valid(b);
                let (hout, out) = (put(self.states, b * h + u0, n), put(self.y, self.at.out(b, u0), n));
                if valid {
                    store(hout, &hs);
                    store(out, &hs);
                } else {
                    hout.copy_from_slice(hprev);
                    out.fill(0.0);
                }
                if let (Some(c), Some(cprev)) = (self.cells, cprev) {
                    let c = put(c, b * h + u0, n);
                    if valid { store(c, &cs) } else { c.copy_from_slice(cprev) }
                }
            }
        }
    }
}
