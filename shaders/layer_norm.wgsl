// layer_norm.wgsl — LayerNorm over the last axis (ε = 1e-5, biased variance) and its backward.
//
// Purpose:   layer_norm_forward:         y = (x − μ)·rstd·γ + β per row, μ and rstd saved;
//            layer_norm_backward_dx:     dx = (g − mean(g) − n·mean(g·n))·rstd, g = dy·γ,
//                                        n = (x − μ)·rstd (overwritten);
//            layer_norm_backward_params: dγ += Σ_r dy·n, dβ += Σ_r dy (rows ascending).
// Bindings (group 0; each entry point uses the subset listed):
//   0  params : uniform LayerNormParams         all
//   1  x      : storage, read       [B, H]      all (the forward's input)
//   2  gamma  : storage, read       [H]         forward, backward_dx
//   3  beta   : storage, read       [H]         forward
//   4  y      : storage, read_write [B, H]      forward
//   5  mean   : storage, read_write [B]         forward (written); backward_* (read)
//   6  rstd   : storage, read_write [B]         forward (written); backward_* (read)
//   7  dy     : storage, read       [B, H]      backward_*
//   8  dx     : storage, read_write [B, H]      backward_dx
//   9  dgamma : storage, read_write [H]         backward_params (accumulated)
//  10  dbeta  : storage, read_write [H]         backward_params (accumulated)
// Workgroup: 64 threads. Forward and backward_dx: one thread per row (B ≤ 65535·64 rows), which
//            walks its row in src/cpu/layer_norm.rs's order: each row sum is 8 lane sums
//            (lane j takes element 8i + j), combined as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)),
//            then the tail in order. backward_params: one thread per column, rows ascending.
//            H is at most a few hundred here, so a thread per row is not the bottleneck; no
//            float atomics, no cross-thread reduction, so the result is run-to-run identical.
// Matches:   src/cpu/layer_norm.rs layer_norm_forward_ref / layer_norm_backward_ref (f32), the
//            same operations in the same order; WGSL may leave fma unfused and round ÷ and √
//            within 2.5 ulp, so the comparison is toleranced.
// Tested by: tests/layer_norm.rs gpu_* (tolerances GPU_LAYER_NORM_*).

struct LayerNormParams {
    rows: u32,
    h: u32,
    eps: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: LayerNormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(7) var<storage, read> dy: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;
@group(0) @binding(9) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(10) var<storage, read_write> dbeta: array<f32>;

// 64 = a multiple of every common SIMD/warp width (8 lanes on lavapipe's AVX2, 32/64 on GPUs).
const WG: u32 = 64u;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * (nwg.x * WG);
}

// The 8-lane tree of reduce.rs: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
fn lane_tree(l: array<f32, 8>) -> f32 {
    let h0 = l[0] + l[4];
    let h1 = l[1] + l[5];
    let h2 = l[2] + l[6];
    let h3 = l[3] + l[7];
    return (h0 + h2) + (h1 + h3);
}

// Σ_k x[base + k] in the 8-lane order.
fn row_sum_x(base: u32, h: u32) -> f32 {
    let n8 = h - h % 8u;
    var l = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var i = 0u; i < n8; i += 8u) {
        for (var j = 0u; j < 8u; j++) {
            l[j] = l[j] + x[base + i + j];
        }
    }
    var s = lane_tree(l);
    for (var k = n8; k < h; k++) {
        s = s + x[base + k];
    }
    return s;
}

// Σ_k (x[base + k] − mu)² in the 8-lane order (each square rounded, then added).
fn row_sum_sq(base: u32, h: u32, mu: f32) -> f32 {
    let n8 = h - h % 8u;
    var l = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var i = 0u; i < n8; i += 8u) {
        for (var j = 0u; j < 8u; j++) {
            let d = x[base + i + j] - mu;
            l[j] = l[j] + d * d;
        }
    }
    var s = lane_tree(l);
    for (var k = n8; k < h; k++) {
        let d = x[base + k] - mu;
        s = s + d * d;
    }
    return s;
}

@compute @workgroup_size(64)
fn layer_norm_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = flat_index(gid, nwg);
    if (r >= params.rows) {
        return;
    }
    let h = params.h;
    let base = r * h;
    let hf = f32(h);
    let mu = row_sum_x(base, h) / hf;
    let var_ = row_sum_sq(base, h, mu) / hf;
    let rs = 1.0 / sqrt(var_ + params.eps);
    mean[r] = mu;
    rstd[r] = rs;
    for (var k = 0u; k < h; k++) {
        y[base + k] = fma((x[base + k] - mu) * rs, gamma[k], beta[k]);
    }
}

@compute @workgroup_size(64)
fn layer_norm_backward_dx(@builtin(global_invocation_id) gid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = flat_index(gid, nwg);
    if (r >= params.rows) {
        return;
    }
    let h = params.h;
    let base = r * h;
    let mu = mean[r];
    let rs = rstd[r];
    let n8 = h - h % 8u;
    var lg = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    var lgn = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var i = 0u; i < n8; i += 8u) {
        for (var j = 0u; j < 8u; j++) {
            let k = i + j;
            let n = (x[base + k] - mu) * rs;
            let g = dy[base + k] * gamma[k];
            lg[j] = lg[j] + g;
            lgn[j] = lgn[j] + g * n;
        }
    }
    var sg = lane_tree(lg);
    var sgn = lane_tree(lgn);
    for (var k = n8; k < h; k++) {
        let n = (x[base + k] - mu) * rs;
        let g = dy[base + k] * gamma[k];
        sg = sg + g;
        sgn = sgn + g * n;
    }
    let hf = f32(h);
    let a = sg / hf;
    let c = sgn / hf;
    for (var k = 0u; k < h; k++) {
        let n = (x[base + k] - mu) * rs;
        let g = dy[base + k] * gamma[k];
        dx[base + k] = fma(-n, c, g - a) * rs;
    }
}

@compute @workgroup_size(64)
fn layer_norm_backward_params(@builtin(global_invocation_id) gid: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = flat_index(gid, nwg);
    let h = params.h;
    if (k >= h) {
        return;
    }
    var dg = dgamma[k];
    var db = dbeta[k];
    for (var r = 0u; r < params.rows; r++) {
        let n = (x[r * h + k] - mean[r]) * rstd[r];
        let d = dy[r * h + k];
        dg = fma(d, n, dg);
        db = db + d;
    }
    dgamma[k] = dg;
    dbeta[k] = db;
}
