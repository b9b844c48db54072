//! CPU twins of the GPU kernels: same names, same argument order, plain loops. They are the
//! oracle of the kernel tests and of `rnn-gpu verify`, and building blocks of the CPU device.

use crate::cell::{self, CellMath, Exact};
use crate::host::{StepBackward, StepForward};
use crate::ops::{Attention, CopyCols, Dropout, Gather, Matmul, Reduce, Step, StepMode, step_state};
use crate::real::Real;
use crate::rng::hash_uniform;

/// `c = op(a)·op(b)` (or `+=`).
pub fn matmul<T: Real>(c: &mut [T], a: &[T], b: &[T], p: Matmul) {
    let Matmul { m, n, k, trans_a, trans_b, accumulate } = p;
    assert_eq!(c.len(), m * n, "matmul: C");
    assert_eq!(a.len(), m * k, "matmul: A");
    assert_eq!(b.len(), k * n, "matmul: B");
    if !accumulate {
        c.fill(T::ZERO);
    }
    // i-k-j order: the inner loop walks rows of B and C contiguously when B is not transposed.
    for i in 0..m {
        let crow = &mut c[i * n..(i + 1) * n];
        for kk in 0..k {
            let aik = if trans_a { a[kk * m + i] } else { a[i * k + kk] };
            if trans_b {
                for (j, cj) in crow.iter_mut().enumerate() {
                    *cj += aik * b[j * k + kk];
                }
            } else {
                let brow = &b[kk * n..(kk + 1) * n];
                for (cj, &bj) in crow.iter_mut().zip(brow) {
                    *cj += aik * bj;
                }
            }
        }
    }
}

pub fn tanh_forward<T: Real>(y: &mut [T], x: &[T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x.tanh();
    }
}

pub fn tanh_backward<T: Real>(dx: &mut [T], y: &[T], dy: &[T]) {
    for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
        *dx += dy * (T::ONE - y * y);
    }
}

pub fn add_bias<T: Real>(y: &mut [T], bias: &[T], rows: usize, cols: usize) {
    for r in 0..rows {
        for j in 0..cols {
            y[r * cols + j] += bias[j];
        }
    }
}

pub fn bias_grad<T: Real>(db: &mut [T], dy: &[T], rows: usize, cols: usize) {
    for (j, db) in db.iter_mut().enumerate().take(cols) {
        let mut s = T::ZERO;
        for r in 0..rows {
            s += dy[r * cols + j];
        }
        *db += s;
    }
}

/// `out[index] (+)= sum(x)` or the sum of squares. (The GPU's scratch buffer has no twin.)
pub fn reduce<T: Real>(out: &mut [T], x: &[T], p: Reduce) {
    let s: T = if p.square { x.iter().map(|&v| v * v).sum() } else { x.iter().copied().sum() };
    if p.accumulate {
        out[p.index] += s;
    } else {
        out[p.index] = s;
    }
}

fn row_max<T: Real>(row: &[T]) -> T {
    row.iter().copied().fold(row[0], |m, v| m.max(v))
}

pub fn softmax_rows<T: Real>(y: &mut [T], x: &[T], rows: usize, cols: usize) {
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let m = row_max(row);
        let s: T = row.iter().map(|&v| (v - m).exp()).sum();
        for j in 0..cols {
            y[r * cols + j] = (row[j] - m).exp() / s;
        }
    }
}

/// What a loss over rows writes, and the row weights it reads: `loss[r]`, row r's weighted loss,
/// and `dx`, its gradient `[rows, cols]` (zero for a row of weight 0).
pub struct RowLoss<'a, T> {
    pub loss: &'a mut [T],
    pub dx: &'a mut [T],
    pub weights: &'a [T],
    pub rows: usize,
    pub cols: usize,
}

pub fn softmax_xent<T: Real>(out: RowLoss<'_, T>, logits: &[T], targets: &[u32]) {
    let RowLoss { loss, dx, weights, rows, cols } = out;
    for r in 0..rows {
        let w = weights[r];
        let row = &logits[r * cols..(r + 1) * cols];
        let drow = &mut dx[r * cols..(r + 1) * cols];
        if w == T::ZERO {
            loss[r] = T::ZERO;
            drow.fill(T::ZERO);
            continue;
        }
        let t = targets[r] as usize;
        let m = row_max(row);
        let s: T = row.iter().map(|&v| (v - m).exp()).sum();
        loss[r] = w * (m + s.ln() - row[t]);
        for j in 0..cols {
            let p = (row[j] - m).exp() / s;
            drow[j] = w * (p - if j == t { T::ONE } else { T::ZERO });
        }
    }
}

