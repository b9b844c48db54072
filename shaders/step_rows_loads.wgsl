// step_rows_loads.wgsl: how the step kernels read a block of 8 batch rows of h (forward) or of the
// gate gradients (backward) that every thread of a workgroup shares: each thread loads all 8 itself.
// The variant for adapters without subgroup operations (src/gpu/context.rs::SharedRows).

fn own_row(rows: array<u32, 8>) -> u32 {
    return rows[0];
}

// h[k .. k + 4] of each of the 8 state rows starting at rows[i].
fn state_rows(rows: array<u32, 8>, own: u32, k: u32) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(state4(rows[0], k), state4(rows[1], k), state4(rows[2], k), state4(rows[3], k),
                               state4(rows[4], k), state4(rows[5], k), state4(rows[6], k), state4(rows[7], k));
}

// dgr[rows[i] + g .. + m] of each of the 8 rows.
fn dgr_rows(rows: array<u32, 8>, own: u32, g: u32, m: u32) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(ld_dgr(rows[0] + g, m), ld_dgr(rows[1] + g, m), ld_dgr(rows[2] + g, m),
                               ld_dgr(rows[3] + g, m), ld_dgr(rows[4] + g, m), ld_dgr(rows[5] + g, m),
                               ld_dgr(rows[6] + g, m), ld_dgr(rows[7] + g, m));
}
