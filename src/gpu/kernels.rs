//! Launchers: one per WGSL entry point, named like it, arguments in the kernel's order (outputs,
//! then inputs, then a descriptor). Each checks its shapes, then appends a dispatch to a
//! `Program`. The CPU twin of each lives in `cpu::kernels` under the same name.

use bytemuck::{Pod, Zeroable};

use super::context::{MatmulVariant, StepInputs};
use super::program::{Program, groups_1d};
use super::tensor::GpuTensor;
use crate::error::{Error, Result, check_nonzero};
use crate::ops::{Attention, Cell, CopyCols, Dropout, Gather, Matmul, Reduce, Step, StepMode, step_state};
use crate::train::optim::{Adagrad, Adam, Sgd};

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
    k_begin: u32,
    k_end: u32,
    _pad: [u32; 2],
}

/// The longest run of k one dispatch of `matmul_register_vec4` sums; a longer product is summed
/// in slices of it, each dispatch after the first accumulating into C. Each workgroup streams its
/// band of B over the whole of k; over a shorter run the parts that the workgroups share are
/// likelier to be still in a CPU's caches. On lavapipe dW_hh of the LSTM H=512 step (2048×512,
/// k = 6400) took 480–534 ms in one dispatch and 436–479 in slices of 2048 (alternating runs);
/// slices of 1024 were slower.
const MATMUL_K_SLICE: usize = 2048;

/// `c = op(a)·op(b)` (or `+=`), with the adapter's matmul variant.
pub fn matmul(prog: &mut Program, c: &GpuTensor, a: &GpuTensor, b: &GpuTensor, p: Matmul) -> Result<()> {
    let variant = prog.ctx().matmul_variant();
    matmul_variant(prog, c, a, b, p, variant)
}

/// `matmul` with an explicit variant (tests and benchmarks run every variant).
pub fn matmul_variant(
    prog: &mut Program,
    c: &GpuTensor, // (m, n)
    a: &GpuTensor, // (m, k) or (k, m)
    b: &GpuTensor, // (k, n) or (n, k)
    p: Matmul,
    variant: MatmulVariant,
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
    let plan = MatmulPlan::new(&p, variant, prog.fits_texture(a) && prog.fits_texture(b));
    let q = &plan.problem;
    let k = to_u32(OP, "k", q.k)?;
    let params = MatmulParams {
        m: to_u32(OP, "m", q.m)?,
        n: to_u32(OP, "n", q.n)?,
        k,
        accumulate: q.accumulate as u32,
        k_begin: 0,
        k_end: k,
        _pad: [0; 2],
    };
    let (a, b) = if plan.trans_c { (b, a) } else { (a, b) };
    let groups = plan.groups();
    let max = prog.ctx().limits().max_compute_workgroups_per_dimension as usize;
    if groups[0] > max || groups[1] > max {
        return Err(Error::range(
            OP,
            "workgroups",
            format!("{groups:?}"),
            format!("at most {max} per dimension"),
        ));
    }
    let family = prog.shared_rows().family("matmul");
    let grid = [groups[0] as u32, groups[1] as u32, 1];
    if plan.entry == "matmul_register_vec4" {
        // A and B through their texture copies, k in slices of MATMUL_K_SLICE (a multiple of 4).
        let constants = plan.constants();
        for (i, k_begin) in (0..q.k).step_by(MATMUL_K_SLICE).enumerate() {
            let slice = MatmulParams {
                accumulate: (q.accumulate || i > 0) as u32,
                k_begin: k_begin as u32,
                k_end: (k_begin + MATMUL_K_SLICE).min(q.k) as u32,
                ..params
            };
            prog.dispatch_textured(
                family,
                plan.entry,
                &constants,
                &[(1, c)],
                &[(4, b), (5, a)],
                &slice,
                grid,
            )?;
        }
        return Ok(());
    }
    prog.dispatch(family, plan.entry, &plan.constants(), &[(1, c), (2, a), (3, b)], &params, grid)
}

