//! The RL baselines of the RTB paper's 2-D toy (spec rtb2024 §1.6, §2.6): REINFORCE on
//! per-trajectory sums, LF_b = Σ log q (the policy being trained), LP_b = Σ log p (the frozen
//! prior, same moves) and lr_b = β·log r(x_T). Advantages are detached, so each loss is
//! linear in LF and its gradient is a per-trajectory weight on ∇LF_b.

use super::LossGrad;

/// The batch ELBO mean_b(lr_b − LF_b + LP_b) the RL losses report as their `log_z`.
fn batch_elbo(log_pf: &[f64], log_prior: &[f64], log_r: &[f64]) -> f64 {
    let n = log_pf.len() as f64;
    (0..log_pf.len())
        .map(|b| log_r[b] - log_pf[b] + log_prior[b])
        .sum::<f64>()
        / n
}

/// KL-regularised REINFORCE as corrected by Deleu et al. 2025 (`fwd_rl_corrected`): the
/// advantage A_b = (lr_b − LF_b + LP_b)/β = log r − (1/β)(LF − LP), centred on its batch mean,
/// L = −(1/B) Σ_b (A_b − Ā)·LF_b. Its optimum is the RTB target p·r^β.
///
/// Off-policy (`log_behaviour` = Σ log of the exploratory sampler's steps): each trajectory is
/// weighted by w = softmax_b((LF_b − LB_b)/T), a tempered self-normalised importance weight
/// (T = `steps`), detached, and L = −Σ_b w_b (A_b − Ā)·LF_b.
///
/// The reported `loss` is −mean_b A_b·β = mean(LF − LP − lr) (−ELBO), and `log_z` the batch
/// ELBO mean(lr − LF + LP).
pub fn rl_kl(
    log_pf: &[f64],
    log_prior: &[f64],
    log_r: &[f64],
    beta: f64,
    log_behaviour: Option<(&[f64], usize)>,
) -> LossGrad {
    let n = log_pf.len();
    let adv: Vec<f64> = (0..n)
        .map(|b| (log_r[b] - log_pf[b] + log_prior[b]) / beta)
        .collect();
    let mean_adv = adv.iter().sum::<f64>() / n as f64;
    let weights: Vec<f64> = match log_behaviour {
        None => vec![1.0 / n as f64; n],
        Some((lb, steps)) => {
            let s: Vec<f64> = (0..n).map(|b| (log_pf[b] - lb[b]) / steps as f64).collect();
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
            let z: f64 = e.iter().sum();
            e.iter().map(|v| v / z).collect()
        }
    };
    let d_log_pf = (0..n).map(|b| -weights[b] * (adv[b] - mean_adv)).collect();
    let elbo = batch_elbo(log_pf, log_prior, log_r);
    LossGrad {
        loss: -elbo,
        d_log_pf,
        d_log_z: 0.0,
        log_z: elbo,
    }
}

/// The RTB paper's RL baseline as its code runs it (`fwd_rl`, spec §1.6): REINFORCE with the
/// reward R_b = exp(lr_b) (the density ratio, not its log) less its batch mean, plus
/// `kl_weight`·mean_b (LF_b − LP_b)², a squared log-ratio whose optimum is not the posterior:
/// L = −(1/B) Σ_b (R_b − R̄)·LF_b + α (1/B) Σ_b (LF_b − LP_b)², with R_b = `scale`·exp(lr_b).
/// On-policy only.
pub fn rl_kl_paper(
    log_pf: &[f64],
    log_prior: &[f64],
    log_r: &[f64],
    kl_weight: f64,
    scale: f64,
) -> LossGrad {
    let n = log_pf.len() as f64;
    let reward: Vec<f64> = log_r.iter().map(|v| scale * v.exp()).collect();
    let mean_r = reward.iter().sum::<f64>() / n;
    let mut loss = 0.0;
    let mut d_log_pf = Vec::with_capacity(log_pf.len());
    for b in 0..log_pf.len() {
        let ratio = log_pf[b] - log_prior[b];
        loss += -(reward[b] - mean_r) * log_pf[b] + kl_weight * ratio * ratio;
        d_log_pf.push((-(reward[b] - mean_r) + 2.0 * kl_weight * ratio) / n);
    }
    let elbo = batch_elbo(log_pf, log_prior, log_r);
    LossGrad {
        loss: loss / n,
        d_log_pf,
        d_log_z: 0.0,
        log_z: elbo,
    }
}

