//! Launchers of optim.wgsl.

use super::{WG, need, to_u32};
use crate::error::{Error, Result};
use crate::gpu::program::{Program, groups_1d};
use crate::gpu::tensor::GpuTensor;
use crate::ops::step_state;
use crate::update::{self, Optimizer};

kernel_params! {
    struct OptimParams {
        // lo: clip_by_value
        n: u32, lo: f32, hi: f32, _pad: u32,
        // h: the rule's numbers (src/update: Rule::hyper), named at the top of its entry
        h: [f32; 4],
    }
}

pub(super) fn need_state(op: &'static str, state: &GpuTensor) -> Result<()> {
    need(op, "step state", state, step_state::LEN)
}

/// `grad = clamp(grad, lo, hi)`
pub fn clip_by_value(prog: &mut Program, grad: &GpuTensor, lo: f32, hi: f32) -> Result<()> {
    // Written so that a NaN bound is refused too.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    if !(lo <= hi) {
        return Err(Error::invalid("clip_by_value", format!("lo = {lo} must not exceed hi = {hi}")));
    }
    let n = grad.len();
    let p = OptimParams { n: to_u32("clip_by_value", "n", n)?, lo, hi, ..Default::default() };
    let groups = groups_1d(prog.ctx(), n, WG);
    prog.dispatch("optim", "clip_by_value", &[], &[(2, grad)], &p, groups)
}

/// The update rule on every parameter: the entry point the rule names, its numbers in `h`, its
/// state buffers bound from binding 4 on.
pub fn update(
    prog: &mut Program,
    param: &GpuTensor,
    grad: &GpuTensor,
    slots: &[&GpuTensor],
    state: &GpuTensor,
    rule: &Optimizer,
) -> Result<()> {
    let lens: Vec<usize> = slots.iter().map(|s| s.len()).collect();
    update::check_buffers(rule, param.len(), grad.len(), &lens, state.len())?;
    let n = param.len();
    let p = OptimParams { n: to_u32("update", "n", n)?, h: rule.hyper(), ..Default::default() };
    let mut args = vec![(1, state), (2, grad), (3, param)];
    args.extend(slots.iter().enumerate().map(|(k, s)| (4 + k as u32, *s)));
    let groups = groups_1d(prog.ctx(), n, WG);
    prog.dispatch("optim", rule.entry(), &[], &args, &p, groups)
}
