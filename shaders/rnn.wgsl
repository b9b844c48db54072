// rnn.wgsl: the fused Elman RNN step, forward and backward (PyTorch's nn.RNN):
//   h' = act(x + b_ih + h W_hh + b_hh),  act = tanh, or relu when RELU
// Backward: dpre = dh * act'(h'), written from h' (1 - h'^2 for tanh, h' > 0 for relu).
// See step_common.wgsl for the layout and the thread mapping.

override RELU: bool = false;

// recurrent_sums' row groups: 4 groups of 4 consecutive units.
const SUM_GROUPS: u32 = 4u;

// Forward: a thread owns 16 units of 8 batch rows, taken 4 at a time as vec4s.
@compute @workgroup_size(16, 1)
fn rnn_step_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let H = p.hidden;
    let j0 = gid.x * 16u;
    let b0 = gid.y * ROWS;
    // Every thread takes part in the sums (step_rows_subgroup.wgsl shares loads across them);
    // those past H drop theirs.
    let acc = recurrent_sums(gate_group(0u, j0), gate_group(0u, j0 + 4u), gate_group(0u, j0 + 8u), gate_group(0u, j0 + 12u), b0);
    if j0 >= H {
        return;
    }
    for (var u = 0u; u < 4u; u++) {
        let j = j0 + 4u * u;
        let n = units_from(j);
        if n == 0u {
            break;
        }
        let bsum = ld_bias(j, n) + ld_bias(p.bias_hh + j, n);
        for (var r = 0u; r < ROWS; r++) {
            let b = b0 + r;
            if b >= p.batch {
                break;
            }
            let pre = ld_xw((p.t * p.batch + b) * H + j, n) + acc[r][u] + bsum;
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
    }
}

// Backward: a thread owns 16 units of 8 batch rows, taken 4 at a time as vec4s.
@compute @workgroup_size(16, 1)
fn rnn_step_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let H = p.hidden;
    let j0 = gid.x * 16u;
    let b0 = gid.y * ROWS;
    // Every thread takes part in the sums (step_rows_subgroup.wgsl shares loads across them);
    // those past H drop theirs.
    let rec = recurrent_grad(j0, b0, H);
    if j0 >= H {
        return;
    }
    for (var r = 0u; r < ROWS; r++) {
        let b = b0 + r;
        if b >= p.batch {
            break;
        }
        for (var u = 0u; u < 4u; u++) {
            let j = j0 + 4u * u;
            let n = units_from(j);
            if n == 0u {
                break;
            }
            let rv = rec[r][u];
            let ci = b * H + j;
            if p.mode == MODE_INITIAL {
                st_carry(ci, ld_carry(ci, n) + rv, n);
                continue;
            }
            let row = (p.t * p.batch + b) * H + j;
            if !valid(b) {
                st_carry(ci, ld_carry(ci, n) + rv, n);
                st_dgr(row, vec4<f32>(), n);
                continue;
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
    }
}
