// rnn.wgsl: the fused Elman RNN step, forward and backward (PyTorch's nn.RNN):
//   h' = act(x + b_ih + h W_hh + b_hh),  act = tanh, or relu when RELU
// Backward: dpre = dh * act'(h'), written from h' (1 - h'^2 for tanh, h' > 0 for relu).
// See step_common.wgsl for the layout and the thread mapping.

override RELU: bool = false;

@group(0) @binding(4) var<storage, read_write> y: array<f32>;      // (T, B, D*H)
@group(0) @binding(5) var<storage, read> xw: array<f32>;           // (T, B, H)
@group(0) @binding(7) var<storage, read> bias: array<f32>;         // b_ih (H), then b_hh at bias_hh
@group(0) @binding(9) var<storage, read> dy: array<f32>;           // (T, B, D*H)

@compute @workgroup_size(64, 1)
fn rnn_step_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let H = p.hidden;
    let j = gid.x;
    if j >= H {
        return;
    }
    let b0 = gid.y * ROWS;
    // The eight rows' sums in two vec4s (see lstm.wgsl for why they are named).
    let r0 = in_row(b0);
    let r1 = in_row(b0 + 1u);
    let r2 = in_row(b0 + 2u);
    let r3 = in_row(b0 + 3u);
    let r4 = in_row(b0 + 4u);
    let r5 = in_row(b0 + 5u);
    let r6 = in_row(b0 + 6u);
    let r7 = in_row(b0 + 7u);
    var lo = vec4<f32>();
    var hi = vec4<f32>();
    for (var k = 0u; k < H; k += 4u) {
        let w = w_row4(j, k);
        lo += vec4<f32>(dot(w, state4(r0, k)), dot(w, state4(r1, k)), dot(w, state4(r2, k)), dot(w, state4(r3, k)));
        hi += vec4<f32>(dot(w, state4(r4, k)), dot(w, state4(r5, k)), dot(w, state4(r6, k)), dot(w, state4(r7, k)));
    }
    let acc = array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
    for (var r = 0u; r < ROWS; r++) {
        let b = b0 + r;
        if b >= p.batch {
            break;
        }
        let pre = xw[(p.t * p.batch + b) * H + j] + bias[j] + acc[r] + bias[p.bias_hh + j];
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

@compute @workgroup_size(64, 1)
fn rnn_step_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let H = p.hidden;
    let j0 = gid.x * 4u;
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
        for (var q = 0u; q < 4u; q++) {
            let j = j0 + q;
            if j >= H {
                break;
            }
            let ci = b * H + j;
            if p.mode == MODE_INITIAL {
                carry[ci] += rec[r][q];
                continue;
            }
            let row = (p.t * p.batch + b) * H + j;
            if !valid(b) {
                carry[ci] += rec[r][q];
                set_dgr(row, 0.0);
                continue;
            }
            let dh = rec[r][q] + carry[ci] + dy[out_index(b, j)];
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