/// DPOK with its analytic per-step KL (Fan et al. 2023; spec rtb2024 §3.3): REINFORCE on the
/// reward lr_b (= β·log r) with a batch-mean baseline plus `kl_weight` times each trajectory's
/// summed per-step KL `step_kl_b` = Σ_t ‖μ_φ − μ_θ‖²/(2σ_t²):
/// L = (1/B) Σ_b [−(lr_b − l̄r)·LF_b + w·step_kl_b].
/// Returns the REINFORCE part's ∂L/∂LF_b; the KL part's gradient goes through the posterior's
/// step means ([`dpok_drift_seed`]). `loss` is the whole L, `log_z` the batch ELBO.
pub fn dpok(
    log_pf: &[f64],
    log_prior: &[f64],
    log_r: &[f64],
    step_kl: &[f64],
    kl_weight: f64,
) -> LossGrad {
    let n = log_pf.len() as f64;
    let mean_r = log_r.iter().sum::<f64>() / n;
    let mut loss = 0.0;
    let d_log_pf = (0..log_pf.len())
        .map(|b| {
            let adv = log_r[b] - mean_r;
            loss += -adv * log_pf[b] + kl_weight * step_kl[b];
            -adv / n
        })
        .collect();
    LossGrad {
        loss: loss / n,
        d_log_pf,
        d_log_z: 0.0,
        log_z: batch_elbo(log_pf, log_prior, log_r),
    }
}

/// One step's Gaussian KL ‖μ_φ − μ_θ‖²/(2σ²) between two steps from the same state that share
/// the variance σ² = `rate`·dt and differ in their drifts (μ = decay·x + u·dt), for one row's
/// drifts `u_post`, `u_prior` (`[D]`): dt·‖u_φ − u_θ‖²/(2·rate).
pub fn step_kl(u_post: &[f64], u_prior: &[f64], dt: f64, rate: f64) -> f64 {
    let sq: f64 = u_post
        .iter()
        .zip(u_prior)
        .map(|(&a, &b)| (a - b).powi(2))
        .sum();
    dt * sq / (2.0 * rate)
}

/// ∂(w/B · KL)/∂u_φ of one row's step ([`step_kl`]): (w/B)·dt·(u_φ − u_θ)/rate, `[D]`.
pub fn dpok_drift_seed(
    u_post: &[f64],
    u_prior: &[f64],
    dt: f64,
    rate: f64,
    kl_weight: f64,
    rows: usize,
) -> Vec<f64> {
    let c = kl_weight / rows as f64 * dt / rate;
    u_post
        .iter()
        .zip(u_prior)
        .map(|(&a, &b)| c * (a - b))
        .collect()
}

/// DDPO (spec rtb2024 §3.3): REINFORCE on R_b = `scale`·exp(lr_b) with the advantage whitened
/// over the batch, A_b = (R_b − R̄)/(std(R) + 1e-8), and no KL term:
/// L = −(1/B) Σ_b A_b·LF_b. `loss` and `log_z` report the batch −ELBO and ELBO as [`rl_kl`].
pub fn ddpo(log_pf: &[f64], log_prior: &[f64], log_r: &[f64], scale: f64) -> LossGrad {
    let n = log_pf.len() as f64;
    let reward: Vec<f64> = log_r.iter().map(|v| scale * v.exp()).collect();
    let mean = reward.iter().sum::<f64>() / n;
    let std = (reward.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / n).sqrt();
    let d_log_pf = reward
        .iter()
        .map(|r| -(r - mean) / (std + 1e-8) / n)
        .collect();
    let elbo = batch_elbo(log_pf, log_prior, log_r);
    LossGrad {
        loss: -elbo,
        d_log_pf,
        d_log_z: 0.0,
        log_z: elbo,
    }
}

