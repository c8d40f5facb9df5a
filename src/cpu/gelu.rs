//! GELU, exact-erf form: GELU(x) = x·Φ(x) = ½·x·(1 + erf(x/√2)) (not the tanh approximation),
//! and its derivative GELU'(x) = Φ(x) + x·φ(x), φ the standard normal pdf.
//!
//! Elementwise over any shape (in the drift net: [B, H]). The constants are defined once in f64
//! and rounded to the working precision (`S::from_f64`), so the f32 scalar and AVX2 paths use the
//! same bits.

use super::math::KernelMath;

/// 1/√2.
pub(crate) const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
/// 1/√(2π), the normal pdf at 0.
pub(crate) const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// y = GELU(x). Order per element:
/// ```text
/// e = erf(x · (1/√2));  h = 0.5 · x;  y = fma(h, e, h)        (= ½x(1 + e), one rounding)
/// ```
/// GELU(±1e4) = (±1e4 or 0) exactly; finite inputs never give NaN.
#[inline]
pub fn gelu_forward_ref<S: KernelMath>(x: &[S], y: &mut [S]) {
    assert_eq!(x.len(), y.len(), "gelu_forward: x.len() != y.len()");
    let c = S::from_f64(FRAC_1_SQRT_2);
    let half = S::from_f64(0.5);
    for (yi, &xi) in y.iter_mut().zip(x) {
        let e = (xi * c).kernel_erf();
        let h = half * xi;
        *yi = h.mul_add(e, h);
    }
}

/// dx = dy · GELU'(x) = dy · (Φ(x) + x·φ(x)) (overwrites dx). Order per element:
/// ```text
/// e   = erf(x · (1/√2));  cdf = fma(e, 0.5, 0.5)
/// pdf = exp((−0.5 · x) · x) · (1/√(2π))
/// g   = fma(x, pdf, cdf);  dx = dy · g
/// ```
#[inline]
pub fn gelu_backward_ref<S: KernelMath>(x: &[S], dy: &[S], dx: &mut [S]) {
    assert_eq!(x.len(), dy.len(), "gelu_backward: x.len() != dy.len()");
    assert_eq!(x.len(), dx.len(), "gelu_backward: x.len() != dx.len()");
    let c = S::from_f64(FRAC_1_SQRT_2);
    let half = S::from_f64(0.5);
    let neg_half = S::from_f64(-0.5);
    let inv_sqrt_2pi = S::from_f64(FRAC_1_SQRT_2PI);
    for ((d, &xi), &g) in dx.iter_mut().zip(x).zip(dy) {
        let e = (xi * c).kernel_erf();
        let cdf = e.mul_add(half, half);
        let pdf = ((neg_half * xi) * xi).kernel_exp() * inv_sqrt_2pi;
        *d = g * xi.mul_add(pdf, cdf);
    }
}

/// y = GELU(x) and g = GELU'(x) in one pass, so the backward needs no second erf: the values are
/// bitwise those of [`gelu_forward_ref`] and of the factor in [`gelu_backward_ref`]
/// (dx = dy · g there). Order per element:
/// ```text
/// e = erf(x · (1/√2));  h = 0.5 · x;  y = fma(h, e, h)
/// cdf = fma(e, 0.5, 0.5);  pdf = exp((−0.5 · x) · x) · (1/√(2π));  g = fma(x, pdf, cdf)
/// ```
#[inline]
pub fn gelu_forward_deriv_ref<S: KernelMath>(x: &[S], y: &mut [S], g: &mut [S]) {
    assert_eq!(x.len(), y.len(), "gelu_forward_deriv: x.len() != y.len()");
    assert_eq!(x.len(), g.len(), "gelu_forward_deriv: x.len() != g.len()");
    let c = S::from_f64(FRAC_1_SQRT_2);
    let half = S::from_f64(0.5);
    let neg_half = S::from_f64(-0.5);
    let inv_sqrt_2pi = S::from_f64(FRAC_1_SQRT_2PI);
    for ((yi, gi), &xi) in y.iter_mut().zip(g.iter_mut()).zip(x) {
        let e = (xi * c).kernel_erf();
        let h = half * xi;
        *yi = h.mul_add(e, h);
        let cdf = e.mul_add(half, half);
        let pdf = ((neg_half * xi) * xi).kernel_exp() * inv_sqrt_2pi;
        *gi = xi.mul_add(pdf, cdf);
    }
}
