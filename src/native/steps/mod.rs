//! The fused recurrent steps of the native device. A time step is one parallel pass whose tasks
//! each own a block of `UNITS` hidden units and a range of batch rows: a task computes the
//! recurrent products of its units (forward: the G gate columns of each unit, `h_prev · W_hhᵀ`;
//! backward: `dg_next · W_hh` for its units) with the `sgemm` micro-kernel into a tile that stays
//! in its core's cache, then at once the gate arithmetic and state update of those units
//! (`Epilogue`). W_hh is packed once per version of the weights (a training step repacks it after
//! its update; inference and generation never do), not once per time step.
//!
//! The arithmetic is the reference's, in its order (`reference::kernels`,
//! shaders/step_common.wgsl); exp, sigmoid and tanh are the polynomials of `kernels`. The
//! epilogues loop over contiguous units and are compiled once per instruction set, so that they
//! vectorize for the one the CPU runs.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::kernels::Fused;
use super::kernels::{Fast, MulAdd, Separate};
use super::sgemm::{self, Aligned, Isa, Packed, Shared, Tile};
use crate::cell::{self, CellMath};
use crate::host::{StepBackward, StepForward, StepKernels, Version};
use crate::ops::{Step, StepMode};

mod backward;
mod forward;
use backward::{AddToCarry, Bwd};
use forward::Fwd;

/// Hidden units per task. The G gate columns of a block (G·32) are a whole number of panels for
/// every micro-kernel width (16, 32), so a block's product wastes no columns.
const UNITS: usize = 32;

/// Multiply-adds in a step below which its tasks run on the calling thread: a parallel pass costs
/// a few microseconds of hand-off.
const PARALLEL_MACS: usize = 1 << 16;

/// Layer directions whose packed weights are kept (a deep bidirectional seq2seq model has up to
/// layers x 2 x 2 of them).
const KEEP: usize = 32;

/// What a step multiplies by, packed as the right operand of a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pack {
    /// W_hh (`[g·h, k]`, k = h, or P of a projection) by gate columns: the forward product.
    Forward,
    /// `w` as it is (`[k, h]`: W_hh with k = g·h, or a projection's W_hr with k = P): the
    /// backward product.
    Backward,
    /// A projection's W_hrᵀ (`[h, P]`): the forward step's first product, `h_prev · W_hrᵀ`.
    Project,
    /// A projection's W_hh (`[g·h, P]`): the backward step's first product, `dg_next · W_hh`.
    ProjectBack,
}

/// The packed weights of one version of one layer direction's weights, by `Pack`.
#[derive(Debug)]
struct Packs {
    key: (Option<Version>, Option<Version>, Isa, usize, usize, usize),
    packs: [Option<Packed>; 4],
}

#[derive(Debug)]
pub struct Steps {
    isa: Isa,
    /// Most recently used first.
    packs: Vec<Packs>,
    /// The version of the W_hh the next step reads, set by the backend before each step
    /// (`None`: unknown, so packed anew).
    pub weights: Option<Version>,
    /// Of a projected layer, the version of its W_hr (which may live in another buffer).
    pub projection: Option<Version>,
    /// Copies of the previous state for a step whose input and output slots are one.
    prev_h: Vec<f32>,
    prev_c: Vec<f32>,
    /// A projected layer's first product of a step: `h_prev · W_hrᵀ` forward, `dg_next · W_hh`
    /// backward (`[B, P]`).
    projected: Vec<f32>,
}

thread_local! {
    /// A task's product tile, kept between steps.
    static TILE: RefCell<Aligned> = RefCell::new(Aligned::default());
}

impl Steps {
    pub fn new(isa: Isa) -> Steps {
        Steps {
            isa,
            packs: Vec::new(),
            weights: None,
            projection: None,
            prev_h: Vec::new(),
            prev_c: Vec::new(),
            projected: Vec::new(),
        }
    }

