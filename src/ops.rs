//! Descriptors shared by each GPU launcher (`gpu::kernels`) and its CPU twin (`reference::kernels`):
//! one op name, one argument order, two implementations.

/// Alignment, in 4-byte elements, of every buffer view a kernel binds (256 bytes: the largest
/// storage-offset alignment WebGPU allows), so of every tensor in the flat parameter buffer.
pub const ALIGN: usize = 64;

/// Rounds `n` up to a multiple of [`ALIGN`].
pub fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Lists, for each of `vocab` table rows, the positions of `idx` that read it (the `starts` and
/// `rows` of `scatter_add`). Ids must be below `vocab`.
pub fn index_lists(idx: &[u32], vocab: usize) -> (Vec<u32>, Vec<u32>) {
    let mut counts = vec![0u32; vocab + 1];
    for &v in idx {
        counts[v as usize + 1] += 1;
    }
    for v in 0..vocab {
        counts[v + 1] += counts[v];
    }
    let starts = counts.clone();
    let mut next = counts;
    let mut rows = vec![0u32; idx.len()];
    for (r, &v) in idx.iter().enumerate() {
        rows[next[v as usize] as usize] = r as u32;
        next[v as usize] += 1;
    }
    (starts, rows)
}

use crate::cell::Cell;
use crate::error::{Error, Result, check_nonzero};

/// `C = op(A)·op(B)` (or `C += ...` when `accumulate`), op(A) `[m, k]`, op(B) `[k, n]`, all
/// row-major. `trans_a`: A is stored `[k, m]`; `trans_b`: B is stored `[n, k]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matmul {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub accumulate: bool,
}

impl Matmul {
    pub fn new(m: usize, n: usize, k: usize) -> Matmul {
        Matmul { m, n, k, trans_a: false, trans_b: false, accumulate: false }
    }
    pub fn trans_a(mut self) -> Self {
        self.trans_a = true;
        self
    }
    pub fn trans_b(mut self) -> Self {
        self.trans_b = true;
        self
    }
    pub fn accumulate(mut self) -> Self {
        self.accumulate = true;
        self
    }
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

/// Row lookup: `out[i, j] = table[idx[i] * idx_stride + j * col_stride]` for `i < n`, `j < width`.
/// For `scatter_add`, `n` is the number of table rows that receive gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gather {
    pub n: usize,
    pub width: usize,
    pub idx_stride: usize,
    pub col_stride: usize,
}

/// Inverted dropout of probability `prob`; the mask of element i is drawn from
/// `hash_uniform(step_seed ^ salt, i)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    pub prob: f32,
    pub salt: u32,
}

/// Where `reduce` puts a sum: `out[index]`, written or added; `square` sums squares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reduce {
    pub index: usize,
    pub square: bool,
    pub accumulate: bool,
}

/// The step state: a few numbers the GPU keeps between the backward pass and the update, so that
/// the decision to apply a step needs no host round trip.
/// Indices must match shaders/optim.wgsl.
pub mod step_state {
    pub const LOSS: usize = 0;
    pub const GRAD_SUMSQ: usize = 1;
    pub const GRAD_NORM: usize = 2;
    pub const CLIP_SCALE: usize = 3;
    pub const OK: usize = 4;
    pub const STEP: usize = 5;
    pub const SKIPPED: usize = 6;
    /// The learning rate of the step, written by the host (a schedule needs no new program).
    pub const LR: usize = 7;
    pub const LEN: usize = 8;
    /// The sum that `finalize_step` leaves at GRAD_SUMSQ: the squared gradient norm.
    pub const GRAD_NORM_SQUARED: super::Reduce =
        super::Reduce { index: GRAD_SUMSQ, square: true, accumulate: false };
}

/// What a backward step kernel does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepMode {
    /// The first step processed backward: nothing reaches it through W_hh.
    First,
    /// A later step: the gate gradients of step `next_t` reach it through W_hh.
    Later,
    /// After the last step: adds the gradient reaching the initial state through W_hh to the
    /// carry, which then holds the gradient of the initial state.
    Initial,
}

