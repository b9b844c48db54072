//! Every GPU kernel against its CPU twin on the adapter at hand, at awkward shapes: the cases
//! of `tests/kernels.rs` and `rnn-gpu verify --device gpu`.

use std::sync::Arc;

use super::{Check, Tolerance, compare, steps};
use crate::error::Result;
use crate::gpu::kernels as gk;
use crate::gpu::{GpuContext, GpuTensor, Program};
use crate::ops::{Dropout, Gather, Matmul, Reduce, step_state};
use crate::reference::kernels as twin;
use crate::rng::Rng;
use crate::update::Optimizer;

fn poison(ctx: &GpuContext, what: &str, n: usize) -> Result<GpuTensor> {
    ctx.upload(what, &[n], &vec![f32::NAN; n])
}

fn run(prog: Program) -> Result<()> {
    prog.run()
}

/// Matmul at `(m, n, k)` with the given transposes, as `plan` computes it, with a bias added to
/// every row where `bias`.
pub async fn check_matmul(
    ctx: &Arc<GpuContext>,
    p: Matmul,
    plan: gk::MatmulPlan,
    bias: bool,
    seed: u64,
) -> Result<Check> {
    let mut rng = Rng::seed_from_u64(seed);
    let a = rng.uniform_vec(p.m * p.k, -1.0, 1.0);
    let b = rng.uniform_vec(p.k * p.n, -1.0, 1.0);
    let c0 = rng.uniform_vec(p.m * p.n, -1.0, 1.0);
    let bias_v = rng.uniform_vec(p.n, -1.0, 1.0);
    let mut c = c0.clone();
    twin::matmul(&mut c, &a, &b, p);
    if bias {
        twin::add_bias(&mut c, &bias_v, p.m, p.n);
    }
    let ga = ctx.upload("A", &[a.len()], &a)?;
    let gb = ctx.upload("B", &[b.len()], &b)?;
    let gbias = ctx.upload("bias", &[p.n], &bias_v)?;
    let gc = if p.accumulate { ctx.upload("C", &[c0.len()], &c0)? } else { poison(ctx, "C", c0.len())? };
    let mut prog = Program::new(ctx);
    gk::matmul_planned(&mut prog, &gc, &ga, &gb, bias.then_some(&gbias), plan)?;
    run(prog)?;
    let got = ctx.download_async(&gc).await?;
    let name = format!(
        "{}{}{}{}{}",
        plan.name(),
        if p.trans_a { "_ta" } else { "" },
        if p.trans_b { "_tb" } else { "" },
        if bias { "_bias" } else { "" },
        if p.accumulate { "_acc" } else { "" },
    );
    Ok(compare(&name, format!("{}x{}x{}", p.m, p.n, p.k), &got, &c, Tolerance::accumulation(p.k)))
}

