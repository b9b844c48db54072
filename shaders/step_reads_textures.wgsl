// step_reads_textures.wgsl: the step kernels read their inputs from texture copies of the buffers
// (src/gpu/program.rs::Program::dispatch_writing refreshes the texels a step wrote before the
// next step reads them). The variant for CPU adapters: on lavapipe a storage load inserts each
// SIMD lane's value through memory, one component at a time, and a texel load is one gather
// (src/gpu/context.rs::StepInputs). Within a step no thread reads what another writes, and a
// thread that reads and then writes an element (carry) reads the value from before the step,
// as the copy holds. A buffer's texture copy is bound at its storage binding + 12
// (src/gpu/kernels.rs::StepCheck::dispatch).

@group(0) @binding(13) var states_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(14) var cells_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(15) var gates_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(17) var xw_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(19) var bias_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(21) var dy_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(22) var dgr_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(24) var carry_tex: texture_storage_2d<rgba32float, read>;

fn rd_states(i: u32) -> vec4<f32> {
    return texel(states_tex, i);
}

fn rd_cells(i: u32) -> vec4<f32> {
    return texel(cells_tex, i);
}

fn rd_gates(i: u32) -> vec4<f32> {
    return texel(gates_tex, i);
}

fn rd_xw(i: u32) -> vec4<f32> {
    return texel(xw_tex, i);
}

fn rd_bias(i: u32) -> vec4<f32> {
    return texel(bias_tex, i);
}

fn rd_dy(i: u32) -> vec4<f32> {
    return texel(dy_tex, i);
}

fn rd_dgr(i: u32) -> vec4<f32> {
    return texel(dgr_tex, i);
}

fn rd_carry(i: u32) -> vec4<f32> {
    return texel(carry_tex, i);
}
