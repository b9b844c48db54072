//! Products, activations, bias gradients, sums and losses.

use std::sync::Arc;

use super::{poison, run};
use crate::error::Result;
use crate::gpu::kernels as gk;
use crate::gpu::{GpuContext, Program};
use crate::ops::{Matmul, Reduce};
use crate::reference::kernels as twin;
use crate::rng::Rng;
use crate::verify::{Check, Tolerance, compare};
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

/// tanh, forward or backward, over `n` elements.
pub async fn check_tanh(ctx: &Arc<GpuContext>, backward: bool, n: usize, seed: u64) -> Result<Check> {
    let mut rng = Rng::seed_from_u64(seed);
    // Past +-10 to reach the saturated ends, where a careless tanh overflows.
    let x = rng.uniform_vec(n, -12.0, 12.0);
    let gx = ctx.upload("x", &[n], &x)?;
    let mut prog = Program::new(ctx);
    let (kernel, got, want) = if !backward {
        let mut y = vec![0.0; n];
        let gy = poison(ctx, "y", n)?;
        twin::tanh_forward(&mut y, &x);
        gk::tanh_forward(&mut prog, &gy, &gx)?;
        run(prog)?;
        ("tanh_forward", ctx.download_async(&gy).await?, y)
    } else {
        // The backward kernels take the forward output y.
        let mut y = vec![0.0; n];
        twin::tanh_forward(&mut y, &x);
        let dy = rng.uniform_vec(n, -1.0, 1.0);
        let dx0 = rng.uniform_vec(n, -1.0, 1.0);
        let mut dx = dx0.clone();
        let (gyv, gdy, gdx) =
            (ctx.upload("y", &[n], &y)?, ctx.upload("dy", &[n], &dy)?, ctx.upload("dx", &[n], &dx0)?);
        twin::tanh_backward(&mut dx, &y, &dy);
        gk::tanh_backward(&mut prog, &gdx, &gyv, &gdy)?;
        run(prog)?;
        ("tanh_backward", ctx.download_async(&gdx).await?, dx)
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
    gk::reduce(&mut prog, &gout, &gx, &scratch, p, None)?;
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
        twin::softmax_xent(
            twin::RowLoss { loss: &mut loss, dx: &mut dx, weights: &weights, rows, cols },
            &x,
            &targets,
        );
    } else {
        let gv = ctx.upload("target", &[n], &values)?;
        gk::mse(&mut prog, &gloss, &gdx, &gx, &gv, &gw, rows, cols)?;
        twin::mse(twin::RowLoss { loss: &mut loss, dx: &mut dx, weights: &weights, rows, cols }, &x, &values);
    }
    run(prog)?;
    // exp and log of logits up to 8 in magnitude: a few ulps of cols-long sums.
    let tol = Tolerance::accumulation(cols);
    Ok(vec![
        compare(&format!("{kernel}.loss"), shape.clone(), &ctx.download_async(&gloss).await?, &loss, tol),
        compare(&format!("{kernel}.dx"), shape, &ctx.download_async(&gdx).await?, &dx, tol),
    ])
}
