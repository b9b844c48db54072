// reduce.wgsl: a sum over a whole buffer in two passes, deterministic.
//   reduce_partial: PARTS workgroups of 256 threads; thread t of all of them sums x[t], x[t + 256
//                   PARTS], ... (squared when SQUARE), neighbouring threads reading neighbouring
//                   elements, and each workgroup adds its threads' sums in a fixed tree into
//                   partial[workgroup].
//   reduce_final:   one workgroup adds the PARTS partials in the same tree into out[index]
//                   (written, or added when accumulate is set).

struct Params {
    n: u32,          // elements of x (partial) or partials (final)
    parts: u32,      // PARTS: the workgroups of the first pass (src/gpu/kernels.rs::REDUCE_PARTS)
    index: u32,      // final: where in out the sum goes
    accumulate: u32, // final: 1 adds to out[index]
}
// must match src/gpu/kernels.rs::ReduceParams

override SQUARE: bool = false;

@group(0) @binding(0) var<storage, read> params: Params;
var<private> p: Params; // params, copied once per thread (common.wgsl)
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // partial (PARTS) or out
@group(0) @binding(2) var<storage, read> x: array<f32>;         // (n)

var<workgroup> sums: array<f32, 256>;

// The sum of the workgroup's 256 values s, in a fixed order; thread 0 returns it.
fn workgroup_sum(tid: u32, s: f32) -> f32 {
    sums[tid] = s;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w /= 2u) {
        if tid < w {
            sums[tid] += sums[tid + w];
        }
        workgroupBarrier();
    }
    return sums[0];
}

@compute @workgroup_size(256)
fn reduce_partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    p = params;
    let stride = 256u * p.parts;
    var s = 0.0;
    for (var i = wg.x * 256u + tid; i < p.n; i += stride) {
        let v = x[i];
        if SQUARE {
            s = fma(v, v, s);
        } else {
            s += v;
        }
    }
    let total = workgroup_sum(tid, s);
    if tid == 0u {
        out[wg.x] = total;
    }
}

@compute @workgroup_size(256)
fn reduce_final(@builtin(local_invocation_index) tid: u32) {
    p = params;
    var s = 0.0;
    for (var i = tid; i < p.n; i += 256u) {
        s += x[i];
    }
    var total = workgroup_sum(tid, s);
    if tid == 0u {
        if p.accumulate != 0u {
            total += out[p.index];
        }
        out[p.index] = total;
    }
}
