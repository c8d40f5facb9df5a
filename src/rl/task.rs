//! The Pendulum as a conditional target (spec rtb2024 §4.2–4.3, §4.5 B): the offline data a run
//! trains on, the critic's log-reward, and the scores of evaluation episodes.
//!
//! * Each row's condition is its observation s = (cos θ, sin θ, θ̇) (`[B, 3]`), its state the
//!   policy action u (`[B, 1]`). By default u is pre-tanh: the executed torque is a = 2·tanh(u),
//!   and dataset torques map back by u = artanh(clip(a/2, ±0.99)) (the paper's transform, for a
//!   torque limit of 2). [`ActionSpace::Clipped`] diffuses u = a/2 instead.
//! * log r(s, u) = Q(s, 2 tanh u) + α·Σ_j log(1 − tanh²u_j + 1e-7) (spec §4.2 `[code]`), so that
//!   with β = 1/α the posterior targets μ(u|s)·exp(Q/α)·|det J_tanh(u)|, the pre-tanh image of
//!   π*(a|s) ∝ μ(a|s)·exp(Q(s, a)/α). With `Clipped`, log r = Q(s, 2·clip(u, ±1)).
//! * Q = min of IQL's twin target critics ([`crate::rl::iql`]), trained on the same dataset
//!   with rewards scaled by 1000/(max return − min return) over the dataset's episodes, as the
//!   reference does for locomotion. (The reference's extraction reads the online critics; the
//!   target ones are their slow EMA, the smoother of the two.)
//!
//! Shapes: B rows, S = 3 observation dims, A = 1 action dim, N dataset transitions, M test states.

use super::iql::{Iql, IqlConfig, OfflineData};
use super::pendulum::{self, Dataset, DatasetKind, ScoreScale, ACTION_DIM, MAX_TORQUE, OBS_DIM};
use crate::energies::Energy;
use crate::metrics::mean;
use crate::rng;
use serde::{Deserialize, Serialize};

/// Episodes per policy behind the score normaliser (random and expert mean returns).
pub const SCALE_EPISODES: usize = 100;

/// The space a Pendulum policy diffuses its torque in (A = 1 either way).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ActionSpace {
    /// The paper's (spec §4.2): u = artanh(clip(a/2, ±0.99)), executed a = 2·tanh(u), and log r
    /// carries α·log|det J_tanh(u)|. A saturated torque lands at u = ±2.65, far in the tail of
    /// the data's u (standard deviation 0.77–0.87 on this crate's datasets).
    #[default]
    PreTanh,
    /// u = a/2, executed a = 2·clip(u, ±1): a saturated torque sits at u = ±1, inside the
    /// data's spread. Meant for a DDPM with x̂0 clipped to [−1, 1], the vision code's bounded
    /// data. log r = Q(s, 2·clip(u, ±1)) with no Jacobian term: inside the bounds the map is
    /// linear, so π*(a|s) ∝ μ(a|s)·exp(Q(s, a)/α) needs none.
    Clipped,
}

impl ActionSpace {
    pub fn is_pre_tanh(&self) -> bool {
        *self == ActionSpace::PreTanh
    }

    /// The executed torque of a policy action u.
    pub fn torque(self, u: f32) -> f32 {
        let m = MAX_TORQUE as f32;
        match self {
            ActionSpace::PreTanh => m * u.tanh(),
            ActionSpace::Clipped => m * u.clamp(-1.0, 1.0),
        }
    }

    /// The policy action of a dataset torque: artanh(clip(a/2, ±0.99)), or a/2.
    pub fn from_torque(self, a: f64) -> f64 {
        match self {
            ActionSpace::PreTanh => (a / MAX_TORQUE).clamp(-0.99, 0.99).atanh(),
            ActionSpace::Clipped => a / MAX_TORQUE,
        }
    }

    /// da/du at u (f64): 2·(1 − tanh²u), or 2 inside the bounds and 0 outside (the clip).
    fn torque_slope(self, u: f64) -> f64 {
        match self {
            ActionSpace::PreTanh => {
                let t = u.tanh();
                MAX_TORQUE * (1.0 - t * t)
            }
            ActionSpace::Clipped if u.abs() < 1.0 => MAX_TORQUE,
            ActionSpace::Clipped => 0.0,
        }
    }

    /// The per-dimension log-Jacobian term of log r (before α) and its derivative in u: the
    /// tanh log-Jacobian with the reference's guard against log 0, or none.
    fn log_jacobian(self, u: f64) -> (f64, f64) {
        match self {
            ActionSpace::PreTanh => {
                let t = u.tanh();
                let inner = 1.0 - t * t + 1e-7;
                (inner.ln(), -2.0 * t * (1.0 - t * t) / inner)
            }
            ActionSpace::Clipped => (0.0, 0.0),
        }
    }
}

