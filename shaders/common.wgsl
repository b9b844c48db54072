// common.wgsl: helpers prepended to every kernel file (see src/gpu/shaders.rs).
//
// One-dimensional kernels run 256 threads a workgroup. Past 65535 workgroups the launcher
// spreads the grid over y (src/gpu/program.rs::groups_1d); `linear_id` folds it back.

const WG: u32 = 256u;

// Kernel parameters: every family binds its parameter struct at binding 0 as `params`, and every
// entry point first copies it into the private `p` that the code reads, itself or through
// `begin` (src/gpu/kernels/mod.rs::kernel_params declares both; src/gpu/shaders.rs checks).
// On lavapipe each storage load is a loop over the SIMD lanes that inserts each lane's value
// through memory, and the compiler keeps the loads of `params` where the code reads them, inside
// loops too; a private copy is registers, read for free wherever the code reads it.

// The step state's indices, LOSS to LR, are generated from src/ops.rs::step_state
// (src/gpu/shaders.rs).

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// The first statement of a one-dimensional entry point: the private copy of the parameters, and
// the thread's index in the grid.
fn begin(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    p = params;
    return linear_id(gid, nwg);
}

// WGSL has no isnan/isinf, and compilers may fold `x != x` away: test the exponent bits.
fn is_finite_f32(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// tanh through exp of a non-positive argument: never overflows, exact at the ends.
// (Some drivers' builtin tanh returns NaN for |x| > ~44.)
fn tanh_stable(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    let t = (1.0 - e) / (1.0 + e);
    return select(-t, t, x >= 0.0);
}

// The same, for four values at once (WGSL has no overloading of user functions).
fn sigmoid4(x: vec4<f32>) -> vec4<f32> {
    return 1.0 / (1.0 + exp(-x));
}

fn tanh_stable4(x: vec4<f32>) -> vec4<f32> {
    let e = exp(-2.0 * abs(x));
    let t = (1.0 - e) / (1.0 + e);
    return select(-t, t, x >= vec4<f32>());
}
