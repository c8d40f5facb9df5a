//! Local search: parallel MALA with an adaptive step (spec §4.3; reference
//! `energy_sampling/langevin.py`, energy-code semantics).
//!
//! M independent chains start at the given states `x0` `[M, D]`. For k = 0 .. K:
//! 1. step size: η₀ at k = 0; afterwards η_k = η_{k−1} + f·η_{k−1} if the last *measured*
//!    acceptance rate is > the target, else η_{k−1} − f·η_{k−1} (constant η₀ without adaptation);
//! 2. proposal x' = x + η∇log R(x) + √(2η)·ξ, ξ ~ N(0, I_D);
//! 3. log α = β(log R(x') − log R(x)) + log q(x|x') − log q(x'|x), with
//!    log q(b|a) = −‖b − a − η∇log R(a)‖²/(4η);
//! 4. accept chain m iff u_m < exp(min(log α_m, 0)), u_m ~ U(0, 1) — one uniform per chain;
//! 5. if k > burn_in (strictly), append every accepted x' (chain order) with its log R;
//! 6. move accepted chains to x';
//! 7. if k ≡ 0 (mod W) — k = 0 included — the measured rate becomes accepted/proposed since the
//!    last measurement, and the counters reset.
//!
//! Which rate step 1 uses at iteration k (W = 5, the reference window): the rate of iteration 0
//! alone for k = 1 ..= 5; for k = 5m + 1 ..= 5m + 5 (m ≥ 1) the rate over iterations
//! 5m − 4 ..= 5m. So η changes by a factor 1 ± f at *every* iteration, and the direction is
//! re-decided every W iterations from the previous window. (The paper's pseudocode uses the
//! per-step rate and 1.1/0.9, spec §9 item 9; we follow the energy code.) A rate exactly equal to
//! the target shrinks η, as in the reference.
//!
//! Precision (a deliberate deviation): the reference runs everything in f32 tensors (η is a Python
//! float). Here the states stay f32 rows — that is what [`Energy`] takes — but the proposal, the
//! log q terms and log α are computed in f64 from the f32 operands, and x' is rounded to f32 once.
//! For small η the quantities in log q are differences of nearly equal numbers divided by 4η;
//! f64 keeps them exact enough that the MH correction is not swamped by rounding, and log α then
//! refers to the f32 state that is actually stored. η itself is f64 (as in the reference).
//!
//! Non-finite values: a proposal whose log α is NaN (a NaN gradient or log R) is rejected, since
//! `u < NaN` is false; the reference behaves the same way (`rand < exp(clamp(NaN))` is false).
//! Gradients are not clipped (the reference does not clip them here either).
//!
//! Random numbers, in a fixed order so a run is bitwise reproducible from the caller's stream:
//! per iteration, first the M·D normals ξ with [`rng::fill_normals`] (row-major `[M, D]`, chain
//! m's coordinates at m·D .. (m+1)·D), then M uniforms with [`rng::uniform_f64`], chain order.
//!
//! Cost: one batched `log_reward` and one `grad_log_reward` of M rows per iteration. ∇log R(x)
//! of the current states is carried over from the iteration that accepted them instead of being
//! recomputed as the reference does (same values: the energy is deterministic).

use crate::energies::Energy;
use crate::rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Knobs of one local-search call. The defaults are the energy code's: K = 200, burn-in 100,
/// η₀ = 0.001 (the CLI default; the Manywell README sets 0.1), f = 0.01, target 0.574, W = 5,
/// β = 1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSearchConfig {
    /// K, MALA iterations (`--max_iter_ls`).
    pub steps: usize,
    /// Samples are kept for iterations k > burn_in (`--burn_in`).
    pub burn_in: usize,
    /// η₀ (`--ld_step`), the step size at k = 0; it restarts at every call.
    pub step0: f64,
    /// f of the multiplicative step adaptation (`--ld_schedule`); `None` keeps η = η₀.
    pub adapt: Option<f64>,
    /// The acceptance rate the adaptation steers toward.
    pub target_acceptance: f64,
    /// W, iterations per acceptance-rate measurement.
    pub window: usize,
    /// β on the log-reward difference in log α only (the proposal keeps ∇log R); 1 for energies.
    pub beta: f64,
}

impl Default for LocalSearchConfig {
    fn default() -> Self {
        LocalSearchConfig {
            steps: 200,
            burn_in: 100,
            step0: 0.001,
            adapt: Some(0.01),
            target_acceptance: 0.574,
            window: 5,
            beta: 1.0,
        }
    }
}