/// `m` rows spread evenly over `n` dataset rows: row k·n/m for k = 0..m (where the test states
/// and `repro actions` look).
pub fn evenly_spaced_rows(n: usize, m: usize) -> impl Iterator<Item = usize> {
    (0..m).map(move |k| k * n / m)
}

/// The dataset, its conditions, the critic (once trained or loaded) and the evaluation setup.
pub struct PendulumTask {
    /// What the policy's u is ([`ActionSpace`]).
    pub action: ActionSpace,
    pub dataset: Dataset,
    /// Observations `[N, S]` and policy actions u `[N, A]` of the dataset's transitions.
    pub obs: Vec<f32>,
    pub u: Vec<f32>,
    /// 1000/(max − min episode return): the critic's reward scale.
    pub reward_scale: f64,
    /// Trajectories per state per iteration.
    pub repeats: usize,
    /// `[M, S]`: evenly spaced dataset observations, where the estimators are scored.
    pub test_states: Vec<f32>,
    /// Evaluation episodes per score.
    pub episodes: usize,
    pub iql: IqlConfig,
    /// α = 1/β of the posterior (∞ for the prior).
    pub alpha: f64,
    pub critic: Option<Iql>,
    pub scale: ScoreScale,
    /// Score a posterior's actions by the exact Q^E instead of the critic (`target.oracle_q`).
    pub oracle_q: bool,
}