    /// `w` packed as `which` says, from the cache when its version is known and seen before; `p`
    /// is the layer's projection (0: none), which makes the products' length P.
    fn packed(&mut self, which: Pack, w: &[f32], g: usize, h: usize, p: usize) -> &Packed {
        let isa = self.isa;
        // One entry for all of a layer direction's packs: keyed by its projection, not by the
        // length of each product.
        let key = (self.weights, self.projection, isa, g, h, p);
        let entry = match self.packs.iter().position(|p| p.key == key && key.0.is_some()) {
            Some(i) => self.packs.remove(i),
            None => Packs { key, packs: Default::default() },
        };
        self.packs.insert(0, entry);
        self.packs.truncate(KEEP);
        let blocks = h.div_ceil(UNITS);
        self.packs[0].packs[which as usize].get_or_insert_with(|| {
            let mut packed = Packed::default();
            // The depth of the step's product: h_prev's (or r's) width forward, the gate
            // gradients' backward, P where the state was projected first.
            let k = |unprojected: usize| if p > 0 { p } else { unprojected };
            match which {
                // Packed column q: unit block q / (g·UNITS), gate (q / UNITS) % g, unit q % UNITS
                // of the block; B[k, q] = W_hh[gate·h + unit, k].
                Pack::Forward => packed.pack(isa, (w, 1, k(h)), k(h), blocks * g * UNITS, |q| {
                    let (blk, r) = (q / (g * UNITS), q % (g * UNITS));
                    let u = blk * UNITS + r % UNITS;
                    (u < h).then_some((r / UNITS) * h + u)
                }),
                // B[k, u] = w[k, u]: k over all g·h gate rows of W_hh, or the P rows of W_hr.
                Pack::Backward => {
                    packed.pack(isa, (w, h, 1), k(g * h), blocks * UNITS, |u| (u < h).then_some(u))
                }
                // B[u, j] = W_hr[j, u].
                Pack::Project => packed.pack(isa, (w, 1, h), h, p, Some),
                // B[r, j] = W_hh[r, j] over its g·h rows.
                Pack::ProjectBack => packed.pack(isa, (w, p, 1), g * h, p, Some),
            }
            packed
        })
    }

    /// A projected layer's first product of a step, `[batch, P]` into `projected`: A's rows
    /// (`a_rs` apart, `packed.k` long) times the packed `which`, its column panels split across
    /// the pool.
    fn project(
        &mut self,
        which: Pack,
        w: &[f32],
        (g, h, p): (usize, usize, usize),
        a: Shared<*const f32>,
        a_rs: usize,
        batch: usize,
    ) {
        let isa = self.isa;
        self.projected.resize(batch * p, 0.0);
        let c = Shared(self.projected.as_mut_ptr());
        let packed = self.packed(which, w, g, h, p);
        let (nr, k) = (isa.nr(), packed.k);
        let one = |pi: usize| {
            // SAFETY: A's batch rows of k (the step's checks), the panel k x NR, C's batch rows
            // of p (resized above); each task writes its own columns.
            unsafe {
                panel_product(
                    isa,
                    (a.get(), a_rs),
                    batch,
                    packed,
                    pi..pi + 1,
                    p - pi * nr,
                    (c.get().add(pi * nr), p),
                )
            }
        };
        let panels = p.div_ceil(nr);
        if batch * p * k < PARALLEL_MACS || rayon::current_num_threads() == 1 {
            (0..panels).for_each(one);
        } else {
            (0..panels).into_par_iter().for_each(one);
        }
    }
}

/// The gate arithmetic and state update of a task: batch rows `rows`, hidden units `units`,
/// given the task's product `tile` (row-major, one row per batch row).
trait Epilogue: Sync {
    fn apply<M: MulAdd>(&self, rows: Range<usize>, units: Range<usize>, tile: &[f32]);
}

/// Rows ahead whose input projection an epilogue asks for before it needs it. The projection of a
/// step was written long before (over all steps at once), so it comes from memory; a row's
/// lines lie in four places, too far apart for the hardware's prefetcher.
const AHEAD: usize = 4;

