// linear.wgsl — dense layer y = x·wᵀ + b and its backward products dx, dW, db.
//
// Purpose:   forward and backward of the drift net's linear layers, register-blocked 4×4.
// Shapes:    x [B, K], w [O, K] (row-major, one row per output, as nn.Linear), b [O], y [B, O];
//            dy [B, O], dx [B, K], dw [O, K], db [O]. B = params.rows, K = params.k, O = params.o.
// Bindings (group 0; each entry point uses the subset listed):
//   0  params : uniform LinearParams            all
//   1  x      : storage, read       [B, K]      linear_forward, linear_backward_dw
//   2  w      : storage, read       [O, K]      linear_forward, linear_backward_dx
//   3  b      : storage, read       [O]         linear_forward
//   4  y      : storage, read_write [B, O]      linear_forward
//   5  dy     : storage, read       [B, O]      linear_backward_dx, linear_backward_dw
//   6  dx     : storage, read_write [B, K]      linear_backward_dx (overwritten)
//   7  dw     : storage, read_write [O, K]      linear_backward_dw (accumulated: dw += dyᵀ·x)
//   8  db     : storage, read_write [O]         linear_backward_dw (accumulated: db += Σ_r dy),
//                                               linear_backward_dw_reduce
//   9  part_w : storage, read_write [C, O, K]   linear_backward_dw_partial (written),
//                                               linear_backward_dw_reduce (read)
//  10  part_b : storage, read_write [C, O]      the same, for db
// Workgroup: 64 threads, each owning a 4×4 block of outputs; blocks are numbered row-block-major
//            (block = rb·nb + cb, nb = ⌈cols/4⌉) over a 2-D grid (x ≤ 65535 workgroups), so small O
//            wastes no threads. Edge blocks clamp their load indices (always in bounds) and store
//            only the in-range elements.
// Order:     every output element is ONE sequential fma chain in the CPU reference's order — the
//            4×4 blocking runs 16 independent chains side by side (vec4 lanes), it never splits
//            or reassociates a chain, so with a fused fma the result is bitwise the CPU's:
//              y[r,j]  : acc = b[j];    for p in 0..K ascending: acc = fma(x[r,p], w[j,p], acc)
//              dx[r,p] : acc = 0;       for j in 0..O ascending: acc = fma(dy[r,j], w[j,p], acc)
//              dw[j,p] : acc = dw[j,p]; for r in 0..B ascending: acc = fma(dy[r,j], x[r,p], acc)
//              db[j]   : acc = db[j];   for r in 0..B ascending: acc = acc + dy[r,j]
//            (dw/db: one thread per 4×4 (j,p) block loops over all B rows — a fixed order, but only
//            ⌈O/4⌉·⌈K/4⌉ threads; db is done by the blocks with p-block 0.)
//            Split-K (for B = T·B-sized products): linear_backward_dw_partial runs the same chains
//            over row chunk c = [c·S, min((c+1)·S, B)) from 0 into part_w[c] / part_b[c]
//            (S = params.chunk, C = ⌈B/S⌉ chunks × the blocks as threads), and
//            linear_backward_dw_reduce adds them in chunk order: acc = dw[e]; for c ascending:
//            acc = acc + part_w[c, e]. Fixed order, no atomics; with one chunk and dw = 0 it
//            equals linear_backward_dw bit for bit.
// Matches:   src/cpu/linear.rs linear_forward_ref / linear_backward_dx_ref / linear_backward_dw_ref
//            (= cpu::Kernels::linear_* for f32, bitwise equal to them).
// Tested by: tests/cpu_vs_gpu.rs linear_* (tolerance GPU_LINEAR; bitwise equal to the CPU where
//            WGSL fma is fused, and to the CPU order with an unfused fma on lavapipe, whose fma
//            is fmul + fadd).

struct LinearParams {
    rows: u32,
    k: u32,
    o: u32,
    // Rows per chunk of the split-K entry points (unused by the others).
    chunk: u32,
}

@group(0) @binding(0) var<uniform> params: LinearParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<storage, read_write> dw: array<f32>;
@group(0) @binding(8) var<storage, read_write> db: array<f32>;
@group(0) @binding(9) var<storage, read_write> part_w: array<f32>;
@group(0) @binding(10) var<storage, read_write> part_b: array<f32>;

