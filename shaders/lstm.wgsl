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

@group(0) @binding(2) var<storage, read_write> cells: array<f32>;  // like states, scalar
@group(0) @binding(3) var<storage, read_write> gates: array<f32>;  // (T, B, 4H) i, f, g, o
@group(0) @binding(4) var<storage, read_write> y: array<f32>;      // (T, B, D*H)
@group(0) @binding(5) var<storage, read> xw: array<f32>;           // (T, B, 4H)
@group(0) @binding(7) var<storage, read> bias: array<f32>;         // b_ih (4H), then b_hh at bias_hh
@group(0) @binding(9) var<storage, read> dy: array<f32>;           // (T, B, D*H)

// Forward: a thread owns 4 units (their 16 gate rows) of 8 batch rows.
@compute @workgroup_size(16, 1)
fn lstm_step_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let H = p.hidden;
    let j0 = gid.x * 4u;
    if j0 >= H {
        return;
    }
    let b0 = gid.y * ROWS;
    let acc = recurrent_sums(gate_rows(j0, 4u), gate_rows(j0 + 1u, 4u), gate_rows(j0 + 2u, 4u), gate_rows(j0 + 3u, 4u), b0);
    let G = 4u * H;
    let bh = p.bias_hh;
    for (var r = 0u; r < ROWS; r++) {
        let b = b0 + r;
        if b >= p.batch {
            break;
        }
        let row = (p.t * p.batch + b) * G;
        for (var u = 0u; u < 4u; u++) {
            let j = j0 + u;
            if j >= H {
                break;
            }
            let s = acc[r][u];
            let i = sigmoid(xw[row + j] + s.x + bias[j] + bias[bh + j]);
            let f = sigmoid(xw[row + H + j] + s.y + bias[H + j] + bias[bh + H + j]);
            let g = tanh_stable(xw[row + 2u * H + j] + s.z + bias[2u * H + j] + bias[bh + 2u * H + j]);
            let o = sigmoid(xw[row + 3u * H + j] + s.w + bias[3u * H + j] + bias[bh + 3u * H + j]);
            let src = slot_row(p.in_slot, b) + j;
            let dst = slot_row(p.out_slot, b) + j;
            var c = cells[src];
            var h = state_at(src);
            var out = 0.0;
            if valid(b) {
                c = f * c + i * g;
                h = o * tanh_stable(c);
                out = h;
            }
            cells[dst] = c;
            set_state(dst, h);
            gates[row + j] = i;
            gates[row + H + j] = f;
            gates[row + 2u * H + j] = g;
            gates[row + 3u * H + j] = o;
            y[out_index(b, j)] = out;
        }
    }
}

// Backward: a thread owns 16 units of 8 batch rows.
@compute @workgroup_size(16, 1)
fn lstm_step_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let H = p.hidden;
    let j0 = gid.x * 16u;
    if j0 >= H {
        return;
    }
    let b0 = gid.y * ROWS;
    let G = 4u * H;
    let rec = recurrent_grad(j0, b0, G);
    let BH = p.batch * H;
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
                // The state passed through: so does its gradient.
                carry[ci] += rv;
                set_dgr(row + j, 0.0);
                set_dgr(row + H + j, 0.0);
                set_dgr(row + 2u * H + j, 0.0);
                set_dgr(row + 3u * H + j, 0.0);
                continue;
            }
            let dh = rv + carry[ci] + dy[out_index(b, j)];
            let i = gates[row + j];
            let f = gates[row + H + j];
            let g = gates[row + 2u * H + j];
            let o = gates[row + 3u * H + j];
            let c = cells[slot_row(p.out_slot, b) + j];
            let c_prev = cells[slot_row(p.in_slot, b) + j];
            let tc = tanh_stable(c);
            let dc = dh * o * (1.0 - tc * tc) + carry[BH + ci];
            set_dgr(row + j, dc * g * i * (1.0 - i));
            set_dgr(row + H + j, dc * c_prev * f * (1.0 - f));
            set_dgr(row + 2u * H + j, dc * i * (1.0 - g * g));
            set_dgr(row + 3u * H + j, dh * tc * o * (1.0 - o));
            carry[ci] = 0.0;
            carry[BH + ci] = dc * f;
        }
    }
}
