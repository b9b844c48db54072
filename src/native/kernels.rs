//! The native CPU kernels. Products go through the `gemm` crate; everything else is written so
//! that it vectorizes (no branch in an inner loop, transcendental functions as polynomials) and
//! split across the rayon pool by rows or chunks. Each kernel has the same contract as its
//! plain-loop twin in `reference::kernels`, which the tests check it against.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::host::{GruBackward, GruForward, LstmBackward, LstmForward, RnnBackward, RnnForward, StepKernels};
use crate::ops::{Attention, Dropout, Gather, Matmul, Reduce, Step, StepMode};
use crate::reference::kernels as twin;

/// Elements per parallel task of an elementwise kernel: below two of these, one thread is faster.
const CHUNK: usize = 1 << 14;

/// Multiply-adds below which a product runs on one thread: under this, the hand-off costs more
/// than the second thread saves.
const PARALLEL_MACS: usize = 1 << 18;

// ---------------------------------------------------------------------------------------------
// Products

/// `c[i * c_rs + j] (+)= sum_k a[i * a_rs + k * a_cs] * b[k * b_rs + j * b_cs]`, `[m, n]` by `k`.
#[allow(clippy::too_many_arguments)]
fn product(
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
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * c_rs..i * c_rs + n].fill(0.0);
            }
        }
        return;
    }
    // The raw pointers below must stay inside the slices: an engine bug, so a panic, not UB.
    assert!((m - 1) * c_rs + n <= c.len(), "product: C too short");
    assert!((m - 1) * a_rs + (k - 1) * a_cs < a.len(), "product: A too short");
    assert!((k - 1) * b_rs + (n - 1) * b_cs < b.len(), "product: B too short");
    let threads = rayon::current_num_threads();
    let (c, a, b) = (Shared(c.as_mut_ptr()), Shared(a.as_ptr()), Shared(b.as_ptr()));
    // SAFETY: every index gemm reads or writes is bounded by the asserts above; each panel writes
    // its own rows or columns of C, which is borrowed mutably for the whole call.
    let panel = |i0: usize, i1: usize, j0: usize, j1: usize| unsafe {
        gemm_one(
            (i1 - i0, j1 - j0, k),
            (c.get().add(i0 * c_rs + j0), c_rs),
            (a.get().add(i0 * a_rs), a_rs, a_cs),
            (b.get().add(j0 * b_cs), b_rs, b_cs),
            accumulate,
        )
    };
    if threads == 1 || m * n * k < PARALLEL_MACS {
        panel(0, m, 0, n);
        return;
    }
    // One panel per thread along the longer side of C, each product on one thread: measured on
    // the recurrence's shapes (B x 4H by H), 50 to 60 GFLOP/s on two cores where gemm's own
    // threading gives 15 to 50.
    let (long, along_n) = if n >= m { (n, true) } else { (m, false) };
    let step = long.div_ceil(threads).next_multiple_of(16).min(long);
    (0..long.div_ceil(step)).into_par_iter().for_each(|p| {
        let (s0, s1) = (p * step, ((p + 1) * step).min(long));
        if along_n { panel(0, m, s0, s1) } else { panel(s0, s1, 0, n) }
    });
}

/// A base pointer shared by the panels of one product, which write disjoint elements of C.
#[derive(Clone, Copy)]
struct Shared<P: Copy>(P);

impl<P: Copy> Shared<P> {
    /// Through a method, so that a closure captures the wrapper, not the bare pointer.
    fn get(self) -> P {
        self.0
    }
}

// SAFETY: see `product`: A and B are only read while the call borrows them, and the panels write
// disjoint elements of C, which the call holds mutably.
unsafe impl<P: Copy> Send for Shared<P> {}
unsafe impl<P: Copy> Sync for Shared<P> {}

