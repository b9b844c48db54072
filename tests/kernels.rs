//! Every GPU kernel against its CPU twin on seeded random inputs over awkward shapes (one
//! element, less than a workgroup, not a multiple of the tile, several hundred), every matmul
//! tile shape, outputs poisoned before each run. The cases live in `rnn_gpu::verify`, shared with
//! `rnn-gpu verify`.

mod common;

use std::sync::Arc;

use common::{assert_checks, gpu};
use rnn_gpu::gpu::GpuContext;
use rnn_gpu::gpu::kernels::MatmulPlan;
use rnn_gpu::ops::Matmul;
use rnn_gpu::verify::{self, Check, MATMUL_SHAPES, SIZES};

/// Runs `cases`, which push their checks, on the GPU context, and asserts every check passed
/// (skipped, as `gpu` says, without a GPU).
fn check_on_gpu(cases: impl FnOnce(&Arc<GpuContext>, &mut Vec<Check>)) {
    let Some(ctx) = gpu() else { return };
    let mut checks = Vec::new();
    cases(&ctx, &mut checks);
    assert_checks(&checks);
}

/// A check's result, waited for (the checks are async, for the browser).
fn now<T>(check: impl Future<Output = rnn_gpu::Result<T>>) -> T {
    rnn_gpu::wait::block_on("test", check).unwrap()
}

#[test]
fn matmul_matches_cpu_for_every_transpose_and_shape() {
    check_on_gpu(|ctx, checks| {
        let mut seed = 100;
        for &(m, n, k) in &MATMUL_SHAPES {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                for acc in [false, true] {
                    let mut p = Matmul::new(m, n, k);
                    p.trans_a = ta;
                    p.trans_b = tb;
                    p.accumulate = acc;
                    seed += 1;
                    let plan = MatmulPlan::new(&p);
                    checks.push(now(verify::check_matmul(ctx, p, plan, acc == ta, seed)));
                }
            }
        }
    });
}

#[test]
fn matmul_matches_cpu_in_every_tile_shape() {
    check_on_gpu(|ctx, checks| {
        for (i, p) in verify::matmul_tile_cases().into_iter().enumerate() {
            for plan in MatmulPlan::all(&p) {
                checks.push(now(verify::check_matmul(ctx, p, plan, p.accumulate, 500 + i as u64)));
            }
        }
    });
}

#[test]
fn tanh_matches_cpu() {
    check_on_gpu(|ctx, checks| {
        for backward in [false, true] {
            for &n in &SIZES {
                checks.push(now(verify::check_tanh(ctx, backward, n, n as u64)));
            }
        }
    });
}

#[test]
fn vector_and_bias_kernels_match_cpu() {
    check_on_gpu(|ctx, checks| {
        for kernel in ["bias_grad", "bias_grad_pair"] {
            for &(rows, cols) in &[(1, 1), (3, 7), (50, 65), (130, 257), (700, 3), (3, 4), (130, 260)] {
                checks.push(now(verify::check_blas(ctx, kernel, rows, cols, (rows * cols) as u64)));
            }
        }
    });
}

#[test]
fn reductions_match_cpu() {
    check_on_gpu(|ctx, checks| {
        // Up to 256*4 elements take one workgroup in the first pass; past 256*4*256, all 256.
        for &n in &[1, 7, 255, 1024, 1025, 20000, 300_000] {
            for (square, acc) in [(false, false), (true, false), (false, true), (true, true)] {
                checks.push(now(verify::check_reduce(ctx, n, square, acc, n as u64)));
            }
        }
    });
}

#[test]
fn softmax_and_losses_match_cpu() {
    check_on_gpu(|ctx, checks| {
        for kernel in ["softmax_rows", "softmax_xent", "mse"] {
            for &(rows, cols) in &[(1, 1), (1, 5), (7, 65), (300, 3), (257, 130)] {
                checks.extend(now(verify::check_rows(ctx, kernel, rows, cols, (rows + cols) as u64)));
            }
        }
    });
}

#[test]
fn clipping_and_optimizers_match_cpu() {
    check_on_gpu(|ctx, checks| {
        for rule in verify::rules_under_test(0.05) {
            for &n in &SIZES {
                checks.extend(now(verify::check_optimizer(ctx, rule, n, true, n as u64)));
            }
        }
    });
}

