//! The native device's f32 products, laid out as BLIS lays them out: B packed into panels of NR
//! columns, A read in slivers of MR rows, and a register-blocked micro-kernel that keeps an
//! MR x NR tile of C in registers over the whole K range of a block. One micro-kernel per
//! instruction set, chosen once at run time from what the CPU reports:
//!
//! - AVX-512: 8 x 32 (16 accumulators, 2 loads and 8 broadcasts per 16 FMAs);
//! - AVX2 with FMA: 6 x 16 (12 accumulators);
//! - portable Rust elsewhere: 4 x 16, which the compiler vectorizes.
//!
//! Packing is separate from the product so that a caller reusing one operand (the recurrent
//! weights over all the time steps of a pass) packs it once (`Packed`), where a general GEMM
//! library repacks it on every call.

use std::cell::RefCell;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::error::{Error, Result};

/// The environment variable that picks an instruction set other than the best the CPU has
/// (`avx512`, `avx2` or `portable`), to compare them on one machine.
pub const ISA_ENV: &str = "RNN_GPU_CPU_ISA";

/// The micro-kernel's instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    Avx512,
    Avx2,
    Portable,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// Rows of C a micro-kernel call computes.
    pub const fn mr(self) -> usize {
        match self {
            Isa::Avx512 => 8,
            Isa::Avx2 => 6,
            Isa::Portable => 4,
        }
    }

    /// Columns of C a micro-kernel call computes: the width of a packed panel.
    pub const fn nr(self) -> usize {
        match self {
            Isa::Avx512 => 32,
            Isa::Avx2 | Isa::Portable => 16,
        }
    }

    /// Whether this CPU runs the instruction set.
    pub fn supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::is_x86_feature_detected!("avx512f") && Isa::Avx2.supported(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx512 | Isa::Avx2 => false,
            Isa::Portable => true,
        }
    }

    /// The instruction sets this CPU runs, best first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.supported()).collect()
    }

    /// The instruction set `RNN_GPU_CPU_ISA` names, or the best this CPU runs.
    pub fn parse(value: Option<&str>) -> Result<Isa> {
        let Some(v) = value else {
            return Ok(Isa::available()[0]);
        };
        let isa = Isa::ALL.into_iter().find(|i| i.name() == v.trim()).ok_or_else(|| {
            Error::invalid(
                "native cpu device",
                format!("{ISA_ENV}={v:?} is not one of avx512, avx2, portable"),
            )
        })?;
        if !isa.supported() {
            return Err(Error::invalid(
                "native cpu device",
                format!("{ISA_ENV}={v:?}: this CPU does not run {}", isa.name()),
            ));
        }
        Ok(isa)
    }
}

/// The instruction set of the native device, set on first use (see `Isa::parse`).
pub fn isa() -> Result<Isa> {
    static ISA: OnceLock<std::result::Result<Isa, String>> = OnceLock::new();
    ISA.get_or_init(|| {
        Isa::parse(std::env::var(ISA_ENV).ok().as_deref()).map_err(|e| match e {
            Error::Invalid { message, .. } => message,
            e => e.to_string(),
        })
    })
    .clone()
    .map_err(|message| Error::invalid("native cpu device", message))
}

// ---------------------------------------------------------------------------------------------
// Packed operands

/// K rows of B per block: a packed panel (K x NR) stays in the L1 cache while the slivers of A
/// pass over it.
pub const KC: usize = 256;
/// Rows of A per block (a multiple of every MR), so that the block of A stays in L2.
const MC: usize = 96;
/// Columns of B per block (a multiple of every NR): the packed block stays in L2.
const NC: usize = 1024;

/// A vector of f32 whose slice starts on a 64-byte line, grown on demand and kept.
#[derive(Debug, Default)]
pub struct Aligned {
    buf: Vec<f32>,
}

impl Aligned {
    /// `len` values starting on a cache line; their contents are whatever was there before.
    pub fn get(&mut self, len: usize) -> &mut [f32] {
        if self.buf.len() < len + 16 {
            self.buf = vec![0.0; (len + 16).next_power_of_two()];
        }
        let skip = self.buf.as_ptr().align_offset(64).min(15);
        &mut self.buf[skip..skip + len]
    }
}

/// The widest panel of any micro-kernel.
const MAX_NR: usize = 32;

/// Elements of B above which `Packed::pack` fills its panels in parallel.
const PARALLEL_PACK: usize = 1 << 16;