pub fn mse<T: Real>(out: RowLoss<'_, T>, pred: &[T], target: &[T]) {
    let RowLoss { loss, dx, weights, rows, cols } = out;
    let two = T::from_f64(2.0);
    for r in 0..rows {
        let w = weights[r];
        let mut s = T::ZERO;
        for j in 0..cols {
            let i = r * cols + j;
            let d = pred[i] - target[i];
            s += d * d;
            dx[i] = two * w * d;
        }
        loss[r] = w * s;
    }
}

/// The squared norm of `grads` into `state`, then [`decide_step`].
pub fn finalize_step<T: Real>(state: &mut [T], grads: &[T], max_norm: T) {
    reduce(state, grads, step_state::GRAD_NORM_SQUARED);
    decide_step(state, max_norm);
}

/// The step's decision from the loss and the squared gradient norm in `state`: finite or not
/// (the optimizers skip a non-finite step), and the clipping scale for `max_norm` (0: none),
/// PyTorch's clip_grad_norm_, which the optimizers apply to the gradient.
pub fn decide_step<T: Real>(state: &mut [T], max_norm: T) {
    use step_state::*;
    let sumsq = state[GRAD_SUMSQ];
    let norm = sumsq.sqrt();
    let ok = state[LOSS].is_finite() && sumsq.is_finite();
    state[GRAD_NORM] = norm;
    state[CLIP_SCALE] =
        if max_norm > T::ZERO && norm > max_norm { max_norm / (norm + T::from_f64(1e-6)) } else { T::ONE };
    if ok {
        state[OK] = T::ONE;
        state[STEP] += T::ONE;
    } else {
        state[OK] = T::ZERO;
        state[SKIPPED] += T::ONE;
    }
}

/// Clamps each element to `[lo, hi]`. Non-finite elements stay as they are, so that the
/// finiteness guard after it (`finalize_step`) still refuses the step.
pub fn clip_by_value<T: Real>(grad: &mut [T], lo: T, hi: T) {
    for g in grad.iter_mut().filter(|g| g.is_finite()) {
        *g = g.max(lo).min(hi);
    }
}

pub fn gather<T: Real>(out: &mut [T], table: &[T], idx: &[u32], p: Gather) {
    for i in 0..p.n {
        for j in 0..p.width {
            out[i * p.width + j] = table[idx[i] as usize * p.idx_stride + j * p.col_stride];
        }
    }
}

pub fn scatter_add<T: Real>(dtable: &mut [T], dout: &[T], starts: &[u32], rows: &[u32], p: Gather) {
    for v in 0..p.n {
        for j in 0..p.width {
            let mut s = T::ZERO;
            for &r in &rows[starts[v] as usize..starts[v + 1] as usize] {
                s += dout[r as usize * p.width + j];
            }
            dtable[v * p.idx_stride + j * p.col_stride] += s;
        }
    }
}

/// The inverted-dropout factor of element `i`: 0, or `1 / (1 - prob)` for a kept element.
pub fn dropout_scale(seed: u32, p: Dropout, i: usize) -> f32 {
    if hash_uniform(seed ^ p.salt, i as u32) >= p.prob { 1.0 / (1.0 - p.prob) } else { 0.0 }
}

pub fn dropout_forward<T: Real>(out: &mut [T], x: &[T], seeds: &[u32], p: Dropout) {
    for i in 0..out.len() {
        out[i] = x[i] * T::from_f32(dropout_scale(seeds[0], p, i));
    }
}

pub fn dropout_backward<T: Real>(dx: &mut [T], dy: &[T], seeds: &[u32], p: Dropout) {
    for i in 0..dx.len() {
        dx[i] += dy[i] * T::from_f32(dropout_scale(seeds[0], p, i));
    }
}

