//! Launchers of rnn.wgsl, lstm.wgsl, gru.wgsl: the fused recurrent steps.

use bytemuck::{Pod, Zeroable};

use super::{need, to_u32};
use crate::error::{Error, Result, check_nonzero};
use crate::gpu::program::Program;
use crate::gpu::tensor::GpuTensor;
use crate::ops::{Cell, Step, StepBufs, StepMode};

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
    col_groups: u32,
    row_groups: u32,
    k_split: u32,
    _pad: [u32; 2],
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

/// Checks every buffer a step kernel touches against the extent `s` implies, and builds its
/// parameters, its grid and its dispatch.
struct StepCheck {
    op: &'static str,
    s: Step,
    tiling: StepTiling,
    /// Multiply-adds of the recurrent product.
    macs: u64,
}

impl StepCheck {
    /// `gates`: the cell's gate count; `backward`: the backward kernel (a sum over G*H for each
    /// unit) rather than the forward one (G sums over H).
    fn new(op: &'static str, s: Step, gates: usize, backward: bool) -> StepCheck {
        // A thread's 4 columns: the gates of one unit forward (shaders/*.wgsl::FORWARD_UNITS),
        // 4 units where there is one gate, and backward.
        let units = if backward || gates == 1 { 4 } else { 1 };
        let tiling = StepTiling::new(s.hidden, s.batch, units);
        let macs =
            if backward && s.mode == StepMode::First { 0 } else { gates * s.hidden * s.hidden * s.batch };
        StepCheck { op, s, tiling, macs: macs as u64 }
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
        if s.batch > MAX_STEP_BATCH {
            return Err(Error::range(self.op, "batch", s.batch, format!("at most {MAX_STEP_BATCH}")));
        }
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
            col_groups: self.tiling.col_groups as u32,
            row_groups: self.tiling.row_groups as u32,
            k_split: self.tiling.k_split as u32,
            _pad: [0; 2],
        })
    }

    fn last_t(&self) -> usize {
        self.s.t.max(self.s.next_t)
    }

    /// Dispatches `entry` of the step family `cell` with `buffers` (storage binding, tensor),
    /// W_hh at binding 6 and the lengths as a uniform at binding 8.
    fn dispatch(
        &self,
        prog: &mut Program,
        cell: &'static str,
        constants: &[(&'static str, u64)],
        buffers: &[(u32, &GpuTensor)],
        w_hh: &GpuTensor,
        lengths: &GpuTensor,
    ) -> Result<()> {
        let mut storage = buffers.to_vec();
        storage.push((6, w_hh));
        let uniforms = [(8, lengths, crate::gpu::tensor::U32_BUFFER_BYTES)];
        let groups = self.tiling.groups(self.s.hidden, self.s.batch);
        prog.dispatch_with_uniforms(cell, self.op, constants, &storage, &uniforms, &self.params()?, groups)?;
        prog.count_macs(self.macs);
        Ok(())
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
    let c = StepCheck::new("lstm_step_forward", s, 4, false);
    let (h, b) = (s.hidden, s.batch);
    c.common(Cell::Lstm, w_hh, lengths)?;
    c.states(states)?;
    c.at_least("cells", cells, s.state_base + (s.in_slot.max(s.out_slot) + 1) * b * h)?;
    c.per_step("gates", gates, 4 * h, s.t)?;
    c.per_step("y", y, s.out_stride, s.t)?;
    c.per_step("xw", xw, 4 * h, s.t)?;
    c.at_least("bias", bias, s.bias_hh + 4 * h)?;
    c.dispatch(
        prog,
        "lstm",
        &[],
        &[(1, states), (2, cells), (3, gates), (4, y), (5, xw), (7, bias)],
        w_hh,
        lengths,
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
    let c = StepCheck::new("lstm_step_backward", s, 4, true);
    let (h, b) = (s.hidden, s.batch);
    c.common(Cell::Lstm, w_hh, lengths)?;
    c.at_least("cells", cells, s.state_base + (s.in_slot.max(s.out_slot) + 1) * b * h)?;
    c.per_step("gates", gates, 4 * h, s.t)?;
    c.per_step("dy", dy, s.out_stride, s.t)?;
    c.per_step("dg", dg, 4 * h, c.last_t())?;
    need(c.op, "carry", carry, 2 * b * h)?;
    c.dispatch(prog, "lstm", &[], &[(2, cells), (3, gates), (9, dy), (10, dg), (12, carry)], w_hh, lengths)
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
    let c = StepCheck::new("gru_step_forward", s, 3, false);
    let h = s.hidden;
    c.common(Cell::Gru, w_hh, lengths)?;
    c.states(states)?;
    c.per_step("gates", gates, 4 * h, s.t)?;
    c.per_step("y", y, s.out_stride, s.t)?;
    c.per_step("xw", xw, 3 * h, s.t)?;
    c.at_least("bias", bias, s.bias_hh + 3 * h)?;
    c.dispatch(prog, "gru", &[], &[(1, states), (3, gates), (4, y), (5, xw), (7, bias)], w_hh, lengths)
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
    let c = StepCheck::new("gru_step_backward", s, 3, true);
    let (h, b) = (s.hidden, s.batch);
    c.common(Cell::Gru, w_hh, lengths)?;
    c.states(states)?;
    c.per_step("gates", gates, 4 * h, s.t)?;
    c.per_step("dy", dy, s.out_stride, s.t)?;
    c.per_step("dgx", dgx, 3 * h, s.t)?;
    c.per_step("dgh", dgh, 3 * h, c.last_t())?;
    need(c.op, "carry", carry, 2 * b * h)?;
    let buffers = [(1, states), (3, gates), (9, dy), (10, dgh), (11, dgx), (12, carry)];
    c.dispatch(prog, "gru", &[], &buffers, w_hh, lengths)
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
    let c = StepCheck::new("rnn_step_forward", s, 1, false);
    c.common(Cell::Rnn { relu }, w_hh, lengths)?;
    c.states(states)?;
    c.per_step("y", y, s.out_stride, s.t)?;
    c.per_step("xw", xw, s.hidden, s.t)?;
    c.at_least("bias", bias, s.bias_hh + s.hidden)?;
    c.dispatch(
        prog,
        "rnn",
        &[("RELU", relu as u64)],
        &[(1, states), (4, y), (5, xw), (7, bias)],
        w_hh,
        lengths,
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
    let c = StepCheck::new("rnn_step_backward", s, 1, true);
    c.common(Cell::Rnn { relu }, w_hh, lengths)?;
    c.states(states)?;
    c.per_step("dy", dy, s.out_stride, s.t)?;
    c.per_step("dg", dg, s.hidden, c.last_t())?;
    need(c.op, "carry", carry, 2 * s.batch * s.hidden)?;
    c.dispatch(
        prog,
        "rnn",
        &[("RELU", relu as u64)],
        &[(1, states), (9, dy), (10, dg), (12, carry)],
        w_hh,
        lengths,
    )
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
                    assert!(t.k_split <= STEP_KC && STEP_KC % t.k_split == 0, "{t:?}");
                }
            }
        }
    }
}

