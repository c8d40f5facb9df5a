//! Elementary functions for the kernels: `erf`, `exp`, `sin`/`cos`.
//!
//! f64 (the reference precision) uses `libm::erf` and std `exp`/`sin`/`cos`. f32 uses the
//! polynomial approximations below, written as an explicit sequence of IEEE operations (`mul_add`
//! = one fused rounding, `+ − ×` = one rounding each, selects and sign-bit operations exact). The
//! AVX2 path in [`super::avx2`] performs *the same operations in the same order* lane by lane, so
//! the scalar f32 functions here and their 8-wide twins agree bitwise. That is why the scalar code
//! spells out min/max/convert with x86 SSE semantics ([`max_sse`], [`min_sse`], [`cvtt_sse`])
//! instead of calling `f32::max`, whose NaN and ±0 behaviour differs from `vmaxps`.
//!
//! Measured accuracy (tests/cpu_kernels.rs prints and bounds them):
//! - [`erf_f32`]: max |error| 6.1e-8 against `libm::erf` on a 24 M-point grid of [−6, 6] (about
//!   1 ulp of values near 1; the tests bound it by 2e-7);
//! - [`exp_f32`]: max 1.01 ulp over the normal range [−87.3, 88.7] (bound: 2 ulp); subnormal
//!   results within 2 subnormal steps; exp(x ≤ −104) = 0, exp(x ≥ 88.73) = +∞, exp(NaN) = NaN;
//! - [`sin_cos_f32`]: max |error| 9.3e-8 for |x| ≤ 2000 (bound: 1e-6), from a Cody–Waite
//!   reduction by π/2 with a three-part constant; the error grows slowly with |x| beyond that and
//!   the reduction is meaningless past ~1e9.

use crate::real::Real;

/// The elementary functions the generic scalar references need, per precision: for `f32` the
/// in-crate approximations (bitwise equal to the SIMD path), for `f64` libm/std.
pub trait KernelMath: Real {
    /// Error function.
    fn kernel_erf(self) -> Self;
    /// e^self.
    fn kernel_exp(self) -> Self;
    /// (sin self, cos self) from one range reduction.
    fn kernel_sin_cos(self) -> (Self, Self);
}

impl KernelMath for f32 {
    #[inline(always)]
    fn kernel_erf(self) -> Self {
        erf_f32(self)
    }
    #[inline(always)]
    fn kernel_exp(self) -> Self {
        exp_f32(self)
    }
    #[inline(always)]
    fn kernel_sin_cos(self) -> (Self, Self) {
        sin_cos_f32(self)
    }
}

