//! Descriptors shared by each GPU launcher (`gpu::kernels`) and its CPU twin (`cpu::kernels`):
//! one op name, one argument order, two implementations.

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
        Matmul {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            accumulate: false,
        }
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
    pub const LEN: usize = 8;
}