/// An activation, forward or backward, over `n` elements. `name`: tanh, sigmoid or relu.
pub async fn check_activation(
    ctx: &Arc<GpuContext>,
    name: &str,
    backward: bool,
    n: usize,
    seed: u64,
) -> Result<Check> {
    let mut rng = Rng::seed_from_u64(seed);
    // Past +-10 to reach the saturated ends, where a careless tanh overflows.
    let x = rng.uniform_vec(n, -12.0, 12.0);
    let gx = ctx.upload("x", &[n], &x)?;
    let mut prog = Program::new(ctx);
    let (kernel, got, want) = if !backward {
        let mut y = vec![0.0; n];
        let gy = poison(ctx, "y", n)?;
        match name {
            "tanh" => {
                twin::tanh_forward(&mut y, &x);
                gk::tanh_forward(&mut prog, &gy, &gx)?
            }
            "sigmoid" => {
                twin::sigmoid_forward(&mut y, &x);
                gk::sigmoid_forward(&mut prog, &gy, &gx)?
            }
            _ => {
                twin::relu_forward(&mut y, &x);
                gk::relu_forward(&mut prog, &gy, &gx)?
            }
        }
        run(prog)?;
        (format!("{name}_forward"), ctx.download_async(&gy).await?, y)
    } else {
        // The backward kernels take the forward output y.
        let mut y = vec![0.0; n];
        match name {
            "tanh" => twin::tanh_forward(&mut y, &x),
            "sigmoid" => twin::sigmoid_forward(&mut y, &x),
            _ => twin::relu_forward(&mut y, &x),
        }
        let dy = rng.uniform_vec(n, -1.0, 1.0);
        let dx0 = rng.uniform_vec(n, -1.0, 1.0);
        let mut dx = dx0.clone();
        let (gyv, gdy, gdx) =
            (ctx.upload("y", &[n], &y)?, ctx.upload("dy", &[n], &dy)?, ctx.upload("dx", &[n], &dx0)?);
        match name {
            "tanh" => {
                twin::tanh_backward(&mut dx, &y, &dy);
                gk::tanh_backward(&mut prog, &gdx, &gyv, &gdy)?
            }
            "sigmoid" => {
                twin::sigmoid_backward(&mut dx, &y, &dy);
                gk::sigmoid_backward(&mut prog, &gdx, &gyv, &gdy)?
            }
            _ => {
                twin::relu_backward(&mut dx, &y, &dy);
                gk::relu_backward(&mut prog, &gdx, &gyv, &gdy)?
            }
        }
        run(prog)?;
        (format!("{name}_backward"), ctx.download_async(&gdx).await?, dx)
    };
    Ok(compare(&kernel, format!("{n}"), &got, &want, Tolerance::ELEMENTWISE))
}

/// bias_grad and bias_grad_pair over `(rows, cols)`.
pub async fn check_blas(
    ctx: &Arc<GpuContext>,
    kernel: &str,
    rows: usize,
    cols: usize,
    seed: u64,
) -> Result<Check> {
    let mut rng = Rng::seed_from_u64(seed);
    let n = rows * cols;
    let y0 = rng.uniform_vec(n, -1.0, 1.0);
    let x = rng.uniform_vec(n, -1.0, 1.0);
    let bias = rng.uniform_vec(cols, -1.0, 1.0);
    let mut prog = Program::new(ctx);
    let (got, want, shape, tol) = match kernel {
        "bias_grad" => {
            let gdb = ctx.upload("db", &[cols], &bias)?;
            let gdy = ctx.upload("dy", &[n], &x)?;
            gk::bias_grad(&mut prog, &gdb, None, &gdy, rows, cols)?;
            run(prog)?;
            let mut w = bias.clone();
            twin::bias_grad(&mut w, &x, rows, cols);
            (ctx.download_async(&gdb).await?, w, format!("{rows}x{cols}"), Tolerance::accumulation(rows))
        }
        _ => {
            // Two views of one buffer, as b_ih and b_hh are of the gradients, each its own start.
            let both: Vec<f32> = bias.iter().chain(&y0[..cols]).copied().collect();
            let second = crate::ops::align_up(cols);
            let mut init = bias.clone();
            init.resize(second, 0.0);
            init.extend_from_slice(&y0[..cols]);
            let g = ctx.upload("db, db2", &[init.len()], &init)?;
            let (gdb, gdb2) = (g.view(0, &[cols])?, g.view(second, &[cols])?);
            let gdy = ctx.upload("dy", &[n], &x)?;
            gk::bias_grad(&mut prog, &gdb, Some(&gdb2), &gdy, rows, cols)?;
            run(prog)?;
            let (mut w, mut w2) = (both[..cols].to_vec(), both[cols..].to_vec());
            twin::bias_grad(&mut w, &x, rows, cols);
            twin::bias_grad(&mut w2, &x, rows, cols);
            let mut got = ctx.download_async(&gdb).await?;
            got.extend(ctx.download_async(&gdb2).await?);
            w.extend(w2);
            (got, w, format!("{rows}x{cols}"), Tolerance::accumulation(rows))
        }
    };
    Ok(compare(kernel, shape, &got, &want, tol))
}

