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

@group(0) @binding(3) var<storage, read_write> gates: array<f32>;  // (T, B, 4H) r, z, n, hn
@group(0) @binding(4) var<storage, read_write> y: array<f32>;      // (T, B, D*H)
@group(0) @binding(5) var<storage, read> xw: array<f32>;           // (T, B, 3H)
@group(0) @binding(7) var<storage, read> bias: array<f32>;         // b_ih (3H), then b_hh at bias_hh
@group(0) @binding(9) var<storage, read> dy: array<f32>;           // (T, B, D*H)
@group(0) @binding(11) var<storage, read_write> dgx: array<f32>;   // (T, B, 3H); dgh is dgr

// Forward: a thread owns 4 units (their 12 gate rows, padded to 16) of 8 batch rows.
@compute @workgroup_size(16, 1)
fn gru_step_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let H = p.hidden;
    let j0 = gid.x * 4u;
    if j0 >= H {
        return;
    }
    let b0 = gid.y * ROWS;
    let acc = recurrent_sums(gate_rows(j0, 3u), gate_rows(j0 + 1u, 3u), gate_rows(j0 + 2u, 3u), gate_rows(j0 + 3u, 3u), b0);
    let bh = p.bias_hh;
    for (var r = 0u; r < ROWS; r++) {
        let b = b0 + r;
        if b >= p.batch {
            break;
        }
        let xrow = (p.t * p.batch + b) * 3u * H;
        let grow = (p.t * p.batch + b) * 4u * H;
        for (var u = 0u; u < 4u; u++) {
            let j = j0 + u;
            if j >= H {
                break;
            }
            let s = acc[r][u];
            let rg = sigmoid(xw[xrow + j] + bias[j] + s.x + bias[bh + j]);
            let z = sigmoid(xw[xrow + H + j] + bias[H + j] + s.y + bias[bh + H + j]);
            let hn = s.z + bias[bh + 2u * H + j];
            let n = tanh_stable(xw[xrow + 2u * H + j] + bias[2u * H + j] + rg * hn);
            let src = slot_row(p.in_slot, b) + j;
            var h = state_at(src);
            var out = 0.0;
            if valid(b) {
                h = (1.0 - z) * n + z * h;
                out = h;
            }
            set_state(slot_row(p.out_slot, b) + j, h);
            gates[grow + j] = rg;
            gates[grow + H + j] = z;
            gates[grow + 2u * H + j] = n;
            gates[grow + 3u * H + j] = hn;
            y[out_index(b, j)] = out;
        }
    }
}

// Backward: a thread owns 16 units of 8 batch rows.
@compute @workgroup_size(16, 1)
fn gru_step_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let H = p.hidden;
    let j0 = gid.x * 16u;
    if j0 >= H {
        return;
    }
    let b0 = gid.y * ROWS;
    let G = 3u * H;
    let rec = recurrent_grad(j0, b0, G);
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
            let row = (p.t * p.batch + b) * G;
            if !valid(b) {
                carry[ci] += rv;
                for (var g = 0u; g < 3u; g++) {
                    dgx[row + g * H + j] = 0.0;
                    set_dgr(row + g * H + j, 0.0);
                }
                continue;
            }
            let dh = rv + carry[ci] + dy[out_index(b, j)];
            let grow = (p.t * p.batch + b) * 4u * H;
            let rg = gates[grow + j];
            let z = gates[grow + H + j];
            let n = gates[grow + 2u * H + j];
            let hn = gates[grow + 3u * H + j];
            let h_prev = state_at(slot_row(p.in_slot, b) + j);
            let dn = dh * (1.0 - z) * (1.0 - n * n);
            let dz = dh * (h_prev - n) * z * (1.0 - z);
            let dr = dn * hn * rg * (1.0 - rg);
            dgx[row + j] = dr;
            dgx[row + H + j] = dz;
            dgx[row + 2u * H + j] = dn;
            set_dgr(row + j, dr);
            set_dgr(row + H + j, dz);
            set_dgr(row + 2u * H + j, dn * rg);
            carry[ci] = dh * z;
        }
    }
}
