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
// Thread mapping (src/gpu/kernels/step.rs::StepTiling picks it per shape). A step is a small product
// (B rows, G*H outputs forward or H backward, a sum over H or G*H) followed by per-unit
// arithmetic. A thread keeps a 4x4 register tile: 4 batch rows times 4 columns, a column being
// one W_hh row forward (the G gates of one unit for the LSTM and GRU, 4 units for the RNN: each
// cell file's FORWARD_UNITS) and one unit backward (4 consecutive units). B*H is only a few
// thousand, so a workgroup of 64 threads holds `col_groups` x `row_groups` such tiles, and where
// that leaves too few workgroups to fill a large GPU (at least 256 for the standard cases) the sum
// of each output is split `k_split` ways across neighbouring lanes (each adding at least 8 of it),
// the parts added in workgroup memory in a fixed order (deterministic). Lane l is
//   s = l % k_split (its part of the sum), u = (l / k_split) % col_groups, r = l / (k_split * col_groups).
// The sum runs in chunks of KC along its length: the workgroup stages the chunk of its batch
// rows (h forward, the later step's gate gradients backward) and of W_hh into workgroup memory,
// every lane loading neighbouring addresses (coalesced), then each lane reads its 4 rows and 4
// columns at each k of its part (k = s, s + k_split, ...) and does 16 fma: 8 loads from workgroup
// memory for 16 multiply-adds. The staged rows are padded to an odd stride, so that lanes reading
// one column of a tile spread over the banks.
// Every lane stays to the end of the sums (the barriers need uniform control flow); lanes past
// the batch, the units or the tile drop their results.

const MODE_FIRST: u32 = 0u;
const MODE_STEP: u32 = 1u;
const MODE_INITIAL: u32 = 2u;

// Threads per workgroup, the chunk of the sum staged at a time, and the padded row stride of the
// staged tiles; the tile limits below must match src/gpu/kernels/step.rs::StepTiling.
const STEP_WG: u32 = 64u;
const KC: u32 = 32u;
const KCP: u32 = 33u;
// The batch rows' chunk: 4 row_groups (<= 32) rows of KCP.
var<workgroup> rows_tile: array<f32, 1056>;
// W_hh's chunk: forward 4 col_groups (<= 64) rows of KCP, backward KC rows of 4 col_groups + 1
// columns (col_groups <= 16). After the sums it holds the k_split parts (64 lanes x 16).
var<workgroup> w_tile: array<f32, 2112>;

@group(0) @binding(1) var<storage, read_write> states: array<f32>; // see the layout above
@group(0) @binding(2) var<storage, read_write> cells: array<f32>;  // the LSTM's, like states
@group(0) @binding(3) var<storage, read_write> gates: array<f32>;  // (T, B, 4H): LSTM i, f, g, o; GRU r, z, n, hn
// Whether the forward step writes the gates (for a backward step); off in inference, which binds
// a placeholder.
override KEEP_GATES: bool = true;

// Saves a unit's four gate values (`v`, H apart from `row`) for the backward step, in training.
fn keep_gates(row: u32, v: vec4<f32>) {
    if KEEP_GATES {
        for (var q = 0u; q < 4u; q++) {
            gates[row + q * p.hidden] = v[q];
        }
    }
}
@group(0) @binding(4) var<storage, read_write> y: array<f32>;      // (T, B, D*H)
@group(0) @binding(5) var<storage, read> xw: array<f32>;           // (T, B, G*H)
@group(0) @binding(6) var<storage, read> w_hh: array<f32>;         // (G*H, H)
@group(0) @binding(7) var<storage, read> bias: array<f32>;         // b_ih (G*H), b_hh at bias_hh
// The sequence lengths (B) as a uniform, to keep every step kernel within WebGPU's default of 8
// storage buffers a stage; its 4096 vec4s take batches of up to 16384 (src/gpu/kernels/step.rs::
// MAX_STEP_BATCH; src/gpu/tensor.rs allocates every u32 buffer at least that large).
@group(0) @binding(8) var<uniform> lengths: array<vec4<u32>, 4096>;
@group(0) @binding(9) var<storage, read> dy: array<f32>;           // (T, B, D*H)
// The gate gradients that flow through W_hh to the previous step, (T, B, G*H): all of them for
// the RNN and the LSTM, the recurrent ones (dgh) for the GRU.
@group(0) @binding(10) var<storage, read_write> dgr: array<f32>;
@group(0) @binding(12) var<storage, read_write> carry: array<f32>; // (2, B, H)