/// The two-pass sum (or sum of squares) of `n` elements into `out[index]`.
pub async fn check_reduce(
    ctx: &Arc<GpuContext>,
    n: usize,
    square: bool,
    accumulate: bool,
    seed: u64,
) -> Result<Check> {
    let mut rng = Rng::seed_from_u64(seed);
    let x = rng.uniform_vec(n, -1.0, 1.0);
    let out0 = rng.uniform_vec(4, -1.0, 1.0);
    let p = Reduce { index: 2, square, accumulate };
    let mut want = out0.clone();
    twin::reduce(&mut want, &x, p);
    let gout = ctx.upload("out", &[4], &out0)?;
    let gx = ctx.upload("x", &[n], &x)?;
    let scratch = ctx.alloc("scratch", &[gk::REDUCE_PARTS])?;
    let mut prog = Program::new(ctx);
    gk::reduce(&mut prog, &gout, &gx, &scratch, p)?;
    run(prog)?;
    let name =
        format!("reduce{}{}", if square { "_sumsq" } else { "_sum" }, if accumulate { "_acc" } else { "" });
    Ok(compare(&name, format!("{n}"), &ctx.download_async(&gout).await?, &want, Tolerance::accumulation(n)))
}

/// softmax_rows, softmax_xent or mse over `(rows, cols)`; a quarter of the rows carry weight 0
/// (padded positions). Returns one check per output.
pub async fn check_rows(
    ctx: &Arc<GpuContext>,
    kernel: &str,
    rows: usize,
    cols: usize,
    seed: u64,
) -> Result<Vec<Check>> {
    let mut rng = Rng::seed_from_u64(seed);
    let n = rows * cols;
    let x = rng.uniform_vec(n, -8.0, 8.0);
    let targets: Vec<u32> = (0..rows).map(|_| rng.below(cols) as u32).collect();
    let values = rng.uniform_vec(n, -1.0, 1.0);
    let weights: Vec<f32> = (0..rows).map(|r| if r % 4 == 3 { 0.0 } else { 1.0 / rows as f32 }).collect();
    let shape = format!("{rows}x{cols}");
    let gx = ctx.upload("x", &[n], &x)?;
    let mut prog = Program::new(ctx);
    if kernel == "softmax_rows" {
        let gy = poison(ctx, "y", n)?;
        gk::softmax_rows(&mut prog, &gy, &gx, rows, cols)?;
        run(prog)?;
        let mut want = vec![0.0; n];
        twin::softmax_rows(&mut want, &x, rows, cols);
        return Ok(vec![compare(
            kernel,
            shape,
            &ctx.download_async(&gy).await?,
            &want,
            Tolerance::ELEMENTWISE,
        )]);
    }
    let gloss = poison(ctx, "loss", rows)?;
    let gdx = poison(ctx, "dx", n)?;
    let gw = ctx.upload("weights", &[rows], &weights)?;
    let mut loss = vec![0.0; rows];
    let mut dx = vec![0.0; n];
    if kernel == "softmax_xent" {
        let gt = ctx.upload_u32("targets", &[rows], &targets)?;
        gk::softmax_xent(&mut prog, &gloss, &gdx, &gx, &gt, &gw, rows, cols)?;
        twin::softmax_xent(&mut loss, &mut dx, &x, &targets, &weights, rows, cols);
    } else {
        let gv = ctx.upload("target", &[n], &values)?;
        gk::mse(&mut prog, &gloss, &gdx, &gx, &gv, &gw, rows, cols)?;
        twin::mse(&mut loss, &mut dx, &x, &values, &weights, rows, cols);
    }
    run(prog)?;
    // exp and log of logits up to 8 in magnitude: a few ulps of cols-long sums.
    let tol = Tolerance::accumulation(cols);
    Ok(vec![
        compare(&format!("{kernel}.loss"), shape.clone(), &ctx.download_async(&gloss).await?, &loss, tol),
        compare(&format!("{kernel}.dx"), shape, &ctx.download_async(&gdx).await?, &dx, tol),
    ])
}