/// One time step of one layer direction: where it reads and writes (see shaders/step_common.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub t: usize,
    pub batch: usize,
    pub hidden: usize,
    pub in_slot: usize,
    pub out_slot: usize,
    /// Element offset of slot 0 in the state buffers.
    pub state_base: usize,
    /// Columns of y and dy (D*H) and this direction's first column.
    pub out_stride: usize,
    pub out_col: usize,
    /// Offset of b_hh within the bias buffer.
    pub bias_hh: usize,
    pub next_t: usize,
    pub mode: StepMode,
}

impl Step {
    /// Step 0 of a one-direction layer of `hidden` units and `gates` gates: from slot 0 into
    /// slot 1, the outputs `[T, B, H]` its own, b_hh right after b_ih; backward, the first step
    /// processed.
    pub fn first(batch: usize, hidden: usize, gates: usize) -> Step {
        Step {
            t: 0,
            batch,
            hidden,
            in_slot: 0,
            out_slot: 1,
            state_base: 0,
            out_stride: hidden,
            out_col: 0,
            bias_hh: gates * hidden,
            next_t: 0,
            mode: StepMode::First,
        }
    }
}

/// `y[r * y_stride + y_offset + c] (+)= x[r * x_stride + x_offset + c]` for `r < rows`,
/// `c < width`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyCols {
    pub rows: usize,
    pub width: usize,
    pub y_stride: usize,
    pub y_offset: usize,
    pub x_stride: usize,
    pub x_offset: usize,
    pub accumulate: bool,
}

impl CopyCols {
    /// A `[rows, width]` matrix placed into columns `offset..offset + width` of a
    /// `[rows, wide]` one, or (`take`) those columns taken out of it into one.
    pub fn columns(rows: usize, wide: usize, (width, offset): (usize, usize), take: bool) -> CopyCols {
        let (part, own) = ((wide, offset), (width, 0));
        let ((y_stride, y_offset), (x_stride, x_offset)) = if take { (own, part) } else { (part, own) };
        CopyCols { rows, width, y_stride, y_offset, x_stride, x_offset, accumulate: false }
    }

    /// A plain copy of `n` elements between offsets.
    pub fn flat(n: usize, y_offset: usize, x_offset: usize, accumulate: bool) -> CopyCols {
        CopyCols { rows: 1, width: n, y_stride: n, y_offset, x_stride: n, x_offset, accumulate }
    }
}

/// Attention sizes: `tgt` decoder steps, `batch`, `src` encoder steps, `width` features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attention {
    pub tgt: usize,
    pub batch: usize,
    pub src: usize,
    pub width: usize,
}

/// The buffers of one fused step kernel; which are used depends on the cell.
pub struct StepBufs<'a, F, I> {
    pub states: &'a F,
    pub cells: Option<&'a F>,
    pub gates: Option<&'a F>,
    pub y: &'a F,
    pub xw: &'a F,
    /// Where given (the forward step of a token-input layer, on a device that reads the table,
    /// `Backend::STEPS_READ_INPUT_TABLE`): `xw` is the table of every token's projection
    /// `[V, G*H]` (`W_ihᵀ`), and row b of step t reads its row `xw_rows[t*B + b]` (the token).
    pub xw_rows: Option<&'a I>,
    pub w_hh: &'a F,
    /// When `w_hh` is a product `W_hh · W_hr` (a projected LSTM: `[G*H, P]` by `[P, H]`), its
    /// factors. A device may multiply by them in turn, `P·(G·H + H)` multiply-adds a batch row
    /// where the product takes `G·H·H` (the native device does); the others read `w_hh`.
    pub factors: Option<(&'a F, &'a F)>,
    pub bias: &'a F,
    pub lengths: &'a I,
    pub dy: Option<&'a F>,
    pub dg: Option<&'a F>,
    pub dgh: Option<&'a F>,
    pub carry: Option<&'a F>,
}