/// B (`[k, n]`, element (p, j) at `b[p * rs + j * cs]`) packed for `isa`: `n.div_ceil(NR)`
/// panels, each `k` rows of NR values, the columns past `n` zero. Column `q` of the packed
/// operand is column `cols(q)` of B (`None`: zero), so that a caller can reorder columns.
#[derive(Debug, Default)]
pub struct Packed {
    pub isa: Option<Isa>,
    pub k: usize,
    pub n: usize,
    data: Aligned,
}

impl Packed {
    pub fn pack(
        &mut self,
        isa: Isa,
        (b, rs, cs): (&[f32], usize, usize),
        k: usize,
        n: usize,
        cols: impl Fn(usize) -> Option<usize> + Sync,
    ) {
        let nr = isa.nr();
        let panels = n.div_ceil(nr);
        let data = self.data.get(panels * k * nr);
        // A panel row at a time, its NR values written together; the panels of a large B in
        // parallel (W_hh is repacked after every update, on the training step's path).
        let fill = |(i, panel): (usize, &mut [f32])| {
            let mut src = [None; MAX_NR];
            for (jj, s) in src[..nr].iter_mut().enumerate() {
                *s = (i * nr + jj < n).then(|| cols(i * nr + jj)).flatten();
            }
            for (p, row) in panel.chunks_exact_mut(nr).enumerate() {
                for (v, s) in row.iter_mut().zip(&src) {
                    *v = s.map_or(0.0, |j| b[p * rs + j * cs]);
                }
            }
        };
        if panels > 1 && k * n >= PARALLEL_PACK {
            data.par_chunks_exact_mut(k * nr).enumerate().for_each(fill);
        } else {
            data.chunks_exact_mut(k * nr).enumerate().for_each(fill);
        }
        (self.isa, self.k, self.n) = (Some(isa), k, n);
    }

    /// Panel `i`: `k` rows of NR values.
    pub fn panel(&self, i: usize) -> &[f32] {
        let nr = self.isa.map_or(0, Isa::nr);
        let len = self.k * nr;
        &self.data.buf[self.offset() + i * len..][..len]
    }

    fn offset(&self) -> usize {
        self.data.buf.as_ptr().align_offset(64).min(15)
    }
}

