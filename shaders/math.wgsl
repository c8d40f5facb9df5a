// math.wgsl — f32 elementary functions shared by the kernels: exp, erf, sin/cos, the scalar
// GELU / clip of the drift network, and one coordinate of the Euler–Maruyama step.
//
// Purpose:   the SAME operation sequence as src/cpu/math.rs (`exp_f32`, `exp_f32_moderate`,
//            `erf_f32`, `sin_cos_f32`), constant for constant and fma for fma, so a kernel built on
//            these functions can equal its CPU reference bit for bit when the device computes
//            WGSL `fma` as a fused multiply-add with round-to-nearest and keeps subnormals.
// Bindings:  none (a prelude: no entry points, no resources).
// Prelude:   src/gpu/shaders.rs prepends this file to every shader whose header has a line
//            "Prelude: math.wgsl" (WGSL has no #include); tests/shaders.rs validates the
//            concatenation, exactly as shipped.
// Matches:   src/cpu/math.rs (erf_f32, exp_f32, exp_f32_moderate, sin_cos_f32); every f32
//            constant is a hexadecimal float literal (exact: no decimal rounding in the WGSL
//            front end) followed by its bit pattern as in math.rs; tests/shaders.rs checks that
//            naga reads each literal as exactly those bits.
// Tested by: tests/cpu_vs_gpu.rs through the kernels that use it (gelu, time_features), and
//            tests/gpu_train_ops.rs (clip), tests/gpu_training.rs (policy_step).
//
// x86 SSE semantics are spelled out where the CPU code does (max_sse/min_sse/cvtt_sse): WGSL's
// min/max leave NaN handling to the implementation, `select` on a comparison does not.

// `vmaxps(a, b)`: a if a > b, else b (a NaN in either operand yields b).
fn max_sse(a: f32, b: f32) -> f32 {
    return select(b, a, a > b);
}

// `vminps(a, b)`: a if a < b, else b (a NaN in either operand yields b).
fn min_sse(a: f32, b: f32) -> f32 {
    return select(b, a, a < b);
}

// `vcvttps2dq`: truncate to i32; out of range or NaN gives i32::MIN. Only called on integral values.
fn cvtt_sse(x: f32) -> i32 {
    return select(i32(-2147483647) - 1, i32(x), abs(x) < 2147483648.0);
}

// y | (x & sign): copysign for y >= +0, exact.
fn or_sign(y: f32, x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(y) | (bitcast<u32>(x) & 0x80000000u));
}

// 2^e as an f32 for a normal exponent e in [-126, 127] (exact).
fn pow2i(e: i32) -> f32 {
    return bitcast<f32>(u32(e + 127) << 23u);
}

// ---------------------------------------------------------------------------------------------
// exp (src/cpu/math.rs: EXP_LO/HI, LOG2E, LN2_HI/LO, EXP_P, exp_reduce, exp_f32)
// ---------------------------------------------------------------------------------------------

const EXP_LO: f32 = -104.0;
const EXP_HI: f32 = 89.0;
const LOG2E: f32 = 0x1.715476p+0f; // 0x3fb8aa3b = 1.44269502
const LN2_HI: f32 = 0x1.62e430p-1f; // 0x3f317218 = 0.693147182
const LN2_LO: f32 = -0x1.05c610p-29f; // 0xb102e308 = -1.90465421e-9
const EXP_P0: f32 = 0x1.a0d2cep-13f; // 0x39506967 = 1.9875691500e-4
const EXP_P1: f32 = 0x1.6e879cp-10f; // 0x3ab743ce = 1.3981999507e-3
const EXP_P2: f32 = 0x1.111210p-7f; // 0x3c088908 = 8.3334519073e-3
const EXP_P3: f32 = 0x1.555382p-5f; // 0x3d2aa9c1 = 4.1665795894e-2
const EXP_P4: f32 = 0x1.555554p-3f; // 0x3e2aaaaa = 1.6666665459e-1
const EXP_P5: f32 = 0x1.000000p-1f; // 0x3f000000 = 0.5

// (n, y) with y ≈ e^(x − n·ln2): n = round_ties_even(x·log2e), Cody–Waite r, Horner with fma,
// y = fma(p, r·r, r) + 1. Returned as vec2(n, y).
fn exp_reduce(x: f32) -> vec2<f32> {
    let n = round(x * LOG2E); // WGSL round = round half to even
    var r = fma(-n, LN2_HI, x);
    r = fma(-n, LN2_LO, r);
    var p = EXP_P0;
    p = fma(p, r, EXP_P1);
    p = fma(p, r, EXP_P2);
    p = fma(p, r, EXP_P3);
    p = fma(p, r, EXP_P4);
    p = fma(p, r, EXP_P5);
    let z = r * r;
    return vec2<f32>(n, fma(p, z, r) + 1.0);
}

