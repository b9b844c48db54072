// optim.wgsl: the tail of a training step, decided on the GPU so that no host round trip is
// needed between the backward pass and the update.
//   finalize_step:  one thread reads the loss and the squared gradient norm that the reductions
//                   left in `step`, decides whether the step is finite, and sets the clipping
//                   scale (PyTorch's clip_grad_norm_: max_norm / (norm + 1e-6), at most 1).
//   clip_by_norm:   grad *= step.clip_scale
//   clip_by_value:  grad = clamp(grad, lo, hi), non-finite values left as they are so that
//                   finalize_step's guard sees them (a clamp maps NaN to a bound)
//   sgd, sgd_momentum, adagrad, adam: PyTorch's update rules (torch.optim.SGD with momentum and nesterov,
//                   Adagrad, Adam with L2 weight decay). Each returns at once, leaving the weights
//                   and the optimizer state untouched, when the step was found non-finite.
// The learning rate is read from the step state (written by the host before each step), so that
// a schedule changes it without recording a new program.
// One thread per parameter element; the parameters of a model are one flat buffer, so one
// dispatch updates them all.

struct Params {
    n: u32,
    nesterov: u32,
    beta1: f32,       // SGD momentum, Adam beta1
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    max_norm: f32,    // finalize_step; 0 disables clipping
    lo: f32,          // clip_by_value
    hi: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}
// must match src/gpu/kernels.rs::OptimParams

// Indices into the step state; must match src/gpu/kernels.rs::step_state.
const LOSS: u32 = 0u;
const GRAD_SUMSQ: u32 = 1u;
const GRAD_NORM: u32 = 2u;
const CLIP_SCALE: u32 = 3u;
const OK: u32 = 4u;
const STEP: u32 = 5u;
const SKIPPED: u32 = 6u;
const LR: u32 = 7u;

@group(0) @binding(0) var<storage, read> params: Params;
var<private> p: Params; // params, copied once per thread (common.wgsl)
@group(0) @binding(1) var<storage, read_write> step: array<f32>;  // (8) step state
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;  // (n)
@group(0) @binding(3) var<storage, read_write> param: array<f32>; // (n)
@group(0) @binding(4) var<storage, read_write> s1: array<f32>;    // (n) momentum, sum, or m
@group(0) @binding(5) var<storage, read_write> s2: array<f32>;    // (n) Adam's v

@compute @workgroup_size(1)
fn finalize_step() {
    p = params;
    let sumsq = step[GRAD_SUMSQ];
    let norm = sqrt(sumsq);
    let ok = is_finite_f32(step[LOSS]) && is_finite_f32(sumsq);
    step[GRAD_NORM] = norm;
    var clip = 1.0;
    if p.max_norm > 0.0 && norm > p.max_norm {
        clip = p.max_norm / (norm + 1e-6);
    }
    step[CLIP_SCALE] = clip;
    if ok {
        step[OK] = 1.0;
        step[STEP] += 1.0;
    } else {
        step[OK] = 0.0;
        step[SKIPPED] += 1.0;
    }
}

@compute @workgroup_size(256)
fn clip_by_norm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p = params;
    let i = linear_id(gid, nwg);
    if i >= p.n { return; }
    grad[i] *= step[CLIP_SCALE];
}

@compute @workgroup_size(256)
fn clip_by_value(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p = params;
    let i = linear_id(gid, nwg);
    if i >= p.n { return; }
    let g = grad[i];
    grad[i] = select(g, clamp(g, p.lo, p.hi), is_finite_f32(g));
}

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p = params;
    let i = linear_id(gid, nwg);
    if i >= p.n || step[OK] == 0.0 { return; }
    param[i] -= step[LR] * (grad[i] + p.weight_decay * param[i]);
}

@compute @workgroup_size(256)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p = params;
    let i = linear_id(gid, nwg);
    if i >= p.n || step[OK] == 0.0 { return; }
    let g = grad[i] + p.weight_decay * param[i];
    let buf = p.beta1 * s1[i] + g;
    s1[i] = buf;
    if p.nesterov != 0u {
        param[i] -= step[LR] * (g + p.beta1 * buf);
    } else {
        param[i] -= step[LR] * buf;
    }
}

@compute @workgroup_size(256)
fn adagrad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p = params;
    let i = linear_id(gid, nwg);
    if i >= p.n || step[OK] == 0.0 { return; }
    let g = grad[i] + p.weight_decay * param[i];
    let sum = s1[i] + g * g;
    s1[i] = sum;
    param[i] -= step[LR] * g / (sqrt(sum) + p.eps);
}

@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p = params;
    let i = linear_id(gid, nwg);
    if i >= p.n || step[OK] == 0.0 { return; }
    let t = step[STEP];
    let g = grad[i] + p.weight_decay * param[i];
    let m = p.beta1 * s1[i] + (1.0 - p.beta1) * g;
    let v = p.beta2 * s2[i] + (1.0 - p.beta2) * g * g;
    s1[i] = m;
    s2[i] = v;
    let bc1 = 1.0 - pow(p.beta1, t);
    let bc2 = 1.0 - pow(p.beta2, t);
    param[i] -= (step[LR] / bc1) * m / (sqrt(v) / sqrt(bc2) + p.eps);
}
