//! Sub-trajectory balance (SubTB, optionally with the forward-looking "FL" partial energy) and
//! detailed balance (DB) on per-step quantities (spec §3).
//!
//! Unlike TB and VarGrad (`tb.rs`), these losses see every step of a trajectory, so their inputs
//! are per-step rows, row-major: trajectory b, step i lives at `b·T + i`.
//!
//! | slice    | shape  | entry `[b, i]`                                                         |
//! |----------|--------|------------------------------------------------------------------------|
//! | `log_pf` | [B, T] | log p_F(x_{i+1} \| x_i), step i = 0..T−1                               |
//! | `log_pb` | [B, T] | log p_B(x_i \| x_{i+1}) of the *same* transition i → i+1; 0 at i = 0    |
//! | `log_f`  | [B, T] | learned flow log F(x_i, t_i), i = 0..T−1 (network output)              |
//! | `fl`     | [B, T] | optional FL term added to log F_i, no gradient ([`fl_term`])           |
//! | `log_r`  | [B]    | log R(x_T), the terminal flow log F_T, no gradient                     |
//!
//! Why `log_pb` is indexed by the transition and not by the state: the spec's DB residual is
//! `log F_i + log p_F_i − log p_B_i − log F_{i+1}`, i.e. both log-probabilities of step i belong to
//! the transition i → i+1, and the reference (`get_trajectory_fwd`) writes `logpb[:, i]` =
//! log N(x_i; (i/(i+1))·x_{i+1}, …) for i ≥ 1 and leaves 0 at i = 0 (x₀ = 0 surely). With this
//! layout Σ_i `log_pb[b, i]` is exactly LB_b of TB, and C_i below is a plain prefix sum.
//!
//! Why flat slices with explicit `b`, `t`: they are the rollout's buffers as recorded (one row per
//! trajectory), so the caller passes them without reshaping, and the shape is checked once here.
//!
//! Gradients are returned with respect to the per-step `log_pf` and `log_f` (what the tape holds
//! nodes for). None is returned for `log_pb`: p_B is the fixed Brownian bridge. It does enter the
//! residuals, and since it appears only as `log_pf − log_pb`, ∂L/∂log_pb = −∂L/∂log_pf should a
//! learned p_B ever need it. `log_r` and `fl` are constants (detached in the reference).

/// A loss over per-step quantities and its gradients. Returned by [`subtb`] and
/// [`detailed_balance`].
#[derive(Clone, Debug, PartialEq)]
pub struct SubTbGrad {
    pub loss: f64,
    /// ∂L/∂log_pf, [B, T] row-major.
    pub d_log_pf: Vec<f64>,
    /// ∂L/∂log_f, [B, T] row-major (also ∂L/∂(log_f + fl), as FL is additive).
    pub d_log_f: Vec<f64>,
}

/// The FL ("forward-looking", `--partial_energy`) term added to the learned flow at state i:
///
/// (1 − t_i)·log N(x_i; 0, σ²·max(i, 1)·dt·I) + t_i·log R(x_i),
///
/// with `x_i` of length D and `log_r_i` = log R(x_i). The reference variance is σ²·t_{max(i,1)};
/// the `max` keeps it positive at i = 0, where x₀ = 0 and the Gaussian part is the constant
/// log N(0; 0, σ²dt·I) = −(D/2)·log(2πσ²dt) (+44.28 for Manywell: D = 32, σ² = 1, dt = 0.01).
/// At t₀ = 0 the reward part is 0·log R(0), evaluated literally as the reference does, so a
/// non-finite log R(0) would give NaN (every spec target has a finite log R at 0).
///
/// Accumulated in f64 from f32 states (the reference works in f32); no gradient flows through it.
pub fn fl_term(t_i: f64, i: usize, dt: f64, sigma2: f64, x_i: &[f32], log_r_i: f64) -> f64 {
    let var = sigma2 * i.max(1) as f64 * dt;
    let log_two_pi_var = (std::f64::consts::TAU * var).ln();
    let sq: f64 = x_i.iter().map(|&x| (x as f64) * (x as f64)).sum();
    let log_p_ref = -0.5 * (x_i.len() as f64 * log_two_pi_var + sq / var);
    (1.0 - t_i) * log_p_ref + t_i * log_r_i
}

