// dropout.wgsl: inverted dropout with a counter-based mask, so that nothing is stored: the
// backward pass draws the same mask again from (seed, index). The CPU reference draws it with
// the same hash (src/rng.rs::hash_uniform), so GPU and CPU training agree.
//   dropout_forward:  out = keep ? x / (1 - p) : 0
//   dropout_backward: dx += keep ? dy / (1 - p) : 0

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> seeds: array<u32>; // per-step seed, written by the host

// must match src/rng.rs::hash_u32
fn hash_u32(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

// must match src/rng.rs::hash_uniform
fn hash_uniform(seed: u32, index: u32) -> f32 {
    let h = hash_u32(index ^ hash_u32(seed));
    return f32(h >> 8u) * (1.0 / 16777216.0);
}

fn keep_scale(i: u32) -> f32 {
    let seed = seeds[0] ^ p.seed;
    return select(0.0, 1.0 / (1.0 - p.prob), hash_uniform(seed, i) >= p.prob);
}

@compute @workgroup_size(256)
fn dropout_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = begin(gid, nwg);
    if i >= p.n { return; }
    out[i] = x[i] * keep_scale(i);
}

@compute @workgroup_size(256)
fn dropout_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = begin(gid, nwg);
    if i >= p.n { return; }
    out[i] += x[i] * keep_scale(i);
}