// The entry points of every cell: the cell file gives FORWARD_UNITS, forward_row, backward_unit
// and padded_unit (zeroes a padded step's gate gradients), and w_row, GATES.
@compute @workgroup_size(64)
fn step_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    p = params;
    let ln = lane_of(wg, l, FORWARD_UNITS);
    let sums = gate_sums(wg, l, ln);
    if owns_tile(ln) {
        forward_tile(ln, sums);
    }
}

@compute @workgroup_size(64)
fn step_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    p = params;
    let ln = lane_of(wg, l, 4u);
    let rec = recurrent_grad(wg, l, ln);
    if owns_tile(ln) {
        backward_tile(ln, rec);
    }
}

// A lane's place in its workgroup's tile (see the top of this file).
struct Lane {
    s: u32,  // its part of the sum
    u: u32,  // its column group within the workgroup
    r: u32,  // its row group within the workgroup
    c0: u32, // its first column: a unit (forward LSTM and GRU) or the first of 4 units
    b0: u32, // its first batch row
}

// `units`: the units a lane's columns cover (FORWARD_UNITS of the cell file forward, 4 backward).
fn lane_of(wg: vec3<u32>, l: u32, units: u32) -> Lane {
    let s = l % p.k_split;
    let u = (l / p.k_split) % p.col_groups;
    let r = l / (p.k_split * p.col_groups);
    return Lane(s, u, r, (wg.x * p.col_groups + u) * units, 4u * (wg.y * p.row_groups + r));
}

// Whether the lane adds up its tile's sums and owns its outputs: the first part, inside the tile.
fn owns_tile(ln: Lane) -> bool {
    return ln.s == 0u && ln.r < p.row_groups;
}

// The lane's 4x4 tile: row i of the lane's 4 batch rows, column q in component q.
struct Tile {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
}

// One k of the lane's part: rows h (the 4 batch rows' values) times columns w.
fn fma_tile(t: Tile, h: vec4<f32>, w: vec4<f32>) -> Tile {
    return Tile(fma(vec4<f32>(h.x), w, t.r0), fma(vec4<f32>(h.y), w, t.r1), fma(vec4<f32>(h.z), w, t.r2),
                fma(vec4<f32>(h.w), w, t.r3));
}

// The lane's 4 staged batch rows at k.
fn rows_at(a: u32, k: u32) -> vec4<f32> {
    return vec4<f32>(rows_tile[a + k], rows_tile[a + KCP + k], rows_tile[a + 2u * KCP + k], rows_tile[a + 3u * KCP + k]);
}

// Adds the k_split parts of the lanes' tiles: the lane with s == 0 gets the total, in order
// (lanes l .. l + k_split hold the parts of one tile). The parts go through w_tile, free once the
// sums are done.
fn add_parts(l: u32, t: Tile) -> Tile {
    // (The sums' last chunk ended with a barrier: nobody reads w_tile any more.)
    let at = 16u * l;
    let v = array<vec4<f32>, 4>(t.r0, t.r1, t.r2, t.r3);
    for (var i = 0u; i < 4u; i++) {
        for (var q = 0u; q < 4u; q++) {
            w_tile[at + 4u * i + q] = v[i][q];
        }
    }
    workgroupBarrier();
    var total = t;
    if l % p.k_split == 0u {
        for (var part = 1u; part < p.k_split; part++) {
            let o = 16u * (l + part);
            total.r0 += vec4<f32>(w_tile[o], w_tile[o + 1u], w_tile[o + 2u], w_tile[o + 3u]);
            total.r1 += vec4<f32>(w_tile[o + 4u], w_tile[o + 5u], w_tile[o + 6u], w_tile[o + 7u]);
            total.r2 += vec4<f32>(w_tile[o + 8u], w_tile[o + 9u], w_tile[o + 10u], w_tile[o + 11u]);
            total.r3 += vec4<f32>(w_tile[o + 12u], w_tile[o + 13u], w_tile[o + 14u], w_tile[o + 15u]);
        }
    }
    return total;
}