/// Asks for the lines holding `n` values at `p`.
#[inline(always)]
fn prefetch<T>(p: *const T, n: usize) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, n);
    #[cfg(target_arch = "x86_64")]
    for i in (0..n * std::mem::size_of::<T>()).step_by(64) {
        // SAFETY: a prefetch reads nothing and never faults.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                (p as *const i8).wrapping_add(i),
            )
        };
    }
}

/// `e.apply(...)` compiled for `isa`, so that its loops vectorize for it.
fn apply<E: Epilogue>(isa: Isa, e: &E, rows: Range<usize>, units: Range<usize>, tile: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512<E: Epilogue>(e: &E, rows: Range<usize>, units: Range<usize>, tile: &[f32]) {
        e.apply::<Fused>(rows, units, tile)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<E: Epilogue>(e: &E, rows: Range<usize>, units: Range<usize>, tile: &[f32]) {
        e.apply::<Fused>(rows, units, tile)
    }
    match isa {
        // SAFETY: the instruction set was checked to be supported before it was chosen.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512(e, rows, units, tile) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2(e, rows, units, tile) },
        _ => e.apply::<Separate>(rows, units, tile),
    }
}

/// One step's product operand: A's rows (`a + r * rs`, `k` long) against the packed panels.
struct Operand<'a> {
    a: Option<(Shared<*const f32>, usize)>,
    k: usize,
    packed: &'a Packed,
}

/// Runs every task of a step: each fills its tile (row-major, `cols` wide) with the product of
/// its rows of A and its unit block's panels of B (zero when there is no A: the first backward
/// step), then applies `e`. Tasks are unit blocks times ranges of rows (a multiple of MR): enough
/// of them for every thread.
fn run<E: Epilogue>(isa: Isa, batch: usize, h: usize, cols: usize, op: Operand<'_>, e: &E) {
    let blocks = h.div_ceil(UNITS);
    let want = 2 * rayon::current_num_threads();
    let groups = want.div_ceil(blocks).min(batch.div_ceil(isa.mr())).max(1);
    let rows = batch.div_ceil(groups).next_multiple_of(isa.mr());
    let groups = batch.div_ceil(rows);
    let (nr, k) = (isa.nr(), op.k);
    let one = |i: usize| {
        let (blk, r0) = (i % blocks, (i / blocks) * rows);
        let rs = r0..(r0 + rows).min(batch);
        let us = blk * UNITS..((blk + 1) * UNITS).min(h);
        TILE.with_borrow_mut(|tile| {
            let tile = tile.get(rows * cols);
            match op.a {
                // SAFETY: A's rows of the step are in bounds (the callers' asserts), the panels
                // k x NR, the tile rows x cols.
                Some((a, a_rs)) => unsafe {
                    let panels = blk * (cols / nr)..(blk + 1) * (cols / nr);
                    let a = a.get().add(r0 * a_rs);
                    panel_product(
                        isa,
                        (a, a_rs),
                        rs.len(),
                        op.packed,
                        panels,
                        cols,
                        (tile.as_mut_ptr(), cols),
                    )
                },
                None => tile.fill(0.0),
            }
            apply(isa, e, rs, us, tile);
        })
    };
    let tasks = blocks * groups;
    if batch * blocks * cols * k < PARALLEL_MACS || rayon::current_num_threads() == 1 {
        (0..tasks).for_each(one);
    } else {
        (0..tasks).into_par_iter().for_each(one);
    }
}

