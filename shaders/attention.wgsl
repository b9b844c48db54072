// attention.wgsl: Luong's "general" attention over the encoder's outputs, batched over every
// decoder step at once (the decoder's states do not depend on the attention, so the whole
// attention of a training step runs after the decoder, in a handful of dispatches).
//   attention_dots:  out[t, b, j] = x[t, b, :] · enc[j, b, :]       scores (x = s W_a), or the
//                    gradient of the weights (x = d context); with MASK, j >= src_len[b] gets
//                    -1e30, which the softmax turns into exactly 0.
//   attention_mix:   out[t, b, :] (+)= sum_j w[t, b, j] enc[j, b, :]   the context (w = the
//                    weights), or the gradient of x (w = d scores)
//   attention_mix_t: out[j, b, :] (+)= sum_t w[t, b, j] x[t, b, :]     the gradient of enc
//                    (attention_mix with TRANSPOSED)
// Layout: x, out of mix (T_t, B, A); enc, out of mix_t (T_s, B, A); w (T_t * B, T_s). One thread
// per output element, summing in order: deterministic, no atomics, barrier-free.

override MASK: bool = false;
override TRANSPOSED: bool = false;

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;        // (T_t, B, A) or w (T_t * B, T_s)
@group(0) @binding(3) var<storage, read> enc: array<f32>;      // (T_s, B, A) (mix_t: x (T_t, B, A))
@group(0) @binding(4) var<storage, read> src_len: array<u32>;  // (B)

fn put(i: u32, v: f32) {
    if p.accumulate != 0u {
        out[i] += v;
    } else {
        out[i] = v;
    }
}

@compute @workgroup_size(256)
fn attention_dots(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = begin(gid, nwg);
    if e >= p.tgt * p.batch * p.src { return; }
    let j = e % p.src;
    let tb = e / p.src;
    let b = tb % p.batch;
    if MASK && j >= src_len[b] {
        out[e] = -1e30;
        return;
    }
    let xa = tb * p.width;
    let ea = (j * p.batch + b) * p.width;
    var s = 0.0;
    for (var k = 0u; k < p.width; k++) {
        s += x[xa + k] * enc[ea + k];
    }
    out[e] = s;
}

// attention_mix, or with TRANSPOSED attention_mix_t: output row o is a target step (a source
// step), the sum runs over i, the source (target) steps, and x is enc (the target-side x).
@compute @workgroup_size(256)
fn attention_mix(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = begin(gid, nwg);
    if e >= select(p.tgt, p.src, TRANSPOSED) * p.batch * p.width { return; }
    let k = e % p.width;
    let ob = e / p.width;
    let b = ob % p.batch;
    let o = ob / p.batch;
    var s = 0.0;
    for (var i = 0u; i < select(p.src, p.tgt, TRANSPOSED); i++) {
        let ib = i * p.batch + b;
        s += x[select(ob * p.src + i, ib * p.src + o, TRANSPOSED)] * enc[ib * p.width + k];
    }
    put(e, s);
}
