// blas.wgsl: vector and bias operations, one thread per output element.
//   fill:      x = value
//   scale:     x *= alpha
//   axpy:      y += alpha * x
//   add_bias:  y[r, j] += bias[j]           y (rows, cols)
//   bias_grad: db[j] += sum_r dy[r, j]      one thread per column, rows summed in order (the
//                                           column sum is deterministic, like the CPU twin's)
//   bias_grad4: the same for cols a multiple of 4, 4 columns per thread, dy read through its
//               texture copy

struct Params {
    n: u32,     // elements (fill, scale, axpy, add_bias) or columns (bias_grad)
    cols: u32,  // add_bias and bias_grad
    rows: u32,  // bias_grad
    alpha: f32, // fill value, scale, axpy
}
// must match src/gpu/kernels.rs::BlasParams

@group(0) @binding(0) var<storage, read> params: Params;
var<private> p: Params; // params, copied once per thread (common.wgsl)
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;

@compute @workgroup_size(256)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p = params;
    let i = linear_id(gid, nwg);
    if i >= p.n { return; }
    y[i] = p.alpha;
}

@compute @workgroup_size(256)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p = params;
    let i = linear_id(gid, nwg);
    if i >= p.n { return; }
    y[i] *= p.alpha;
}

@compute @workgroup_size(256)
fn axpy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p = params;
    let i = linear_id(gid, nwg);
    if i >= p.n { return; }
    y[i] += p.alpha * x[i];
}

@compute @workgroup_size(256)
fn add_bias(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p = params;
    let i = linear_id(gid, nwg);
    if i >= p.n { return; }
    y[i] += x[i % p.cols];
}

// 32 threads a workgroup: a bias has few columns (768 for a GRU of 256 units) and lavapipe runs
// each workgroup on one core, so 256-thread workgroups would leave cores idle.
const BIAS_GRAD_WG: u32 = 32u; // must match src/gpu/kernels.rs::BIAS_GRAD_WG

@compute @workgroup_size(32)
fn bias_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p = params;
    let j = gid.x + gid.y * nwg.x * BIAS_GRAD_WG;
    if j >= p.cols { return; }
    var s = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        s += x[r * p.cols + j];
    }
    y[j] += s;
}

// bias_grad4: bias_grad for cols a multiple of 4, reading dy through its texture copy
// (src/gpu/program.rs::Program::dispatch_textured), 4 columns a thread: on lavapipe a texel fetch
// is one gather where a storage load loops over the SIMD lanes once per component.
@group(0) @binding(3) var dy_texels: texture_storage_2d<rgba32float, read>;

@compute @workgroup_size(32)
fn bias_grad4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p = params;
    let q = gid.x + gid.y * nwg.x * BIAS_GRAD_WG;
    let quads = p.cols / 4u;
    if q >= quads { return; }
    var s = vec4<f32>();
    for (var r = 0u; r < p.rows; r++) {
        s += texel(dy_texels, r * quads + q);
    }
    let j = 4u * q;
    y[j] += s.x;
    y[j + 1u] += s.y;
    y[j + 2u] += s.z;
    y[j + 3u] += s.w;
}
