// step_common.wgsl: prepended to rnn.wgsl, lstm.wgsl and gru.wgsl (src/gpu/shaders.rs).
//
// The recurrence is the only work of a recurrent network that cannot be batched over time: one
// fused kernel per time step and layer direction does the product with W_hh, the gate
// nonlinearities and the state update (forward), or the gate derivatives and the product with
// W_hh that carries the gradient to the previous step (backward). Everything else (input
// projections, weight gradients) is one GEMM over all steps, outside these kernels.
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
// Thread mapping (src/gpu/kernels.rs::StepTiling picks it per shape). A step is a small product
// (B rows, G*H or H outputs, a sum over H or G*H) followed by per-unit arithmetic; B*H is only a
// few thousand, so a workgroup of 64 threads owns a tile of `tile_units` units x `tile_rows`
// batch rows, and where that leaves too few workgroups to fill a large GPU (at least 256 for the
// standard cases) the sum of each output is split `k_split` ways across neighbouring lanes, the
// parts added in workgroup memory in a fixed order (deterministic). Lane l is
//   s = l % k_split (its part of the sum), u = (l / k_split) % tile_units, r = l / (k_split * tile_units).
// The sum runs in chunks of KC along its length: the workgroup stages the chunk of its batch
// rows (h forward, the later step's gate gradients backward) and of W_hh into workgroup memory,
// every lane loading neighbouring addresses (coalesced), then each lane sums its part from there
// with fma. Forward a lane sums its unit's G gate rows (one vec4, gate q in component q);
// backward, the one column of W_hh of its unit. The rows are padded to an odd stride, so that
// lanes reading one column of a tile hit different banks.
// Every lane stays to the end of the sums (the barriers need uniform control flow); lanes past
// the batch, the units or the tile drop their result.

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
    tile_units: u32,
    tile_rows: u32,
    k_split: u32,
    _pad0: u32,
    _pad1: u32,
}
// must match src/gpu/kernels.rs::StepParams

const MODE_FIRST: u32 = 0u;
const MODE_STEP: u32 = 1u;
const MODE_INITIAL: u32 = 2u;

// Threads per workgroup, the chunk of the sum staged at a time, and the padded row stride of the
// staged tiles; the tile limits below must match src/gpu/kernels.rs::StepTiling.
const STEP_WG: u32 = 64u;
const KC: u32 = 32u;
const KCP: u32 = 33u;
// The batch rows' chunk: tile_rows (<= 32) rows of KCP.
var<workgroup> rows_tile: array<f32, 1056>;
// W_hh's chunk: forward G * tile_units (<= 64) rows of KCP; backward KC rows of tile_units + 1
// (tile_units <= 64).
var<workgroup> w_tile: array<f32, 2112>;
// The k_split parts of each lane's sums.
var<workgroup> parts: array<vec4<f32>, 64>;

@group(0) @binding(0) var<storage, read> params: StepParams;
var<private> p: StepParams; // params, copied once per thread (common.wgsl)
@group(0) @binding(1) var<storage, read_write> states: array<f32>; // see the layout above
@group(0) @binding(2) var<storage, read_write> cells: array<f32>;  // the LSTM's, like states
@group(0) @binding(3) var<storage, read_write> gates: array<f32>;  // (T, B, 4H): LSTM i, f, g, o; GRU r, z, n, hn
@group(0) @binding(4) var<storage, read_write> y: array<f32>;      // (T, B, D*H)
@group(0) @binding(5) var<storage, read> xw: array<f32>;           // (T, B, G*H)
@group(0) @binding(6) var<storage, read> w_hh: array<f32>;         // (G*H, H)
@group(0) @binding(7) var<storage, read> bias: array<f32>;         // b_ih (G*H), b_hh at bias_hh
// The sequence lengths (B) as a uniform, to keep every step kernel within WebGPU's default of 8
// storage buffers a stage; its 4096 vec4s take batches of up to 16384 (src/gpu/kernels.rs::
// MAX_STEP_BATCH; src/gpu/tensor.rs allocates every u32 buffer at least that large).
@group(0) @binding(8) var<uniform> lengths: array<vec4<u32>, 4096>;
@group(0) @binding(9) var<storage, read> dy: array<f32>;           // (T, B, D*H)
// The gate gradients that flow through W_hh to the previous step, (T, B, G*H): all of them for
// the RNN and the LSTM, the recurrent ones (dgh) for the GRU.
@group(0) @binding(10) var<storage, read_write> dgr: array<f32>;
@group(0) @binding(12) var<storage, read_write> carry: array<f32>; // (2, B, H)

// A lane's place in its workgroup's tile (see the top of this file).
struct Lane {
    s: u32, // its part of the sum
    u: u32, // its unit within the tile
    r: u32, // its batch row within the tile
    j: u32, // its unit
    b: u32, // its batch row
}

fn lane_of(wg: vec3<u32>, l: u32) -> Lane {
    let s = l % p.k_split;
    let u = (l / p.k_split) % p.tile_units;
    let r = l / (p.k_split * p.tile_units);
    return Lane(s, u, r, wg.x * p.tile_units + u, wg.y * p.tile_rows + r);
}

