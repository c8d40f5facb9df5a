// add_row.wgsl — add one row of a [T, H] table to every row of a [B, H] batch, and its VJP.
//
// Purpose:   add_row:          h[b, j] = x[b, j] + src[row·H + j]   (e.g. the time embedding of
//                                                                    step `row` added to every
//                                                                    trajectory's hidden state)
//            col_sum_into_row: acc[row·H + j] += Σ_b dy[b, j]        (∂L/∂src of add_row: the
//                                                                    column sum of the upstream
//                                                                    gradient, accumulated into
//                                                                    row `row` of src's gradient)
// Bindings (group 0; each entry point uses the subset listed):
//   0  params : uniform AddRowParams                all
//   1  x      : storage, read       [B, H]          add_row
//   2  src    : storage, read       [T, H]          add_row
//   3  h      : storage, read_write [B, H]          add_row
//   4  dy     : storage, read       [B, H]          col_sum_into_row
//   5  acc    : storage, read_write [T, H]          col_sum_into_row (only row `row` is touched)
// Workgroup: 64 threads. add_row: one element each over N = B·H; col_sum_into_row: one column j
//            each (H threads), which walks the B rows itself. The grid is 2-D (x ≤ 65535
//            workgroups); index = gid.x + gid.y·(num_workgroups.x·64), bounds-checked.
// Order:     add_row: one f32 add per element. col_sum_into_row, column j:
//              a = acc[row·H + j]; for b = 0, 1, …, B−1 { a = a + dy[b·H + j] }; acc[row·H + j] = a
//            — plain adds (no fma, nothing to contract), b ascending, no atomics.
// Matches:   add_row: src/autodiff/ops.rs Tape::add_row (`*a += b` per element), bitwise.
//            col_sum_into_row: src/cpu/reduce.rs col_sum_acc_ref (= Kernels::col_sum_acc, which
//            the Op::AddRow VJP calls on the slot's row): the same start value, the same adds in
//            the same order, so bitwise (on a device that keeps subnormals; random data has none).
// Tested by: tests/gpu_train_ops.rs add_row, col_sum_into_row (bitwise).

struct AddRowParams {
    rows: u32, // B
    cols: u32, // H
    row: u32,  // the row of src / acc
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: AddRowParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> h: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> acc: array<f32>;

// 64 = a multiple of every common SIMD/warp width (8 lanes on lavapipe's AVX2, 32/64 on GPUs).
const WG: u32 = 64u;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * (nwg.x * WG);
}

@compute @workgroup_size(64)
fn add_row(@builtin(global_invocation_id) gid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let cols = params.cols;
    if (i >= params.rows * cols) {
        return;
    }
    let j = i % cols;
    h[i] = x[i] + src[params.row * cols + j];
}

@compute @workgroup_size(64)
fn col_sum_into_row(@builtin(global_invocation_id) gid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat_index(gid, nwg);
    let cols = params.cols;
    if (j >= cols) {
        return;
    }
    let dst = params.row * cols + j;
    var a = acc[dst];
    for (var b = 0u; b < params.rows; b++) {
        a = a + dy[b * cols + j];
    }
    acc[dst] = a;
}