/// `C (+)= A·B` for `(m, n, k)` on this thread, each matrix as (pointer, row stride[, column
/// stride]); C's columns are contiguous. The one call into `gemm`.
///
/// # Safety
/// Every element read or written must be in bounds, and no other thread may touch the elements
/// of C written here.
unsafe fn gemm_one(
    (m, n, k): (usize, usize, usize),
    (c, c_rs): (*mut f32, usize),
    (a, a_rs, a_cs): (*const f32, usize, usize),
    (b, b_rs, b_cs): (*const f32, usize, usize),
    accumulate: bool,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            c_rs as isize,
            accumulate,
            a,
            a_cs as isize,
            a_rs as isize,
            b,
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

pub fn matmul(c: &mut [f32], a: &[f32], b: &[f32], p: Matmul) {
    let Matmul { m, n, k, trans_a, trans_b, accumulate } = p;
    let a_strides = if trans_a { (1, m) } else { (k, 1) };
    let b_strides = if trans_b { (1, k) } else { (n, 1) };
    product(c, n, (a, a_strides.0, a_strides.1), (b, b_strides.0, b_strides.1), m, n, k, accumulate);
}

// ---------------------------------------------------------------------------------------------
// Attention: one product per batch row (the rows of a batch interleave in the `[T, B, W]`
// layout, so each is a strided matrix), the batch rows split across the threads.

/// For each batch row `b` in parallel, `C_b (+)= A_b · B_b`, `(m, n, k)`: C, A and B given as
/// (buffer, offset of row b's first element per b, row stride, column stride).
#[allow(clippy::type_complexity)]
fn per_batch_products(
    batch: usize,
    (m, n, k): (usize, usize, usize),
    (c, c_b, c_rs): (&mut [f32], usize, usize),
    (a, a_b, a_rs, a_cs): (&[f32], usize, usize, usize),
    (b, b_b, b_rs, b_cs): (&[f32], usize, usize, usize),
    accumulate: bool,
) {
    if batch == 0 || m == 0 || n == 0 {
        return;
    }
    let last = batch - 1;
    if k == 0 {
        if !accumulate {
            for r in 0..batch {
                for i in 0..m {
                    c[r * c_b + i * c_rs..][..n].fill(0.0);
                }
            }
        }
        return;
    }
    // The raw pointers below must stay inside the slices: an engine bug, so a panic, not UB.
    assert!(last * c_b + (m - 1) * c_rs + n <= c.len(), "attention: C too short");
    assert!(last * a_b + (m - 1) * a_rs + (k - 1) * a_cs < a.len(), "attention: A too short");
    assert!(last * b_b + (k - 1) * b_rs + (n - 1) * b_cs < b.len(), "attention: B too short");
    assert!(c_b >= n && c_rs >= batch * n || batch == 1, "attention: batch rows of C overlap");
    let (c, a, b) = (Shared(c.as_mut_ptr()), Shared(a.as_ptr()), Shared(b.as_ptr()));
    (0..batch).into_par_iter().for_each(|r| {
        // SAFETY: bounded by the asserts above; batch row r writes only its own rows of C (row i
        // at r * c_b + i * c_rs, n wide), which no other batch row's do.
        unsafe {
            gemm_one(
                (m, n, k),
                (c.get().add(r * c_b), c_rs),
                (a.get().add(r * a_b), a_rs, a_cs),
                (b.get().add(r * b_b), b_rs, b_cs),
                accumulate,
            )
        }
    });
}

/// `out[t, b, j] = x[t, b, :] · enc[j, b, :]`, -1e30 past each row's source length when masked.
pub fn attention_dots(out: &mut [f32], x: &[f32], enc: &[f32], src_len: &[u32], a: Attention, mask: bool) {
    let (bw, bs) = (a.batch * a.width, a.batch * a.src);
    per_batch_products(
        a.batch,
        (a.tgt, a.src, a.width),
        (&mut *out, a.src, bs),
        (x, a.width, bw, 1),
        (enc, a.width, 1, bw),
        false,
    );
    if mask {
        for (i, row) in out[..a.tgt * bs].chunks_exact_mut(a.src).enumerate() {
            row[(src_len[i % a.batch] as usize).min(a.src)..].fill(-1e30);
        }
    }
}

/// `out[t, b, :] (+)= sum_j w[t, b, j] enc[j, b, :]`.
pub fn attention_mix(out: &mut [f32], w: &[f32], enc: &[f32], a: Attention, accumulate: bool) {
    let (bw, bs) = (a.batch * a.width, a.batch * a.src);
    per_batch_products(
        a.batch,
        (a.tgt, a.width, a.src),
        (out, a.width, bw),
        (w, a.src, bs, 1),
        (enc, a.width, bw, 1),
        accumulate,
    );
}

/// `out[j, b, :] (+)= sum_t w[t, b, j] x[t, b, :]`.
pub fn attention_mix_t(out: &mut [f32], w: &[f32], x: &[f32], a: Attention, accumulate: bool) {
    let (bw, bs) = (a.batch * a.width, a.batch * a.src);
    per_batch_products(
        a.batch,
        (a.src, a.width, a.tgt),
        (out, a.width, bw),
        (w, a.src, 1, bs),
        (x, a.width, bw, 1),
        accumulate,
    );
}

// ---------------------------------------------------------------------------------------------
// Functions that vectorize: exp by range reduction and Cephes' polynomial (about 1 ulp), and
// sigmoid and tanh from it.

#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Adding 1.5 * 2^23 rounds to an integer, which then sits in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut y = 1.987_569_1e-4f32;
    y = y * r + 1.398_199_9e-3;
    y = y * r + 8.333_452e-3;
    y = y * r + 4.166_579_6e-2;
    y = y * r + 1.666_666_5e-1;
    y = y * r + 0.5;
    let y = y * r * r + r + 1.0;
    let scale = f32::from_bits(((t.to_bits() as i32 - MAGIC.to_bits() as i32 + 127) << 23) as u32);
    y * scale
}

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let e = exp(-2.0 * x.abs());
    let big = ((1.0 - e) / (1.0 + e)).copysign(x);
    // Near zero 1 - e loses digits; the series is exact there to f32 precision.
    let x2 = x * x;
    let small = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 - x2 * (17.0 / 315.0))));
    if x.abs() < 0.04 { small } else { big }
}

