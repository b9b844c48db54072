//! Launchers of rnn.wgsl, lstm.wgsl, gru.wgsl: the fused recurrent steps.

use super::to_u32;
use crate::cell::Cell;
use crate::error::{Error, Result, check_nonzero};
use crate::gpu::program::Program;
use crate::gpu::tensor::GpuTensor;
use crate::ops::{Step, StepBufs, StepMode};

kernel_params! {
    struct StepParams {
        t: u32, batch: u32, hidden: u32, in_slot: u32,
        out_slot: u32, state_base: u32, out_stride: u32, out_col: u32,
        // bias_hh: offset of b_hh within the bias binding
        // next_t: backward: the step whose gate gradients reach this one through W_hh
        // mode: backward: 0 the first step processed, 1 a later step, 2 the initial state
        bias_hh: u32, next_t: u32, mode: u32, col_groups: u32,
        row_groups: u32, k_split: u32, _pad: [u32; 2],
    }
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

/// The parameters, grid and multiply-adds of one step dispatch.
struct Launch {
    op: &'static str,
    s: Step,
    tiling: StepTiling,
    /// Multiply-adds of the recurrent product.
    macs: u64,
}

impl Launch {
    /// `gates`: the cell's gate count; `backward`: the backward kernel (a sum over G*H for each
    /// unit) rather than the forward one (G sums over H).
    fn new(op: &'static str, s: Step, gates: usize, backward: bool) -> Result<Launch> {
        check_nonzero(op, "batch", s.batch)?;
        check_nonzero(op, "hidden", s.hidden)?;
        if s.batch > MAX_STEP_BATCH {
            return Err(Error::range(op, "batch", s.batch, format!("at most {MAX_STEP_BATCH}")));
        }
        // A thread's 4 columns: the gates of one unit forward (shaders/*.wgsl::FORWARD_UNITS),
        // 4 units where there is one gate, and backward.
        let units = if backward || gates == 1 { 4 } else { 1 };
        let tiling = StepTiling::new(s.hidden, s.batch, units);
        let macs =
            if backward && s.mode == StepMode::First { 0 } else { gates * s.hidden * s.hidden * s.batch };
        Ok(Launch { op, s, tiling, macs: macs as u64 })
    }

    fn params(&self) -> Result<StepParams> {
        let s = &self.s;
        // shaders/step_common.wgsl::MODE_FIRST, MODE_STEP, MODE_INITIAL
        let mode = match s.mode {
            StepMode::First => 0,
            StepMode::Later => 1,
            StepMode::Initial => 2,
        };
        let tiling = self.tiling;
        #[rustfmt::skip]
        let params = checked_params!(StepParams, self.op, s;
            t, batch, hidden, in_slot, out_slot, state_base, out_stride, out_col, bias_hh, next_t;
            mode: mode, col_groups: tiling.col_groups as u32, row_groups: tiling.row_groups as u32,
            k_split: tiling.k_split as u32);
        Ok(params)
    }
}

/// The fused step of `cell` at time `s.t`, forward or backward (or, in `StepMode::Initial`, the
/// initial state's gradient): `step_forward` or `step_backward` of shaders/<family>.wgsl,
/// each buffer at its binding of shaders/step_common.wgsl where the cell uses it. The shapes are
/// `Op::check`'s.
pub fn step(
    prog: &mut Program,
    cell: Cell,
    b: &StepBufs<'_, GpuTensor, GpuTensor>,
    s: Step,
    backward: bool,
) -> Result<()> {
    let op = if backward { "step_backward" } else { "step_forward" };
    crate::ops::Op::Step { cell, bufs: *b, s, backward }.check(GpuTensor::len, GpuTensor::len)?;
    let launch = Launch::new(op, s, cell.gates(), backward)?;
    fn needed<'a>(
        op: &'static str,
        cell: Cell,
        what: &str,
        buf: Option<&'a GpuTensor>,
    ) -> Result<&'a GpuTensor> {
        buf.ok_or_else(|| Error::invalid(op, format!("{} needs its {what} buffer", cell.name())))
    }
    if b.xw_rows.is_some() {
        return Err(Error::invalid(op, "the GPU steps read a gathered projection, not a table"));
    }
    let mut storage: Vec<(u32, &GpuTensor)> = vec![(6, b.w_hh)];
    if cell.has_cell_state() {
        storage.push((2, needed(op, cell, "cells", b.cells)?));
    }
    let mut constants = cell.constants();
    let placeholder;
    if cell.saved() > 0 {
        let gates = match (backward, b.gates) {
            // Inference: nothing kept, the binding filled by a buffer the step never touches.
            (false, None) => {
                constants.push(("KEEP_GATES", 0));
                placeholder = prog.scratch(4)?;
                &placeholder
            }
            (_, gates) => needed(op, cell, "gates", gates)?,
        };
        storage.push((3, gates));
    }
    if !backward {
        storage.extend([(1, b.states), (4, b.y), (5, b.xw), (7, b.bias)]);
    } else {
        if !cell.has_cell_state() {
            storage.push((1, b.states));
        }
        // Binding 10 holds the gradients the next step sends back through W_hh (the recurrent
        // ones), 11 the input ones where the cell splits them.
        let dg = needed(op, cell, "dg", b.dg)?;
        match cell.splits_recurrent_gradient() {
            true => storage.extend([(10, needed(op, cell, "dgh", b.dgh)?), (11, dg)]),
            false => storage.push((10, dg)),
        }
        storage.extend([(9, needed(op, cell, "dy", b.dy)?), (12, needed(op, cell, "carry", b.carry)?)]);
    }
    let entry = cell.entry(backward);
    let uniforms = [(8, b.lengths, crate::gpu::tensor::U32_BUFFER_BYTES)];
    let groups = launch.tiling.groups(s.hidden, s.batch);
    prog.dispatch_with_uniforms(
        cell.family(),
        entry,
        &constants,
        &storage,
        &uniforms,
        &launch.params()?,
        groups,
    )?;
    prog.count_macs(launch.macs);
    Ok(())
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
                    assert!(t.k_split <= STEP_KC && STEP_KC.is_multiple_of(t.k_split), "{t:?}");
                }
            }
        }
    }
}
