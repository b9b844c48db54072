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
// depend on the workgroup alone (their h and gate gradients are read by state_rows and dgr_rows,
// shared by subgroup where the adapter allows: step_rows_*.wgsl), and 16 rows (forward) or 16
// columns (backward) of W_hh, which vary across lanes (read from W_hh's texture copy, see below).
// Each step of 4 along the shared dimension then reads 16 texels of W_hh and the rows' vec4s,
// and does 64 multiply-adds per batch row into a mat4x4 accumulator, as the register-tiled
// matmul does. ROWS is 8 on GPUs (128 accumulators a thread) and 16 on CPU adapters
// (src/gpu/context.rs::GpuContext::step_rows), where a texel fetch costs as much as 40
// multiply-adds and the accumulators live in memory anyway: twice the rows per fetch made the
// LSTM H=512 steps 1.4x faster on lavapipe (except where 16 rows would leave fewer than two
// workgroups a core: src/gpu/kernels.rs::StepCheck). The second 8 rows are a block of their own (hi,
// a8 .. a15) that ROWS == 8 compiles away.
// Forward, the 16 W_hh rows are the 4 gates of 4 units (LSTM; the GRU has 3 gates, 12 rows) or
// 16 units (RNN).
// The gate arithmetic that follows runs on 4 units at a time as vec4s, so that each of its loads
// and stores (gates, cells, states, y, ...) is one vec4 access rather than four: on lavapipe the
// per-element accesses of this epilogue took 40% of the LSTM forward step. It takes the
// accumulators one batch row at a time, one call per row with a constant index (forward_row in
// each cell file, backward_rows below), not in a loop: indexing the array of mat4x4s with a loop
// counter put it in memory, which on lavapipe cost as much as the sums themselves (RNN forward
// step 350 -> 210 us). Within a row a loop over the mat4x4's 4 columns costs nothing measurable
// and keeps the code small: 32 inlined copies of the GRU's backward epilogue took lavapipe 70 s
// to compile where H is not a multiple of 4.
// VEC4 (H % 4 == 0, and every offset on a vec4 boundary) reads and writes the vec4s directly;
// otherwise the same vec4s are assembled from scalars.

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

override ROWS: u32 = 8u; // batch rows per thread: 8 or 16 (src/gpu/kernels.rs::StepCheck)
const MODE_FIRST: u32 = 0u;
const MODE_STEP: u32 = 1u;
const MODE_INITIAL: u32 = 2u;

override VEC4: bool = true;

// Every buffer is bound as whole vec4s (src/gpu/tensor.rs::GpuTensor::binding rounds the binding
// up), so that with VEC4 a load or store of 4 consecutive units is one vec4 access; lavapipe
// loops over the SIMD lanes once per storage access, whatever its width (benches/loads.rs).
@group(0) @binding(0) var<storage, read> params: StepParams;
var<private> p: StepParams; // params, copied once per thread (common.wgsl)
@group(0) @binding(1) var<storage, read_write> states: array<vec4<f32>>; // see the layout above
@group(0) @binding(2) var<storage, read_write> cells: array<vec4<f32>>;  // the LSTM's, like states
@group(0) @binding(3) var<storage, read_write> gates: array<vec4<f32>>; // (T, B, 4H): LSTM i, f, g, o; GRU r, z, n, hn
@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>;      // (T, B, D*H)
@group(0) @binding(5) var<storage, read> xw: array<vec4<f32>>;           // (T, B, G*H)
// W_hh (G*H, H) through its texture copy (src/gpu/program.rs::Program::dispatch_textured):
// common.wgsl::texel reads it. Its loads vary across lanes, and on lavapipe a texel fetch is one
// gather where a storage load is a loop over the lanes.
@group(0) @binding(6) var w_hh: texture_storage_2d<rgba32float, read>;
@group(0) @binding(7) var<storage, read> bias: array<vec4<f32>>;         // b_ih (G*H), b_hh at bias_hh
@group(0) @binding(8) var<storage, read> lengths: array<u32>;            // (B)
@group(0) @binding(9) var<storage, read> dy: array<vec4<f32>>;           // (T, B, D*H)
// The gate gradients that flow through W_hh to the previous step, (T, B, G*H): all of them for
// the RNN and the LSTM, the recurrent ones (dgh) for the GRU.
@group(0) @binding(10) var<storage, read_write> dgr: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read_write> carry: array<vec4<f32>>; // (2, B, H)

