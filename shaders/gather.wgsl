// gather.wgsl: row lookups by index, and their gradient.
//   gather:      out[i, j] = table[idx[i] * idx_stride + j * col_stride]
//                An embedding lookup is idx_stride = width, col_stride = 1. A one-hot input
//                multiplied by W_ih [G*H, V] is the column W_ih[:, id]: idx_stride = 1,
//                col_stride = V. Either way no one-hot matrix is ever built.
//   scatter_add: the gradient of gather, without atomics: one thread per (table row v, j) sums,
//                in order, the rows of dout that read v. The host lists them (CSR: `starts`
//                (V + 1) into `rows`), as it already holds the indices it uploads.

@group(0) @binding(1) var<storage, read_write> out: array<f32>; // gather: (n, width); scatter_add: dtable
@group(0) @binding(2) var<storage, read> src: array<f32>;       // gather: table; scatter_add: dout (rows, width)
@group(0) @binding(3) var<storage, read> idx: array<u32>;       // gather: (n); scatter_add: starts (V + 1)
@group(0) @binding(4) var<storage, read> rows: array<u32>;      // scatter_add: row ids grouped by v

@compute @workgroup_size(256)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = begin(gid, nwg);
    if e >= p.n * p.width { return; }
    let i = e / p.width;
    let j = e % p.width;
    out[e] = src[idx[i] * p.idx_stride + j * p.col_stride];
}

@compute @workgroup_size(256)
fn scatter_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = begin(gid, nwg);
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