// ---------------------------------------------------------------------------------------------
// Elementwise kernels: the twins, run on chunks in parallel.

fn chunked(n: usize) -> usize {
    if n < 2 * CHUNK { n.max(1) } else { CHUNK }
}

pub fn axpy(y: &mut [f32], x: &[f32], alpha: f32) {
    let c = chunked(y.len());
    y.par_chunks_mut(c).zip(x.par_chunks(c)).for_each(|(y, x)| twin::axpy(y, x, alpha));
}

pub fn scale(x: &mut [f32], alpha: f32) {
    let c = chunked(x.len());
    x.par_chunks_mut(c).for_each(|x| twin::scale(x, alpha));
}

pub fn clip_by_value(g: &mut [f32], lo: f32, hi: f32) {
    let c = chunked(g.len());
    g.par_chunks_mut(c).for_each(|g| twin::clip_by_value(g, lo, hi));
}

pub fn tanh_forward(y: &mut [f32], x: &[f32]) {
    let c = chunked(y.len());
    y.par_chunks_mut(c).zip(x.par_chunks(c)).for_each(|(y, x)| {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = tanh(x);
        }
    });
}

pub fn tanh_backward(dx: &mut [f32], y: &[f32], dy: &[f32]) {
    let c = chunked(dx.len());
    dx.par_chunks_mut(c)
        .zip(y.par_chunks(c))
        .zip(dy.par_chunks(c))
        .for_each(|((dx, y), dy)| twin::tanh_backward(dx, y, dy));
}

pub fn sgd(
    param: &mut [f32],
    grad: &[f32],
    momentum: Option<&mut [f32]>,
    state: &[f32],
    o: crate::train::optim::Sgd,
) {
    let c = chunked(param.len());
    match momentum {
        Some(m) => param
            .par_chunks_mut(c)
            .zip(grad.par_chunks(c))
            .zip(m.par_chunks_mut(c))
            .for_each(|((p, g), m)| twin::sgd(p, g, Some(m), state, o)),
        None => {
            param.par_chunks_mut(c).zip(grad.par_chunks(c)).for_each(|(p, g)| twin::sgd(p, g, None, state, o))
        }
    }
}

pub fn adagrad(
    param: &mut [f32],
    grad: &[f32],
    sum: &mut [f32],
    state: &[f32],
    o: crate::train::optim::Adagrad,
) {
    let c = chunked(param.len());
    param
        .par_chunks_mut(c)
        .zip(grad.par_chunks(c))
        .zip(sum.par_chunks_mut(c))
        .for_each(|((p, g), s)| twin::adagrad(p, g, s, state, o));
}

#[allow(clippy::too_many_arguments)]
pub fn adam(
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    state: &[f32],
    o: crate::train::optim::Adam,
) {
    let c = chunked(param.len());
    param
        .par_chunks_mut(c)
        .zip(grad.par_chunks(c))
        .zip(m.par_chunks_mut(c))
        .zip(v.par_chunks_mut(c))
        .for_each(|(((p, g), m), v)| twin::adam(p, g, m, v, state, o));
}

pub fn dropout_forward(out: &mut [f32], x: &[f32], seed: u32, p: Dropout) {
    let c = chunked(out.len());
    out.par_chunks_mut(c).zip(x.par_chunks(c)).enumerate().for_each(|(ci, (out, x))| {
        for (l, (o, &x)) in out.iter_mut().zip(x).enumerate() {
            *o = x * twin::dropout_scale(seed, p, ci * c + l);
        }
    });
}

pub fn dropout_backward(dx: &mut [f32], dy: &[f32], seed: u32, p: Dropout) {
    let c = chunked(dx.len());
    dx.par_chunks_mut(c).zip(dy.par_chunks(c)).enumerate().for_each(|(ci, (dx, dy))| {
        for (l, (d, &g)) in dx.iter_mut().zip(dy).enumerate() {
            *d += g * twin::dropout_scale(seed, p, ci * c + l);
        }
    });
}

/// A sum in eight lanes, so that it vectorizes.
fn lane_sum(x: &[f32], square: bool) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().map(|&v| if square { v * v } else { v }).sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += if square { c[l] * c[l] } else { c[l] };
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// The sum of fixed chunks, added in order: the same bits on every run, whatever the threads
/// do (a resumed run must repeat an unbroken one exactly). `partials` is scratch.
pub fn reduce(out: &mut [f32], x: &[f32], p: Reduce, partials: &mut Vec<f32>) {
    x.par_chunks(chunked(x.len())).map(|c| lane_sum(c, p.square)).collect_into_vec(partials);
    let s: f32 = partials.iter().sum();
    if p.accumulate {
        out[p.index] += s;
    } else {
        out[p.index] = s;
    }
}

