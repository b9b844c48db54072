// matmul.wgsl: C = op(A) · op(B), written or accumulated into C.
//
// op(A) is M×K, op(B) is K×N, C is M×N; all row-major. TRANS_A means A is stored K×M, TRANS_B
// means B is stored N×K (so C = X·Wᵀ reads a PyTorch weight W [out, in] as it is). The
// transposes are override constants: each combination is its own pipeline, with no branch left in
// the inner loop.
//
// Both variants give each workgroup a 64×64 block of C and each of its 16×16 threads a 4×4 set
// of C in registers. The set is strided (rows ly + 16i, columns lx + 16j), so neighbouring threads
// touch neighbouring addresses: coalesced on a GPU, contiguous vectors on a SIMD CPU.
//   matmul_register: reads A and B straight from memory, no barriers. Lavapipe runs a workgroup's
//                    threads as SIMD lanes and pays heavily for every barrier: this one wins there.
//   matmul_shared:   stages 64×16 tiles of A and B through workgroup memory, two barriers per
//                    tile: the classic tiling that real GPUs want.

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    accumulate: u32, // 1: C += op(A)·op(B); 0: C = op(A)·op(B)
}
// must match src/gpu/kernels.rs::MatmulParams

override TRANS_A: bool = false;
override TRANS_B: bool = false;

@group(0) @binding(0) var<uniform> p: MatmulParams;
@group(0) @binding(1) var<storage, read_write> c: array<f32>; // (M, N)
@group(0) @binding(2) var<storage, read> a: array<f32>;       // (M, K), or (K, M) if TRANS_A
@group(0) @binding(3) var<storage, read> b: array<f32>;       // (K, N), or (N, K) if TRANS_B

fn a_at(r: u32, kk: u32) -> f32 {
    if TRANS_A {
        return a[kk * p.m + r];
    }
    return a[r * p.k + kk];
}

fn b_at(kk: u32, col: u32) -> f32 {
    if TRANS_B {
        return b[col * p.k + kk];
    }
    return b[kk * p.n + col];
}

fn store(acc: array<vec4<f32>, 4>, row0: u32, col0: u32) {
    var acc_v = acc;
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + 16u * i;
        if r >= p.m {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + 16u * j;
            if col < p.n {
                let idx = r * p.n + col;
                var v = acc_v[i][j];
                if p.accumulate != 0u {
                    v += c[idx];
                }
                c[idx] = v;
            }
        }
    }
}

@compute @workgroup_size(16, 16)
fn matmul_register(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let row0 = wg.y * 64u + l.y;
    let col0 = wg.x * 64u + l.x;
    // Out-of-range rows and columns read a valid element and are never stored: no branch inside
    // the loop.
    let r = vec4<u32>(
        min(row0, p.m - 1u), min(row0 + 16u, p.m - 1u),
        min(row0 + 32u, p.m - 1u), min(row0 + 48u, p.m - 1u));
    let cc = vec4<u32>(
        min(col0, p.n - 1u), min(col0 + 16u, p.n - 1u),
        min(col0 + 32u, p.n - 1u), min(col0 + 48u, p.n - 1u));
    var acc: array<vec4<f32>, 4>;
    for (var kk = 0u; kk < p.k; kk++) {
        let bv = vec4<f32>(b_at(kk, cc.x), b_at(kk, cc.y), b_at(kk, cc.z), b_at(kk, cc.w));
        acc[0] = fma(vec4<f32>(a_at(r.x, kk)), bv, acc[0]);
        acc[1] = fma(vec4<f32>(a_at(r.y, kk)), bv, acc[1]);
        acc[2] = fma(vec4<f32>(a_at(r.z, kk)), bv, acc[2]);
        acc[3] = fma(vec4<f32>(a_at(r.w, kk)), bv, acc[3]);
    }
    store(acc, row0, col0);
}

const BK: u32 = 16u;
var<workgroup> a_tile: array<f32, 1024>; // [BK][64], k-major
var<workgroup> b_tile: array<f32, 1024>; // [BK][64], k-major

@compute @workgroup_size(16, 16)
fn matmul_shared(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let tid = l.y * 16u + l.x;
    let block_row = wg.y * 64u;
    let block_col = wg.x * 64u;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
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
    store(acc, block_row + l.y, block_col + l.x);
}