/// `C = A · B` for `m` rows of A (`a_rs` apart, the packed product's depth long) and the
/// `panels` of packed B, `n` columns of C in all (`c_rs` apart): K in slices whose part of a
/// panel stays in L1 while the row slivers pass.
///
/// # Safety
/// `isa` supported; A's `m` rows, C's `m` rows of `n` and the panels in bounds.
#[inline(always)]
unsafe fn panel_product(
    isa: Isa,
    (a, a_rs): (*const f32, usize),
    m: usize,
    packed: &Packed,
    panels: Range<usize>,
    n: usize,
    (c, c_rs): (*mut f32, usize),
) {
    let (mr, nr, k) = (isa.mr(), isa.nr(), packed.k);
    for k0 in (0..k).step_by(sgemm::KC) {
        let kc = sgemm::KC.min(k - k0);
        for (q, pi) in panels.clone().enumerate() {
            let panel = &packed.panel(pi)[k0 * nr..];
            for i in (0..m).step_by(mr) {
                // SAFETY: the caller's contract.
                unsafe {
                    sgemm::micro(
                        isa,
                        Tile {
                            kc,
                            a: a.add(i * a_rs + k0),
                            a_rs,
                            a_cs: 1,
                            b: panel.as_ptr(),
                            c: c.add(i * c_rs + q * nr),
                            c_rs,
                            m: mr.min(m - i),
                            n: nr.min(n - q * nr),
                            accumulate: k0 > 0,
                        },
                    )
                }
            }
        }
    }
}

/// Step `t`'s rows of a `[T, B, width]` buffer start here.
fn at(s: &Step, t: usize, width: usize) -> usize {
    t * s.batch * width
}

fn slot(s: &Step, slot: usize) -> usize {
    s.state_base + slot * s.batch * s.hidden
}

/// `n` values at `p + i`, read.
///
/// # Safety
/// In bounds, and not written during the borrow.
#[inline(always)]
unsafe fn get<'a>(p: Shared<*const f32>, i: usize, n: usize) -> &'a [f32] {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(p.get().add(i), n) }
}

/// `n` values at `p + i`, written by this task alone.
///
/// # Safety
/// In bounds, and touched by no one else during the borrow.
#[inline(always)]
#[allow(clippy::mut_from_ref)]
unsafe fn put<'a>(p: Shared<*mut f32>, i: usize, n: usize) -> &'a mut [f32] {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts_mut(p.get().add(i), n) }
}

fn ro(x: &[f32]) -> Shared<*const f32> {
    Shared(x.as_ptr())
}

/// Element `i` of a buffer that the step also writes, to be read only.
fn at_ro(p: Shared<*mut f32>, i: usize) -> Shared<*const f32> {
    Shared(p.get().wrapping_add(i) as *const f32)
}

/// The previous state's rows (of `states`, `len` elements long): read in place, or from a copy
/// when the step writes the same slot.
fn previous(copy: &mut Vec<f32>, states: Shared<*mut f32>, len: usize, s: &Step) -> Shared<*const f32> {
    let src = slot(s, s.in_slot);
    assert!(src + s.batch * s.hidden <= len, "step: state slot past the buffer");
    if s.in_slot != s.out_slot {
        return at_ro(states, src);
    }
    copy.clear();
    // SAFETY: in bounds by the assert; nothing writes the buffer during the copy.
    copy.extend_from_slice(unsafe { get(at_ro(states, src), 0, s.batch * s.hidden) });
    ro(copy)
}

// ---------------------------------------------------------------------------------------------
// The epilogues: per row, per unit, as the reference's step twins. Every pointer is checked in
// bounds by the step function that builds the epilogue; each (row, unit) belongs to one task.

/// Where a step is: its time, width, output columns and the sequences' lengths.
struct Place {
    h: usize,
    t: usize,
    out_stride: usize,
    out_col: usize,
    lengths: Shared<*const u32>,
}

impl Place {
    fn of(s: &Step, lengths: &[u32]) -> Place {
        Place {
            h: s.hidden,
            t: s.t,
            out_stride: s.out_stride,
            out_col: s.out_col,
            lengths: Shared(lengths.as_ptr()),
        }
    }

