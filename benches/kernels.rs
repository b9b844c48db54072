//! One row per kernel family at a size a training step of the standard LSTM case (H=256, B=32,
//! T=64, V=65) uses: the GPU kernel, the native CPU device's and the plain-loop twin in the same
//! run. Criterion's "elem/s" are output elements
//! per second. `RNN_GPU_BENCH_QUICK=1` shrinks the sizes for a smoke run. (The matmul and the
//! whole training step have benches of their own.)

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rnn_gpu::Optimizer;
use rnn_gpu::backend::Backend;
use rnn_gpu::cell::Cell;
use rnn_gpu::gpu::kernels as gk;
use rnn_gpu::gpu::{GpuContext, GpuTensor, Program};
use rnn_gpu::host::HostTensor;
use rnn_gpu::native::NativeBackend;
use rnn_gpu::native::kernels as nk;
use rnn_gpu::ops::{Attention, CopyCols, Dropout, Gather, Reduce, Step, StepMode, step_state};
use rnn_gpu::ops::{Op, StepBufs};
use rnn_gpu::reference::ReferenceBackend;
use rnn_gpu::reference::kernels::{self as cpu, RowLoss};
use rnn_gpu::rng::Rng;

fn quick() -> bool {
    std::env::var("RNN_GPU_BENCH_QUICK").as_deref() == Ok("1")
}

struct Sizes {
    h: usize,
    b: usize,
    t: usize,
    v: usize,
}

fn sizes() -> Sizes {
    if quick() { Sizes { h: 16, b: 4, t: 4, v: 7 } } else { Sizes { h: 256, b: 32, t: 64, v: 65 } }
}

fn up(ctx: &GpuContext, v: &[f32]) -> GpuTensor {
    ctx.upload("bench", &[v.len()], v).unwrap()
}

/// A buffer of the native device holding `v`.
fn host(be: &mut NativeBackend, v: &[f32]) -> HostTensor<f32> {
    let t = be.alloc("bench", v.len()).unwrap();
    be.write(&t, v).unwrap();
    t
}

/// Times one recorded program (run and wait), the native kernel and the twin, as `family/gpu`,
/// `family/native` and `family/reference`.
fn pair(
    c: &mut Criterion,
    ctx: &Arc<GpuContext>,
    family: &str,
    elements: usize,
    prog: Program,
    mut on_native: impl FnMut(),
    mut on_cpu: impl FnMut(),
) {
    let mut g = c.benchmark_group(family);
    g.sample_size(10);
    g.throughput(Throughput::Elements(elements as u64));
    g.bench_function(BenchmarkId::new("gpu", elements), |b| {
        b.iter(|| {
            prog.run().unwrap();
            ctx.wait("bench").unwrap()
        })
    });
    g.bench_function(BenchmarkId::new("native", elements), |b| b.iter(&mut on_native));
    g.bench_function(BenchmarkId::new("reference", elements), |b| b.iter(&mut on_cpu));
    g.finish();
}

