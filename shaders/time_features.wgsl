// time_features.wgsl — Fourier time features of the drift net's time embedding and their phase
// gradient.
//
// Purpose:   time_features: out[i, k] = sin(a_ik), out[i, F + k] = cos(a_ik),
//            a_ik = fma(t[i], f[k], φ[k]).
//            time_features_backward (ACCUMULATES): dphase[k] += Σ_i dout[i,k]·cos a_ik
//            − dout[i,F+k]·sin a_ik, i ascending, two fmas per i in the CPU's order.
// Shapes:    t [T] (T may be B·T flattened rows), freqs [F], phase [F], out [T, 2F].
// Prelude:   math.wgsl (sin_cos_f32).
// Bindings (group 0):
//   0  params : uniform TimeFeaturesParams
//   1  t      : storage, read       [T]
//   2  freqs  : storage, read       [F]
//   3  phase  : storage, read       [F]
//   4  out    : storage, read_write [T, 2F]     time_features
//   5  dout   : storage, read       [T, 2F]     time_features_backward
//   6  dphase : storage, read_write [F]         time_features_backward
// Workgroup: 64 threads. time_features: one (i, k) pair each (it writes the sine and the
//            cosine); flat index i·F + k over a 2-D grid (x ≤ 65535 workgroups), bounds-checked
//            against T·F. time_features_backward: one k each (the sum over i is sequential).
// Matches:   src/cpu/time_features.rs time_features_ref / time_features_backward_ref (f32): the
//            same fma argument and the same sin_cos_f32 operation sequence.
// Tested by: tests/cpu_vs_gpu.rs time_features_* (tolerance GPU_TIME_FEATURES; bitwise where the
//            device's fma is fused).

struct TimeFeaturesParams {
    t_len: u32, // T
    f: u32,     // F
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: TimeFeaturesParams;
@group(0) @binding(1) var<storage, read> t: array<f32>;
@group(0) @binding(2) var<storage, read> freqs: array<f32>;
@group(0) @binding(3) var<storage, read> phase: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> dout: array<f32>;
@group(0) @binding(6) var<storage, read_write> dphase: array<f32>;

const WG: u32 = 64u;

@compute @workgroup_size(64)
fn time_features(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * (nwg.x * WG);
    let f = params.f;
    if (f == 0u || idx >= params.t_len * f) {
        return;
    }
    let i = idx / f;
    let k = idx % f;
    let sc = sin_cos_f32(fma(t[i], freqs[k], phase[k]));
    let row = i * 2u * f;
    out[row + k] = sc.x;
    out[row + f + k] = sc.y;
}

@compute @workgroup_size(64)
fn time_features_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = gid.x + gid.y * (nwg.x * WG);
    let f = params.f;
    if (k >= f) {
        return;
    }
    var acc = dphase[k];
    for (var i = 0u; i < params.t_len; i = i + 1u) {
        let sc = sin_cos_f32(fma(t[i], freqs[k], phase[k]));
        let row = i * 2u * f;
        acc = fma(dout[row + k], sc.y, acc);
        acc = fma(-dout[row + f + k], sc.x, acc);
    }
    dphase[k] = acc;
}
