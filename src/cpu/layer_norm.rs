//! LayerNorm over the last axis (PyTorch `nn.LayerNorm(H)`, biased variance, ε = 1e-5), with a
//! learned scale γ and shift β, and its backward.
//!
//! The offline-RL prior's denoiser (spec rtb2024 §4.2, `QFlowMLP`) puts Linear → LayerNorm →
//! GELU in every hidden block; the drift net gains it with `network.layer_norm`.
//!
//! Shapes: B rows, H features; x, y [B, H]; γ, β [H]; per-row statistics μ, rstd [B].
//!
//! ## The order (shared by the scalar reference, the AVX2 path and `shaders/layer_norm.wgsl`)
//! Forward, per row (two passes, so the variance is not a difference of large squares):
//! ```text
//! μ    = sum(x) / H                                  sum = reduce.rs's 8-lane order
//! var  = sum((x − μ)·(x − μ)) / H                    each square rounded, then added
//! rstd = 1 / sqrt(var + ε)
//! y    = fma((x − μ)·rstd, γ, β)
//! ```
//! Backward, with n = (x − μ)·rstd recomputed bit for bit and g = dy·γ:
//! ```text
//! a  = sum(g) / H;  c = sum(g·n) / H                 each product rounded, then added
//! dx = fma(−n, c, g − a) · rstd                      (overwrites dx)
//! dγ[h] = fma(dy, n, dγ[h]) and dβ[h] = dβ[h] + dy   rows ascending (ACCUMULATES)
//! ```

use super::reduce::{sum_map_ref, sum_ref};
use crate::real::Real;

/// ε of PyTorch's `nn.LayerNorm` default.
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// The forward's shapes, checked by both CPU paths: x, y [B, H]; γ, β [H]; μ, rstd [B].
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn check_forward<S>(
    x: &[S],
    gamma: &[S],
    beta: &[S],
    y: &[S],
    mean: &[S],
    rstd: &[S],
    rows: usize,
    h: usize,
) {
    check_lengths(
        h,
        &[
            ("x", x.len(), rows * h),
            ("y", y.len(), rows * h),
            ("gamma", gamma.len(), h),
            ("beta", beta.len(), h),
            ("mean", mean.len(), rows),
            ("rstd", rstd.len(), rows),
        ],
    );
}

/// The backward's shapes, checked by both CPU paths: x, dy, dx [B, H]; γ, dγ, dβ [H]; μ, rstd
/// [B].
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn check_backward<S>(
    x: &[S],
    gamma: &[S],
    mean: &[S],
    rstd: &[S],
    dy: &[S],
    dx: &[S],
    dgamma: &[S],
    dbeta: &[S],
    rows: usize,
    h: usize,
) {
    check_lengths(
        h,
        &[
            ("x", x.len(), rows * h),
            ("dy", dy.len(), rows * h),
            ("dx", dx.len(), rows * h),
            ("gamma", gamma.len(), h),
            ("dgamma", dgamma.len(), h),
            ("dbeta", dbeta.len(), h),
            ("mean", mean.len(), rows),
            ("rstd", rstd.len(), rows),
        ],
    );
}

/// Panics naming the first (name, length, expected length) that differs.
fn check_lengths(h: usize, lengths: &[(&str, usize, usize)]) {
    assert!(h > 0, "layer_norm: no features");
    for &(name, len, want) in lengths {
        assert_eq!(len, want, "layer_norm: {name} has length {len}, not {want}");
    }
}

/// sum / H: μ from Σx, and the backward's means of g and g·n. Both paths finish their row sums
/// with this and [`row_rstd`], so the divisions and the sqrt are one piece of code.
#[inline]
pub(crate) fn row_mean<S: Real>(sum_x: S, h: usize) -> S {
    sum_x / S::from_f64(h as f64)
}

/// rstd = 1 / sqrt(var_sum / H + ε).
#[inline]
pub(crate) fn row_rstd<S: Real>(sum_sq: S, h: usize) -> S {
    let var = sum_sq / S::from_f64(h as f64);
    S::ONE / (var + S::from_f64(LAYER_NORM_EPS)).sqrt()
}

/// y = LayerNorm(x)·γ + β per row; also writes each row's μ and rstd (what backward needs).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_forward_ref<S: Real>(
    x: &[S],
    gamma: &[S],
    beta: &[S],
    y: &mut [S],
    mean: &mut [S],
    rstd: &mut [S],
    rows: usize,
    h: usize,
) {
    check_forward(x, gamma, beta, y, mean, rstd, rows, h);
    for r in 0..rows {
        let xr = &x[r * h..(r + 1) * h];
        let mu = row_mean(sum_ref(xr), h);
        let rs = row_rstd(
            sum_map_ref(xr, |v| {
                let d = v - mu;
                d * d
            }),
            h,
        );
        mean[r] = mu;
        rstd[r] = rs;
        for (((yv, &xv), &g), &b) in y[r * h..(r + 1) * h]
            .iter_mut()
            .zip(xr)
            .zip(gamma)
            .zip(beta)
        {
            *yv = ((xv - mu) * rs).mul_add(g, b);
        }
    }
}

/// dx (overwritten) and dγ, dβ (ACCUMULATED, rows ascending) from dy, the forward's input x and
/// its per-row μ and rstd.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward_ref<S: Real>(
    x: &[S],
    gamma: &[S],
    mean: &[S],
    rstd: &[S],
    dy: &[S],
    dx: &mut [S],
    dgamma: &mut [S],
    dbeta: &mut [S],
    rows: usize,
    h: usize,
) {
    check_backward(x, gamma, mean, rstd, dy, dx, dgamma, dbeta, rows, h);
    let mut g = vec![S::ZERO; h];
    let mut gn = vec![S::ZERO; h];
    let mut n = vec![S::ZERO; h];
    for r in 0..rows {
        let (mu, rs) = (mean[r], rstd[r]);
        let (xr, dyr) = (&x[r * h..(r + 1) * h], &dy[r * h..(r + 1) * h]);
        for k in 0..h {
            n[k] = (xr[k] - mu) * rs;
            g[k] = dyr[k] * gamma[k];
            gn[k] = g[k] * n[k];
            dgamma[k] = dyr[k].mul_add(n[k], dgamma[k]);
            dbeta[k] += dyr[k];
        }
        let a = row_mean(sum_ref(&g), h);
        let c = row_mean(sum_ref(&gn), h);
        for (k, d) in dx[r * h..(r + 1) * h].iter_mut().enumerate() {
            *d = (-n[k]).mul_add(c, g[k] - a) * rs;
        }
    }
}