/// Packs `kc` rows and `nc` columns of B into `dst`, panels of `nr` columns: panel `s` holds
/// element (p, j) at `s * kc * nr + p * nr + j`, columns past `nc` zero. The slivers of A are the
/// same packing of A's transpose: `mr` rows, strides swapped.
///
/// # Safety
/// Every element of that block must be readable at `b + p * rs + j * cs`.
unsafe fn pack_block(
    dst: &mut [f32],
    nr: usize,
    b: *const f32,
    (rs, cs): (usize, usize),
    kc: usize,
    nc: usize,
) {
    for (panel, j0) in dst.chunks_exact_mut(kc * nr).zip((0..nc).step_by(nr)) {
        let w = nr.min(nc - j0);
        for p in 0..kc {
            let row = &mut panel[p * nr..(p + 1) * nr];
            // SAFETY: the caller's contract; j0 + jj < nc.
            unsafe {
                let src = b.add(p * rs + j0 * cs);
                if cs == 1 {
                    std::ptr::copy_nonoverlapping(src, row.as_mut_ptr(), w);
                } else {
                    for (jj, v) in row[..w].iter_mut().enumerate() {
                        *v = *src.add(jj * cs);
                    }
                }
            }
            row[w..].fill(0.0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The micro-kernels

/// One micro-kernel call: `C[i, j] (+)= sum_p A[i, p] B[p, j]` for `i < m <= MR`, `j < n <= NR`,
/// `p < kc`: A's element (i, p) at `a + i * a_rs + p * a_cs` (rows past `m` are not read), B a
/// packed panel, C's row i at `c + i * c_rs`, added to where `accumulate`.
#[derive(Clone, Copy)]
pub struct Tile {
    pub kc: usize,
    pub a: *const f32,
    pub a_rs: usize,
    pub a_cs: usize,
    pub b: *const f32,
    pub c: *mut f32,
    pub c_rs: usize,
    pub m: usize,
    pub n: usize,
    pub accumulate: bool,
}

/// Runs `t` on the micro-kernel of `isa`.
///
/// # Safety
/// `isa` must be supported; every element `t` names must be in bounds; `t.m >= 1`.
#[inline]
pub unsafe fn micro(isa: Isa, t: Tile) {
    // SAFETY: the caller's contract.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::micro_8x32(t),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::micro_6x16(t),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx512 | Isa::Avx2 => unreachable!("{isa:?} on a CPU that is not x86-64"),
            Isa::Portable => micro_portable(t),
        }
    }
}

unsafe fn micro_portable(t: Tile) {
    const MR: usize = Isa::Portable.mr();
    const NR: usize = Isa::Portable.nr();
    let mut acc = [[0.0f32; NR]; MR];
    // SAFETY: the caller's contract: rows below m, p below kc, the panel kc x NR.
    unsafe {
        let rows: [*const f32; MR] = std::array::from_fn(|i| t.a.add(i.min(t.m - 1) * t.a_rs));
        for p in 0..t.kc {
            let bv = &*(t.b.add(p * NR) as *const [f32; NR]);
            for i in 0..MR {
                let av = *rows[i].add(p * t.a_cs);
                for j in 0..NR {
                    acc[i][j] = fma(av, bv[j], acc[i][j]);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate().take(t.m) {
            let row = std::slice::from_raw_parts_mut(t.c.add(i * t.c_rs), t.n);
            for (v, &x) in row.iter_mut().zip(acc) {
                *v = if t.accumulate { *v + x } else { x };
            }
        }
    }
}

/// A fused multiply-add where the target has one in hardware (aarch64), else a multiply and an
/// add (a library call for `mul_add` would be far slower).
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(target_arch = "aarch64") { a.mul_add(b, c) } else { a * b + c }
}

#[cfg(target_arch = "x86_64")]
mod x86;

// ---------------------------------------------------------------------------------------------
// The driver

/// Packing space of one thread, kept between calls: no allocation per product after warm-up.
#[derive(Default)]
struct Scratch {
    a: Aligned,
    b: Aligned,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `C (+)= A·B` for `(m, n, k)` on this thread, each matrix as (pointer, row stride[, column
/// stride]); C's columns are contiguous.
///
/// # Safety
/// `isa` must be supported. Every element read or written must be in bounds, and no other
/// thread may touch the elements of C written here.
pub unsafe fn serial(
    isa: Isa,
    (m, n, k): (usize, usize, usize),
    (c, c_rs): (*mut f32, usize),
    (a, a_rs, a_cs): (*const f32, usize, usize),
    (b, b_rs, b_cs): (*const f32, usize, usize),
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                // SAFETY: the caller's contract.
                unsafe { std::slice::from_raw_parts_mut(c.add(i * c_rs), n).fill(0.0) };
            }
        }
        return;
    }
    let (mr, nr) = (isa.mr(), isa.nr());
    SCRATCH.with_borrow_mut(|scratch| {
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                let bpack = scratch.b.get(nc.div_ceil(nr) * kc * nr);
                // SAFETY: the caller's contract covers the block.
                unsafe { pack_block(bpack, nr, b.add(pc * b_rs + jc * b_cs), (b_rs, b_cs), kc, nc) };
                let beta = accumulate || pc > 0;
                for ic in (0..m).step_by(MC) {
                    let mc = MC.min(m - ic);
                    let a_block = a.wrapping_add(ic * a_rs + pc * a_cs);
                    // Rows of A along K (a_cs = 1) are read in place; otherwise packed into
                    // slivers, so that the micro-kernel's loads run along memory.
                    let (ap, (s_rs, s_cs), sliver) = if a_cs == 1 {
                        (a_block, (a_rs, 1), mr * a_rs)
                    } else {
                        let apack = scratch.a.get(mc.div_ceil(mr) * kc * mr);
                        // SAFETY: the caller's contract covers the block.
                        unsafe { pack_block(apack, mr, a_block, (a_cs, a_rs), kc, mc) };
                        (apack.as_ptr(), (1, mr), kc * mr)
                    };
                    for (jr, panel) in bpack.chunks_exact(kc * nr).enumerate() {
                        let j = jr * nr;
                        for (s, i) in (0..mc).step_by(mr).enumerate() {
                            // SAFETY: the caller's contract; i < mc, j < nc.
                            unsafe {
                                micro(
                                    isa,
                                    Tile {
                                        kc,
                                        a: ap.add(s * sliver),
                                        a_rs: s_rs,
                                        a_cs: s_cs,
                                        b: panel.as_ptr(),
                                        c: c.add((ic + i) * c_rs + jc + j),
                                        c_rs,
                                        m: mr.min(mc - i),
                                        n: nr.min(nc - j),
                                        accumulate: beta,
                                    },
                                )
                            };
                        }
                    }
                }
            }
        }
    });
}

/// Multiply-adds below which a product runs on one thread: under this, the hand-off costs more
/// than the second thread saves.
const PARALLEL_MACS: usize = 1 << 18;

/// `c[i * c_rs + j] (+)= sum_k a[i * a_rs + k * a_cs] * b[k * b_rs + j * b_cs]`, `[m, n]` by `k`,
/// split across the pool: one panel of C per thread along its longer side.
#[allow(clippy::too_many_arguments)]
pub fn product(
    isa: Isa,
    c: &mut [f32],
    c_rs: usize,
    (a, a_rs, a_cs): (&[f32], usize, usize),
    (b, b_rs, b_cs): (&[f32], usize, usize),
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    // The raw pointers below must stay inside the slices: an engine bug, so a panic, not UB.
    assert!(isa.supported(), "product: {isa:?} on a CPU without it");
    assert!((m - 1) * c_rs + n <= c.len(), "product: C too short");
    assert!(k == 0 || (m - 1) * a_rs + (k - 1) * a_cs < a.len(), "product: A too short");
    assert!(k == 0 || (k - 1) * b_rs + (n - 1) * b_cs < b.len(), "product: B too short");
    let threads = rayon::current_num_threads();
    let (c, a, b) = (Shared(c.as_mut_ptr()), Shared(a.as_ptr()), Shared(b.as_ptr()));
    // SAFETY: every index read or written is bounded by the asserts above; each panel writes
    // its own rows or columns of C, which is borrowed mutably for the whole call.
    let panel = |i0: usize, i1: usize, j0: usize, j1: usize| unsafe {
        serial(
            isa,
            (i1 - i0, j1 - j0, k),
            (c.get().add(i0 * c_rs + j0), c_rs),
            (a.get().wrapping_add(i0 * a_rs), a_rs, a_cs),
            (b.get().wrapping_add(j0 * b_cs), b_rs, b_cs),
            accumulate,
        )
    };
    if threads == 1 || m * n * k < PARALLEL_MACS {
        panel(0, m, 0, n);
        return;
    }
    let (long, along_n, unit) = if n >= m { (n, true, isa.nr()) } else { (m, false, isa.mr()) };
    let step = long.div_ceil(threads).next_multiple_of(unit).min(long);
    (0..long.div_ceil(step)).into_par_iter().for_each(|p| {
        let (s0, s1) = (p * step, ((p + 1) * step).min(long));
        if along_n { panel(0, m, s0, s1) } else { panel(s0, s1, 0, n) }
    });
}

/// A base pointer shared by the tasks of one kernel, which write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct Shared<P: Copy>(pub P);

impl<P: Copy> Shared<P> {
    /// Through a method, so that a closure captures the wrapper, not the bare pointer.
    pub fn get(self) -> P {
        self.0
    }
}

// SAFETY: the users of `Shared` only read through it what is not written during the call, and
// their tasks write disjoint elements of a buffer the call holds mutably.
unsafe impl<P: Copy> Send for Shared<P> {}
unsafe impl<P: Copy> Sync for Shared<P> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        ars: usize,
        acs: usize,
        b: &[f32],
        brs: usize,
        bcs: usize,
    ) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    c[i * n + j] += a[i * ars + p * acs] as f64 * b[p * brs + j * bcs] as f64;
                }
            }
        }
        c
    }

    #[test]
    fn every_isa_matches_a_plain_loop() {
        let mut seed = 1u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for isa in Isa::available() {
            for &(m, n, k) in &[(1, 1, 1), (7, 33, 5), (9, 17, 300), (33, 65, 257), (100, 1030, 40)] {
                for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
                    let a: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| rnd()).collect();
                    let (ars, acs) = if ta { (1, m) } else { (k, 1) };
                    let (brs, bcs) = if tb { (1, k) } else { (n, 1) };
                    let want = naive(m, n, k, &a, ars, acs, &b, brs, bcs);
                    for accumulate in [false, true] {
                        let mut c: Vec<f32> = (0..m * n).map(|i| i as f32 * 0.01).collect();
                        let before = c.clone();
                        product(isa, &mut c, n, (&a, ars, acs), (&b, brs, bcs), m, n, k, accumulate);
                        for i in 0..m * n {
                            let w = want[i] + if accumulate { before[i] as f64 } else { 0.0 };
                            let tol = 1e-5 + 1e-5 * (k as f64).sqrt() * (1.0 + w.abs());
                            assert!(
                                (c[i] as f64 - w).abs() <= tol,
                                "{isa:?} {m}x{n}x{k} ta={ta} tb={tb} acc={accumulate} [{i}]: {} vs {w}",
                                c[i]
                            );
                        }
                    }
                }
            }
        }
    }
}
