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

const GATES: u32 = 4u;
// Forward a lane's 4 columns are the 4 gates of one unit.
const FORWARD_UNITS: u32 = 1u;

fn w_row(unit: u32, q: u32) -> u32 {
    return q * params.hidden + unit;
}

// Unit j of batch row b; component q of sums is gate q's recurrent sum.
fn forward_row(b: u32, j: u32, sums: vec4<f32>) {
    let H = p.hidden;
    let bh = p.bias_hh;
    let row = (p.t * p.batch + b) * 4u * H + j;
    let i = sigmoid(xw[row] + sums.x + bias[j] + bias[bh + j]);
    let f = sigmoid(xw[row + H] + sums.y + bias[H + j] + bias[bh + H + j]);
    let g = tanh_stable(xw[row + 2u * H] + sums.z + bias[2u * H + j] + bias[bh + 2u * H + j]);
    let o = sigmoid(xw[row + 3u * H] + sums.w + bias[3u * H + j] + bias[bh + 3u * H + j]);
    let src = slot_row(p.in_slot, b) + j;
    var c = cells[src];
    var h = states[src];
    var out = 0.0;
    if valid(b) {
        c = f * c + i * g;
        h = o * tanh_stable(c);
        out = h;
    }
    let dst = slot_row(p.out_slot, b) + j;
    cells[dst] = c;
    states[dst] = h;
    keep_gates(row, vec4(i, f, g, o));
    y[out_index(b, j)] = out;
}

fn padded_unit(row: u32) {
    for (var g = 0u; g < GATES; g++) {
        dgr[row + g * p.hidden] = 0.0;
    }
}

// Unit j of batch row b, row its gate gradients' index, rv the gradient reaching h(b, j) through
// W_hh.
fn backward_unit(b: u32, j: u32, row: u32, rv: f32) {
    let H = p.hidden;
    let ci = b * H + j;
    let dh = rv + carry[ci] + dy[out_index(b, j)];
    let i = gates[row];
    let f = gates[row + H];
    let g = gates[row + 2u * H];
    let o = gates[row + 3u * H];
    let c = cells[slot_row(p.out_slot, b) + j];
    let c_prev = cells[slot_row(p.in_slot, b) + j];
    let tc = tanh_stable(c);
    let dc = dh * o * (1.0 - tc * tc) + carry[p.batch * H + ci];
    dgr[row] = dc * g * i * (1.0 - i);
    dgr[row + H] = dc * c_prev * f * (1.0 - f);
    dgr[row + 2u * H] = dc * i * (1.0 - g * g);
    dgr[row + 3u * H] = dh * tc * o * (1.0 - o);
    carry[ci] = 0.0;
    carry[p.batch * H + ci] = dc * f;
}
