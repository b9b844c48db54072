// matmul_rows_loads.wgsl: how matmul_register_vec4 reads the 16 rows of A that all threads of a
// workgroup share: each thread loads them itself. The variant for adapters without subgroup
// operations (src/gpu/context.rs::SharedRows).

fn lane_index() -> u32 {
    return 0u;
}

// Rows row0 .. row0 + 16 of A over k .. k + 4, 4 rows per Quad.
fn a_block(row0: u32, lane: u32, k: u32) -> array<Quad, 4> {
    return array<Quad, 4>(a_quad4(row0, k), a_quad4(row0 + 4u, k), a_quad4(row0 + 8u, k), a_quad4(row0 + 12u, k));
}
