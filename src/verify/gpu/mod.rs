//! Every GPU kernel against its CPU twin on the adapter at hand, at awkward shapes: the cases
//! of `tests/kernels.rs` and `rnn-gpu verify --device gpu` (math.rs: products, activations,
//! sums and losses; layers.rs: updates, lookups, dropout, copies, attention and the fused steps).

mod layers;
mod math;

pub use layers::*;
pub use math::*;

use std::sync::Arc;

use super::Check;
use crate::error::Result;
use crate::gpu::kernels as gk;
use crate::gpu::{GpuContext, GpuTensor, Program};
use crate::ops::Matmul;

fn poison(ctx: &GpuContext, what: &str, n: usize) -> Result<GpuTensor> {
    ctx.upload(what, &[n], &vec![f32::NAN; n])
}

fn run(prog: Program) -> Result<()> {
    prog.run()
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
    for backward in [false, true] {
        for &n in &SIZES {
            out.push(check_tanh(ctx, backward, n, next()).await?);
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

/// Attention shapes (T_t, B, T_s, A).
pub const ATTENTION_SHAPES: [(usize, usize, usize, usize); 4] =
    [(1, 1, 1, 1), (3, 2, 5, 7), (7, 5, 9, 64), (1, 8, 30, 33)];