// Loads and stores of n (1 to 4) consecutive elements from element i, as a vec4 (zero past n).
// With VEC4 the callers' i is a multiple of 4 and n is 4: one vec4 access. Otherwise one scalar
// access per element. One pair per buffer: WGSL has no pointers to storage in function arguments.
// Loads read vec4 i of a buffer with rd_<buffer>(i), from the buffer itself or from its texture
// copy (step_reads_*.wgsl; src/gpu/context.rs::StepInputs); stores go to the buffer.

fn ld_states(i: u32, n: u32) -> vec4<f32> {
    if VEC4 {
        return rd_states(i / 4u);
    }
    var v = vec4<f32>();
    for (var q = 0u; q < n; q++) {
        v[q] = rd_states((i + q) / 4u)[(i + q) % 4u];
    }
    return v;
}

fn st_states(i: u32, v: vec4<f32>, n: u32) {
    if VEC4 {
        states[i / 4u] = v;
        return;
    }
    for (var q = 0u; q < n; q++) {
        states[(i + q) / 4u][(i + q) % 4u] = v[q];
    }
}

fn ld_gates(i: u32, n: u32) -> vec4<f32> {
    if VEC4 {
        return rd_gates(i / 4u);
    }
    var v = vec4<f32>();
    for (var q = 0u; q < n; q++) {
        v[q] = rd_gates((i + q) / 4u)[(i + q) % 4u];
    }
    return v;
}

fn st_gates(i: u32, v: vec4<f32>, n: u32) {
    if VEC4 {
        gates[i / 4u] = v;
        return;
    }
    for (var q = 0u; q < n; q++) {
        gates[(i + q) / 4u][(i + q) % 4u] = v[q];
    }
}

fn st_y(i: u32, v: vec4<f32>, n: u32) {
    if VEC4 {
        y[i / 4u] = v;
        return;
    }
    for (var q = 0u; q < n; q++) {
        y[(i + q) / 4u][(i + q) % 4u] = v[q];
    }
}

fn ld_xw(i: u32, n: u32) -> vec4<f32> {
    if VEC4 {
        return rd_xw(i / 4u);
    }
    var v = vec4<f32>();
    for (var q = 0u; q < n; q++) {
        v[q] = rd_xw((i + q) / 4u)[(i + q) % 4u];
    }
    return v;
}

fn ld_cells(i: u32, n: u32) -> vec4<f32> {
    if VEC4 {
        return rd_cells(i / 4u);
    }
    var v = vec4<f32>();
    for (var q = 0u; q < n; q++) {
        v[q] = rd_cells((i + q) / 4u)[(i + q) % 4u];
    }
    return v;
}

fn st_cells(i: u32, v: vec4<f32>, n: u32) {
    if VEC4 {
        cells[i / 4u] = v;
        return;
    }
    for (var q = 0u; q < n; q++) {
        cells[(i + q) / 4u][(i + q) % 4u] = v[q];
    }
}

fn w_texel(t: u32) -> vec4<f32> {
    return texel(w_hh, t);
}

fn ld_w(i: u32, n: u32) -> vec4<f32> {
    if VEC4 {
        return w_texel(i / 4u);
    }
    var v = vec4<f32>();
    for (var q = 0u; q < n; q++) {
        v[q] = w_texel((i + q) / 4u)[(i + q) % 4u];
    }
    return v;
}

fn ld_bias(i: u32, n: u32) -> vec4<f32> {
    if VEC4 {
        return rd_bias(i / 4u);
    }
    var v = vec4<f32>();
    for (var q = 0u; q < n; q++) {
        v[q] = rd_bias((i + q) / 4u)[(i + q) % 4u];
    }
    return v;
}

fn ld_dy(i: u32, n: u32) -> vec4<f32> {
    if VEC4 {
        return rd_dy(i / 4u);
    }
    var v = vec4<f32>();
    for (var q = 0u; q < n; q++) {
        v[q] = rd_dy((i + q) / 4u)[(i + q) % 4u];
    }
    return v;
}