/// One op of the network, on float buffers `F` and u32 buffers `I`: outputs first, then inputs,
/// then the descriptor, as the kernels take them. Every device runs every op
/// (`Backend::run`), and `check` is the shape contract all of them enforce before they do; a
/// step that reads its input from a table runs only where `Backend::STEPS_READ_INPUT_TABLE`.
pub enum Op<'a, F, I> {
    /// `x = 0`.
    Clear {
        x: &'a F,
    },
    /// `dst = src`.
    Copy {
        dst: &'a F,
        src: &'a F,
    },
    /// `c (+)= op(a)·op(b)`, plus `bias` `[n]` on every row.
    Matmul {
        c: &'a F,
        a: &'a F,
        b: &'a F,
        bias: Option<&'a F>,
        p: Matmul,
    },
    /// `db[j] = Σ_r dy[r, j]` for `dy` `[rows, cols]` (accumulated), and the same into `db2`:
    /// b_ih's and b_hh's gradients of the RNN and LSTM in one kernel.
    BiasGrad {
        db: &'a F,
        db2: Option<&'a F>,
        dy: &'a F,
        rows: usize,
        cols: usize,
    },
    /// `y = tanh(x)`.
    TanhForward {
        y: &'a F,
        x: &'a F,
    },
    /// `dx = dy · (1 - y²)`.
    TanhBackward {
        dx: &'a F,
        y: &'a F,
        dy: &'a F,
    },
    Gather {
        out: &'a F,
        table: &'a F,
        idx: &'a I,
        p: Gather,
    },
    /// `gather`'s gradient: each table row gets the sum of the output rows that read it (`starts`
    /// and `rows` from `index_lists`).
    ScatterAdd {
        dtable: &'a F,
        dout: &'a F,
        starts: &'a I,
        rows: &'a I,
        p: Gather,
    },
    SoftmaxRows {
        y: &'a F,
        x: &'a F,
        rows: usize,
        cols: usize,
    },
    /// Per row: `loss = -weight·log softmax(logits)[target]`, `dx` its gradient.
    SoftmaxXent {
        loss: &'a F,
        dx: &'a F,
        logits: &'a F,
        targets: &'a I,
        weights: &'a F,
        rows: usize,
        cols: usize,
    },
    /// Per row: `loss = weight·Σ (pred - target)²`, `dx` its gradient.
    Mse {
        loss: &'a F,
        dx: &'a F,
        pred: &'a F,
        target: &'a F,
        weights: &'a F,
        rows: usize,
        cols: usize,
    },
    /// The softmax's gradient per row: `dx = y·(dy - Σ dy·y)`.
    SoftmaxBackward {
        dx: &'a F,
        y: &'a F,
        dy: &'a F,
        rows: usize,
        cols: usize,
    },
    Reduce {
        out: &'a F,
        x: &'a F,
        p: Reduce,
    },
    /// Inverted dropout (its gradient when `backward`).
    Dropout {
        out: &'a F,
        x: &'a F,
        seeds: &'a I,
        p: Dropout,
        backward: bool,
    },
    /// The squared norm of `grads` into the step state, then the step's decision: finite or not,
    /// and the clipping scale for `max_norm` (0: none), which the update rule applies.
    FinalizeStep {
        state: &'a F,
        grads: &'a F,
        max_norm: f32,
    },
    /// `grad = clamp(grad, lo, hi)`, non-finite values kept for the guard.
    ClipByValue {
        grad: &'a F,
        lo: f32,
        hi: f32,
    },
    /// The update rule on every parameter, with its state buffers.
    Update {
        param: &'a F,
        grad: &'a F,
        slots: &'a [&'a F],
        state: &'a F,
        rule: &'a crate::update::Optimizer,
    },
    CopyCols {
        y: &'a F,
        x: &'a F,
        p: CopyCols,
    },
    /// Attention scores `out[t, b, j] = x[t, b, :] · enc[j, b, :]`, -1e30 past each source's
    /// length when `mask`.
    AttentionDots {
        out: &'a F,
        x: &'a F,
        enc: &'a F,
        src_len: &'a I,
        a: Attention,
        mask: bool,
    },
    /// `out[t, b, :] (+)= Σ_j w[t, b, j] x[j, b, :]`, x the encoder's outputs (the context);
    /// or `transposed`, `out[j, b, :] (+)= Σ_t w[t, b, j] x[t, b, :]`, x target-side (the
    /// gradient of the encoder's outputs).
    AttentionMix {
        out: &'a F,
        w: &'a F,
        x: &'a F,
        a: Attention,
        accumulate: bool,
        transposed: bool,
    },
    /// One fused recurrent step of `cell`, forward or backward.
    Step {
        cell: Cell,
        bufs: StepBufs<'a, F, I>,
        s: Step,
        backward: bool,
    },
}

