// gru.wgsl: the fused GRU step, forward and backward (PyTorch's equations, gate order r, z, n):
//   r = σ(x_r + b_ir + h W_hr + b_hr),  z = σ(x_z + b_iz + h W_hz + b_hz)
//   n = tanh(x_n + b_in + r * (h W_hn + b_hn)),  h' = (1 - z) * n + z * h
// gates keeps r, z, n and hn = h W_hn + b_hn per step (T, B, 4H). Backward, with dh the gradient
// reaching h':
//   dn = dh (1 - z) (1 - n^2),  dz = dh (h - n) z (1 - z),  dr = dn hn r (1 - r)
//   dgx = (dr, dz, dn) is the gradient of the input pre-activations (for dW_ih, db_ih, dx),
//   dgh = (dr, dz, dn r) that of the recurrent ones (for dW_hh, db_hh, and the step before),
//   and dh z reaches h directly: it is carried.
// See step_common.wgsl for the layout and the thread mapping.

// recurrent_sums' row groups: the 3 gates of 4 units (the fourth is skipped).
const SUM_GROUPS: u32 = 3u;

@group(0) @binding(11) var<storage, read_write> dgx: array<vec4<f32>>;  // (T, B, 3H); dgh is dgr

fn st_dgx(i: u32, v: vec4<f32>, n: u32) {
    if VEC4 {
        dgx[i / 4u] = v;
        return;
    }
    for (var q = 0u; q < n; q++) {
        dgx[(i + q) / 4u][(i + q) % 4u] = v[q];
    }
}

// Forward: a thread owns 4 units (their 12 gate rows) of ROWS batch rows; the gate arithmetic
// runs on the 4 units as one vec4.
@compute @workgroup_size(16, 1)
fn gru_step_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    p = params;
    let H = p.hidden;
    let j0 = gid.x * 4u;
    let b0 = gid.y * ROWS;
    // Every thread takes part in the sums (step_rows_subgroup.wgsl shares loads across them);
    // those past H drop theirs.
    let acc = recurrent_sums(gate_group(0u, j0), gate_group(1u, j0), gate_group(2u, j0), gate_group(2u, j0), b0);
    if j0 >= H {
        return;
    }
    let n = units_from(j0);
    let bh = p.bias_hh;
    // Columns: b_ir + b_hr, b_iz + b_hz, b_in, b_hn for the 4 units (n's biases stay apart).
    let bias = mat4x4<f32>(ld_bias(j0, n) + ld_bias(bh + j0, n), ld_bias(H + j0, n) + ld_bias(bh + H + j0, n),
                           ld_bias(2u * H + j0, n), ld_bias(bh + 2u * H + j0, n));
    // One call per row, each with a constant index: see step_common.wgsl on why not a loop.
    forward_row(b0, j0, bias, acc[0]);
    forward_row(b0 + 1u, j0, bias, acc[1]);
    forward_row(b0 + 2u, j0, bias, acc[2]);
    forward_row(b0 + 3u, j0, bias, acc[3]);
    forward_row(b0 + 4u, j0, bias, acc[4]);
    forward_row(b0 + 5u, j0, bias, acc[5]);
    forward_row(b0 + 6u, j0, bias, acc[6]);
    forward_row(b0 + 7u, j0, bias, acc[7]);
    if ROWS == 16u {
        forward_row(b0 + 8u, j0, bias, acc[8]);
        forward_row(b0 + 9u, j0, bias, acc[9]);
        forward_row(b0 + 10u, j0, bias, acc[10]);
        forward_row(b0 + 11u, j0, bias, acc[11]);
        forward_row(b0 + 12u, j0, bias, acc[12]);
        forward_row(b0 + 13u, j0, bias, acc[13]);
        forward_row(b0 + 14u, j0, bias, acc[14]);
        forward_row(b0 + 15u, j0, bias, acc[15]);
    }
}

// Units j0 .. j0 + 4 of batch row b; column q of s is gate q's recurrent sum (column 3 unused).
fn forward_row(b: u32, j0: u32, bias: mat4x4<f32>, s: mat4x4<f32>) {
    if b >= p.batch {
        return;
    }
    let H = p.hidden;
    let n = units_from(j0);
    let xrow = (p.t * p.batch + b) * 3u * H + j0;
    let grow = (p.t * p.batch + b) * 4u * H + j0;
    let rg = sigmoid4(ld_xw(xrow, n) + s[0] + bias[0]);
    let z = sigmoid4(ld_xw(xrow + H, n) + s[1] + bias[1]);
    let hn = s[2] + bias[3];
    let nn = tanh_stable4(ld_xw(xrow + 2u * H, n) + bias[2] + rg * hn);
    var h = ld_states(slot_row(p.in_slot, b) + j0, n);
    var out = vec4<f32>();
    if valid(b) {
        h = (1.0 - z) * nn + z * h;
        out = h;
    }
    st_states(slot_row(p.out_slot, b) + j0, h, n);
    st_gates(grow, rg, n);
    st_gates(grow + H, z, n);
    st_gates(grow + 2u * H, nn, n);
    st_gates(grow + 3u * H, hn, n);
    st_y(out_index(b, j0), out, n);
}

// Backward: a thread owns 16 units of ROWS batch rows, taken 4 at a time as vec4s.
@compute @workgroup_size(16, 1)
fn gru_step_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    p = params;
    let j0 = gid.x * 16u;
    let b0 = gid.y * ROWS;
    // Every thread takes part in the sums (step_rows_subgroup.wgsl shares loads across them);
    // those past H drop theirs.
    let rec = recurrent_grad(j0, b0, 3u * p.hidden);
    if j0 >= p.hidden {
        return;
    }
    backward_rows(b0, j0, rec);
}

fn backward_units(b: u32, j: u32, rv: vec4<f32>) {
    let n = units_from(j);
    let H = p.hidden;
    let ci = b * H + j;
    if p.mode == MODE_INITIAL {
        st_carry(ci, ld_carry(ci, n) + rv, n);
        return;
    }
    let row = (p.t * p.batch + b) * 3u * H + j;
    if !valid(b) {
        // The state passed through: so does its gradient.
        st_carry(ci, ld_carry(ci, n) + rv, n);
        st_dgx(row, vec4<f32>(), n);
        st_dgx(row + H, vec4<f32>(), n);
        st_dgx(row + 2u * H, vec4<f32>(), n);
        st_dgr(row, vec4<f32>(), n);
        st_dgr(row + H, vec4<f32>(), n);
        st_dgr(row + 2u * H, vec4<f32>(), n);
        return;
    }
    let dh = rv + ld_carry(ci, n) + ld_dy(out_index(b, j), n);
    let grow = (p.t * p.batch + b) * 4u * H + j;
    let rg = ld_gates(grow, n);
    let z = ld_gates(grow + H, n);
    let nn = ld_gates(grow + 2u * H, n);
    let hn = ld_gates(grow + 3u * H, n);
    let h_prev = ld_states(slot_row(p.in_slot, b) + j, n);
    let dn = dh * (1.0 - z) * (1.0 - nn * nn);
    let dz = dh * (h_prev - nn) * z * (1.0 - z);
    let dr = dn * hn * rg * (1.0 - rg);
    st_dgx(row, dr, n);
    st_dgx(row + H, dz, n);
    st_dgx(row + 2u * H, dn, n);
    st_dgr(row, dr, n);
    st_dgr(row + H, dz, n);
    st_dgr(row + 2u * H, dn * rg, n);
    st_carry(ci, dh * z, n);
}