fn bench(c: &mut Criterion) {
    if std::env::var("RNN_GPU_NO_GPU_TESTS").as_deref() == Ok("1") {
        eprintln!("benchmark skipped: RNN_GPU_NO_GPU_TESTS=1");
        return;
    }
    let ctx = GpuContext::new().expect("a GPU adapter (apt-get install mesa-vulkan-drivers)");
    let s = sizes();
    let mut rng = Rng::seed_from_u64(1);
    let (rows, n4) = (s.t * s.b, s.t * s.b * 4 * s.h);

    // activation.wgsl: the tanh of every gate of a step's batch.
    let x = rng.uniform_vec(n4, -3.0, 3.0);
    let (gx, gy) = (up(&ctx, &x), up(&ctx, &x));
    let mut prog = Program::new(&ctx);
    gk::tanh_forward(&mut prog, &gy, &gx).unwrap();
    let (mut y, mut yn) = (x.clone(), x.clone());
    pair(
        c,
        &ctx,
        "activation_tanh_forward",
        n4,
        prog,
        || nk::tanh_forward(&mut yn, &x),
        || cpu::tanh_forward(&mut y, &x),
    );

    // blas.wgsl: bias gradient over all steps.
    let dg = rng.uniform_vec(n4, -1.0, 1.0);
    let (gdg, gdb) = (up(&ctx, &dg), up(&ctx, &vec![0.0; 4 * s.h]));
    let mut prog = Program::new(&ctx);
    gk::bias_grad(&mut prog, &gdb, None, &gdg, rows, 4 * s.h).unwrap();
    let (mut db, mut dbn) = (vec![0.0; 4 * s.h], vec![0.0; 4 * s.h]);
    pair(
        c,
        &ctx,
        "blas_bias_grad",
        4 * s.h,
        prog,
        || nk::bias_grad(&mut dbn, &dg, rows, 4 * s.h),
        || cpu::bias_grad(&mut db, &dg, rows, 4 * s.h),
    );

    // reduce.wgsl: the squared norm of a flat gradient.
    let scratch = ctx.alloc("scratch", &[gk::REDUCE_PARTS]).unwrap();
    let gstate = up(&ctx, &[0.0; step_state::LEN]);
    let mut prog = Program::new(&ctx);
    let p = Reduce { index: step_state::GRAD_SUMSQ, square: true, accumulate: false };
    gk::reduce(&mut prog, &gstate, &gdg, &scratch, p, None).unwrap();
    let (mut state, mut staten, mut partials) =
        (vec![0.0f32; step_state::LEN], vec![0.0f32; step_state::LEN], Vec::new());
    pair(
        c,
        &ctx,
        "reduce_sumsq",
        n4,
        prog,
        || nk::reduce(&mut staten, &dg, p, &mut partials),
        || cpu::reduce(&mut state, &dg, p),
    );

    // loss.wgsl: softmax cross-entropy of the head.
    let logits = rng.uniform_vec(rows * s.v, -3.0, 3.0);
    let targets: Vec<u32> = (0..rows).map(|_| rng.below(s.v) as u32).collect();
    let weights = vec![1.0 / rows as f32; rows];
    let (gl, gd, gt, gw, gloss) = (
        up(&ctx, &logits),
        up(&ctx, &logits),
        ctx.upload_u32("t", &[rows], &targets).unwrap(),
        up(&ctx, &weights),
        up(&ctx, &weights),
    );
    let mut prog = Program::new(&ctx);
    gk::softmax_xent(&mut prog, &gloss, &gd, &gl, &gt, &gw, rows, s.v).unwrap();
    let (mut loss, mut dx) = (weights.clone(), logits.clone());
    let (mut lossn, mut dxn) = (weights.clone(), logits.clone());
    pair(
        c,
        &ctx,
        "loss_softmax_xent",
        rows * s.v,
        prog,
        || {
            nk::softmax_xent(
                RowLoss { loss: &mut lossn, dx: &mut dxn, weights: &weights, rows, cols: s.v },
                &logits,
                &targets,
            )
        },
        || {
            cpu::softmax_xent(
                RowLoss { loss: &mut loss, dx: &mut dx, weights: &weights, rows, cols: s.v },
                &logits,
                &targets,
            )
        },
    );

    // optim.wgsl: Adam over the parameters of the case.
    let n = 4 * s.h * (s.h + s.v) + s.v * s.h;
    let param = rng.uniform_vec(n, -0.1, 0.1);
    let grad = rng.uniform_vec(n, -0.1, 0.1);
    let mut st = vec![0.0f32; step_state::LEN];
    st[step_state::OK] = 1.0;
    st[step_state::STEP] = 1.0;
    st[step_state::LR] = 1e-3;
    let (gp, gg, gm, gv, gs) =
        (up(&ctx, &param), up(&ctx, &grad), up(&ctx, &vec![0.0; n]), up(&ctx, &vec![0.0; n]), up(&ctx, &st));
    let o = Optimizer::adam(1e-3);
    let mut prog = Program::new(&ctx);
    gk::update(&mut prog, &gp, &gg, &[&gm, &gv], &gs, &o).unwrap();
    let (mut pc, mut mc, mut vc) = (param.clone(), vec![0.0; n], vec![0.0; n]);
    let (mut pn, mut mn, mut vn) = (param.clone(), vec![0.0; n], vec![0.0; n]);
    pair(
        c,
        &ctx,
        "optim_adam",
        n,
        prog,
        || nk::update(&mut pn, &grad, &mut [&mut mn, &mut vn], &st, &o),
        || o.apply(&mut pc, &grad, &mut [&mut mc, &mut vc], &st),
    );

    // gather.wgsl: the one-hot input projection (columns of W_ih) and its gradient.
    let table = rng.uniform_vec(4 * s.h * s.v, -0.1, 0.1);
    let ids: Vec<u32> = (0..rows).map(|_| rng.below(s.v) as u32).collect();
    let pg = Gather { n: rows, width: 4 * s.h, idx_stride: 1, col_stride: s.v };
    let (gtab, gids, gout) =
        (up(&ctx, &table), ctx.upload_u32("ids", &[rows], &ids).unwrap(), up(&ctx, &vec![0.0; n4]));
    let mut prog = Program::new(&ctx);
    gk::gather(&mut prog, &gout, &gtab, &gids, pg).unwrap();
    let (mut out, mut outn, mut sums) = (vec![0.0; n4], vec![0.0; n4], Vec::new());
    pair(
        c,
        &ctx,
        "gather_onehot_columns",
        n4,
        prog,
        || nk::gather(&mut outn, &table, &ids, pg, &mut sums),
        || cpu::gather(&mut out, &table, &ids, pg),
    );
    let (starts, list) = rnn_gpu::ops::index_lists(&ids, s.v);
    let (gst, gli) = (
        ctx.upload_u32("s", &[starts.len()], &starts).unwrap(),
        ctx.upload_u32("l", &[list.len()], &list).unwrap(),
    );
    let ps = Gather { n: s.v, ..pg };
    let mut prog = Program::new(&ctx);
    gk::scatter_add(&mut prog, &gtab, &gdg, &gst, &gli, ps).unwrap();
    let (mut tab, mut tabn) = (table.clone(), table.clone());
    pair(
        c,
        &ctx,
        "gather_scatter_add",
        table.len(),
        prog,
        || nk::scatter_add(&mut tabn, &dg, &starts, &list, ps, &mut sums),
        || cpu::scatter_add(&mut tab, &dg, &starts, &list, ps),
    );

    // dropout.wgsl
    let seeds = [7u32];
    let gseeds = ctx.upload_u32("seed", &[1], &seeds).unwrap();
    let pd = Dropout { prob: 0.3, salt: 1 };
    let mut prog = Program::new(&ctx);
    gk::dropout(&mut prog, &gy, &gx, &gseeds, pd, false).unwrap();
    let (mut yd, mut ydn) = (x.clone(), x.clone());
    pair(
        c,
        &ctx,
        "dropout_forward",
        n4,
        prog,
        || nk::dropout_forward(&mut ydn, &x, seeds[0], pd),
        || cpu::dropout_forward(&mut yd, &x, &seeds, pd),
    );

    // lstm.wgsl: one forward and one backward step of the case (rnn.wgsl and gru.wgsl share
    // their core, shaders/step_common.wgsl).
    let (b, h) = (s.b, s.h);
    let state_len = (2 * b * h).div_ceil(4) * 4;
    let st0 = rng.uniform_vec(state_len, -1.0, 1.0);
    let xw = rng.uniform_vec(b * 4 * h, -1.0, 1.0);
    let w_hh = rng.uniform_vec(4 * h * h, -0.06, 0.06);
    let bias = rng.uniform_vec(8 * h, -0.06, 0.06);
    let lengths = vec![1u32; b];
    let step = Step { mode: StepMode::Later, ..Step::first(b, h, 4) };
    let (gstates, gcells, ggates, gyy) =
        (up(&ctx, &st0), up(&ctx, &st0), up(&ctx, &vec![0.0; b * 4 * h]), up(&ctx, &vec![0.0; b * h]));
    let (gxw, gw, gbias, glen) =
        (up(&ctx, &xw), up(&ctx, &w_hh), up(&ctx, &bias), ctx.upload_u32("len", &[b], &lengths).unwrap());
    let (gdgr0, gcarry, gdy) =
        (up(&ctx, &vec![0.0; b * 4 * h]), up(&ctx, &vec![0.0; 2 * b * h]), up(&ctx, &vec![0.1; b * h]));
    let gbufs = StepBufs {
        states: &gstates,
        cells: Some(&gcells),
        gates: Some(&ggates),
        y: &gyy,
        xw: &gxw,
        xw_rows: None,
        w_hh: &gw,
        bias: &gbias,
        lengths: &glen,
        dy: Some(&gdy),
        dg: Some(&gdgr0),
        dgh: None,
        carry: Some(&gcarry),
        factors: None,
    };
    // The native device and the reference on the same host buffers.
    let dgr = rng.uniform_vec(b * 4 * h, -0.1, 0.1);
    let mut nb = NativeBackend::new().unwrap();
    let mut rb = ReferenceBackend::<f32>::new();
    macro_rules! host_bufs {
        ($be:expr) => {{
            let len = $be.alloc_u32("len", b).unwrap();
            $be.write_u32(&len, &lengths).unwrap();
            let v = [
                &st0,
                &st0,
                &vec![0.0; b * 4 * h],
                &vec![0.0; b * h],
                &xw,
                &w_hh,
                &bias,
                &dgr,
                &vec![0.0; 2 * b * h],
                &vec![0.1; b * h],
            ]
            .map(|d| {
                let t = $be.alloc("t", d.len()).unwrap();
                $be.write(&t, d).unwrap();
                t
            });
            (v, len)
        }};
    }
    let (nv, nlen) = host_bufs!(nb);
    let (rv, rlen) = host_bufs!(rb);
    fn bufs<'a, T>(v: &'a [T; 10], len: &'a HostTensor<u32>) -> StepBufs<'a, T, HostTensor<u32>> {
        StepBufs {
            states: &v[0],
            cells: Some(&v[1]),
            gates: Some(&v[2]),
            y: &v[3],
            xw: &v[4],
            xw_rows: None,
            w_hh: &v[5],
            bias: &v[6],
            lengths: len,
            dy: Some(&v[9]),
            dg: Some(&v[7]),
            dgh: None,
            carry: Some(&v[8]),
            factors: None,
        }
    }
    let (nbufs, rbufs) = (bufs(&nv, &nlen), bufs(&rv, &rlen));
    for (backward, name) in [(false, "lstm_step_forward"), (true, "lstm_step_backward")] {
        let mut prog = Program::new(&ctx);
        gk::step(&mut prog, Cell::Lstm, &gbufs, step, backward).unwrap();
        pair(
            c,
            &ctx,
            name,
            b * h,
            prog,
            || nb.run(Op::Step { cell: Cell::Lstm, bufs: nbufs, s: step, backward }).unwrap(),
            || rb.run(Op::Step { cell: Cell::Lstm, bufs: rbufs, s: step, backward }).unwrap(),
        );
    }

    // attention.wgsl: scores of every decoder step against every encoder step.
    let a = Attention { tgt: s.t / 4, batch: s.b, src: s.t / 2, width: s.h };
    let q = rng.uniform_vec(a.tgt * a.batch * a.width, -1.0, 1.0);
    let enc = rng.uniform_vec(a.src * a.batch * a.width, -1.0, 1.0);
    let src_len = vec![a.src as u32; a.batch];
    let ns = a.tgt * a.batch * a.src;
    let (gq, genc, gsl, gsc) = (
        up(&ctx, &q),
        up(&ctx, &enc),
        ctx.upload_u32("sl", &[a.batch], &src_len).unwrap(),
        up(&ctx, &vec![0.0; ns]),
    );
    let mut prog = Program::new(&ctx);
    gk::attention_dots(&mut prog, &gsc, &gq, &genc, &gsl, a, true).unwrap();
    let mut scores = vec![0.0; ns];
    let (nq, nenc, nsc) = (host(&mut nb, &q), host(&mut nb, &enc), host(&mut nb, &scores));
    let nsl = nb.alloc_u32("sl", a.batch).unwrap();
    nb.write_u32(&nsl, &src_len).unwrap();
    pair(
        c,
        &ctx,
        "attention_dots",
        ns,
        prog,
        || nb.run(Op::AttentionDots { out: &nsc, x: &nq, enc: &nenc, src_len: &nsl, a, mask: true }).unwrap(),
        || cpu::attention_dots(&mut scores, &q, &enc, &src_len, a, true),
    );

    // copy.wgsl: one side of the attention's [context | decoder state] concatenation.
    let rows = s.t * s.b;
    let side = rng.uniform_vec(rows * s.h, -1.0, 1.0);
    let pc = CopyCols {
        rows,
        width: s.h,
        y_stride: 2 * s.h,
        y_offset: s.h,
        x_stride: s.h,
        x_offset: 0,
        accumulate: false,
    };
    let (gside, gcat) = (up(&ctx, &side), up(&ctx, &vec![0.0; 2 * rows * s.h]));
    let mut prog = Program::new(&ctx);
    gk::copy_cols(&mut prog, &gcat, &gside, pc).unwrap();
    let mut cat = vec![0.0; 2 * rows * s.h];
    let (nside, ncat) = (host(&mut nb, &side), host(&mut nb, &cat));
    pair(
        c,
        &ctx,
        "copy_cols",
        rows * s.h,
        prog,
        || nb.run(Op::CopyCols { y: &ncat, x: &nside, p: pc }).unwrap(),
        || cpu::copy_cols(&mut cat, &side, pc),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