    /// Whether step t is inside batch row b's sequence.
    ///
    /// # Safety
    /// `b` below the batch.
    #[inline(always)]
    unsafe fn valid(&self, b: usize) -> bool {
        // SAFETY: the caller's contract; the lengths hold one per batch row.
        self.t < unsafe { *self.lengths.get().add(b) } as usize
    }

    /// Row b's unit u0 in the step's `[B, out_stride]` output (or output gradient) rows.
    #[inline(always)]
    fn out(&self, b: usize, u0: usize) -> usize {
        b * self.out_stride + self.out_col + u0
    }
}

/// A forward step's input: its rows of the input projection (`[B, G*H]`), or the table and the
/// row of it each batch row reads (`StepBufs::xw_rows`), and the two biases.
struct Input {
    /// The step's rows of the projection, or the table of every token's (`rows`).
    xw: Shared<*const f32>,
    /// With a table: the table row of each batch row.
    rows: Option<Shared<*const u32>>,
    b_ih: Shared<*const f32>,
    b_hh: Shared<*const f32>,
}

impl Input {
    fn of(s: &Step, xw: &[f32], rows: Option<&[u32]>, bias: &[f32], g: usize) -> Input {
        let xw = match rows {
            None => ro(&xw[at(s, s.t, g * s.hidden)..]),
            Some(_) => ro(xw),
        };
        let rows = rows.map(|r| Shared(r.as_ptr()));
        Input { xw, rows, b_ih: ro(bias), b_hh: ro(&bias[s.bias_hh..]) }
    }

    /// Where batch row b's projection starts in `xw`.
    ///
    /// # Safety
    /// b is one of the step's batch rows.
    #[inline(always)]
    unsafe fn row(&self, gates: usize, h: usize, b: usize) -> usize {
        match self.rows {
            None => b * gates * h,
            // SAFETY: the caller's contract; the table has B rows' indices.
            Some(rows) => unsafe { *rows.get().add(b) as usize * gates * h },
        }
    }

    /// Gate k's projection for row b, units u0.. (n of them), of a `gates`-gate cell.
    ///
    /// # Safety
    /// In bounds (checked by the step).
    #[inline(always)]
    unsafe fn x<'a>(&self, gates: usize, h: usize, b: usize, k: usize, u0: usize, n: usize) -> &'a [f32] {
        // SAFETY: the caller's contract.
        unsafe { get(self.xw, self.row(gates, h, b) + k * h + u0, n) }
    }

    /// Gate k's b_ih and b_hh for units u0.. (n of them).
    ///
    /// # Safety
    /// In bounds (checked by the step).
    #[inline(always)]
    unsafe fn biases<'a>(&self, h: usize, k: usize, u0: usize, n: usize) -> [&'a [f32]; 2] {
        // SAFETY: the caller's contract.
        unsafe { [get(self.b_ih, k * h + u0, n), get(self.b_hh, k * h + u0, n)] }
    }

    /// Asks for row b's projection of units u0.. before it is needed (a gathered projection
    /// comes from memory; a table is in cache).
    #[inline(always)]
    fn prefetch(&self, gates: usize, h: usize, b: usize, u0: usize, n: usize) {
        if self.rows.is_none() {
            for k in 0..gates {
                prefetch(self.xw.get().wrapping_add(b * gates * h + k * h + u0), n);
            }
        }
    }
}

/// Copies `src` (at most UNITS values) into the front of `dst`: whole, as vectors, when it fills
/// it.
#[inline(always)]
fn load(dst: &mut [f32; UNITS], src: &[f32]) {
    match <&[f32; UNITS]>::try_from(src) {
        Ok(whole) => *dst = *whole,
        Err(_) => dst[..src.len()].copy_from_slice(src),
    }
}

/// Copies the front of `src` into `dst` (at most UNITS values), as `load`.
#[inline(always)]
fn store(dst: &mut [f32], src: &[f32; UNITS]) {
    let n = dst.len();
    if n == UNITS {
        let whole: &mut [f32; UNITS] = dst.try_into().expect("UNITS values");
        *whole = *src;
    } else {
        dst.copy_from_slice(&src[..n]);
    }
}

