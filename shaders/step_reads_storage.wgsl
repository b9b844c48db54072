// step_reads_storage.wgsl: the step kernels read their inputs from the buffers themselves. The
// variant for GPUs, where a storage load costs what a texel load does (src/gpu/context.rs::
// StepInputs).

fn rd_states(i: u32) -> vec4<f32> {
    return states[i];
}

fn rd_cells(i: u32) -> vec4<f32> {
    return cells[i];
}

fn rd_gates(i: u32) -> vec4<f32> {
    return gates[i];
}

fn rd_xw(i: u32) -> vec4<f32> {
    return xw[i];
}

fn rd_bias(i: u32) -> vec4<f32> {
    return bias[i];
}

fn rd_dy(i: u32) -> vec4<f32> {
    return dy[i];
}

fn rd_dgr(i: u32) -> vec4<f32> {
    return dgr[i];
}

fn rd_carry(i: u32) -> vec4<f32> {
    return carry[i];
}
