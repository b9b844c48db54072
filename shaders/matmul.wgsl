// matmul.wgsl: C = op(A) · op(B), written or accumulated into C.
//
// op(A) is M×K, op(B) is K×N, C is M×N; all row-major. TRANS_A means A is stored K×M, TRANS_B
// means B is stored N×K (so C = X·Wᵀ reads a PyTorch weight W [out, in] as it is). The
// transposes are override constants: each combination is its own pipeline, with no branch left in
// the inner loop.
//
// Variants (src/gpu/context.rs::MatmulVariant picks one per adapter):
//   matmul_register, matmul_register_vec4: no workgroup memory, no barriers. Lavapipe runs a
//       workgroup's threads as the SIMD lanes of one CPU core and pays heavily for every barrier;
//       the vec4 one reaches 23 GFLOP/s there at 512^3 where a shared-memory tile reaches 2.
//   matmul_shared: 64x64 tiles of C, 64x16 tiles of A and B staged through workgroup memory, two
//       barriers per tile, each of 16x16 threads keeping a strided 4x4 set of C in registers so
//       that neighbouring threads touch neighbouring addresses: the classic tiling real GPUs want.

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    accumulate: u32, // 1: C += op(A)·op(B); 0: C = op(A)·op(B)
    // matmul_register_vec4 sums k_begin .. k_end alone (a multiple of 4, and K): a long product
    // is several dispatches (src/gpu/kernels.rs::MATMUL_K_SLICE). The other entries sum all of K.
    k_begin: u32,
    k_end: u32,
    _pad0: u32,
    _pad1: u32,
}
// must match src/gpu/kernels.rs::MatmulParams

override TRANS_A: bool = false;
override TRANS_B: bool = false;
// TRANS_C: the kernel computes the transpose of the caller's C (src/gpu/kernels.rs::MatmulPlan)
// and stores it transposed: its (r, col) is the caller's (col, r).
override TRANS_C: bool = false;

@group(0) @binding(0) var<storage, read> params: MatmulParams;
var<private> p: MatmulParams; // params, copied once per thread (common.wgsl)
@group(0) @binding(1) var<storage, read_write> c: array<f32>; // (M, N)
// A and B as vec4s: matmul_register and matmul_shared read them one element at a time through
// a_at and b_at (bindings are whole vec4s, src/gpu/tensor.rs::GpuTensor::binding, so every
// element is in reach).
@group(0) @binding(2) var<storage, read> a4: array<vec4<f32>>; // (M, K), or (K, M) if TRANS_A
@group(0) @binding(3) var<storage, read> b4: array<vec4<f32>>; // (K, N), or (N, K) if TRANS_B
// matmul_register_vec4 reads A and B through their texture copies instead (src/gpu/program.rs::
// Program::dispatch_textured; texel i holds the vec4 a4[i], b4[i]).
@group(0) @binding(4) var b_texels: texture_storage_2d<rgba32float, read>;
@group(0) @binding(5) var a_texels: texture_storage_2d<rgba32float, read>;

fn a_at(r: u32, kk: u32) -> f32 {
    var i = r * p.k + kk;
    if TRANS_A {
        i = kk * p.m + r;
    }
    return a4[i / 4u][i % 4u];
}

fn b_at(kk: u32, col: u32) -> f32 {
    var i = kk * p.n + col;
    if TRANS_B {
        i = col * p.k + kk;
    }
    return b4[i / 4u][i % 4u];
}

// Where element (r, col) of the computed product goes in c.
fn c_index(r: u32, col: u32) -> u32 {
    if TRANS_C {
        return col * p.m + r;
    }
    return r * p.n + col;
}

fn store_strided(acc: array<vec4<f32>, 4>, row0: u32, col0: u32) {
    var acc_v = acc;
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + 16u * i;
        if r >= p.m {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + 16u * j;
            if col < p.n {
                let idx = c_index(r, col);
                var v = acc_v[i][j];
                if p.accumulate != 0u {
                    v += c[idx];
                }
                c[idx] = v;
            }
        }
    }
}

// ---- matmul_register and matmul_register_vec4 ------------------------------------------------
// A workgroup of 16 threads owns 8 rows of C (16 in the vec4 entry); each thread owns a
// contiguous 8x16 (16x16) block. The rows of A depend on the workgroup alone (the vec4 entry
// reads them through a_block, shared by subgroup where it can: matmul_rows_*.wgsl); only B varies
// across lanes. The k loop advances 4 at a time: every step reads an 8x4 (16x4) block of A and a
// 4x16 block of B and does 512 (1024) multiply-adds.
// The vec4 entry point reads B 4 floats per load; it needs B's contiguous dimension to be a
// multiple of 4 (see src/gpu/kernels.rs::register_vec4_fits, and A_VEC4 below for A); the scalar
// one takes any shape.

