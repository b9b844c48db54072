//! Launchers of activation.wgsl.

use super::{WG, need, to_u32};
use crate::error::Result;
use crate::gpu::program::{Program, groups_1d};
use crate::gpu::tensor::GpuTensor;

kernel_params! {
    struct ElementwiseParams {
        n: u32, _pad: [u32; 3],
    }
}

fn activation(
    prog: &mut Program,
    entry: &'static str,
    out: &GpuTensor,
    x: &GpuTensor,
    dy: Option<&GpuTensor>,
) -> Result<()> {
    let n = out.len();
    need(entry, "input", x, n)?;
    let mut args = vec![(1, out), (2, x)];
    if let Some(dy) = dy {
        need(entry, "dy", dy, n)?;
        args.push((3, dy));
    }
    let params = ElementwiseParams { n: to_u32(entry, "n", n)?, ..Default::default() };
    let groups = groups_1d(prog.ctx(), n, WG);
    prog.dispatch("activation", entry, &[], &args, &params, groups)
}

/// `y = tanh(x)`
pub fn tanh_forward(prog: &mut Program, y: &GpuTensor, x: &GpuTensor) -> Result<()> {
    activation(prog, "tanh_forward", y, x, None)
}
/// `dx += dy * (1 - y^2)`
pub fn tanh_backward(prog: &mut Program, dx: &GpuTensor, y: &GpuTensor, dy: &GpuTensor) -> Result<()> {
    activation(prog, "tanh_backward", dx, y, Some(dy))
}
