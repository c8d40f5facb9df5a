// clip.wgsl — elementwise clip to [−c, c] and its VJP.
//
// Purpose:   clip_forward:  y = clamp(x, −c, c), NaN ↦ −c;
//            clip_backward: dx = dy where −c ≤ x ≤ c, else +0 (NaN x ↦ +0).
// Bindings (group 0; each entry point uses the subset listed):
//   0  params : uniform ClipParams              all
//   1  x      : storage, read       [N]         all (the forward's input)
//   2  dy     : storage, read       [N]         clip_backward
//   3  y      : storage, read_write [N]         clip_forward
//   4  dx     : storage, read_write [N]         clip_backward (overwritten)
// Workgroup: 64 threads, one element each; the grid is 2-D (x ≤ 65535 workgroups) so N may exceed
//            65535·64; index = gid.x + gid.y·(num_workgroups.x·64), bounds-checked against N.
// NaN:       the CPU forward is `x.max(−c).min(c)`; Rust's f32::max returns the non-NaN operand,
//            so NaN ↦ −c. WGSL's min/max/clamp leave NaN unspecified and a driver may assume no
//            NaN in float comparisons, so NaN is detected on the bits (exponent all ones, mantissa
//            ≠ 0) and every result is chosen with `select` — no arithmetic, so bitwise on any device.
// Prelude:   math.wgsl (clip_f32, clip_passes_f32).
// Matches:   src/autodiff/ops.rs Tape::clip (forward) and the Op::Clip VJP
//            (`if !(v >= −c && v <= c) { d = 0 }`), bitwise.
// Tested by: tests/gpu_train_ops.rs clip_forward, clip_backward (bitwise, NaN and ±∞ included).

struct ClipParams {
    n: u32,
    limit: f32, // c > 0
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: ClipParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

// 64 = a multiple of every common SIMD/warp width (8 lanes on lavapipe's AVX2, 32/64 on GPUs).
const WG: u32 = 64u;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * (nwg.x * WG);
}


@compute @workgroup_size(64)
fn clip_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= params.n) {
        return;
    }
    y[i] = clip_f32(x[i], params.limit);
}

@compute @workgroup_size(64)
fn clip_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= params.n) {
        return;
    }
    dx[i] = select(0.0, dy[i], clip_passes_f32(x[i], params.limit));
}
