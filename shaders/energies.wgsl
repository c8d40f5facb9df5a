// energies.wgsl — log R and ∇log R per row for the benchmark targets (25GMM/9GMM, Manywell,
// Neal's funnel), f32.
//
// Purpose:   one entry point per target, per row b of x [B, D]: log_r[b] = log R(x_b) and
//            grad[b, ·] = ∇log R(x_b).
//   gmm      (D = 2) log R = Σ_c log[(1/n) Σ_a N(x_c; axis[a], v)] — the factorised form of the
//            equal-weight K = n² mixture on the grid axis × axis, exactly the formula of
//            src/energies/gmm.rs (max-shifted logsumexp per coordinate); ∂/∂x_c =
//            (Σ_a w_a·axis[a] / Σ_a w_a − x_c)/v. 25GMM vs 9GMM is the axis buffer (n = n_axis).
//   manywell (D even) Σ_k −a⁴ + 6a² + ½a − ½b², (a, b) = (x_{2k}, x_{2k+1});
//            ∂/∂a = −4a³ + 12a + ½, ∂/∂b = −b.
//   funnel   log N(x₀; 0, s²) + Σ_{i≥1}[−½ log 2π − x₀/2 − ½ x_i² e^{−x₀}]; hard s² = 9, easy 1
//            (var0 in the params); ∂/∂x₀ = −x₀/s² − (D−1)/2 + ½e^{−x₀}Σx_i², ∂/∂x_i = −x_i e^{−x₀}.
//            The constant terms (−½ log 2π − ½ log s² and −(D−1)·½ log 2π, resp. the GMM's
//            −log n − ½ log(2π v)) are computed on the host in f64 and passed as log_const.
// Prelude:   math.wgsl (exp_f32).
// Bindings (group 0; each entry point uses the subset listed):
//   0  params : uniform EnergyParams        all
//   1  x      : storage, read       [≥ row0 + B, D]  all (rows row0 … row0 + B − 1 are read)
//   2  axis   : storage, read       [n]     log_reward_grad_gmm (grid coordinates of one axis)
//   3  log_r  : storage, read_write [B]     all
//   4  grad   : storage, read_write [≥ grad_row0 + B, D]  all
// Workgroup: 64 threads, one ROW each; 2-D grid, row = gid.x + gid.y·(num_workgroups.x·64).
// Matches:   src/energies/{gmm,many_well,funnel}.rs log_reward_row / grad_log_reward_row (f64 on
//            the CPU, f32 here → toleranced against the f64 values).
// Tested by: tests/gpu_sampler_parity.rs energy_* (GPU_LOG_R, GPU_GRAD_LOG_R).

struct EnergyParams {
    rows: u32,
    dim: u32,
    n_axis: u32,
    // x rows start here: row b reads x[row0 + b] (a slice of a longer state buffer).
    row0: u32,
    // gmm: the per-coordinate variance v; funnel: Var(x₀) = s².
    variance: f32,
    // Constant added to log R (see the header).
    log_const: f32,
    // grad rows start here: row b writes grad[grad_row0 + b] (a slice of a [T·B, D] buffer).
    grad_row0: u32,
    _pad2: f32,
}

@group(0) @binding(0) var<uniform> params: EnergyParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> axis: array<f32>;
@group(0) @binding(3) var<storage, read_write> log_r: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad: array<f32>;

const WG: u32 = 64u;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * (nwg.x * WG);
}

// (log Σ_a exp(−(c − m_a)²/2v), d/dc of it) by a max-shifted logsumexp.
fn gmm_factor(c: f32) -> vec2<f32> {
    let inv2v = 0.5 / params.variance;
    var mx = -3.0e38;
    for (var a = 0u; a < params.n_axis; a = a + 1u) {
        let t = c - axis[a];
        mx = max(mx, -(t * t) * inv2v);
    }
    var s = 0.0;
    var sm = 0.0;
    for (var a = 0u; a < params.n_axis; a = a + 1u) {
        let t = c - axis[a];
        let w = exp_f32(-(t * t) * inv2v - mx);
        s = s + w;
        sm = sm + w * axis[a];
    }
    return vec2<f32>(mx + log(s), (sm / s - c) / params.variance);
}

@compute @workgroup_size(64)
fn log_reward_grad_gmm(@builtin(global_invocation_id) gid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = flat_index(gid, nwg);
    if (b >= params.rows) {
        return;
    }
    let xb = params.row0 + b;
    let f0 = gmm_factor(x[2u * xb]);
    let f1 = gmm_factor(x[2u * xb + 1u]);
    log_r[b] = (f0.x + f1.x) + params.log_const;
    let gb = params.grad_row0 + b;
    grad[2u * gb] = f0.y;
    grad[2u * gb + 1u] = f1.y;
}

@compute @workgroup_size(64)
fn log_reward_grad_manywell(@builtin(global_invocation_id) gid: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = flat_index(gid, nwg);
    if (b >= params.rows) {
        return;
    }
    let d = params.dim;
    var s = 0.0;
    for (var k = 0u; k < d; k = k + 2u) {
        let a = x[(params.row0 + b) * d + k];
        let bb = x[(params.row0 + b) * d + k + 1u];
        let a2 = a * a;
        s = s + ((-a2 * a2 + 6.0 * a2 + 0.5 * a) - 0.5 * bb * bb);
        grad[(params.grad_row0 + b) * d + k] = -4.0 * a * a * a + 12.0 * a + 0.5;
        grad[(params.grad_row0 + b) * d + k + 1u] = -bb;
    }
    log_r[b] = s;
}

@compute @workgroup_size(64)
fn log_reward_grad_funnel(@builtin(global_invocation_id) gid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = flat_index(gid, nwg);
    if (b >= params.rows) {
        return;
    }
    let d = params.dim;
    let xr = (params.row0 + b) * d;
    let x0 = x[xr];
    let e = exp_f32(-x0);
    var sum_sq = 0.0;
    for (var i = 1u; i < d; i = i + 1u) {
        let v = x[xr + i];
        sum_sq = sum_sq + v * v;
        grad[(params.grad_row0 + b) * d + i] = -v * e;
    }
    let m = f32(d - 1u);
    grad[(params.grad_row0 + b) * d] = -x0 / params.variance - 0.5 * m + 0.5 * e * sum_sq;
    log_r[b] = params.log_const - 0.5 * x0 * x0 / params.variance - m * 0.5 * x0
        - 0.5 * sum_sq * e;
}
