// matmul.wgsl: C = op(A) · op(B) (+ bias), written or accumulated into C.
//
// op(A) is M×K, op(B) is K×N, C is M×N; all row-major. TRANS_A means A is stored K×M, TRANS_B
// means B is stored N×K (so C = X·Wᵀ reads a PyTorch weight W [out, in] as it is). The
// transposes are override constants: each combination is its own pipeline, with no branch left in
// the inner loop.
//
// Design, the pattern of the fast WebGPU matmuls: a workgroup of 256 threads computes a BM×BN
// tile of C; THREADS_X × THREADS_Y threads each keep TILE_M × TILE_N outputs in registers (8×8
// in the 128×128 tile, 4×4 in the 64×64 one, 4×4 in the 32×128 tile for narrow products:
// src/gpu/kernels/matmul.rs::MatmulTile), as 4×4 blocks strided by 4·THREADS so that neighbouring
// threads read neighbouring vec4s of the staged tiles (no bank conflicts, one vec4 load for 4
// values). K runs in slices of BK = 8 staged through workgroup memory, double-buffered: while
// the threads multiply slice t from one buffer they hold slice t + 1, loaded from memory into
// registers beforehand, and store it into the other buffer afterwards, so one barrier per slice
// separates the two. The staged tiles hold A k-major (BK rows of BM) and B k-major (BK rows of
// BN), as vec4s of 4 rows (of A) or 4 columns (of B): each thread loads 4 values that form one
// vec4 of a tile, walking the stored layout's contiguous dimension across neighbouring threads
// (coalesced), and stores it with one vec4 store. Edges read zero and are never stored.
//
// Split-K, for deep products with few outputs (the weight gradients, summed over T·B): workgroup
// z of a grid of PARTS along z sums k in [z·k_chunk, (z + 1)·k_chunk) and writes its product,
// without bias or accumulation, to part z of a scratch buffer (the caller's layout, M·N apart);
// matmul_sum_parts then adds the parts in order (deterministic) into C, with the bias and the
// accumulation. It turns the 64 workgroups of the LSTM H=512 dW_hh into 256.

override TRANS_A: bool = false;
override TRANS_B: bool = false;
// TRANS_C: the kernel computes the transpose of the caller's C (src/gpu/kernels/matmul.rs::MatmulPlan)
// and stores it transposed: its (r, col) is the caller's (col, r).
override TRANS_C: bool = false;
// BIAS: adds bias[col] of the caller's C (its row index under TRANS_C) to every row. Without it
// the binding is still declared: the launcher binds A there (never read).
override BIAS: bool = false;
override TILE_M: u32 = 4u;    // rows of C per thread: 4 or 8
override TILE_N: u32 = 4u;    // columns of C per thread: 4 or 8
override THREADS_X: u32 = 16u; // threads across the tile's columns; 256 / THREADS_X down its rows
override THREADS_Y: u32 = 256u / THREADS_X;
override BM: u32 = THREADS_Y * TILE_M;
override BN: u32 = THREADS_X * TILE_N;
const BK: u32 = 8u;
var<private> k_end: u32; // the end of this workgroup's part of k

@group(0) @binding(1) var<storage, read_write> c: array<f32>; // (M, N), or (PARTS, M, N) parts
@group(0) @binding(2) var<storage, read> a: array<f32>;       // (M, K), or (K, M) if TRANS_A;
                                                              // the parts in matmul_sum_parts
@group(0) @binding(3) var<storage, read> b: array<f32>;       // (K, N), or (N, K) if TRANS_B
@group(0) @binding(4) var<storage, read> bias: array<f32>;    // BIAS: (N) of the caller's C

// Two buffers of BK rows of BM / 4 (A) or BN / 4 (B) vec4s; BM, BN <= 128.
var<workgroup> a_tile: array<vec4<f32>, 512>;
var<workgroup> b_tile: array<vec4<f32>, 512>;

fn a_at(r: u32, kk: u32) -> f32 {
    if r >= p.m || kk >= k_end {
        return 0.0;
    }
    if TRANS_A {
        return a[kk * p.m + r];
    }
    return a[r * p.k + kk];
}

fn b_at(kk: u32, col: u32) -> f32 {
    if col >= p.n || kk >= k_end {
        return 0.0;
    }
    if TRANS_B {
        return b[col * p.k + kk];
    }
    return b[kk * p.n + col];
}

// The vec4 of A's slice from k0 that thread `tid` stages (rows 4q .. 4q + 4 at one k), and where
// in a buffer it goes; q_count is BM / 4 * BK, at most 256: one vec4 a thread at most. The
// contiguous dimension of A's storage runs across neighbouring threads: k without TRANS_A, the
// rows with it.
fn a_slot(tid: u32) -> vec2<u32> {
    // (kk, quad of rows)
    if TRANS_A {
        return vec2<u32>(tid / (BM / 4u), tid % (BM / 4u));
    }
    return vec2<u32>(tid % BK, tid / BK);
}

fn load_a(row0: u32, k0: u32, tid: u32) -> vec4<f32> {
    let s = a_slot(tid);
    let r = row0 + 4u * s.y;
    let kk = k0 + s.x;
    return vec4<f32>(a_at(r, kk), a_at(r + 1u, kk), a_at(r + 2u, kk), a_at(r + 3u, kk));
}

