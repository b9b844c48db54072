// rnn.wgsl: the fused Elman RNN step, forward and backward (PyTorch's nn.RNN):
//   h' = act(x + b_ih + h W_hh + b_hh),  act = tanh, or relu when RELU
// Backward: dpre = dh * act'(h'), written from h' (1 - h'^2 for tanh, h' > 0 for relu).
// See step_common.wgsl for the layout and the thread mapping.

override RELU: bool = false;

const GATES: u32 = 1u;

@compute @workgroup_size(64)
fn rnn_step_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    p = params;
    let ln = lane_of(wg, l);
    let sum = gate_sums(wg, l, ln).x;
    if !owns_output(ln) {
        return;
    }
    let b = ln.b;
    let j = ln.j;
    let pre = xw[(p.t * p.batch + b) * p.hidden + j] + sum + bias[j] + bias[p.bias_hh + j];
    var h = states[slot_row(p.in_slot, b) + j];
    var out = 0.0;
    if valid(b) {
        if RELU {
            h = max(pre, 0.0);
        } else {
            h = tanh_stable(pre);
        }
        out = h;
    }
    states[slot_row(p.out_slot, b) + j] = h;
    y[out_index(b, j)] = out;
}

@compute @workgroup_size(64)
fn rnn_step_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    p = params;
    let ln = lane_of(wg, l);
    let rv = recurrent_grad(wg, l, ln);
    if !owns_output(ln) {
        return;
    }
    let b = ln.b;
    let j = ln.j;
    let ci = b * p.hidden + j;
    if p.mode == MODE_INITIAL {
        carry[ci] += rv;
        return;
    }
    let row = (p.t * p.batch + b) * p.hidden + j;
    if !valid(b) {
        // The state passed through: so does its gradient.
        carry[ci] += rv;
        dgr[row] = 0.0;
        return;
    }
    let dh = rv + carry[ci] + dy[out_index(b, j)];
    let h = states[slot_row(p.out_slot, b) + j];
    var d: f32;
    if RELU {
        d = select(0.0, dh, h > 0.0);
    } else {
        d = dh * (1.0 - h * h);
    }
    dgr[row] = d;
    carry[ci] = 0.0;
}
