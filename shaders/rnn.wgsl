// rnn.wgsl: the fused Elman RNN step, forward and backward (PyTorch's nn.RNN):
//   h' = act(x + b_ih + h W_hh + b_hh),  act = tanh, or relu when RELU
// Backward: dpre = dh * act'(h'), written from h' (1 - h'^2 for tanh, h' > 0 for relu).
// See step_common.wgsl for the layout and the thread mapping.

override RELU: bool = false;

const GATES: u32 = 1u;
// Forward a lane's 4 columns are 4 consecutive units.
const FORWARD_UNITS: u32 = 4u;

fn w_row(unit: u32, q: u32) -> u32 {
    return unit + q;
}

// Units j0 .. j0 + 4 of batch row b; component q of sums is unit j0 + q's recurrent sum.
fn forward_row(b: u32, j0: u32, sums: vec4<f32>) {
    for (var q = 0u; q < 4u; q++) {
        if j0 + q < p.hidden {
            forward_unit(b, j0 + q, sums[q]);
        }
    }
}

fn forward_unit(b: u32, j: u32, sum: f32) {
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

fn padded_unit(row: u32) {
    dgr[row] = 0.0;
}

// Unit j of batch row b, row its gate gradients' index, rv the gradient reaching h(b, j) through
// W_hh.
fn backward_unit(b: u32, j: u32, row: u32, rv: f32) {
    let ci = b * p.hidden + j;
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
