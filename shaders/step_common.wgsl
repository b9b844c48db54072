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
// lanes), and 16 rows (forward) or 16 columns (backward) of W_hh, which vary across lanes (the
// only gathers). Each step of 4 along the shared dimension then reads 16 vec4s of W_hh and 8
// uniform vec4s, and does 512 multiply-adds in eight mat4x4 accumulators, as the register-tiled
// matmul does. Forward, the 16 W_hh rows are the 4 gates of 4 units (LSTM, GRU) or 16 units (RNN).
// VEC4 (H % 4 == 0) reads vec4s directly; otherwise the same vec4s are assembled from scalars.

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
// The gate gradients that flow through W_hh to the previous step, (T, B, G*H): all of them for
// the RNN and the LSTM, the recurrent ones (dgh) for the GRU.
@group(0) @binding(10) var<storage, read_write> dgr: array<vec4<f32>>;
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

// W_hh[g, j .. j + 4]; zero past H and past the G*H rows.
fn w_cols4(g: u32, j: u32, rows: u32) -> vec4<f32> {
    let i = g * p.hidden + j;
    if VEC4 {
        return w_hh[i / 4u];
    }
    var v = vec4<f32>();
    if g >= rows {
        return v;
    }
    for (var q = 0u; q < 4u; q++) {
        if j + q < p.hidden {
            v[q] = w_at(i + q);
        }
    }
    return v;
}

fn set_dgr(i: u32, v: f32) {
    dgr[i / 4u][i % 4u] = v;
}

// dgr[i .. i + 4], zero from `end` on.
fn dgr4(i: u32, end: u32) -> vec4<f32> {
    if VEC4 {
        return dgr[i / 4u];
    }
    var v = vec4<f32>();
    for (var q = 0u; q < 4u; q++) {
        if i + q < end {
            v[q] = dgr[(i + q) / 4u][(i + q) % 4u];
        }
    }
    return v;
}

// W_hh rows rows.x .. rows.w at k .. k + 4, as the columns of a matrix: h * m is then the four
// rows' dot products with h.
fn w_rows_mat(rows: vec4<u32>, k: u32) -> mat4x4<f32> {
    return mat4x4<f32>(w_row4(rows.x, k), w_row4(rows.y, k), w_row4(rows.z, k), w_row4(rows.w, k));
}

// acc[r][c][i] = sum_k W_hh[gc[i], k] * h(b0 + r, k) for the 16 W_hh rows g0, g1, g2, g3.
fn recurrent_sums(g0: vec4<u32>, g1: vec4<u32>, g2: vec4<u32>, g3: vec4<u32>, b0: u32) -> array<mat4x4<f32>, 8> {
    let r0 = in_row(b0);
    let r1 = in_row(b0 + 1u);
    let r2 = in_row(b0 + 2u);
    let r3 = in_row(b0 + 3u);
    let r4 = in_row(b0 + 4u);
    let r5 = in_row(b0 + 5u);
    let r6 = in_row(b0 + 6u);
    let r7 = in_row(b0 + 7u);
    // Named accumulators: a dynamically indexed array would live in memory on a CPU-backed
    // adapter.
    var a0 = mat4x4<f32>();
    var a1 = mat4x4<f32>();
    var a2 = mat4x4<f32>();
    var a3 = mat4x4<f32>();
    var a4 = mat4x4<f32>();
    var a5 = mat4x4<f32>();
    var a6 = mat4x4<f32>();
    var a7 = mat4x4<f32>();
    for (var k = 0u; k < p.hidden; k += 4u) {
        let m0 = w_rows_mat(g0, k);
        let m1 = w_rows_mat(g1, k);
        let m2 = w_rows_mat(g2, k);
        let m3 = w_rows_mat(g3, k);
        var h = state4(r0, k);
        a0 += mat4x4<f32>(h * m0, h * m1, h * m2, h * m3);
        h = state4(r1, k);
        a1 += mat4x4<f32>(h * m0, h * m1, h * m2, h * m3);
        h = state4(r2, k);
        a2 += mat4x4<f32>(h * m0, h * m1, h * m2, h * m3);
        h = state4(r3, k);
        a3 += mat4x4<f32>(h * m0, h * m1, h * m2, h * m3);
        h = state4(r4, k);
        a4 += mat4x4<f32>(h * m0, h * m1, h * m2, h * m3);
        h = state4(r5, k);
        a5 += mat4x4<f32>(h * m0, h * m1, h * m2, h * m3);
        h = state4(r6, k);
        a6 += mat4x4<f32>(h * m0, h * m1, h * m2, h * m3);
        h = state4(r7, k);
        a7 += mat4x4<f32>(h * m0, h * m1, h * m2, h * m3);
    }
    return array<mat4x4<f32>, 8>(a0, a1, a2, a3, a4, a5, a6, a7);
}