/// log Σ_{0≤i<j≤T} λ^{j−i}, by log-sum-exp over the lag k = j − i (there are T + 1 − k pairs
/// with lag k), so that neither λ^T (2¹⁰⁰ at the paper's λ = 2, T = 100; overflow for large λ)
/// nor λ^{−T} is ever formed. λ must be positive and finite.
pub fn subtb_log_normaliser(lambda: f64, t: usize) -> f64 {
    assert!(
        lambda > 0.0 && lambda.is_finite(),
        "subtb: λ = {lambda} must be positive and finite"
    );
    assert!(t >= 1, "subtb: T must be at least 1");
    let ln_lambda = lambda.ln();
    let terms: Vec<f64> = (1..=t)
        .map(|k| ((t + 1 - k) as f64).ln() + k as f64 * ln_lambda)
        .collect();
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + terms.iter().map(|&v| (v - max).exp()).sum::<f64>().ln()
}

/// The SubTB weight of one pair (i, j) as a function of its lag k = j − i:
/// w_k = λ^k / Σ_{i'<j'} λ^{j'−i'} = exp(k·log λ − log normaliser). Length T + 1 with w₀ = 0, so
/// `w[j - i]` indexes it directly. Short lags at large λ underflow to 0, as in the reference.
pub fn subtb_lag_weights(lambda: f64, t: usize) -> Vec<f64> {
    let log_norm = subtb_log_normaliser(lambda, t);
    let ln_lambda = lambda.ln();
    std::iter::once(0.0)
        .chain((1..=t).map(|k| (k as f64 * ln_lambda - log_norm).exp()))
        .collect()
}

fn check_shapes(what: &str, b: usize, t: usize, per_step: &[(&str, usize)], log_r: usize) {
    assert!(t >= 1, "{what}: T must be at least 1");
    for &(name, len) in per_step {
        assert_eq!(len, b * t, "{what}: {name} must be [B, T] = [{b}, {t}]");
    }
    assert_eq!(log_r, b, "{what}: log_r must be [B] = [{b}]");
}

