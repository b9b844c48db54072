// copy.wgsl: copy_cols, y[r * y_stride + y_offset + c] (+)= x[r * x_stride + x_offset + c] for
// r < rows, c < width: concatenating and splitting feature columns, and moving state rows
// between layouts, at any element offset (a buffer copy needs none, but cannot accumulate or
// stride). One thread per element.

struct Params {
    rows: u32,
    width: u32,
    y_stride: u32,
    y_offset: u32,
    x_stride: u32,
    x_offset: u32,
    accumulate: u32,
    _pad: u32,
}
// must match src/gpu/kernels.rs::CopyParams

@group(0) @binding(0) var<storage, read> params: Params;
var<private> p: Params; // params, copied once per thread (common.wgsl)
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;

@compute @workgroup_size(256)
fn copy_cols(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p = params;
    let e = linear_id(gid, nwg);
    if e >= p.rows * p.width { return; }
    let r = e / p.width;
    let c = e % p.width;
    let v = x[r * p.x_stride + p.x_offset + c];
    let i = r * p.y_stride + p.y_offset + c;
    if p.accumulate != 0u {
        y[i] += v;
    } else {
        y[i] = v;
    }
}
