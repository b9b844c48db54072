// rnn.wgsl: the fused Elman RNN step, forward and backward (PyTorch's nn.RNN):
//   h' = act(x + b_ih + h W_hh + b_hh),  act = tanh, or relu when RELU
// Backward: dpre = dh * act'(h'), written from h' (1 - h'^2 for tanh, h' > 0 for relu).
// See step_common.wgsl for the layout and the thread mapping.

override RELU: bool = false;

@group(0) @binding(4) var<storage, read_write> y: array<f32>;      // (T, B, D*H)
@group(0) @binding(5) var<storage, read> xw: array<f32>;           // (T, B, H)
@group(0) @binding(7) var<storage, read> bias: array<f32>;         // b_ih (H), then b_hh at bias_hh
@group(0) @binding(9) var<storage, read> dy: array<f32>;           // (T, B, D*H)
@group(0) @binding(10) var<storage, read_write> dg: array<f32>;    // (T, B, H)

@compute @workgroup_size(64, 1)
fn rnn_step_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let H = p.hidden;
    let j = gid.x;
    if j >= H {
        return;
    }
    let b0 = gid.y * ROWS;
    var acc: array<f32, 8>;
    for (var k = 0u; k < H; k += 4u) {
        let w = w_row4(j, k);
        for (var r = 0u; r < ROWS; r++) {
            acc[r] += dot(w, state4(slot_row(p.in_slot, min(b0 + r, p.batch - 1u)), k));
        }
    }
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
    var rec: array<vec4<f32>, 8>;
    if p.mode != MODE_FIRST {
        for (var g = 0u; g < H; g++) {
            let w = w_cols4(g, j0);
            for (var r = 0u; r < ROWS; r++) {
                let b = min(b0 + r, p.batch - 1u);
                rec[r] += dg[(p.next_t * p.batch + b) * H + g] * w;
            }
        }
    }
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
                dg[row] = 0.0;
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
            dg[row] = d;
            carry[ci] = 0.0;
        }
    }
}
