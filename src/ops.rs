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

/// The recurrent cell of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cell {
    /// Elman RNN with tanh, or relu when `relu`.
    Rnn {
        relu: bool,
    },
    Lstm,
    Gru,
}

impl Cell {
    /// Gates per hidden unit: rows of `weight_ih` are `gates() * H`.
    pub fn gates(self) -> usize {
        match self {
            Cell::Rnn { .. } => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    /// Values per hidden unit the forward step keeps for the backward step (`gates` buffer).
    pub fn saved(self) -> usize {
        match self {
            Cell::Rnn { .. } => 0,
            Cell::Lstm | Cell::Gru => 4,
        }
    }

    pub fn has_cell_state(self) -> bool {
        self == Cell::Lstm
    }

    pub fn name(self) -> &'static str {
        match self {
            Cell::Rnn { relu: false } => "rnn_tanh",
            Cell::Rnn { relu: true } => "rnn_relu",
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
        }
    }

    pub fn from_name(name: &str) -> Option<Cell> {
        match name {
            "rnn" | "rnn_tanh" | "tanh" => Some(Cell::Rnn { relu: false }),
            "rnn_relu" | "relu" => Some(Cell::Rnn { relu: true }),
            "lstm" => Some(Cell::Lstm),
            "gru" => Some(Cell::Gru),
            _ => None,
        }
    }
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
