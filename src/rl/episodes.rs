//! Evaluation episodes of a Pendulum run's policies (spec rtb2024 §4.3 "eval", §4.5 B): the
//! diffusion policy itself (the BC prior or the RTB posterior), importance resampling of prior
//! actions, and IQL's AWR policy, each run for the task's evaluation episodes from the same
//! initial states (stream (seed, "pendulum-episode", k), [`super::pendulum::run_episodes`]).
//!
//! At environment step k every policy acts on the N episodes' observations `[N, S]` at once;
//! the diffusion policies' noise comes from stream (seed, "episode-policy", k), so an episode's
//! actions depend only on the seed, the step and its row.

use super::pendulum::{run_episodes, ACTION_DIM, OBS_DIM};
use crate::rng;
use crate::train::Trainer;

/// Which policy acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpisodePolicy {
    /// The trainer's own sampler: the BC prior for a prior run, the posterior for RTB.
    Diffusion,
    /// `pool` prior actions per observation, one kept with probability ∝ exp(w), w = β·log r
    /// (the prior's own importance weights against the posterior target).
    Resample { pool: usize },
    /// IQL's AWR policy (its deterministic action).
    Awr,
}

/// What the policy saw and did at every step of the evaluation episodes: observations
/// `[T·N, S]` and torques `[T·N]`, step-major (row t·N + i is episode i at step t).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpisodeLog {
    pub obs: Vec<f32>,
    pub torques: Vec<f32>,
}

impl Trainer {
    /// The undiscounted returns of the task's evaluation episodes under `policy`. Panics
    /// without a Pendulum target, or for `Awr` without a critic.
    pub fn episode_returns(&self, policy: EpisodePolicy) -> Vec<f64> {
        let n = self
            .pendulum()
            .expect("episodes need a Pendulum target")
            .episodes;
        self.scored_episodes(policy, n, None)
    }

    /// The returns of `n` episodes from the evaluation's initial states (the task's own
    /// evaluation runs the first `task.episodes` of them), also filling `log` with every
    /// step's observations and torques when given (the returns are the same either way).
    pub fn scored_episodes(
        &self,
        policy: EpisodePolicy,
        n: usize,
        mut log: Option<&mut EpisodeLog>,
    ) -> Vec<f64> {
        let task = self.pendulum().expect("episodes need a Pendulum target");
        let seed = self.cfg.seed;
        let mut act = |step: usize, obs: &[f32]| -> Vec<f32> {
            let key = rng::stream_key(seed, "episode-policy", step as u64);
            let torques = match policy {
                EpisodePolicy::Diffusion => {
                    let (_, u) = self.sample_with_conditions(n, Some(obs), key);
                    u.iter().map(|&v| task.action.torque(v)).collect()
                }
                EpisodePolicy::Resample { pool } => {
                    // Row i·pool + p holds candidate p of observation i.
                    let tiled: Vec<f32> = obs
                        .chunks_exact(OBS_DIM)
                        .flat_map(|o| std::iter::repeat_n(o, pool).flatten().copied())
                        .collect();
                    let (w, u) = self.sample_with_conditions(n * pool, Some(&tiled), key);
                    let mut pick = rng::stream(seed, "episode-resample", step as u64);
                    (0..n)
                        .map(|i| {
                            let cdf =
                                rng::exp_weight_cdf(w[i * pool..(i + 1) * pool].iter().copied());
                            let k = i * pool + rng::pick_from_cdf(&cdf, &mut pick);
                            task.action.torque(u[k * ACTION_DIM])
                        })
                        .collect()
                }
                EpisodePolicy::Awr => task
                    .critic
                    .as_ref()
                    .expect("the AWR policy is trained with the critic")
                    .policy_action(obs),
            };
            if let Some(log) = log.as_deref_mut() {
                log.obs.extend_from_slice(obs);
                log.torques.extend_from_slice(&torques);
            }
            torques
        };
        run_episodes(n, seed, &mut act)
    }
}