// Forward: the recurrent sums of the lane's tile, sum_k h(b, k) W_hh[w_row(c), k] for its 4 batch
// rows (h the state of in_slot) and its 4 columns c (each cell file's w_row; columns past the
// cell's read zero).
fn gate_sums(wg: vec3<u32>, l: u32, ln: Lane) -> Tile {
    // Loop bounds from the read-only parameters, not their private copy: the barriers need
    // control flow the uniformity analysis (Tint) can prove uniform.
    let H = params.hidden;
    let rows = 4u * params.row_groups;
    let cols = 4u * params.col_groups;
    let b0 = 4u * wg.y * params.row_groups;
    let c0 = wg.x * params.col_groups * FORWARD_UNITS;
    var acc = Tile();
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
        for (var e = l; e < cols * KC; e += STEP_WG) {
            let col = e / KC; // group col / 4, column col % 4
            let kk = e % KC;
            let w = w_row(c0 + (col / 4u) * FORWARD_UNITS, col % 4u);
            var v = 0.0;
            if w < GATES * H && k0 + kk < H {
                v = w_hh[w * H + k0 + kk];
            }
            w_tile[col * KCP + kk] = v;
        }
        workgroupBarrier();
        // Lanes past the tile read its last row group (and drop the result).
        let a = 4u * min(ln.r, params.row_groups - 1u) * KCP;
        let w = 4u * ln.u * KCP;
        for (var kk = ln.s; kk < KC; kk += p.k_split) {
            let wv = vec4<f32>(w_tile[w + kk], w_tile[w + KCP + kk], w_tile[w + 2u * KCP + kk], w_tile[w + 3u * KCP + kk]);
            acc = fma_tile(acc, rows_at(a, kk), wv);
        }
        workgroupBarrier();
    }
    return add_parts(l, acc);
}

// Backward: the gradient reaching h(b, j) of this step through W_hh from step next_t,
// sum_g dgr[next_t, b, g] W_hh[g, j] over the G*H gate rows, for the lane's 4 batch rows and 4
// units (zero for the first step processed).
fn recurrent_grad(wg: vec3<u32>, l: u32, ln: Lane) -> Tile {
    let H = params.hidden;
    let G = GATES * H;
    let rows = 4u * params.row_groups;
    let cols = 4u * params.col_groups;
    let b0 = 4u * wg.y * params.row_groups;
    let j0 = wg.x * cols;
    let stride = cols + 1u;
    var acc = Tile();
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
        for (var e = l; e < KC * cols; e += STEP_WG) {
            let kk = e / cols;
            let c = e % cols;
            var v = 0.0;
            if g0 + kk < G && j0 + c < H {
                v = w_hh[(g0 + kk) * H + j0 + c];
            }
            w_tile[kk * stride + c] = v;
        }
        workgroupBarrier();
        let a = 4u * min(ln.r, params.row_groups - 1u) * KCP;
        let w = 4u * ln.u;
        for (var kk = ln.s; kk < KC; kk += p.k_split) {
            let o = kk * stride + w;
            let wv = vec4<f32>(w_tile[o], w_tile[o + 1u], w_tile[o + 2u], w_tile[o + 3u]);
            acc = fma_tile(acc, rows_at(a, kk), wv);
        }
        workgroupBarrier();
    }
    return add_parts(l, acc);
}

// The forward epilogue of the lane's tile: the cell file's forward_row for each of its 4 batch
// rows, sums the recurrent sums of its 4 columns; none past the hidden units.
fn forward_tile(ln: Lane, sums: Tile) {
    if ln.c0 >= p.hidden {
        return;
    }
    if ln.b0 < p.batch {
        forward_row(ln.b0, ln.c0, sums.r0);
    }
    if ln.b0 + 1u < p.batch {
        forward_row(ln.b0 + 1u, ln.c0, sums.r1);
    }
    if ln.b0 + 2u < p.batch {
        forward_row(ln.b0 + 2u, ln.c0, sums.r2);
    }
    if ln.b0 + 3u < p.batch {
        forward_row(ln.b0 + 3u, ln.c0, sums.r3);
    }
}

// The backward epilogue of the lane's tile, for its 4 rows and 4 units, rec the gradient reaching
// them through W_hh: what every cell does with the initial state and a padded step, else the
// cell file's backward_unit.
fn backward_tile(ln: Lane, rec: Tile) {
    backward_row(ln.b0, ln.c0, rec.r0);
    backward_row(ln.b0 + 1u, ln.c0, rec.r1);
    backward_row(ln.b0 + 2u, ln.c0, rec.r2);
    backward_row(ln.b0 + 3u, ln.c0, rec.r3);
}

fn backward_row(b: u32, j0: u32, rec: vec4<f32>) {
    if b >= p.batch {
        return;
    }
    for (var q = 0u; q < 4u; q++) {
        let j = j0 + q;
        if j >= p.hidden {
            continue;
        }
        let row = (p.t * p.batch + b) * GATES * p.hidden + j;
        if p.mode == MODE_INITIAL {
            // After the last step processed: the gradient reaching the initial state.
            carry[b * p.hidden + j] += rec[q];
        } else if !valid(b) {
            // A padded step: the state passed through, so does its gradient; the gates had none.
            carry[b * p.hidden + j] += rec[q];
            padded_unit(row);
        } else {
            backward_unit(b, j, row, rec[q]);
        }
    }
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
