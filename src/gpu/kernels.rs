//! Launchers: one per WGSL entry point, named like it, arguments in the kernel's order (outputs,
//! then inputs, then a descriptor). Each checks its shapes, then appends a dispatch to a
//! `Program`. The CPU twin of each lives in `cpu::kernels` under the same name.

use bytemuck::{Pod, Zeroable};

use super::program::{Program, groups_1d};
use super::tensor::GpuTensor;
use crate::error::{Error, Result, check_nonzero};
use crate::ops::{Attention, Cell, CopyCols, Dropout, Gather, Matmul, Reduce, Step, StepMode, step_state};
use crate::update::{self, Optimizer};

const WG: usize = 256;

fn need(op: &'static str, what: &str, t: &GpuTensor, n: usize) -> Result<()> {
    if t.len() != n {
        return Err(Error::shape(op, what, t.shape(), &[n]));
    }
    Ok(())
}

fn to_u32(op: &'static str, what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::range(op, what, n, "at most 4294967295"))
}

// ---------------------------------------------------------------------------------------------
// matmul.wgsl

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MatmulParams {
    // must match shaders/matmul.wgsl::MatmulParams
    m: u32,
    n: u32,
    k: u32,
    accumulate: u32,
    k_chunk: u32,
    parts: u32,
    _pad: [u32; 2],
}

/// `c = op(a)·op(b)` (or `+=`).
pub fn matmul(prog: &mut Program, c: &GpuTensor, a: &GpuTensor, b: &GpuTensor, p: Matmul) -> Result<()> {
    matmul_bias(prog, c, a, b, None, p)
}

/// `c = op(a)·op(b) + bias` (or `+=`), `bias` (n) added to every row of C: the head's logits and
/// the input projections in one dispatch.
pub fn matmul_bias(
    prog: &mut Program,
    c: &GpuTensor, // (m, n)
    a: &GpuTensor, // (m, k) or (k, m)
    b: &GpuTensor, // (k, n) or (n, k)
    bias: Option<&GpuTensor>,
    p: Matmul,
) -> Result<()> {
    const OP: &str = "matmul";
    check_nonzero(OP, "m", p.m)?;
    check_nonzero(OP, "n", p.n)?;
    check_nonzero(OP, "k", p.k)?;
    let a_shape = if p.trans_a { [p.k, p.m] } else { [p.m, p.k] };
    let b_shape = if p.trans_b { [p.n, p.k] } else { [p.k, p.n] };
    if a.len() != p.m * p.k {
        return Err(Error::shape(OP, "A", a.shape(), &a_shape));
    }
    if b.len() != p.k * p.n {
        return Err(Error::shape(OP, "B", b.shape(), &b_shape));
    }
    if c.len() != p.m * p.n {
        return Err(Error::shape(OP, "C", c.shape(), &[p.m, p.n]));
    }
    if let Some(bias) = bias {
        need(OP, "bias", bias, p.n)?;
    }
    matmul_planned(prog, c, a, b, bias, MatmulPlan::new(&p))
}

/// `matmul_bias` as `plan` computes it (tests and benchmarks run every tile shape and split); the
/// shapes must have been checked. A split-K plan writes its parts to the program's scratch and
/// adds them in a second dispatch.
pub fn matmul_planned(
    prog: &mut Program,
    c: &GpuTensor,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    plan: MatmulPlan,
) -> Result<()> {
    const OP: &str = "matmul";
    let q = &plan.problem;
    let params = MatmulParams {
        m: to_u32(OP, "m", q.m)?,
        n: to_u32(OP, "n", q.n)?,
        k: to_u32(OP, "k", q.k)?,
        accumulate: q.accumulate as u32,
        k_chunk: to_u32(OP, "k_chunk", plan.k_chunk())?,
        parts: to_u32(OP, "parts", plan.parts)?,
        _pad: [0; 2],
    };
    let (a, b) = if plan.trans_c { (b, a) } else { (a, b) };
    let groups = plan.groups();
    let max = prog.ctx().limits().max_compute_workgroups_per_dimension as usize;
    if groups.iter().any(|&g| g > max) {
        return Err(Error::range(
            OP,
            "workgroups",
            format!("{groups:?}"),
            format!("at most {max} per dimension"),
        ));
    }
    let grid = [groups[0] as u32, groups[1] as u32, groups[2] as u32];
    // Without a bias the kernel's bias binding still needs a buffer; it reads none of it.
    let bias_arg = bias.unwrap_or(a);
    let constants = plan.constants(bias.is_some());
    if plan.parts == 1 {
        prog.dispatch(OP, "matmul", &constants, &[(1, c), (2, a), (3, b), (4, bias_arg)], &params, grid)?;
        prog.count_macs(plan.padded_macs() as u64);
        return Ok(());
    }
    let parts = prog.scratch(plan.parts * q.m * q.n)?;
    prog.dispatch(OP, "matmul", &constants, &[(1, &parts), (2, a), (3, b), (4, bias_arg)], &params, grid)?;
    prog.count_macs(plan.padded_macs() as u64);
    let sum_constants = [("TRANS_C", plan.trans_c as u64), ("BIAS", bias.is_some() as u64)];
    let groups = groups_1d(prog.ctx(), q.m * q.n, WG);
    prog.dispatch(
        OP,
        "matmul_sum_parts",
        &sum_constants,
        &[(1, c), (2, &parts), (4, bias_arg)],
        &params,
        groups,
    )
}

/// A tile shape of shaders/matmul.wgsl: 256 threads, each `per_thread` (rows, columns) of C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulTile {
    /// Rows and columns of C per workgroup.
    pub rows: usize,
    pub cols: usize,
    /// Rows and columns of C per thread (4 or 8).
    pub per_thread: (usize, usize),
}

impl MatmulTile {
    /// 128x128, 8x8 a thread: the most reuse per staged value, for large products.
    pub const LARGE: MatmulTile = MatmulTile { rows: 128, cols: 128, per_thread: (8, 8) };
    /// 64x64, 4x4 a thread: four times the workgroups of LARGE, for products that would leave
    /// a large GPU's cores idle with it.
    pub const MEDIUM: MatmulTile = MatmulTile { rows: 64, cols: 64, per_thread: (4, 4) };
    /// 32x128, 4x4 a thread: for a narrow side (the vocabulary's 65 logits as rows: 96 computed,
    /// where 64-row tiles would compute 128).
    pub const NARROW: MatmulTile = MatmulTile { rows: 32, cols: 128, per_thread: (4, 4) };
    pub const ALL: [MatmulTile; 3] = [MatmulTile::LARGE, MatmulTile::MEDIUM, MatmulTile::NARROW];

    /// Multiply-adds per staged value read from workgroup memory, relative to LARGE's: a thread
    /// reads TM + TN values for TM x TN multiply-adds.
    fn efficiency(&self) -> f64 {
        let (tm, tn) = self.per_thread;
        (tm * tn) as f64 / (tm + tn) as f64 / 4.0
    }
}

