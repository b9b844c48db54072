// step_common.wgsl: prepended to rnn.wgsl, lstm.wgsl and gru.wgsl (src/gpu/shaders.rs).
//
// The recurrence is the only work of a recurrent network that cannot be batched over time: one
// fused kernel per time step and layer direction does the matmul with W_hh, the gate
// nonlinearities and the state update (forward), or the gate derivatives and the matmul with W_hh
// that carries the gradient to the previous step (backward). Everything else (input projections,
// weight gradients) is one GEMM over all steps, outside these kernels.
//
// Layout (src/model/graph.rs): states[state_base + slot * B * H + b * H + j] holds the hidden state
// of slot `slot`: the forward direction reads slot t and writes t + 1, the reverse direction reads
// t + 1 and writes t. gates, xw, dg, dgh are (T, B, G*H); y and dy are (T, B, D*H), this
// direction's columns starting at out_col. carry (2, B, H) holds, between backward steps, the
// gradient reaching the state directly (not through W_hh) and, for the LSTM, the cell gradient.
//
// Padded steps (t >= lengths[b]) keep the state, output zero, and pass the state gradient through
// untouched: their gate gradients are zero.
//
// Thread mapping, chosen for lavapipe and sound on GPUs: a thread owns ROWS batch rows, which
// depend on the workgroup alone (loads of h and of the gate gradients are uniform across SIMD
// lanes), and hidden units that vary across lanes (loads of W_hh are the only gathers). Forward:
// one unit, all its gates, W_hh rows read 4 floats at a time along k. Backward: 4 consecutive
// units, W_hh read 4 floats at a time along j. VEC4 (H % 4 == 0) reads vec4s directly; otherwise
// the same vec4s are assembled from scalars.

struct StepParams {
    t: u32,
    batch: u32,
    hidden: u32,
    in_slot: u32,
    out_slot: u32,
    state_base: u32,
    out_stride: u32,
    out_col: u32,
    bias_hh: u32,   // offset of b_hh within the bias binding
    next_t: u32,    // backward: the step whose gate gradients reach this one through W_hh
    mode: u32,      // backward: 0 the first step processed, 1 a later step, 2 the initial state
    _pad: u32,
}
// must match src/gpu/kernels.rs::StepParams

const ROWS: u32 = 8u;
const MODE_FIRST: u32 = 0u;
const MODE_STEP: u32 = 1u;
const MODE_INITIAL: u32 = 2u;

override VEC4: bool = true;

@group(0) @binding(0) var<uniform> p: StepParams;
@group(0) @binding(1) var<storage, read_write> states: array<vec4<f32>>; // see the layout above
@group(0) @binding(6) var<storage, read> w_hh: array<vec4<f32>>;         // (G*H, H)
@group(0) @binding(8) var<storage, read> lengths: array<u32>;            // (B)
@group(0) @binding(12) var<storage, read_write> carry: array<f32>;       // (2, B, H)

fn state_at(i: u32) -> f32 {
    return states[i / 4u][i % 4u];
}

fn set_state(i: u32, v: f32) {
    states[i / 4u][i % 4u] = v;
}

// h[k .. k + 4] of the state row starting at element `row`; zero past H.
fn state4(row: u32, k: u32) -> vec4<f32> {
    if VEC4 {
        return states[(row + k) / 4u];
    }
    var v = vec4<f32>();
    for (var q = 0u; q < 4u; q++) {
        if k + q < p.hidden {
            v[q] = state_at(row + k + q);
        }
    }
    return v;
}

fn w_at(i: u32) -> f32 {
    return w_hh[i / 4u][i % 4u];
}

// W_hh[r, k .. k + 4]; zero past H.
fn w_row4(r: u32, k: u32) -> vec4<f32> {
    let i = r * p.hidden + k;
    if VEC4 {
        return w_hh[i / 4u];
    }
    var v = vec4<f32>();
    for (var q = 0u; q < 4u; q++) {
        if k + q < p.hidden {
            v[q] = w_at(i + q);
        }
    }
    return v;
}

// W_hh[g, j .. j + 4]; zero past H.
fn w_cols4(g: u32, j: u32) -> vec4<f32> {
    let i = g * p.hidden + j;
    if VEC4 {
        return w_hh[i / 4u];
    }
    var v = vec4<f32>();
    for (var q = 0u; q < 4u; q++) {
        if j + q < p.hidden {
            v[q] = w_at(i + q);
        }
    }
    return v;
}

// The first element of row b's previous state (rows past the batch clamp to the last one; their
// sums are computed and never stored).
fn in_row(b: u32) -> u32 {
    return slot_row(p.in_slot, min(b, p.batch - 1u));
}

// Four gates' dot products with one vec4 of the state.
fn dots4(w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>, h: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(w0, h), dot(w1, h), dot(w2, h), dot(w3, h));
}

fn valid(b: u32) -> bool {
    return p.t < lengths[b];
}

fn slot_row(slot: u32, b: u32) -> u32 {
    return p.state_base + (slot * p.batch + b) * p.hidden;
}

fn out_index(b: u32, j: u32) -> u32 {
    return (p.t * p.batch + b) * p.out_stride + p.out_col + j;
}
