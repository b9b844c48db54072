// copy.wgsl: copy_cols, y[r * y_stride + y_offset + c] (+)= x[r * x_stride + x_offset + c] for
// r < rows, c < width: concatenating and splitting feature columns, and moving state rows
// between layouts, at any element offset (a buffer copy needs none, but cannot accumulate or
// stride). One thread per element.

@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;

@compute @workgroup_size(256)
fn copy_cols(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = begin(gid, nwg);
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