// 64 threads = 64 4×4 blocks per workgroup: a multiple of lavapipe's 8 AVX2 lanes and of GPU
// warp/wavefront widths.
const WG: u32 = 64u;

// The block a thread owns: vec2(row block, column block), or none (x = 0xffffffff) past the end.
// `nr` rows and `nc` columns of OUTPUT elements; blocks are 4×4.
fn block_of(gid: vec3<u32>, nwg: vec3<u32>, nr: u32, nc: u32) -> vec2<u32> {
    let id = gid.x + gid.y * (nwg.x * WG);
    let nb = (nc + 3u) / 4u;
    let rb = id / nb;
    if (nb == 0u || rb * 4u >= nr) {
        return vec2<u32>(0xffffffffu, 0u);
    }
    return vec2<u32>(rb, id % nb);
}

// Four consecutive indices starting at i0, clamped to n − 1 (loads stay in bounds at the edge).
fn clamp4(i0: u32, n: u32) -> vec4<u32> {
    let last = n - 1u;
    return min(vec4<u32>(i0, i0 + 1u, i0 + 2u, i0 + 3u), vec4<u32>(last));
}

// y[B,O] = x[B,K]·w[O,K]ᵀ + b[O]; a thread owns rows r0..r0+4 × outputs j0..j0+4.
@compute @workgroup_size(64)
fn linear_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let rows = params.rows;
    let kk = params.k;
    let o = params.o;
    let blk = block_of(gid, nwg, rows, o);
    if (blk.x == 0xffffffffu) {
        return;
    }
    let r0 = blk.x * 4u;
    let j0 = blk.y * 4u;
    let r = clamp4(r0, rows);
    let j = clamp4(j0, o);
    // acc_i[c] = chain of y[r0+i, j0+c]; start from the bias
    let bias = vec4<f32>(b[j.x], b[j.y], b[j.z], b[j.w]);
    var acc0 = bias;
    var acc1 = bias;
    var acc2 = bias;
    var acc3 = bias;
    let xr = r * kk;
    let wr = j * kk;
    for (var p = 0u; p < kk; p++) {
        let wv = vec4<f32>(w[wr.x + p], w[wr.y + p], w[wr.z + p], w[wr.w + p]);
        acc0 = fma(vec4<f32>(x[xr.x + p]), wv, acc0);
        acc1 = fma(vec4<f32>(x[xr.y + p]), wv, acc1);
        acc2 = fma(vec4<f32>(x[xr.z + p]), wv, acc2);
        acc3 = fma(vec4<f32>(x[xr.w + p]), wv, acc3);
    }
    store_block_y(r0, j0, rows, o, acc0, acc1, acc2, acc3);
}

fn store_row_y(row: u32, j0: u32, o: u32, v: vec4<f32>) {
    let base = row * o + j0;
    y[base] = v.x;
    if (j0 + 1u < o) { y[base + 1u] = v.y; }
    if (j0 + 2u < o) { y[base + 2u] = v.z; }
    if (j0 + 3u < o) { y[base + 3u] = v.w; }
}

fn store_block_y(r0: u32, j0: u32, rows: u32, o: u32,
                 a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>) {
    store_row_y(r0, j0, o, a0);
    if (r0 + 1u < rows) { store_row_y(r0 + 1u, j0, o, a1); }
    if (r0 + 2u < rows) { store_row_y(r0 + 2u, j0, o, a2); }
    if (r0 + 3u < rows) { store_row_y(r0 + 3u, j0, o, a3); }
}

