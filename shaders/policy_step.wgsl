// policy_step.wgsl — one whole rollout step of the drift network fused into one dispatch, its
// backward (the input-gradient chain) in another, and the per-step column sums of dh.
//
// Purpose:   policy_forward, step i, for a tile of TR batch rows b (row index n = i·B + b in the
//            [T·B, ·] activation buffers):
//              h   = x_i W_sᵀ + b_s + temb[i]          → h_all[n]   (add_row after the linear)
//              a₀  = GELU(h)                           → a0[n]
//              z_k = a_k W_kᵀ + b_k, a_{k+1} = GELU(z_k) (k < L) → z_k[n], a_{k+1}[n]
//              o_raw = a_L W_outᵀ + b_out (+ s(t_i) ⊙ clip(∇log R(x_i)) on the first D columns
//              with the Langevin parametrization), o = clip(o_raw, c)  → o_raw[n], o[n] ([2D])
//              x_{i+1} = x_i + u·dt + std·ξ, and the step's log p_F / log p_B added to (or, at
//              i = 0, written into) log_pf / log_pb — em_step.wgsl's arithmetic; with a learned
//              variance, per coordinate var_j = dt·exp(ℓ_j) and std_j = √(var_j + ε²).
//            policy_backward, step i, given g = ∂L/∂LF_b (the seed of every step's log p_F):
//              d_o = clip'(o_raw)·∂(g·log p_F)/∂o      → d_o[n]
//              da = d_o W_out, dz_k = da·GELU'(z_k) → dz_k[n], da = dz_k W_k (k = L−1 … 0),
//              dh = da·GELU'(h)                       → dh[n]
//            segment_col_sums: dtemb[i, j] = Σ_b dh[i·B + b, j] (b ascending), all i at once.
//            lp_scale_grad: ds[i, ·] = Σ_b d_o[i·B + b, j]·g[i·B + b, j] over j < D (the Langevin
//            scale's gradient; g = clip(∇log R) recomputed from grad_r), all i at once, in the
//            tape's order (b ascending, then j; one accumulator per scale column).
//            The weight gradients are NOT formed here: after all steps one linear_backward_dw
//            per layer over the T·B rows (d_o / dz_k / dh against a_L / a_k / x) does it.
// Weights:   one packed buffer, copied from the parameter blocks each iteration:
//            [W_s (H×D) | b_s (H) | W_0 (H×H) | b_0 (H) | … | W_{L−1} | b_{L−1} | W_out (2D×H) | b_out (2D)],
//            and the same layout with every W transposed (W_sᵀ D×H, W_kᵀ H×H, W_outᵀ H×2D) for
//            the forward, so that threads computing consecutive outputs read consecutive
//            addresses (the backward's dx chains already do with W as stored).
// Prelude:   math.wgsl (gelu_f32, gelu_slope_f32, clip_f32, clip_passes_f32, em_coordinate,
//            em_logpf_du).
// Bindings (group 0; each entry point uses the subset listed):
//   0  params   : uniform PolicyParams               all
//   1  wts      : storage, read       [packed]       policy_backward
//   2  temb     : storage, read       [T, H]         policy_forward
//   3  noise    : storage, read       [T·B, D]       policy_forward (the CPU's normals)
//   4  step_std : storage, read       [1 or 2]       policy_forward ([std, ε²]; ε², the exploration
//                                                    variance, only with a learned variance)
//   5  xs       : storage, read_write [(T+1)·B, D]   policy_forward (reads x_i, writes x_{i+1}),
//                                                    policy_backward (reads)
//   6  h_all    : storage, read_write [T·B, H]       policy_forward (writes), policy_backward
//   7–10 a0..a3 : storage, read_write [T·B, H]       policy_forward (a_k for k ≤ L; unused
//                                                    slots bound to a 1-element dummy)
//   11–13 z0..z2: storage, read_write [T·B, H]       policy_forward (writes), policy_backward
//   14 o_raw    : storage, read_write [T·B, 2D]      policy_forward (writes), policy_backward
//   15 o        : storage, read_write [T·B, 2D]      policy_forward (writes), policy_backward
//   16 log_pf   : storage, read_write [B]            policy_forward
//   17 log_pb   : storage, read_write [B]            policy_forward
//   18 d_log_pf : storage, read       [B]            policy_backward
//   19 d_o      : storage, read_write [T·B, 2D]      policy_backward
//   20–22 dz0..dz2: storage, read_write [T·B, H]     policy_backward
//   23 dh       : storage, read_write [T·B, H]       policy_backward, segment_col_sums
//   24 dtemb    : storage, read_write [T, H]         segment_col_sums (overwritten)
//   25 lp_scale : storage, read       [T, S]         policy_forward (S = 1 or D; LP only)
//   26 grad_r   : storage, read       [T·B, D]       policy_forward, lp_scale_grad (∇log R(x_i),
//                                                    raw; clipped in-shader as the CPU does)
//   27 dscale   : storage, read_write [T, S]         lp_scale_grad (overwritten)
//   28 wts_t    : storage, read       [packed]       policy_forward (transposed weights)
// Workgroup: 64 threads and a tile of TR = 4 batch rows (workgroup w of a 2-D grid takes rows
//            4w…4w+3); thread t computes units j = t, t+64, … of every layer for the tile's rows,
//            layer outputs pass through workgroup memory (H ≤ 256), and the per-row log p_F /
//            log p_B sums over D run on one thread per row, j ascending. L ≤ 3 joint layers.
//            segment_col_sums, lp_scale_grad: one thread per output, flat over a 2-D grid.
// Order:     every output element is ONE sequential fma chain in the CPU reference's order
//            (linear.wgsl's chains: acc = b[j]; acc = fma(x[p], w[j,p], acc), p ascending;
//            dx: acc = 0; acc = fma(dy[j], w[j,p], acc), j ascending), so this kernel equals the
//            per-op kernels (linear, add_row, gelu, clip, em_step) bit for bit on any device,
//            and the CPU where the device's fma is fused.
// Matches:   the per-op kernels above and, through them, src/nn/drift_net.rs DriftNet::policy,
//            src/samplers/rollout.rs, src/autodiff/ops.rs (em_logpf VJP, Clip, Gelu, AddRow).
// Tested by: tests/gpu_training.rs (a whole iteration's loss and gradients against the CPU tape;
//            a short run against the CPU run).

