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

@compute @workgroup_size(64, 1)
fn gru_step_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let H = p.hidden;
    let j = gid.x;
    if j >= H {
        return;
    }
    let b0 = gid.y * ROWS;
    // Each row's three gate sums (r, z, n) in one vec4 (see lstm.wgsl for why they are named).
    let r0 = in_row(b0);
    let r1 = in_row(b0 + 1u);
    let r2 = in_row(b0 + 2u);
    let r3 = in_row(b0 + 3u);
    let r4 = in_row(b0 + 4u);
    let r5 = in_row(b0 + 5u);
    let r6 = in_row(b0 + 6u);
    let r7 = in_row(b0 + 7u);
    var a0 = vec4<f32>();
    var a1 = vec4<f32>();
    var a2 = vec4<f32>();
    var a3 = vec4<f32>();
    var a4 = vec4<f32>();
    var a5 = vec4<f32>();
    var a6 = vec4<f32>();
    var a7 = vec4<f32>();
    let zero = vec4<f32>();
    for (var k = 0u; k < H; k += 4u) {
        let wr = w_row4(j, k);
        let wz = w_row4(H + j, k);
        let wn = w_row4(2u * H + j, k);
        a0 += dots4(wr, wz, wn, zero, state4(r0, k));
        a1 += dots4(wr, wz, wn, zero, state4(r1, k));
        a2 += dots4(wr, wz, wn, zero, state4(r2, k));
        a3 += dots4(wr, wz, wn, zero, state4(r3, k));
        a4 += dots4(wr, wz, wn, zero, state4(r4, k));
        a5 += dots4(wr, wz, wn, zero, state4(r5, k));
        a6 += dots4(wr, wz, wn, zero, state4(r6, k));
        a7 += dots4(wr, wz, wn, zero, state4(r7, k));
    }
    let acc = array<vec4<f32>, 8>(a0, a1, a2, a3, a4, a5, a6, a7);
    let bh = p.bias_hh;
    for (var r = 0u; r < ROWS; r++) {
        let b = b0 + r;
        if b >= p.batch {
            break;
        }
        let xrow = (p.t * p.batch + b) * 3u * H;
        let grow = (p.t * p.batch + b) * 4u * H;
        let rg = sigmoid(xw[xrow + j] + bias[j] + acc[r].x + bias[bh + j]);
        let z = sigmoid(xw[xrow + H + j] + bias[H + j] + acc[r].y + bias[bh + H + j]);
        let hn = acc[r].z + bias[bh + 2u * H + j];
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

@compute @workgroup_size(64, 1)
fn gru_step_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let H = p.hidden;
    let j0 = gid.x * 4u;
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
            let row = (p.t * p.batch + b) * G;
            if !valid(b) {
                carry[ci] += rec[r][q];
                for (var g = 0u; g < 3u; g++) {
                    dgx[row + g * H + j] = 0.0;
                    set_dgr(row + g * H + j, 0.0);
                }
                continue;
            }
            let dh = rec[r][q] + carry[ci] + dy[out_index(b, j)];
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