/// Sub-trajectory balance, exactly as spec §3 and the reference `subtb`:
///
/// - flows log F_i = `log_f[b, i]` (+ `fl[b, i]`) for i < T, and log F_T := `log_r[b]`;
/// - prefix sums C_i = Σ_{k<i} (`log_pf[b, k]` − `log_pb[b, k]`), C₀ = 0;
/// - residuals A_ij = log F_i − log F_j + C_j − C_i for 0 ≤ i < j ≤ T;
/// - weights w_ij = λ^{j−i} / Σ_{i'<j'} λ^{j'−i'} ([`subtb_lag_weights`], log space);
/// - L = Σ_b Σ_{i<j} w_ij A_ij².
///
/// The batch is **summed, not averaged, and there is no ½** — unlike TB/VarGrad/DB — because the
/// reference does so (spec §9 item 18); kept for parity of the loss scale seen by Adam.
///
/// Gradients. Write G_i = log F_i − C_i (i = 0..T), so A_ij = G_i − G_j and
/// g_m := ∂L/∂G_m = 2 Σ_{n≠m} w_{|m−n|}(G_m − G_n). Then ∂L/∂log_f[b, m] = g_m (m < T; F_T is
/// fixed), and since `log_pf[b, k]` lowers G_j by one for every j > k,
/// ∂L/∂log_pf[b, k] = −Σ_{j>k} g_j (a suffix sum).
///
/// Cost O(T²) per trajectory (5050 pairs at T = 100), one pass over the pairs accumulating the
/// loss and every g_m: measured ≈ 2–3 ms for B = 300, T = 100 (release, one core). O(T) exists:
/// with D_m = G_m − G_{m+1} and W_K = Σ_{k≤K} w_k, R_m := Σ_{n>m} w_{n−m}(G_m − G_n) obeys
/// R_m = D_m·W_{T−m} + λ·R_{m+1} (and likewise for the loss), with no overflow. It was not taken:
/// λ·R_{m+1} re-weights pairs by one extra factor λ, so its terms can exceed the result by ~λ and
/// cancel (relative error ∝ λ·ε, bad for the large λ this module supports), while the pairwise
/// form forms each difference A_ij first and is exact to a few ulps at every λ.
// The flat-slice signature mirrors the rollout's buffers; bundling them would only move the
// argument list into a struct literal at the one call site.
#[allow(clippy::too_many_arguments)]
pub fn subtb(
    lambda: f64,
    log_pf: &[f64],
    log_pb: &[f64],
    log_f: &[f64],
    fl: Option<&[f64]>,
    log_r: &[f64],
    b: usize,
    t: usize,
) -> SubTbGrad {
    let mut shapes = vec![
        ("log_pf", log_pf.len()),
        ("log_pb", log_pb.len()),
        ("log_f", log_f.len()),
    ];
    if let Some(fl) = fl {
        shapes.push(("fl", fl.len()));
    }
    check_shapes("subtb", b, t, &shapes, log_r.len());
    let w = subtb_lag_weights(lambda, t);

    let mut loss = 0.0;
    let mut d_log_pf = vec![0.0; b * t];
    let mut d_log_f = vec![0.0; b * t];
    // Per-trajectory scratch, [T + 1]: G_i and g_i.
    let mut big_g = vec![0.0; t + 1];
    let mut g = vec![0.0; t + 1];
    for (bi, &lr) in log_r.iter().enumerate() {
        let row = bi * t;
        let mut c = 0.0;
        for i in 0..t {
            let f = log_f[row + i] + fl.map_or(0.0, |fl| fl[row + i]);
            big_g[i] = f - c;
            c += log_pf[row + i] - log_pb[row + i];
        }
        big_g[t] = lr - c;

        // Row i of the pair triangle: Σ_{j>i} w_{j−i}·A_ij² into the loss, Σ_{j>i} w_{j−i}·A_ij
        // into g_i (a register, so the loop carries no store→load through g[i]), and −w·A_ij into
        // every g_j. Zipped slices (lag k = j − i indexes w[k]) drop the bounds checks. The ×2 of
        // d(A²) is applied once at the end. The order is fixed: rows in i, lags in k.
        g.fill(0.0);
        let mut traj_loss = 0.0;
        for i in 0..t {
            let gi = big_g[i];
            let (mut row_loss, mut row_g) = (0.0, 0.0);
            let (_, later) = g.split_at_mut(i + 1);
            for ((&gj, &wk), g_j) in big_g[i + 1..].iter().zip(&w[1..]).zip(later) {
                let wa = wk * (gi - gj);
                row_loss += wa * (gi - gj);
                row_g += wa;
                *g_j -= wa;
            }
            traj_loss += row_loss;
            g[i] += row_g;
        }
        loss += traj_loss;
        for v in g.iter_mut() {
            *v *= 2.0;
        }

        d_log_f[row..row + t].copy_from_slice(&g[..t]);
        let mut suffix = 0.0;
        for k in (0..t).rev() {
            suffix += g[k + 1];
            d_log_pf[row + k] = -suffix;
        }
    }
    SubTbGrad {
        loss,
        d_log_pf,
        d_log_f,
    }
}

