//! The backward step's epilogues: a cell's gradient arithmetic on a task's tile, and the
//! carry into the initial state after the last step.

use super::*;

/// After the last backward step: the gradient reaching the initial state through W_hh is added
/// to the carry.
pub(super) struct AddToCarry {
    pub(super) h: usize,
    pub(super) carry: Shared<*mut f32>,
}

impl Epilogue for AddToCarry {
    #[inline(always)]
    fn apply<M: MulAdd>(&self, rows: Range<usize>, units: Range<usize>, tile: &[f32]) {
        for b in rows.clone() {
            let rec = &tile[(b - rows.start) * UNITS..][..units.len()];
            // SAFETY: see the section's header.
            add(unsafe { put(self.carry, b * self.h + units.start, units.len()) }, rec);
        }
    }
}

/// The backward step's arithmetic for the cell `C` on its units, as `Fwd`.
pub(super) struct Bwd<C> {
    pub(super) cell: C,
    pub(super) at: Place,
    /// The states around the step (the new one, the previous one), where the cell reads them.
    pub(super) h: Shared<*const f32>,
    pub(super) h_prev: Shared<*const f32>,
    pub(super) c: Option<(Shared<*const f32>, Shared<*const f32>)>,
    pub(super) gates: Option<Shared<*const f32>>,
    pub(super) dy: Shared<*const f32>,
    pub(super) dg: Shared<*mut f32>,
    pub(super) dgh: Option<Shared<*mut f32>>,
    pub(super) carry_h: Shared<*mut f32>,
    pub(super) carry_c: Shared<*mut f32>,
}

impl<C: CellMath> Epilogue for Bwd<C> {
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    fn apply<M: MulAdd>(&self, rows: Range<usize>, units: Range<usize>, tile: &[f32]) {
        let (h, g, u0, n) = (self.at.h, C::SHAPE.gates, units.start, units.len());
        // Staged as in `Fwd`.
        let mut saved = [[0.0f32; UNITS]; 4];
        let (mut hv, mut hp, mut c, mut cp) = ([0.0f32; UNITS], [0.0; UNITS], [0.0; UNITS], [0.0; UNITS]);
        let (mut rec_a, mut ch_a, mut dy_a, mut dc) =
            ([0.0f32; UNITS], [0.0; UNITS], [0.0; UNITS], [0.0; UNITS]);
        let (mut gx, mut gr) = ([[0.0f32; UNITS]; 4], [[0.0f32; UNITS]; 4]);
        let (mut carry_h, mut carry_c) = ([0.0f32; UNITS], [0.0f32; UNITS]);
        for b in rows.clone() {
            let rec = &tile[(b - rows.start) * UNITS..][..n];
            // SAFETY: see the section's header.
            let (ch, cc) = unsafe { (put(self.carry_h, b * h + u0, n), put(self.carry_c, b * h + u0, n)) };
            // SAFETY: as above.
            let dx = |k: usize| unsafe { put(self.dg, b * g * h + k * h + u0, n) };
            // SAFETY: as above.
            let dr = |k: usize| self.dgh.map(|d| unsafe { put(d, b * g * h + k * h + u0, n) });
            // SAFETY: as above.
            if !unsafe { self.at.valid(b) } {
                add(ch, rec);
                for k in 0..g {
                    dx(k).fill(0.0);
                    if let Some(d) = dr(k) {
                        d.fill(0.0);
                    }
                }
                continue;
            }
            // SAFETY: see the section's header.
            unsafe {
                if let Some(gates) = self.gates {
                    for (k, v) in saved.iter_mut().enumerate().take(C::SHAPE.saved) {
                        load(v, get(gates, b * C::SHAPE.saved * h + k * h + u0, n));
                    }
                }
                if C::SHAPE.reads_h {
                    load(&mut hv, get(self.h, b * h + u0, n));
                }
                if C::SHAPE.reads_h_prev {
                    load(&mut hp, get(self.h_prev, b * h + u0, n));
                }
                if let Some((cn, cpn)) = self.c {
                    load(&mut c, get(cn, b * h + u0, n));
                    load(&mut cp, get(cpn, b * h + u0, n));
                }
                load(&mut dy_a, get(self.dy, self.at.out(b, u0), n));
            }
            load(&mut rec_a, rec);
            load(&mut ch_a, ch);
            load(&mut dc, cc);
            for j in 0..UNITS {
                let dh = rec_a[j] + ch_a[j] + dy_a[j];
                let mut u = cell::Backward {
                    h: hv[j],
                    h_prev: hp[j],
                    c: c[j],
                    c_prev: cp[j],
                    dh,
                    dc: dc[j],
                    ..Default::default()
                };
                for k in 0..C::SHAPE.saved {
                    u.saved[k] = saved[k][j];
                }
                let r = self.cell.backward::<f32, Fast<M>>(&u);
                for k in 0..g {
                    (gx[k][j], gr[k][j]) = (r.dx[k], r.dr[k]);
                }
                (carry_h[j], carry_c[j]) = (r.carry_h, r.carry_c);
            }
            for k in 0..g {
                store(dx(k), &gx[k]);
                if let Some(d) = dr(k) {
                    store(d, &gr[k]);
                }
            }
            store(ch, &carry_h);
            if C::SHAPE.cell_state {
                store(cc, &carry_c);
            }
        }
    }
}

/// `carry[j] += rec[j]`.
#[inline(always)]
pub(super) fn add(carry: &mut [f32], rec: &[f32]) {
    for (c, &r) in carry.iter_mut().zip(rec) {
        *c += r;
    }
}