fn store_a(buf: u32, tid: u32, v: vec4<f32>) {
    if tid < BM / 4u * BK {
        let s = a_slot(tid);
        a_tile[(buf * BK + s.x) * (BM / 4u) + s.y] = v;
    }
}

// B's counterpart: columns 4q .. 4q + 4 at one k; across threads, the columns without TRANS_B,
// k with it.
fn b_slot(tid: u32) -> vec2<u32> {
    if TRANS_B {
        return vec2<u32>(tid % BK, tid / BK);
    }
    return vec2<u32>(tid / (BN / 4u), tid % (BN / 4u));
}

fn load_b(col0: u32, k0: u32, tid: u32) -> vec4<f32> {
    let s = b_slot(tid);
    let col = col0 + 4u * s.y;
    let kk = k0 + s.x;
    return vec4<f32>(b_at(kk, col), b_at(kk, col + 1u), b_at(kk, col + 2u), b_at(kk, col + 3u));
}

fn store_b(buf: u32, tid: u32, v: vec4<f32>) {
    if tid < BN / 4u * BK {
        let s = b_slot(tid);
        b_tile[(buf * BK + s.x) * (BN / 4u) + s.y] = v;
    }
}

// Where element (r, col) of the computed product goes in c.
fn c_index(r: u32, col: u32) -> u32 {
    if TRANS_C {
        return col * p.m + r;
    }
    return r * p.n + col;
}

@compute @workgroup_size(256)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    p = params;
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    let tx = tid % THREADS_X;
    let ty = tid / THREADS_X;
    // The slice count from the read-only parameters, not their private copy: the barriers need
    // control flow the uniformity analysis (Tint) can prove uniform.
    let k0 = wg.z * params.k_chunk;
    k_end = min(params.k, k0 + params.k_chunk);
    let slices = (min(params.k, k0 + params.k_chunk) - k0 + BK - 1u) / BK;
    var a_next = load_a(row0, k0, tid);
    var b_next = load_b(col0, k0, tid);
    store_a(0u, tid, a_next);
    store_b(0u, tid, b_next);
    workgroupBarrier();
    // acc[(4 g + q) * TILE_N / 4 + h]: row 4 (g THREADS_Y + ty) + q, columns 4 (h THREADS_X + tx) ..
    var acc: array<vec4<f32>, 16>;
    for (var t = 0u; t < slices; t++) {
        let buf = t % 2u;
        if t + 1u < slices {
            a_next = load_a(row0, k0 + (t + 1u) * BK, tid);
            b_next = load_b(col0, k0 + (t + 1u) * BK, tid);
        }
        for (var kk = 0u; kk < BK; kk++) {
            let a_row = (buf * BK + kk) * (BM / 4u) + ty;
            let b_row = (buf * BK + kk) * (BN / 4u) + tx;
            for (var g = 0u; g < TILE_M / 4u; g++) {
                let av = a_tile[a_row + g * THREADS_Y];
                for (var h = 0u; h < TILE_N / 4u; h++) {
                    let bv = b_tile[b_row + h * THREADS_X];
                    let i = 4u * g * (TILE_N / 4u) + h;
                    let n4 = TILE_N / 4u;
                    acc[i] = fma(vec4<f32>(av.x), bv, acc[i]);
                    acc[i + n4] = fma(vec4<f32>(av.y), bv, acc[i + n4]);
                    acc[i + 2u * n4] = fma(vec4<f32>(av.z), bv, acc[i + 2u * n4]);
                    acc[i + 3u * n4] = fma(vec4<f32>(av.w), bv, acc[i + 3u * n4]);
                }
            }
        }
        if t + 1u < slices {
            store_a(1u - buf, tid, a_next);
            store_b(1u - buf, tid, b_next);
        }
        workgroupBarrier();
    }
    for (var g = 0u; g < TILE_M / 4u; g++) {
        for (var q = 0u; q < 4u; q++) {
            let r = row0 + 4u * (g * THREADS_Y + ty) + q;
            if r >= p.m {
                continue;
            }
            for (var h = 0u; h < TILE_N / 4u; h++) {
                let v = acc[(4u * g + q) * (TILE_N / 4u) + h];
                let col = col0 + 4u * (h * THREADS_X + tx);
                for (var e = 0u; e < 4u; e++) {
                    if col + e < p.n {
                        store(wg.z, r, col + e, v[e]);
                    }
                }
            }
        }
    }
}

fn store(part: u32, r: u32, col: u32, v: f32) {
    let idx = c_index(r, col);
    if p.parts > 1u {
        c[part * p.m * p.n + idx] = v;
        return;
    }
    var x = v;
    if BIAS {
        x += bias[select(col, r, TRANS_C)];
    }
    if p.accumulate != 0u {
        x += c[idx];
    }
    c[idx] = x;
}

// C (+)= the sum of the PARTS parts in a (in order) (+ bias): one thread per element of C.
@compute @workgroup_size(256)
fn matmul_sum_parts(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = begin(gid, nwg);
    let mn = p.m * p.n;
    if i >= mn {
        return;
    }
    var x = 0.0;
    for (var z = 0u; z < p.parts; z++) {
        x += a[z * mn + i];
    }
    if BIAS {
        // The caller's C has select(p.n, p.m, TRANS_C) columns.
        x += bias[i % select(p.n, p.m, TRANS_C)];
    }
    if p.accumulate != 0u {
        x += c[i];
    }
    c[i] = x;
}
