//! Conditional sampling for the VAE latent posterior (spec §1.6, §2.5, §3 `cond-tb-avg`): the
//! data a run needs and the per-batch energy that scores row b given its own image.
//!
//! Layout: an iteration trains on B conditions (training images), each tiled R times
//! repeat-major, so row r·B + b of the [R·B, ·] batch holds condition b, as the reference does.

use crate::energies::vae::{self, MnistTrain, VaeEnergy, VaeError, LATENT, PIXELS};
use crate::energies::Energy;
use crate::rng;
use std::path::Path;

/// The frozen VAE, its training images (the conditions sampled during training) and the 100
/// evaluation images.
pub struct VaeTask {
    pub energy: VaeEnergy,
    pub train: MnistTrain,
    /// `[100, 784]`.
    pub eval: Vec<f32>,
    /// R, trajectories per condition in training.
    pub repeats: usize,
}

impl VaeTask {
    /// Load and checksum everything from `data_dir` (the project's `data/` folder).
    pub fn load(data_dir: &Path, repeats: usize) -> Result<Self, VaeError> {
        Ok(VaeTask {
            energy: VaeEnergy::load(data_dir)?,
            train: MnistTrain::load(data_dir)?,
            eval: vae::load_eval_images(data_dir)?,
            repeats,
        })
    }

    /// The number of evaluation images (one trajectory each, spec §6).
    pub fn eval_count(&self) -> usize {
        self.eval.len() / PIXELS
    }

    /// Iteration `it`'s conditions, tiled: `[R·B, 784]`. The B images are drawn uniformly with
    /// replacement from stream (seed, "vae-conditions", it) — the reference walks a shuffled
    /// loader instead; both give i.i.d.-uniform images within an iteration, and keying by the
    /// iteration keeps resumed runs bitwise identical.
    pub fn training_conditions(&self, seed: u64, it: usize, b: usize) -> Vec<f32> {
        let mut stream = rng::stream(seed, "vae-conditions", it as u64);
        let n = self.train.len() as u32;
        let picks: Vec<usize> = (0..b)
            .map(|_| rng::below(&mut stream, n) as usize)
            .collect();
        let mut one = vec![0f32; b * PIXELS];
        self.train.gather(&picks, &mut one);
        tile(&one, self.repeats)
    }
}

/// `[B, C]` → `[R·B, C]`, repeat-major.
pub fn tile(rows: &[f32], repeats: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * repeats);
    for _ in 0..repeats {
        out.extend_from_slice(rows);
    }
    out
}

/// Replay-buffer entries of a forward batch: for each of the B conditions, the terminal state
/// with the highest log R among its R repeats (rows r·B + b), joined with its image as a
/// `[z | x]` row. `x_t` is `[R·B, D]`, `images` `[R·B, 784]`; returns (`[B, D + 784]`, `[B]`).
/// The reference reshapes the repeat-major batch as (B, R) here and so pairs states with the
/// wrong images (spec §9 item 13); this takes the argmax over r for each b.
pub fn best_of_repeats(
    x_t: &[f32],
    log_r: &[f64],
    images: &[f32],
    b: usize,
    d: usize,
) -> (Vec<f32>, Vec<f64>) {
    let repeats = log_r.len() / b;
    let mut entries = Vec::with_capacity(b * (d + PIXELS));
    let mut best_log_r = Vec::with_capacity(b);
    for c in 0..b {
        // The first maximum in repeat order (ties keep the earliest repeat).
        let mut best = c;
        for r in 1..repeats {
            let row = r * b + c;
            if log_r[row] > log_r[best] {
                best = row;
            }
        }
        entries.extend_from_slice(&x_t[best * d..(best + 1) * d]);
        entries.extend_from_slice(&images[best * PIXELS..(best + 1) * PIXELS]);
        best_log_r.push(log_r[best]);
    }
    (entries, best_log_r)
}

/// `[z | x]` entries (`[N, D + 784]`) → (z `[N, D]`, x `[N, 784]`).
pub fn split_entries(entries: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
    let width = d + PIXELS;
    let n = entries.len() / width;
    let mut z = Vec::with_capacity(n * d);
    let mut x = Vec::with_capacity(n * PIXELS);
    for row in entries.chunks_exact(width) {
        z.extend_from_slice(&row[..d]);
        x.extend_from_slice(&row[d..]);
    }
    (z, x)
}

/// Local-search samples `[S, D]` joined with the image of the chain each came from
/// (`chains[s]` indexes `images` `[M, 784]`): `[S, D + 784]`.
pub fn join_entries(samples: &[f32], chains: &[u32], images: &[f32], d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(chains.len() * (d + PIXELS));
    for (z, &c) in samples.chunks_exact(d).zip(chains) {
        let c = c as usize;
        out.extend_from_slice(z);
        out.extend_from_slice(&images[c * PIXELS..(c + 1) * PIXELS]);
    }
    out
}