/// A buffer a cell's step needs (`Op::check` has refused its absence already).
fn needed<'a>(cell: Cell, what: &str, b: Option<&'a GpuTensor>) -> Result<&'a GpuTensor> {
    b.ok_or_else(|| Error::invalid("step", format!("{} needs its {what} buffer", cell.name())))
}

/// The forward step of `cell` on the buffers of `b`.
pub fn step_forward(
    prog: &mut Program,
    cell: Cell,
    b: &StepBufs<'_, GpuTensor, GpuTensor>,
    s: Step,
) -> Result<()> {
    match cell {
        Cell::Lstm => lstm_step_forward(
            prog,
            b.states,
            needed(cell, "cells", b.cells)?,
            needed(cell, "gates", b.gates)?,
            b.y,
            b.xw,
            b.w_hh,
            b.bias,
            b.lengths,
            s,
        ),
        Cell::Gru => gru_step_forward(
            prog,
            b.states,
            needed(cell, "gates", b.gates)?,
            b.y,
            b.xw,
            b.w_hh,
            b.bias,
            b.lengths,
            s,
        ),
        Cell::Rnn { relu } => rnn_step_forward(prog, b.states, b.y, b.xw, b.w_hh, b.bias, b.lengths, s, relu),
    }
}

/// The backward step of `cell` on the buffers of `b`.
pub fn step_backward(
    prog: &mut Program,
    cell: Cell,
    b: &StepBufs<'_, GpuTensor, GpuTensor>,
    s: Step,
) -> Result<()> {
    let dy = needed(cell, "dy", b.dy)?;
    let dg = needed(cell, "dg", b.dg)?;
    let carry = needed(cell, "carry", b.carry)?;
    match cell {
        Cell::Lstm => lstm_step_backward(
            prog,
            needed(cell, "cells", b.cells)?,
            needed(cell, "gates", b.gates)?,
            b.w_hh,
            b.lengths,
            dy,
            dg,
            carry,
            s,
        ),
        Cell::Gru => gru_step_backward(
            prog,
            b.states,
            needed(cell, "gates", b.gates)?,
            b.w_hh,
            b.lengths,
            dy,
            dg,
            needed(cell, "dgh", b.dgh)?,
            carry,
            s,
        ),
        Cell::Rnn { relu } => rnn_step_backward(prog, b.states, b.w_hh, b.lengths, dy, dg, carry, s, relu),
    }
}
