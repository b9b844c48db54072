// loss.wgsl: softmax and the losses, one thread per row.
//   softmax_rows: y = softmax(x) along each row.
//   softmax_xent: softmax fused with cross-entropy. For row r with target t and weight w
//                 (w = 0 for padded positions, 1/count otherwise, so the sum is the mean):
//                 loss[r] = w * (logsumexp(x[r]) - x[r, t]),  dx[r] = w * (softmax(x[r]) - onehot(t)).
//   mse:          loss[r] = w * sum_j (x[r, j] - target[r, j])^2,  dx[r] = 2 w (x[r] - target[r]).
//   softmax_backward: dx[r] = y[r] * (dy[r] - sum_j y[r, j] dy[r, j]), y the softmax output.
// Rows are a vocabulary or an output layer wide (tens to thousands): a thread loops over its row
// with no barriers, which suits both lavapipe and the row counts (T*B) of a training step.

@group(0) @binding(1) var<storage, read_write> out: array<f32>;      // softmax y (rows, cols) or loss (rows)
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;       // (rows, cols)
@group(0) @binding(3) var<storage, read> x: array<f32>;              // logits or predictions (rows, cols)
@group(0) @binding(4) var<storage, read> classes: array<u32>;        // (rows) target class
@group(0) @binding(5) var<storage, read> values: array<f32>;         // (rows, cols) regression target
@group(0) @binding(6) var<storage, read> weight: array<f32>;         // (rows)

fn row_max(base: u32) -> f32 {
    var m = x[base];
    for (var j = 1u; j < p.cols; j++) {
        m = max(m, x[base + j]);
    }
    return m;
}

@compute @workgroup_size(256)
fn softmax_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = begin(gid, nwg);
    if r >= p.rows { return; }
    let base = r * p.cols;
    let m = row_max(base);
    var s = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        s += exp(x[base + j] - m);
    }
    let inv = 1.0 / s;
    for (var j = 0u; j < p.cols; j++) {
        out[base + j] = exp(x[base + j] - m) * inv;
    }
}

@compute @workgroup_size(256)
fn softmax_xent(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = begin(gid, nwg);
    if r >= p.rows { return; }
    let base = r * p.cols;
    let w = weight[r];
    if w == 0.0 {
        out[r] = 0.0;
        for (var j = 0u; j < p.cols; j++) {
            dx[base + j] = 0.0;
        }
        return;
    }
    let t = classes[r];
    let m = row_max(base);
    var s = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        s += exp(x[base + j] - m);
    }
    let lse = m + log(s);
    out[r] = w * (lse - x[base + t]);
    let inv = 1.0 / s;
    for (var j = 0u; j < p.cols; j++) {
        let prob = exp(x[base + j] - m) * inv;
        dx[base + j] = w * (prob - select(0.0, 1.0, j == t));
    }
}

@compute @workgroup_size(256)
fn mse(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = begin(gid, nwg);
    if r >= p.rows { return; }
    let base = r * p.cols;
    let w = weight[r];
    var s = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        let d = x[base + j] - values[base + j];
        s += d * d;
        dx[base + j] = 2.0 * w * d;
    }
    out[r] = w * s;
}

@compute @workgroup_size(256)
fn softmax_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = begin(gid, nwg);
    if r >= p.rows { return; }
    let base = r * p.cols;
    var s = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        s += x[base + j] * values[base + j];
    }
    for (var j = 0u; j < p.cols; j++) {
        dx[base + j] = x[base + j] * (values[base + j] - s);
    }
}
