//! Every native CPU kernel against its plain-loop twin, through the `Backend` interface both
//! devices implement: the cases behind `rnn-gpu verify --device cpu` and the native kernel tests.
//!
//! Each case is drawn once and run on both devices from the same buffers. Outputs a kernel
//! overwrites start as NaN, so an element it fails to write fails the comparison; outputs it
//! accumulates into start from the same random values. Tolerances are the GPU checks' (DESIGN.md).

use super::steps::{self, nan, upload};
use super::{ATTENTION_SHAPES, Check, MATMUL_SHAPES, SIZES, STEP_SHAPES, Tolerance, compare};
use crate::backend::Backend;
use crate::error::Result;
use crate::native::NativeBackend;
use crate::native::sgemm::Isa;
use crate::ops::index_lists;
use crate::ops::{Attention, CopyCols, Dropout, Gather, Matmul, Op, Reduce, step_state};
use crate::reference::ReferenceBackend;
use crate::rng::Rng;
use crate::update::Optimizer;
use crate::wait::block_on;

/// What a case runs, with the meaning of its float buffers `f` and integer buffers `u`.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    /// f: C, A, B.
    Matmul(Matmul),
    /// f: y, bias.
    MatmulBias(Matmul),
    /// f: db, dy.
    BiasGrad { rows: usize, cols: usize },
    /// f: y, x.
    /// f: y, x.
    TanhForward,
    /// f: dx, y, dy.
    TanhBackward,
    /// f: grad.
    ClipByValue(f32, f32),
    /// f: out, x.
    Reduce(Reduce),
    /// f: y, x.
    SoftmaxRows { rows: usize, cols: usize },
    /// f: loss, dx, logits, weights; u: targets.
    SoftmaxXent { rows: usize, cols: usize },
    /// f: loss, dx, pred, target, weights.
    Mse { rows: usize, cols: usize },
    /// f: dx, y, dy.
    SoftmaxBackward { rows: usize, cols: usize },
    /// f: out, table; u: idx.
    Gather(Gather),
    /// f: dtable, dout; u: starts, rows.
    ScatterAdd(Gather),
    /// f: out (dx), x (dy); u: seeds.
    Dropout { p: Dropout, backward: bool },
    /// f: param, grad, state, then the rule's state buffers.
    Update(Optimizer),
    /// f: state, grads.
    FinalizeStep(f32),
    /// f: y, x.
    CopyCols(CopyCols),
    /// f: out, x, enc; u: src_len.
    AttentionDots(Attention, bool),
    /// f: out, w, x (accumulate, transposed).
    AttentionMix(Attention, bool, bool),
}