/// Whether `matmul_register_vec4` can read B, the operand that varies across SIMD lanes, 4
/// floats at a time: its contiguous dimension is a multiple of 4.
fn register_vec4_fits(p: &Matmul) -> bool {
    if p.trans_b { p.k % 4 == 0 } else { p.n % 4 == 0 }
}

/// How one matmul runs: the entry point and the problem it computes. For a narrow C (few
/// columns, many rows) the kernel computes Cᵀ = op(B)ᵀ·op(A)ᵀ and stores it transposed
/// (TRANS_C), so that the long dimension runs along the threads' columns: the logits of a
/// 65-symbol vocabulary would fill 65 of the register tile's 256 columns otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulPlan {
    pub entry: &'static str,
    pub problem: Matmul,
    pub trans_c: bool,
}

impl MatmulPlan {
    /// The plan for `p` under `variant`; `textures_fit`: the texture copies of A and B fit the
    /// adapter (matmul_register_vec4 reads both through them).
    pub fn new(p: &Matmul, variant: MatmulVariant, textures_fit: bool) -> MatmulPlan {
        let direct = MatmulPlan::with(*p, variant, false, textures_fit);
        let t = Matmul {
            m: p.n,
            n: p.m,
            k: p.k,
            trans_a: !p.trans_b,
            trans_b: !p.trans_a,
            accumulate: p.accumulate,
        };
        let swapped = MatmulPlan::with(t, variant, true, textures_fit);
        if swapped.cost() < direct.cost() { swapped } else { direct }
    }

    fn with(problem: Matmul, variant: MatmulVariant, trans_c: bool, textures_fit: bool) -> MatmulPlan {
        MatmulPlan { entry: matmul_entry(&problem, variant, textures_fit), problem, trans_c }
    }

    /// Rows and columns of C per workgroup.
    fn tile(&self) -> (usize, usize) {
        match self.entry {
            "matmul_shared" => (64, 64),
            "matmul_register_vec4" => (16, 256),
            _ => (8, 256),
        }
    }

    /// Multiply-adds the grid performs, its padding included, weighted by the entry's time per
    /// multiply-add on lavapipe: the scalar register entry takes at least 3 times the vec4 one.
    fn cost(&self) -> usize {
        let (tm, tn) = self.tile();
        let weight = if self.entry == "matmul_register" { 3 } else { 1 };
        self.problem.m.div_ceil(tm) * tm * self.problem.n.div_ceil(tn) * tn * weight
    }

    fn groups(&self) -> [usize; 2] {
        let (tm, tn) = self.tile();
        [self.problem.n.div_ceil(tn), self.problem.m.div_ceil(tm)]
    }