// dx[B,K] = dy[B,O]·w[O,K]; a thread owns rows r0..r0+4 × inputs p0..p0+4.
@compute @workgroup_size(64)
fn linear_backward_dx(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let rows = params.rows;
    let kk = params.k;
    let o = params.o;
    let blk = block_of(gid, nwg, rows, kk);
    if (blk.x == 0xffffffffu) {
        return;
    }
    let r0 = blk.x * 4u;
    let p0 = blk.y * 4u;
    let r = clamp4(r0, rows);
    let p = clamp4(p0, kk);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let dyr = r * o;
    for (var j = 0u; j < o; j++) {
        let wb = j * kk;
        let wv = vec4<f32>(w[wb + p.x], w[wb + p.y], w[wb + p.z], w[wb + p.w]);
        acc0 = fma(vec4<f32>(dy[dyr.x + j]), wv, acc0);
        acc1 = fma(vec4<f32>(dy[dyr.y + j]), wv, acc1);
        acc2 = fma(vec4<f32>(dy[dyr.z + j]), wv, acc2);
        acc3 = fma(vec4<f32>(dy[dyr.w + j]), wv, acc3);
    }
    store_row_dx(r0, p0, kk, acc0);
    if (r0 + 1u < rows) { store_row_dx(r0 + 1u, p0, kk, acc1); }
    if (r0 + 2u < rows) { store_row_dx(r0 + 2u, p0, kk, acc2); }
    if (r0 + 3u < rows) { store_row_dx(r0 + 3u, p0, kk, acc3); }
}

fn store_row_dx(row: u32, p0: u32, kk: u32, v: vec4<f32>) {
    let base = row * kk + p0;
    dx[base] = v.x;
    if (p0 + 1u < kk) { dx[base + 1u] = v.y; }
    if (p0 + 2u < kk) { dx[base + 2u] = v.z; }
    if (p0 + 3u < kk) { dx[base + 3u] = v.w; }
}

// dw[O,K] += dy[B,O]ᵀ·x[B,K] and db[O] += Σ_r dy[r,·]; a thread owns outputs j0..j0+4 ×
// inputs p0..p0+4 and walks all B rows in order.
@compute @workgroup_size(64)
fn linear_backward_dw(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let rows = params.rows;
    let kk = params.k;
    let o = params.o;
    let blk = block_of(gid, nwg, o, kk);
    if (blk.x == 0xffffffffu) {
        return;
    }
    let j0 = blk.x * 4u;
    let p0 = blk.y * 4u;
    let j = clamp4(j0, o);
    let p = clamp4(p0, kk);
    let dwr = j * kk;
    var acc0 = vec4<f32>(dw[dwr.x + p.x], dw[dwr.x + p.y], dw[dwr.x + p.z], dw[dwr.x + p.w]);
    var acc1 = vec4<f32>(dw[dwr.y + p.x], dw[dwr.y + p.y], dw[dwr.y + p.z], dw[dwr.y + p.w]);
    var acc2 = vec4<f32>(dw[dwr.z + p.x], dw[dwr.z + p.y], dw[dwr.z + p.z], dw[dwr.z + p.w]);
    var acc3 = vec4<f32>(dw[dwr.w + p.x], dw[dwr.w + p.y], dw[dwr.w + p.z], dw[dwr.w + p.w]);
    for (var r = 0u; r < rows; r++) {
        let xb = r * kk;
        let xv = vec4<f32>(x[xb + p.x], x[xb + p.y], x[xb + p.z], x[xb + p.w]);
        let gb = r * o;
        acc0 = fma(vec4<f32>(dy[gb + j.x]), xv, acc0);
        acc1 = fma(vec4<f32>(dy[gb + j.y]), xv, acc1);
        acc2 = fma(vec4<f32>(dy[gb + j.z]), xv, acc2);
        acc3 = fma(vec4<f32>(dy[gb + j.w]), xv, acc3);
    }
    store_row_dw(j0, p0, kk, acc0);
    if (j0 + 1u < o) { store_row_dw(j0 + 1u, p0, kk, acc1); }
    if (j0 + 2u < o) { store_row_dw(j0 + 2u, p0, kk, acc2); }
    if (j0 + 3u < o) { store_row_dw(j0 + 3u, p0, kk, acc3); }

    // db: the p-block-0 thread of each j-block; lanes = j0..j0+4, r ascending.
    if (blk.y == 0u) {
        var acc_b = vec4<f32>(db[j.x], db[j.y], db[j.z], db[j.w]);
        for (var r = 0u; r < rows; r++) {
            let gb = r * o;
            acc_b = acc_b + vec4<f32>(dy[gb + j.x], dy[gb + j.y], dy[gb + j.z], dy[gb + j.w]);
        }
        db[j0] = acc_b.x;
        if (j0 + 1u < o) { db[j0 + 1u] = acc_b.y; }
        if (j0 + 2u < o) { db[j0 + 2u] = acc_b.z; }
        if (j0 + 3u < o) { db[j0 + 3u] = acc_b.w; }
    }
}

