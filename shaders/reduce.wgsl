// reduce.wgsl: a sum over a whole buffer in two passes, deterministic.
//   reduce_partial: PARTS workgroups of 256 threads; thread t of all of them sums x[t], x[t + 256
//                   PARTS], ... (squared when SQUARE), neighbouring threads reading neighbouring
//                   elements, and each workgroup adds its threads' sums in a fixed tree into
//                   partial[workgroup].
//   reduce_final:   one workgroup adds the PARTS partials in the same tree into out[index]
//                   (written, or added when accumulate is set). With FINALIZE, out is the step
//                   state, the sum the squared gradient norm, and the same thread then decides
//                   the step (finalize): one dispatch fewer than a kernel of its own.

override SQUARE: bool = false;
override FINALIZE: bool = false;

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
        if FINALIZE {
            finalize(total);
        }
    }
}

// The step's decision from the loss and the squared gradient norm sumsq in the step state out:
// finite or not (the optimizers skip a non-finite step, the counters say which it was), and the
// clipping scale the optimizers apply (PyTorch's clip_grad_norm_: max_norm / (norm + 1e-6), at
// most 1).
fn finalize(sumsq: f32) {
    let norm = sqrt(sumsq);
    out[GRAD_NORM] = norm;
    var clip = 1.0;
    if p.max_norm > 0.0 && norm > p.max_norm {
        clip = p.max_norm / (norm + 1e-6);
    }
    out[CLIP_SCALE] = clip;
    if is_finite_f32(out[LOSS]) && is_finite_f32(sumsq) {
        out[OK] = 1.0;
        out[STEP] += 1.0;
    } else {
        out[OK] = 0.0;
        out[SKIPPED] += 1.0;
    }
}