/// The VAE energy of a batch whose row b is conditioned on `images[b]`: the batched methods
/// score each latent against its own image. A single row has no image of its own, so the
/// per-row methods are refused.
pub struct ConditionedBatch<'a> {
    pub energy: &'a VaeEnergy,
    /// `[B, 784]`.
    pub images: &'a [f32],
}

impl Energy for ConditionedBatch<'_> {
    fn name(&self) -> String {
        "vae-posterior-batch".into()
    }
    fn dim(&self) -> usize {
        LATENT
    }
    fn log_reward_row(&self, _x: &[f32]) -> f64 {
        panic!("a conditioned batch scores whole batches (each row against its own image)")
    }
    fn log_reward(&self, x: &[f32], out: &mut [f64]) {
        self.energy.log_reward(x, self.images, out);
    }
    fn grad_log_reward(&self, x: &[f32], grad: &mut [f32]) {
        self.energy.grad_log_reward(x, self.images, grad);
    }
}

/// The contextual bandit (spec rtb2024 §4.5 A) as a conditional target: each row's condition is
/// its state s (`[B, 1]`), its state the action a (`[B, 2]`).
pub struct BanditTask {
    /// μ, R and α (α = 1/β of the posterior; ∞ for the prior, which is scored against μ).
    pub bandit: crate::energies::bandit::Bandit,
    /// The offline tuples (s, a0, a1, R), `[N, 4]`.
    pub data: Vec<[f64; 4]>,
    /// Trajectories per state per iteration.
    pub repeats: usize,
    /// The evaluation states.
    pub test_states: Vec<f64>,
}

/// An offline-RL target's temperature α for `cfg`: π* ∝ μ·exp(Q/α) is the RTB target with
/// log r = Q and β = 1/α; a prior (no posterior) is scored against μ itself (α = ∞).
pub fn offline_alpha(cfg: &crate::config::ExperimentConfig) -> f64 {
    cfg.posterior
        .as_ref()
        .map_or(f64::INFINITY, |p| 1.0 / p.beta)
}

/// The width of the bandit's condition: the state s.
pub const BANDIT_COND: usize = 1;

impl BanditTask {
    /// The task of a `Bandit` target; `alpha` = 1/β (∞ without a posterior). The offline data
    /// come from stream (`seed`, "bandit-dataset", 0), so every run of a seed (the prior and its
    /// posteriors) sees the same tuples.
    pub fn new(alpha: f64, data: usize, repeats: usize, test_states: usize, seed: u64) -> Self {
        let bandit = crate::energies::bandit::Bandit::standard(alpha);
        BanditTask {
            data: bandit.dataset(data, seed),
            bandit,
            repeats,
            test_states: crate::energies::bandit::test_states(test_states),
        }
    }

    /// Iteration `it`'s training states, tiled: `[R·B, 1]`, B states s ~ U[−1, 1] from stream
    /// (seed, "bandit-states", it), repeat-major as [`tile`] lays them out.
    pub fn training_conditions(&self, seed: u64, it: usize, b: usize) -> Vec<f32> {
        let mut stream = rng::stream(seed, "bandit-states", it as u64);
        let states: Vec<f32> = (0..b)
            .map(|_| (2.0 * rng::uniform_f64(&mut stream) - 1.0) as f32)
            .collect();
        tile(&states, self.repeats)
    }

    /// The evaluation conditions of `n` rows: row k holds test state k mod M (`[n, 1]`).
    pub fn eval_conditions(&self, n: usize) -> Vec<f32> {
        let m = self.test_states.len();
        (0..n).map(|k| self.test_states[k % m] as f32).collect()
    }

    /// ε-MSE data of iteration `it`: B tuples drawn uniformly with replacement from stream
    /// (seed, "data", it): actions `[B, 2]` and their states `[B, 1]`.
    pub fn data_batch(&self, seed: u64, it: usize, b: usize) -> (Vec<f32>, Vec<f32>) {
        let mut stream = rng::stream(seed, "data", it as u64);
        let n = self.data.len() as u32;
        let mut actions = Vec::with_capacity(2 * b);
        let mut states = Vec::with_capacity(b);
        for _ in 0..b {
            let [s, a0, a1, _] = self.data[rng::below(&mut stream, n) as usize];
            actions.extend([a0 as f32, a1 as f32]);
            states.push(s as f32);
        }
        (actions, states)
    }
}

/// The bandit's log r = Q = R(s_b, a_b) of a batch whose row b holds state `states[b]`.
pub struct BanditBatch<'a> {
    pub bandit: &'a crate::energies::bandit::Bandit,
    /// `[B, 1]`.
    pub states: &'a [f32],
}