impl LocalSearchConfig {
    /// Rejects impossible values with (field, message), like
    /// [`crate::config::ExperimentConfig::validate`].
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, msg: String| Err((field.to_string(), msg));
        if !(self.step0.is_finite() && self.step0 > 0.0) {
            return bad(
                "step0",
                format!("must be finite and positive, got {}", self.step0),
            );
        }
        if let Some(f) = self.adapt {
            if !(f.is_finite() && (0.0..1.0).contains(&f)) {
                return bad("adapt", format!("must be in [0, 1), got {f}"));
            }
        }
        if !(0.0..=1.0).contains(&self.target_acceptance) {
            return bad(
                "target_acceptance",
                format!("must be in [0, 1], got {}", self.target_acceptance),
            );
        }
        if self.window == 0 {
            return bad("window", "must be at least 1".to_string());
        }
        if !self.beta.is_finite() {
            return bad("beta", format!("must be finite, got {}", self.beta));
        }
        Ok(())
    }
}

/// What one local-search call produced.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalSearchOutput {
    /// `[S, D]`: every accepted proposal of iterations k > burn_in, iteration-major, chain order
    /// within an iteration.
    pub samples: Vec<f32>,
    /// `[S]`: log R of `samples`.
    pub log_r: Vec<f64>,
    /// `[S]`: the chain (start row) each sample came from — its condition, for a conditional
    /// target.
    pub sample_chains: Vec<u32>,
    /// `[M, D]`: the chains after the last iteration.
    pub final_states: Vec<f32>,
    /// `[M]`: log R of `final_states`.
    pub final_log_r: Vec<f64>,
    /// η used at the last iteration (η₀ when K = 0).
    pub final_step_size: f64,
    /// Accepted / proposed over all K iterations and M chains (burn-in included); 0 when K = 0.
    pub acceptance_rate: f64,
    /// `[K]`: η_k used at iteration k.
    pub step_sizes: Vec<f64>,
    /// `[K]`: accepted proposals at iteration k; S = Σ_{k > burn_in} accepted[k].
    pub accepted: Vec<u32>,
}

/// Parallel MALA with the energy code's adaptive step. See the module docs for the exact steps.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalSearch {
    pub config: LocalSearchConfig,
}

impl LocalSearch {
    /// Panics on an invalid config (validate configs before building runs).
    pub fn new(config: LocalSearchConfig) -> Self {
        if let Err((field, msg)) = config.validate() {
            panic!("local search: {field} {msg}");
        }
        LocalSearch { config }
    }

    /// Run K iterations from `x0` `[M, D]` (D = `energy.dim()`), drawing from `rng` in the
    /// documented order. Panics if `x0.len()` is not a multiple of D.
    pub fn run(&self, energy: &dyn Energy, x0: &[f32], rng: &mut ChaCha8Rng) -> LocalSearchOutput {
        let cfg = &self.config;
        let d = energy.dim();
        assert!(
            d > 0 && x0.len().is_multiple_of(d),
            "local search: {} values are not rows of dim {d}",
            x0.len()
        );
        let m = x0.len() / d;

        // Chain state: x [M, D], log R(x) [M], ∇log R(x) [M, D].
        let mut x = x0.to_vec();
        let mut log_r = vec![0.0f64; m];
        let mut grad = vec![0.0f32; m * d];
        energy.log_reward(&x, &mut log_r);
        energy.grad_log_reward(&x, &mut grad);

        // Per-iteration scratch: ξ [M, D], x' [M, D], log R(x') [M], ∇log R(x') [M, D], u [M].
        let mut xi = vec![0.0f32; m * d];
        let mut x_new = vec![0.0f32; m * d];
        let mut log_r_new = vec![0.0f64; m];
        let mut grad_new = vec![0.0f32; m * d];
        let mut accept = vec![false; m];

        let mut samples = Vec::new();
        let mut sample_log_r = Vec::new();
        let mut sample_chains = Vec::new();
        let mut step_sizes = Vec::with_capacity(cfg.steps);
        let mut accepted_per_iter = Vec::with_capacity(cfg.steps);

        let mut eta = cfg.step0;
        // The last measured window rate; the reference initialises it to 0, unused at k = 0.
        let mut rate = 0.0f64;
        let (mut window_accepted, mut window_proposed) = (0u64, 0u64);
        let mut total_accepted = 0u64;

        for k in 0..cfg.steps {
            // 1. Step size (the reference's `adjust_ld_step`: η ± f·η).
            if k > 0 {
                if let Some(f) = cfg.adapt {
                    eta = if rate > cfg.target_acceptance {
                        eta + f * eta
                    } else {
                        eta - f * eta
                    };
                }
            }
            step_sizes.push(eta);
            let noise_scale = (2.0 * eta).sqrt();

            // 2. Proposal: all normals of this iteration first.
            rng::fill_normals(rng, &mut xi);
            for j in 0..m * d {
                let step = eta * grad[j] as f64 + noise_scale * xi[j] as f64;
                x_new[j] = (x[j] as f64 + step) as f32;
            }
            energy.log_reward(&x_new, &mut log_r_new);
            energy.grad_log_reward(&x_new, &mut grad_new);

            // 3–4. MH test, then the uniforms, chain order.
            let mut n_acc = 0u32;
            for c in 0..m {
                let rows = c * d..(c + 1) * d;
                let log_a = log_accept_ratio(
                    &x[rows.clone()],
                    &grad[rows.clone()],
                    log_r[c],
                    &x_new[rows.clone()],
                    &grad_new[rows],
                    log_r_new[c],
                    eta,
                    cfg.beta,
                );
                let u = rng::uniform_f64(rng);
                accept[c] = u < log_a.min(0.0).exp();
                n_acc += accept[c] as u32;
            }

            // 5–6. Keep post-burn-in acceptances, then move the accepted chains.
            for c in 0..m {
                if !accept[c] {
                    continue;
                }
                let rows = c * d..(c + 1) * d;
                if k > cfg.burn_in {
                    samples.extend_from_slice(&x_new[rows.clone()]);
                    sample_log_r.push(log_r_new[c]);
                    sample_chains.push(c as u32);
                }
                x[rows.clone()].copy_from_slice(&x_new[rows.clone()]);
                grad[rows.clone()].copy_from_slice(&grad_new[rows]);
                log_r[c] = log_r_new[c];
            }
            accepted_per_iter.push(n_acc);
            total_accepted += n_acc as u64;

            // 7. Window measurement (k = 0 included).
            window_accepted += n_acc as u64;
            window_proposed += m as u64;
            if k.is_multiple_of(cfg.window) {
                rate = window_accepted as f64 / window_proposed as f64;
                window_accepted = 0;
                window_proposed = 0;
            }
        }

        let proposed = (cfg.steps * m) as f64;
        LocalSearchOutput {
            samples,
            log_r: sample_log_r,
            sample_chains,
            final_states: x,
            final_log_r: log_r,
            final_step_size: eta,
            acceptance_rate: if proposed > 0.0 {
                total_accepted as f64 / proposed
            } else {
                0.0
            },
            step_sizes,
            accepted: accepted_per_iter,
        }
    }
}

