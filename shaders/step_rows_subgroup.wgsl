// step_rows_subgroup.wgsl: how the step kernels read a block of 8 batch rows of h (forward) or of
// the gate gradients (backward) that every thread of a workgroup shares (a thread has one or two
// such blocks, step_common.wgsl::ROWS): lane i of the subgroup loads row i and the others take it
// with subgroupBroadcast. On lavapipe every storage load is a loop over the SIMD lanes, even when
// all lanes read one address, while a broadcast is a register shuffle: one load instead of eight.
// Needs subgroups of at least 8 lanes, every lane taking part (the kernels keep all threads to the
// end of the sums), and all lanes of a subgroup sharing the batch rows (a workgroup is one row
// group). src/gpu/context.rs::SharedRows picks this variant.

// The row this lane loads for the subgroup: lane i (counted among the active lanes, all of them
// here) takes row i; lanes past 8 repeat the last.
fn own_row(rows: array<u32, 8>) -> u32 {
    return rows[min(subgroupExclusiveAdd(1u), 7u)];
}

fn broadcast8(v: vec4<f32>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u),
                               subgroupBroadcast(v, 3u), subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u),
                               subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}

// h[k .. k + 4] of each of the 8 state rows starting at rows[i].
fn state_rows(rows: array<u32, 8>, own: u32, k: u32) -> array<vec4<f32>, 8> {
    return broadcast8(state4(own, k));
}

// dgr[rows[i] + g .. + m] of each of the 8 rows.
fn dgr_rows(rows: array<u32, 8>, own: u32, g: u32, m: u32) -> array<vec4<f32>, 8> {
    return broadcast8(ld_dgr(own + g, m));
}