// ---------------------------------------------------------------------------------------------
// The fused recurrent steps: the same buffers, the same layout (shaders/step_common.wgsl), the
// cell equations written out per (batch row, hidden unit).

fn slot_row(s: &Step, slot: usize, b: usize) -> usize {
    s.state_base + (slot * s.batch + b) * s.hidden
}

fn out_index(s: &Step, b: usize, j: usize) -> usize {
    (s.t * s.batch + b) * s.out_stride + s.out_col + j
}

/// `W_hh[row, :] · h`
fn dot_row<T: Real>(w_hh: &[T], row: usize, h: &[T]) -> T {
    let n = h.len();
    w_hh[row * n..(row + 1) * n].iter().zip(h).map(|(&w, &x)| w * x).sum()
}

/// The gradient reaching unit j of row b through W_hh from step `next_t`'s gate gradients `dgr`
/// (G*H per row): `sum_g dgr[next_t, b, g] * W_hh[g, j]`.
fn recurrent_grad<T: Real>(s: &Step, dgr: &[T], w_hh: &[T], g_rows: usize, b: usize, j: usize) -> T {
    if s.mode == StepMode::First {
        return T::ZERO;
    }
    let base = (s.next_t * s.batch + b) * g_rows;
    (0..g_rows).map(|g| dgr[base + g] * w_hh[g * s.hidden + j]).sum()
}

/// The fused forward step of `cell` at time `s.t`, the recurrent products by plain loops, the
/// unit's arithmetic the cell's own (`CellMath`, exact activations).
pub(crate) fn step_forward<T: Real, C: CellMath>(cell: C, mut f: StepForward<'_, T>, s: Step) {
    let (h, g) = (s.hidden, C::SHAPE.gates);
    for b in 0..s.batch {
        let (src, dst) = (slot_row(&s, s.in_slot, b), slot_row(&s, s.out_slot, b));
        let h_prev: Vec<T> = f.states[src..src + h].to_vec();
        let row = (s.t * s.batch + b) * g * h;
        let saved_row = (s.t * s.batch + b) * C::SHAPE.saved * h;
        let valid = s.t < f.lengths[b] as usize;
        for j in 0..h {
            let c_prev = f.cells.as_ref().map_or(T::ZERO, |c| c[src + j]);
            let mut u = cell::Forward { h_prev: h_prev[j], c_prev, ..Default::default() };
            for k in 0..g {
                u.x[k] = f.xw[row + k * h + j];
                u.b_ih[k] = f.bias[k * h + j];
                u.p[k] = dot_row(f.w_hh, k * h + j, &h_prev);
                u.b_hh[k] = f.bias[s.bias_hh + k * h + j];
            }
            let o = cell.forward::<T, Exact>(&u);
            if let Some(gates) = f.gates.as_deref_mut() {
                for k in 0..C::SHAPE.saved {
                    gates[saved_row + k * h + j] = o.saved[k];
                }
            }
            let (hv, c, out) = if valid { (o.h, o.c, o.h) } else { (h_prev[j], c_prev, T::ZERO) };
            f.states[dst + j] = hv;
            if let Some(cells) = f.cells.as_deref_mut() {
                cells[dst + j] = c;
            }
            f.y[out_index(&s, b, j)] = out;
        }
    }
}

