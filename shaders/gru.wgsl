// gru.wgsl: the fused GRU step, forward and backward (PyTorch's equations, gate order r, z, n):
//   r = σ(x_r + b_ir + h W_hr + b_hr),  z = σ(x_z + b_iz + h W_hz + b_hz)
//   n = tanh(x_n + b_in + r * (h W_hn + b_hn)),  h' = (1 - z) * n + z * h
// gates keeps r, z, n and hn = h W_hn + b_hn per step (T, B, 4H). Backward, with dh the gradient
// reaching h':
//   dn = dh (1 - z) (1 - n^2),  dz = dh (h - n) z (1 - z),  dr = dn hn r (1 - r)
//   dgx = (dr, dz, dn) is the gradient of the input pre-activations (for dW_ih, db_ih, dx),
//   dgh = (dr, dz, dn r) that of the recurrent ones (for dW_hh, db_hh, and the step before),
//   and dh z reaches h directly: it is carried.
// See step_common.wgsl for the layout and the thread mapping.

const GATES: u32 = 3u;
// Forward a lane's columns are the 3 gates of one unit (the fourth reads zero).
const FORWARD_UNITS: u32 = 1u;

fn w_row(unit: u32, q: u32) -> u32 {
    return select(GATES * params.hidden, q * params.hidden + unit, q < GATES);
}

@group(0) @binding(11) var<storage, read_write> dgx: array<f32>; // (T, B, 3H); dgh is dgr

// Unit j of batch row b; components 0 to 2 of sums are gates r, z, n's recurrent sums.
fn forward_row(b: u32, j: u32, sums: vec4<f32>) {
    let H = p.hidden;
    let bh = p.bias_hh;
    let xrow = (p.t * p.batch + b) * 3u * H + j;
    let grow = (p.t * p.batch + b) * 4u * H + j;
    let rg = sigmoid(xw[xrow] + sums.x + bias[j] + bias[bh + j]);
    let z = sigmoid(xw[xrow + H] + sums.y + bias[H + j] + bias[bh + H + j]);
    let hn = sums.z + bias[bh + 2u * H + j];
    let nn = tanh_stable(xw[xrow + 2u * H] + bias[2u * H + j] + rg * hn);
    var h = states[slot_row(p.in_slot, b) + j];
    var out = 0.0;
    if valid(b) {
        h = (1.0 - z) * nn + z * h;
        out = h;
    }
    states[slot_row(p.out_slot, b) + j] = h;
    keep_gates(grow, vec4(rg, z, nn, hn));
    y[out_index(b, j)] = out;
}

fn padded_unit(row: u32) {
    for (var g = 0u; g < GATES; g++) {
        dgx[row + g * p.hidden] = 0.0;
        dgr[row + g * p.hidden] = 0.0;
    }
}

// Unit j of batch row b, row its gate gradients' index, rv the gradient reaching h(b, j) through
// W_hh.
fn backward_unit(b: u32, j: u32, row: u32, rv: f32) {
    let H = p.hidden;
    let ci = b * H + j;
    let dh = rv + carry[ci] + dy[out_index(b, j)];
    let grow = (p.t * p.batch + b) * 4u * H + j;
    let rg = gates[grow];
    let z = gates[grow + H];
    let nn = gates[grow + 2u * H];
    let hn = gates[grow + 3u * H];
    let h_prev = states[slot_row(p.in_slot, b) + j];
    let dn = dh * (1.0 - z) * (1.0 - nn * nn);
    let dz = dh * (h_prev - nn) * z * (1.0 - z);
    let dr = dn * hn * rg * (1.0 - rg);
    dgx[row] = dr;
    dgx[row + H] = dz;
    dgx[row + 2u * H] = dn;
    dgr[row] = dr;
    dgr[row + H] = dz;
    dgr[row + 2u * H] = dn * rg;
    carry[ci] = dh * z;
}