// ---------------------------------------------------------------------------------------------
// Row kernels

/// Rows per parallel task for rows of `cols` elements.
fn row_block(rows: usize, cols: usize) -> usize {
    if rows * cols < 2 * CHUNK { rows.max(1) } else { (CHUNK / cols.max(1)).max(1) }
}

pub fn add_bias(y: &mut [f32], bias: &[f32], rows: usize, cols: usize) {
    if cols == 0 {
        return;
    }
    let r = row_block(rows, cols);
    y[..rows * cols].par_chunks_mut(r * cols).for_each(|block| {
        for row in block.chunks_exact_mut(cols) {
            for (v, &b) in row.iter_mut().zip(&bias[..cols]) {
                *v += b;
            }
        }
    });
}

/// `db[j] += sum_r dy[r, j]`: each task owns a block of columns and walks every row.
pub fn bias_grad(db: &mut [f32], dy: &[f32], rows: usize, cols: usize) {
    const COLS: usize = 64;
    db[..cols].par_chunks_mut(COLS).enumerate().for_each(|(ci, db)| {
        let c0 = ci * COLS;
        let mut acc = [0f32; COLS];
        let acc = &mut acc[..db.len()];
        for r in 0..rows {
            let row = &dy[r * cols + c0..r * cols + c0 + acc.len()];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
        for (d, a) in db.iter_mut().zip(acc.iter()) {
            *d += a;
        }
    });
}

#[allow(clippy::too_many_arguments)]
pub fn softmax_xent(
    loss: &mut [f32],
    dx: &mut [f32],
    logits: &[f32],
    targets: &[u32],
    weights: &[f32],
    rows: usize,
    cols: usize,
) {
    let r = row_block(rows, cols);
    loss[..rows].par_chunks_mut(r).zip(dx[..rows * cols].par_chunks_mut(r * cols)).enumerate().for_each(
        |(bi, (loss, dx))| {
            for (l, (lo, drow)) in loss.iter_mut().zip(dx.chunks_exact_mut(cols)).enumerate() {
                let row_i = bi * r + l;
                let w = weights[row_i];
                if w == 0.0 {
                    *lo = 0.0;
                    drow.fill(0.0);
                    continue;
                }
                let row = &logits[row_i * cols..(row_i + 1) * cols];
                let t = targets[row_i] as usize;
                let m = row.iter().copied().fold(row[0], f32::max);
                let mut s = 0.0;
                for (d, &v) in drow.iter_mut().zip(row) {
                    *d = exp(v - m);
                    s += *d;
                }
                *lo = w * (m + s.ln() - row[t]);
                let inv = w / s;
                for d in drow.iter_mut() {
                    *d *= inv;
                }
                drow[t] -= w;
            }
        },
    );
}

#[allow(clippy::too_many_arguments)]
pub fn mse(
    loss: &mut [f32],
    dx: &mut [f32],
    pred: &[f32],
    target: &[f32],
    weights: &[f32],
    rows: usize,
    cols: usize,
) {
    let r = row_block(rows, cols);
    let n = rows * cols;
    loss[..rows]
        .par_chunks_mut(r)
        .zip(dx[..n].par_chunks_mut(r * cols))
        .zip(pred[..n].par_chunks(r * cols))
        .zip(target[..n].par_chunks(r * cols))
        .zip(weights[..rows].par_chunks(r))
        .for_each(|((((l, d), p), t), w)| twin::mse(l, d, p, t, w, l.len(), cols));
}

pub fn softmax_rows(y: &mut [f32], x: &[f32], rows: usize, cols: usize) {
    let r = row_block(rows, cols) * cols;
    let n = rows * cols;
    y[..n]
        .par_chunks_mut(r)
        .zip(x[..n].par_chunks(r))
        .for_each(|(y, x)| twin::softmax_rows(y, x, y.len() / cols, cols));
}

pub fn softmax_backward(dx: &mut [f32], y: &[f32], dy: &[f32], rows: usize, cols: usize) {
    let r = row_block(rows, cols) * cols;
    let n = rows * cols;
    dx[..n]
        .par_chunks_mut(r)
        .zip(y[..n].par_chunks(r))
        .zip(dy[..n].par_chunks(r))
        .for_each(|((dx, y), dy)| twin::softmax_backward(dx, y, dy, dx.len() / cols, cols));
}

/// Rows of a table. A strided table (the columns of W_ih that one-hot input selects) is first
/// copied contiguous into `rows`, one row per id in use, so that each output row is one copy:
/// 2048x1024 from a 65-column table in a third of the strided loop's time.
pub fn gather(out: &mut [f32], table: &[f32], idx: &[u32], p: Gather, rows: &mut Vec<f32>) {
    if p.width == 0 || p.n == 0 {
        return;
    }
    let w = p.width;
    let (src, stride): (&[f32], usize) = if p.col_stride == 1 {
        (table, p.idx_stride)
    } else {
        let vocab = idx[..p.n].iter().max().map_or(0, |&m| m as usize + 1);
        if rows.len() < vocab * w {
            rows.resize(vocab * w, 0.0);
        }
        rows[..vocab * w].par_chunks_mut(w).enumerate().for_each(|(v, row)| {
            for (j, r) in row.iter_mut().enumerate() {
                *r = table[v * p.idx_stride + j * p.col_stride];
            }
        });
        (&rows[..vocab * w], w)
    };
    let r = row_block(p.n, w);
    out[..p.n * w].par_chunks_mut(r * w).zip(idx[..p.n].par_chunks(r)).for_each(|(out, idx)| {
        for (row, &i) in out.chunks_exact_mut(w).zip(idx) {
            let base = i as usize * stride;
            row.copy_from_slice(&src[base..base + w]);
        }
    });
}

/// The sums of each table row's gradient rows go to `sums` (scratch, `[n, width]`, in parallel),
/// then into the strided table.
pub fn scatter_add(
    dtable: &mut [f32],
    dout: &[f32],
    starts: &[u32],
    rows: &[u32],
    p: Gather,
    sums: &mut Vec<f32>,
) {
    if p.width == 0 || p.n == 0 {
        return;
    }
    let w = p.width;
    let sums = grow(sums, p.n * w);
    sums.par_chunks_mut(w).enumerate().for_each(|(v, acc)| {
        acc.fill(0.0);
        for &r in &rows[starts[v] as usize..starts[v + 1] as usize] {
            for (a, &g) in acc.iter_mut().zip(&dout[r as usize * w..(r as usize + 1) * w]) {
                *a += g;
            }
        }
    });
    for (v, acc) in sums.chunks_exact(w).enumerate() {
        for (j, &a) in acc.iter().enumerate() {
            dtable[v * p.idx_stride + j * p.col_stride] += a;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fused recurrent steps. Each is one product (the recurrent term, through gemm, into a
// scratch the size of one step), then one parallel pass over the batch rows doing the gate
// arithmetic and the state update; the layout is the reference's (shaders/step_common.wgsl).

/// Per-step scratch, grown on first use and reused: no allocation per step after warm-up.
#[derive(Debug, Default)]
pub struct Steps {
    pre: Vec<f32>,
    prev_h: Vec<f32>,
    prev_c: Vec<f32>,
}

fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Batch rows per parallel task: enough work per task to pay for the hand-off.
fn batch_block(hidden: usize) -> usize {
    (2048 / hidden.max(1)).max(1)
}

/// The rows of step `t` in a `[T, B, width]` buffer.
fn at_step(s: &Step, width: usize) -> std::ops::Range<usize> {
    s.t * s.batch * width..(s.t + 1) * s.batch * width
}

fn slot(s: &Step, slot: usize) -> std::ops::Range<usize> {
    let start = s.state_base + slot * s.batch * s.hidden;
    start..start + s.batch * s.hidden
}

/// `pre[b, :] = h_prev[b, :] · W_hhᵀ` for `W_hh` `[rows, H]`; returns `pre` `[B, rows]`.
fn recurrent<'a>(pre: &'a mut Vec<f32>, h_prev: &[f32], w_hh: &[f32], s: &Step, rows: usize) -> &'a [f32] {
    let pre = grow(pre, s.batch * rows);
    product(pre, rows, (h_prev, s.hidden, 1), (w_hh, 1, s.hidden), s.batch, rows, s.hidden, false);
    pre
}

/// The gradient reaching each state through W_hh from step `next_t`'s gate gradients `dgr`
/// (`[T, B, rows]`): `rec[b, :] = dgr[next_t, b, :] · W_hh`; zero for the first step.
fn recurrent_grad<'a>(rec: &'a mut Vec<f32>, dgr: &[f32], w_hh: &[f32], s: &Step, rows: usize) -> &'a [f32] {
    let rec = grow(rec, s.batch * s.hidden);
    if s.mode == StepMode::First {
        rec.fill(0.0);
    } else {
        let base = s.next_t * s.batch * rows;
        let dg_next = &dgr[base..base + s.batch * rows];
        product(rec, s.hidden, (dg_next, rows, 1), (w_hh, s.hidden, 1), s.batch, s.hidden, rows, false);
    }
    rec
}

/// `carry[b, :] += rec[b, :]`: the Initial mode, where only the gradient of the initial state is
/// left to form.
fn add_rec(carry: &mut [f32], rec: &[f32]) {
    for (c, &r) in carry.iter_mut().zip(rec) {
        *c += r;
    }
}

/// The `k`-th of the `h`-wide gate blocks of a row, exactly `h` long, so that a loop over `0..h`
/// indexes it without bounds checks and vectorizes.
#[inline(always)]
fn block(row: &[f32], k: usize, h: usize) -> &[f32] {
    &row[k * h..][..h]
}

/// A row's gate blocks, each exactly `h` long, to be written.
#[inline(always)]
fn blocks_mut<const G: usize>(row: &mut [f32], h: usize) -> [&mut [f32]; G] {
    let mut rest = &mut row[..G * h];
    std::array::from_fn(|_| {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(h);
        rest = tail;
        head
    })
}

/// `out[j] = f(x[j] + b1[j] + p[j] + b2[j])`, the pre-activation summed in the reference's order.
#[inline(always)]
fn gate(out: &mut [f32], x: &[f32], b1: &[f32], p: &[f32], b2: &[f32], f: impl Fn(f32) -> f32) {
    let n = out.len();
    let (x, b1, p, b2) = (&x[..n], &b1[..n], &p[..n], &b2[..n]);
    for j in 0..n {
        out[j] = f(x[j] + b1[j] + p[j] + b2[j]);
    }
}

impl StepKernels<f32> for Steps {
    fn lstm_forward(&mut self, f: LstmForward<'_, f32>, s: Step) {
        let h = s.hidden;
        let g4 = 4 * h;
        let (src, dst) = (slot(&s, s.in_slot), slot(&s, s.out_slot));
        grow(&mut self.prev_h, src.len()).copy_from_slice(&f.states[src.clone()]);
        grow(&mut self.prev_c, src.len()).copy_from_slice(&f.cells[src.clone()]);
        let pre = recurrent(&mut self.pre, &f.states[src.clone()], f.w_hh, &s, g4);
        let (prev_h, prev_c) = (&self.prev_h[..src.len()], &self.prev_c[..src.len()]);
        let (b_ih, b_hh) = (&f.bias[..g4], &f.bias[s.bias_hh..s.bias_hh + g4]);
        let xw = &f.xw[at_step(&s, g4)];
        let y_rows = at_step(&s, s.out_stride);
        let lengths = f.lengths;
        (
            f.states[dst.clone()].par_chunks_mut(h),
            f.cells[dst].par_chunks_mut(h),
            f.gates[at_step(&s, g4)].par_chunks_mut(g4),
            f.y[y_rows].par_chunks_mut(s.out_stride),
        )
            .into_par_iter()
            .enumerate()
            .with_min_len(batch_block(h))
            .for_each(|(b, (hs, cs, gates, y))| {
                let valid = s.t < lengths[b] as usize;
                let (x, p) = (&xw[b * g4..(b + 1) * g4], &pre[b * g4..(b + 1) * g4]);
                let (hp, cp) = (&prev_h[b * h..][..h], &prev_c[b * h..][..h]);
                let [gi, gf, gg, go] = blocks_mut::<4>(gates, h);
                let args = |k| (block(x, k, h), block(b_ih, k, h), block(p, k, h), block(b_hh, k, h));
                let (a, b1, q, b2) = args(0);
                gate(gi, a, b1, q, b2, sigmoid);
                let (a, b1, q, b2) = args(1);
                gate(gf, a, b1, q, b2, sigmoid);
                let (a, b1, q, b2) = args(2);
                gate(gg, a, b1, q, b2, tanh);
                let (a, b1, q, b2) = args(3);
                gate(go, a, b1, q, b2, sigmoid);
                let (hs, cs, out) = (&mut hs[..h], &mut cs[..h], &mut y[s.out_col..][..h]);
                if valid {
                    for j in 0..h {
                        let c = gf[j] * cp[j] + gi[j] * gg[j];
                        let hv = go[j] * tanh(c);
                        (cs[j], hs[j], out[j]) = (c, hv, hv);
                    }
                } else {
                    cs.copy_from_slice(cp);
                    hs.copy_from_slice(hp);
                    out.fill(0.0);
                }
            });
    }

    fn gru_forward(&mut self, f: GruForward<'_, f32>, s: Step) {
        let h = s.hidden;
        let (g3, g4) = (3 * h, 4 * h);
        let (src, dst) = (slot(&s, s.in_slot), slot(&s, s.out_slot));
        grow(&mut self.prev_h, src.len()).copy_from_slice(&f.states[src.clone()]);
        let pre = recurrent(&mut self.pre, &f.states[src.clone()], f.w_hh, &s, g3);
        let prev_h = &self.prev_h[..src.len()];
        let (b_ih, b_hh) = (&f.bias[..g3], &f.bias[s.bias_hh..s.bias_hh + g3]);
        let xw = &f.xw[at_step(&s, g3)];
        let y_rows = at_step(&s, s.out_stride);
        let lengths = f.lengths;
        (
            f.states[dst].par_chunks_mut(h),
            f.gates[at_step(&s, g4)].par_chunks_mut(g4),
            f.y[y_rows].par_chunks_mut(s.out_stride),
        )
            .into_par_iter()
            .enumerate()
            .with_min_len(batch_block(h))
            .for_each(|(b, (hs, gates, y))| {
                let valid = s.t < lengths[b] as usize;
                let (x, p) = (&xw[b * g3..(b + 1) * g3], &pre[b * g3..(b + 1) * g3]);
                let hp = &prev_h[b * h..][..h];
                let [gr, gz, gn, ghn] = blocks_mut::<4>(gates, h);
                // r and z as the reference sums them: (x + b_i) + (W_hh h + b_h).
                for (k, g) in [(0, &mut *gr), (1, &mut *gz)] {
                    let (xk, bik, pk, bhk) =
                        (block(x, k, h), block(b_ih, k, h), block(p, k, h), block(b_hh, k, h));
                    for j in 0..h {
                        g[j] = sigmoid(xk[j] + bik[j] + (pk[j] + bhk[j]));
                    }
                }
                let (pn, bn, xn, bin) =
                    (block(p, 2, h), block(b_hh, 2, h), block(x, 2, h), block(b_ih, 2, h));
                let (hs, out) = (&mut hs[..h], &mut y[s.out_col..][..h]);
                for j in 0..h {
                    let hn = pn[j] + bn[j];
                    let n = tanh(xn[j] + bin[j] + gr[j] * hn);
                    (gn[j], ghn[j]) = (n, hn);
                    let hv = (1.0 - gz[j]) * n + gz[j] * hp[j];
                    hs[j] = if valid { hv } else { hp[j] };
                    out[j] = if valid { hv } else { 0.0 };
                }
            });
    }

    fn rnn_forward(&mut self, f: RnnForward<'_, f32>, s: Step, relu: bool) {
        let h = s.hidden;
        let (src, dst) = (slot(&s, s.in_slot), slot(&s, s.out_slot));
        grow(&mut self.prev_h, src.len()).copy_from_slice(&f.states[src.clone()]);
        let pre = recurrent(&mut self.pre, &f.states[src.clone()], f.w_hh, &s, h);
        let prev_h = &self.prev_h[..src.len()];
        let (b_ih, b_hh) = (&f.bias[..h], &f.bias[s.bias_hh..s.bias_hh + h]);
        let xw = &f.xw[at_step(&s, h)];
        let y_rows = at_step(&s, s.out_stride);
        let lengths = f.lengths;
        (f.states[dst].par_chunks_mut(h), f.y[y_rows].par_chunks_mut(s.out_stride))
            .into_par_iter()
            .enumerate()
            .with_min_len(batch_block(h))
            .for_each(|(b, (hs, y))| {
                let valid = s.t < lengths[b] as usize;
                let (x, p) = (&xw[b * h..(b + 1) * h], &pre[b * h..(b + 1) * h]);
                let (x, p, hp) = (&x[..h], &p[..h], &prev_h[b * h..][..h]);
                let (hs, out, b_ih, b_hh) = (&mut hs[..h], &mut y[s.out_col..][..h], &b_ih[..h], &b_hh[..h]);
                for j in 0..h {
                    let a = x[j] + b_ih[j] + p[j] + b_hh[j];
                    let hv = if relu { a.max(0.0) } else { tanh(a) };
                    hs[j] = if valid { hv } else { hp[j] };
                    out[j] = if valid { hv } else { 0.0 };
                }
            });
    }

    fn lstm_backward(&mut self, a: LstmBackward<'_, f32>, s: Step) {
        let h = s.hidden;
        let g4 = 4 * h;
        let bh = s.batch * h;
        let rec = recurrent_grad(&mut self.pre, a.dg, a.w_hh, &s, g4);
        let (carry_h, carry_c) = a.carry.split_at_mut(bh);
        if s.mode == StepMode::Initial {
            add_rec(carry_h, rec);
            return;
        }
        let (cells_out, cells_in) = (&a.cells[slot(&s, s.out_slot)], &a.cells[slot(&s, s.in_slot)]);
        let gates = &a.gates[at_step(&s, g4)];
        let dy = &a.dy[at_step(&s, s.out_stride)];
        let lengths = a.lengths;
        (
            a.dg[at_step(&s, g4)].par_chunks_mut(g4),
            carry_h.par_chunks_mut(h),
            carry_c[..bh].par_chunks_mut(h),
        )
            .into_par_iter()
            .enumerate()
            .with_min_len(batch_block(h))
            .for_each(|(b, (dg, ch, cc))| {
                let rec = &rec[b * h..(b + 1) * h];
                if s.t >= lengths[b] as usize {
                    add_rec(ch, rec);
                    dg.fill(0.0);
                    return;
                }
                let g = &gates[b * g4..(b + 1) * g4];
                let (i, f, gg, o) = (block(g, 0, h), block(g, 1, h), block(g, 2, h), block(g, 3, h));
                let (c, c_prev) = (&cells_out[b * h..][..h], &cells_in[b * h..][..h]);
                let dy = &dy[b * s.out_stride + s.out_col..][..h];
                let [di, df, dgg, d_o] = blocks_mut::<4>(dg, h);
                let (rec, ch, cc) = (&rec[..h], &mut ch[..h], &mut cc[..h]);
                for j in 0..h {
                    let dh = rec[j] + ch[j] + dy[j];
                    let tc = tanh(c[j]);
                    let dc = dh * o[j] * (1.0 - tc * tc) + cc[j];
                    di[j] = dc * gg[j] * i[j] * (1.0 - i[j]);
                    df[j] = dc * c_prev[j] * f[j] * (1.0 - f[j]);
                    dgg[j] = dc * i[j] * (1.0 - gg[j] * gg[j]);
                    d_o[j] = dh * tc * o[j] * (1.0 - o[j]);
                    ch[j] = 0.0;
                    cc[j] = dc * f[j];
                }
            });
    }

    fn gru_backward(&mut self, a: GruBackward<'_, f32>, s: Step) {
        let h = s.hidden;
        let (g3, g4) = (3 * h, 4 * h);
        let rec = recurrent_grad(&mut self.pre, a.dgh, a.w_hh, &s, g3);
        let carry = &mut a.carry[..s.batch * h];
        if s.mode == StepMode::Initial {
            add_rec(carry, rec);
            return;
        }
        let prev = &a.states[slot(&s, s.in_slot)];
        let gates = &a.gates[at_step(&s, g4)];
        let dy = &a.dy[at_step(&s, s.out_stride)];
        let lengths = a.lengths;
        let dgh_rows = at_step(&s, g3);
        (
            a.dg[at_step(&s, g3)].par_chunks_mut(g3),
            a.dgh[dgh_rows].par_chunks_mut(g3),
            carry.par_chunks_mut(h),
        )
            .into_par_iter()
            .enumerate()
            .with_min_len(batch_block(h))
            .for_each(|(b, (dgx, dgh, ch))| {
                let rec = &rec[b * h..(b + 1) * h];
                if s.t >= lengths[b] as usize {
                    add_rec(ch, rec);
                    dgx.fill(0.0);
                    dgh.fill(0.0);
                    return;
                }
                let g = &gates[b * g4..(b + 1) * g4];
                let (r, z, n, hn) = (block(g, 0, h), block(g, 1, h), block(g, 2, h), block(g, 3, h));
                let hp = &prev[b * h..][..h];
                let dy = &dy[b * s.out_stride + s.out_col..][..h];
                let [dxr, dxz, dxn] = blocks_mut::<3>(dgx, h);
                let [dhr, dhz, dhn] = blocks_mut::<3>(dgh, h);
                let (rec, ch) = (&rec[..h], &mut ch[..h]);
                for j in 0..h {
                    let dh = rec[j] + ch[j] + dy[j];
                    let dn = dh * (1.0 - z[j]) * (1.0 - n[j] * n[j]);
                    let dz = dh * (hp[j] - n[j]) * z[j] * (1.0 - z[j]);
                    let dr = dn * hn[j] * r[j] * (1.0 - r[j]);
                    (dxr[j], dxz[j], dxn[j]) = (dr, dz, dn);
                    (dhr[j], dhz[j], dhn[j]) = (dr, dz, dn * r[j]);
                    ch[j] = dh * z[j];
                }
            });
    }

    fn rnn_backward(&mut self, a: RnnBackward<'_, f32>, s: Step, relu: bool) {
        let h = s.hidden;
        let rec = recurrent_grad(&mut self.pre, a.dg, a.w_hh, &s, h);
        let carry = &mut a.carry[..s.batch * h];
        if s.mode == StepMode::Initial {
            add_rec(carry, rec);
            return;
        }
        let out = &a.states[slot(&s, s.out_slot)];
        let dy = &a.dy[at_step(&s, s.out_stride)];
        let lengths = a.lengths;
        (a.dg[at_step(&s, h)].par_chunks_mut(h), carry.par_chunks_mut(h))
            .into_par_iter()
            .enumerate()
            .with_min_len(batch_block(h))
            .for_each(|(b, (dg, ch))| {
                let rec = &rec[b * h..(b + 1) * h];
                if s.t >= lengths[b] as usize {
                    add_rec(ch, rec);
                    dg.fill(0.0);
                    return;
                }
                let hv = &out[b * h..][..h];
                let dy = &dy[b * s.out_stride + s.out_col..][..h];
                let (rec, dg, ch) = (&rec[..h], &mut dg[..h], &mut ch[..h]);
                for j in 0..h {
                    let dh = rec[j] + ch[j] + dy[j];
                    dg[j] =
                        if relu { if hv[j] > 0.0 { dh } else { 0.0 } } else { dh * (1.0 - hv[j] * hv[j]) };
                    ch[j] = 0.0;
                }
            });
    }
}