/// Every update rule under every name the CLI knows, with an L2 or decoupled weight decay of
/// 0.01 where the rule has one: what the update checks run.
pub fn rules_under_test(lr: f32) -> Vec<(&'static str, Optimizer)> {
    crate::update::cli_names()
        .into_iter()
        .filter_map(|name| {
            let rule = Optimizer::from_name(name, lr)?;
            Some((name, rule.with_field("weight_decay", "0.01").unwrap_or(rule)))
        })
        .collect()
}

/// clip_by_value, then finalize_step (the gradient norm, the decision, the clipping scale), then
/// the update rule (applying the scale) over `n` parameters, for two steps: a training step's
/// update. With `finite` false the loss is NaN and every kernel must leave the parameters as they
/// were.
pub async fn check_optimizer(
    ctx: &Arc<GpuContext>,
    (name, rule): (&str, Optimizer),
    n: usize,
    finite: bool,
    seed: u64,
) -> Result<Vec<Check>> {
    let mut rng = Rng::seed_from_u64(seed);
    let mut param = rng.uniform_vec(n, -1.0, 1.0);
    let slots = rule.state_slots();
    let mut state_bufs = vec![vec![0.0f32; n]; slots];
    let mut state = vec![0.0f32; step_state::LEN];
    let gparam = ctx.upload("param", &[n], &param)?;
    let gslots =
        (0..slots).map(|_| ctx.upload("slot", &[n], &vec![0.0f32; n])).collect::<Result<Vec<_>>>()?;
    let gstate = ctx.upload("state", &[step_state::LEN], &state)?;
    let ggrad = ctx.alloc("grad", &[n])?;
    let scratch = ctx.alloc("reduce scratch", &[gk::REDUCE_PARTS])?;
    let mut grads_after = Vec::new();
    let max_norm = 0.5;
    for _ in 0..2 {
        let mut grad = rng.uniform_vec(n, -2.0, 2.0);
        ctx.write(&ggrad, &grad)?;
        state[step_state::LOSS] = if finite { 1.25 } else { f32::NAN };
        state[step_state::LR] = rule.lr();
        ctx.write(&gstate, &state)?;
        let mut prog = Program::new(ctx);
        gk::clip_by_value(&mut prog, &ggrad, -1.0, 1.0)?;
        gk::finalize_step(&mut prog, &gstate, &ggrad, &scratch, max_norm)?;
        twin::clip_by_value(&mut grad, -1.0, 1.0);
        twin::finalize_step(&mut state, &grad, max_norm);
        gk::update(&mut prog, &gparam, &ggrad, &gslots.iter().collect::<Vec<_>>(), &gstate, &rule)?;
        rule.apply(
            &mut param,
            &grad,
            &mut state_bufs.iter_mut().map(|s| &mut s[..]).collect::<Vec<_>>(),
            &state,
        );
        run(prog)?;
        grads_after.push((ctx.download_async(&ggrad).await?, grad));
    }
    let name = if finite { name.to_string() } else { format!("{name}_nonfinite") };
    let shape = format!("{n}");
    let tol = Tolerance::ELEMENTWISE;
    let (g_got, g_want) = grads_after.pop().unwrap_or_default();
    let mut out = vec![
        // Past the loss, which is NaN on purpose in the non-finite case; the norm is a sum.
        compare(
            "finalize_step",
            "8".into(),
            &ctx.download_async(&gstate).await?[1..],
            &state[1..],
            Tolerance::accumulation(n),
        ),
        compare("clip_by_value", shape.clone(), &g_got, &g_want, tol),
        compare(&name, shape.clone(), &ctx.download_async(&gparam).await?, &param, tol),
    ];
    for (k, (g, want)) in gslots.iter().zip(&state_bufs).enumerate() {
        out.push(compare(
            &format!("{name}.state{k}"),
            shape.clone(),
            &ctx.download_async(g).await?,
            want,
            tol,
        ));
    }
    Ok(out)
}

