// em_step.wgsl — the Euler–Maruyama forward step with its log p_F and bridge log p_B terms, and
// the VJP of log p_F with respect to the policy output (fixed variance).
//
// Purpose:   em_step, per row b (D = dim, u = o[b, 0..D]):
//              x'_j   = x_j + u_j·dt + std·ξ_j      (std = step_std[0] = √(dt·σ² + ε²), host f64)
//              log p_F = Σ_j −½ r_j²/var − ½ log(2π var),  r_j = x'_j − x_j − u_j·dt, var = dt·σ²
//              log p_B = Σ_j −½ s_j²/v_b + norm_b,  s_j = x_j − ρ·x'_j, ρ = i/(i+1),
//                        v_b = σ²·dt·ρ, norm_b = −½ log(2π v_b)     (0 for step i = 0)
//            em_logpf_backward, per row b: du[b, j] = g_b·r_j·dt/var for j < D, du[b, D+j] = 0.
//            With `accumulate` = 1 the step's log p_F / log p_B are ADDED to log_pf / log_pb (the
//            rollout's per-trajectory sums, in step order); with 0 they overwrite them.
//            var, ½ log(2π var), v_b, norm_b and std are computed on the host (f32 var/norm as
//            the f32 tape computes them: dt·exp(log σ²), ½·ln(2π·var)), so the shader needs no log.
//            std sits in a storage buffer, not the params, so one recorded plan serves every
//            iteration while the exploration std decays.
// Bindings (group 0; each entry point uses the subset listed):
//   0  params : uniform EmStepParams          all
//   1  o      : storage, read       [B, 2D]   all (policy output; columns 0..D are the drift u)
//   2  x      : storage, read       [B, D]    all
//   3  xi     : storage, read       [B, D]    em_step (standard normals, uploaded by the host)
//   4  x_next : storage, read_write [B, D]    em_step
//   5  log_pf : storage, read_write [B]       em_step
//   6  log_pb : storage, read_write [B]       em_step
//   7  xn_in  : storage, read       [B, D]    em_logpf_backward (the step's x')
//   8  g      : storage, read       [B]       em_logpf_backward (∂L/∂log p_F)
//   9  du     : storage, read_write [B, 2D]   em_logpf_backward
//  10  step_std : storage, read     [1]       em_step
// Workgroup: 64 threads, one ROW each (the per-row sums run over j in the CPU's order); the grid
//            is 2-D (x ≤ 65535 workgroups); row = gid.x + gid.y·(num_workgroups.x·64) < rows.
// Prelude:   math.wgsl (em_coordinate, em_logpf_du).
// Matches:   src/samplers/rollout.rs (x' = x + u·dt + std·ξ, f32, same order), src/autodiff/ops.rs
//            em_logpf and its VJP (learned_range = None; same f32 operation order), and
//            src/samplers/bridge.rs log_pb_step (f64 on the CPU; f32 here → toleranced).
// Tested by: tests/gpu_sampler_parity.rs em_step_* / em_logpf_backward_* (x' bitwise where the
//            device does not contract x + u·dt + std·ξ; log p_F / du within GPU_LOGPF / GPU_DU).

struct EmStepParams {
    rows: u32,
    dim: u32,
    // Row stride of o and du (2·dim).
    o_cols: u32,
    // 1 when step i > 0 (log p_B is computed), 0 for i = 0 (log p_B = 0).
    with_pb: u32,
    dt: f32,
    var_f: f32,
    norm_f: f32,
    ratio_b: f32,
    var_b: f32,
    norm_b: f32,
    // 1: add this step's terms to log_pf / log_pb; 0: overwrite.
    accumulate: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: EmStepParams;
@group(0) @binding(1) var<storage, read> o: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> xi: array<f32>;
@group(0) @binding(4) var<storage, read_write> x_next: array<f32>;
@group(0) @binding(5) var<storage, read_write> log_pf: array<f32>;
@group(0) @binding(6) var<storage, read_write> log_pb: array<f32>;
@group(0) @binding(7) var<storage, read> xn_in: array<f32>;
@group(0) @binding(8) var<storage, read> g: array<f32>;
@group(0) @binding(9) var<storage, read_write> du: array<f32>;
@group(0) @binding(10) var<storage, read> step_std: array<f32>;

const WG: u32 = 64u;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * (nwg.x * WG);
}

@compute @workgroup_size(64)
fn em_step(@builtin(global_invocation_id) gid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = flat_index(gid, nwg);
    if (b >= params.rows) {
        return;
    }
    let d = params.dim;
    let dt = params.dt;
    let sd = step_std[0];
    var acc_f = 0.0;
    var acc_b = 0.0;
    for (var j = 0u; j < d; j = j + 1u) {
        let k = b * d + j;
        let e = em_coordinate(x[k], o[b * params.o_cols + j], xi[k], sd, dt, params.var_f,
                              params.norm_f, params.ratio_b, params.var_b, params.norm_b);
        x_next[k] = e.x;
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

@compute @workgroup_size(64)
fn em_logpf_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = flat_index(gid, nwg);
    if (b >= params.rows) {
        return;
    }
    let d = params.dim;
    let dt = params.dt;
    let gb = g[b];
    for (var j = 0u; j < d; j = j + 1u) {
        let k = b * d + j;
        du[b * params.o_cols + j] = em_logpf_du(gb, x[k], xn_in[k], o[b * params.o_cols + j], dt,
                                                params.var_f);
    }
    for (var j = d; j < params.o_cols; j = j + 1u) {
        du[b * params.o_cols + j] = 0.0;
    }
}
