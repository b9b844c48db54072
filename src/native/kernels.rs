//! The native CPU kernels but the fused steps (`steps`). Products go through `sgemm`; everything
//! else is written so that it vectorizes (no branch in an inner loop, transcendental functions as polynomials) and
//! split across the rayon pool by rows or chunks. Each kernel has the same contract as its
//! plain-loop twin in `reference::kernels`, which the tests check it against.

use rayon::prelude::*;

use crate::ops::{Attention, CopyCols, Dropout, Gather, Matmul, Reduce};
use crate::reference::kernels::{self as twin, RowLoss};
use crate::update::{MAX_SLOTS, Optimizer};

use super::sgemm::{self, Isa, Shared};

/// Elements per parallel task of an elementwise kernel: below two of these, one thread is faster.
const CHUNK: usize = 1 << 14;

// ---------------------------------------------------------------------------------------------
// Products (through `sgemm`, on the instruction set `isa`)

pub fn matmul(isa: Isa, c: &mut [f32], a: &[f32], b: &[f32], p: Matmul) {
    let Matmul { m, n, k, trans_a, trans_b, accumulate } = p;
    let a_strides = if trans_a { (1, m) } else { (k, 1) };
    let b_strides = if trans_b { (1, k) } else { (n, 1) };
    sgemm::product(
        isa,
        c,
        n,
        (a, a_strides.0, a_strides.1),
        (b, b_strides.0, b_strides.1),
        m,
        n,
        k,
        accumulate,
    );
}

// ---------------------------------------------------------------------------------------------
// Attention: one product per batch row (the rows of a batch interleave in the `[T, B, W]`
// layout, so each is a strided matrix), the batch rows split across the threads.