#[test]
fn a_non_finite_step_leaves_parameters_and_state_untouched() {
    let Some(ctx) = gpu() else { return };
    for rule in verify::rules_under_test(0.05) {
        let checks = now(verify::check_optimizer(&ctx, rule, 100, false, 9));
        assert_checks(&checks);
    }
    // The twin itself must refuse the step: parameters equal their initial values.
    let mut param = vec![0.5f32; 4];
    let mut state = vec![0.0f32; rnn_gpu::ops::step_state::LEN];
    state[rnn_gpu::ops::step_state::LOSS] = f32::NAN;
    rnn_gpu::reference::kernels::finalize_step(&mut state, &[1.0; 4], 1.0);
    rnn_gpu::Optimizer::sgd(1.0, 0.0).apply(&mut param, &[1.0; 4], &mut [], &state);
    assert_eq!(param, vec![0.5; 4]);
    assert_eq!(state[rnn_gpu::ops::step_state::SKIPPED], 1.0);
}

/// A clamp maps NaN to a bound; clipping by value must leave non-finite gradients for the guard.
#[test]
fn clipping_by_value_keeps_non_finite_gradients_for_the_guard() {
    use rnn_gpu::gpu::{Program, kernels as gk};
    use rnn_gpu::ops::step_state;
    use rnn_gpu::reference::kernels as cpu;
    let grad = [1.0f32, f32::NAN, -5.0, f32::INFINITY, 0.003];

    let mut want = grad;
    let mut state = vec![0.0f32; step_state::LEN];
    state[step_state::LOSS] = 1.0;
    cpu::clip_by_value(&mut want, -0.5, 0.5);
    cpu::finalize_step(&mut state, &want, 0.0);
    assert!(want[1].is_nan() && want[3] == f32::INFINITY, "{want:?}");
    assert_eq!([want[0], want[2], want[4]], [0.5, -0.5, 0.003]);
    assert_eq!((state[step_state::OK], state[step_state::SKIPPED]), (0.0, 1.0));

    let Some(ctx) = gpu() else { return };
    let ggrad = ctx.upload("grad", &[grad.len()], &grad).unwrap();
    let mut init = vec![0.0f32; step_state::LEN];
    init[step_state::LOSS] = 1.0;
    let gstate = ctx.upload("state", &[step_state::LEN], &init).unwrap();
    let scratch = ctx.alloc("scratch", &[gk::REDUCE_PARTS]).unwrap();
    let mut prog = Program::new(&ctx);
    gk::clip_by_value(&mut prog, &ggrad, -0.5, 0.5).unwrap();
    gk::finalize_step(&mut prog, &gstate, &ggrad, &scratch, 0.0).unwrap();
    prog.run().unwrap();
    let got = ctx.download(&ggrad).unwrap();
    assert!(got[1].is_nan() && got[3] == f32::INFINITY, "{got:?}");
    assert_eq!([got[0], got[2], got[4]], [0.5, -0.5, 0.003]);
    let s = ctx.download(&gstate).unwrap();
    assert_eq!((s[step_state::OK], s[step_state::SKIPPED]), (0.0, 1.0));
}

#[test]
fn gather_and_scatter_add_match_cpu() {
    check_on_gpu(|ctx, checks| {
        // Widths that are a multiple of 4 take gather4 and scatter_add4.
        for &(n, width, vocab) in
            &[(1, 1, 1), (7, 5, 3), (300, 65, 65), (100, 40, 257), (2048, 256, 65), (9, 4, 2)]
        {
            for columns in [false, true] {
                checks.extend(now(verify::check_gather(ctx, n, width, vocab, columns, n as u64)));
            }
        }
    });
}

#[test]
fn dropout_matches_cpu() {
    check_on_gpu(|ctx, checks| {
        for &n in &SIZES {
            for prob in [0.0, 0.3, 0.9] {
                checks.extend(now(verify::check_dropout(ctx, n, prob, n as u64)));
            }
        }
    });
}

#[test]
fn fused_step_kernels_match_cpu_for_every_cell_direction_and_shape() {
    check_on_gpu(|ctx, checks| {
        for cell in rnn_gpu::Cell::ALL {
            for &(t, b, h) in &verify::STEP_SHAPES {
                for reverse in [false, true] {
                    let seed = (t * b * h) as u64;
                    checks.extend(now(verify::check_steps(ctx, cell, t, b, h, reverse, seed)));
                }
            }
        }
    });
}

#[test]
fn copy_and_attention_kernels_match_cpu() {
    check_on_gpu(|ctx, checks| {
        for &(rows, width) in &[(1, 1), (7, 5), (64, 130), (300, 3)] {
            for acc in [false, true] {
                checks.push(now(verify::check_copy_cols(ctx, rows, width, acc, (rows * width) as u64)));
            }
        }
        for &(tgt, batch, src, width) in &verify::ATTENTION_SHAPES {
            let a = rnn_gpu::ops::Attention { tgt, batch, src, width };
            checks.extend(now(verify::check_attention(ctx, a, (tgt * batch * src) as u64)));
        }
    });
}
