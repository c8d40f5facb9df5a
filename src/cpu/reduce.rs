//! Fixed-order reductions: `sum`, `logsumexp`, and the column sum `col_sum_acc`.
//!
//! ## The order of `sum` (shared by the scalar reference and the AVX2 path)
//! ```text
//! x has length n; n8 = n − n mod 8
//! lane[j] = 0 for j in 0..8
//! for i in (0..n8).step_by(8): for j in 0..8: lane[j] = lane[j] + x[i + j]   (8 running sums)
//! h[j] = lane[j] + lane[j+4]   j = 0..4                                       (fixed tree)
//! g[j] = h[j] + h[j+2]         j = 0..2
//! s    = g[0] + g[1]
//! for i in n8..n: s = s + x[i]                                                (tail, ascending)
//! ```
//! This is exactly one ymm accumulator followed by `lo128 + hi128`, `movehl`, `+ lane 1`, so the
//! SIMD code needs no shuffling of the order. f64 uses the same order (scalar only).

use super::math::KernelMath;
use crate::real::Real;

/// Σ f(x[i]) in the order documented at the top of this file.
#[inline]
pub(crate) fn sum_map_ref<S: Real>(x: &[S], f: impl Fn(S) -> S) -> S {
    let n8 = x.len() - x.len() % 8;
    let mut lane = [S::ZERO; 8];
    for chunk in x[..n8].chunks_exact(8) {
        for j in 0..8 {
            lane[j] += f(chunk[j]);
        }
    }
    let h = [
        lane[0] + lane[4],
        lane[1] + lane[5],
        lane[2] + lane[6],
        lane[3] + lane[7],
    ];
    let g = [h[0] + h[2], h[1] + h[3]];
    let mut s = g[0] + g[1];
    for &v in &x[n8..] {
        s += f(v);
    }
    s
}

/// Σ x, scalar reference (order: see the module docs).
#[inline]
pub fn sum_ref<S: Real>(x: &[S]) -> S {
    sum_map_ref(x, |v| v)
}

/// `a` if `a > b`, else `b` — the running-max step used by `logsumexp` (ties and NaN keep `b`,
/// the same rule as `vmaxps(a, b)`).
#[inline(always)]
pub(crate) fn gt_select<S: Real>(a: S, b: S) -> S {
    if a > b {
        a
    } else {
        b
    }
}

/// max x with the same lane structure as `sum` (lane j: running `gt_select(x, lane)` starting at
/// −∞; lanes combined by the same tree with `gt_select(first, second)`; tail in order). NaNs are
/// skipped (they propagate later through the sum of exponentials).
#[inline]
pub(crate) fn max_ref<S: Real>(x: &[S]) -> S {
    let n8 = x.len() - x.len() % 8;
    let ninf = S::from_f64(f64::NEG_INFINITY);
    let mut lane = [ninf; 8];
    for chunk in x[..n8].chunks_exact(8) {
        for j in 0..8 {
            lane[j] = gt_select(chunk[j], lane[j]);
        }
    }
    let h = [
        gt_select(lane[0], lane[4]),
        gt_select(lane[1], lane[5]),
        gt_select(lane[2], lane[6]),
        gt_select(lane[3], lane[7]),
    ];
    let g = [gt_select(h[0], h[2]), gt_select(h[1], h[3])];
    let mut m = gt_select(g[0], g[1]);
    for &v in &x[n8..] {
        m = gt_select(v, m);
    }
    m
}

/// The ±∞ / empty cases of logsumexp, shared by both paths. `m` = [`max_ref`] of `x`.
/// Returns `Some(result)` when `m` is infinite: −∞ (all −∞ or empty) or +∞, or NaN if `x` holds
/// a NaN. Finite `m` → `None` (the normal path).
#[inline]
pub(crate) fn logsumexp_special<S: Real>(x: &[S], m: S) -> Option<S> {
    if m.is_finite() {
        return None;
    }
    if x.iter().any(|v| v.to_f64().is_nan()) {
        return Some(S::from_f64(f64::NAN));
    }
    Some(m)
}

/// log Σ exp(x) = m + ln Σ exp(x − m), m = max x, the Σ in the order of [`sum_ref`]; ln is std
/// `ln` in both precisions (one call, shared by both f32 paths). Empty → −∞.
#[inline]
pub fn logsumexp_ref<S: KernelMath>(x: &[S]) -> S {
    let m = max_ref(x);
    if let Some(v) = logsumexp_special(x, m) {
        return v;
    }
    let s = sum_map_ref(x, |v| (v - m).kernel_exp());
    m + s.ln()
}

/// out[c] += Σ_r dy[r, c]. dy is [rows, cols] (e.g. [B, H]); out is [cols].
/// Order per column: acc = out[c]; for r ascending { acc = acc + dy[r, c] }; out[c] = acc.
/// (Written row-outer so memory is read in order; each out[c] still sees r ascending.)
#[inline]
pub fn col_sum_acc_ref<S: Real>(dy: &[S], out: &mut [S], rows: usize, cols: usize) {
    check_col_sum(dy.len(), out.len(), rows, cols);
    for row in dy.chunks_exact(cols.max(1)).take(rows) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// Shape check for `col_sum_acc` (both paths).
#[inline]
pub(crate) fn check_col_sum(dy: usize, out: usize, rows: usize, cols: usize) {
    assert_eq!(dy, rows * cols, "col_sum_acc: dy.len() != rows·cols");
    assert_eq!(out, cols, "col_sum_acc: out.len() != cols");
}