/// For each batch row `b` in parallel, `C_b (+)= A_b · B_b`, `(m, n, k)`: C, A and B given as
/// (buffer, offset of row b's first element per b, row stride, column stride).
#[allow(clippy::type_complexity)]
fn per_batch_products(
    isa: Isa,
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
            sgemm::serial(
                isa,
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
pub fn attention_dots(
    isa: Isa,
    out: &mut [f32],
    x: &[f32],
    enc: &[f32],
    src_len: &[u32],
    a: Attention,
    mask: bool,
) {
    let (bw, bs) = (a.batch * a.width, a.batch * a.src);
    per_batch_products(
        isa,
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

/// `out[t, b, :] (+)= sum_j w[t, b, j] x[j, b, :]`, or `transposed`:
/// `out[j, b, :] (+)= sum_t w[t, b, j] x[t, b, :]` (`Op::AttentionMix`).
pub fn attention_mix(
    isa: Isa,
    out: &mut [f32],
    w: &[f32],
    x: &[f32],
    a: Attention,
    accumulate: bool,
    transposed: bool,
) {
    let (bw, bs) = (a.batch * a.width, a.batch * a.src);
    // Per batch row: out (rows of out_steps) = w (or its transpose) · x.
    let (out_steps, sum_steps, w_strides) =
        if transposed { (a.src, a.tgt, (1, bs)) } else { (a.tgt, a.src, (bs, 1)) };
    per_batch_products(
        isa,
        a.batch,
        (out_steps, a.width, sum_steps),
        (out, a.width, bw),
        (w, a.src, w_strides.0, w_strides.1),
        (x, a.width, bw, 1),
        accumulate,
    );
}

// ---------------------------------------------------------------------------------------------
// Functions that vectorize: exp by range reduction and Cephes' polynomial (about 1 ulp), and
// sigmoid and tanh from it.

/// How a kernel compiled for one instruction set multiplies and adds: fused where it has FMA
/// (one rounding, one instruction), as a multiply and an add where not (`f32::mul_add` would
/// then be a library call).
pub trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// With FMA: only inside code compiled for an instruction set that has it.
pub enum Fused {}

pub enum Separate {}

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

#[inline(always)]
pub fn exp_by<M: MulAdd>(x: f32) -> f32 {
    // Adding 1.5 * 2^23 rounds to an integer, which then sits in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = M::mul_add(x, std::f32::consts::LOG2_E, MAGIC);
    let n = t - MAGIC;
    let r = M::mul_add(n, 2.121_944_4e-4, M::mul_add(n, -0.693_359_4, x));
    let mut y = 1.987_569_1e-4f32;
    y = M::mul_add(y, r, 1.398_199_9e-3);
    y = M::mul_add(y, r, 8.333_452e-3);
    y = M::mul_add(y, r, 4.166_579_6e-2);
    y = M::mul_add(y, r, 1.666_666_5e-1);
    y = M::mul_add(y, r, 0.5);
    let y = M::mul_add(y * r, r, r) + 1.0;
    let scale = f32::from_bits(((t.to_bits() as i32 - MAGIC.to_bits() as i32 + 127) << 23) as u32);
    y * scale
}

#[inline(always)]
pub fn sigmoid_by<M: MulAdd>(x: f32) -> f32 {
    1.0 / (1.0 + exp_by::<M>(-x))
}

#[inline(always)]
pub fn tanh_by<M: MulAdd>(x: f32) -> f32 {
    let e = exp_by::<M>(-2.0 * x.abs());
    let big = ((1.0 - e) / (1.0 + e)).copysign(x);
    // Near zero 1 - e loses digits; the series is exact there to f32 precision.
    let x2 = x * x;
    let small =
        x * M::mul_add(x2, M::mul_add(x2, M::mul_add(x2, -17.0 / 315.0, 2.0 / 15.0), -1.0 / 3.0), 1.0);
    if x.abs() < 0.04 { small } else { big }
}

/// The native device's activations: the polynomials above, with `M`'s multiply-add.
pub enum Fast<M> {
    _Of(std::marker::PhantomData<M>, std::convert::Infallible),
}

impl<M: MulAdd> crate::cell::Act<f32> for Fast<M> {
    #[inline(always)]
    fn sigmoid(x: f32) -> f32 {
        sigmoid_by::<M>(x)
    }

    #[inline(always)]
    fn tanh(x: f32) -> f32 {
        tanh_by::<M>(x)
    }
}

#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp_by::<Separate>(x)
}

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    sigmoid_by::<Separate>(x)
}

#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    tanh_by::<Separate>(x)
}

fn chunked(n: usize) -> usize {
    if n < 2 * CHUNK { n.max(1) } else { CHUNK }
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

/// The update rule on chunks of the parameters in parallel (each chunk as the rule's twin).
pub fn update(param: &mut [f32], grad: &[f32], slots: &mut [&mut [f32]], state: &[f32], rule: &Optimizer) {
    let c = chunked(param.len());
    assert!(
        slots.len() <= MAX_SLOTS && slots.iter().all(|s| s.len() == param.len()),
        "update: state buffers"
    );
    let bases: [Shared<*mut f32>; MAX_SLOTS] =
        std::array::from_fn(|k| Shared(slots.get_mut(k).map_or(std::ptr::null_mut(), |s| s.as_mut_ptr())));
    let n = slots.len();
    param.par_chunks_mut(c).zip(grad.par_chunks(c)).enumerate().for_each(|(i, (p, g))| {
        // SAFETY: chunk i of each slot buffer, which is as long as the parameters (asserted);
        // no other task touches it.
        let mut s: [&mut [f32]; MAX_SLOTS] = std::array::from_fn(|k| {
            if k < n {
                unsafe { std::slice::from_raw_parts_mut(bases[k].get().add(i * c), p.len()) }
            } else {
                &mut []
            }
        });
        rule.apply(p, g, &mut s[..n], state)
    });
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

pub fn softmax_xent(out: RowLoss<'_, f32>, logits: &[f32], targets: &[u32]) {
    let RowLoss { loss, dx, weights, rows, cols } = out;
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

pub fn mse(out: RowLoss<'_, f32>, pred: &[f32], target: &[f32]) {
    let RowLoss { loss, dx, weights, rows, cols } = out;
    let r = row_block(rows, cols);
    let n = rows * cols;
    loss[..rows]
        .par_chunks_mut(r)
        .zip(dx[..n].par_chunks_mut(r * cols))
        .zip(pred[..n].par_chunks(r * cols))
        .zip(target[..n].par_chunks(r * cols))
        .zip(weights[..rows].par_chunks(r))
        .for_each(|((((loss, dx), p), t), weights)| {
            twin::mse(RowLoss { rows: loss.len(), loss, dx, weights, cols }, p, t)
        });
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

/// The first `n` values of a scratch vector, grown on first use and kept.
fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// `y[r * y_stride + y_offset + c] (+)= x[r * x_stride + x_offset + c]`, rows in parallel when
/// each row's columns lie inside its own stride of y (then no two rows share an element).
pub fn copy_cols(y: &mut [f32], x: &[f32], p: CopyCols) {
    let row = |out: &mut [f32], r: usize| {
        let src = &x[r * p.x_stride + p.x_offset..][..p.width];
        if p.accumulate {
            for (o, &v) in out.iter_mut().zip(src) {
                *o += v;
            }
        } else {
            out.copy_from_slice(src);
        }
    };
    if p.rows * p.width < 2 * CHUNK || p.y_offset + p.width > p.y_stride {
        for r in 0..p.rows {
            row(&mut y[r * p.y_stride + p.y_offset..][..p.width], r);
        }
        return;
    }
    y.par_chunks_mut(p.y_stride)
        .take(p.rows)
        .enumerate()
        .with_min_len(CHUNK.div_ceil(p.width))
        .for_each(|(r, chunk)| row(&mut chunk[p.y_offset..][..p.width], r));
}
