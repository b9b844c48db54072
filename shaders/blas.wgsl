// blas.wgsl: the bias gradients.
//   bias_grad: db[j] += sum_r dy[r, j]      see below
//   bias_grad_pair: the same sums added to db and to db2 (the RNN's and LSTM's b_ih and b_hh)

@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y2: array<f32>; // bias_grad_pair's db2

// bias_grad: a workgroup of 256 threads owns 32 columns; its 8 rows of 32 threads walk the rows
// 8 apart, neighbouring threads reading neighbouring columns (coalesced), and the 8 sums of a
// column are added in order in workgroup memory (deterministic).
const BIAS_COLS: u32 = 32u; // must match src/gpu/kernels/blas.rs::BIAS_GRAD_COLS
var<workgroup> col_sums: array<f32, 256>;

// The sum of column j of x, valid in the workgroup's first BIAS_COLS threads.
fn column_sum(j: u32, tid: u32) -> f32 {
    var s = 0.0;
    if j < p.cols {
        for (var r = tid / BIAS_COLS; r < p.rows; r += 8u) {
            s += x[r * p.cols + j];
        }
    }
    col_sums[tid] = s;
    workgroupBarrier();
    var total = 0.0;
    if tid < BIAS_COLS {
        for (var q = 0u; q < 8u; q++) {
            total += col_sums[q * BIAS_COLS + tid];
        }
    }
    return total;
}

@compute @workgroup_size(256)
fn bias_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    p = params;
    let j = wg.x * BIAS_COLS + tid % BIAS_COLS;
    let total = column_sum(j, tid);
    if tid < BIAS_COLS && j < p.cols {
        y[j] += total;
    }
}

@compute @workgroup_size(256)
fn bias_grad_pair(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    p = params;
    let j = wg.x * BIAS_COLS + tid % BIAS_COLS;
    let total = column_sum(j, tid);
    if tid < BIAS_COLS && j < p.cols {
        y[j] += total;
        y2[j] += total;
    }
}
