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
    // rec[r][q]: the gradient reaching h(b0 + r, j0 + q) through W_hh from the later step.
    // Named accumulators, as in the forward kernel.
    let n0 = (p.next_t * p.batch + min(b0 + 0u, p.batch - 1u)) * H;
    let n1 = (p.next_t * p.batch + min(b0 + 1u, p.batch - 1u)) * H;
    let n2 = (p.next_t * p.batch + min(b0 + 2u, p.batch - 1u)) * H;
    let n3 = (p.next_t * p.batch + min(b0 + 3u, p.batch - 1u)) * H;
    let n4 = (p.next_t * p.batch + min(b0 + 4u, p.batch - 1u)) * H;
    let n5 = (p.next_t * p.batch + min(b0 + 5u, p.batch - 1u)) * H;
    let n6 = (p.next_t * p.batch + min(b0 + 6u, p.batch - 1u)) * H;
    let n7 = (p.next_t * p.batch + min(b0 + 7u, p.batch - 1u)) * H;
    var rec0 = vec4<f32>();
    var rec1 = vec4<f32>();
    var rec2 = vec4<f32>();
    var rec3 = vec4<f32>();
    var rec4 = vec4<f32>();
    var rec5 = vec4<f32>();
    var rec6 = vec4<f32>();
    var rec7 = vec4<f32>();
    if p.mode != MODE_FIRST {
        for (var g = 0u; g < H; g++) {
            let w = w_cols4(g, j0);
            rec0 += dg[n0 + g] * w;
            rec1 += dg[n1 + g] * w;
            rec2 += dg[n2 + g] * w;
            rec3 += dg[n3 + g] * w;
            rec4 += dg[n4 + g] * w;
            rec5 += dg[n5 + g] * w;
            rec6 += dg[n6 + g] * w;
            rec7 += dg[n7 + g] * w;
        }
    }
    let rec = array<vec4<f32>, 8>(rec0, rec1, rec2, rec3, rec4, rec5, rec6, rec7);
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