/// gather and scatter_add: `n` lookups of `width` from a table of `vocab` rows, as an embedding
/// (row lookup) or as a one-hot input to a weight `[width, vocab]` (column lookup).
pub async fn check_gather(
    ctx: &Arc<GpuContext>,
    n: usize,
    width: usize,
    vocab: usize,
    columns: bool,
    seed: u64,
) -> Result<Vec<Check>> {
    let mut rng = Rng::seed_from_u64(seed);
    let table = rng.uniform_vec(vocab * width, -1.0, 1.0);
    let idx: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
    let (idx_stride, col_stride) = if columns { (1, vocab) } else { (width, 1) };
    let p = Gather { n, width, idx_stride, col_stride };
    let mut out = vec![0.0; n * width];
    twin::gather(&mut out, &table, &idx, p);
    let gtable = ctx.upload("table", &[table.len()], &table)?;
    let gidx = ctx.upload_u32("idx", &[n], &idx)?;
    let gout = poison(ctx, "out", n * width)?;
    let dout = rng.uniform_vec(n * width, -1.0, 1.0);
    let dtable0 = rng.uniform_vec(vocab * width, -1.0, 1.0);
    let mut dtable = dtable0.clone();
    let (starts, rows) = crate::ops::index_lists(&idx, vocab);
    let ps = Gather { n: vocab, ..p };
    twin::scatter_add(&mut dtable, &dout, &starts, &rows, ps);
    let gdout = ctx.upload("dout", &[dout.len()], &dout)?;
    let gdtable = ctx.upload("dtable", &[dtable0.len()], &dtable0)?;
    let gstarts = ctx.upload_u32("starts", &[starts.len()], &starts)?;
    let grows = ctx.upload_u32("rows", &[rows.len()], &rows)?;
    let mut prog = Program::new(ctx);
    gk::gather(&mut prog, &gout, &gtable, &gidx, p)?;
    gk::scatter_add(&mut prog, &gdtable, &gdout, &gstarts, &grows, ps)?;
    run(prog)?;
    let shape = format!("{n}x{width} of {vocab}{}", if columns { " (columns)" } else { "" });
    Ok(vec![
        compare("gather", shape.clone(), &ctx.download_async(&gout).await?, &out, Tolerance::ELEMENTWISE),
        compare(
            if width.is_multiple_of(4) { "scatter_add4" } else { "scatter_add" },
            shape,
            &ctx.download_async(&gdtable).await?,
            &dtable,
            Tolerance::accumulation(n / vocab + 1),
        ),
    ])
}

/// dropout_forward and dropout_backward over `n` elements with probability `prob`.
pub async fn check_dropout(ctx: &Arc<GpuContext>, n: usize, prob: f32, seed: u64) -> Result<Vec<Check>> {
    let mut rng = Rng::seed_from_u64(seed);
    let x = rng.uniform_vec(n, -1.0, 1.0);
    let dx0 = rng.uniform_vec(n, -1.0, 1.0);
    let seeds = [rng.next_u32()];
    let p = Dropout { prob, salt: 0x5eed };
    let mut y = vec![0.0; n];
    twin::dropout_forward(&mut y, &x, &seeds, p);
    let mut dx = dx0.clone();
    twin::dropout_backward(&mut dx, &x, &seeds, p);
    let gx = ctx.upload("x", &[n], &x)?;
    let gy = poison(ctx, "y", n)?;
    let gdx = ctx.upload("dx", &[n], &dx0)?;
    let gseeds = ctx.upload_u32("seeds", &[1], &seeds)?;
    let mut prog = Program::new(ctx);
    gk::dropout_forward(&mut prog, &gy, &gx, &gseeds, p)?;
    gk::dropout_backward(&mut prog, &gdx, &gx, &gseeds, p)?;
    run(prog)?;
    let shape = format!("{n} p={prob}");
    Ok(vec![
        compare(
            "dropout_forward",
            shape.clone(),
            &ctx.download_async(&gy).await?,
            &y,
            Tolerance::ELEMENTWISE,
        ),
        compare("dropout_backward", shape, &ctx.download_async(&gdx).await?, &dx, Tolerance::ELEMENTWISE),
    ])
}