// The four gate rows of unit j (clamped into range: units past H are computed, never stored).
fn gate_rows(j: u32, gates: u32) -> vec4<u32> {
    let jj = min(j, p.hidden - 1u);
    let H = p.hidden;
    return vec4<u32>(jj, min(1u, gates - 1u) * H + jj, min(2u, gates - 1u) * H + jj, min(3u, gates - 1u) * H + jj);
}

// W_hh[g .. g + 4, j .. j + 4] as a matrix whose column q is row g + q: m * d is then
// sum_q W_hh[g + q, j ..] * d[q].
fn w_cols_mat(g: u32, j: u32, rows: u32) -> mat4x4<f32> {
    return mat4x4<f32>(w_cols4(g, j, rows), w_cols4(g + 1u, j, rows), w_cols4(g + 2u, j, rows), w_cols4(g + 3u, j, rows));
}

// rec[r][c][q]: the gradient reaching h(b0 + r, j0 + 4c + q) through W_hh from the later step,
// sum_g dgr[next_t, b, g] * W_hh[g, j], for the thread's 16 units j0 .. j0 + 16.
fn recurrent_grad(j0: u32, b0: u32, rows: u32) -> array<mat4x4<f32>, 8> {
    var a0 = mat4x4<f32>();
    var a1 = mat4x4<f32>();
    var a2 = mat4x4<f32>();
    var a3 = mat4x4<f32>();
    var a4 = mat4x4<f32>();
    var a5 = mat4x4<f32>();
    var a6 = mat4x4<f32>();
    var a7 = mat4x4<f32>();
    if p.mode != MODE_FIRST {
        let base = p.next_t * p.batch;
        let n0 = (base + min(b0, p.batch - 1u)) * rows;
        let n1 = (base + min(b0 + 1u, p.batch - 1u)) * rows;
        let n2 = (base + min(b0 + 2u, p.batch - 1u)) * rows;
        let n3 = (base + min(b0 + 3u, p.batch - 1u)) * rows;
        let n4 = (base + min(b0 + 4u, p.batch - 1u)) * rows;
        let n5 = (base + min(b0 + 5u, p.batch - 1u)) * rows;
        let n6 = (base + min(b0 + 6u, p.batch - 1u)) * rows;
        let n7 = (base + min(b0 + 7u, p.batch - 1u)) * rows;
        for (var g = 0u; g < rows; g += 4u) {
            let c0 = w_cols_mat(g, j0, rows);
            let c1 = w_cols_mat(g, j0 + 4u, rows);
            let c2 = w_cols_mat(g, j0 + 8u, rows);
            let c3 = w_cols_mat(g, j0 + 12u, rows);
            var d = dgr4(n0 + g, n0 + rows);
            a0 += mat4x4<f32>(c0 * d, c1 * d, c2 * d, c3 * d);
            d = dgr4(n1 + g, n1 + rows);
            a1 += mat4x4<f32>(c0 * d, c1 * d, c2 * d, c3 * d);
            d = dgr4(n2 + g, n2 + rows);
            a2 += mat4x4<f32>(c0 * d, c1 * d, c2 * d, c3 * d);
            d = dgr4(n3 + g, n3 + rows);
            a3 += mat4x4<f32>(c0 * d, c1 * d, c2 * d, c3 * d);
            d = dgr4(n4 + g, n4 + rows);
            a4 += mat4x4<f32>(c0 * d, c1 * d, c2 * d, c3 * d);
            d = dgr4(n5 + g, n5 + rows);
            a5 += mat4x4<f32>(c0 * d, c1 * d, c2 * d, c3 * d);
            d = dgr4(n6 + g, n6 + rows);
            a6 += mat4x4<f32>(c0 * d, c1 * d, c2 * d, c3 * d);
            d = dgr4(n7 + g, n7 + rows);
            a7 += mat4x4<f32>(c0 * d, c1 * d, c2 * d, c3 * d);
        }
    }
    return array<mat4x4<f32>, 8>(a0, a1, a2, a3, a4, a5, a6, a7);
}

// The first element of row b's previous state (rows past the batch clamp to the last one; their
// sums are computed and never stored).
fn in_row(b: u32) -> u32 {
    return slot_row(p.in_slot, min(b, p.batch - 1u));
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
