// gather.wgsl: row lookups by index, and their gradient.
//   gather:      out[i, j] = table[idx[i] * idx_stride + j * col_stride]
//                An embedding lookup is idx_stride = width, col_stride = 1. A one-hot input
//                multiplied by W_ih [G*H, V] is the column W_ih[:, id]: idx_stride = 1,
//                col_stride = V. Either way no one-hot matrix is ever built.
//   scatter_add: the gradient of gather, without atomics: one thread per (table row v, j) sums,
//                in order, the rows of dout that read v. The host lists them (CSR: `starts`
//                (V + 1) into `rows`), as it already holds the indices it uploads.
//   gather4:     the same for widths that are a multiple of 4, 4 columns per thread, reading the
//                table through its texture copy: one index load and one vec4 store for 4 values
//                (lavapipe loops over the SIMD lanes once per storage access, and inserts each
//                component through memory), and one texel fetch where the table's layout is
//                contiguous.
//   scatter_add4: scatter_add for widths that are a multiple of 4, 4 columns per thread, reading
//                dout through its texture copy.

struct Params {
    n: u32,          // gather: rows of out; scatter_add: rows of the table (V)
    width: u32,
    idx_stride: u32,
    col_stride: u32,
}
// must match src/gpu/kernels.rs::GatherParams

@group(0) @binding(0) var<storage, read> params: Params;
var<private> p: Params; // params, copied once per thread (common.wgsl)
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // gather: (n, width); scatter_add: dtable
@group(0) @binding(2) var<storage, read> src: array<f32>;       // gather: table; scatter_add: dout (rows, width)
@group(0) @binding(3) var<storage, read> idx: array<u32>;       // gather: (n); scatter_add: starts (V + 1)
@group(0) @binding(4) var<storage, read> rows: array<u32>;      // scatter_add: row ids grouped by v

@compute @workgroup_size(256)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p = params;
    let e = linear_id(gid, nwg);
    if e >= p.n * p.width { return; }
    let i = e / p.width;
    let j = e % p.width;
    out[e] = src[idx[i] * p.idx_stride + j * p.col_stride];
}

@compute @workgroup_size(256)
fn scatter_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p = params;
    let e = linear_id(gid, nwg);
    if e >= p.n * p.width { return; }
    let v = e / p.width;
    let j = e % p.width;
    let first = idx[v];
    let end = idx[v + 1u];
    var s = 0.0;
    for (var q = first; q < end; q++) {
        s += src[rows[q] * p.width + j];
    }
    out[v * p.idx_stride + j * p.col_stride] += s;
}

@group(0) @binding(5) var<storage, read_write> out4: array<vec4<f32>>; // gather4: out
// gather4: the table's texture copy (src/gpu/program.rs::Program::dispatch_textured).
@group(0) @binding(6) var table_texels: texture_storage_2d<rgba32float, read>;

// Element i of the table.
fn table_at(i: u32) -> f32 {
    return texel(table_texels, i / 4u)[i % 4u];
}

@compute @workgroup_size(256)
fn gather4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p = params;
    let e = linear_id(gid, nwg);
    let w4 = p.width / 4u;
    if e >= p.n * w4 { return; }
    let i = e / w4;
    let j = (e % w4) * 4u;
    let base = idx[i] * p.idx_stride + j * p.col_stride;
    if p.col_stride == 1u && p.idx_stride % 4u == 0u {
        out4[e] = texel(table_texels, base / 4u);
        return;
    }
    let s = p.col_stride;
    out4[e] = vec4<f32>(table_at(base), table_at(base + s), table_at(base + 2u * s), table_at(base + 3u * s));
}

// scatter_add4: scatter_add for widths that are a multiple of 4, 4 columns a thread, reading dout
// through its texture copy (src/gpu/program.rs::Program::dispatch_textured): on lavapipe a texel
// fetch is one gather where a storage load loops over the SIMD lanes once per component.
@group(0) @binding(7) var dout_texels: texture_storage_2d<rgba32float, read>;

@compute @workgroup_size(256)
fn scatter_add4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p = params;
    let e = linear_id(gid, nwg);
    let w4 = p.width / 4u;
    if e >= p.n * w4 { return; }
    let v = e / w4;
    let q = e % w4;
    // The bounds in lets: lavapipe reloads a storage value in a loop's condition every turn.
    let first = idx[v];
    let end = idx[v + 1u];
    var s = vec4<f32>();
    for (var r = first; r < end; r++) {
        s += texel(dout_texels, rows[r] * w4 + q);
    }
    let o = v * p.idx_stride + 4u * q * p.col_stride;
    let c = p.col_stride;
    out[o] += s.x;
    out[o + c] += s.y;
    out[o + 2u * c] += s.z;
    out[o + 3u * c] += s.w;
}
