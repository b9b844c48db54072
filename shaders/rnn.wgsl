// rnn.wgsl: the fused Elman RNN step, forward and backward (PyTorch's nn.RNN):
//   h' = act(x + b_ih + h W_hh + b_hh),  act = tanh, or relu when RELU
// Backward: dpre = dh * act'(h'), written from h' (1 - h'^2 for tanh, h' > 0 for relu).
// See step_common.wgsl for the layout and the thread mapping.

override RELU: bool = false;

@group(0) @binding(4) var<storage, read_write> y: array<f32>;      // (T, B, D*H)
@group(0) @binding(5) var<storage, read> xw: array<f32>;           // (T, B, H)
@group(0) @binding(7) var<storage, read> bias: array<f32>;         // b_ih (H), then b_hh at bias_hh
@group(0) @binding(9) var<storage, read> dy: array<f32>;           // (T, B, D*H)

fn unit_rows(j: u32) -> vec4<u32> {
    let last = p.hidden - 1u;
    return vec4<u32>(min(j, last), min(j + 1u, last), min(j + 2u, last), min(j + 3u, last));
}

// Forward: a thread owns 16 units of 8 batch rows.
@compute @workgroup_size(16, 1)
fn rnn_step_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let H = p.hidden;
    let j0 = gid.x * 16u;
    if j0 >= H {
        return;
    }
    let b0 = gid.y * ROWS;
    let acc = recurrent_sums(unit_rows(j0), unit_rows(j0 + 4u), unit_rows(j0 + 8u), unit_rows(j0 + 12u), b0);
    for (var r = 0u; r < ROWS; r++) {
        let b = b0 + r;
        if b >= p.batch {
            break;
        }
        for (var u = 0u; u < 16u; u++) {
            let j = j0 + u;
            if j >= H {
                break;
            }
            let pre = xw[(p.t * p.batch + b) * H + j] + bias[j] + acc[r][u / 4u][u % 4u] + bias[p.bias_hh + j];
            var h = state_at(slot_row(p.in_slot, b) + j);
            var out = 0.0;
            if valid(b) {
                if RELU {
                    h = max(pre, 0.0);
                } else {
                    h = tanh_stable(pre);
                }
                out = h;
            }
            set_state(slot_row(p.out_slot, b) + j, h);
            y[out_index(b, j)] = out;
        }
    }
}

// Backward: a thread owns 16 units of 8 batch rows.
@compute @workgroup_size(16, 1)
fn rnn_step_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let H = p.hidden;
    let j0 = gid.x * 16u;
    if j0 >= H {
        return;
    }
    let b0 = gid.y * ROWS;
    let rec = recurrent_grad(j0, b0, H);
    for (var r = 0u; r < ROWS; r++) {
        let b = b0 + r;
        if b >= p.batch {
            break;
        }
        for (var u = 0u; u < 16u; u++) {
            let j = j0 + u;
            if j >= H {
                break;
            }
            let rv = rec[r][u / 4u][u % 4u];
            let ci = b * H + j;
            if p.mode == MODE_INITIAL {
                carry[ci] += rv;
                continue;
            }
            let row = (p.t * p.batch + b) * H + j;
            if !valid(b) {
                carry[ci] += rv;
                set_dgr(row, 0.0);
                continue;
            }
            let dh = rv + carry[ci] + dy[out_index(b, j)];
            let h = state_at(slot_row(p.out_slot, b) + j);
            var d = 0.0;
            if RELU {
                d = select(0.0, dh, h > 0.0);
            } else {
                d = dh * (1.0 - h * h);
            }
            set_dgr(row, d);
            carry[ci] = 0.0;
        }
    }
}