struct PolicyParams {
    batch: u32,
    dim: u32,
    hidden: u32,
    layers: u32,
    // Step i, and T (segment_col_sums).
    step: u32,
    steps: u32,
    // 1 when i > 0: log p_B is computed and the step's terms are added to log_pf / log_pb.
    with_pb: u32,
    accumulate: u32,
    dt: f32,
    var_f: f32,
    norm_f: f32,
    ratio_b: f32,
    var_b: f32,
    norm_b: f32,
    out_clip: f32,
    // Langevin parametrization: lp = 1 when on, lp_width = S (1 or D), lgv_clip the clip of
    // ∇log R (PyTorch nan_to_num then clamp, src/samplers/rollout.rs clip_nan_to_num).
    lgv_clip: f32,
    lp: u32,
    lp_width: u32,
    // Learned variance: learned = 1 when on; the log-variance per unit time of coordinate j is
    // ℓ_j = log_sigma2 + log_var_range·tanh(o[D + j]) (src/autodiff/ops.rs log_var).
    learned: u32,
    log_var_range: f32,
    log_sigma2: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: PolicyParams;
@group(0) @binding(1) var<storage, read> wts: array<f32>;
@group(0) @binding(2) var<storage, read> temb: array<f32>;
@group(0) @binding(3) var<storage, read> noise: array<f32>;
@group(0) @binding(4) var<storage, read> step_std: array<f32>;
@group(0) @binding(5) var<storage, read_write> xs: array<f32>;
@group(0) @binding(6) var<storage, read_write> h_all: array<f32>;
@group(0) @binding(7) var<storage, read_write> a0: array<f32>;
@group(0) @binding(8) var<storage, read_write> a1: array<f32>;
@group(0) @binding(9) var<storage, read_write> a2: array<f32>;
@group(0) @binding(10) var<storage, read_write> a3: array<f32>;
@group(0) @binding(11) var<storage, read_write> z0: array<f32>;
@group(0) @binding(12) var<storage, read_write> z1: array<f32>;
@group(0) @binding(13) var<storage, read_write> z2: array<f32>;
@group(0) @binding(14) var<storage, read_write> o_raw: array<f32>;
@group(0) @binding(15) var<storage, read_write> o: array<f32>;
@group(0) @binding(16) var<storage, read_write> log_pf: array<f32>;
@group(0) @binding(17) var<storage, read_write> log_pb: array<f32>;
@group(0) @binding(18) var<storage, read> d_log_pf: array<f32>;
@group(0) @binding(19) var<storage, read_write> d_o: array<f32>;
@group(0) @binding(20) var<storage, read_write> dz0: array<f32>;
@group(0) @binding(21) var<storage, read_write> dz1: array<f32>;
@group(0) @binding(22) var<storage, read_write> dz2: array<f32>;
@group(0) @binding(23) var<storage, read_write> dh: array<f32>;
@group(0) @binding(24) var<storage, read_write> dtemb: array<f32>;
@group(0) @binding(25) var<storage, read> lp_scale: array<f32>;
@group(0) @binding(26) var<storage, read> grad_r: array<f32>;
@group(0) @binding(27) var<storage, read_write> dscale: array<f32>;
@group(0) @binding(28) var<storage, read> wts_t: array<f32>;

const WG: u32 = 64u;
// Batch rows per workgroup.
const TR: u32 = 4u;
// Widest hidden layer the workgroup tile holds.
const MAX_H: u32 = 256u;
// Two halves of TR × MAX_H: layer input and output (forward), da and dz (backward).
var<workgroup> tile: array<f32, 2048>;

// Offsets into the packed weights.
fn off_bs() -> u32 {
    return params.hidden * params.dim;
}
fn off_wj(k: u32) -> u32 {
    let h = params.hidden;
    return h * params.dim + h + k * (h * h + h);
}
fn off_bj(k: u32) -> u32 {
    return off_wj(k) + params.hidden * params.hidden;
}
fn off_wo() -> u32 {
    return off_wj(params.layers);
}
fn off_bo() -> u32 {
    return off_wo() + 2u * params.dim * params.hidden;
}

fn store_a(k: u32, n: u32, v: f32) {
    switch k {
        case 0u: { a0[n] = v; }
        case 1u: { a1[n] = v; }
        case 2u: { a2[n] = v; }
        default: { a3[n] = v; }
    }
}
fn store_z(k: u32, n: u32, v: f32) {
    switch k {
        case 0u: { z0[n] = v; }
        case 1u: { z1[n] = v; }
        default: { z2[n] = v; }
    }
}
fn load_z(k: u32, n: u32) -> f32 {
    switch k {
        case 0u: { return z0[n]; }
        case 1u: { return z1[n]; }
        default: { return z2[n]; }
    }
}
fn store_dz(k: u32, n: u32, v: f32) {
    switch k {
        case 0u: { dz0[n] = v; }
        case 1u: { dz1[n] = v; }
        default: { dz2[n] = v; }
    }
}

// clip(∇log R) of state row n, column j: NaN ↦ 0, then clamp to ±lgv_clip (±∞ ↦ ±lgv_clip).
fn lgv_grad(n: u32, j: u32) -> f32 {
    let g = grad_r[n * params.dim + j];
    let c = params.lgv_clip;
    let g0 = select(g, 0.0, is_nan_f32(g));
    return select(select(g0, -c, g0 < -c), c, g0 > c);
}

const TAU_F32: f32 = 0x1.921fb6p+2f; // 0x40c90fdb = 2π rounded to f32

// var_j = dt·exp(ℓ_j) of state row n, coordinate j (the fixed var_f without a learned variance).
fn step_var(n: u32, j: u32) -> f32 {
    if (params.learned == 0u) {
        return params.var_f;
    }
    let v = o[n * 2u * params.dim + params.dim + j];
    return params.dt * exp_f32(params.log_sigma2 + params.log_var_range * tanh(v));
}

fn first_row(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * TR;
}

@compute @workgroup_size(64)
fn policy_forward(@builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lid.x;
    let r0 = first_row(wid, nwg);
    let nb = params.batch;
    let d = params.dim;
    let h = params.hidden;
    let i = params.step;
    let base = i * nb;
    let half = TR * MAX_H;

    // State encoder + time embedding + GELU → tile half 0.
    for (var j = t; j < h; j += WG) {
        for (var rr = 0u; rr < TR; rr++) {
            let b = r0 + rr;
            if (b < nb) {
                let n = base + b;
                var acc = wts_t[off_bs() + j];
                for (var p = 0u; p < d; p++) {
                    acc = fma(xs[n * d + p], wts_t[p * h + j], acc);
                }
                let hv = acc + temb[i * h + j];
                h_all[n * h + j] = hv;
                let av = gelu_f32(hv);
                store_a(0u, n * h + j, av);
                tile[rr * MAX_H + j] = av;
            }
        }
    }
    workgroupBarrier();

    // Joint layers, ping-ponging between the tile's halves.
    var cur = 0u;
    for (var k = 0u; k < params.layers; k++) {
        let src = cur * half;
        let dst = (1u - cur) * half;
        for (var j = t; j < h; j += WG) {
            for (var rr = 0u; rr < TR; rr++) {
                let b = r0 + rr;
                if (b < nb) {
                    let n = base + b;
                    var acc = wts_t[off_bj(k) + j];
                    let wc = off_wj(k) + j;
                    for (var p = 0u; p < h; p++) {
                        acc = fma(tile[src + rr * MAX_H + p], wts_t[wc + p * h], acc);
                    }
                    store_z(k, n * h + j, acc);
                    let av = gelu_f32(acc);
                    store_a(k + 1u, n * h + j, av);
                    tile[dst + rr * MAX_H + j] = av;
                }
            }
        }
        workgroupBarrier();
        cur = 1u - cur;
    }

    // Output layer and clip → o_raw, o.
    let oc = 2u * d;
    let src = cur * half;
    for (var j = t; j < oc; j += WG) {
        for (var rr = 0u; rr < TR; rr++) {
            let b = r0 + rr;
            if (b < nb) {
                let n = base + b;
                var acc = wts_t[off_bo() + j];
                let wc = off_wo() + j;
                for (var p = 0u; p < h; p++) {
                    acc = fma(tile[src + rr * MAX_H + p], wts_t[wc + p * oc], acc);
                }
                if (params.lp == 1u && j < d) {
                    // y[j] += s[i, j or 0]·g[j] (Tape::langevin_add: a product, then a sum).
                    let sj = lp_scale[params.step * params.lp_width + select(j, 0u, params.lp_width == 1u)];
                    let prod = sj * lgv_grad(n, j);
                    acc = acc + prod;
                }
                o_raw[n * oc + j] = acc;
                o[n * oc + j] = clip_f32(acc, params.out_clip);
            }
        }
    }
    // o of the tile's rows, written by all threads, is read below by one thread per row.
    storageBarrier();

    // Euler–Maruyama step, log p_F and log p_B: one thread per row, j ascending (em_step.wgsl).
    if (t < TR && r0 + t < nb) {
        let b = r0 + t;
        let n = base + b;
        let dt = params.dt;
        let sd = step_std[0];
        var acc_f = 0.0;
        var acc_b = 0.0;
        for (var j = 0u; j < d; j++) {
            let k = n * d + j;
            var var_j = params.var_f;
            var norm_j = params.norm_f;
            var sd_j = sd;
            if (params.learned == 1u) {
                // std √(dt·e^ℓ + ε²) in f32 (the CPU rounds it from f64); var, norm as the tape.
                var_j = step_var(n, j);
                norm_j = 0.5 * log(TAU_F32 * var_j);
                sd_j = sqrt(var_j + step_std[1]);
            }
            let e = em_coordinate(xs[k], o[n * oc + j], noise[k], sd_j, dt, var_j, norm_j,
                                  params.ratio_b, params.var_b, params.norm_b);
            xs[k + nb * d] = e.x;
            acc_f = acc_f + e.y;
            acc_b = acc_b + e.z;
        }
        if (params.with_pb == 0u) {
            acc_b = 0.0;
        }
        if (params.accumulate == 1u) {
            log_pf[b] = log_pf[b] + acc_f;
            log_pb[b] = log_pb[b] + acc_b;
        } else {
            log_pf[b] = acc_f;
            log_pb[b] = acc_b;
        }
    }
}

@compute @workgroup_size(64)
fn policy_backward(@builtin(local_invocation_id) lid: vec3<u32>,
                   @builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lid.x;
    let r0 = first_row(wid, nwg);
    let nb = params.batch;
    let d = params.dim;
    let h = params.hidden;
    let base = params.step * nb;
    let oc = 2u * d;
    let dt = params.dt;

    // d_o = clip-masked VJP of g·log p_F (em_step.wgsl em_logpf_backward's arithmetic).
    for (var j = t; j < oc; j += WG) {
        for (var rr = 0u; rr < TR; rr++) {
            let b = r0 + rr;
            if (b < nb) {
                let n = base + b;
                var du = 0.0;
                if (j < d) {
                    let k = n * d + j;
                    du = em_logpf_du(d_log_pf[b], xs[k], xs[k + nb * d], o[n * oc + j], dt,
                                     step_var(n, j));
                } else if (params.learned == 1u) {
                    // ∂/∂v_j: g·(½r²/var − ½)·range·(1 − tanh²v), the tape's order.
                    let jj = j - d;
                    let k = n * d + jj;
                    let th = tanh(o[n * oc + j]);
                    let r = (xs[k + nb * d] - xs[k]) - o[n * oc + jj] * dt;
                    let dl = ((0.5 * r) * r) / step_var(n, jj) - 0.5;
                    du = ((d_log_pf[b] * dl) * params.log_var_range) * (1.0 - th * th);
                }
                d_o[n * oc + j] = select(0.0, du, clip_passes_f32(o_raw[n * oc + j], params.out_clip));
            }
        }
    }
    storageBarrier();

    // da = d_o · W_out → tile half 0 (dx chain: acc = 0, j ascending).
    let half = TR * MAX_H;
    for (var p = t; p < h; p += WG) {
        for (var rr = 0u; rr < TR; rr++) {
            let b = r0 + rr;
            if (b < nb) {
                let n = base + b;
                var acc = 0.0;
                for (var j = 0u; j < oc; j++) {
                    acc = fma(d_o[n * oc + j], wts[off_wo() + j * h + p], acc);
                }
                tile[rr * MAX_H + p] = acc;
            }
        }
    }
    workgroupBarrier();

    // Joint layers, last first: dz_k = da·GELU'(z_k) (half 1), da = dz_k · W_k (half 0).
    for (var kk = 0u; kk < params.layers; kk++) {
        let k = params.layers - 1u - kk;
        for (var p = t; p < h; p += WG) {
            for (var rr = 0u; rr < TR; rr++) {
                let b = r0 + rr;
                if (b < nb) {
                    let n = base + b;
                    let dz = tile[rr * MAX_H + p] * gelu_slope_f32(load_z(k, n * h + p));
                    store_dz(k, n * h + p, dz);
                    tile[half + rr * MAX_H + p] = dz;
                }
            }
        }
        workgroupBarrier();
        for (var q = t; q < h; q += WG) {
            for (var rr = 0u; rr < TR; rr++) {
                let b = r0 + rr;
                if (b < nb) {
                    var acc = 0.0;
                    for (var p = 0u; p < h; p++) {
                        acc = fma(tile[half + rr * MAX_H + p], wts[off_wj(k) + p * h + q], acc);
                    }
                    tile[rr * MAX_H + q] = acc;
                }
            }
        }
        workgroupBarrier();
    }

    // dh = da·GELU'(h).
    for (var p = t; p < h; p += WG) {
        for (var rr = 0u; rr < TR; rr++) {
            let b = r0 + rr;
            if (b < nb) {
                let n = base + b;
                dh[n * h + p] = tile[rr * MAX_H + p] * gelu_slope_f32(h_all[n * h + p]);
            }
        }
    }
}

@compute @workgroup_size(64)
fn segment_col_sums(@builtin(global_invocation_id) gid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * (nwg.x * WG);
    let h = params.hidden;
    if (idx >= params.steps * h) {
        return;
    }
    let i = idx / h;
    let j = idx % h;
    let nb = params.batch;
    var acc = 0.0;
    for (var b = 0u; b < nb; b++) {
        acc = acc + dh[(i * nb + b) * h + j];
    }
    dtemb[idx] = acc;
}

@compute @workgroup_size(64)
fn lp_scale_grad(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * (nwg.x * WG);
    let sw = params.lp_width;
    if (idx >= params.steps * sw) {
        return;
    }
    let i = idx / sw;
    let col = idx % sw;
    let nb = params.batch;
    let d = params.dim;
    let oc = 2u * d;
    var acc = 0.0;
    for (var b = 0u; b < nb; b++) {
        let n = i * nb + b;
        if (sw == 1u) {
            for (var j = 0u; j < d; j++) {
                acc = fma(d_o[n * oc + j], lgv_grad(n, j), acc);
            }
        } else {
            acc = fma(d_o[n * oc + col], lgv_grad(n, col), acc);
        }
    }
    dscale[idx] = acc;
}
