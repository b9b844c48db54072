// matmul_rows_subgroup.wgsl: how matmul_register_vec4 reads the 16 rows of A that all threads of
// a workgroup share: lane i of the subgroup loads rows i and 8 + i (from A's texture copy), and
// subgroupBroadcast hands them to the others (on lavapipe every load loops over or gathers from
// the SIMD lanes, even when all read one address; a broadcast is a register shuffle). Needs
// subgroups of at least 8 lanes, every lane in the k loop, and one row block per workgroup
// (src/gpu/context.rs::SharedRows).

// This lane's rank among the subgroup's active lanes (all of them here); lanes past 8 repeat
// lane 7's rows.
fn lane_index() -> u32 {
    return min(subgroupExclusiveAdd(1u), 7u);
}

// Row r of A over k .. k + 4: one vec4 where A is stored (M, K) with K a multiple of 4, four
// scalars otherwise (zero past K, rows past M clamped).
fn a_row4(r: u32, k: u32) -> vec4<f32> {
    if A_VEC4 && !TRANS_A {
        return a_texel(min(r, p.m - 1u) * (p.k / 4u) + k / 4u);
    }
    return a_texel_k4(r, k);
}

fn broadcast4(v: vec4<f32>, first: u32) -> Quad {
    if first == 0u {
        return Quad(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u));
    }
    return Quad(subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}

// Rows row0 .. row0 + 16 of A over k .. k + 4, 4 rows per Quad.
fn a_block(row0: u32, lane: u32, k: u32) -> array<Quad, 4> {
    if A_VEC4 && TRANS_A {
        // A stored (K, M): the block is 4 runs of 16 contiguous rows, one per k. Lane i loads
        // rows row0 + 4 (i / 4) .. + 4 and 8 rows further at k + i % 4, two vec4s where
        // a_row4 would take eight scalars (M is a multiple of 4; past M, rows clamp).
        let kk = k + lane % 4u;
        let r = row0 + 4u * (lane / 4u);
        let m4 = p.m / 4u;
        let lo = k_guard(a_texel(kk * m4 + min(r, p.m - 4u) / 4u), kk);
        let hi = k_guard(a_texel(kk * m4 + min(r + 8u, p.m - 4u) / 4u), kk);
        return array<Quad, 4>(transpose_quad(broadcast4(lo, 0u)), transpose_quad(broadcast4(lo, 4u)),
                              transpose_quad(broadcast4(hi, 0u)), transpose_quad(broadcast4(hi, 4u)));
    }
    let lo = a_row4(row0 + lane, k);
    let hi = a_row4(row0 + 8u + lane, k);
    return array<Quad, 4>(broadcast4(lo, 0u), broadcast4(lo, 4u), broadcast4(hi, 0u), broadcast4(hi, 4u));
}