// ---------------------------------------------------------------------------------------------
// The steps: bounds checked once, then the tasks.

/// Panics (an engine bug, not bad input: the graph sizes every buffer) unless `len` holds `need`.
fn check(what: &str, len: usize, need: usize) {
    assert!(len >= need, "{what}: {len} elements where the step reads {need}");
}

/// Checks the buffers every forward step reads and writes.
#[allow(clippy::too_many_arguments)]
fn check_forward(
    s: &Step,
    g: usize,
    saved: usize,
    w_hh: usize,
    (xw, table): (usize, Option<usize>),
    y: usize,
    states: usize,
    gates: Option<usize>,
    lengths: usize,
) {
    let h = s.hidden;
    check("w_hh", w_hh, g * h * h);
    match table {
        // A table of rows (`Input`): the rows' indices were checked against it where they were
        // locked (`host::step`).
        Some(rows) => check("xw_rows", rows, s.batch),
        None => check("xw", xw, at(s, s.t + 1, g * h)),
    }
    check("y", y, at(s, s.t + 1, s.out_stride));
    assert!(s.out_col + h <= s.out_stride, "step: output columns past the row");
    check("states", states, slot(s, s.in_slot.max(s.out_slot) + 1));
    if let Some(gates) = gates {
        check("gates", gates, at(s, s.t + 1, saved * h));
    }
    check("lengths", lengths, s.batch);
}

/// Checks the buffers every backward step reads and writes.
fn check_backward(s: &Step, g: usize, w_hh: usize, dg: usize, dy: usize, carry: usize, lengths: usize) {
    let h = s.hidden;
    check("w_hh", w_hh, g * h * h);
    check("dg", dg, at(s, s.t.max(s.next_t) + 1, g * h));
    check("dy", dy, at(s, s.t + 1, s.out_stride));
    assert!(s.out_col + h <= s.out_stride, "step: output columns past the row");
    check("carry", carry, s.batch * h);
    check("lengths", lengths, s.batch);
}

impl StepKernels<f32> for Steps {
    fn forward<C: CellMath>(&mut self, cell: C, f: StepForward<'_, f32>, s: Step) {
        let (h, g, isa) = (s.hidden, C::SHAPE.gates, self.isa);
        let (xw_len, y_len, states_len) = (f.xw.len(), f.y.len(), f.states.len());
        check_forward(
            &s,
            g,
            C::SHAPE.saved,
            f.w_hh.len(),
            (xw_len, f.xw_rows.map(|r| r.len())),
            y_len,
            states_len,
            f.gates.as_ref().map(|x| x.len()),
            f.lengths.len(),
        );
        check("bias", f.bias.len(), s.bias_hh + g * h);
        let states = Shared(f.states.as_mut_ptr());
        let h_prev = previous(&mut self.prev_h, states, states_len, &s);
        let (cells, c_prev) = match f.cells {
            Some(cells) => {
                check("cells", cells.len(), slot(&s, s.in_slot.max(s.out_slot) + 1));
                let (len, base) = (cells.len(), Shared(cells.as_mut_ptr()));
                let c_prev = previous(&mut self.prev_c, base, len, &s);
                (Some(Shared(base.get().wrapping_add(slot(&s, s.out_slot)))), Some(c_prev))
            }
            None => (None, None),
        };
        let e = Fwd {
            cell,
            at: Place::of(&s, f.lengths),
            input: Input::of(&s, f.xw, f.xw_rows, f.bias, g),
            h_prev,
            c_prev,
            states: Shared(states.get().wrapping_add(slot(&s, s.out_slot))),
            cells,
            gates: f.gates.map(|gates| Shared(gates[at(&s, s.t, C::SHAPE.saved * h)..].as_mut_ptr())),
            y: Shared(f.y[at(&s, s.t, s.out_stride)..].as_mut_ptr()),
        };
        let (a, p, w) = match f.factors {
            None => ((h_prev, h), 0, f.w_hh),
            Some((w_hh, w_hr)) => {
                // h_prev · W_hrᵀ, the projected state, then its product with W_hh.
                let p = w_hr.len() / h;
                self.project(Pack::Project, w_hr, (g, h, p), h_prev, h, s.batch);
                ((ro(&self.projected), p), p, w_hh)
            }
        };
        let packed = self.packed(Pack::Forward, w, g, h, p);
        let k = packed.k;
        run(isa, s.batch, h, g * UNITS, Operand { a: Some(a), k, packed }, &e);
    }

