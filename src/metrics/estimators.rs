//! log Z estimators and the effective sample size from per-trajectory log-weights (spec §6).
//!
//! The log-weights are w_b = log R(x_T) + log p_B(τ_b) − log p_F(τ_b), b = 0..K. Every reduction
//! here runs left to right in f64, so the result depends only on the values and their order.
//!
//! Conventions for degenerate input: an empty slice gives NaN; any NaN gives NaN (a diverged
//! run must show up, not be skipped); all −∞ gives −∞ from `logmeanexp`.

/// The arithmetic mean (NaN for an empty slice).
pub fn mean(w: &[f64]) -> f64 {
    if w.is_empty() {
        return f64::NAN;
    }
    w.iter().sum::<f64>() / w.len() as f64
}

/// The largest value, or NaN if any value is NaN (`f64::max` would skip NaNs).
fn max_or_nan(w: &[f64]) -> f64 {
    let mut m = f64::NEG_INFINITY;
    for &v in w {
        if v.is_nan() {
            return f64::NAN;
        }
        m = m.max(v);
    }
    m
}

/// log Σ_b e^{w_b}, shifted by the max so it neither overflows nor underflows.
pub fn logsumexp(w: &[f64]) -> f64 {
    if w.is_empty() {
        return f64::NAN;
    }
    let m = max_or_nan(w);
    // ±∞ or NaN max: the shift would make ∞ − ∞ = NaN; the answer is the max itself.
    if !m.is_finite() {
        return m;
    }
    let s: f64 = w.iter().map(|&v| (v - m).exp()).sum();
    m + s.ln()
}

/// log (1/K) Σ_b e^{w_b} (the code's `logmeanexp`: logsumexp − log K).
pub fn logmeanexp(w: &[f64]) -> f64 {
    logsumexp(w) - (w.len() as f64).ln()
}

/// Normalised ESS = (Σ e^{w})² / (K Σ e^{2w}) ∈ [1/K, 1], computed as
/// (Σ e^{w−m})² / (K Σ e^{2(w−m)}) with m = max w. NaN when empty, when any weight is NaN, or when
/// no weight is finite.
pub fn ess_normalised(w: &[f64]) -> f64 {
    if w.is_empty() {
        return f64::NAN;
    }
    let m = max_or_nan(w);
    if !m.is_finite() {
        return f64::NAN;
    }
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in w {
        let e = (v - m).exp();
        s1 += e;
        s2 += e * e;
    }
    s1 * s1 / (w.len() as f64 * s2)
}

/// (log Ẑ, log Ẑ^RW) = (mean w, logmeanexp w): the ELBO and the importance-weighted estimate.
/// By Jensen log Ẑ ≤ log Ẑ^RW.
pub fn log_z_estimates(log_weights: &[f64]) -> (f64, f64) {
    (mean(log_weights), logmeanexp(log_weights))
}