impl<F, I> Clone for StepBufs<'_, F, I> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F, I> Copy for StepBufs<'_, F, I> {}

impl<F, I> Op<'_, F, I> {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Clear { .. } => "clear",
            Op::Copy { .. } => "copy",
            Op::Matmul { .. } => "matmul",
            Op::BiasGrad { .. } => "bias_grad",
            Op::TanhForward { .. } => "tanh_forward",
            Op::TanhBackward { .. } => "tanh_backward",
            Op::Gather { .. } => "gather",
            Op::ScatterAdd { .. } => "scatter_add",
            Op::SoftmaxRows { .. } => "softmax_rows",
            Op::SoftmaxXent { .. } => "softmax_xent",
            Op::Mse { .. } => "mse",
            Op::SoftmaxBackward { .. } => "softmax_backward",
            Op::Reduce { .. } => "reduce",
            Op::Dropout { backward: false, .. } => "dropout_forward",
            Op::Dropout { backward: true, .. } => "dropout_backward",
            Op::FinalizeStep { .. } => "finalize_step",
            Op::ClipByValue { .. } => "clip_by_value",
            Op::Update { .. } => "update",
            Op::CopyCols { .. } => "copy_cols",
            Op::AttentionDots { .. } => "attention_dots",
            Op::AttentionMix { transposed: false, .. } => "attention_mix",
            Op::AttentionMix { transposed: true, .. } => "attention_mix_t",
            Op::Step { backward: false, .. } => "step_forward",
            Op::Step { backward: true, .. } => "step_backward",
        }
    }

    /// The shape contract of the op, the same on every device: each buffer holds what the op
    /// reads or writes, sizes are not zero, descriptors are in range. `len` and `ilen` give a
    /// buffer's elements.
    pub fn check(&self, len: impl Fn(&F) -> usize, ilen: impl Fn(&I) -> usize) -> Result<()> {
        let op = self.name();
        let exactly = |what: &str, got: usize, want: usize| {
            if got == want { Ok(()) } else { Err(Error::shape(op, what, &[got], &[want])) }
        };
        let at_least = |what: &str, got: usize, want: usize| {
            if got >= want { Ok(()) } else { Err(Error::shape(op, what, &[got], &[want])) }
        };
        let nonzero = |what: &str, v: usize| check_nonzero(op, what, v);
        match self {
            Op::Clear { .. } => Ok(()),
            Op::Copy { dst, src } => exactly("source", len(src), len(dst)),
            Op::Matmul { c, a, b, bias, p } => {
                nonzero("m", p.m)?;
                nonzero("n", p.n)?;
                nonzero("k", p.k)?;
                let a_shape = if p.trans_a { [p.k, p.m] } else { [p.m, p.k] };
                let b_shape = if p.trans_b { [p.n, p.k] } else { [p.k, p.n] };
                if len(a) != p.m * p.k {
                    return Err(Error::shape(op, "A", &[len(a)], &a_shape));
                }
                if len(b) != p.k * p.n {
                    return Err(Error::shape(op, "B", &[len(b)], &b_shape));
                }
                if len(c) != p.m * p.n {
                    return Err(Error::shape(op, "C", &[len(c)], &[p.m, p.n]));
                }
                bias.map_or(Ok(()), |bias| exactly("bias", len(bias), p.n))
            }
            Op::BiasGrad { db, db2, dy, rows, cols } => {
                nonzero("rows", *rows)?;
                nonzero("cols", *cols)?;
                exactly("db", len(db), *cols)?;
                exactly("dy", len(dy), rows * cols)?;
                db2.map_or(Ok(()), |db2| exactly("db2", len(db2), *cols))
            }
            Op::TanhForward { y, x } => exactly("x", len(x), len(y)),
            Op::TanhBackward { dx, y, dy } => {
                exactly("y", len(y), len(dx))?;
                exactly("dy", len(dy), len(dx))
            }
            Op::Gather { out, idx, p, .. } => {
                nonzero("n", p.n)?;
                nonzero("width", p.width)?;
                exactly("out", len(out), p.n * p.width)?;
                exactly("idx", ilen(idx), p.n)
            }
            Op::ScatterAdd { dout, starts, rows, p, .. } => {
                nonzero("n", p.n)?;
                nonzero("width", p.width)?;
                exactly("starts", ilen(starts), p.n + 1)?;
                exactly("dout", len(dout), ilen(rows) * p.width)
            }
            Op::SoftmaxRows { y, x, rows, cols } | Op::SoftmaxBackward { dx: y, y: x, rows, cols, .. } => {
                nonzero("rows", *rows)?;
                nonzero("cols", *cols)?;
                exactly("output", len(y), rows * cols)?;
                exactly("input", len(x), rows * cols)?;
                if let Op::SoftmaxBackward { dy, .. } = self {
                    exactly("dy", len(dy), rows * cols)?;
                }
                Ok(())
            }
            Op::SoftmaxXent { loss, dx, logits, targets, weights, rows, cols } => {
                nonzero("rows", *rows)?;
                nonzero("cols", *cols)?;
                exactly("loss", len(loss), *rows)?;
                exactly("dx", len(dx), rows * cols)?;
                exactly("logits", len(logits), rows * cols)?;
                exactly("targets", ilen(targets), *rows)?;
                exactly("weights", len(weights), *rows)
            }
            Op::Mse { loss, dx, pred, target, weights, rows, cols } => {
                nonzero("rows", *rows)?;
                nonzero("cols", *cols)?;
                exactly("loss", len(loss), *rows)?;
                exactly("dx", len(dx), rows * cols)?;
                exactly("pred", len(pred), rows * cols)?;
                exactly("target", len(target), rows * cols)?;
                exactly("weights", len(weights), *rows)
            }
            Op::Reduce { out, x, p } => {
                nonzero("x", len(x))?;
                if p.index >= len(out) {
                    return Err(Error::range(op, "index", p.index, format!("below {}", len(out))));
                }
                Ok(())
            }
            Op::Dropout { out, x, seeds, p, .. } => {
                if !(0.0..1.0).contains(&p.prob) {
                    return Err(Error::range(op, "dropout probability", p.prob, "in [0, 1)"));
                }
                exactly("input", len(x), len(out))?;
                at_least("seeds", ilen(seeds), 1)
            }
            Op::FinalizeStep { state, grads, max_norm } => {
                if !(*max_norm >= 0.0 && max_norm.is_finite()) {
                    return Err(Error::range(op, "max_norm", max_norm, "a finite number >= 0"));
                }
                nonzero("grads", len(grads))?;
                at_least("step state", len(state), step_state::LEN)
            }
            Op::ClipByValue { lo, hi, .. } => {
                // Written so that a NaN bound is refused too.
                #[allow(clippy::neg_cmp_op_on_partial_ord)]
                if !(lo <= hi) {
                    return Err(Error::invalid(op, format!("lo = {lo} must not exceed hi = {hi}")));
                }
                Ok(())
            }
            Op::Update { param, grad, slots, state, rule } => {
                let lens: Vec<usize> = slots.iter().map(|s| len(s)).collect();
                crate::update::check_buffers(rule, len(param), len(grad), &lens, len(state))
            }
            Op::CopyCols { y, x, p } => {
                nonzero("rows", p.rows)?;
                nonzero("width", p.width)?;
                let end = |stride: usize, offset: usize| (p.rows - 1) * stride + offset + p.width;
                at_least("y", len(y), end(p.y_stride, p.y_offset))?;
                at_least("x", len(x), end(p.x_stride, p.x_offset))
            }
            Op::AttentionDots { out, x, enc, src_len, a, .. } => {
                a.check(op)?;
                exactly("out", len(out), a.tgt * a.batch * a.src)?;
                exactly("x", len(x), a.tgt * a.batch * a.width)?;
                exactly("enc", len(enc), a.src * a.batch * a.width)?;
                exactly("src_len", ilen(src_len), a.batch)
            }
            Op::AttentionMix { out, w, x, a, transposed, .. } => {
                a.check(op)?;
                let (out_steps, x_steps) = if *transposed { (a.src, a.tgt) } else { (a.tgt, a.src) };
                exactly("out", len(out), out_steps * a.batch * a.width)?;
                exactly("w", len(w), a.tgt * a.batch * a.src)?;
                exactly("x", len(x), x_steps * a.batch * a.width)
            }
            Op::Step { cell, bufs, s, backward } => check_step(op, *cell, bufs, s, *backward, len, ilen),
        }
    }
}