    fn backward<C: CellMath>(&mut self, cell: C, a: StepBackward<'_, f32>, s: Step) {
        let (h, g, isa) = (s.hidden, C::SHAPE.gates, self.isa);
        let gh = g * h;
        let dgr_len = a.dgh.as_ref().map_or(a.dg.len(), |d| d.len());
        check_backward(&s, g, a.w_hh.len(), dgr_len, a.dy.len(), a.carry.len() / 2, a.lengths.len());
        check("dg", a.dg.len(), at(&s, s.t + 1, gh));
        let dg = Shared(a.dg.as_mut_ptr());
        let dgh = a.dgh.map(|d| Shared(d.as_mut_ptr()));
        // The gradients step next_t sends back through W_hh: the recurrent ones.
        let dgr = dgh.unwrap_or(dg);
        let next = (s.mode != StepMode::First).then(|| (at_ro(dgr, at(&s, s.next_t, gh)), gh));
        let carry_h = Shared(a.carry.as_mut_ptr());
        let carry_c = Shared(carry_h.get().wrapping_add(s.batch * h));
        let (next, p, w) = match a.factors {
            None => (next, 0, a.w_hh),
            Some((w_hh, w_hr)) => {
                // dg_next · W_hh, the gradient reaching the projected state, then through W_hr.
                let p = w_hr.len() / h;
                let next = next.map(|(dg_next, _)| {
                    self.project(Pack::ProjectBack, w_hh, (g, h, p), dg_next, gh, s.batch);
                    (ro(&self.projected), p)
                });
                (next, p, w_hr)
            }
        };
        let packed = self.packed(Pack::Backward, w, g, h, p);
        let k = packed.k;
        let op = Operand { a: next, k, packed };
        if s.mode == StepMode::Initial {
            return run(isa, s.batch, h, UNITS, op, &AddToCarry { h, carry: carry_h });
        }
        let states_end = slot(&s, s.in_slot.max(s.out_slot) + 1);
        if C::SHAPE.reads_h || C::SHAPE.reads_h_prev {
            check("states", a.states.len(), states_end);
        }
        if let Some(cells) = a.cells {
            check("cells", cells.len(), states_end);
        }
        if let Some(gates) = a.gates {
            check("gates", gates.len(), at(&s, s.t + 1, C::SHAPE.saved * h));
        }
        let e = Bwd {
            cell,
            at: Place::of(&s, a.lengths),
            h: ro(&a.states[slot(&s, s.out_slot).min(a.states.len())..]),
            h_prev: ro(&a.states[slot(&s, s.in_slot).min(a.states.len())..]),
            c: a.cells.map(|c| (ro(&c[slot(&s, s.out_slot)..]), ro(&c[slot(&s, s.in_slot)..]))),
            gates: a.gates.map(|x| ro(&x[at(&s, s.t, C::SHAPE.saved * h)..])),
            dy: ro(&a.dy[at(&s, s.t, s.out_stride)..]),
            dg: Shared(dg.get().wrapping_add(at(&s, s.t, gh))),
            dgh: dgh.map(|d| Shared(d.get().wrapping_add(at(&s, s.t, gh)))),
            carry_h,
            carry_c,
        };
        run(isa, s.batch, h, UNITS, op, &e);
    }
}