/// The fused backward step of `cell` at time `s.t` (in `StepMode::Initial`, only the gradient
/// reaching the initial state through W_hh), as `step_forward`.
pub(crate) fn step_backward<T: Real, C: CellMath>(cell: C, mut a: StepBackward<'_, T>, s: Step) {
    let (h, g) = (s.hidden, C::SHAPE.gates);
    let bh = s.batch * h;
    let dgr: &[T] = match &a.dgh {
        Some(dgh) => dgh,
        None => a.dg,
    };
    let rec: Vec<T> = (0..s.batch)
        .flat_map(|b| (0..h).map(move |j| (b, j)))
        .map(|(b, j)| recurrent_grad(&s, dgr, a.w_hh, g * h, b, j))
        .collect();
    for b in 0..s.batch {
        let row = (s.t * s.batch + b) * g * h;
        let saved_row = (s.t * s.batch + b) * C::SHAPE.saved * h;
        let (src, dst) = (slot_row(&s, s.in_slot, b), slot_row(&s, s.out_slot, b));
        for j in 0..h {
            let ci = b * h + j;
            if s.mode == StepMode::Initial || s.t >= a.lengths[b] as usize {
                a.carry[ci] += rec[ci];
                if s.mode != StepMode::Initial {
                    for k in 0..g {
                        a.dg[row + k * h + j] = T::ZERO;
                        if let Some(dgh) = a.dgh.as_deref_mut() {
                            dgh[row + k * h + j] = T::ZERO;
                        }
                    }
                }
                continue;
            }
            let mut u = cell::Backward {
                h: if C::SHAPE.reads_h { a.states[dst + j] } else { T::ZERO },
                h_prev: if C::SHAPE.reads_h_prev { a.states[src + j] } else { T::ZERO },
                dh: rec[ci] + a.carry[ci] + a.dy[out_index(&s, b, j)],
                dc: a.carry[bh + ci],
                ..Default::default()
            };
            if let Some(cells) = a.cells {
                (u.c, u.c_prev) = (cells[dst + j], cells[src + j]);
            }
            if let Some(gates) = a.gates {
                for k in 0..C::SHAPE.saved {
                    u.saved[k] = gates[saved_row + k * h + j];
                }
            }
            let r = cell.backward::<T, Exact>(&u);
            for k in 0..g {
                a.dg[row + k * h + j] = r.dx[k];
                if let Some(dgh) = a.dgh.as_deref_mut() {
                    dgh[row + k * h + j] = r.dr[k];
                }
            }
            a.carry[ci] = r.carry_h;
            if C::SHAPE.cell_state {
                a.carry[bh + ci] = r.carry_c;
            }
        }
    }
}

pub fn copy_cols<T: Real>(y: &mut [T], x: &[T], p: CopyCols) {
    for r in 0..p.rows {
        for c in 0..p.width {
            let v = x[r * p.x_stride + p.x_offset + c];
            let i = r * p.y_stride + p.y_offset + c;
            if p.accumulate {
                y[i] += v;
            } else {
                y[i] = v;
            }
        }
    }
}

pub fn attention_dots<T: Real>(out: &mut [T], x: &[T], enc: &[T], src_len: &[u32], a: Attention, mask: bool) {
    for t in 0..a.tgt {
        for b in 0..a.batch {
            for j in 0..a.src {
                let o = (t * a.batch + b) * a.src + j;
                if mask && j >= src_len[b] as usize {
                    out[o] = T::from_f64(-1e30);
                    continue;
                }
                let xa = (t * a.batch + b) * a.width;
                let ea = (j * a.batch + b) * a.width;
                out[o] = (0..a.width).map(|k| x[xa + k] * enc[ea + k]).sum();
            }
        }
    }
}

pub fn attention_mix<T: Real>(out: &mut [T], w: &[T], enc: &[T], a: Attention, accumulate: bool) {
    for t in 0..a.tgt {
        for b in 0..a.batch {
            let tb = t * a.batch + b;
            for k in 0..a.width {
                let s: T = (0..a.src).map(|j| w[tb * a.src + j] * enc[(j * a.batch + b) * a.width + k]).sum();
                let i = tb * a.width + k;
                out[i] = if accumulate { out[i] + s } else { s };
            }
        }
    }
}

pub fn attention_mix_t<T: Real>(out: &mut [T], w: &[T], x: &[T], a: Attention, accumulate: bool) {
    for j in 0..a.src {
        for b in 0..a.batch {
            for k in 0..a.width {
                let s: T = (0..a.tgt)
                    .map(|t| {
                        let tb = t * a.batch + b;
                        w[tb * a.src + j] * x[tb * a.width + k]
                    })
                    .sum();
                let i = (j * a.batch + b) * a.width + k;
                out[i] = if accumulate { out[i] + s } else { s };
            }
        }
    }
}

pub fn softmax_backward<T: Real>(dx: &mut [T], y: &[T], dy: &[T], rows: usize, cols: usize) {
    for r in 0..rows {
        let base = r * cols;
        let s: T = (0..cols).map(|j| y[base + j] * dy[base + j]).sum();
        for j in 0..cols {
            dx[base + j] = y[base + j] * (dy[base + j] - s);
        }
    }
}