fn store_row_dw(row: u32, p0: u32, kk: u32, v: vec4<f32>) {
    let base = row * kk + p0;
    dw[base] = v.x;
    if (p0 + 1u < kk) { dw[base + 1u] = v.y; }
    if (p0 + 2u < kk) { dw[base + 2u] = v.z; }
    if (p0 + 3u < kk) { dw[base + 3u] = v.w; }
}

// Split-K dW, pass 1: thread = (chunk c, 4×4 block of dw); partial sums of its chunk from 0.
@compute @workgroup_size(64)
fn linear_backward_dw_partial(@builtin(global_invocation_id) gid: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>) {
    let rows = params.rows;
    let kk = params.k;
    let o = params.o;
    let chunk = params.chunk;
    let id = gid.x + gid.y * (nwg.x * WG);
    let nbp = (kk + 3u) / 4u;
    let nblocks = ((o + 3u) / 4u) * nbp;
    let c = id / nblocks;
    if (c * chunk >= rows) {
        return;
    }
    let blk = id % nblocks;
    let j0 = (blk / nbp) * 4u;
    let p0 = (blk % nbp) * 4u;
    let j = clamp4(j0, o);
    let p = clamp4(p0, kk);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let r_end = min(rows, (c + 1u) * chunk);
    for (var r = c * chunk; r < r_end; r++) {
        let xb = r * kk;
        let xv = vec4<f32>(x[xb + p.x], x[xb + p.y], x[xb + p.z], x[xb + p.w]);
        let gb = r * o;
        acc0 = fma(vec4<f32>(dy[gb + j.x]), xv, acc0);
        acc1 = fma(vec4<f32>(dy[gb + j.y]), xv, acc1);
        acc2 = fma(vec4<f32>(dy[gb + j.z]), xv, acc2);
        acc3 = fma(vec4<f32>(dy[gb + j.w]), xv, acc3);
    }
    let base = c * o * kk;
    store_row_part(base, j0, p0, kk, acc0);
    if (j0 + 1u < o) { store_row_part(base, j0 + 1u, p0, kk, acc1); }
    if (j0 + 2u < o) { store_row_part(base, j0 + 2u, p0, kk, acc2); }
    if (j0 + 3u < o) { store_row_part(base, j0 + 3u, p0, kk, acc3); }
    if (p0 == 0u) {
        var acc_b = vec4<f32>(0.0);
        for (var r = c * chunk; r < r_end; r++) {
            let gb = r * o;
            acc_b = acc_b + vec4<f32>(dy[gb + j.x], dy[gb + j.y], dy[gb + j.z], dy[gb + j.w]);
        }
        let bb = c * o;
        part_b[bb + j0] = acc_b.x;
        if (j0 + 1u < o) { part_b[bb + j0 + 1u] = acc_b.y; }
        if (j0 + 2u < o) { part_b[bb + j0 + 2u] = acc_b.z; }
        if (j0 + 3u < o) { part_b[bb + j0 + 3u] = acc_b.w; }
    }
}

fn store_row_part(base: u32, row: u32, p0: u32, kk: u32, v: vec4<f32>) {
    let i = base + row * kk + p0;
    part_w[i] = v.x;
    if (p0 + 1u < kk) { part_w[i + 1u] = v.y; }
    if (p0 + 2u < kk) { part_w[i + 2u] = v.z; }
    if (p0 + 3u < kk) { part_w[i + 3u] = v.w; }
}

// Split-K dW, pass 2: one thread per element of dw (then db): add the chunks in order.
@compute @workgroup_size(64)
fn linear_backward_dw_reduce(@builtin(global_invocation_id) gid: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = params.o;
    let ok = o * params.k;
    let chunks = (params.rows + params.chunk - 1u) / params.chunk;
    let id = gid.x + gid.y * (nwg.x * WG);
    if (id < ok) {
        var acc = dw[id];
        for (var c = 0u; c < chunks; c++) {
            acc = acc + part_w[c * ok + id];
        }
        dw[id] = acc;
    } else if (id < ok + o) {
        let jj = id - ok;
        var acc = db[jj];
        for (var c = 0u; c < chunks; c++) {
            acc = acc + part_b[c * o + jj];
        }
        db[jj] = acc;
    }
}