/// Workgroups a large GPU runs at once, two per SM on a 132-SM one: the plan's unit of a wave.
const WAVE: usize = 264;
/// The k slice the matmul kernel stages (shaders/matmul.wgsl::BK): a split-K part is a multiple.
const MATMUL_BK: usize = 8;
/// The least k of a split-K part: shorter parts would move more partial sums than they save, and
/// the forward products (k = the input or hidden size) stay one dispatch.
const MIN_K_CHUNK: usize = 256;
/// The most partial sums a split may keep (64 MiB, half WebGPU's default binding limit).
const MAX_PARTIALS: usize = 16 << 20;
/// Split-K part counts the planner tries.
const K_SPLITS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];
/// The plan's cost model, in multiply-adds of one workgroup slot (a large GPU runs WAVE slots at
/// about 64 G multiply-adds a second each): one f32 of a split's partials written or read
/// (about 3 TB/s for the whole GPU), and the extra dispatch of its sum (about 3 us).
const PARTIAL_COST: f64 = 0.1;
const DISPATCH_COST: f64 = 2e5;

/// How one matmul runs: the tile shape, the problem it computes and the split of k. For a narrow C
/// the kernel may compute Cᵀ = op(B)ᵀ·op(A)ᵀ and store it transposed (TRANS_C), so that the narrow
/// side runs along the tile's short one. A deep product with few outputs may split k into `parts`
/// (split-K), each its own workgroups, added afterwards in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulPlan {
    pub tile: MatmulTile,
    pub problem: Matmul,
    pub trans_c: bool,
    /// Split-K parts: 1 for none.
    pub parts: usize,
}

impl MatmulPlan {
    /// The plan for `p` of least estimated time ([`MatmulPlan::cost`]); ties go to the least
    /// padding, then to fewer parts.
    pub fn new(p: &Matmul) -> MatmulPlan {
        let mut best: Option<(f64, usize, MatmulPlan)> = None;
        for tile in MatmulTile::ALL {
            for trans_c in [false, true] {
                for split in K_SPLITS {
                    if split > 1 && (p.k.div_ceil(split) < MIN_K_CHUNK || p.m * p.n * split > MAX_PARTIALS) {
                        break;
                    }
                    let plan = MatmulPlan::forced(p, tile, trans_c, split);
                    let (time, padded) = (plan.cost(), plan.padded_macs());
                    if best.as_ref().is_none_or(|&(t, pad, _)| time < t || (time == t && padded < pad)) {
                        best = Some((time, padded, plan));
                    }
                }
            }
        }
        best.expect("a plan").2
    }

    /// The estimated time: waves of [`WAVE`] workgroups, each as long as one workgroup's
    /// multiply-adds over its tile's efficiency, plus a split's partials and its second dispatch.
    fn cost(&self) -> f64 {
        let [gx, gy, parts] = self.groups();
        let waves = (gx * gy * parts).div_ceil(WAVE);
        let t = self.tile;
        let wave = (t.rows * t.cols * self.k_chunk()) as f64 / t.efficiency();
        let mut time = waves as f64 * wave;
        if parts > 1 {
            let outputs = (self.problem.m * self.problem.n) as f64;
            time += outputs * (parts + 1) as f64 * PARTIAL_COST + DISPATCH_COST;
        }
        time
    }

    /// `p` in `tile`, computed as Cᵀ where `trans_c`, k split into at most `split` parts (each a
    /// whole number of staged slices; fewer when k is short).
    pub fn forced(p: &Matmul, tile: MatmulTile, trans_c: bool, split: usize) -> MatmulPlan {
        let problem = if trans_c {
            Matmul {
                m: p.n,
                n: p.m,
                k: p.k,
                trans_a: !p.trans_b,
                trans_b: !p.trans_a,
                accumulate: p.accumulate,
            }
        } else {
            *p
        };
        let chunk = p.k.div_ceil(split.max(1)).div_ceil(MATMUL_BK) * MATMUL_BK;
        MatmulPlan { tile, problem, trans_c, parts: p.k.div_ceil(chunk) }
    }

    /// Every kind of plan of `p` (tests and benchmarks run them all): each tile, direct and
    /// transposed, unsplit and split into 3 parts (the last one shorter).
    pub fn all(p: &Matmul) -> Vec<MatmulPlan> {
        let mut v = Vec::new();
        for tile in MatmulTile::ALL {
            for trans_c in [false, true] {
                for split in [1, 3] {
                    v.push(MatmulPlan::forced(p, tile, trans_c, split));
                }
            }
        }
        v.dedup();
        v
    }

    /// k of one split-K part (k itself when unsplit).
    pub fn k_chunk(&self) -> usize {
        self.problem.k.div_ceil(self.parts).div_ceil(MATMUL_BK) * MATMUL_BK
    }

    /// A name for the plan: the tile, `_as_ct` where it computes Cᵀ, `_split<parts>` where split.
    pub fn name(&self) -> String {
        let t = if self.trans_c { "_as_ct" } else { "" };
        let split = if self.parts > 1 { format!("_split{}", self.parts) } else { String::new() };
        format!("matmul_{}x{}{t}{split}", self.tile.rows, self.tile.cols)
    }

    /// Workgroups along C's columns, its rows, and the parts of k.
    pub fn groups(&self) -> [usize; 3] {
        [self.problem.n.div_ceil(self.tile.cols), self.problem.m.div_ceil(self.tile.rows), self.parts]
    }

    /// Multiply-adds the grid performs, its padding included.
    pub fn padded_macs(&self) -> usize {
        let [gx, gy, parts] = self.groups();
        gx * self.tile.cols * gy * self.tile.rows * parts * self.k_chunk()
    }