fn ld_dgr(i: u32, n: u32) -> vec4<f32> {
    if VEC4 {
        return rd_dgr(i / 4u);
    }
    var v = vec4<f32>();
    for (var q = 0u; q < n; q++) {
        v[q] = rd_dgr((i + q) / 4u)[(i + q) % 4u];
    }
    return v;
}

fn st_dgr(i: u32, v: vec4<f32>, n: u32) {
    if VEC4 {
        dgr[i / 4u] = v;
        return;
    }
    for (var q = 0u; q < n; q++) {
        dgr[(i + q) / 4u][(i + q) % 4u] = v[q];
    }
}

fn ld_carry(i: u32, n: u32) -> vec4<f32> {
    if VEC4 {
        return rd_carry(i / 4u);
    }
    var v = vec4<f32>();
    for (var q = 0u; q < n; q++) {
        v[q] = rd_carry((i + q) / 4u)[(i + q) % 4u];
    }
    return v;
}

fn st_carry(i: u32, v: vec4<f32>, n: u32) {
    if VEC4 {
        carry[i / 4u] = v;
        return;
    }
    for (var q = 0u; q < n; q++) {
        carry[(i + q) / 4u][(i + q) % 4u] = v[q];
    }
}

// How many of the 4 runs of 4 units from j0 (a thread's 16) start below H (1 to 4, for j0 < H).
fn unit_groups(j0: u32) -> u32 {
    return min(4u, (p.hidden - j0 + 3u) / 4u);
}

// How many of the units j .. j + 4 exist (0 to 4).
fn units_from(j: u32) -> u32 {
    return select(0u, min(4u, p.hidden - j), j < p.hidden);
}

// h[k .. k + 4] of the state row starting at element `row`; zero past H.
fn state4(row: u32, k: u32) -> vec4<f32> {
    return ld_states(row + k, units_from(k));
}

// W_hh[r, k .. k + 4]; zero past H.
fn w_row4(r: u32, k: u32) -> vec4<f32> {
    return ld_w(r * p.hidden + k, units_from(k));
}

// W_hh[g, j .. j + 4]; zero past H and past the G*H rows.
fn w_cols4(g: u32, j: u32, rows: u32) -> vec4<f32> {
    if g >= rows {
        return vec4<f32>();
    }
    return ld_w(g * p.hidden + j, units_from(j));
}

// W_hh rows rows.x .. rows.w at k .. k + 4, as the columns of a matrix: h * m is then the four
// rows' dot products with h.
fn w_rows_mat(rows: vec4<u32>, k: u32) -> mat4x4<f32> {
    return mat4x4<f32>(w_row4(rows.x, k), w_row4(rows.y, k), w_row4(rows.z, k), w_row4(rows.w, k));
}

// acc[r][c][i] = sum_k W_hh[gc[i], k] * h(b0 + r, k) for the W_hh row groups g0 .. g3 (each
// cell file sets SUM_GROUPS: the GRU has 3 gates, and its column 3 stays zero, never loaded or
// multiplied).
fn sums4(h: vec4<f32>, m0: mat4x4<f32>, m1: mat4x4<f32>, m2: mat4x4<f32>, m3: mat4x4<f32>) -> mat4x4<f32> {
    if SUM_GROUPS == 4u {
        return mat4x4<f32>(h * m0, h * m1, h * m2, h * m3);
    }
    return mat4x4<f32>(h * m0, h * m1, h * m2, vec4<f32>());
}