const ROWS: u32 = 8u;   // rows of C per workgroup (and per thread)
const COLS: u32 = 16u;  // columns of C per thread
const THREADS: u32 = 16u;

// Four k-steps of four columns of B: r_q = B[k + q, c .. c + 4].
struct Quad {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
}

// One row of a thread's block of C: 16 columns.
struct Row16 {
    c0: vec4<f32>,
    c1: vec4<f32>,
    c2: vec4<f32>,
    c3: vec4<f32>,
}

fn transpose_quad(q: Quad) -> Quad {
    return Quad(
        vec4<f32>(q.r0.x, q.r1.x, q.r2.x, q.r3.x),
        vec4<f32>(q.r0.y, q.r1.y, q.r2.y, q.r3.y),
        vec4<f32>(q.r0.z, q.r1.z, q.r2.z, q.r3.z),
        vec4<f32>(q.r0.w, q.r1.w, q.r2.w, q.r3.w));
}

// c + a[0] * b.r0 + a[1] * b.r1 + a[2] * b.r2 + a[3] * b.r3, where a holds one row of A over 4 k.
fn fma_quad(c: vec4<f32>, a: vec4<f32>, b: Quad) -> vec4<f32> {
    return fma(vec4<f32>(a.w), b.r3, fma(vec4<f32>(a.z), b.r2, fma(vec4<f32>(a.y), b.r1, fma(vec4<f32>(a.x), b.r0, c))));
}

fn fma_row(acc: Row16, a: vec4<f32>, b0: Quad, b1: Quad, b2: Quad, b3: Quad) -> Row16 {
    return Row16(fma_quad(acc.c0, a, b0), fma_quad(acc.c1, a, b1), fma_quad(acc.c2, a, b2), fma_quad(acc.c3, a, b3));
}

fn store4(r: u32, col: u32, v: vec4<f32>) {
    for (var q = 0u; q < 4u; q++) {
        if col + q < p.n {
            let idx = c_index(r, col + q);
            var x = v[q];
            if p.accumulate != 0u {
                x += c[idx];
            }
            c[idx] = x;
        }
    }
}

// Four consecutive rows of a thread's block of C.
struct Rows4 {
    r0: Row16,
    r1: Row16,
    r2: Row16,
    r3: Row16,
}

// The 4 rows of A in q (over 4 k) times the thread's 4x16 block of B, added to acc.
fn fma_rows4(acc: Rows4, q: Quad, b0: Quad, b1: Quad, b2: Quad, b3: Quad) -> Rows4 {
    return Rows4(fma_row(acc.r0, q.r0, b0, b1, b2, b3), fma_row(acc.r1, q.r1, b0, b1, b2, b3),
                 fma_row(acc.r2, q.r2, b0, b1, b2, b3), fma_row(acc.r3, q.r3, b0, b1, b2, b3));
}

// Rows i .. i + 4 of the block from row0.
fn store_rows4(i: u32, row0: u32, col0: u32, acc: Rows4) {
    store_row(i, row0, col0, acc.r0);
    store_row(i + 1u, row0, col0, acc.r1);
    store_row(i + 2u, row0, col0, acc.r2);
    store_row(i + 3u, row0, col0, acc.r3);
}

fn store_row(i: u32, row0: u32, col0: u32, acc: Row16) {
    let r = row0 + i;
    if r < p.m {
        store4(r, col0, acc.c0);
        store4(r, col0 + 4u, acc.c1);
        store4(r, col0 + 8u, acc.c2);
        store4(r, col0 + 12u, acc.c3);
    }
}

// Scalar loads. Past the edges: rows and columns are clamped (never stored), k reads zero.
fn a_k4(r: u32, k: u32) -> vec4<f32> {
    let rr = min(r, p.m - 1u);
    var v = vec4<f32>();
    for (var q = 0u; q < 4u; q++) {
        if k + q < p.k {
            v[q] = a_at(rr, k + q);
        }
    }
    return v;
}

fn b_quad(k: u32, col: u32) -> Quad {
    var rows: array<vec4<f32>, 4>;
    for (var q = 0u; q < 4u; q++) {
        var v = vec4<f32>();
        if k + q < p.k {
            for (var j = 0u; j < 4u; j++) {
                v[j] = b_at(k + q, min(col + j, p.n - 1u));
            }
        }
        rows[q] = v;
    }
    return Quad(rows[0], rows[1], rows[2], rows[3]);
}

