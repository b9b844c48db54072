// optim.wgsl: the update of a training step, decided on the GPU so that no host round trip is
// needed between the backward pass and the update (reduce.wgsl's finalize decides it).
//   clip_by_value:  grad = clamp(grad, lo, hi), non-finite values left as they are so that
//                   the finiteness guard sees them (a clamp maps NaN to a bound)
//   sgd, sgd_momentum, adagrad, adam, adamw: the update rules of src/update (PyTorch's torch.optim
//                   SGD with momentum and nesterov, Adagrad, Adam with L2 weight decay, AdamW
//                   with decoupled weight decay), each one thread per element, on the gradient
//                   scaled by the step's
//                   clipping scale (clip_grad_norm_ fused into the update; 1 without clipping).
//                   Each returns at once, leaving the weights and the optimizer state untouched,
//                   when the step was found non-finite.
// The learning rate is read from the step state (written by the host before each step), so that
// a schedule changes it without recording a new program.
// One thread per parameter element; the parameters of a model are one flat buffer, so one
// dispatch updates them all.

@group(0) @binding(1) var<storage, read_write> step: array<f32>;  // (8) step state
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;  // (n)
@group(0) @binding(3) var<storage, read_write> param: array<f32>; // (n)
@group(0) @binding(4) var<storage, read_write> s1: array<f32>;    // (n) momentum, sum, or m
@group(0) @binding(5) var<storage, read_write> s2: array<f32>;    // (n) v

@compute @workgroup_size(256)
fn clip_by_value(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = begin(gid, nwg);
    if i >= p.n { return; }
    let g = grad[i];
    grad[i] = select(g, clamp(g, p.lo, p.hi), is_finite_f32(g));
}

// h = (momentum, nesterov, weight_decay, -)
@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = begin(gid, nwg);
    if i >= p.n || step[OK] == 0.0 { return; }
    param[i] -= step[LR] * (grad[i] * step[CLIP_SCALE] + p.h.z * param[i]);
}

@compute @workgroup_size(256)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = begin(gid, nwg);
    if i >= p.n || step[OK] == 0.0 { return; }
    let momentum = p.h.x;
    let g = grad[i] * step[CLIP_SCALE] + p.h.z * param[i];
    let buf = momentum * s1[i] + g;
    s1[i] = buf;
    if p.h.y != 0.0 {
        param[i] -= step[LR] * (g + momentum * buf);
    } else {
        param[i] -= step[LR] * buf;
    }
}

// h = (eps, weight_decay, -, -)
@compute @workgroup_size(256)
fn adagrad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = begin(gid, nwg);
    if i >= p.n || step[OK] == 0.0 { return; }
    let g = grad[i] * step[CLIP_SCALE] + p.h.y * param[i];
    let sum = s1[i] + g * g;
    s1[i] = sum;
    param[i] -= step[LR] * g / (sqrt(sum) + p.h.x);
}

// Adam's moments (s1 = m, s2 = v) updated with g; returns the step Adam takes.
// h = (beta1, beta2, eps, weight_decay)
fn moment_step(i: u32, g: f32) -> f32 {
    let t = step[STEP];
    let m = p.h.x * s1[i] + (1.0 - p.h.x) * g;
    let v = p.h.y * s2[i] + (1.0 - p.h.y) * g * g;
    s1[i] = m;
    s2[i] = v;
    let bc1 = 1.0 - pow(p.h.x, t);
    let bc2 = 1.0 - pow(p.h.y, t);
    return (step[LR] / bc1) * m / (sqrt(v) / sqrt(bc2) + p.h.z);
}

// h = (beta1, beta2, eps, weight_decay): L2 weight decay added to the gradient
@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = begin(gid, nwg);
    if i >= p.n || step[OK] == 0.0 { return; }
    let g = grad[i] * step[CLIP_SCALE] + p.h.w * param[i];
    param[i] -= moment_step(i, g);
}

// h = (beta1, beta2, eps, weight_decay): weight decay decoupled, p -= lr * wd * p first
@compute @workgroup_size(256)
fn adamw(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = begin(gid, nwg);
    if i >= p.n || step[OK] == 0.0 { return; }
    let decayed = param[i] - step[LR] * p.h.w * param[i];
    param[i] = decayed - moment_step(i, grad[i] * step[CLIP_SCALE]);
}