/// log α for one chain, in f64 from the f32 operands (rows of length D):
/// β(log R(x') − log R(x)) + log q(x|x') − log q(x'|x), log q(b|a) = −‖b − a − η∇log R(a)‖²/(4η).
/// The squared norms are summed in coordinate order.
#[allow(clippy::too_many_arguments)]
pub fn log_accept_ratio(
    x: &[f32],
    grad_x: &[f32],
    log_r_x: f64,
    x_new: &[f32],
    grad_new: &[f32],
    log_r_new: f64,
    eta: f64,
    beta: f64,
) -> f64 {
    let mut fwd = 0.0f64; // ‖x' − x − η∇log R(x)‖²
    let mut bwd = 0.0f64; // ‖x − x' − η∇log R(x')‖²
    for j in 0..x.len() {
        let (a, b) = (x[j] as f64, x_new[j] as f64);
        let rf = b - a - eta * grad_x[j] as f64;
        let rb = a - b - eta * grad_new[j] as f64;
        fwd += rf * rf;
        bwd += rb * rb;
    }
    let log_q_fwd = -fwd / (4.0 * eta);
    let log_q_bwd = -bwd / (4.0 * eta);
    beta * (log_r_new - log_r_x) + log_q_bwd - log_q_fwd
}

#[cfg(test)]
mod tests {
    use super::*;

    /// log α of a hand-worked 1-D case: x = 0, x' = 1, ∇ = (−1 at x' , 0 at x), η = 0.5,
    /// log R(x) = 0, log R(x') = −0.5:
    /// fwd = (1 − 0 − 0)² = 1 → log q(x'|x) = −1/2; bwd = (0 − 1 + 0.5)² = 0.25 → log q(x|x') =
    /// −0.125; log α = −0.5 − 0.125 + 0.5 = −0.125.
    #[test]
    fn log_accept_ratio_hand_case() {
        let la = log_accept_ratio(&[0.0], &[0.0], 0.0, &[1.0], &[-1.0], -0.5, 0.5, 1.0);
        assert_eq!(la, -0.125);
        // β scales the reward difference only: β = 2 → −1 − 0.125 + 0.5.
        let la2 = log_accept_ratio(&[0.0], &[0.0], 0.0, &[1.0], &[-1.0], -0.5, 0.5, 2.0);
        assert_eq!(la2, -0.625);
    }

    #[test]
    fn validate_rejects_impossible_values() {
        let ok = LocalSearchConfig::default();
        assert!(ok.validate().is_ok());
        let with = |f: fn(&mut LocalSearchConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            c.validate().unwrap_err().0
        };
        assert_eq!(with(|c| c.step0 = 0.0), "step0");
        assert_eq!(with(|c| c.step0 = f64::NAN), "step0");
        assert_eq!(with(|c| c.adapt = Some(1.0)), "adapt");
        assert_eq!(with(|c| c.window = 0), "window");
        assert_eq!(with(|c| c.target_acceptance = 1.5), "target_acceptance");
        assert_eq!(with(|c| c.beta = f64::INFINITY), "beta");
    }
}