impl KernelMath for f64 {
    #[inline(always)]
    fn kernel_erf(self) -> Self {
        libm::erf(self)
    }
    #[inline(always)]
    fn kernel_exp(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn kernel_sin_cos(self) -> (Self, Self) {
        (self.sin(), self.cos())
    }
}

// ---------------------------------------------------------------------------------------------
// x86 SSE semantics, spelled out in scalar code so the portable path matches `vmaxps` & co.
// ---------------------------------------------------------------------------------------------

/// `vmaxps(a, b)`: `a` if `a > b`, else `b` (so a NaN in either operand yields `b`).
#[inline(always)]
pub fn max_sse(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// `vminps(a, b)`: `a` if `a < b`, else `b` (so a NaN in either operand yields `b`).
#[inline(always)]
pub fn min_sse(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}

/// `vcvttps2dq`: truncate to i32; out of range or NaN gives `i32::MIN` (Rust's `as` saturates
/// instead, hence this helper). Only ever called on integral values here.
#[inline(always)]
pub fn cvtt_sse(x: f32) -> i32 {
    if x.abs() < 2_147_483_648.0 {
        x as i32
    } else {
        i32::MIN
    }
}

/// `y | (x & sign)`: copysign for `y ≥ +0` (its sign bit is clear), exact, like `vandps`/`vorps`.
#[inline(always)]
fn or_sign(y: f32, x: f32) -> f32 {
    f32::from_bits(y.to_bits() | (x.to_bits() & 0x8000_0000))
}

// ---------------------------------------------------------------------------------------------
// exp
// ---------------------------------------------------------------------------------------------

/// Inputs are clamped to [EXP_LO, EXP_HI] first; beyond them the result is 0 / +∞ anyway.
pub(crate) const EXP_LO: f32 = -104.0;
pub(crate) const EXP_HI: f32 = 89.0;
/// log2(e) rounded to f32.
pub(crate) const LOG2E: f32 = f32::from_bits(0x3fb8_aa3b); // 1.44269502
/// ln 2 = LN2_HI + LN2_LO (+ 2^-53-ish), each rounded to f32 (Cody–Waite; with FMA the products
/// n·LN2_HI are exact inside the fused operation, so a 24-bit high part suffices).
pub(crate) const LN2_HI: f32 = f32::from_bits(0x3f31_7218); // 0.693147182
pub(crate) const LN2_LO: f32 = f32::from_bits(0xb102_e308); // -1.90465421e-9
/// Cephes `expf` minimax coefficients for (e^r − 1 − r)/r² on |r| ≤ ln2/2, highest degree first.
pub(crate) const EXP_P: [f32; 6] = [
    f32::from_bits(0x3950_6967), // 1.9875691500e-4
    f32::from_bits(0x3ab7_43ce), // 1.3981999507e-3
    f32::from_bits(0x3c08_8908), // 8.3334519073e-3
    f32::from_bits(0x3d2a_a9c1), // 4.1665795894e-2
    f32::from_bits(0x3e2a_aaaa), // 1.6666665459e-1
    f32::from_bits(0x3f00_0000), // 5.0000001201e-1 (rounds to 0.5)
];

/// e^x in f32. Order of operations (mirrored by `avx2::exp8`):
/// ```text
/// x  = min(HI, max(LO, x))                 clamp; NaN passes through
/// (n, y) = exp_reduce(x)                   y ≈ e^(x − n·ln2) ∈ [0.7, 1.42]
/// 2^n = 2^(n>>1) · 2^(n − (n>>1))          two exact powers of two (n ∈ [−150, 128]),
/// result = (y · 2^(n>>1)) · 2^(n−(n>>1))   so subnormal results round once and −104 → 0
/// ```
#[inline]
pub fn exp_f32(x: f32) -> f32 {
    let x = min_sse(EXP_HI, max_sse(EXP_LO, x));
    let (n, y) = exp_reduce(x);
    let ni = cvtt_sse(n);
    let n1 = ni >> 1;
    let n2 = ni.wrapping_sub(n1);
    let s1 = f32::from_bits((n1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((n2.wrapping_add(127) as u32) << 23);
    y * s1 * s2
}

/// e^x for x ∈ [−87, 0] only (used inside erf, whose argument is in [−18, 0]): no clamp and a
/// single scaling by 2^n (normal there). On that range it returns exactly `exp_f32(x)`: the clamp
/// is the identity and y·2^(n>>1)·2^(n−(n>>1)) = y·2^n with no rounding in either form.
#[inline(always)]
pub(crate) fn exp_f32_moderate(x: f32) -> f32 {
    let (n, y) = exp_reduce(x);
    y * f32::from_bits((cvtt_sse(n).wrapping_add(127) as u32) << 23)
}

/// The shared core of the exps (mirrored by `avx2::exp_reduce8`):
/// ```text
/// n  = round_ties_even(x · log2e)
/// r  = fma(−n, LN2_HI, x); r = fma(−n, LN2_LO, r)
/// p  = Horner(EXP_P, r) with fma;  y = fma(p, r·r, r) + 1
/// ```
#[inline(always)]
fn exp_reduce(x: f32) -> (f32, f32) {
    let n = (x * LOG2E).round_ties_even();
    let r = (-n).mul_add(LN2_HI, x);
    let r = (-n).mul_add(LN2_LO, r);
    let mut p = EXP_P[0];
    p = p.mul_add(r, EXP_P[1]);
    p = p.mul_add(r, EXP_P[2]);
    p = p.mul_add(r, EXP_P[3]);
    p = p.mul_add(r, EXP_P[4]);
    p = p.mul_add(r, EXP_P[5]);
    let z = r * r;
    (n, p.mul_add(z, r) + 1.0)
}

// ---------------------------------------------------------------------------------------------
// erf
// ---------------------------------------------------------------------------------------------

/// |x| above this uses erf = 1 − exp(−Q(|x|)), below it erf = x + x·P(x²).
pub(crate) const ERF_SPLIT: f32 = 0.921_875;
/// Above 4, erf(x) rounds to ±1 in f32; the large branch clamps |x| to this.
pub(crate) const ERF_CLAMP: f32 = 4.0;
/// Minimax coefficients of N. Juffa's faithfully rounded `erff` (also ARM optimized-routines
/// `erff_data.c`, MIT). Small branch: P(s) = A0 + A1·s + … + A5·s⁵, s = x².
pub(crate) const ERF_A: [f32; 6] = [
    f32::from_bits(0x3e03_75d3), //  1.28379151e-1 (= 2/√π − 1)
    f32::from_bits(0xbec0_9370), // -3.76124859e-1
    f32::from_bits(0x3de7_0d23), //  1.12818025e-1
    f32::from_bits(0xbcdb_45e9), // -2.67667342e-2
    f32::from_bits(0x3ba3_9fa4), //  4.99339588e-3
    f32::from_bits(0xba1d_0d41), // -5.99104969e-4
];
/// Large branch: Q(t) = t + t·(B0 + B1 t + … + B6 t⁶), evaluated with a small Estrin split.
pub(crate) const ERF_B: [f32; 7] = [
    f32::from_bits(0x3e03_ce86), //  1.28717512e-1
    f32::from_bits(0x3f22_8550), //  6.34846687e-1
    f32::from_bits(0x3dda_ae58), //  1.06777847e-1
    f32::from_bits(0xbcc6_b180), // -2.42545605e-2
    f32::from_bits(0x3b7e_899b), //  3.88393435e-3
    f32::from_bits(0xb9c8_e966), // -3.83208680e-4
    f32::from_bits(0x3791_1480), //  1.72948930e-5
];

/// Small-|x| branch of [`erf_f32`]: x + x·P(x²).
#[inline(always)]
pub(crate) fn erf_small(x: f32) -> f32 {
    let s = x * x;
    let mut r = ERF_A[5];
    r = r.mul_add(s, ERF_A[4]);
    r = r.mul_add(s, ERF_A[3]);
    r = r.mul_add(s, ERF_A[2]);
    r = r.mul_add(s, ERF_A[1]);
    r = r.mul_add(s, ERF_A[0]);
    r.mul_add(x, x)
}

/// Large-|x| branch of [`erf_f32`] for t = |x|: 1 − exp(−Q(min(t, 4))) (sign applied by caller).
#[inline(always)]
pub(crate) fn erf_large_abs(t: f32) -> f32 {
    let t = min_sse(t, ERF_CLAMP);
    let s = t * t;
    let r = ERF_B[6].mul_add(t, ERF_B[5]);
    let u = ERF_B[4].mul_add(t, ERF_B[3]);
    let mut r = r.mul_add(s, u);
    r = r.mul_add(t, ERF_B[2]);
    r = r.mul_add(t, ERF_B[1]);
    r = r.mul_add(t, ERF_B[0]);
    r = r.mul_add(t, t);
    // r = Q(t) ∈ [0, Q(4) ≈ 18], so the moderate-range exp applies (and equals exp_f32 here)
    1.0 - exp_f32_moderate(-r)
}

/// erf(x) in f32, max abs error 6.1e-8 (measured). `erf(±∞) = ±1`, `erf(NaN) = NaN`.
/// The AVX2 twin evaluates both branches and selects with `|x| > ERF_SPLIT`; the selected lane
/// went through exactly these operations.
#[inline]
pub fn erf_f32(x: f32) -> f32 {
    let t = x.abs();
    if t > ERF_SPLIT {
        // erf_large_abs ≥ 0 (1 − e^(−r) with r ≥ 0), so or-ing in the sign of x is copysign
        or_sign(erf_large_abs(t), x)
    } else {
        erf_small(x)
    }
}

// ---------------------------------------------------------------------------------------------
// sin / cos
// ---------------------------------------------------------------------------------------------

/// 2/π rounded to f32.
pub(crate) const FRAC_2_PI: f32 = f32::from_bits(0x3f22_f983); // 0.636619747
/// π/2 = PIO2_1 + PIO2_2 + PIO2_3 + O(2^-75) (three f32 parts; each fma is exact in its product).
pub(crate) const PIO2_1: f32 = f32::from_bits(0x3fc9_0fdb); // 1.57079637
pub(crate) const PIO2_2: f32 = f32::from_bits(0xb33b_bd2e); // -4.37113883e-8
pub(crate) const PIO2_3: f32 = f32::from_bits(0xa6f7_2ced); // -1.71512451e-15
/// Cephes `sinf` on |r| ≤ π/4, z = r²: sin r ≈ r + r·z·(S0 z² + S1 z + S2), highest degree
/// first.
pub(crate) const SIN_P: [f32; 3] = [
    f32::from_bits(0xb94c_a1f9), // -1.9515295891e-4
    f32::from_bits(0x3c08_839e), //  8.3321608736e-3
    f32::from_bits(0xbe2a_aaa3), // -1.6666654611e-1
];
/// Cephes `cosf` on |r| ≤ π/4: cos r ≈ 1 − z/2 + z²·(C0 z² + C1 z + C2), highest degree first.
pub(crate) const COS_P: [f32; 3] = [
    f32::from_bits(0x37cc_f5ce), //  2.443315711809948e-5
    f32::from_bits(0xbab6_061a), // -1.388731625493765e-3
    f32::from_bits(0x3d2a_aaa5), //  4.166664568298827e-2
];

/// (sin x, cos x) in f32. Order of operations (mirrored by `avx2::sin_cos8`):
/// ```text
/// q = round_ties_even(x · 2/π)
/// r = fma(−q, PIO2_1, x); r = fma(−q, PIO2_2, r); r = fma(−q, PIO2_3, r)   r ∈ ≈[−π/4, π/4]
/// z = r·r
/// s = fma(Horner(SIN_P, z)·z, r, r)
/// c = fma(Horner(COS_P, z)·z, z, fma(−0.5, z, 1))
/// quadrant j = q mod 4: j odd swaps (s, c); sin negated when bit 1 of j, cos when bit 1 of j+1
/// ```
#[inline]
pub fn sin_cos_f32(x: f32) -> (f32, f32) {
    let q = (x * FRAC_2_PI).round_ties_even();
    let r = (-q).mul_add(PIO2_1, x);
    let r = (-q).mul_add(PIO2_2, r);
    let r = (-q).mul_add(PIO2_3, r);
    let z = r * r;
    let ps = SIN_P[0].mul_add(z, SIN_P[1]).mul_add(z, SIN_P[2]);
    let s = (ps * z).mul_add(r, r);
    let pc = COS_P[0].mul_add(z, COS_P[1]).mul_add(z, COS_P[2]);
    let c = (pc * z).mul_add(z, (-0.5f32).mul_add(z, 1.0));
    let j = cvtt_sse(q);
    let (s, c) = if j & 1 != 0 { (c, s) } else { (s, c) };
    let sin_sign = ((j & 2) as u32) << 30;
    let cos_sign = ((j.wrapping_add(1) & 2) as u32) << 30;
    (
        f32::from_bits(s.to_bits() ^ sin_sign),
        f32::from_bits(c.to_bits() ^ cos_sign),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_values() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-1e4), 0.0);
        assert_eq!(exp_f32(1e4), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(erf_f32(0.0), 0.0);
        assert_eq!(erf_f32(1e4), 1.0);
        assert_eq!(erf_f32(-1e4), -1.0);
        assert_eq!(erf_f32(f32::INFINITY), 1.0);
        assert!(erf_f32(f32::NAN).is_nan());
        assert_eq!(sin_cos_f32(0.0), (0.0, 1.0));
    }

    #[test]
    fn quadrants() {
        for i in -40..40 {
            let x = i as f32 * 0.37;
            let (s, c) = sin_cos_f32(x);
            let xd = x as f64;
            assert!((s as f64 - xd.sin()).abs() < 2e-7, "sin({x})");
            assert!((c as f64 - xd.cos()).abs() < 2e-7, "cos({x})");
        }
    }
}
