// time_features.wgsl — Fourier time features of the drift net's time embedding (forward).
//
// Purpose:   out[i, k] = sin(a_ik), out[i, F + k] = cos(a_ik), a_ik = fma(t[i], f[k], φ[k]).
// Shapes:    t [T] (T may be B·T flattened rows), freqs [F], phase [F], out [T, 2F].
// Prelude:   math.wgsl (sin_cos_f32).
// Bindings (group 0):
//   0  params : uniform TimeFeaturesParams
//   1  t      : storage, read       [T]
//   2  freqs  : storage, read       [F]
//   3  phase  : storage, read       [F]
//   4  out    : storage, read_write [T, 2F]
// Workgroup: 64 threads, one (i, k) pair each (it writes the sine and the cosine); flat index
//            i·F + k over a 2-D grid (x ≤ 65535 workgroups), bounds-checked against T·F.
// Matches:   src/cpu/time_features.rs time_features_ref (f32): the same fma argument and the same
//            sin_cos_f32 operation sequence.
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