    /// The override constants of shaders/matmul.wgsl.
    fn constants(&self) -> [(&'static str, u64); 5] {
        let p = &self.problem;
        // A as vec4s: its contiguous dimension a multiple of 4 (a transposed A at least 4 rows).
        let a_vec4 = if p.trans_a { p.m % 4 == 0 } else { p.k % 4 == 0 };
        [
            ("TRANS_A", p.trans_a as u64),
            ("TRANS_B", p.trans_b as u64),
            ("TRANS_C", self.trans_c as u64),
            ("A_VEC4", a_vec4 as u64),
            ("K_TAIL", (p.k % 4 != 0) as u64),
        ]
    }
}

/// The entry point of shaders/matmul.wgsl that computes `p` as it stands under `variant`
/// (`textures_fit`: the texture copies of A and B fit the adapter).
fn matmul_entry(p: &Matmul, variant: MatmulVariant, textures_fit: bool) -> &'static str {
    match variant {
        MatmulVariant::Shared => "matmul_shared",
        MatmulVariant::Register if register_vec4_fits(p) && textures_fit => "matmul_register_vec4",
        MatmulVariant::Register => "matmul_register",
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

/// `y[r, j] += bias[j]` for y `(rows, cols)`.
pub fn add_bias(prog: &mut Program, y: &GpuTensor, bias: &GpuTensor, rows: usize, cols: usize) -> Result<()> {
    check_nonzero("add_bias", "cols", cols)?;
    need("add_bias", "y", y, rows * cols)?;
    need("add_bias", "bias", bias, cols)?;
    let n = rows * cols;
    let p = BlasParams { n: to_u32("add_bias", "n", n)?, cols: cols as u32, rows: rows as u32, alpha: 0.0 };
    blas(prog, "add_bias", y, Some(bias), p, n)
}

/// `db[j] += sum_r dy[r, j]` for dy `(rows, cols)`.
pub fn bias_grad(prog: &mut Program, db: &GpuTensor, dy: &GpuTensor, rows: usize, cols: usize) -> Result<()> {
    need("bias_grad", "db", db, cols)?;
    need("bias_grad", "dy", dy, rows * cols)?;
    let p = BlasParams {
        n: to_u32("bias_grad", "cols", cols)?,
        cols: cols as u32,
        rows: to_u32("bias_grad", "rows", rows)?,
        alpha: 0.0,
    };
    // 4 columns a thread, dy read through its texture copy (a texel fetch is far cheaper than a
    // storage load on lavapipe; the gate gradients' copy is shared with scatter_add4).
    if cols % 4 == 0 && prog.fits_texture(dy) {
        let groups = groups_1d(prog.ctx(), cols / 4, BIAS_GRAD_WG);
        return prog.dispatch_textured("blas", "bias_grad4", &[], &[(1, db)], &[(3, dy)], &p, groups);
    }
    let groups = groups_1d(prog.ctx(), cols, BIAS_GRAD_WG);
    prog.dispatch("blas", "bias_grad", &[], &[(1, db), (2, dy)], &p, groups)
}

/// Threads per workgroup of `bias_grad`; must match shaders/blas.wgsl::BIAS_GRAD_WG.
const BIAS_GRAD_WG: usize = 32;

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
}

/// Partial sums the first pass leaves for the second.
pub const REDUCE_PARTS: usize = 1024;

/// `out[index] (+)= sum(x)` (or the sum of squares), in two passes through `scratch`
/// (`REDUCE_PARTS` elements).
pub fn reduce(
    prog: &mut Program,
    out: &GpuTensor,
    x: &GpuTensor,
    scratch: &GpuTensor,
    p: Reduce,
) -> Result<()> {
    const OP: &str = "reduce";
    need(OP, "scratch", scratch, REDUCE_PARTS)?;
    if p.index >= out.len() {
        return Err(Error::range(OP, "index", p.index, format!("below {}", out.len())));
    }
    let n = to_u32(OP, "n", x.len())?;
    let first = ReduceParams { n, parts: REDUCE_PARTS as u32, index: 0, accumulate: 0 };
    prog.dispatch(
        "reduce",
        "reduce_partial",
        &[("SQUARE", p.square as u64)],
        &[(1, scratch), (2, x)],
        &first,
        [(REDUCE_PARTS / WG) as u32, 1, 1],
    )?;
    let second = ReduceParams {
        n: REDUCE_PARTS as u32,
        parts: REDUCE_PARTS as u32,
        index: p.index as u32,
        accumulate: p.accumulate as u32,
    };
    prog.dispatch("reduce", "reduce_final", &[], &[(1, out), (2, scratch)], &second, [1, 1, 1])
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
    nesterov: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    max_norm: f32,
    lo: f32,
    hi: f32,
    _pad: [u32; 3],
}

fn need_state(op: &'static str, state: &GpuTensor) -> Result<()> {
    need(op, "step state", state, step_state::LEN)
}

/// Decides from the loss and gradient norm in `state` whether the step is finite, and sets the
/// clipping scale for `max_norm` (0: no clipping).
pub fn finalize_step(prog: &mut Program, state: &GpuTensor, max_norm: f32) -> Result<()> {
    need_state("finalize_step", state)?;
    let p = OptimParams { max_norm, ..Default::default() };
    prog.dispatch("optim", "finalize_step", &[], &[(1, state)], &p, [1, 1, 1])
}

/// `grad *= state[CLIP_SCALE]`
pub fn clip_by_norm(prog: &mut Program, grad: &GpuTensor, state: &GpuTensor) -> Result<()> {
    need_state("clip_by_norm", state)?;
    let n = grad.len();
    let p = OptimParams { n: to_u32("clip_by_norm", "n", n)?, ..Default::default() };
    let groups = groups_1d(prog.ctx(), n, WG);
    prog.dispatch("optim", "clip_by_norm", &[], &[(1, state), (2, grad)], &p, groups)
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

pub fn sgd(
    prog: &mut Program,
    param: &GpuTensor,
    grad: &GpuTensor,
    momentum: Option<&GpuTensor>,
    state: &GpuTensor,
    o: Sgd,
) -> Result<()> {
    const OP: &str = "sgd";
    need_state(OP, state)?;
    let n = param.len();
    need(OP, "grad", grad, n)?;
    let mut args = vec![(1, state), (2, grad), (3, param)];
    let beta1 = match momentum {
        Some(m) if o.momentum != 0.0 => {
            need(OP, "momentum", m, n)?;
            args.push((4, m));
            o.momentum
        }
        None if o.momentum != 0.0 => {
            return Err(Error::invalid(OP, "momentum > 0 needs a momentum buffer"));
        }
        _ => 0.0,
    };
    let p = OptimParams {
        n: to_u32(OP, "n", n)?,
        nesterov: o.nesterov as u32,
        beta1,
        weight_decay: o.weight_decay,
        ..Default::default()
    };
    let groups = groups_1d(prog.ctx(), n, WG);
    let entry = if beta1 != 0.0 { "sgd_momentum" } else { "sgd" };
    prog.dispatch("optim", entry, &[], &args, &p, groups)
}

pub fn adagrad(
    prog: &mut Program,
    param: &GpuTensor,
    grad: &GpuTensor,
    sum: &GpuTensor,
    state: &GpuTensor,
    o: Adagrad,
) -> Result<()> {
    const OP: &str = "adagrad";
    need_state(OP, state)?;
    let n = param.len();
    need(OP, "grad", grad, n)?;
    need(OP, "sum", sum, n)?;
    let p = OptimParams {
        n: to_u32(OP, "n", n)?,
        eps: o.eps,
        weight_decay: o.weight_decay,
        ..Default::default()
    };
    let groups = groups_1d(prog.ctx(), n, WG);
    prog.dispatch("optim", "adagrad", &[], &[(1, state), (2, grad), (3, param), (4, sum)], &p, groups)
}

#[allow(clippy::too_many_arguments)]
pub fn adam(
    prog: &mut Program,
    param: &GpuTensor,
    grad: &GpuTensor,
    m: &GpuTensor,
    v: &GpuTensor,
    state: &GpuTensor,
    o: Adam,
) -> Result<()> {
    const OP: &str = "adam";
    need_state(OP, state)?;
    let n = param.len();
    need(OP, "grad", grad, n)?;
    need(OP, "m", m, n)?;
    need(OP, "v", v, n)?;
    let p = OptimParams {
        n: to_u32(OP, "n", n)?,
        beta1: o.beta1,
        beta2: o.beta2,
        eps: o.eps,
        weight_decay: o.weight_decay,
        ..Default::default()
    };
    let groups = groups_1d(prog.ctx(), n, WG);
    prog.dispatch("optim", "adam", &[], &[(1, state), (2, grad), (3, param), (4, m), (5, v)], &p, groups)
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
    // 4 columns a thread, the table read through its texture copy (see bias_grad).
    if p.width % 4 == 0 && prog.fits_texture(table) {
        let groups = groups_1d(prog.ctx(), p.n * p.width / 4, WG);
        let args = [(5, out), (3, idx)];
        return prog.dispatch_textured("gather", "gather4", &[], &args, &[(6, table)], &params, groups);
    }
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
    // 4 columns a thread, dout read through its texture copy (see bias_grad).
    if p.width % 4 == 0 && prog.fits_texture(dout) {
        let groups = groups_1d(prog.ctx(), p.n * p.width / 4, WG);
        let args = [(1, dtable), (3, starts), (4, rows)];
        return prog.dispatch_textured("gather", "scatter_add4", &[], &args, &[(7, dout)], &params, groups);
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
    _pad: u32,
}

/// How a step kernel uses one of its buffers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Reads it: through its texture copy where the program's `StepInputs` is `Textures`.
    Read,
    /// Writes it.
    Write,
    /// Reads and writes it (different elements, or a thread its own).
    ReadWrite,
    /// Reads it from the buffer in either variant (the u32 lengths).
    Storage,
}

/// Checks every buffer a step kernel touches against the extent `s` implies, and builds its
/// parameters, its override constants, its grid and its dispatch.
struct StepCheck {
    op: &'static str,
    s: Step,
    /// Batch rows per thread: 8 for batches of 8 or fewer (16 would compute rows that are never
    /// stored), else the program's choice where it made one, else see `new`.
    rows: usize,
    /// Units of the hidden state per thread: 4 forward for the LSTM and GRU (their 4 or 3 gate
    /// rows each), 16 forward for the RNN and backward for all; must match the kernels.
    units: usize,
}

impl StepCheck {
    fn new(prog: &Program, op: &'static str, s: Step, units: usize) -> StepCheck {
        let threads = s.hidden.div_ceil(units);
        let rows = match prog.step_rows() {
            _ if s.batch <= 8 => 8,
            Some(rows) => rows,
            // The context prefers 16 rows on a CPU adapter (half the texel loads per
            // multiply-add), but a grid of fewer than two workgroups a core leaves cores idle
            // while the last workgroups finish: there 8 rows, twice the workgroups, are faster
            // (RNN H=256 B=32 step 195/202 -> 179/183 us forward/backward on lavapipe; at
            // 16 rows it has 2 workgroups).
            None => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let groups16 = threads.div_ceil(16) * s.batch.div_ceil(16);
                match prog.ctx().step_rows() {
                    16 if groups16 < 2 * cores => 8,
                    rows => rows,
                }
            }
        };
        StepCheck { op, s, rows, units }
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
            _pad: 0,
        })
    }

    /// The override constants. VEC4: every run of 4 units the kernels touch starts on a vec4
    /// boundary of its buffer, so each is one vec4 access (shaders/step_common.wgsl).
    fn constants(&self) -> [(&'static str, u64); 2] {
        let s = &self.s;
        let vec4 = [s.hidden, s.state_base, s.bias_hh, s.out_stride, s.out_col].iter().all(|v| v % 4 == 0);
        [("VEC4", vec4 as u64), ("ROWS", self.rows as u64)]
    }

    /// A thread owns `units` units of `rows` batch rows, 16 threads a workgroup.
    fn groups(&self) -> [u32; 3] {
        [self.s.hidden.div_ceil(self.units).div_ceil(16) as u32, self.s.batch.div_ceil(self.rows) as u32, 1]
    }

    fn last_t(&self) -> usize {
        self.s.t.max(self.s.next_t)
    }

    /// The state slot `slot` (B x H) of `states` (or of the LSTM's cells).
    fn slot(&self, states: &GpuTensor, slot: usize) -> Result<GpuTensor> {
        let n = self.s.batch * self.s.hidden;
        states.view(self.s.state_base + slot * n, &[n])
    }

    /// Step `t`'s rows (B x width) of a per-step buffer (T, B, width).
    fn step_of(&self, t: &GpuTensor, width: usize) -> Result<GpuTensor> {
        let n = self.s.batch * width;
        t.view(self.s.t * n, &[n])
    }

    /// Dispatches `entry` of the step family of `cell` with `buffers` (storage binding, tensor,
    /// access) and W_hh, the kernel writing `writes` alone. Under `StepInputs::Textures` what
    /// the kernel reads is bound as its texture copy at the storage binding + 12
    /// (shaders/step_reads_textures.wgsl), and only what it writes as storage; where a copy
    /// would not fit a texture the kernel reads the buffers.
    fn dispatch(
        &self,
        prog: &mut Program,
        cell: &'static str,
        constants: &[(&'static str, u64)],
        buffers: &[(u32, &GpuTensor, Access)],
        w_hh: &GpuTensor,
        writes: &[GpuTensor],
    ) -> Result<()> {
        let read = |a: Access| a == Access::Read || a == Access::ReadWrite;
        let inputs = match prog.step_inputs() {
            StepInputs::Textures if buffers.iter().all(|&(_, t, a)| !read(a) || prog.fits_texture(t)) => {
                StepInputs::Textures
            }
            _ => StepInputs::Storage,
        };
        let mut storage = Vec::new();
        let mut textured = vec![(6, w_hh)];
        for &(binding, t, access) in buffers {
            if inputs == StepInputs::Textures && read(access) {
                textured.push((binding + 12, t));
            }
            if inputs == StepInputs::Storage || access != Access::Read {
                storage.push((binding, t));
            }
        }
        let family = inputs.family(prog.shared_rows(), cell);
        prog.dispatch_writing(
            family,
            self.op,
            constants,
            &storage,
            &textured,
            writes,
            &self.params()?,
            self.groups(),
        )
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
    let c = StepCheck::new(prog, "lstm_step_forward", s, 4);
    let (h, b) = (s.hidden, s.batch);
    c.common(Cell::Lstm, w_hh, lengths)?;
    c.states(states)?;
    c.at_least("cells", cells, s.state_base + (s.in_slot.max(s.out_slot) + 1) * b * h)?;
    c.per_step("gates", gates, 4 * h, s.t)?;
    c.per_step("y", y, s.out_stride, s.t)?;
    c.per_step("xw", xw, 4 * h, s.t)?;
    c.at_least("bias", bias, s.bias_hh + 4 * h)?;
    let writes = [
        c.slot(states, s.out_slot)?,
        c.slot(cells, s.out_slot)?,
        c.step_of(gates, 4 * h)?,
        c.step_of(y, s.out_stride)?,
    ];
    use Access::*;
    c.dispatch(
        prog,
        "lstm",
        &c.constants(),
        &[
            (1, states, ReadWrite),
            (2, cells, ReadWrite),
            (3, gates, Write),
            (4, y, Write),
            (5, xw, Read),
            (7, bias, Read),
            (8, lengths, Storage),
        ],
        w_hh,
        &writes,
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
    let c = StepCheck::new(prog, "lstm_step_backward", s, 16);
    let (h, b) = (s.hidden, s.batch);
    c.common(Cell::Lstm, w_hh, lengths)?;
    c.at_least("cells", cells, s.state_base + (s.in_slot.max(s.out_slot) + 1) * b * h)?;
    c.per_step("gates", gates, 4 * h, s.t)?;
    c.per_step("dy", dy, s.out_stride, s.t)?;
    c.per_step("dg", dg, 4 * h, c.last_t())?;
    need(c.op, "carry", carry, 2 * b * h)?;
    let writes = [c.step_of(dg, 4 * h)?, carry.clone()];
    use Access::*;
    c.dispatch(
        prog,
        "lstm",
        &c.constants(),
        &[
            (2, cells, Read),
            (3, gates, Read),
            (8, lengths, Storage),
            (9, dy, Read),
            (10, dg, ReadWrite),
            (12, carry, ReadWrite),
        ],
        w_hh,
        &writes,
    )
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
    let c = StepCheck::new(prog, "gru_step_forward", s, 4);
    let h = s.hidden;
    c.common(Cell::Gru, w_hh, lengths)?;
    c.states(states)?;
    c.per_step("gates", gates, 4 * h, s.t)?;
    c.per_step("y", y, s.out_stride, s.t)?;
    c.per_step("xw", xw, 3 * h, s.t)?;
    c.at_least("bias", bias, s.bias_hh + 3 * h)?;
    let writes = [c.slot(states, s.out_slot)?, c.step_of(gates, 4 * h)?, c.step_of(y, s.out_stride)?];
    use Access::*;
    c.dispatch(
        prog,
        "gru",
        &c.constants(),
        &[
            (1, states, ReadWrite),
            (3, gates, Write),
            (4, y, Write),
            (5, xw, Read),
            (7, bias, Read),
            (8, lengths, Storage),
        ],
        w_hh,
        &writes,
    )
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
    let c = StepCheck::new(prog, "gru_step_backward", s, 16);
    let (h, b) = (s.hidden, s.batch);
    c.common(Cell::Gru, w_hh, lengths)?;
    c.states(states)?;
    c.per_step("gates", gates, 4 * h, s.t)?;
    c.per_step("dy", dy, s.out_stride, s.t)?;
    c.per_step("dgx", dgx, 3 * h, s.t)?;
    c.per_step("dgh", dgh, 3 * h, c.last_t())?;
    need(c.op, "carry", carry, 2 * b * h)?;
    let writes = [c.step_of(dgh, 3 * h)?, c.step_of(dgx, 3 * h)?, carry.clone()];
    use Access::*;
    c.dispatch(
        prog,
        "gru",
        &c.constants(),
        &[
            (1, states, Read),
            (3, gates, Read),
            (8, lengths, Storage),
            (9, dy, Read),
            (10, dgh, ReadWrite),
            (11, dgx, Write),
            (12, carry, ReadWrite),
        ],
        w_hh,
        &writes,
    )
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
    let c = StepCheck::new(prog, "rnn_step_forward", s, 16);
    let [vec4, rows] = c.constants();
    c.common(Cell::Rnn { relu }, w_hh, lengths)?;
    c.states(states)?;
    c.per_step("y", y, s.out_stride, s.t)?;
    c.per_step("xw", xw, s.hidden, s.t)?;
    c.at_least("bias", bias, s.bias_hh + s.hidden)?;
    let writes = [c.slot(states, s.out_slot)?, c.step_of(y, s.out_stride)?];
    use Access::*;
    c.dispatch(
        prog,
        "rnn",
        &[vec4, rows, ("RELU", relu as u64)],
        &[(1, states, ReadWrite), (4, y, Write), (5, xw, Read), (7, bias, Read), (8, lengths, Storage)],
        w_hh,
        &writes,
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
    let c = StepCheck::new(prog, "rnn_step_backward", s, 16);
    let [vec4, rows] = c.constants();
    c.common(Cell::Rnn { relu }, w_hh, lengths)?;
    c.states(states)?;
    c.per_step("dy", dy, s.out_stride, s.t)?;
    c.per_step("dg", dg, s.hidden, c.last_t())?;
    need(c.op, "carry", carry, 2 * s.batch * s.hidden)?;
    let writes = [c.step_of(dg, s.hidden)?, carry.clone()];
    use Access::*;
    c.dispatch(
        prog,
        "rnn",
        &[vec4, rows, ("RELU", relu as u64)],
        &[
            (1, states, Read),
            (8, lengths, Storage),
            (9, dy, Read),
            (10, dg, ReadWrite),
            (12, carry, ReadWrite),
        ],
        w_hh,
        &writes,
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