impl BanditBatch<'_> {
    fn pairs<'b>(&'b self, x: &'b [f32]) -> impl Iterator<Item = (f64, [f64; 2])> + 'b {
        assert_eq!(x.len(), 2 * self.states.len(), "one state per action row");
        self.states
            .iter()
            .zip(x.chunks_exact(2))
            .map(|(&s, a)| (s as f64, [a[0] as f64, a[1] as f64]))
    }
}

impl Energy for BanditBatch<'_> {
    fn name(&self) -> String {
        "bandit-batch".into()
    }
    fn dim(&self) -> usize {
        2
    }
    fn log_reward_row(&self, _x: &[f32]) -> f64 {
        panic!("a bandit batch scores whole batches (each action against its own state)")
    }
    fn log_reward(&self, x: &[f32], out: &mut [f64]) {
        for (o, (s, a)) in out.iter_mut().zip(self.pairs(x)) {
            *o = self.bandit.reward(s, a);
        }
    }
    fn grad_log_reward(&self, x: &[f32], grad: &mut [f32]) {
        for (g, (s, a)) in grad.chunks_exact_mut(2).zip(self.pairs(x)) {
            let d = self.bandit.grad_reward(s, a);
            g[0] = d[0] as f32;
            g[1] = d[1] as f32;
        }
    }
}

/// The bandit target before a state is given: all training and evaluation scoring goes
/// through [`BanditBatch`]; on its own it is the average over the test states of the
/// unnormalised targets μ(a|s)·exp(R(s, a)/α), which is what the figures shade (each state's
/// normaliser is the same: μ and R rotate together).
pub struct BanditTarget {
    pub bandit: crate::energies::bandit::Bandit,
    pub test_states: Vec<f64>,
}

impl Energy for BanditTarget {
    fn name(&self) -> String {
        "bandit".into()
    }
    fn dim(&self) -> usize {
        2
    }
    fn log_reward_row(&self, x: &[f32]) -> f64 {
        let a = [x[0] as f64, x[1] as f64];
        let logs: Vec<f64> = self
            .test_states
            .iter()
            .map(|&s| self.bandit.target_log_density_unnorm(s, a))
            .collect();
        crate::metrics::logmeanexp(&logs)
    }
}

/// A state-conditioned offline-RL target: the contextual bandit (§4.5 A) or the Pendulum
/// (§4.5 B). Both train a DDPM prior on offline (state, action) pairs and posteriors on
/// dataset or sampled states, `repeats` trajectories each, and are scored at fixed test states.
pub enum OfflineTask {
    Bandit(BanditTask),
    /// Boxed: the Pendulum's dataset and critic make it much larger than the bandit.
    Pendulum(Box<crate::rl::task::PendulumTask>),
}

impl OfflineTask {
    /// The width of each row's condition (the state).
    pub fn cond_dim(&self) -> usize {
        match self {
            OfflineTask::Bandit(_) => BANDIT_COND,
            OfflineTask::Pendulum(_) => crate::rl::pendulum::OBS_DIM,
        }
    }

    /// Iteration `it`'s training states, tiled `[R·B, C]`.
    pub fn training_conditions(&self, seed: u64, it: usize, b: usize) -> Vec<f32> {
        match self {
            OfflineTask::Bandit(t) => t.training_conditions(seed, it, b),
            OfflineTask::Pendulum(t) => t.training_conditions(seed, it, b),
        }
    }

    /// The prior's ε-MSE data of iteration `it`: actions `[B, D]` and their states `[B, C]`.
    pub fn data_batch(&self, seed: u64, it: usize, b: usize) -> (Vec<f32>, Vec<f32>) {
        match self {
            OfflineTask::Bandit(t) => t.data_batch(seed, it, b),
            OfflineTask::Pendulum(t) => t.data_batch(seed, it, b),
        }
    }

    /// `[n, C]`: row k holds test state k mod M.
    pub fn eval_conditions(&self, n: usize) -> Vec<f32> {
        match self {
            OfflineTask::Bandit(t) => t.eval_conditions(n),
            OfflineTask::Pendulum(t) => t.eval_conditions(n),
        }
    }

    /// M, the number of test states (evaluation rows cycle through them).
    pub fn test_state_count(&self) -> usize {
        match self {
            OfflineTask::Bandit(t) => t.test_states.len(),
            OfflineTask::Pendulum(t) => t.test_state_count(),
        }
    }

    pub fn bandit(&self) -> Option<&BanditTask> {
        match self {
            OfflineTask::Bandit(t) => Some(t),
            OfflineTask::Pendulum(_) => None,
        }
    }

    pub fn pendulum(&self) -> Option<&crate::rl::task::PendulumTask> {
        match self {
            OfflineTask::Pendulum(t) => Some(t),
            OfflineTask::Bandit(_) => None,
        }
    }

    pub fn pendulum_mut(&mut self) -> Option<&mut crate::rl::task::PendulumTask> {
        match self {
            OfflineTask::Pendulum(t) => Some(t),
            OfflineTask::Bandit(_) => None,
        }
    }
}
