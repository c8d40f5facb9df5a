// losses.wgsl — trajectory balance (learned log Z) and VarGrad (batch log Z) with their gradients.
//
// Purpose:   B per-trajectory sums LF_b = Σ log p_F, LB_b = Σ log p_B and log R(x_T) = lr_b →
//              TB      (method 0): δ_b = log Z + LF_b − LB_b − lr_b,  L = (1/B) Σ_b ½ δ_b²,
//                                  ∂L/∂LF_b = δ_b / B,  ∂L/∂log Z = (Σ_b δ_b) / B;
//              VarGrad (method 1): ζ_b = LF_b − LB_b − lr_b, ζ̄ = (Σ_b ζ_b) / B,
//                                  L = (1/B) Σ_b ½ (ζ_b − ζ̄)²,  ∂L/∂LF_b = (ζ_b − ζ̄) / B,
//                                  ∂L/∂log Z = 0 (no learned log Z; log_z is not read).
//            stats = [L, log Z (the learned one for TB, −ζ̄ for VarGrad), number of non-finite
//            values among LF, LB, lr (as f32, exact below 2^24), 0]. Non-finite inputs are counted
//            on the bits, so the count is right even on a driver that assumes finite math.
// Bindings (group 0):
//   0  params   : uniform LossParams
//   1  log_pf   : storage, read       [B]
//   2  log_pb   : storage, read       [B]
//   3  log_r    : storage, read       [B]
//   4  log_z    : storage, read       [1]     the learned log Z parameter (TB only)
//   5  d_log_pf : storage, read_write [B]     overwritten
//   6  d_log_z  : storage, read_write [1]     overwritten (0 for VarGrad)
//   7  stats    : storage, read_write [4]     overwritten
// Workgroup: ONE workgroup of 256 threads (dispatch (1, 1, 1)); any B ≥ 1.
// Order (TPB = 256; e_b = δ_b for TB, ζ_b for VarGrad, each evaluated left to right as written
//       above; identical every run on every device — no atomics, no subgroup operations):
//   pass 1, thread t: s_t = ((0 + e_t) + e_{t+256}) + e_{t+512} + …   (b ascending, b < B)
//           tree:     for h in 128, 64, …, 1: s_t = s_t + s_{t+h} for t < h   → S1 = s_0
//           center c = 0 (TB) or ζ̄ = S1 / B (VarGrad)
//   pass 2, thread t: r_b = e_b − c (e_b recomputed from the inputs: the same value);
//           d_log_pf[b] = r_b / B;  q_t = ((0 + ½·r_t·r_t) + ½·r_{t+256}·r_{t+256}) + …
//           the same tree → S2;  L = S2 / B;  ∂L/∂log Z = S1 / B (TB)
//   (½·r·r is (0.5·r)·r, the CPU's operation order.) The error of this order is at most
//   (⌈B/256⌉ + 9)·u·Σ|terms| per sum, u = 2^-24.
// Matches:   src/losses/tb.rs trajectory_balance / vargrad (f64 there, f32 here) within the named
//            tolerance GPU_LOSS of tests/gpu_train_ops.rs; bitwise equal to itself run to run.
// Tested by: tests/gpu_train_ops.rs tb_loss, vargrad_loss, loss_is_reproducible.

struct LossParams {
    n: u32,      // B ≥ 1
    method: u32, // 0 = TB, 1 = VarGrad
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: LossParams;
@group(0) @binding(1) var<storage, read> log_pf: array<f32>;
@group(0) @binding(2) var<storage, read> log_pb: array<f32>;
@group(0) @binding(3) var<storage, read> log_r: array<f32>;
@group(0) @binding(4) var<storage, read> log_z: array<f32>;
@group(0) @binding(5) var<storage, read_write> d_log_pf: array<f32>;
@group(0) @binding(6) var<storage, read_write> d_log_z: array<f32>;
@group(0) @binding(7) var<storage, read_write> stats: array<f32>;

// 256 threads: a power of two (the tree halves it) that every WebGPU device supports.
const TPB: u32 = 256u;

var<workgroup> tree: array<f32, 256>;
var<workgroup> bad_tree: array<u32, 256>;

// Exponent bits all ones: ±∞ or NaN (an integer test, immune to finite-math assumptions).
fn non_finite(v: f32) -> u32 {
    return u32((bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u);
}

// Sums tree[0..256] into tree[0] by halving; every thread calls it (barriers are uniform).
fn tree_reduce(t: u32) {
    for (var h = TPB / 2u; h > 0u; h = h / 2u) {
        workgroupBarrier();
        if (t < h) {
            tree[t] = tree[t] + tree[t + h];
        }
    }
    workgroupBarrier();
}

// δ_b (TB, lz = log Z) or ζ_b (VarGrad, lz unused), left to right as on the CPU.
fn term(b: u32, tb: bool, lz: f32) -> f32 {
    if (tb) {
        return lz + log_pf[b] - log_pb[b] - log_r[b];
    }
    return log_pf[b] - log_pb[b] - log_r[b];
}

@compute @workgroup_size(256)
fn loss_grad(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    let n = params.n;
    let bf = f32(n);
    let tb = params.method == 0u;
    var lz = 0.0;
    if (tb) {
        lz = log_z[0];
    }

    // pass 1: S1 = Σ e_b, and the non-finite count
    var s = 0.0;
    var bad = 0u;
    for (var b = t; b < n; b += TPB) {
        bad += non_finite(log_pf[b]) + non_finite(log_pb[b]) + non_finite(log_r[b]);
        s = s + term(b, tb, lz);
    }
    tree[t] = s;
    bad_tree[t] = bad;
    tree_reduce(t);
    let s1 = tree[0];
    // (integer sum: any order gives the same count)
    for (var h = TPB / 2u; h > 0u; h = h / 2u) {
        if (t < h) {
            bad_tree[t] = bad_tree[t] + bad_tree[t + h];
        }
        workgroupBarrier();
    }
    let center = select(s1 / bf, 0.0, tb);

    // pass 2: residuals, gradients, S2 = Σ ½ r²
    var q = 0.0;
    for (var b = t; b < n; b += TPB) {
        let r = term(b, tb, lz) - center;
        d_log_pf[b] = r / bf;
        q = q + 0.5 * r * r;
    }
    workgroupBarrier(); // every thread has read tree[0] (S1) before it is overwritten
    tree[t] = q;
    tree_reduce(t);

    if (t == 0u) {
        stats[0] = tree[0] / bf;
        stats[1] = select(-center, lz, tb);
        stats[2] = f32(bad_tree[0]);
        stats[3] = 0.0;
        d_log_z[0] = select(0.0, s1 / bf, tb);
    }
}