struct Case {
    name: &'static str,
    shape: String,
    kernel: Kernel,
    f: Vec<Vec<f32>>,
    u: Vec<Vec<u32>>,
    /// The float buffers compared after the run, by index and name.
    outputs: Vec<(usize, &'static str)>,
    tol: Tolerance,
}

/// A case's float and integer buffers on one device.
fn run<B: Backend<Elem = f32>>(be: &mut B, case: &Case) -> Result<Vec<Vec<f32>>> {
    let (f, u) = upload(be, &case.f, &case.u)?;
    match case.kernel {
        Kernel::Matmul(p) => be.run(Op::Matmul { c: &f[0], a: &f[1], b: &f[2], p, bias: None })?,
        Kernel::MatmulBias(p) => be.run(Op::Matmul { c: &f[0], a: &f[1], b: &f[2], bias: Some(&f[3]), p })?,
        Kernel::BiasGrad { rows, cols } => {
            be.run(Op::BiasGrad { db: &f[0], dy: &f[1], rows, cols, db2: None })?
        }
        Kernel::TanhForward => be.run(Op::TanhForward { y: &f[0], x: &f[1] })?,
        Kernel::TanhBackward => be.run(Op::TanhBackward { dx: &f[0], y: &f[1], dy: &f[2] })?,
        Kernel::ClipByValue(lo, hi) => be.run(Op::ClipByValue { grad: &f[0], lo, hi })?,
        Kernel::Reduce(p) => be.run(Op::Reduce { out: &f[0], x: &f[1], p })?,
        Kernel::SoftmaxRows { rows, cols } => be.run(Op::SoftmaxRows { y: &f[0], x: &f[1], rows, cols })?,
        Kernel::SoftmaxXent { rows, cols } => {
            let (loss, dx, logits, weights) = (&f[0], &f[1], &f[2], &f[3]);
            be.run(Op::SoftmaxXent { loss, dx, logits, targets: &u[0], weights, rows, cols })?
        }
        Kernel::Mse { rows, cols } => {
            let (loss, dx, pred, target, weights) = (&f[0], &f[1], &f[2], &f[3], &f[4]);
            be.run(Op::Mse { loss, dx, pred, target, weights, rows, cols })?
        }
        Kernel::SoftmaxBackward { rows, cols } => {
            be.run(Op::SoftmaxBackward { dx: &f[0], y: &f[1], dy: &f[2], rows, cols })?
        }
        Kernel::Gather(p) => be.run(Op::Gather { out: &f[0], table: &f[1], idx: &u[0], p })?,
        Kernel::ScatterAdd(p) => {
            be.run(Op::ScatterAdd { dtable: &f[0], dout: &f[1], starts: &u[0], rows: &u[1], p })?
        }
        Kernel::Dropout { p, backward } => {
            be.run(Op::Dropout { out: &f[0], x: &f[1], seeds: &u[0], p, backward })?
        }
        Kernel::Update(rule) => be.run(Op::Update {
            param: &f[0],
            grad: &f[1],
            slots: &f[3..].iter().collect::<Vec<_>>(),
            state: &f[2],
            rule: &rule,
        })?,
        Kernel::FinalizeStep(max_norm) => {
            be.run(Op::FinalizeStep { state: &f[0], grads: &f[1], max_norm })?
        }
        Kernel::CopyCols(p) => be.run(Op::CopyCols { y: &f[0], x: &f[1], p })?,
        Kernel::AttentionDots(a, mask) => {
            be.run(Op::AttentionDots { out: &f[0], x: &f[1], enc: &f[2], src_len: &u[0], a, mask })?
        }
        Kernel::AttentionMix(a, accumulate, transposed) => {
            be.run(Op::AttentionMix { out: &f[0], w: &f[1], x: &f[2], a, accumulate, transposed })?
        }
    }
    case.outputs.iter().map(|&(i, _)| block_on("verify::native_checks", be.read(&f[i]))).collect()
}

/// `case` on the native device on `isa` against the reference; the instruction set is named in
/// the shape when `named`.
fn check(case: &Case, isa: Isa, named: bool) -> Result<Vec<Check>> {
    let mut native = run(&mut NativeBackend::with_isa(isa)?, case)?;
    let mut reference = run(&mut ReferenceBackend::<f32>::new(), case)?;
    // Clipping must keep a NaN as it is (the finiteness guard refuses the step after it): NaN
    // on both sides is the expected result there, and a marker stands for it.
    if let Kernel::ClipByValue(..) = case.kernel {
        for v in native.iter_mut().chain(reference.iter_mut()).flatten() {
            if v.is_nan() {
                *v = 1e30;
            }
        }
    }
    Ok(case
        .outputs
        .iter()
        .zip(native.iter().zip(&reference))
        .map(|(&(_, what), (n, r))| {
            let kernel =
                if case.outputs.len() == 1 { case.name.to_string() } else { format!("{}.{what}", case.name) };
            let shape = if named { format!("{} {}", case.shape, isa.name()) } else { case.shape.clone() };
            compare(&kernel, shape, n, r, case.tol)
        })
        .collect())
}

/// A step state in which the update applies: finite loss, step 3, learning rate 0.01.
fn applied_state() -> Vec<f32> {
    let mut s = vec![0.0; step_state::LEN];
    (s[step_state::OK], s[step_state::STEP], s[step_state::LR], s[step_state::CLIP_SCALE]) =
        (1.0, 3.0, 0.01, 0.7);
    s
}

/// Every native kernel at the GPU checks' shapes, plus sizes past the native kernels' chunk and
/// parallel thresholds: what `rnn-gpu verify --device cpu` prints.
pub fn kernel_checks() -> Result<Vec<Check>> {
    let mut rng = Rng::seed_from_u64(7);
    let mut cases = Vec::new();
    let el = Tolerance::ELEMENTWISE;
    // Products: the GPU's shapes, and products large enough to run on every thread.
    let big = [(128, 1024, 64), (32, 1024, 256), (64, 512, 2048)];
    for &(m, n, k) in MATMUL_SHAPES.iter().chain(&big) {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let p = Matmul { m, n, k, trans_a: ta, trans_b: tb, accumulate: (m + n + k) % 2 == 1 };
            let c = if p.accumulate { rng.uniform_vec(m * n, -1.0, 1.0) } else { nan(m * n) };
            cases.push(Case {
                name: "matmul",
                shape: format!(
                    "{m}x{n}x{k}{}{}{}",
                    if ta { " Aᵀ" } else { "" },
                    if tb { " Bᵀ" } else { "" },
                    if p.accumulate { " +=" } else { "" }
                ),
                kernel: Kernel::Matmul(p),
                f: vec![c, rng.uniform_vec(m * k, -1.0, 1.0), rng.uniform_vec(k * n, -1.0, 1.0)],
                u: vec![],
                outputs: vec![(0, "C")],
                tol: Tolerance::accumulation(k),
            });
        }
    }
    // Elementwise kernels, past two chunks (32768 elements) too.
    for &n in SIZES.iter().chain(&[40_000]) {
        let mut x = || rng.uniform_vec(n, -3.0, 3.0);
        let simple = |name, kernel, f: Vec<Vec<f32>>| Case {
            name,
            shape: format!("n={n}"),
            kernel,
            f,
            u: vec![],
            outputs: vec![(0, "out")],
            tol: el,
        };
        let (a, b, c) = (x(), x(), x());
        cases.push(simple("tanh_forward", Kernel::TanhForward, vec![nan(n), a.clone()]));
        let y: Vec<f32> = b.iter().map(|v| v.tanh()).collect();
        cases.push(simple("tanh_backward", Kernel::TanhBackward, vec![a.clone(), y, c.clone()]));
        let mut g = a.clone();
        if n > 7 {
            (g[3], g[5]) = (f32::NAN, f32::INFINITY);
        }
        cases.push(simple("clip_by_value", Kernel::ClipByValue(-0.5, 0.8), vec![g]));
        for (square, accumulate) in [(false, false), (true, false), (true, true)] {
            let p = Reduce { index: 2, square, accumulate };
            cases.push(Case {
                tol: Tolerance::accumulation(n * 9),
                outputs: vec![(0, "out")],
                ..simple(
                    if square { "reduce square" } else { "reduce" },
                    Kernel::Reduce(p),
                    vec![vec![0.5; 4], c.clone()],
                )
            });
        }
        for backward in [false, true] {
            let p = Dropout { prob: 0.3, salt: 0x9e37 };
            let out = if backward { a.clone() } else { nan(n) };
            cases.push(Case {
                u: vec![vec![12345]],
                ..simple(
                    if backward { "dropout_backward" } else { "dropout_forward" },
                    Kernel::Dropout { p, backward },
                    vec![out, b.clone()],
                )
            });
        }
        // The update rules: param, grad, state, then their state buffers (positive, as Adagrad's
        // sums and Adam's second moments must be).
        let pos: Vec<f32> = c.iter().map(|v| v.abs()).collect();
        for (name, rule) in super::rules_under_test(0.01) {
            let slots = rule.state_slots();
            let mut f = vec![a.clone(), b.clone(), applied_state()];
            f.extend(std::iter::repeat_n(pos.clone(), slots));
            let mut outputs = vec![(0, "param")];
            outputs.extend([(3, "state0"), (4, "state1")].into_iter().take(slots));
            cases.push(Case {
                name,
                shape: format!("n={n}"),
                kernel: Kernel::Update(rule),
                f,
                u: vec![],
                outputs,
                tol: el,
            });
        }
    }
    // The gradient norm (a sum past the parallel threshold too), the decision and the scale.
    for n in [7, 40_000] {
        for max_norm in [0.0, 1.0] {
            let mut state = applied_state();
            state[step_state::LOSS] = 2.0;
            cases.push(Case {
                name: "finalize_step",
                shape: format!("n={n} max_norm {max_norm}"),
                kernel: Kernel::FinalizeStep(max_norm),
                f: vec![state, rng.uniform_vec(n, -1.0, 1.0)],
                u: vec![],
                outputs: vec![(0, "state")],
                tol: Tolerance::accumulation(n),
            });
        }
    }
    // Row kernels, past the row blocks too.
    for &(rows, cols) in &[(1, 1), (3, 7), (50, 65), (130, 257), (2048, 65)] {
        let n = rows * cols;
        let shape = format!("{rows}x{cols}");
        let x = rng.uniform_vec(n, -4.0, 4.0);
        let mut weights: Vec<f32> = (0..rows).map(|_| rng.uniform_in(0.0, 2.0) as f32).collect();
        weights[rows / 2] = 0.0;
        let targets: Vec<u32> = (0..rows).map(|_| rng.below(cols) as u32).collect();
        let dy = rng.uniform_vec(n, -1.0, 1.0);
        let (a3, b3) = (rng.uniform_vec(rows * 3, -1.0, 1.0), rng.uniform_vec(3 * cols, -1.0, 1.0));
        let mut sm = vec![0.0; n];
        crate::reference::kernels::softmax_rows(&mut sm, &x, rows, cols);
        let acc = Tolerance::accumulation(rows);
        let wide = Tolerance::accumulation(cols);
        let row = |name, kernel, f, u, outputs, tol| Case {
            name,
            shape: shape.clone(),
            kernel,
            f,
            u,
            outputs,
            tol,
        };
        cases.push(row(
            "matmul_bias",
            Kernel::MatmulBias(Matmul::new(rows, cols, 3)),
            vec![x.clone(), a3, b3, dy[..cols].to_vec()],
            vec![],
            vec![(0, "c")],
            Tolerance::accumulation(3),
        ));
        cases.push(row(
            "bias_grad",
            Kernel::BiasGrad { rows, cols },
            vec![dy[..cols].to_vec(), x.clone()],
            vec![],
            vec![(0, "db")],
            acc,
        ));
        cases.push(row(
            "softmax_rows",
            Kernel::SoftmaxRows { rows, cols },
            vec![nan(n), x.clone()],
            vec![],
            vec![(0, "y")],
            wide,
        ));
        cases.push(row(
            "softmax_xent",
            Kernel::SoftmaxXent { rows, cols },
            vec![nan(rows), nan(n), x.clone(), weights.clone()],
            vec![targets],
            vec![(0, "loss"), (1, "dx")],
            wide,
        ));
        cases.push(row(
            "mse",
            Kernel::Mse { rows, cols },
            vec![nan(rows), nan(n), x.clone(), dy.clone(), weights],
            vec![],
            vec![(0, "loss"), (1, "dx")],
            wide,
        ));
        cases.push(row(
            "softmax_backward",
            Kernel::SoftmaxBackward { rows, cols },
            vec![nan(n), sm, dy],
            vec![],
            vec![(0, "dx")],
            wide,
        ));
    }
    // Lookups by rows and by columns (a transposed table, as the input projection reads W_ih).
    for &(n, width, vocab) in &[(1, 1, 1), (7, 5, 3), (300, 65, 65), (100, 40, 257), (2048, 1024, 65)] {
        for columns in [false, true] {
            let p = if columns {
                Gather { n, width, idx_stride: 1, col_stride: vocab }
            } else {
                Gather { n, width, idx_stride: width, col_stride: 1 }
            };
            let idx: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
            let table = rng.uniform_vec(vocab * width, -1.0, 1.0);
            let shape = format!("n={n} width {width} vocab {vocab}{}", if columns { " columns" } else { "" });
            cases.push(Case {
                name: "gather",
                shape: shape.clone(),
                kernel: Kernel::Gather(p),
                f: vec![nan(n * width), table.clone()],
                u: vec![idx.clone()],
                outputs: vec![(0, "out")],
                tol: el,
            });
            let (starts, rows) = index_lists(&idx, vocab);
            let sp = Gather { n: vocab, ..p };
            cases.push(Case {
                name: "scatter_add",
                shape,
                kernel: Kernel::ScatterAdd(sp),
                f: vec![table, rng.uniform_vec(n * width, -1.0, 1.0)],
                u: vec![starts, rows],
                outputs: vec![(0, "dtable")],
                tol: Tolerance::accumulation(n),
            });
        }
    }
    // Past the parallel threshold (32768 elements) too.
    for &(rows, width) in &[(1, 1), (7, 5), (64, 130), (300, 129)] {
        for accumulate in [false, true] {
            let p = super::copy_cols_case(rows, width, accumulate);
            let y = rng.uniform_vec(rows * (width + 3) + 2, -1.0, 1.0);
            let x = rng.uniform_vec(rows * (width + 5) + 1, -1.0, 1.0);
            cases.push(Case {
                name: "copy_cols",
                shape: format!("{rows}x{width}{}", if accumulate { " +=" } else { "" }),
                kernel: Kernel::CopyCols(p),
                f: vec![y, x],
                u: vec![],
                outputs: vec![(0, "y")],
                tol: el,
            });
        }
    }
    for &(tgt, batch, src, width) in &ATTENTION_SHAPES {
        let a = Attention { tgt, batch, src, width };
        let shape = format!("Tt{tgt} B{batch} Ts{src} A{width}");
        let (x, enc) = (
            rng.uniform_vec(tgt * batch * width, -1.0, 1.0),
            rng.uniform_vec(src * batch * width, -1.0, 1.0),
        );
        let w = rng.uniform_vec(tgt * batch * src, 0.0, 1.0);
        let src_len: Vec<u32> = (0..batch).map(|_| 1 + rng.below(src) as u32).collect();
        let tol = Tolerance::accumulation(width.max(src).max(tgt));
        for flag in [false, true] {
            let mix_out =
                if flag { rng.uniform_vec(tgt * batch * width, -1.0, 1.0) } else { nan(tgt * batch * width) };
            let mix_t_out =
                if flag { rng.uniform_vec(src * batch * width, -1.0, 1.0) } else { nan(src * batch * width) };
            let case = |name, kernel, f, u| Case {
                name,
                shape: format!("{shape}{}", if flag { " flag" } else { "" }),
                kernel,
                f,
                u,
                outputs: vec![(0, "out")],
                tol,
            };
            cases.push(case(
                "attention_dots",
                Kernel::AttentionDots(a, flag),
                vec![nan(tgt * batch * src), x.clone(), enc.clone()],
                vec![src_len.clone()],
            ));
            cases.push(case(
                "attention_mix",
                Kernel::AttentionMix(a, flag, false),
                vec![mix_out, w.clone(), enc.clone()],
                vec![],
            ));
            cases.push(case(
                "attention_mix_t",
                Kernel::AttentionMix(a, flag, true),
                vec![mix_t_out, w.clone(), x.clone()],
                vec![],
            ));
        }
    }
    // The products and the fused steps on every instruction set this CPU runs (their
    // micro-kernels differ); the rest has one implementation.
    let isas = Isa::available();
    let mut out = Vec::new();
    for case in cases {
        let per_isa = matches!(
            case.kernel,
            Kernel::Matmul(_) | Kernel::MatmulBias(_) | Kernel::AttentionDots(..) | Kernel::AttentionMix(..)
        );
        for &isa in if per_isa { &isas[..] } else { &isas[..1] } {
            out.extend(check(&case, isa, per_isa)?);
        }
    }
    // Every cell, and the projected LSTM (its steps given W_hh's factors) at P = H/2 or 1.
    let projected = [(crate::cell::Cell::Lstm, true)];
    for (cell, factors) in crate::cell::Cell::ALL.map(|c| (c, false)).into_iter().chain(projected) {
        for &(t, b, h) in STEP_SHAPES.iter().chain(&[(3, 32, 256), (2, 5, 300)]) {
            let proj = if factors { (h / 2).max(1) } else { 0 };
            for reverse in [false, true] {
                let seed = rng.next_u64();
                for &isa in &isas {
                    out.extend(block_on(
                        "verify::native_checks",
                        steps::check_steps(
                            NativeBackend::with_isa(isa)?,
                            isa.name(),
                            cell,
                            (t, b, h),
                            proj,
                            reverse,
                            seed,
                        ),
                    )?);
                }
            }
        }
    }
    Ok(out)
}