// e^x: clamp to [EXP_LO, EXP_HI] (NaN passes), then y·2^(n>>1)·2^(n−(n>>1)), left to right.
fn exp_f32(x_in: f32) -> f32 {
    let x = min_sse(EXP_HI, max_sse(EXP_LO, x_in));
    let ny = exp_reduce(x);
    let ni = cvtt_sse(ny.x);
    let n1 = ni >> 1u;
    let n2 = ni - n1;
    let s1 = bitcast<f32>(u32(n1 + 127) << 23u);
    let s2 = bitcast<f32>(u32(n2 + 127) << 23u);
    return ny.y * s1 * s2;
}

// e^x for x in [−87, 0] only (inside erf): no clamp, one scaling by 2^n. Equals exp_f32 there.
fn exp_f32_moderate(x: f32) -> f32 {
    let ny = exp_reduce(x);
    return ny.y * pow2i(cvtt_sse(ny.x));
}

// ---------------------------------------------------------------------------------------------
// erf (src/cpu/math.rs: ERF_SPLIT, ERF_CLAMP, ERF_A, ERF_B, erf_small, erf_large_abs, erf_f32)
// ---------------------------------------------------------------------------------------------

const ERF_SPLIT: f32 = 0.921875;
const ERF_CLAMP: f32 = 4.0;
const ERF_A0: f32 = 0x1.06eba6p-3f; // 0x3e0375d3 = 1.28379151e-1
const ERF_A1: f32 = -0x1.8126e0p-2f; // 0xbec09370 = -3.76124859e-1
const ERF_A2: f32 = 0x1.ce1a46p-4f; // 0x3de70d23 = 1.12818025e-1
const ERF_A3: f32 = -0x1.b68bd2p-6f; // 0xbcdb45e9 = -2.67667342e-2
const ERF_A4: f32 = 0x1.473f48p-8f; // 0x3ba39fa4 = 4.99339588e-3
const ERF_A5: f32 = -0x1.3a1a82p-11f; // 0xba1d0d41 = -5.99104969e-4
const ERF_B0: f32 = 0x1.079d0cp-3f; // 0x3e03ce86 = 1.28717512e-1
const ERF_B1: f32 = 0x1.450aa0p-1f; // 0x3f228550 = 6.34846687e-1
const ERF_B2: f32 = 0x1.b55cb0p-4f; // 0x3ddaae58 = 1.06777847e-1
const ERF_B3: f32 = -0x1.8d6300p-6f; // 0xbcc6b180 = -2.42545605e-2
const ERF_B4: f32 = 0x1.fd1336p-9f; // 0x3b7e899b = 3.88393435e-3
const ERF_B5: f32 = -0x1.91d2ccp-12f; // 0xb9c8e966 = -3.83208680e-4
const ERF_B6: f32 = 0x1.222900p-16f; // 0x37911480 = 1.72948930e-5

// |x| <= ERF_SPLIT: x + x·P(x²).
fn erf_small(x: f32) -> f32 {
    let s = x * x;
    var r = ERF_A5;
    r = fma(r, s, ERF_A4);
    r = fma(r, s, ERF_A3);
    r = fma(r, s, ERF_A2);
    r = fma(r, s, ERF_A1);
    r = fma(r, s, ERF_A0);
    return fma(r, x, x);
}

// t = |x| > ERF_SPLIT: 1 − exp(−Q(min(t, 4))), Q by the small Estrin split of the CPU code.
fn erf_large_abs(t_in: f32) -> f32 {
    let t = min_sse(t_in, ERF_CLAMP);
    let s = t * t;
    let r0 = fma(ERF_B6, t, ERF_B5);
    let u = fma(ERF_B4, t, ERF_B3);
    var r = fma(r0, s, u);
    r = fma(r, t, ERF_B2);
    r = fma(r, t, ERF_B1);
    r = fma(r, t, ERF_B0);
    r = fma(r, t, t);
    return 1.0 - exp_f32_moderate(-r);
}

// erf(x): both branches evaluated, the one for |x| selected (as the AVX2 twin does).
fn erf_f32(x: f32) -> f32 {
    let t = abs(x);
    let large = or_sign(erf_large_abs(t), x);
    return select(erf_small(x), large, t > ERF_SPLIT);
}

// ---------------------------------------------------------------------------------------------
// sin / cos (src/cpu/math.rs: FRAC_2_PI, PIO2_1..3, SIN_P, COS_P, sin_cos_f32)
// ---------------------------------------------------------------------------------------------

const FRAC_2_PI: f32 = 0x1.45f306p-1f; // 0x3f22f983 = 0.636619747
const PIO2_1: f32 = 0x1.921fb6p+0f; // 0x3fc90fdb = 1.57079637
const PIO2_2: f32 = -0x1.777a5cp-25f; // 0xb33bbd2e = -4.37113883e-8
const PIO2_3: f32 = -0x1.ee59dap-50f; // 0xa6f72ced = -1.71512451e-15
const SIN_P0: f32 = -0x1.9943f2p-13f; // 0xb94ca1f9 = -1.9515295891e-4
const SIN_P1: f32 = 0x1.11073cp-7f; // 0x3c08839e = 8.3321608736e-3
const SIN_P2: f32 = -0x1.555546p-3f; // 0xbe2aaaa3 = -1.6666654611e-1
const COS_P0: f32 = 0x1.99eb9cp-16f; // 0x37ccf5ce = 2.443315711809948e-5
const COS_P1: f32 = -0x1.6c0c34p-10f; // 0xbab6061a = -1.388731625493765e-3
const COS_P2: f32 = 0x1.55554ap-5f; // 0x3d2aaaa5 = 4.166664568298827e-2