@compute @workgroup_size(16, 1)
fn matmul_register(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    p = params;
    let row0 = wg.y * ROWS;
    let col0 = (wg.x * THREADS + l.x) * COLS;
    var acc: array<Row16, 8>;
    for (var k = 0u; k < p.k; k += 4u) {
        let b0 = b_quad(k, col0);
        let b1 = b_quad(k, col0 + 4u);
        let b2 = b_quad(k, col0 + 8u);
        let b3 = b_quad(k, col0 + 12u);
        acc[0] = fma_row(acc[0], a_k4(row0, k), b0, b1, b2, b3);
        acc[1] = fma_row(acc[1], a_k4(row0 + 1u, k), b0, b1, b2, b3);
        acc[2] = fma_row(acc[2], a_k4(row0 + 2u, k), b0, b1, b2, b3);
        acc[3] = fma_row(acc[3], a_k4(row0 + 3u, k), b0, b1, b2, b3);
        acc[4] = fma_row(acc[4], a_k4(row0 + 4u, k), b0, b1, b2, b3);
        acc[5] = fma_row(acc[5], a_k4(row0 + 5u, k), b0, b1, b2, b3);
        acc[6] = fma_row(acc[6], a_k4(row0 + 6u, k), b0, b1, b2, b3);
        acc[7] = fma_row(acc[7], a_k4(row0 + 7u, k), b0, b1, b2, b3);
    }
    if col0 >= p.n {
        return;
    }
    for (var i = 0u; i < ROWS; i++) {
        store_row(i, row0, col0, acc[i]);
    }
}

// matmul_register_vec4 reads B, the operand that varies across SIMD lanes, 4 floats at a time
// from its texture copy; that needs B's contiguous dimension to be a multiple of 4. A is the same
// for every lane of a workgroup (a_block reads it, from its texture copy too); A_VEC4 reads it as
// vec4s when its contiguous dimension allows, and as scalars otherwise. On lavapipe a storage
// load loops over the SIMD lanes and inserts each component through memory, a texel load is one
// gather: B through a texture made the LSTM H=256 step's products 1.3-2x faster
// (src/gpu/kernels.rs::MatmulPlan falls back to matmul_register where a copy would not fit a
// texture). K_TAIL (K not a multiple of 4): the loads that cover 4 values of k read zero past K.
override A_VEC4: bool = true;
override K_TAIL: bool = false;

// v where k is inside K, zero past it.
fn k_guard(v: vec4<f32>, k: u32) -> vec4<f32> {
    if K_TAIL {
        return select(vec4<f32>(), v, k < p.k);
    }
    return v;
}

// The vec4 a4[i], from A's texture copy.
fn a_texel(i: u32) -> vec4<f32> {
    return texel(a_texels, i);
}

// a_k4 from A's texture copy.
fn a_texel_k4(r: u32, k: u32) -> vec4<f32> {
    let rr = min(r, p.m - 1u);
    var v = vec4<f32>();
    for (var q = 0u; q < 4u; q++) {
        if k + q < p.k {
            var i = rr * p.k + k + q;
            if TRANS_A {
                i = (k + q) * p.m + rr;
            }
            v[q] = a_texel(i / 4u)[i % 4u];
        }
    }
    return v;
}

// Rows r .. r + 4 of A over k .. k + 4, one vec4 per row.
fn a_quad4(r: u32, k: u32) -> Quad {
    if !A_VEC4 {
        return Quad(a_texel_k4(r, k), a_texel_k4(r + 1u, k), a_texel_k4(r + 2u, k), a_texel_k4(r + 3u, k));
    }
    if TRANS_A {
        // A stored (K, M): each load is 4 rows at one k. M is a multiple of 4 and at least 4.
        let rr = min(r, p.m - 4u) / 4u;
        let m4 = p.m / 4u;
        return transpose_quad(Quad(
            k_guard(a_texel(k * m4 + rr), k), k_guard(a_texel((k + 1u) * m4 + rr), k + 1u),
            k_guard(a_texel((k + 2u) * m4 + rr), k + 2u), k_guard(a_texel((k + 3u) * m4 + rr), k + 3u)));
    }
    let k4 = p.k / 4u;
    let kk = k / 4u;
    return Quad(
        a_texel(min(r, p.m - 1u) * k4 + kk), a_texel(min(r + 1u, p.m - 1u) * k4 + kk),
        a_texel(min(r + 2u, p.m - 1u) * k4 + kk), a_texel(min(r + 3u, p.m - 1u) * k4 + kk));
}

// The vec4 b4[i], from B's texture copy.
fn b_texel(i: u32) -> vec4<f32> {
    return texel(b_texels, i);
}