// Whether the lane owns an output: the first part of the sum, inside the tile, the batch and H.
fn owns_output(ln: Lane) -> bool {
    return ln.s == 0u && ln.r < p.tile_rows && ln.j < p.hidden && ln.b < p.batch;
}

// Adds the k_split parts of the lanes' sums: the lane with s == 0 returns the total, in order
// (lanes l .. l + k_split hold the parts of one output).
fn add_parts(l: u32, acc: vec4<f32>) -> vec4<f32> {
    parts[l] = acc;
    workgroupBarrier();
    var total = parts[l];
    if l % p.k_split == 0u {
        for (var q = 1u; q < p.k_split; q++) {
            total += parts[l + q];
        }
    }
    return total;
}

// Forward: the recurrent sums of the lane's unit, gate q in component q (q < GATES, each cell
// file's gate count): sum_k h(b, k) W_hh[q H + j, k], h the state of in_slot.
fn gate_sums(wg: vec3<u32>, l: u32, ln: Lane) -> vec4<f32> {
    // Loop bounds from the read-only parameters, not their private copy: the barriers need
    // control flow the uniformity analysis (Tint) can prove uniform.
    let H = params.hidden;
    let units = params.tile_units;
    let rows = params.tile_rows;
    let j0 = wg.x * units;
    let b0 = wg.y * rows;
    var acc = vec4<f32>();
    for (var k0 = 0u; k0 < H; k0 += KC) {
        for (var e = l; e < rows * KC; e += STEP_WG) {
            let r = e / KC;
            let kk = e % KC;
            var v = 0.0;
            if b0 + r < p.batch && k0 + kk < H {
                v = states[slot_row(p.in_slot, b0 + r) + k0 + kk];
            }
            rows_tile[r * KCP + kk] = v;
        }
        for (var e = l; e < GATES * units * KC; e += STEP_WG) {
            let row = e / KC; // gate row / units, unit row % units
            let kk = e % KC;
            let j = j0 + row % units;
            var v = 0.0;
            if j < H && k0 + kk < H {
                v = w_hh[((row / units) * H + j) * H + k0 + kk];
            }
            w_tile[row * KCP + kk] = v;
        }
        workgroupBarrier();
        // Lanes past the tile read its last row (and drop the result).
        let a = min(ln.r, rows - 1u) * KCP;
        let w = ln.u * KCP;
        let gate = units * KCP;
        for (var kk = ln.s; kk < KC; kk += p.k_split) {
            let h = rows_tile[a + kk];
            acc.x = fma(h, w_tile[w + kk], acc.x);
            if GATES > 1u {
                acc.y = fma(h, w_tile[w + gate + kk], acc.y);
                acc.z = fma(h, w_tile[w + 2u * gate + kk], acc.z);
            }
            if GATES > 3u {
                acc.w = fma(h, w_tile[w + 3u * gate + kk], acc.w);
            }
        }
        workgroupBarrier();
    }
    return add_parts(l, acc);
}

// Backward: the gradient reaching h(b, j) of this step through W_hh from step next_t,
// sum_g dgr[next_t, b, g] W_hh[g, j] over the G*H gate rows (zero for the first step processed).
fn recurrent_grad(wg: vec3<u32>, l: u32, ln: Lane) -> f32 {
    let H = params.hidden;
    let G = GATES * H;
    let units = params.tile_units;
    let rows = params.tile_rows;
    let j0 = wg.x * units;
    let b0 = wg.y * rows;
    let stride = units + 1u;
    var acc = 0.0;
    if params.mode == MODE_FIRST {
        return acc;
    }
    for (var g0 = 0u; g0 < G; g0 += KC) {
        for (var e = l; e < rows * KC; e += STEP_WG) {
            let r = e / KC;
            let kk = e % KC;
            var v = 0.0;
            if b0 + r < p.batch && g0 + kk < G {
                v = dgr[(p.next_t * p.batch + b0 + r) * G + g0 + kk];
            }
            rows_tile[r * KCP + kk] = v;
        }
        for (var e = l; e < KC * units; e += STEP_WG) {
            let kk = e / units;
            let u = e % units;
            var v = 0.0;
            if g0 + kk < G && j0 + u < H {
                v = w_hh[(g0 + kk) * H + j0 + u];
            }
            w_tile[kk * stride + u] = v;
        }
        workgroupBarrier();
        let a = min(ln.r, rows - 1u) * KCP;
        for (var kk = ln.s; kk < KC; kk += p.k_split) {
            acc = fma(rows_tile[a + kk], w_tile[kk * stride + ln.u], acc);
        }
        workgroupBarrier();
    }
    return add_parts(l, vec4<f32>(acc, 0.0, 0.0, 0.0)).x;
}

fn valid(b: u32) -> bool {
    return p.t < lengths[b / 4u][b % 4u];
}

fn slot_row(slot: u32, b: u32) -> u32 {
    return p.state_base + (slot * p.batch + b) * p.hidden;
}

fn out_index(b: u32, j: u32) -> u32 {
    return (p.t * p.batch + b) * p.out_stride + p.out_col + j;
}