// vec2(sin x, cos x) from one Cody–Waite reduction by π/2 and quadrant fix-up.
fn sin_cos_f32(x: f32) -> vec2<f32> {
    let q = round(x * FRAC_2_PI);
    var r = fma(-q, PIO2_1, x);
    r = fma(-q, PIO2_2, r);
    r = fma(-q, PIO2_3, r);
    let z = r * r;
    let ps = fma(fma(SIN_P0, z, SIN_P1), z, SIN_P2);
    let s0 = fma(ps * z, r, r);
    let pc = fma(fma(COS_P0, z, COS_P1), z, COS_P2);
    let c0 = fma(pc * z, z, fma(-0.5, z, 1.0));
    let j = cvtt_sse(q);
    let odd = (j & 1) != 0;
    let s = select(s0, c0, odd);
    let c = select(c0, s0, odd);
    let sin_sign = u32(j & 2) << 30u;
    let cos_sign = u32((j + 1) & 2) << 30u;
    return vec2<f32>(bitcast<f32>(bitcast<u32>(s) ^ sin_sign), bitcast<f32>(bitcast<u32>(c) ^ cos_sign));
}

// ---------------------------------------------------------------------------------------------
// GELU and clip (src/cpu/gelu.rs gelu_forward_deriv_ref; src/autodiff/ops.rs Tape::clip / Op::Clip)
// ---------------------------------------------------------------------------------------------

const FRAC_1_SQRT_2: f32 = 0x1.6a09e6p-1f; // 0x3f3504f3 = 1/√2 rounded to f32
const FRAC_1_SQRT_2PI: f32 = 0x1.988454p-2f; // 0x3ecc422a = 1/√(2π) rounded to f32

// GELU(x) = fma(h, e, h), h = 0.5·x, e = erf(x·(1/√2)).
fn gelu_f32(x: f32) -> f32 {
    let e = erf_f32(x * FRAC_1_SQRT_2);
    let h = 0.5 * x;
    return fma(h, e, h);
}

// GELU'(x) = fma(x, pdf, cdf), cdf = fma(e, 0.5, 0.5), pdf = exp((−0.5·x)·x)·(1/√(2π)).
fn gelu_slope_f32(x: f32) -> f32 {
    let e = erf_f32(x * FRAC_1_SQRT_2);
    let cdf = fma(e, 0.5, 0.5);
    let pdf = exp_f32((-0.5 * x) * x) * FRAC_1_SQRT_2PI;
    return fma(x, pdf, cdf);
}

// NaN from the bit pattern (a driver assuming finite math cannot fold it away).
fn is_nan_f32(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// Rust's x.max(−c).min(c): −c for x < −c or NaN, c for x > c.
fn clip_f32(x: f32, c: f32) -> f32 {
    let lo = select(x, -c, is_nan_f32(x) || x < -c);
    return select(lo, c, lo > c);
}

// Whether the clip passes the gradient: −c ≤ x ≤ c (NaN: no).
fn clip_passes_f32(x: f32, c: f32) -> bool {
    return !is_nan_f32(x) && x >= -c && x <= c;
}

// ---------------------------------------------------------------------------------------------
// Euler–Maruyama step, one coordinate (src/samplers/rollout.rs; src/autodiff/ops.rs em_logpf and
// its VJP, fixed variance; src/samplers/bridge.rs log_pb_step)
// ---------------------------------------------------------------------------------------------

// vec3(x', the log p_F term, the log p_B term) of x' = (x + u·dt) + sd·ξ:
//   r = (x' − x) − u·dt, term_F = ((−½·r)·r)/var_f − norm_f;
//   s = x − ρ·x',        term_B = ((−½·s)·s)/var_b + norm_b.
fn em_coordinate(x: f32, u: f32, xi: f32, sd: f32, dt: f32, var_f: f32, norm_f: f32,
                 ratio_b: f32, var_b: f32, norm_b: f32) -> vec3<f32> {
    let xn = (x + u * dt) + sd * xi;
    let r = (xn - x) - u * dt;
    let s = x - ratio_b * xn;
    return vec3<f32>(xn, (((-0.5 * r) * r) / var_f) - norm_f, (((-0.5 * s) * s) / var_b) + norm_b);
}

// ∂(g·log p_F)/∂u of one coordinate: ((g·r)·dt)/var_f, r = (x' − x) − u·dt.
fn em_logpf_du(g: f32, x: f32, xn: f32, u: f32, dt: f32, var_f: f32) -> f32 {
    let r = (xn - x) - u * dt;
    return ((g * r) * dt) / var_f;
}