    /// The override constants of shaders/matmul.wgsl.
    fn constants(&self, bias: bool) -> [(&'static str, u64); 7] {
        let p = &self.problem;
        let (tm, tn) = self.tile.per_thread;
        [
            ("TRANS_A", p.trans_a as u64),
            ("TRANS_B", p.trans_b as u64),
            ("TRANS_C", self.trans_c as u64),
            ("BIAS", bias as u64),
            ("TILE_M", tm as u64),
            ("TILE_N", tn as u64),
            ("THREADS_X", (self.tile.cols / tn) as u64),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// activation.wgsl

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ElementwiseParams {
    // must match shaders/activation.wgsl::Params
    n: u32,
    _pad: [u32; 3],
}

fn activation(
    prog: &mut Program,
    entry: &'static str,
    out: &GpuTensor,
    x: &GpuTensor,
    dy: Option<&GpuTensor>,
) -> Result<()> {
    let n = out.len();
    need(entry, "input", x, n)?;
    let mut args = vec![(1, out), (2, x)];
    if let Some(dy) = dy {
        need(entry, "dy", dy, n)?;
        args.push((3, dy));
    }
    let params = ElementwiseParams { n: to_u32(entry, "n", n)?, _pad: [0; 3] };
    let groups = groups_1d(prog.ctx(), n, WG);
    prog.dispatch("activation", entry, &[], &args, &params, groups)
}

/// `y = tanh(x)`
pub fn tanh_forward(prog: &mut Program, y: &GpuTensor, x: &GpuTensor) -> Result<()> {
    activation(prog, "tanh_forward", y, x, None)
}
/// `dx += dy * (1 - y^2)`
pub fn tanh_backward(prog: &mut Program, dx: &GpuTensor, y: &GpuTensor, dy: &GpuTensor) -> Result<()> {
    activation(prog, "tanh_backward", dx, y, Some(dy))
}
/// `y = 1 / (1 + exp(-x))`
pub fn sigmoid_forward(prog: &mut Program, y: &GpuTensor, x: &GpuTensor) -> Result<()> {
    activation(prog, "sigmoid_forward", y, x, None)
}
/// `dx += dy * y * (1 - y)`
pub fn sigmoid_backward(prog: &mut Program, dx: &GpuTensor, y: &GpuTensor, dy: &GpuTensor) -> Result<()> {
    activation(prog, "sigmoid_backward", dx, y, Some(dy))
}
/// `y = max(x, 0)`
pub fn relu_forward(prog: &mut Program, y: &GpuTensor, x: &GpuTensor) -> Result<()> {
    activation(prog, "relu_forward", y, x, None)
}
/// `dx += dy * (y > 0)`
pub fn relu_backward(prog: &mut Program, dx: &GpuTensor, y: &GpuTensor, dy: &GpuTensor) -> Result<()> {
    activation(prog, "relu_backward", dx, y, Some(dy))
}

// ---------------------------------------------------------------------------------------------
// blas.wgsl

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BlasParams {
    // must match shaders/blas.wgsl::Params
    n: u32,
    cols: u32,
    rows: u32,
    alpha: f32,
}

fn blas(
    prog: &mut Program,
    entry: &'static str,
    y: &GpuTensor,
    x: Option<&GpuTensor>,
    params: BlasParams,
    threads: usize,
) -> Result<()> {
    let mut args = vec![(1, y)];
    if let Some(x) = x {
        args.push((2, x));
    }
    let groups = groups_1d(prog.ctx(), threads, WG);
    prog.dispatch("blas", entry, &[], &args, &params, groups)
}

/// `x = value`
pub fn fill(prog: &mut Program, x: &GpuTensor, value: f32) -> Result<()> {
    let n = x.len();
    let p = BlasParams { n: to_u32("fill", "n", n)?, cols: 1, rows: 1, alpha: value };
    blas(prog, "fill", x, None, p, n)
}

/// `x *= alpha`
pub fn scale(prog: &mut Program, x: &GpuTensor, alpha: f32) -> Result<()> {
    let n = x.len();
    let p = BlasParams { n: to_u32("scale", "n", n)?, cols: 1, rows: 1, alpha };
    blas(prog, "scale", x, None, p, n)
}

/// `y += alpha * x`
pub fn axpy(prog: &mut Program, y: &GpuTensor, x: &GpuTensor, alpha: f32) -> Result<()> {
    let n = y.len();
    need("axpy", "x", x, n)?;
    let p = BlasParams { n: to_u32("axpy", "n", n)?, cols: 1, rows: 1, alpha };
    blas(prog, "axpy", y, Some(x), p, n)
}

/// `db[j] += sum_r dy[r, j]` for dy `(rows, cols)`, and `db2[j] +=` the same where given: one
/// dispatch for two biases with one gradient.
pub fn bias_grad(
    prog: &mut Program,
    db: &GpuTensor,
    db2: Option<&GpuTensor>,
    dy: &GpuTensor,
    rows: usize,
    cols: usize,
) -> Result<()> {
    need("bias_grad", "db", db, cols)?;
    need("bias_grad", "dy", dy, rows * cols)?;
    let p = BlasParams {
        n: to_u32("bias_grad", "cols", cols)?,
        cols: cols as u32,
        rows: to_u32("bias_grad", "rows", rows)?,
        alpha: 0.0,
    };
    let groups = [to_u32("bias_grad", "workgroups", cols.div_ceil(BIAS_GRAD_COLS))?, 1, 1];
    match db2 {
        None => prog.dispatch("blas", "bias_grad", &[], &[(1, db), (2, dy)], &p, groups),
        Some(db2) => {
            need("bias_grad", "db2", db2, cols)?;
            prog.dispatch("blas", "bias_grad_pair", &[], &[(1, db), (2, dy), (3, db2)], &p, groups)
        }
    }
}

/// Columns per workgroup of `bias_grad`; must match shaders/blas.wgsl::BIAS_COLS.
const BIAS_GRAD_COLS: usize = 32;

// ---------------------------------------------------------------------------------------------
// reduce.wgsl

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ReduceParams {
    // must match shaders/reduce.wgsl::Params
    n: u32,
    parts: u32,
    index: u32,
    accumulate: u32,
    max_norm: f32,
    _pad: [u32; 3],
}

/// Partial sums the first pass leaves for the second: its workgroups.
pub const REDUCE_PARTS: usize = 256;

/// `out[index] (+)= sum(x)` (or the sum of squares), in two passes through `scratch`
/// (`REDUCE_PARTS` elements).
pub fn reduce(
    prog: &mut Program,
    out: &GpuTensor,
    x: &GpuTensor,
    scratch: &GpuTensor,
    p: Reduce,
) -> Result<()> {
    reduce_then(prog, out, x, scratch, p, None)
}

/// The squared norm of `grads` into `state[GRAD_SUMSQ]`, then the step's decision: finite or not,
/// and the clipping scale for `max_norm` (0: no clipping) that the optimizers apply. The decision
/// runs in the reduction's last dispatch.
pub fn finalize_step(
    prog: &mut Program,
    state: &GpuTensor,
    grads: &GpuTensor,
    scratch: &GpuTensor,
    max_norm: f32,
) -> Result<()> {
    need_state("finalize_step", state)?;
    reduce_then(prog, state, grads, scratch, step_state::GRAD_NORM_SQUARED, Some(max_norm))
}

/// `reduce`, its last dispatch deciding the step for `finalize`'s max_norm where given.
fn reduce_then(
    prog: &mut Program,
    out: &GpuTensor,
    x: &GpuTensor,
    scratch: &GpuTensor,
    p: Reduce,
    finalize: Option<f32>,
) -> Result<()> {
    const OP: &str = "reduce";
    need(OP, "scratch", scratch, REDUCE_PARTS)?;
    if p.index >= out.len() {
        return Err(Error::range(OP, "index", p.index, format!("below {}", out.len())));
    }
    let n = to_u32(OP, "n", x.len())?;
    let first =
        ReduceParams { n, parts: REDUCE_PARTS as u32, index: 0, accumulate: 0, max_norm: 0.0, _pad: [0; 3] };
    prog.dispatch(
        "reduce",
        "reduce_partial",
        &[("SQUARE", p.square as u64)],
        &[(1, scratch), (2, x)],
        &first,
        [REDUCE_PARTS as u32, 1, 1],
    )?;
    let second = ReduceParams {
        n: REDUCE_PARTS as u32,
        parts: REDUCE_PARTS as u32,
        index: p.index as u32,
        accumulate: p.accumulate as u32,
        max_norm: finalize.unwrap_or(0.0),
        _pad: [0; 3],
    };
    let constants = [("FINALIZE", finalize.is_some() as u64)];
    prog.dispatch("reduce", "reduce_final", &constants, &[(1, out), (2, scratch)], &second, [1, 1, 1])
}

// ---------------------------------------------------------------------------------------------
// loss.wgsl

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RowParams {
    // must match shaders/loss.wgsl::Params
    rows: u32,
    cols: u32,
    _pad: [u32; 2],
}

fn row_params(op: &'static str, rows: usize, cols: usize) -> Result<RowParams> {
    check_nonzero(op, "rows", rows)?;
    check_nonzero(op, "cols", cols)?;
    Ok(RowParams { rows: to_u32(op, "rows", rows)?, cols: to_u32(op, "cols", cols)?, _pad: [0; 2] })
}

/// `y = softmax(x)` along each row of `(rows, cols)`.
pub fn softmax_rows(
    prog: &mut Program,
    y: &GpuTensor,
    x: &GpuTensor,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let p = row_params("softmax_rows", rows, cols)?;
    need("softmax_rows", "y", y, rows * cols)?;
    need("softmax_rows", "x", x, rows * cols)?;
    let groups = groups_1d(prog.ctx(), rows, WG);
    prog.dispatch("loss", "softmax_rows", &[], &[(1, y), (3, x)], &p, groups)
}

/// Softmax cross-entropy per row: `loss[r] = w[r] * (lse(x[r]) - x[r, t[r]])`,
/// `dx[r] = w[r] * (softmax(x[r]) - onehot(t[r]))`. Targets must be below `cols`.
#[allow(clippy::too_many_arguments)]
pub fn softmax_xent(
    prog: &mut Program,
    loss: &GpuTensor,    // (rows)
    dx: &GpuTensor,      // (rows, cols)
    logits: &GpuTensor,  // (rows, cols)
    targets: &GpuTensor, // (rows) u32
    weights: &GpuTensor, // (rows)
    rows: usize,
    cols: usize,
) -> Result<()> {
    const OP: &str = "softmax_xent";
    let p = row_params(OP, rows, cols)?;
    need(OP, "loss", loss, rows)?;
    need(OP, "dx", dx, rows * cols)?;
    need(OP, "logits", logits, rows * cols)?;
    need(OP, "targets", targets, rows)?;
    need(OP, "weights", weights, rows)?;
    let groups = groups_1d(prog.ctx(), rows, WG);
    prog.dispatch(
        "loss",
        "softmax_xent",
        &[],
        &[(1, loss), (2, dx), (3, logits), (4, targets), (6, weights)],
        &p,
        groups,
    )
}

/// Squared error per row: `loss[r] = w[r] * sum_j (x - t)^2`, `dx = 2 w (x - t)`.
#[allow(clippy::too_many_arguments)]
pub fn mse(
    prog: &mut Program,
    loss: &GpuTensor,    // (rows)
    dx: &GpuTensor,      // (rows, cols)
    pred: &GpuTensor,    // (rows, cols)
    target: &GpuTensor,  // (rows, cols)
    weights: &GpuTensor, // (rows)
    rows: usize,
    cols: usize,
) -> Result<()> {
    const OP: &str = "mse";
    let p = row_params(OP, rows, cols)?;
    need(OP, "loss", loss, rows)?;
    need(OP, "dx", dx, rows * cols)?;
    need(OP, "pred", pred, rows * cols)?;
    need(OP, "target", target, rows * cols)?;
    need(OP, "weights", weights, rows)?;
    let groups = groups_1d(prog.ctx(), rows, WG);
    prog.dispatch("loss", "mse", &[], &[(1, loss), (2, dx), (3, pred), (5, target), (6, weights)], &p, groups)
}

// ---------------------------------------------------------------------------------------------
// optim.wgsl

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct OptimParams {
    // must match shaders/optim.wgsl::Params
    n: u32,
    lo: f32,
    hi: f32,
    _pad: u32,
    h: [f32; 4],
}

fn need_state(op: &'static str, state: &GpuTensor) -> Result<()> {
    need(op, "step state", state, step_state::LEN)
}

/// `grad = clamp(grad, lo, hi)`
pub fn clip_by_value(prog: &mut Program, grad: &GpuTensor, lo: f32, hi: f32) -> Result<()> {
    if !(lo <= hi) {
        return Err(Error::invalid("clip_by_value", format!("lo = {lo} must not exceed hi = {hi}")));
    }
    let n = grad.len();
    let p = OptimParams { n: to_u32("clip_by_value", "n", n)?, lo, hi, ..Default::default() };
    let groups = groups_1d(prog.ctx(), n, WG);
    prog.dispatch("optim", "clip_by_value", &[], &[(2, grad)], &p, groups)
}

/// The update rule on every parameter: the entry point the rule names, its numbers in `h`, its
/// state buffers bound from binding 4 on.
pub fn update(
    prog: &mut Program,
    param: &GpuTensor,
    grad: &GpuTensor,
    slots: &[&GpuTensor],
    state: &GpuTensor,
    rule: &Optimizer,
) -> Result<()> {
    let lens: Vec<usize> = slots.iter().map(|s| s.len()).collect();
    update::check_buffers(rule, param.len(), grad.len(), &lens, state.len())?;
    let n = param.len();
    let p = OptimParams { n: to_u32("update", "n", n)?, h: rule.hyper(), ..Default::default() };
    let mut args = vec![(1, state), (2, grad), (3, param)];
    args.extend(slots.iter().enumerate().map(|(k, s)| (4 + k as u32, *s)));
    let groups = groups_1d(prog.ctx(), n, WG);
    prog.dispatch("optim", rule.entry(), &[], &args, &p, groups)
}

// ---------------------------------------------------------------------------------------------
// gather.wgsl

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GatherParams {
    // must match shaders/gather.wgsl::Params
    n: u32,
    width: u32,
    idx_stride: u32,
    col_stride: u32,
}

fn gather_params(op: &'static str, p: Gather) -> Result<GatherParams> {
    check_nonzero(op, "n", p.n)?;
    check_nonzero(op, "width", p.width)?;
    to_u32(op, "n * width", p.n * p.width)?;
    Ok(GatherParams {
        n: p.n as u32,
        width: p.width as u32,
        idx_stride: to_u32(op, "idx_stride", p.idx_stride)?,
        col_stride: to_u32(op, "col_stride", p.col_stride)?,
    })
}

/// `out[i, j] = table[idx[i] * idx_stride + j * col_stride]`. Indices must address inside
/// `table` (the callers check token ids against the vocabulary on upload).
pub fn gather(
    prog: &mut Program,
    out: &GpuTensor,
    table: &GpuTensor,
    idx: &GpuTensor,
    p: Gather,
) -> Result<()> {
    let params = gather_params("gather", p)?;
    need("gather", "out", out, p.n * p.width)?;
    need("gather", "idx", idx, p.n)?;
    let groups = groups_1d(prog.ctx(), p.n * p.width, WG);
    prog.dispatch("gather", "gather", &[], &[(1, out), (2, table), (3, idx)], &params, groups)
}

/// The gradient of `gather`: `dtable[v * idx_stride + j * col_stride] += sum of dout[r, j]` over
/// the rows r listed for v in `rows[starts[v]..starts[v + 1]]`; `p.n` is the number of table
/// rows V.
pub fn scatter_add(
    prog: &mut Program,
    dtable: &GpuTensor,
    dout: &GpuTensor,   // (rows, width)
    starts: &GpuTensor, // (V + 1) u32
    rows: &GpuTensor,   // (rows) u32
    p: Gather,
) -> Result<()> {
    let params = gather_params("scatter_add", p)?;
    need("scatter_add", "starts", starts, p.n + 1)?;
    if dout.len() != rows.len() * p.width {
        return Err(Error::shape("scatter_add", "dout", dout.shape(), &[rows.len(), p.width]));
    }
    let groups = groups_1d(prog.ctx(), p.n * p.width, WG);
    prog.dispatch(
        "gather",
        "scatter_add",
        &[],
        &[(1, dtable), (2, dout), (3, starts), (4, rows)],
        &params,
        groups,
    )
}

// ---------------------------------------------------------------------------------------------
// dropout.wgsl

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct DropoutParams {
    // must match shaders/dropout.wgsl::Params
    n: u32,
    seed: u32,
    prob: f32,
    _pad: u32,
}

fn dropout(
    prog: &mut Program,
    entry: &'static str,
    out: &GpuTensor,
    x: &GpuTensor,
    seeds: &GpuTensor,
    p: Dropout,
) -> Result<()> {
    if !(0.0..1.0).contains(&p.prob) {
        return Err(Error::range(entry, "dropout probability", p.prob, "in [0, 1)"));
    }
    let n = out.len();
    need(entry, "input", x, n)?;
    need(entry, "seeds", seeds, 1)?;
    let params = DropoutParams { n: to_u32(entry, "n", n)?, seed: p.salt, prob: p.prob, _pad: 0 };
    let groups = groups_1d(prog.ctx(), n, WG);
    prog.dispatch("dropout", entry, &[], &[(1, out), (2, x), (3, seeds)], &params, groups)
}

/// `out = keep ? x / (1 - p) : 0`, the mask drawn from (`seeds[0] ^ salt`, index).
pub fn dropout_forward(
    prog: &mut Program,
    out: &GpuTensor,
    x: &GpuTensor,
    seeds: &GpuTensor,
    p: Dropout,
) -> Result<()> {
    dropout(prog, "dropout_forward", out, x, seeds, p)
}

/// `dx += keep ? dy / (1 - p) : 0`, the same mask as the forward pass.
pub fn dropout_backward(
    prog: &mut Program,
    dx: &GpuTensor,
    dy: &GpuTensor,
    seeds: &GpuTensor,
    p: Dropout,
) -> Result<()> {
    dropout(prog, "dropout_backward", dx, dy, seeds, p)
}

// ---------------------------------------------------------------------------------------------
// rnn.wgsl, lstm.wgsl, gru.wgsl: the fused recurrent steps

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct StepParams {
    // must match shaders/step_common.wgsl::StepParams
    t: u32,
    batch: u32,
    hidden: u32,
    in_slot: u32,
    out_slot: u32,
    state_base: u32,
    out_stride: u32,
    out_col: u32,
    bias_hh: u32,
    next_t: u32,
    mode: u32,
    col_groups: u32,
    row_groups: u32,
    k_split: u32,
    _pad: [u32; 2],
}

/// The largest batch the step kernels take: the sequence lengths are a uniform array of
/// 16384 u32 (shaders/step_common.wgsl::lengths).
pub const MAX_STEP_BATCH: usize = 16384;

/// Threads per workgroup of the step kernels, and their tile limits; must match
/// shaders/step_common.wgsl (STEP_WG, the sizes of rows_tile and w_tile, KC).
const STEP_WG: usize = 64;
const STEP_MAX_ROW_GROUPS: usize = 8;
const STEP_MAX_COL_GROUPS: usize = 16;
const STEP_KC: usize = 32;

/// Workgroups a step dispatch should have at least, where the shape allows: two per SM of a
/// 132-SM GPU.
pub const STEP_MIN_WORKGROUPS: usize = 256;
/// The least of the sum a lane adds when the sum is split: a small layer (H = 32) gets fewer,
/// fuller workgroups rather than 256 whose lanes each add one product and then wait on the
/// workgroup's sum of the parts.
const STEP_MIN_K_PER_LANE: usize = 8;

/// How a step kernel's 64 threads share out their workgroup's tile: each thread a 4x4 register
/// tile (4 batch rows x 4 columns), `col_groups` x `row_groups` of them, the sum of each output
/// split `k_split` ways (shaders/step_common.wgsl). A thread's 4 columns cover `units` units:
/// the gates of one (the LSTM and GRU forward) or 4 (the RNN forward, every cell backward).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepTiling {
    pub units: usize,
    pub col_groups: usize,
    pub row_groups: usize,
    pub k_split: usize,
}

impl StepTiling {
    /// The tiling of a step of `hidden` units and `batch` rows, a thread's columns covering
    /// `units` units. Among the tilings that fit the kernel (powers of two, every lane busy: the
    /// lanes a tile leaves split its sums, each adding at least [`STEP_MIN_K_PER_LANE`]), the one
    /// that comes nearest [`STEP_MIN_WORKGROUPS`], then
    /// splits the sums least (fewer parts to add), then computes the least padding, then stages
    /// the fewest values per output.
    pub fn new(hidden: usize, batch: usize, units: usize) -> StepTiling {
        let pow2 = |limit: usize| (0..).map(|e| 1usize << e).take_while(move |&v| v <= limit);
        let mut best: Option<((usize, usize, usize, usize), StepTiling)> = None;
        for row_groups in pow2(STEP_MAX_ROW_GROUPS) {
            for col_groups in pow2(STEP_MAX_COL_GROUPS.min(STEP_WG / row_groups)) {
                // Every lane busy: the rest of the 64 split the sums.
                let k_split = STEP_WG / (row_groups * col_groups);
                if k_split > STEP_KC || (k_split > 1 && k_split * STEP_MIN_K_PER_LANE > hidden) {
                    continue;
                }
                let t = StepTiling { units, col_groups, row_groups, k_split };
                let [x, y, _] = t.groups(hidden, batch);
                let groups = (x * y) as usize;
                let padded = x as usize * units * col_groups * y as usize * 4 * row_groups;
                // Values staged per chunk for each output of the tile.
                let staged = (col_groups + row_groups) * 1024 / (units * col_groups * row_groups);
                let key = (STEP_MIN_WORKGROUPS.saturating_sub(groups), k_split, padded, staged);
                if best.as_ref().is_none_or(|(k, _)| key < *k) {
                    best = Some((key, t));
                }
            }
        }
        best.expect("a tiling").1
    }

    fn groups(&self, hidden: usize, batch: usize) -> [u32; 3] {
        [hidden.div_ceil(self.units * self.col_groups) as u32, batch.div_ceil(4 * self.row_groups) as u32, 1]
    }
}

/// Checks every buffer a step kernel touches against the extent `s` implies, and builds its
/// parameters, its grid and its dispatch.
struct StepCheck {
    op: &'static str,
    s: Step,
    tiling: StepTiling,
    /// Multiply-adds of the recurrent product.
    macs: u64,
}

impl StepCheck {
    /// `gates`: the cell's gate count; `backward`: the backward kernel (a sum over G*H for each
    /// unit) rather than the forward one (G sums over H).
    fn new(op: &'static str, s: Step, gates: usize, backward: bool) -> StepCheck {
        // A thread's 4 columns: the gates of one unit forward (shaders/*.wgsl::FORWARD_UNITS),
        // 4 units where there is one gate, and backward.
        let units = if backward || gates == 1 { 4 } else { 1 };
        let tiling = StepTiling::new(s.hidden, s.batch, units);
        let macs =
            if backward && s.mode == StepMode::First { 0 } else { gates * s.hidden * s.hidden * s.batch };
        StepCheck { op, s, tiling, macs: macs as u64 }
    }

    fn at_least(&self, what: &str, t: &GpuTensor, n: usize) -> Result<()> {
        if t.len() < n {
            return Err(Error::shape(self.op, what, t.shape(), &[n]));
        }
        Ok(())
    }

    fn states(&self, t: &GpuTensor) -> Result<()> {
        let s = &self.s;
        let slots = s.in_slot.max(s.out_slot) + 1;
        self.at_least("states", t, s.state_base + slots * s.batch * s.hidden)
    }

    fn per_step(&self, what: &str, t: &GpuTensor, width: usize, last_t: usize) -> Result<()> {
        self.at_least(what, t, (last_t + 1) * self.s.batch * width)
    }

    fn common(&self, cell: Cell, w_hh: &GpuTensor, lengths: &GpuTensor) -> Result<()> {
        let s = &self.s;
        check_nonzero(self.op, "batch", s.batch)?;
        check_nonzero(self.op, "hidden", s.hidden)?;
        if s.batch > MAX_STEP_BATCH {
            return Err(Error::range(self.op, "batch", s.batch, format!("at most {MAX_STEP_BATCH}")));
        }
        self.at_least("w_hh", w_hh, cell.gates() * s.hidden * s.hidden)?;
        need(self.op, "lengths", lengths, s.batch)
    }

    fn params(&self) -> Result<StepParams> {
        let s = &self.s;
        let u = |what, v| to_u32(self.op, what, v);
        Ok(StepParams {
            t: u("t", s.t)?,
            batch: u("batch", s.batch)?,
            hidden: u("hidden", s.hidden)?,
            in_slot: u("in_slot", s.in_slot)?,
            out_slot: u("out_slot", s.out_slot)?,
            state_base: u("state_base", s.state_base)?,
            out_stride: u("out_stride", s.out_stride)?,
            out_col: u("out_col", s.out_col)?,
            bias_hh: u("bias_hh", s.bias_hh)?,
            next_t: u("next_t", s.next_t)?,
            mode: match s.mode {
                StepMode::First => 0,
                StepMode::Later => 1,
                StepMode::Initial => 2,
            },
            col_groups: self.tiling.col_groups as u32,
            row_groups: self.tiling.row_groups as u32,
            k_split: self.tiling.k_split as u32,
            _pad: [0; 2],
        })
    }

    fn last_t(&self) -> usize {
        self.s.t.max(self.s.next_t)
    }

    /// Dispatches `entry` of the step family `cell` with `buffers` (storage binding, tensor),
    /// W_hh at binding 6 and the lengths as a uniform at binding 8.
    fn dispatch(
        &self,
        prog: &mut Program,
        cell: &'static str,
        constants: &[(&'static str, u64)],
        buffers: &[(u32, &GpuTensor)],
        w_hh: &GpuTensor,
        lengths: &GpuTensor,
    ) -> Result<()> {
        let mut storage = buffers.to_vec();
        storage.push((6, w_hh));
        let uniforms = [(8, lengths, super::tensor::U32_BUFFER_BYTES)];
        let groups = self.tiling.groups(self.s.hidden, self.s.batch);
        prog.dispatch_with_uniforms(cell, self.op, constants, &storage, &uniforms, &self.params()?, groups)?;
        prog.count_macs(self.macs);
        Ok(())
    }
}

/// The LSTM step at time `s.t` (shaders/lstm.wgsl).
#[allow(clippy::too_many_arguments)]
pub fn lstm_step_forward(
    prog: &mut Program,
    states: &GpuTensor,  // see shaders/step_common.wgsl
    cells: &GpuTensor,   // like states
    gates: &GpuTensor,   // (T, B, 4H)
    y: &GpuTensor,       // (T, B, D*H)
    xw: &GpuTensor,      // (T, B, 4H)
    w_hh: &GpuTensor,    // (4H, H)
    bias: &GpuTensor,    // b_ih (4H), b_hh at s.bias_hh
    lengths: &GpuTensor, // (B) u32
    s: Step,
) -> Result<()> {
    let c = StepCheck::new("lstm_step_forward", s, 4, false);
    let (h, b) = (s.hidden, s.batch);
    c.common(Cell::Lstm, w_hh, lengths)?;
    c.states(states)?;
    c.at_least("cells", cells, s.state_base + (s.in_slot.max(s.out_slot) + 1) * b * h)?;
    c.per_step("gates", gates, 4 * h, s.t)?;
    c.per_step("y", y, s.out_stride, s.t)?;
    c.per_step("xw", xw, 4 * h, s.t)?;
    c.at_least("bias", bias, s.bias_hh + 4 * h)?;
    c.dispatch(
        prog,
        "lstm",
        &[],
        &[(1, states), (2, cells), (3, gates), (4, y), (5, xw), (7, bias)],
        w_hh,
        lengths,
    )
}

/// The LSTM backward step at time `s.t` (or, in `StepMode::Initial`, the initial-state gradient).
#[allow(clippy::too_many_arguments)]
pub fn lstm_step_backward(
    prog: &mut Program,
    cells: &GpuTensor,
    gates: &GpuTensor,
    w_hh: &GpuTensor,
    lengths: &GpuTensor,
    dy: &GpuTensor,    // (T, B, D*H)
    dg: &GpuTensor,    // (T, B, 4H)
    carry: &GpuTensor, // (2, B, H)
    s: Step,
) -> Result<()> {
    let c = StepCheck::new("lstm_step_backward", s, 4, true);
    let (h, b) = (s.hidden, s.batch);
    c.common(Cell::Lstm, w_hh, lengths)?;
    c.at_least("cells", cells, s.state_base + (s.in_slot.max(s.out_slot) + 1) * b * h)?;
    c.per_step("gates", gates, 4 * h, s.t)?;
    c.per_step("dy", dy, s.out_stride, s.t)?;
    c.per_step("dg", dg, 4 * h, c.last_t())?;
    need(c.op, "carry", carry, 2 * b * h)?;
    c.dispatch(prog, "lstm", &[], &[(2, cells), (3, gates), (9, dy), (10, dg), (12, carry)], w_hh, lengths)
}

/// The GRU step at time `s.t` (shaders/gru.wgsl).
#[allow(clippy::too_many_arguments)]
pub fn gru_step_forward(
    prog: &mut Program,
    states: &GpuTensor,
    gates: &GpuTensor, // (T, B, 4H): r, z, n, hn
    y: &GpuTensor,
    xw: &GpuTensor,   // (T, B, 3H)
    w_hh: &GpuTensor, // (3H, H)
    bias: &GpuTensor,
    lengths: &GpuTensor,
    s: Step,
) -> Result<()> {
    let c = StepCheck::new("gru_step_forward", s, 3, false);
    let h = s.hidden;
    c.common(Cell::Gru, w_hh, lengths)?;
    c.states(states)?;
    c.per_step("gates", gates, 4 * h, s.t)?;
    c.per_step("y", y, s.out_stride, s.t)?;
    c.per_step("xw", xw, 3 * h, s.t)?;
    c.at_least("bias", bias, s.bias_hh + 3 * h)?;
    c.dispatch(prog, "gru", &[], &[(1, states), (3, gates), (4, y), (5, xw), (7, bias)], w_hh, lengths)
}

#[allow(clippy::too_many_arguments)]
pub fn gru_step_backward(
    prog: &mut Program,
    states: &GpuTensor,
    gates: &GpuTensor,
    w_hh: &GpuTensor,
    lengths: &GpuTensor,
    dy: &GpuTensor,
    dgx: &GpuTensor,   // (T, B, 3H)
    dgh: &GpuTensor,   // (T, B, 3H)
    carry: &GpuTensor, // (2, B, H)
    s: Step,
) -> Result<()> {
    let c = StepCheck::new("gru_step_backward", s, 3, true);
    let (h, b) = (s.hidden, s.batch);
    c.common(Cell::Gru, w_hh, lengths)?;
    c.states(states)?;
    c.per_step("gates", gates, 4 * h, s.t)?;
    c.per_step("dy", dy, s.out_stride, s.t)?;
    c.per_step("dgx", dgx, 3 * h, s.t)?;
    c.per_step("dgh", dgh, 3 * h, c.last_t())?;
    need(c.op, "carry", carry, 2 * b * h)?;
    let buffers = [(1, states), (3, gates), (9, dy), (10, dgh), (11, dgx), (12, carry)];
    c.dispatch(prog, "gru", &[], &buffers, w_hh, lengths)
}

/// The Elman RNN step at time `s.t` (shaders/rnn.wgsl), tanh or relu.
#[allow(clippy::too_many_arguments)]
pub fn rnn_step_forward(
    prog: &mut Program,
    states: &GpuTensor,
    y: &GpuTensor,
    xw: &GpuTensor,   // (T, B, H)
    w_hh: &GpuTensor, // (H, H)
    bias: &GpuTensor,
    lengths: &GpuTensor,
    s: Step,
    relu: bool,
) -> Result<()> {
    let c = StepCheck::new("rnn_step_forward", s, 1, false);
    c.common(Cell::Rnn { relu }, w_hh, lengths)?;
    c.states(states)?;
    c.per_step("y", y, s.out_stride, s.t)?;
    c.per_step("xw", xw, s.hidden, s.t)?;
    c.at_least("bias", bias, s.bias_hh + s.hidden)?;
    c.dispatch(
        prog,
        "rnn",
        &[("RELU", relu as u64)],
        &[(1, states), (4, y), (5, xw), (7, bias)],
        w_hh,
        lengths,
    )
}

#[allow(clippy::too_many_arguments)]
pub fn rnn_step_backward(
    prog: &mut Program,
    states: &GpuTensor,
    w_hh: &GpuTensor,
    lengths: &GpuTensor,
    dy: &GpuTensor,
    dg: &GpuTensor,    // (T, B, H)
    carry: &GpuTensor, // (2, B, H)
    s: Step,
    relu: bool,
) -> Result<()> {
    let c = StepCheck::new("rnn_step_backward", s, 1, true);
    c.common(Cell::Rnn { relu }, w_hh, lengths)?;
    c.states(states)?;
    c.per_step("dy", dy, s.out_stride, s.t)?;
    c.per_step("dg", dg, s.hidden, c.last_t())?;
    need(c.op, "carry", carry, 2 * s.batch * s.hidden)?;
    c.dispatch(
        prog,
        "rnn",
        &[("RELU", relu as u64)],
        &[(1, states), (9, dy), (10, dg), (12, carry)],
        w_hh,
        lengths,
    )
}

// ---------------------------------------------------------------------------------------------
// copy.wgsl

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CopyParams {
    // must match shaders/copy.wgsl::Params
    rows: u32,
    width: u32,
    y_stride: u32,
    y_offset: u32,
    x_stride: u32,
    x_offset: u32,
    accumulate: u32,
    _pad: u32,
}

/// `y[r * y_stride + y_offset + c] (+)= x[r * x_stride + x_offset + c]` for `r < rows`,
/// `c < width`.
pub fn copy_cols(prog: &mut Program, y: &GpuTensor, x: &GpuTensor, p: CopyCols) -> Result<()> {
    const OP: &str = "copy_cols";
    check_nonzero(OP, "rows", p.rows)?;
    check_nonzero(OP, "width", p.width)?;
    let end = |stride: usize, offset: usize| (p.rows - 1) * stride + offset + p.width;
    if end(p.y_stride, p.y_offset) > y.len() {
        return Err(Error::shape(OP, "y", y.shape(), &[end(p.y_stride, p.y_offset)]));
    }
    if end(p.x_stride, p.x_offset) > x.len() {
        return Err(Error::shape(OP, "x", x.shape(), &[end(p.x_stride, p.x_offset)]));
    }
    let u = |what, v| to_u32(OP, what, v);
    let params = CopyParams {
        rows: u("rows", p.rows)?,
        width: u("width", p.width)?,
        y_stride: u("y_stride", p.y_stride)?,
        y_offset: u("y_offset", p.y_offset)?,
        x_stride: u("x_stride", p.x_stride)?,
        x_offset: u("x_offset", p.x_offset)?,
        accumulate: p.accumulate as u32,
        _pad: 0,
    };
    let groups = groups_1d(prog.ctx(), p.rows * p.width, WG);
    prog.dispatch("copy", "copy_cols", &[], &[(1, y), (2, x)], &params, groups)
}

// ---------------------------------------------------------------------------------------------
// attention.wgsl, and the softmax gradient in loss.wgsl

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AttentionParams {
    // must match shaders/attention.wgsl::Params
    tgt: u32,
    batch: u32,
    src: u32,
    width: u32,
    accumulate: u32,
    _pad: [u32; 3],
}

fn attention_params(op: &'static str, a: Attention, accumulate: bool) -> Result<AttentionParams> {
    check_nonzero(op, "target steps", a.tgt)?;
    check_nonzero(op, "batch", a.batch)?;
    check_nonzero(op, "source steps", a.src)?;
    check_nonzero(op, "width", a.width)?;
    Ok(AttentionParams {
        tgt: to_u32(op, "tgt", a.tgt)?,
        batch: to_u32(op, "batch", a.batch)?,
        src: to_u32(op, "src", a.src)?,
        width: to_u32(op, "width", a.width)?,
        accumulate: accumulate as u32,
        _pad: [0; 3],
    })
}

/// `out[t, b, j] = x[t, b, :] · enc[j, b, :]`; with `mask`, `-1e30` where `j >= src_len[b]`.
pub fn attention_dots(
    prog: &mut Program,
    out: &GpuTensor,     // (T_t * B, T_s)
    x: &GpuTensor,       // (T_t, B, A)
    enc: &GpuTensor,     // (T_s, B, A)
    src_len: &GpuTensor, // (B) u32
    a: Attention,
    mask: bool,
) -> Result<()> {
    const OP: &str = "attention_dots";
    let params = attention_params(OP, a, false)?;
    need(OP, "out", out, a.tgt * a.batch * a.src)?;
    need(OP, "x", x, a.tgt * a.batch * a.width)?;
    need(OP, "enc", enc, a.src * a.batch * a.width)?;
    need(OP, "src_len", src_len, a.batch)?;
    let groups = groups_1d(prog.ctx(), a.tgt * a.batch * a.src, WG);
    prog.dispatch(
        "attention",
        OP,
        &[("MASK", mask as u64)],
        &[(1, out), (2, x), (3, enc), (4, src_len)],
        &params,
        groups,
    )
}

/// `out[t, b, :] (+)= sum_j w[t, b, j] enc[j, b, :]`
pub fn attention_mix(
    prog: &mut Program,
    out: &GpuTensor,
    w: &GpuTensor,
    enc: &GpuTensor,
    a: Attention,
    accumulate: bool,
) -> Result<()> {
    const OP: &str = "attention_mix";
    let params = attention_params(OP, a, accumulate)?;
    need(OP, "out", out, a.tgt * a.batch * a.width)?;
    need(OP, "w", w, a.tgt * a.batch * a.src)?;
    need(OP, "enc", enc, a.src * a.batch * a.width)?;
    let groups = groups_1d(prog.ctx(), a.tgt * a.batch * a.width, WG);
    prog.dispatch("attention", OP, &[], &[(1, out), (2, w), (3, enc)], &params, groups)
}

/// `out[j, b, :] (+)= sum_t w[t, b, j] x[t, b, :]`
pub fn attention_mix_t(
    prog: &mut Program,
    out: &GpuTensor,
    w: &GpuTensor,
    x: &GpuTensor,
    a: Attention,
    accumulate: bool,
) -> Result<()> {
    const OP: &str = "attention_mix_t";
    let params = attention_params(OP, a, accumulate)?;
    need(OP, "out", out, a.src * a.batch * a.width)?;
    need(OP, "w", w, a.tgt * a.batch * a.src)?;
    need(OP, "x", x, a.tgt * a.batch * a.width)?;
    let groups = groups_1d(prog.ctx(), a.src * a.batch * a.width, WG);
    prog.dispatch("attention", OP, &[], &[(1, out), (2, w), (3, x)], &params, groups)
}

/// `dx[r] = y[r] * (dy[r] - y[r] · dy[r])` for a row-wise softmax `y`.
pub fn softmax_backward(
    prog: &mut Program,
    dx: &GpuTensor,
    y: &GpuTensor,
    dy: &GpuTensor,
    rows: usize,
    cols: usize,
) -> Result<()> {
    const OP: &str = "softmax_backward";
    let p = row_params(OP, rows, cols)?;
    need(OP, "dx", dx, rows * cols)?;
    need(OP, "y", y, rows * cols)?;
    need(OP, "dy", dy, rows * cols)?;
    let groups = groups_1d(prog.ctx(), rows, WG);
    prog.dispatch("loss", OP, &[], &[(2, dx), (3, y), (5, dy)], &p, groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The four standard cases fill a large GPU: every per-time-step dispatch has at least 256
    /// workgroups, forward and backward, every lane busy.
    #[test]
    fn the_standard_cases_give_every_step_dispatch_256_workgroups() {
        for (gates, hidden, batch) in [(1, 256, 32), (4, 256, 32), (3, 256, 32), (4, 512, 64)] {
            for backward in [false, true] {
                let units = if backward || gates == 1 { 4 } else { 1 };
                let t = StepTiling::new(hidden, batch, units);
                let [x, y, _] = t.groups(hidden, batch);
                assert!(x * y >= STEP_MIN_WORKGROUPS as u32, "G={gates} H={hidden} B={batch}: {t:?}");
                assert_eq!(t.col_groups * t.row_groups * t.k_split, STEP_WG, "{t:?}: idle lanes");
            }
        }
    }

    /// Every tiling fits the kernel's workgroup memory and lanes, whatever the shape.
    #[test]
    fn every_tiling_fits_the_step_kernels() {
        for units in [1, 4] {
            for hidden in [1, 2, 3, 5, 31, 64, 65, 200, 256, 1000, 4096] {
                for batch in [1, 2, 3, 7, 8, 31, 64, 100, 4096] {
                    let t = StepTiling::new(hidden, batch, units);
                    assert!(
                        t.row_groups <= STEP_MAX_ROW_GROUPS && t.col_groups <= STEP_MAX_COL_GROUPS,
                        "{t:?}"
                    );
                    assert!(t.col_groups * t.row_groups * t.k_split <= STEP_WG, "{t:?}");
                    assert!(t.k_split <= STEP_KC && STEP_KC % t.k_split == 0, "{t:?}");
                }
            }
        }
    }

    /// The narrow head (65 logits over T*B rows) runs as its transpose in 32x128 tiles, and the
    /// deep weight-gradient products fill 256 workgroups.
    #[test]
    fn matmul_plans_avoid_empty_tiles_and_fill_the_gpu() {
        let head = MatmulPlan::new(&Matmul::new(2048, 65, 256).trans_b());
        assert_eq!((head.tile, head.trans_c), (MatmulTile::NARROW, true), "{head:?}");
        let dw_hh = MatmulPlan::new(&Matmul::new(2048, 512, 6400).trans_a().accumulate());
        let [x, y, z] = dw_hh.groups();
        assert!(x * y * z >= 256 && dw_hh.parts > 1, "{dw_hh:?}");
        // Every part is a whole number of slices, and the parts cover k exactly.
        for (k, split) in [(6400, 4), (67, 3), (9, 2), (8, 3), (1, 64)] {
            let plan = MatmulPlan::forced(&Matmul::new(5, 7, k), MatmulTile::MEDIUM, false, split);
            let chunk = plan.k_chunk();
            assert!(chunk % MATMUL_BK == 0 && (plan.parts - 1) * chunk < k && plan.parts * chunk >= k);
        }
        let big = MatmulPlan::new(&Matmul::new(4096, 4096, 4096));
        assert_eq!(big.tile, MatmulTile::LARGE);
        // Every tile's staged slices fit the kernel's two 512-vec4 buffers.
        for t in MatmulTile::ALL {
            assert!(
                t.rows <= 128
                    && t.cols <= 128
                    && (t.rows / t.per_thread.0) * (t.cols / t.per_thread.1) == 256
            );
        }
    }
}
