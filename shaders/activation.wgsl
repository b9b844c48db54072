// activation.wgsl: tanh, forward and backward, one thread per element (a conditioned initial
// state's activation; the cells apply theirs inside the fused steps).
//
// Forward writes y = f(x). Backward accumulates dx += dy * f'(x), expressed through the forward
// output y (as the fused cell kernels do), so the input need not be kept.

@group(0) @binding(1) var<storage, read_write> out: array<f32>; // y (forward) or dx (backward), (n)
@group(0) @binding(2) var<storage, read> x: array<f32>;         // x (forward) or y (backward), (n)
@group(0) @binding(3) var<storage, read> dy: array<f32>;        // (n), backward only

@compute @workgroup_size(256)
fn tanh_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = begin(gid, nwg);
    if i >= p.n { return; }
    out[i] = tanh_stable(x[i]);
}

@compute @workgroup_size(256)
fn tanh_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = begin(gid, nwg);
    if i >= p.n { return; }
    let y = x[i];
    out[i] += dy[i] * (1.0 - y * y);
}