impl PendulumTask {
    /// The task of a `Pendulum` target: the dataset is a pure function of (kind, episodes,
    /// data seed), so a prior and its posteriors (of any run seed) see the same transitions.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        action: ActionSpace,
        kind: DatasetKind,
        data_episodes: usize,
        data_seed: u64,
        repeats: usize,
        test_states: usize,
        episodes: usize,
        iql: IqlConfig,
        alpha: f64,
    ) -> Self {
        let dataset = pendulum::dataset(kind, data_episodes, data_seed);
        let mut obs = Vec::with_capacity(dataset.transitions.len() * OBS_DIM);
        let mut u = Vec::with_capacity(dataset.transitions.len() * ACTION_DIM);
        for t in &dataset.transitions {
            obs.extend(t.obs.iter().map(|&v| v as f32));
            u.push(action.from_torque(t.action) as f32);
        }
        let (lo, hi) = dataset
            .episode_returns
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &r| {
                (lo.min(r), hi.max(r))
            });
        // A dataset whose episodes all return the same keeps the rewards as they are.
        let reward_scale = if hi > lo { 1000.0 / (hi - lo) } else { 1.0 };
        let test_states = evenly_spaced_rows(dataset.transitions.len(), test_states)
            .flat_map(|row| obs[row * OBS_DIM..(row + 1) * OBS_DIM].to_vec())
            .collect();
        PendulumTask {
            action,
            dataset,
            obs,
            u,
            reward_scale,
            repeats,
            test_states,
            episodes,
            iql,
            alpha,
            critic: None,
            scale: pendulum::score_scale(SCALE_EPISODES),
            oracle_q: false,
        }
    }

    /// The transitions as IQL reads them, rewards scaled by [`Self::reward_scale`].
    pub fn offline_data(&self) -> OfflineData {
        let tr = &self.dataset.transitions;
        OfflineData {
            obs: self.obs.clone(),
            actions: tr.iter().map(|t| t.action as f32).collect(),
            rewards: tr
                .iter()
                .map(|t| (t.reward * self.reward_scale) as f32)
                .collect(),
            next_obs: tr
                .iter()
                .flat_map(|t| t.next_obs.map(|v| v as f32))
                .collect(),
            terminals: tr
                .iter()
                .map(|t| if t.terminal { 1.0 } else { 0.0 })
                .collect(),
            obs_dim: OBS_DIM,
            action_dim: ACTION_DIM,
        }
    }

    /// M, the number of test states.
    pub fn test_state_count(&self) -> usize {
        self.test_states.len() / OBS_DIM
    }

    /// Iteration `it`'s training states, tiled: `[R·B, S]`, B dataset observations drawn
    /// uniformly with replacement from stream (seed, "pendulum-states", it), repeat-major.
    pub fn training_conditions(&self, seed: u64, it: usize, b: usize) -> Vec<f32> {
        let mut stream = rng::stream(seed, "pendulum-states", it as u64);
        let n = (self.obs.len() / OBS_DIM) as u32;
        let one: Vec<f32> = (0..b)
            .flat_map(|_| {
                let row = rng::below(&mut stream, n) as usize;
                self.obs[row * OBS_DIM..(row + 1) * OBS_DIM].to_vec()
            })
            .collect();
        crate::conditional::tile(&one, self.repeats)
    }

    /// ε-MSE data of iteration `it`: B transitions drawn uniformly with replacement from stream
    /// (seed, "data", it): pre-tanh actions `[B, A]` and their observations `[B, S]`.
    pub fn data_batch(&self, seed: u64, it: usize, b: usize) -> (Vec<f32>, Vec<f32>) {
        let mut stream = rng::stream(seed, "data", it as u64);
        let n = self.u.len() as u32;
        let mut u = Vec::with_capacity(b);
        let mut s = Vec::with_capacity(b * OBS_DIM);
        for _ in 0..b {
            let row = rng::below(&mut stream, n) as usize;
            u.push(self.u[row]);
            s.extend_from_slice(&self.obs[row * OBS_DIM..(row + 1) * OBS_DIM]);
        }
        (u, s)
    }

    /// The evaluation conditions of `n` rows: row k holds test state k mod M (`[n, S]`).
    pub fn eval_conditions(&self, n: usize) -> Vec<f32> {
        let m = self.test_state_count();
        (0..n)
            .flat_map(|k| self.test_states[(k % m) * OBS_DIM..(k % m + 1) * OBS_DIM].to_vec())
            .collect()
    }

    /// Train the critic on the dataset (IQL, stream family `seed`) and keep it.
    pub fn train_critic(&mut self, seed: u64) -> Result<(), String> {
        let data = self.offline_data();
        let iql = Iql::train(&data, &self.iql, seed, &mut |_, _| {})?;
        self.critic = Some(iql);
        Ok(())
    }

    /// Take a critic saved by the prior run (its flat parameters).
    pub fn load_critic(&mut self, flat: &[f32]) -> Result<(), String> {
        self.critic = Some(Iql::from_flat(&self.iql, OBS_DIM, ACTION_DIM, flat)?);
        Ok(())
    }

    /// The critic that scores actions: a posterior's (α finite). A prior run trains a critic
    /// too, but its own log r stays 0 (α = ∞ would make the Jacobian term infinite).
    fn scoring_critic(&self) -> Option<&Iql> {
        self.critic.as_ref().filter(|_| self.alpha.is_finite())
    }

    /// The mean normalised score of the dataset's own episodes (the behaviour policy's level).
    pub fn dataset_score(&self) -> f64 {
        let r = &self.dataset.episode_returns;
        self.scale.normalised(mean(r))
    }

    /// The scores of `returns`.
    pub fn stats(&self, returns: &[f64]) -> EpisodeScores {
        let scores: Vec<f64> = returns.iter().map(|&r| self.scale.normalised(r)).collect();
        let (score, score_std) = mean_and_std(&scores);
        EpisodeScores {
            score,
            score_std,
            mean_return: mean(returns),
            dataset_score: self.dataset_score(),
            random_return: self.scale.random,
            expert_return: self.scale.expert,
            awr_score: None,
            mean_q: None,
            q_spread: None,
        }
    }

    /// (mean Q, mean within-state std of Q) of final samples `u` (`[n, A]`), row k at test
    /// state k mod M; `None` without a critic. Sums run in row order.
    pub fn q_stats(&self, u: &[f32]) -> Option<(f64, f64)> {
        let critic = self.critic.as_ref()?;
        let n = u.len() / ACTION_DIM;
        let m = self.test_state_count();
        let torques: Vec<f32> = u.iter().map(|&v| self.action.torque(v)).collect();
        let q: Vec<f64> = critic
            .q(&self.eval_conditions(n), &torques)
            .iter()
            .map(|&v| v as f64)
            .collect();
        let spreads: Vec<f64> = (0..m)
            .map(|j| {
                let vals: Vec<f64> = q.iter().skip(j).step_by(m).copied().collect();
                mean_and_std(&vals).1
            })
            .collect();
        Some((mean(&q), mean(&spreads)))
    }
}

/// The mean and the population standard deviation of `xs`, summed in order.
fn mean_and_std(xs: &[f64]) -> (f64, f64) {
    let mu = mean(xs);
    let var = mean(&xs.iter().map(|x| (x - mu) * (x - mu)).collect::<Vec<_>>());
    (mu, var.sqrt())
}

