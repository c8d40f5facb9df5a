//! The diffusion sampler: Euler–Maruyama forward policy p_F, fixed Brownian-bridge backward
//! policy p_B (spec §2.1–2.3), exploration, and rollouts recorded on the tape.

pub mod bridge;
pub mod exploration;
pub mod pis;
pub mod rollout;

pub use bridge::{log_pb_step, sample_backward_states};
pub use exploration::explore_std;
pub use rollout::{rollout, Path, Rollout};

use crate::config::ExperimentConfig;

/// The time grid and noise scale shared by p_F and p_B.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampler {
    /// D.
    pub dim: usize,
    /// T.
    pub steps: usize,
    /// σ².
    pub sigma2: f64,
    /// `Some(range)` when the log-variance is learned: ℓ = log σ² + range·tanh(v).
    pub learned_range: Option<f64>,
    /// Clip of ∇log R in the Langevin term.
    pub lgv_clip: f64,
}

impl Sampler {
    pub fn from_config(cfg: &ExperimentConfig) -> Self {
        Sampler {
            dim: cfg.dim(),
            steps: cfg.sampler.steps,
            sigma2: cfg.sampler.sigma2,
            learned_range: cfg
                .sampler
                .learned_variance
                .then_some(cfg.sampler.log_var_range),
            lgv_clip: cfg.network.lgv_clip,
        }
    }

    /// dt = 1/T.
    pub fn dt(&self) -> f64 {
        1.0 / self.steps as f64
    }

    /// t_i = i·dt for i = 0..T−1 (the times at which the policy is evaluated).
    pub fn times(&self) -> Vec<f64> {
        (0..self.steps).map(|i| i as f64 * self.dt()).collect()
    }
}