// B over k .. k + 4 at columns col .. col + 4.
fn b_quad4(k: u32, col: u32) -> Quad {
    if TRANS_B {
        // B stored (N, K): each load is one column over 4 k. K is a multiple of 4.
        let k4 = p.k / 4u;
        let kk = k / 4u;
        return transpose_quad(Quad(
            b_texel(min(col, p.n - 1u) * k4 + kk), b_texel(min(col + 1u, p.n - 1u) * k4 + kk),
            b_texel(min(col + 2u, p.n - 1u) * k4 + kk), b_texel(min(col + 3u, p.n - 1u) * k4 + kk)));
    }
    let n4 = p.n / 4u;
    let cb = min(col / 4u, n4 - 1u);
    return Quad(
        k_guard(b_texel(k * n4 + cb), k), k_guard(b_texel((k + 1u) * n4 + cb), k + 1u),
        k_guard(b_texel((k + 2u) * n4 + cb), k + 2u), k_guard(b_texel((k + 3u) * n4 + cb), k + 3u));
}

@compute @workgroup_size(16, 1)
fn matmul_register_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    p = params;
    let row0 = wg.y * 16u;
    let col0 = (wg.x * THREADS + l.x) * COLS;
    // Named accumulators, 4 rows each: a dynamically indexed array would live in memory on a
    // CPU-backed adapter.
    var acc0: Rows4;
    var acc1: Rows4;
    var acc2: Rows4;
    var acc3: Rows4;
    // Every thread stays to the end of the k loop (matmul_rows_subgroup.wgsl shares A's loads).
    let lane = lane_index();
    for (var k = p.k_begin; k < p.k_end; k += 4u) {
        let b0 = b_quad4(k, col0);
        let b1 = b_quad4(k, col0 + 4u);
        let b2 = b_quad4(k, col0 + 8u);
        let b3 = b_quad4(k, col0 + 12u);
        let a = a_block(row0, lane, k);
        acc0 = fma_rows4(acc0, a[0], b0, b1, b2, b3);
        acc1 = fma_rows4(acc1, a[1], b0, b1, b2, b3);
        acc2 = fma_rows4(acc2, a[2], b0, b1, b2, b3);
        acc3 = fma_rows4(acc3, a[3], b0, b1, b2, b3);
    }
    if col0 >= p.n {
        return;
    }
    store_rows4(0u, row0, col0, acc0);
    store_rows4(4u, row0, col0, acc1);
    store_rows4(8u, row0, col0, acc2);
    store_rows4(12u, row0, col0, acc3);
}

// ---- matmul_shared ----------------------------------------------------------------------------

const BK: u32 = 16u;
var<workgroup> a_tile: array<f32, 1024>; // [BK][64], k-major
var<workgroup> b_tile: array<f32, 1024>; // [BK][64], k-major

@compute @workgroup_size(16, 16)
fn matmul_shared(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    p = params;
    let tid = l.y * 16u + l.x;
    let block_row = wg.y * 64u;
    let block_col = wg.x * 64u;
    var acc: array<vec4<f32>, 4>;
    // The bound read from the uniform itself, not its private copy: the barriers in the loop
    // need control flow the WGSL uniformity analysis (Tint) can prove uniform.
    for (var k0 = 0u; k0 < params.k; k0 += BK) {
        // Each thread stages 4 elements of each tile, walking the stored layout's contiguous
        // dimension across neighbouring threads.
        for (var q = 0u; q < 4u; q++) {
            let e = tid + q * 256u;
            var ar: u32;
            var ak: u32;
            if TRANS_A {
                ar = e % 64u;
                ak = e / 64u;
            } else {
                ar = e / BK;
                ak = e % BK;
            }
            let grow = block_row + ar;
            let gk = k0 + ak;
            var av = 0.0;
            if grow < p.m && gk < p.k {
                av = a_at(grow, gk);
            }
            a_tile[ak * 64u + ar] = av;

            var bc: u32;
            var bk: u32;
            if TRANS_B {
                bc = e / BK;
                bk = e % BK;
            } else {
                bc = e % 64u;
                bk = e / 64u;
            }
            let gcol = block_col + bc;
            let gkb = k0 + bk;
            var bvv = 0.0;
            if gcol < p.n && gkb < p.k {
                bvv = b_at(gkb, gcol);
            }
            b_tile[bk * 64u + bc] = bvv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let base = kk * 64u;
            let bv = vec4<f32>(
                b_tile[base + l.x], b_tile[base + l.x + 16u],
                b_tile[base + l.x + 32u], b_tile[base + l.x + 48u]);
            acc[0] = fma(vec4<f32>(a_tile[base + l.y]), bv, acc[0]);
            acc[1] = fma(vec4<f32>(a_tile[base + l.y + 16u]), bv, acc[1]);
            acc[2] = fma(vec4<f32>(a_tile[base + l.y + 32u]), bv, acc[2]);
            acc[3] = fma(vec4<f32>(a_tile[base + l.y + 48u]), bv, acc[3]);
        }
        workgroupBarrier();
    }
    store_strided(acc, block_row + l.y, block_col + l.x);
}
