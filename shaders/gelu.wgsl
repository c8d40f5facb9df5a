// gelu.wgsl — exact-erf GELU, its backward, and the fused forward+derivative, elementwise.
//
// Purpose:   y = GELU(x) = ½·x·(1 + erf(x/√2)); dx = dy·GELU'(x), GELU'(x) = Φ(x) + x·φ(x).
// Prelude:   math.wgsl (gelu_f32, gelu_slope_f32).
// Bindings (group 0; each entry point uses the subset listed):
//   0  params : uniform GeluParams              all
//   1  x      : storage, read       [N]         all
//   2  dy     : storage, read       [N]         gelu_backward
//   3  y      : storage, read_write [N]         gelu_forward, gelu_forward_deriv
//   4  dx     : storage, read_write [N]         gelu_backward
//   5  g      : storage, read_write [N]         gelu_forward_deriv (GELU'(x))
// Workgroup: 64 threads, one element each; the grid is 2-D (x ≤ 65535 workgroups) so N may exceed
//            65535·64; index = gid.x + gid.y·(num_workgroups.x·64), bounds-checked against N.
// Matches:   src/cpu/gelu.rs gelu_forward_ref / gelu_backward_ref / gelu_forward_deriv_ref (f32),
//            the same operations in the same order per element.
// Tested by: tests/cpu_vs_gpu.rs gelu_* (tolerance GPU_GELU; bitwise where the device's fma is
//            fused and subnormals are kept).

struct GeluParams {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: GeluParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> g: array<f32>;


// 64 = a multiple of every common SIMD/warp width (8 lanes on lavapipe's AVX2, 32/64 on GPUs).
const WG: u32 = 64u;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * (nwg.x * WG);
}

// y = fma(h, e, h), h = 0.5·x, e = erf(x·(1/√2)).
@compute @workgroup_size(64)
fn gelu_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= params.n) {
        return;
    }
    y[i] = gelu_f32(x[i]);
}

// dx = dy · fma(x, pdf, cdf), cdf = fma(e, 0.5, 0.5), pdf = exp((−0.5·x)·x)·(1/√(2π)).
@compute @workgroup_size(64)
fn gelu_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= params.n) {
        return;
    }
    dx[i] = dy[i] * gelu_slope_f32(x[i]);
}

// y = GELU(x) and g = GELU'(x) from one erf and one exp.
@compute @workgroup_size(64)
fn gelu_forward_deriv(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= params.n) {
        return;
    }
    let xi = x[i];
    let e = erf_f32(xi * FRAC_1_SQRT_2);
    let h = 0.5 * xi;
    y[i] = fma(h, e, h);
    let cdf = fma(e, 0.5, 0.5);
    let pdf = exp_f32((-0.5 * xi) * xi) * FRAC_1_SQRT_2PI;
    g[i] = fma(xi, pdf, cdf);
}