/// What a Pendulum run reports: the policy's evaluation episodes, normalised as D4RL does,
/// 100·(R − R_random)/(R_expert − R_random).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpisodeScores {
    /// Mean normalised score over the evaluation episodes.
    pub score: f64,
    /// Its standard deviation over the episodes (population form).
    pub score_std: f64,
    pub mean_return: f64,
    /// The dataset's own episodes, normalised.
    pub dataset_score: f64,
    pub random_return: f64,
    pub expert_return: f64,
    /// The prior run only: IQL's own AWR policy on the same episodes.
    pub awr_score: Option<f64>,
    /// With a critic: the mean of Q(s, 2 tanh u) over the final samples at the test states…
    pub mean_q: Option<f64>,
    /// …and the mean over test states of Q's standard deviation across that state's samples
    /// (the spread that β = 1/α scales: it sets how sharp the target is).
    pub q_spread: Option<f64>,
}

/// The Pendulum's log r of a batch whose row b is conditioned on observation `states[b]`:
/// Q(s, 2 tanh u) + α·log|det J_tanh(u)| for a posterior, 0 for the BC prior (which has no
/// reward: it is scored by its episodes).
pub struct PendulumBatch<'a> {
    pub task: &'a PendulumTask,
    /// `[B, S]`.
    pub states: &'a [f32],
}

/// The torque step of the oracle's central-difference gradient.
const ORACLE_FD_STEP: f64 = 1e-3;

impl PendulumBatch<'_> {
    /// Q^E of each row's torque at its state, in the critic's unit (`target.oracle_q`).
    fn oracle_q(&self, torques: &[f32]) -> Vec<f64> {
        crate::rl::critic_check::expert_q_batch(
            self.states,
            torques,
            self.task.iql.discount,
            self.task.reward_scale,
        )
    }

    fn torques(&self, u: &[f32]) -> Vec<f32> {
        assert_eq!(
            u.len() * OBS_DIM,
            self.states.len() * ACTION_DIM,
            "one observation per action row"
        );
        u.iter().map(|&v| self.task.action.torque(v)).collect()
    }
}

impl Energy for PendulumBatch<'_> {
    fn name(&self) -> String {
        "pendulum-batch".into()
    }
    fn dim(&self) -> usize {
        ACTION_DIM
    }
    fn log_reward_row(&self, _x: &[f32]) -> f64 {
        panic!("a Pendulum batch scores whole batches (each action against its own state)")
    }
    fn log_reward(&self, u: &[f32], out: &mut [f64]) {
        let Some(critic) = self.task.scoring_critic() else {
            out.fill(0.0);
            return;
        };
        let torques = self.torques(u);
        let q: Vec<f64> = if self.task.oracle_q {
            self.oracle_q(&torques)
        } else {
            critic
                .q(self.states, &torques)
                .iter()
                .map(|&v| v as f64)
                .collect()
        };
        for (b, o) in out.iter_mut().enumerate() {
            let jac: f64 = u[b * ACTION_DIM..(b + 1) * ACTION_DIM]
                .iter()
                .map(|&v| self.task.action.log_jacobian(v as f64).0)
                .sum();
            *o = q[b] + self.task.alpha * jac;
        }
    }
    fn grad_log_reward(&self, u: &[f32], grad: &mut [f32]) {
        let Some(critic) = self.task.scoring_critic() else {
            grad.fill(0.0);
            return;
        };
        let torques = self.torques(u);
        let dq_da: Vec<f32> = if self.task.oracle_q {
            // Central differences in the torque, inside the clip's ±2.
            let h = ORACLE_FD_STEP as f32;
            let shifted = |sign: f32| -> Vec<f32> {
                torques
                    .iter()
                    .map(|&a| (a + sign * h).clamp(-2.0, 2.0))
                    .collect()
            };
            let (up, down) = (shifted(1.0), shifted(-1.0));
            let (qu, qd) = (self.oracle_q(&up), self.oracle_q(&down));
            (0..torques.len())
                .map(|b| ((qu[b] - qd[b]) / (up[b] - down[b]).max(f32::MIN_POSITIVE) as f64) as f32)
                .collect()
        } else {
            critic.q_and_action_grad(self.states, &torques).1
        };
        let space = self.task.action;
        for ((g, &v), &dq) in grad.iter_mut().zip(u).zip(&dq_da) {
            let v = v as f64;
            *g = (dq as f64 * space.torque_slope(v) + self.task.alpha * space.log_jacobian(v).1)
                as f32;
        }
    }
}

/// The Pendulum target before a state is given: all scoring goes through [`PendulumBatch`];
/// this only names the target and its dimension (there is no closed-form density to shade).
pub struct PendulumTarget;

impl Energy for PendulumTarget {
    fn name(&self) -> String {
        "pendulum".into()
    }
    fn dim(&self) -> usize {
        ACTION_DIM
    }
    fn log_reward_row(&self, _x: &[f32]) -> f64 {
        panic!("the Pendulum scores actions against their observations: use PendulumBatch")
    }
}
