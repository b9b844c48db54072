// lstm.wgsl: the fused LSTM step, forward and backward (PyTorch's equations, gate order i, f, g, o):
//   i = σ(x_i + h W_hi + b_i), f = σ(...), g = tanh(...), o = σ(...)
//   c' = f * c + i * g,  h' = o * tanh(c')
// (x_* is the input projection x W_ih, computed for all steps by one GEMM beforehand.)
// Backward, with dh the gradient reaching h' (from the output, from the next step through W_hh,
// and passed through padded steps) and dc_carry the gradient reaching c' from the next step:
//   dc = dh * o * (1 - tanh(c')^2) + dc_carry
//   do = dh * tanh(c') * o(1-o),  di = dc * g * i(1-i),  df = dc * c * f(1-f),  dg = dc * i * (1-g^2)
//   dc_carry <- dc * f
// See step_common.wgsl for the layout and the thread mapping.

// recurrent_sums' row groups: the 4 gates of 4 units.
const SUM_GROUPS: u32 = 4u;

// Forward: a thread owns 4 units (their 16 gate rows) of ROWS batch rows; the gate arithmetic
// runs on the 4 units as one vec4.
@compute @workgroup_size(16, 1)
fn lstm_step_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    p = params;
    let H = p.hidden;
    let j0 = gid.x * 4u;
    let b0 = gid.y * ROWS;
    // Every thread takes part in the sums (step_rows_subgroup.wgsl shares loads across them);
    // those past H drop theirs.
    let acc = recurrent_sums(gate_group(0u, j0), gate_group(1u, j0), gate_group(2u, j0), gate_group(3u, j0), b0);
    if j0 >= H {
        return;
    }
    let n = units_from(j0);
    let bh = p.bias_hh;
    // Column q: gate q's b_ih + b_hh for the 4 units.
    let bias = mat4x4<f32>(ld_bias(j0, n) + ld_bias(bh + j0, n), ld_bias(H + j0, n) + ld_bias(bh + H + j0, n),
                           ld_bias(2u * H + j0, n) + ld_bias(bh + 2u * H + j0, n),
                           ld_bias(3u * H + j0, n) + ld_bias(bh + 3u * H + j0, n));
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

// Units j0 .. j0 + 4 of batch row b; column q of s is gate q's recurrent sum.
fn forward_row(b: u32, j0: u32, bias: mat4x4<f32>, s: mat4x4<f32>) {
    if b >= p.batch {
        return;
    }
    let H = p.hidden;
    let n = units_from(j0);
    let row = (p.t * p.batch + b) * 4u * H + j0;
    let i = sigmoid4(ld_xw(row, n) + s[0] + bias[0]);
    let f = sigmoid4(ld_xw(row + H, n) + s[1] + bias[1]);
    let g = tanh_stable4(ld_xw(row + 2u * H, n) + s[2] + bias[2]);
    let o = sigmoid4(ld_xw(row + 3u * H, n) + s[3] + bias[3]);
    let src = slot_row(p.in_slot, b) + j0;
    var c = ld_cells(src, n);
    var h = ld_states(src, n);
    var out = vec4<f32>();
    if valid(b) {
        c = f * c + i * g;
        h = o * tanh_stable4(c);
        out = h;
    }
    let dst = slot_row(p.out_slot, b) + j0;
    st_cells(dst, c, n);
    st_states(dst, h, n);
    st_gates(row, i, n);
    st_gates(row + H, f, n);
    st_gates(row + 2u * H, g, n);
    st_gates(row + 3u * H, o, n);
    st_y(out_index(b, j0), out, n);
}

// Backward: a thread owns 16 units of ROWS batch rows, taken 4 at a time as vec4s.
@compute @workgroup_size(16, 1)
fn lstm_step_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    p = params;
    let j0 = gid.x * 16u;
    let b0 = gid.y * ROWS;
    // Every thread takes part in the sums (step_rows_subgroup.wgsl shares loads across them);
    // those past H drop theirs.
    let rec = recurrent_grad(j0, b0, 4u * p.hidden);
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
    let row = (p.t * p.batch + b) * 4u * H + j;
    if !valid(b) {
        // The state passed through: so does its gradient.
        st_carry(ci, ld_carry(ci, n) + rv, n);
        st_dgr(row, vec4<f32>(), n);
        st_dgr(row + H, vec4<f32>(), n);
        st_dgr(row + 2u * H, vec4<f32>(), n);
        st_dgr(row + 3u * H, vec4<f32>(), n);
        return;
    }
    let dh = rv + ld_carry(ci, n) + ld_dy(out_index(b, j), n);
    let i = ld_gates(row, n);
    let f = ld_gates(row + H, n);
    let g = ld_gates(row + 2u * H, n);
    let o = ld_gates(row + 3u * H, n);
    let c = ld_cells(slot_row(p.out_slot, b) + j, n);
    let c_prev = ld_cells(slot_row(p.in_slot, b) + j, n);
    let tc = tanh_stable4(c);
    let dc = dh * o * (1.0 - tc * tc) + ld_carry(p.batch * H + ci, n);
    st_dgr(row, dc * g * i * (1.0 - i), n);
    st_dgr(row + H, dc * c_prev * f * (1.0 - f), n);
    st_dgr(row + 2u * H, dc * i * (1.0 - g * g), n);
    st_dgr(row + 3u * H, dh * tc * o * (1.0 - o), n);
    st_carry(ci, vec4<f32>(), n);
    st_carry(p.batch * H + ci, dc * f, n);
}