/// Awkward sizes: one element, less than a workgroup, not a multiple of a tile, several hundred.
pub const SIZES: [usize; 5] = [1, 7, 100, 257, 1000];

/// Matmul shapes (m, n, k): degenerate, sub-tile, ragged, square, the skinny shapes of a
/// recurrence (B x H times H x 4H), K not a multiple of 4 under vec4 loads, and a narrow C (the
/// logits of a small vocabulary, computed transposed), a tall, deep ragged one, and a K long
/// enough that the vec4 kernel sums it in three dispatches (src/gpu/kernels.rs::MATMUL_K_SLICE);
/// those whose B allows take the vec4 kernel.
pub const MATMUL_SHAPES: [(usize, usize, usize); 14] = [
    (1, 1, 1),
    (3, 5, 7),
    (17, 33, 9),
    (4, 4, 4),
    (64, 64, 64),
    (65, 130, 67),
    (300, 257, 190),
    (5, 516, 129),
    (12, 260, 36),
    (33, 1028, 256),
    (8, 12, 5),
    (260, 7, 12),
    (164, 260, 130),
    (12, 20, 4101),
];

/// Every kernel at the standard awkward shapes: what `rnn-gpu verify` prints.
pub fn all_checks(ctx: &Arc<GpuContext>) -> Result<Vec<Check>> {
    crate::wait::block_on("verify::all_checks", all_checks_async(ctx))
}

/// As [`all_checks`], awaited (the browser's verify).
pub async fn all_checks_async(ctx: &Arc<GpuContext>) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    let mut seed = 1u64;
    let mut next = || {
        seed += 1;
        seed
    };
    for &(m, n, k) in &MATMUL_SHAPES {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let mut p = Matmul::new(m, n, k);
            p.trans_a = ta;
            p.trans_b = tb;
            p.accumulate = (m + n) % 2 == 1;
            out.push(check_matmul(ctx, p, gk::MatmulPlan::new(&p), (m + k) % 2 == 0, next()).await?);
        }
    }
    for p in matmul_tile_cases() {
        for plan in gk::MatmulPlan::all(&p) {
            out.push(check_matmul(ctx, p, plan, p.accumulate, next()).await?);
        }
    }
    for name in ["tanh", "sigmoid", "relu"] {
        for backward in [false, true] {
            for &n in &SIZES {
                out.push(check_activation(ctx, name, backward, n, next()).await?);
            }
        }
    }
    for kernel in ["bias_grad", "bias_grad_pair"] {
        for &(rows, cols) in &[(1, 1), (3, 7), (50, 65), (130, 257), (3, 4), (130, 260)] {
            out.push(check_blas(ctx, kernel, rows, cols, next()).await?);
        }
    }
    for &n in &[1, 7, 1000, 5000] {
        for (square, acc) in [(false, false), (true, false), (true, true)] {
            out.push(check_reduce(ctx, n, square, acc, next()).await?);
        }
    }
    for kernel in ["softmax_rows", "softmax_xent", "mse"] {
        for &(rows, cols) in &[(1, 1), (1, 5), (7, 65), (300, 3), (257, 130)] {
            out.extend(check_rows(ctx, kernel, rows, cols, next()).await?);
        }
    }
    for rule in rules_under_test(0.05) {
        for &n in &[1, 100, 1000] {
            out.extend(check_optimizer(ctx, rule, n, true, next()).await?);
        }
        out.extend(check_optimizer(ctx, rule, 100, false, next()).await?);
    }
    // Widths that are a multiple of 4 take gather4 and scatter_add4 (600x32: dout over more than
    // one texture row).
    for &(n, width, vocab) in
        &[(1, 1, 1), (7, 5, 3), (300, 65, 65), (100, 40, 257), (9, 4, 2), (64, 12, 5), (600, 32, 7)]
    {
        for columns in [false, true] {
            out.extend(check_gather(ctx, n, width, vocab, columns, next()).await?);
        }
    }
    for &n in &SIZES {
        out.extend(check_dropout(ctx, n, 0.3, next()).await?);
    }
    for cell in crate::cell::Cell::ALL {
        for &(t, b, h) in &STEP_SHAPES {
            for reverse in [false, true] {
                out.extend(check_steps(ctx, cell, t, b, h, reverse, next()).await?);
            }
        }
    }
    for &(rows, width) in &[(1, 1), (7, 5), (64, 130)] {
        for acc in [false, true] {
            out.push(check_copy_cols(ctx, rows, width, acc, next()).await?);
        }
    }
    for &(tgt, batch, src, width) in &ATTENTION_SHAPES {
        out.extend(check_attention(ctx, crate::ops::Attention { tgt, batch, src, width }, next()).await?);
    }
    Ok(out)
}

