//! Update rules, lookups, dropout, column copies, attention and the fused recurrent steps.

use std::sync::Arc;

use super::{poison, run};
use crate::error::Result;
use crate::gpu::kernels as gk;
use crate::gpu::{GpuContext, Program};
use crate::ops::{Dropout, Gather, step_state};
use crate::reference::kernels as twin;
use crate::rng::Rng;
use crate::update::Optimizer;
use crate::verify::steps;
use crate::verify::{Check, Tolerance, compare};
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
    gk::dropout(&mut prog, &gy, &gx, &gseeds, p, false)?;
    gk::dropout(&mut prog, &gdx, &gx, &gseeds, p, true)?;
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
    steps::check_steps(crate::gpu::GpuBackend::new(ctx)?, "", cell, (steps, batch, hidden), 0, reverse, seed)
        .await
}

/// copy_cols between two wider buffers at odd offsets and strides, written or accumulated.
pub async fn check_copy_cols(
    ctx: &Arc<GpuContext>,
    rows: usize,
    width: usize,
    accumulate: bool,
    seed: u64,
) -> Result<Check> {
    let mut rng = Rng::seed_from_u64(seed);
    let p = crate::verify::copy_cols_case(rows, width, accumulate);
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
    gk::attention_mix(&mut prog, &gctx, &gprobs, &genc, a, true, false)?;
    gk::attention_mix(&mut prog, &gdenc, &gprobs, &gq, a, true, true)?;
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
