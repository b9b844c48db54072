// reduce.wgsl: sums over a whole buffer in two barrier-free passes, deterministic.
//   reduce_partial: thread t of P sums x[t], x[t + P], x[t + 2P], ... (squared when SQUARE)
//                   into partial[t]; neighbouring threads read neighbouring elements.
//   reduce_final:   one thread sums the P partials in order into out[index] (written, or added
//                   when accumulate is set).

struct Params {
    n: u32,          // elements of x (partial) or partials (final)
    parts: u32,      // P
    index: u32,      // final: where in out the sum goes
    accumulate: u32, // final: 1 adds to out[index]
}
// must match src/gpu/kernels.rs::ReduceParams

override SQUARE: bool = false;

@group(0) @binding(0) var<storage, read> params: Params;
var<private> p: Params; // params, copied once per thread (common.wgsl)
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // partial (P) or out
@group(0) @binding(2) var<storage, read> x: array<f32>;         // (n)

@compute @workgroup_size(256)
fn reduce_partial(@builtin(global_invocation_id) gid: vec3<u32>) {
    p = params;
    let t = gid.x;
    if t >= p.parts { return; }
    var s = 0.0;
    for (var i = t; i < p.n; i += p.parts) {
        let v = x[i];
        if SQUARE {
            s += v * v;
        } else {
            s += v;
        }
    }
    out[t] = s;
}

@compute @workgroup_size(1)
fn reduce_final() {
    p = params;
    var s = 0.0;
    for (var i = 0u; i < p.n; i++) {
        s += x[i];
    }
    if p.accumulate != 0u {
        s += out[p.index];
    }
    out[p.index] = s;
}
