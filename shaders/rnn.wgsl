// rnn.wgsl: the fused Elman RNN step, forward and backward (PyTorch's nn.RNN):
//   h' = act(x + b_ih + h W_hh + b_hh),  act = tanh, or relu when RELU
// Backward: dpre = dh * act'(h'), written from h' (1 - h'^2 for tanh, h' > 0 for relu).
// See step_common.wgsl for the layout and the thread mapping.

override RELU: bool = false;

// recurrent_sums' row groups: 4 groups of 4 consecutive units.
const SUM_GROUPS: u32 = 4u;

// Forward: a thread owns 16 units of ROWS batch rows, taken 4 at a time as vec4s.
@compute @workgroup_size(16, 1)
fn rnn_step_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    p = params;
    let j0 = gid.x * 16u;
    let b0 = gid.y * ROWS;
    // Every thread takes part in the sums (step_rows_subgroup.wgsl shares loads across them);
    // those past H drop theirs.
    let acc = recurrent_sums(gate_group(0u, j0), gate_group(0u, j0 + 4u), gate_group(0u, j0 + 8u), gate_group(0u, j0 + 12u), b0);
    if j0 >= p.hidden {
        return;
    }
    // One call per row, each with a constant index: see step_common.wgsl on why not a loop.
    forward_row(b0, j0, acc[0]);
    forward_row(b0 + 1u, j0, acc[1]);
    forward_row(b0 + 2u, j0, acc[2]);
    forward_row(b0 + 3u, j0, acc[3]);
    forward_row(b0 + 4u, j0, acc[4]);
    forward_row(b0 + 5u, j0, acc[5]);
    forward_row(b0 + 6u, j0, acc[6]);
    forward_row(b0 + 7u, j0, acc[7]);
    if ROWS == 16u {
        forward_row(b0 + 8u, j0, acc[8]);
        forward_row(b0 + 9u, j0, acc[9]);
        forward_row(b0 + 10u, j0, acc[10]);
        forward_row(b0 + 11u, j0, acc[11]);
        forward_row(b0 + 12u, j0, acc[12]);
        forward_row(b0 + 13u, j0, acc[13]);
        forward_row(b0 + 14u, j0, acc[14]);
        forward_row(b0 + 15u, j0, acc[15]);
    }
}

// Units j0 .. j0 + 16 of batch row b; column u of s is the recurrent sum of units j0 + 4u ...
fn forward_row(b: u32, j0: u32, s: mat4x4<f32>) {
    if b >= p.batch {
        return;
    }
    for (var u = 0u; u < unit_groups(j0); u++) {
        forward_units(b, j0 + 4u * u, s[u]);
    }
}

fn forward_units(b: u32, j: u32, sum: vec4<f32>) {
    let n = units_from(j);
    let pre = ld_xw((p.t * p.batch + b) * p.hidden + j, n) + sum + ld_bias(j, n) + ld_bias(p.bias_hh + j, n);
    var h = ld_states(slot_row(p.in_slot, b) + j, n);
    var out = vec4<f32>();
    if valid(b) {
        if RELU {
            h = max(pre, vec4<f32>());
        } else {
            h = tanh_stable4(pre);
        }
        out = h;
    }
    st_states(slot_row(p.out_slot, b) + j, h, n);
    st_y(out_index(b, j), out, n);
}

// Backward: a thread owns 16 units of ROWS batch rows, taken 4 at a time as vec4s.
@compute @workgroup_size(16, 1)
fn rnn_step_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    p = params;
    let j0 = gid.x * 16u;
    let b0 = gid.y * ROWS;
    // Every thread takes part in the sums (step_rows_subgroup.wgsl shares loads across them);
    // those past H drop theirs.
    let rec = recurrent_grad(j0, b0, p.hidden);
    if j0 >= p.hidden {
        return;
    }
    backward_rows(b0, j0, rec);
}

fn backward_units(b: u32, j: u32, rv: vec4<f32>) {
    let n = units_from(j);
    let ci = b * p.hidden + j;
    if p.mode == MODE_INITIAL {
        st_carry(ci, ld_carry(ci, n) + rv, n);
        return;
    }
    let row = (p.t * p.batch + b) * p.hidden + j;
    if !valid(b) {
        // The state passed through: so does its gradient.
        st_carry(ci, ld_carry(ci, n) + rv, n);
        st_dgr(row, vec4<f32>(), n);
        return;
    }
    let dh = rv + ld_carry(ci, n) + ld_dy(out_index(b, j), n);
    let h = ld_states(slot_row(p.out_slot, b) + j, n);
    var d: vec4<f32>;
    if RELU {
        d = select(vec4<f32>(), dh, h > vec4<f32>());
    } else {
        d = dh * (1.0 - h * h);
    }
    st_dgr(row, d, n);
    st_carry(ci, vec4<f32>(), n);
}
