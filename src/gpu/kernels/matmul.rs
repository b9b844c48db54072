//! Launchers of matmul.wgsl.

use super::{WG, check, to_u32};
use crate::error::{Error, Result};
use crate::gpu::program::{Program, groups_1d};
use crate::gpu::tensor::GpuTensor;
use crate::ops::{Matmul, Op};

kernel_params! {
    struct MatmulParams {
        // accumulate: 1: C += op(A)·op(B); 0: C = op(A)·op(B)
        m: u32, n: u32, k: u32, accumulate: u32,
        // k_chunk: k of one part: k itself without split-K
        // parts: split-K parts (1: none); matmul then writes part wg.z of the scratch
        k_chunk: u32, parts: u32, _pad: [u32; 2],
    }
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
    check(Op::Matmul { c, a, b, bias, p })?;
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
    #[rustfmt::skip]
    let params = checked_params!(MatmulParams, OP, q; m, n, k; accumulate: q.accumulate as u32,
        k_chunk: to_u32(OP, "k_chunk", plan.k_chunk())?, parts: to_u32(OP, "parts", plan.parts)?);
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

#[cfg(test)]
mod tests {
    use super::*;

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
            assert!(
                chunk.is_multiple_of(MATMUL_BK) && (plan.parts - 1) * chunk < k && plan.parts * chunk >= k
            );
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