/// The buffers of a fused step: present where the cell and direction use them, each long enough
/// for the step's rows (the kernels index them from the step's numbers).
fn check_step<F, I>(
    op: &'static str,
    cell: Cell,
    b: &StepBufs<'_, F, I>,
    s: &Step,
    backward: bool,
    len: impl Fn(&F) -> usize,
    ilen: impl Fn(&I) -> usize,
) -> Result<()> {
    let (h, batch) = (s.hidden, s.batch);
    let need = |what: &str, buf: Option<&F>, want: usize| match buf {
        None => Err(Error::invalid(op, format!("{} needs its {what} buffer", cell.name()))),
        Some(buf) if len(buf) < want => Err(Error::shape(op, what, &[len(buf)], &[want])),
        Some(_) => Ok(()),
    };
    let per_step =
        |what: &str, buf: Option<&F>, width: usize, t: usize| need(what, buf, (t + 1) * batch * width);
    check_nonzero(op, "batch", batch)?;
    check_nonzero(op, "hidden", h)?;
    let g = cell.gates();
    let states = s.state_base + (s.in_slot.max(s.out_slot) + 1) * batch * h;
    need("w_hh", Some(b.w_hh), g * h * h)?;
    if let Some((w_hh, w_hr)) = b.factors {
        let p = len(w_hr) / h;
        if p == 0 || p * h != len(w_hr) || len(w_hh) != g * h * p {
            return Err(Error::shape(
                op,
                "factors of w_hh",
                &[len(w_hh), len(w_hr)],
                &[g * h * p.max(1), p.max(1) * h],
            ));
        }
    }
    if ilen(b.lengths) != batch {
        return Err(Error::shape(op, "lengths", &[ilen(b.lengths)], &[batch]));
    }
    if s.out_col + h > s.out_stride {
        return Err(Error::range(
            op,
            "out_col",
            s.out_col,
            format!("at most {}", s.out_stride - h.min(s.out_stride)),
        ));
    }
    if cell.has_cell_state() {
        need("cells", b.cells, states)?;
    }
    // The forward step keeps its gates for the backward step only where it is given somewhere
    // to (training); the backward step reads them.
    if cell.saved() > 0 && (backward || b.gates.is_some()) {
        per_step("gates", b.gates, cell.saved() * h, s.t)?;
    }
    if !backward {
        need("states", Some(b.states), states)?;
        per_step("y", Some(b.y), s.out_stride, s.t)?;
        match b.xw_rows {
            None => per_step("xw", Some(b.xw), g * h, s.t)?,
            Some(rows) => {
                need("xw", Some(b.xw), g * h)?;
                if ilen(rows) < (s.t + 1) * batch {
                    return Err(Error::shape(op, "xw_rows", &[ilen(rows)], &[(s.t + 1) * batch]));
                }
            }
        }
        return need("bias", Some(b.bias), s.bias_hh + g * h);
    }
    if !cell.has_cell_state() {
        need("states", Some(b.states), states)?;
    }
    let last = s.t.max(s.next_t);
    per_step("dy", b.dy, s.out_stride, s.t)?;
    per_step("dg", b.dg, g * h, last)?;
    if cell.splits_recurrent_gradient() {
        per_step("dgh", b.dgh, g * h, last)?;
    }
    need("carry", b.carry, 2 * batch * h)
}

impl Attention {
    fn check(&self, op: &'static str) -> Result<()> {
        check_nonzero(op, "target steps", self.tgt)?;
        check_nonzero(op, "batch", self.batch)?;
        check_nonzero(op, "source steps", self.src)?;
        check_nonzero(op, "width", self.width)
    }
}