fn recurrent_sums(g0: vec4<u32>, g1: vec4<u32>, g2: vec4<u32>, g3: vec4<u32>, b0: u32) -> array<mat4x4<f32>, 16> {
    let rows = array<u32, 8>(in_row(b0), in_row(b0 + 1u), in_row(b0 + 2u), in_row(b0 + 3u),
                             in_row(b0 + 4u), in_row(b0 + 5u), in_row(b0 + 6u), in_row(b0 + 7u));
    let hi = array<u32, 8>(in_row(b0 + 8u), in_row(b0 + 9u), in_row(b0 + 10u), in_row(b0 + 11u),
                           in_row(b0 + 12u), in_row(b0 + 13u), in_row(b0 + 14u), in_row(b0 + 15u));
    let own = own_row(rows);
    let own_hi = own_row(hi);
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
    var a8 = mat4x4<f32>();
    var a9 = mat4x4<f32>();
    var a10 = mat4x4<f32>();
    var a11 = mat4x4<f32>();
    var a12 = mat4x4<f32>();
    var a13 = mat4x4<f32>();
    var a14 = mat4x4<f32>();
    var a15 = mat4x4<f32>();
    for (var k = 0u; k < p.hidden; k += 4u) {
        let m0 = w_rows_mat(g0, k);
        let m1 = w_rows_mat(g1, k);
        let m2 = w_rows_mat(g2, k);
        var m3 = mat4x4<f32>();
        if SUM_GROUPS == 4u {
            m3 = w_rows_mat(g3, k);
        }
        let h = state_rows(rows, own, k);
        a0 += sums4(h[0], m0, m1, m2, m3);
        a1 += sums4(h[1], m0, m1, m2, m3);
        a2 += sums4(h[2], m0, m1, m2, m3);
        a3 += sums4(h[3], m0, m1, m2, m3);
        a4 += sums4(h[4], m0, m1, m2, m3);
        a5 += sums4(h[5], m0, m1, m2, m3);
        a6 += sums4(h[6], m0, m1, m2, m3);
        a7 += sums4(h[7], m0, m1, m2, m3);
        if ROWS == 16u {
            let e = state_rows(hi, own_hi, k);
            a8 += sums4(e[0], m0, m1, m2, m3);
            a9 += sums4(e[1], m0, m1, m2, m3);
            a10 += sums4(e[2], m0, m1, m2, m3);
            a11 += sums4(e[3], m0, m1, m2, m3);
            a12 += sums4(e[4], m0, m1, m2, m3);
            a13 += sums4(e[5], m0, m1, m2, m3);
            a14 += sums4(e[6], m0, m1, m2, m3);
            a15 += sums4(e[7], m0, m1, m2, m3);
        }
    }
    return array<mat4x4<f32>, 16>(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15);
}

// The W_hh rows of gate q for units j .. j + 4 (clamped into range: units past H are computed,
// never stored). For the RNN (one gate) group q = 0 at j, j + 4, ... is 4 consecutive units.
fn gate_group(q: u32, j: u32) -> vec4<u32> {
    let row = q * p.hidden;
    let last = p.hidden - 1u;
    return vec4<u32>(row + min(j, last), row + min(j + 1u, last), row + min(j + 2u, last), row + min(j + 3u, last));
}

// W_hh[g .. g + 4, j .. j + 4] as a matrix whose column q is row g + q: m * d is then
// sum_q W_hh[g + q, j ..] * d[q].
fn w_cols_mat(g: u32, j: u32, rows: u32) -> mat4x4<f32> {
    return mat4x4<f32>(w_cols4(g, j, rows), w_cols4(g + 1u, j, rows), w_cols4(g + 2u, j, rows), w_cols4(g + 3u, j, rows));
}