/// Detailed balance, as spec §3 and the reference `db`:
///
/// δ_i = log F_i + `log_pf[b, i]` − `log_pb[b, i]` − log F_{i+1}, with log F_i = `log_f[b, i]` for
/// i < T and log F_T := `log_r[b]`; L = (1/B) Σ_b ½ Σ_{i=0}^{T−1} δ_i² (batch *mean*, with ½, as the
/// reference; unlike SubTB's sum).
///
/// `log_pb[b, i]` must be log p_B(x_i | x_{i+1}) of the transition i → i+1 (0 at i = 0), the layout
/// the module doc describes; that is the spec's DB alignment.
///
/// FL takes no separate argument here: it is an additive constant on log F_i, so a caller with
/// `--partial_energy` passes `log_f + fl` and the returned ∂L/∂log_f is unchanged.
///
/// Gradients: ∂L/∂log_pf[b, i] = δ_i / B and ∂L/∂log_f[b, m] = (δ_m − δ_{m−1}) / B (δ_{−1} := 0).
pub fn detailed_balance(
    log_pf: &[f64],
    log_pb: &[f64],
    log_f: &[f64],
    log_r: &[f64],
    b: usize,
    t: usize,
) -> SubTbGrad {
    check_shapes(
        "detailed_balance",
        b,
        t,
        &[
            ("log_pf", log_pf.len()),
            ("log_pb", log_pb.len()),
            ("log_f", log_f.len()),
        ],
        log_r.len(),
    );
    let inv_b = 1.0 / b as f64;
    let mut loss = 0.0;
    let mut d_log_pf = vec![0.0; b * t];
    let mut d_log_f = vec![0.0; b * t];
    for (bi, &lr) in log_r.iter().enumerate() {
        let row = bi * t;
        let mut traj_loss = 0.0;
        let mut prev_delta = 0.0;
        for i in 0..t {
            let next = if i + 1 < t { log_f[row + i + 1] } else { lr };
            let delta = log_f[row + i] + log_pf[row + i] - log_pb[row + i] - next;
            traj_loss += 0.5 * delta * delta;
            d_log_pf[row + i] = delta * inv_b;
            d_log_f[row + i] = (delta - prev_delta) * inv_b;
            prev_delta = delta;
        }
        loss += traj_loss;
    }
    SubTbGrad {
        loss: loss * inv_b,
        d_log_pf,
        d_log_f,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autodiff::gradcheck::gradcheck;
    use crate::rng::{normal_f64, stream};
    use crate::tolerance::{Tolerance, GRADCHECK_F64, SPEC_VALUE};

    /// Per-step inputs of one batch: log_pf, log_pb, log_f, fl [B, T] and log_r [B].
    struct Batch {
        b: usize,
        t: usize,
        log_pf: Vec<f64>,
        log_pb: Vec<f64>,
        log_f: Vec<f64>,
        fl: Vec<f64>,
        log_r: Vec<f64>,
    }

    /// Standard-normal inputs from stream (seed, "losses-subtb-test", 0); log_pb[b, 0] = 0 as a
    /// rollout gives it.
    fn batch(seed: u64, b: usize, t: usize) -> Batch {
        let mut rng = stream(seed, "losses-subtb-test", 0);
        let mut draw = |n: usize| (0..n).map(|_| normal_f64(&mut rng)).collect::<Vec<f64>>();
        let log_pf = draw(b * t);
        let mut log_pb = draw(b * t);
        for bi in 0..b {
            log_pb[bi * t] = 0.0;
        }
        Batch {
            b,
            t,
            log_pf,
            log_pb,
            log_f: draw(b * t),
            fl: draw(b * t),
            log_r: draw(b),
        }
    }

    impl Batch {
        fn subtb(&self, lambda: f64, with_fl: bool) -> SubTbGrad {
            let fl = with_fl.then_some(self.fl.as_slice());
            subtb(
                lambda,
                &self.log_pf,
                &self.log_pb,
                &self.log_f,
                fl,
                &self.log_r,
                self.b,
                self.t,
            )
        }

        fn db(&self) -> SubTbGrad {
            detailed_balance(
                &self.log_pf,
                &self.log_pb,
                &self.log_f,
                &self.log_r,
                self.b,
                self.t,
            )
        }

        /// Replace log_f by the balanced flow log F_i = K_b + C_i − fl_i with K_b = lr_b − C_T,
        /// so G_i = log F_i − C_i = lr_b − C_T for every i ≤ T: every A_ij and δ_i is 0.
        fn balance(&mut self, with_fl: bool) {
            let t = self.t;
            for bi in 0..self.b {
                let row = bi * t;
                // C_0..C_T.
                let mut c = vec![0.0];
                let mut acc = 0.0;
                for i in 0..t {
                    acc += self.log_pf[row + i] - self.log_pb[row + i];
                    c.push(acc);
                }
                let k = self.log_r[bi] - c[t];
                for (i, &c_i) in c[..t].iter().enumerate() {
                    let fl = if with_fl { self.fl[row + i] } else { 0.0 };
                    self.log_f[row + i] = k + c_i - fl;
                }
            }
        }
    }

    /// The reference's formula written out literally: coefficient matrix λ^{j−i}/Σ formed by
    /// direct powers (fine for small T), A_ij from the padded cumulative sum.
    fn subtb_naive(x: &Batch, lambda: f64, with_fl: bool) -> f64 {
        let t = x.t;
        let mut norm = 0.0;
        for i in 0..=t {
            for j in i + 1..=t {
                norm += lambda.powi((j - i) as i32);
            }
        }
        let mut total = 0.0;
        for bi in 0..x.b {
            let row = bi * t;
            let logf = |i: usize| {
                if i == t {
                    x.log_r[bi]
                } else {
                    x.log_f[row + i] + if with_fl { x.fl[row + i] } else { 0.0 }
                }
            };
            let cum = |i: usize| {
                (0..i)
                    .map(|k| x.log_pf[row + k] - x.log_pb[row + k])
                    .sum::<f64>()
            };
            for i in 0..=t {
                for j in i + 1..=t {
                    let a = logf(i) - logf(j) + cum(j) - cum(i);
                    total += lambda.powi((j - i) as i32) / norm * a * a;
                }
            }
        }
        total
    }

    #[test]
    fn subtb_gradients_match_finite_differences() {
        let (b, t) = (3, 5);
        let n = b * t;
        for (seed, lambda) in [(1, 1.0), (2, 2.0), (3, 0.5)] {
            for with_fl in [false, true] {
                let x = batch(seed, b, t);
                let g = x.subtb(lambda, with_fl);
                let fl = with_fl.then_some(x.fl.as_slice());
                let what = format!("λ = {lambda}, fl = {with_fl}");

                // log_pf and log_f together: x = [log_pf; log_f].
                let mut v = x.log_pf.clone();
                v.extend_from_slice(&x.log_f);
                let mut analytic = g.d_log_pf.clone();
                analytic.extend_from_slice(&g.d_log_f);
                let mut f =
                    |v: &[f64]| subtb(lambda, &v[..n], &x.log_pb, &v[n..], fl, &x.log_r, b, t).loss;
                let rep = gradcheck(&mut f, &v, &analytic, 1e-6, GRADCHECK_F64)
                    .unwrap_or_else(|r| panic!("{what}: {r:?}"));
                assert!(rep.abs_err < 1e-8, "{what}: {rep:?}");

                // log_pb enters A with the opposite sign of log_pf (no gradient is returned).
                let neg: Vec<f64> = g.d_log_pf.iter().map(|v| -v).collect();
                let mut f =
                    |v: &[f64]| subtb(lambda, &x.log_pf, v, &x.log_f, fl, &x.log_r, b, t).loss;
                gradcheck(&mut f, &x.log_pb, &neg, 1e-6, GRADCHECK_F64)
                    .unwrap_or_else(|r| panic!("{what}, log_pb: {r:?}"));

                // The O(T²) accumulation equals the literal reference formula.
                let naive = subtb_naive(&x, lambda, with_fl);
                assert!(
                    (g.loss - naive).abs() <= 1e-12 * (1.0 + naive.abs()),
                    "{what}: loss {} vs naive {naive}",
                    g.loss
                );
            }
        }
    }

    #[test]
    fn db_gradients_match_finite_differences() {
        for (seed, b, t) in [(4, 3, 5), (5, 2, 1), (6, 4, 7)] {
            let x = batch(seed, b, t);
            let n = b * t;
            let g = x.db();
            let mut v = x.log_pf.clone();
            v.extend_from_slice(&x.log_f);
            let mut analytic = g.d_log_pf.clone();
            analytic.extend_from_slice(&g.d_log_f);
            let mut f =
                |v: &[f64]| detailed_balance(&v[..n], &x.log_pb, &v[n..], &x.log_r, b, t).loss;
            let rep = gradcheck(&mut f, &v, &analytic, 1e-6, GRADCHECK_F64)
                .unwrap_or_else(|r| panic!("B = {b}, T = {t}: {r:?}"));
            assert!(rep.abs_err < 1e-8, "B = {b}, T = {t}: {rep:?}");

            // Literal formula: (1/B) Σ_b ½ Σ_i (F_i + pf_i − pb_i − F_{i+1})².
            let mut want = 0.0;
            for bi in 0..b {
                let f = |i: usize| {
                    if i == t {
                        x.log_r[bi]
                    } else {
                        x.log_f[bi * t + i]
                    }
                };
                for i in 0..t {
                    let d = f(i) + x.log_pf[bi * t + i] - x.log_pb[bi * t + i] - f(i + 1);
                    want += 0.5 * d * d;
                }
            }
            want /= b as f64;
            assert!(
                (g.loss - want).abs() <= 1e-12 * (1.0 + want),
                "{} vs {want}",
                g.loss
            );
        }
    }

    #[test]
    fn subtb_normaliser_matches_spec_value() {
        // Spec §3: T = 100, λ = 2 → log Σ_{i<j} λ^{j−i} = 70.7010. In closed form it is
        // 100·ln 2 + ln Σ_{m=0}^{99} (m+1)·2^{−m} ≈ 100·ln 2 + ln 4 = 70.701012.
        let got = subtb_log_normaliser(2.0, 100);
        assert!(SPEC_VALUE.close(got, 70.7010), "log normaliser {got}");
        let closed = 100.0 * 2f64.ln()
            + (0..100)
                .map(|m| (m as f64 + 1.0) * 0.5f64.powi(m))
                .sum::<f64>()
                .ln();
        assert!((got - closed).abs() < 1e-12, "{got} vs {closed}");
        // The weights over all T(T+1)/2 pairs sum to 1.
        let w = subtb_lag_weights(2.0, 100);
        let total: f64 = (1..=100).map(|k| (101 - k) as f64 * w[k]).sum();
        assert!((total - 1.0).abs() < 1e-12, "Σ w = {total}");
        // Large λ stays finite in log space (λ^T would overflow).
        let w = subtb_lag_weights(1e9, 100);
        assert!(w.iter().all(|v| v.is_finite()) && (w[100] - 1.0).abs() < 1e-8);
    }

    #[test]
    fn balanced_flows_give_zero_loss_and_gradients() {
        for with_fl in [false, true] {
            let mut x = batch(7, 4, 9);
            x.balance(with_fl);
            for lambda in [0.5, 1.0, 2.0] {
                let g = x.subtb(lambda, with_fl);
                assert!(g.loss.abs() < 1e-24, "subtb λ = {lambda}: {}", g.loss);
                let worst = g
                    .d_log_pf
                    .iter()
                    .chain(&g.d_log_f)
                    .fold(0f64, |m, v| m.max(v.abs()));
                assert!(worst < 1e-12, "subtb λ = {lambda}: gradient {worst}");
            }
            // DB takes FL folded into log_f (its documented convention).
            let log_f: Vec<f64> = if with_fl {
                x.log_f.iter().zip(&x.fl).map(|(f, fl)| f + fl).collect()
            } else {
                x.log_f.clone()
            };
            let g = detailed_balance(&x.log_pf, &x.log_pb, &log_f, &x.log_r, x.b, x.t);
            assert!(g.loss.abs() < 1e-24, "db fl = {with_fl}: {}", g.loss);
            let worst = g
                .d_log_pf
                .iter()
                .chain(&g.d_log_f)
                .fold(0f64, |m, v| m.max(v.abs()));
            assert!(worst < 1e-12, "db fl = {with_fl}: gradient {worst}");
        }
    }

    #[test]
    fn large_lambda_concentrates_on_the_full_trajectory() {
        // L/w_0T = Σ_b A_0T² + Σ_{(i,j)≠(0,T)} (w_ij/w_0T)·A_ij², and the second sum is at most
        // (Σ_{k<T} (T+1−k)·λ^{k−T})·max A² ≈ (2/λ)·max A²: at λ = 1e9 about 2e-9 relative, so a
        // 1e-6 relative tolerance leaves room for a small A_0T.
        let tol = Tolerance {
            name: "subtb-large-lambda",
            abs: 0.0,
            rel: 1e-6,
        };
        let x = batch(8, 3, 6);
        let t = x.t;
        for with_fl in [false, true] {
            let lambda = 1e9;
            let g = x.subtb(lambda, with_fl);
            let w0t = subtb_lag_weights(lambda, t)[t];
            let mut tb_like = 0.0;
            for bi in 0..x.b {
                let row = bi * t;
                let f0 = x.log_f[row] + if with_fl { x.fl[row] } else { 0.0 };
                let c_t: f64 = (0..t).map(|k| x.log_pf[row + k] - x.log_pb[row + k]).sum();
                let a = f0 + c_t - x.log_r[bi];
                tb_like += a * a;
                // The gradient concentrates too: ∂L/∂log F_0 → 2·w_0T·A_0T.
                assert!(tol.close(g.d_log_f[row] / w0t, 2.0 * a));
            }
            assert!(
                tol.close(g.loss / w0t, tb_like),
                "fl = {with_fl}: L/w_0T = {} vs Σ A_0T² = {tb_like}",
                g.loss / w0t
            );
        }
    }

    #[test]
    fn small_lambda_is_db_up_to_scale() {
        // λ → 0 keeps only lag-1 pairs, each weighted 1/T: SubTB → Σ_b (1/T) Σ_i δ_i² = (2B/T)·DB.
        let x = batch(9, 3, 6);
        let (b, t) = (x.b as f64, x.t as f64);
        let s = x.subtb(1e-9, false);
        let d = x.db();
        let scale = 2.0 * b / t;
        assert!(
            (s.loss - scale * d.loss).abs() < 1e-6 * d.loss,
            "{} vs {}",
            s.loss,
            d.loss
        );
        for (gs, gd) in s.d_log_f.iter().zip(&d.d_log_f) {
            assert!((gs - scale * gd).abs() < 1e-6 * (1.0 + gd.abs()));
        }
    }

    #[test]
    fn single_step_cases_by_hand() {
        // T = 1: one pair, w_01 = 1, A_01 = log F_0 + fl_0 + pf_0 − pb_0 − lr.
        let g = subtb(2.0, &[0.5], &[0.0], &[1.0], Some(&[0.25]), &[-1.0], 1, 1);
        assert_eq!(g.loss, 2.75 * 2.75);
        assert_eq!(g.d_log_f, vec![5.5]);
        assert_eq!(g.d_log_pf, vec![5.5]);
        let g = detailed_balance(&[0.5, 0.5], &[0.0, 0.0], &[1.0, 2.0], &[-1.0, 0.0], 2, 1);
        // δ = [2.5, 2.5] → L = (1/2)·(½·6.25 + ½·6.25) = 3.125.
        assert_eq!(g.loss, 3.125);
        assert_eq!(g.d_log_pf, vec![1.25, 1.25]);
    }

    #[test]
    fn pf_of_first_step_and_flow_at_start_share_a_gradient() {
        // log_pf[b, 0] shifts every G_j (j ≥ 1) down by one, which is the same as shifting G_0 up.
        let x = batch(10, 300, 100);
        let g = x.subtb(2.0, true);
        assert!(g.loss.is_finite());
        for bi in 0..x.b {
            let (p, f) = (g.d_log_pf[bi * x.t], g.d_log_f[bi * x.t]);
            assert!(
                (p - f).abs() <= 1e-12 * (1.0 + f.abs()),
                "b = {bi}: {p} vs {f}"
            );
        }
    }

    #[test]
    fn fl_term_at_the_origin_is_the_spec_constant() {
        // i = 0, t₀ = 0, x₀ = 0: −(D/2)·log(2πσ²dt). Manywell (D = 32, σ² = 1, dt = 0.01) is
        // +44.28 in the spec, printed to 4 significant digits: half a unit of the last place.
        let printed = Tolerance {
            name: "spec-printed-4-digits",
            abs: 5e-3,
            rel: 0.0,
        };
        let x0 = [0f32; 32];
        let got = fl_term(0.0, 0, 0.01, 1.0, &x0, -3.0);
        let closed = -16.0 * (std::f64::consts::TAU * 0.01).ln();
        assert!((got - closed).abs() < 1e-12, "{got} vs {closed}");
        assert!(printed.close(got, 44.28), "fl_0 = {got}");
        // i ≥ 1 uses variance σ²·i·dt and mixes in t_i·log R.
        let x = [0.5f32, -1.0];
        let (t_i, i, dt, s2, lr) = (0.3, 30, 0.01, 5.0, -2.0);
        let var = s2 * 30.0 * dt;
        let log_n = -0.5 * (2.0 * (std::f64::consts::TAU * var).ln() + 1.25 / var);
        let want = (1.0 - t_i) * log_n + t_i * lr;
        assert!((fl_term(t_i, i, dt, s2, &x, lr) - want).abs() < 1e-12);
    }
}