/// The fused steps of `cell` over a sequence of `(T, B, H)` on the GPU against the reference
/// (`steps::check_steps`).
pub async fn check_steps(
    ctx: &Arc<GpuContext>,
    cell: crate::cell::Cell,
    steps: usize,
    batch: usize,
    hidden: usize,
    reverse: bool,
    seed: u64,
) -> Result<Vec<Check>> {
    steps::check_steps(crate::gpu::GpuBackend::new(ctx)?, "", cell, (steps, batch, hidden), reverse, seed)
        .await
}

/// Products run with every tile shape, direct and transposed: edges in both dimensions, K not a
/// multiple of the slice, and one bias added.
pub fn matmul_tile_cases() -> Vec<Matmul> {
    let mut v = Vec::new();
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let mut p = Matmul::new(65, 130, 67);
        p.trans_a = ta;
        p.trans_b = tb;
        p.accumulate = ta;
        v.push(p);
    }
    v
}

/// Step kernel shapes (T, B, H): a single unit, odd sizes (partial tiles), sums split many ways
/// and few, sums longer than one staged chunk, full 64-lane tiles with unsplit sums (the last).
pub const STEP_SHAPES: [(usize, usize, usize); 6] =
    [(1, 1, 1), (4, 3, 5), (5, 9, 8), (3, 17, 65), (2, 8, 128), (2, 64, 256)];

/// copy_cols between two wider buffers at odd offsets and strides, written or accumulated.
pub async fn check_copy_cols(
    ctx: &Arc<GpuContext>,
    rows: usize,
    width: usize,
    accumulate: bool,
    seed: u64,
) -> Result<Check> {
    use crate::ops::CopyCols;
    let mut rng = Rng::seed_from_u64(seed);
    let p = CopyCols {
        rows,
        width,
        y_stride: width + 3,
        y_offset: 2,
        x_stride: width + 5,
        x_offset: 1,
        accumulate,
    };
    let x = rng.uniform_vec(rows * (width + 5) + 1, -1.0, 1.0);
    let y0 = rng.uniform_vec(rows * (width + 3) + 2, -1.0, 1.0);
    let mut want = y0.clone();
    twin::copy_cols(&mut want, &x, p);
    let gx = ctx.upload("x", &[x.len()], &x)?;
    let gy = ctx.upload("y", &[y0.len()], &y0)?;
    let mut prog = Program::new(ctx);
    gk::copy_cols(&mut prog, &gy, &gx, p)?;
    run(prog)?;
    let name = if accumulate { "copy_cols_acc" } else { "copy_cols" };
    Ok(compare(
        name,
        format!("{rows}x{width}"),
        &ctx.download_async(&gy).await?,
        &want,
        Tolerance::ELEMENTWISE,
    ))
}