// rec[r][c][q]: the gradient reaching h(b0 + r, j0 + 4c + q) through W_hh from the later step,
// sum_g dgr[next_t, b, g] * W_hh[g, j], for the thread's 16 units j0 .. j0 + 16.
fn recurrent_grad(j0: u32, b0: u32, rows: u32) -> array<mat4x4<f32>, 16> {
    var a0 = mat4x4<f32>();
    var a1 = mat4x4<f32>();
    var a2 = mat4x4<f32>();
    var a3 = mat4x4<f32>();
    var a4 = mat4x4<f32>();
    var a5 = mat4x4<f32>();
    var a6 = mat4x4<f32>();
    var a7 = mat4x4<f32>();
    var a8 = mat4x4<f32>();
    var a9 = mat4x4<f32>();
    var a10 = mat4x4<f32>();
    var a11 = mat4x4<f32>();
    var a12 = mat4x4<f32>();
    var a13 = mat4x4<f32>();
    var a14 = mat4x4<f32>();
    var a15 = mat4x4<f32>();
    if p.mode != MODE_FIRST {
        let n = array<u32, 8>(next_row(b0, rows), next_row(b0 + 1u, rows), next_row(b0 + 2u, rows),
                              next_row(b0 + 3u, rows), next_row(b0 + 4u, rows), next_row(b0 + 5u, rows),
                              next_row(b0 + 6u, rows), next_row(b0 + 7u, rows));
        let hi = array<u32, 8>(next_row(b0 + 8u, rows), next_row(b0 + 9u, rows), next_row(b0 + 10u, rows),
                               next_row(b0 + 11u, rows), next_row(b0 + 12u, rows), next_row(b0 + 13u, rows),
                               next_row(b0 + 14u, rows), next_row(b0 + 15u, rows));
        let own = own_row(n);
        let own_hi = own_row(hi);
        for (var g = 0u; g < rows; g += 4u) {
            let c0 = w_cols_mat(g, j0, rows);
            let c1 = w_cols_mat(g, j0 + 4u, rows);
            let c2 = w_cols_mat(g, j0 + 8u, rows);
            let c3 = w_cols_mat(g, j0 + 12u, rows);
            let d = dgr_rows(n, own, g, min(4u, rows - g));
            a0 += grads4(d[0], c0, c1, c2, c3);
            a1 += grads4(d[1], c0, c1, c2, c3);
            a2 += grads4(d[2], c0, c1, c2, c3);
            a3 += grads4(d[3], c0, c1, c2, c3);
            a4 += grads4(d[4], c0, c1, c2, c3);
            a5 += grads4(d[5], c0, c1, c2, c3);
            a6 += grads4(d[6], c0, c1, c2, c3);
            a7 += grads4(d[7], c0, c1, c2, c3);
            if ROWS == 16u {
                let e = dgr_rows(hi, own_hi, g, min(4u, rows - g));
                a8 += grads4(e[0], c0, c1, c2, c3);
                a9 += grads4(e[1], c0, c1, c2, c3);
                a10 += grads4(e[2], c0, c1, c2, c3);
                a11 += grads4(e[3], c0, c1, c2, c3);
                a12 += grads4(e[4], c0, c1, c2, c3);
                a13 += grads4(e[5], c0, c1, c2, c3);
                a14 += grads4(e[6], c0, c1, c2, c3);
                a15 += grads4(e[7], c0, c1, c2, c3);
            }
        }
    }
    return array<mat4x4<f32>, 16>(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15);
}

// The backward epilogue of a thread's ROWS batch rows: each cell file's backward_units for the
// 16 units j0 .. j0 + 16, 4 at a time; rec[r] column u is the gradient reaching units j0 + 4u ...
// of row b0 + r through W_hh. One call per row with a constant index (see the top of this file).
fn backward_rows(b0: u32, j0: u32, rec: array<mat4x4<f32>, 16>) {
    backward_row(b0, j0, rec[0]);
    backward_row(b0 + 1u, j0, rec[1]);
    backward_row(b0 + 2u, j0, rec[2]);
    backward_row(b0 + 3u, j0, rec[3]);
    backward_row(b0 + 4u, j0, rec[4]);
    backward_row(b0 + 5u, j0, rec[5]);
    backward_row(b0 + 6u, j0, rec[6]);
    backward_row(b0 + 7u, j0, rec[7]);
    if ROWS == 16u {
        backward_row(b0 + 8u, j0, rec[8]);
        backward_row(b0 + 9u, j0, rec[9]);
        backward_row(b0 + 10u, j0, rec[10]);
        backward_row(b0 + 11u, j0, rec[11]);
        backward_row(b0 + 12u, j0, rec[12]);
        backward_row(b0 + 13u, j0, rec[13]);
        backward_row(b0 + 14u, j0, rec[14]);
        backward_row(b0 + 15u, j0, rec[15]);
    }
}

fn backward_row(b: u32, j0: u32, rec: mat4x4<f32>) {
    if b >= p.batch {
        return;
    }
    for (var u = 0u; u < unit_groups(j0); u++) {
        backward_units(b, j0 + 4u * u, rec[u]);
    }
}

// The gradient reaching 16 units (4 per column) from one batch row's gate gradients d at rows
// g .. g + 4 of W_hh: column u is c_u * d.
fn grads4(d: vec4<f32>, c0: mat4x4<f32>, c1: mat4x4<f32>, c2: mat4x4<f32>, c3: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(c0 * d, c1 * d, c2 * d, c3 * d);
}

// The first element of batch row b's gate gradients at step next_t (rows past the batch clamp to
// the last one; their sums are computed and never stored).
fn next_row(b: u32, rows: u32) -> u32 {
    return (p.next_t * p.batch + min(b, p.batch - 1u)) * rows;
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