/// Σ_i log N(x_{i+1}; μ_i, v_b) of trajectories whose per-step log N(x_{i+1}; μ_i, v) are
/// `step_log_pf` (`[B, T]`), for D-dimensional isotropic steps: the exploratory sampler's
/// density from the policy's, without the means. With q = log p + (D/2)·ln 2πv = −|x' − μ|²/2v,
/// log N(x'; μ, v_b) = q·v/v_b − (D/2)·ln 2πv_b.
pub fn behaviour_log_prob(
    step_log_pf: &[f64],
    steps: usize,
    dim: usize,
    v: f64,
    v_b: f64,
) -> Vec<f64> {
    let half_d = 0.5 * dim as f64;
    let c = half_d * (std::f64::consts::TAU * v).ln();
    let c_b = half_d * (std::f64::consts::TAU * v_b).ln();
    step_log_pf
        .chunks_exact(steps)
        .map(|row| row.iter().map(|&lp| (lp + c) * v / v_b - c_b).sum())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The importance weight's behaviour density equals a direct evaluation of the wider
    /// Gaussian.
    #[test]
    fn behaviour_density_from_policy_density() {
        let (d, v, v_b) = (3usize, 0.05, 0.3);
        let x = [0.3, -0.2, 0.7];
        let mu = [0.1, 0.4, 0.2];
        let log_n = |var: f64| -> f64 {
            x.iter()
                .zip(&mu)
                .map(|(a, m)| {
                    -0.5 * (a - m) * (a - m) / var - 0.5 * (std::f64::consts::TAU * var).ln()
                })
                .sum()
        };
        let got = behaviour_log_prob(&[log_n(v), log_n(v)], 2, d, v, v_b);
        assert!((got[0] - 2.0 * log_n(v_b)).abs() < 1e-12, "{got:?}");
    }

    /// Corrected RL: with equal advantages there is no gradient; its gradient sums to zero
    /// on-policy (the baseline) and is −w_b(A_b − Ā).
    #[test]
    fn corrected_rl_gradient_is_the_centred_advantage() {
        let lf = [1.0, 2.0, 0.5];
        let lp = [0.5, 0.5, 0.5];
        let lr = [0.0, 1.0, -1.0];
        let g = rl_kl(&lf, &lp, &lr, 1.0, None);
        let adv = [-0.5, -0.5, -1.0];
        let mean = -2.0 / 3.0;
        for (g, a) in g.d_log_pf.iter().zip(adv) {
            assert!((g + (a - mean) / 3.0).abs() < 1e-15);
        }
        assert!(g.d_log_pf.iter().sum::<f64>().abs() < 1e-15);
        assert!((g.log_z - mean).abs() < 1e-15);
        let flat = rl_kl(&[1.0, 1.0], &[0.0, 0.0], &[1.0, 1.0], 2.0, None);
        assert!(flat.d_log_pf.iter().all(|&v| v == 0.0));
    }

    /// DDPO's whitened advantage: the per-trajectory weights sum to 0 and have batch standard
    /// deviation 1/B (a unit-variance advantage over B).
    #[test]
    fn ddpo_advantage_is_whitened() {
        let lr = [-1.0, 0.5, -3.0, 0.0];
        let g = ddpo(&[0.0; 4], &[0.0; 4], &lr, 10.0);
        let n = 4.0;
        assert!(g.d_log_pf.iter().sum::<f64>().abs() < 1e-12);
        let var = g.d_log_pf.iter().map(|v| (v * n) * (v * n)).sum::<f64>() / n;
        assert!((var - 1.0).abs() < 1e-6, "{var}");
        // The largest reward gets the most negative ∂L/∂LF (pushed up).
        assert!(g.d_log_pf[1] < g.d_log_pf[0] && g.d_log_pf[1] < g.d_log_pf[3]);
    }
}