/// The attention kernels at `(T_t, B, T_s, A)`, with source lengths from 1 to T_s: masked scores,
/// their softmax and its gradient, the context, and the two gradient mixes (accumulating).
pub async fn check_attention(
    ctx: &Arc<GpuContext>,
    a: crate::ops::Attention,
    seed: u64,
) -> Result<Vec<Check>> {
    let mut rng = Rng::seed_from_u64(seed);
    let (nq, ne, ns) = (a.tgt * a.batch * a.width, a.src * a.batch * a.width, a.tgt * a.batch * a.src);
    let q = rng.uniform_vec(nq, -1.0, 1.0);
    let enc = rng.uniform_vec(ne, -1.0, 1.0);
    let dy = rng.uniform_vec(ns, -1.0, 1.0);
    let base = rng.uniform_vec(ne.max(nq), -1.0, 1.0);
    let mut src_len: Vec<u32> = (0..a.batch).map(|_| 1 + rng.below(a.src) as u32).collect();
    src_len[0] = a.src as u32;
    let rows = a.tgt * a.batch;

    let mut scores = vec![0.0; ns];
    twin::attention_dots(&mut scores, &q, &enc, &src_len, a, true);
    let mut probs = vec![0.0; ns];
    twin::softmax_rows(&mut probs, &scores, rows, a.src);
    let mut dscores = vec![0.0; ns];
    twin::softmax_backward(&mut dscores, &probs, &dy, rows, a.src);
    let mut ctxv = base[..nq].to_vec();
    twin::attention_mix(&mut ctxv, &probs, &enc, a, true);
    let mut denc = base[..ne].to_vec();
    twin::attention_mix_t(&mut denc, &probs, &q, a, true);

    let up = |what: &str, v: &[f32]| ctx.upload(what, &[v.len()], v);
    let (gq, genc, gdy) = (up("q", &q)?, up("enc", &enc)?, up("dy", &dy)?);
    let glen = ctx.upload_u32("src_len", &[a.batch], &src_len)?;
    let (gscores, gprobs, gdscores) =
        (poison(ctx, "scores", ns)?, poison(ctx, "probs", ns)?, poison(ctx, "dscores", ns)?);
    let (gctx, gdenc) = (up("ctx", &base[..nq])?, up("denc", &base[..ne])?);
    let mut prog = Program::new(ctx);
    gk::attention_dots(&mut prog, &gscores, &gq, &genc, &glen, a, true)?;
    gk::softmax_rows(&mut prog, &gprobs, &gscores, rows, a.src)?;
    gk::softmax_backward(&mut prog, &gdscores, &gprobs, &gdy, rows, a.src)?;
    gk::attention_mix(&mut prog, &gctx, &gprobs, &genc, a, true)?;
    gk::attention_mix_t(&mut prog, &gdenc, &gprobs, &gq, a, true)?;
    run(prog)?;
    let shape = format!("Tt{} B{} Ts{} A{}", a.tgt, a.batch, a.src, a.width);
    let tol = Tolerance::accumulation(a.width.max(a.src).max(a.tgt));
    Ok(vec![
        compare("attention_dots", shape.clone(), &ctx.download_async(&gscores).await?, &scores, tol),
        compare("softmax_rows (masked)", shape.clone(), &ctx.download_async(&gprobs).await?, &probs, tol),
        compare("softmax_backward", shape.clone(), &ctx.download_async(&gdscores).await?, &dscores, tol),
        compare("attention_mix", shape.clone(), &ctx.download_async(&gctx).await?, &ctxv, tol),
        compare("attention_mix_t", shape, &ctx.download_async(&gdenc).await?, &denc, tol),
    ])
}

/// Attention shapes (T_t, B, T_s, A).
pub const ATTENTION_SHAPES: [(usize, usize, usize, usize); 4] =
    [(1, 1, 1, 1), (3, 2, 5, 7), (7, 5, 9, 64), (1, 8, 30, 33)];
