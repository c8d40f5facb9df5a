//! Pendulum with Gym `Pendulum-v1` semantics, a scripted expert and D4RL-style offline datasets:
//! the sequential stand-in for the RTB paper's offline-RL experiment (spec rtb2024 §4.5 B).
//! Self-written rather than bound to Gym so that every dataset and every evaluation episode is a
//! pure function of a seed.
//!
//! **Dynamics** (Gym, exactly): θ = 0 upright, u clipped to ±2, reward −(θ_norm² + 0.1θ̇² +
//! 0.001u²) of the state *before* the step, θ̇ += (15 sin θ + 3u)·dt then clipped to ±8,
//! θ += θ̇_new·dt, dt = 0.05. Episodes are [`HORIZON`] = 200 steps with no terminal states.
//!
//! **Expert** ([`expert_action`]): energy shaping far from upright — pump E = ½θ̇² + 15 cos θ
//! towards a little above the upright energy 15 with u = k(E⋆ − E)θ̇ (saturated) — and the
//! discrete LQR of the linearised exact step inside the ellipse xᵀPx < 1, x = (θ_norm, θ̇). The
//! ellipse reaches |θ| ≈ 0.37 at rest, inside the |θ| < asin(2·3/15) ≈ 0.41 that ±2 of torque
//! can hold against gravity, so the (clipped) LQR is only handed states it can recover.
//!
//! **Behaviour policies** ([`Behaviour`]), one ChaCha stream per episode (reset, then exactly four
//! words per step whatever the branch, so step t of episode j is fixed by (seed, purpose, j)):
//! * expert: the expert plus N(0, 0.1²) action noise, clipped to ±2;
//! * medium: with probability 0.4 per step a U[−2, 2] torque instead of the controller's, and an
//!   under-powered swing-up (pumping torque capped at 0.55, LQR untouched) plus the same noise.
//!   The two knobs emulate a half-trained agent: erratic actions, and a swing-up it has not
//!   learned to do hard. Random substitution alone would need p ≈ 0.65 to reach the halfway
//!   return; mixing both keeps a near-expert mode *and* bad actions in μ(a|s), which is what
//!   Q-weighted extraction has to sort out;
//! * medium-replay episode j of n: the medium policy with random probability 1 − 0.6·j/(n − 1),
//!   i.e. from pure random (j = 0) to the medium level (j = n − 1), like the replay buffer of a
//!   run that improves linearly and is stopped at medium.
//!
//! **Datasets** ([`dataset`]): Medium = n medium episodes; MediumReplay = the n replay episodes;
//! MediumExpert = n medium then n expert episodes (D4RL's 50/50); Expert = n expert episodes.
//! Stream purposes name the kind and the policy ("pendulum-data/medium-expert/expert", …) and
//! are indexed by the episode, so the halves of MediumExpert are independent of the Medium set
//! with the same seed.
//!
//! **Measured** mean returns (f64, undiscounted, 200 steps): uniform random −1217 and noiseless
//! expert −152 ([`score_scale`] with 100 episodes); from [`dataset`] with 1000 episodes, seeds 0
//! and 5: medium −651…−667 (sd ≈ 435; ≈ 52 normalised), medium-replay −986…−993 (sd ≈ 393;
//! ≈ 21 normalised), expert behaviour with noise −152…−158 (sd ≈ 89).
//!
//! Shapes: N episodes side by side; observations [N, 3] = (cos θ, sin θ, θ̇); one torque each.

use crate::rng;
use rand_chacha::ChaCha8Rng;
use std::f64::consts::{PI, TAU};
use std::sync::OnceLock;

pub const OBS_DIM: usize = 3;
pub const ACTION_DIM: usize = 1;
pub const MAX_TORQUE: f64 = 2.0;
pub const HORIZON: usize = 200;
/// Gym's `max_speed`: θ̇ is clipped to ±8 after every step.
pub const MAX_SPEED: f64 = 8.0;
/// Gym's integration step, s.
pub const DT: f64 = 0.05;
/// Gravity, mass and length, as Gym.
pub const GRAVITY: f64 = 10.0;
pub const MASS: f64 = 1.0;
pub const LENGTH: f64 = 1.0;

/// θ̈ = A_GRAV·sin θ + A_TORQUE·u: 15 and 3 with Gym's constants (the same f64s Gym computes).
const A_GRAV: f64 = 3.0 * GRAVITY / (2.0 * LENGTH);
const A_TORQUE: f64 = 3.0 / (MASS * LENGTH * LENGTH);

/// θ mapped into [−π, π): Gym's `((x + π) % 2π) − π` with Python's floor modulo.
pub fn angle_normalize(theta: f64) -> f64 {
    (theta + PI).rem_euclid(TAU) - PI
}

/// The state. θ = 0 is upright; θ is *not* wrapped between steps (Gym keeps it raw too): only
/// the cost and the observation see it, through `angle_normalize` and cos / sin.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pendulum {
    pub theta: f64,
    pub theta_dot: f64,
}

impl Pendulum {
    /// Gym's reset: θ ~ U[−π, π], θ̇ ~ U[−1, 1], from the next two words of `rng` (θ first).
    pub fn reset(rng: &mut ChaCha8Rng) -> Self {
        let theta = -PI + TAU * rng::uniform_f64(rng);
        let theta_dot = -1.0 + 2.0 * rng::uniform_f64(rng);
        Pendulum { theta, theta_dot }
    }

    /// (cos θ, sin θ, θ̇).
    pub fn observe(&self) -> [f64; 3] {
        [self.theta.cos(), self.theta.sin(), self.theta_dot]
    }

    /// Applies torque u (clipped to ±MAX_TORQUE); returns the reward of this step.
    ///
    /// The reward is −cost of the state *before* the step (Gym computes it first), so an
    /// episode's final state is never scored.
    pub fn step(&mut self, u: f64) -> f64 {
        let u = u.clamp(-MAX_TORQUE, MAX_TORQUE);
        let (th, thdot) = (self.theta, self.theta_dot);
        let cost = angle_normalize(th).powi(2) + 0.1 * thdot * thdot + 0.001 * (u * u);
        let acc = A_GRAV * th.sin() + A_TORQUE * u;
        let new_thdot = (thdot + acc * DT).clamp(-MAX_SPEED, MAX_SPEED);
        self.theta = th + new_thdot * DT;
        self.theta_dot = new_thdot;
        -cost
    }
}

/// Energy-shaping gain k in u = k·(E⋆ − E)·θ̇; the torque saturates almost everywhere, and
/// gains 0.5–3 measured within 2 of each other in mean return.
const PUMP_GAIN: f64 = 1.0;
/// E⋆ − 15: aiming a little above the separatrix reaches the top in finite time instead of
/// creeping up the homoclinic orbit.
const ENERGY_MARGIN: f64 = 0.5;
/// LQR takes over when xᵀPx is below this (see the module doc for why 1).
const LQR_REGION: f64 = 1.0;
/// Riccati iterations; the gain stops changing in f64 after a few hundred.
const RICCATI_ITERS: usize = 2000;

/// The discrete-time LQR at upright: (K, P) with u = −K·x, x = (θ_norm, θ̇), Q = diag(1, 0.1),
/// R = 0.001 (the reward's own weights), computed once.
pub fn lqr() -> &'static ([f64; 2], [[f64; 2]; 2]) {
    static CELL: OnceLock<([f64; 2], [[f64; 2]; 2])> = OnceLock::new();
    CELL.get_or_init(solve_lqr)
}

/// The linearisation at θ = 0 of [`Pendulum::step`] without clipping: θ̇' = θ̇ + (15θ + 3u)dt,
/// θ' = θ + θ̇'dt, as x' = A x + B u.
pub fn linearisation() -> ([[f64; 2]; 2], [f64; 2]) {
    let a = [[1.0 + A_GRAV * DT * DT, DT], [A_GRAV * DT, 1.0]];
    let b = [A_TORQUE * DT * DT, A_TORQUE * DT];
    (a, b)
}

/// Iterates P ← Q + AᵀPA − AᵀPB (R + BᵀPB)⁻¹ BᵀPA from P = Q, written out for 2×2.
fn solve_lqr() -> ([f64; 2], [[f64; 2]; 2]) {
    let (a, b) = linearisation();
    let q = [[1.0, 0.0], [0.0, 0.1]];
    let r = 0.001;
    let mut p = q;
    let mut k = [0.0; 2];
    for _ in 0..RICCATI_ITERS {
        // pa = P·A ([2, 2]); bpa = Bᵀ·P·A ([2]); bpb = Bᵀ·P·B.
        let pa = [
            [
                p[0][0] * a[0][0] + p[0][1] * a[1][0],
                p[0][0] * a[0][1] + p[0][1] * a[1][1],
            ],
            [
                p[1][0] * a[0][0] + p[1][1] * a[1][0],
                p[1][0] * a[0][1] + p[1][1] * a[1][1],
            ],
        ];
        let bpa = [
            b[0] * pa[0][0] + b[1] * pa[1][0],
            b[0] * pa[0][1] + b[1] * pa[1][1],
        ];
        let pb = [
            p[0][0] * b[0] + p[0][1] * b[1],
            p[1][0] * b[0] + p[1][1] * b[1],
        ];
        let bpb = b[0] * pb[0] + b[1] * pb[1];
        k = [bpa[0] / (r + bpb), bpa[1] / (r + bpb)];
        // (AᵀPA)ᵢⱼ = Σₗ A[l][i]·pa[l][j].
        let apa = |i: usize, j: usize| a[0][i] * pa[0][j] + a[1][i] * pa[1][j];
        p = [
            [
                q[0][0] + apa(0, 0) - bpa[0] * k[0],
                q[0][1] + apa(0, 1) - bpa[0] * k[1],
            ],
            [
                q[1][0] + apa(1, 0) - bpa[1] * k[0],
                q[1][1] + apa(1, 1) - bpa[1] * k[1],
            ],
        ];
    }
    (k, p)
}

/// The expert's torque from the wrapped angle and the speed, with the swing-up torque capped at
/// `swing_cap` (MAX_TORQUE for the expert); the LQR branch is never capped below MAX_TORQUE.
fn controller(theta: f64, theta_dot: f64, swing_cap: f64) -> f64 {
    let (k, p) = lqr();
    let ctg = theta * (p[0][0] * theta + p[0][1] * theta_dot)
        + theta_dot * (p[1][0] * theta + p[1][1] * theta_dot);
    if ctg < LQR_REGION {
        return (-(k[0] * theta + k[1] * theta_dot)).clamp(-MAX_TORQUE, MAX_TORQUE);
    }
    let energy = 0.5 * theta_dot * theta_dot + A_GRAV * theta.cos();
    // At rest the pumping law gives no torque (hanging: forever); a tiny speed breaks the tie.
    let v = if theta_dot.abs() < 1e-3 {
        1e-3
    } else {
        theta_dot
    };
    (PUMP_GAIN * (A_GRAV + ENERGY_MARGIN - energy) * v).clamp(-swing_cap, swing_cap)
}

/// The scripted expert: energy-shaping swing-up, LQR near upright, output within ±2.
/// Deterministic function of the state.
pub fn expert_action(p: &Pendulum) -> f64 {
    controller(angle_normalize(p.theta), p.theta_dot, MAX_TORQUE)
}

/// The expert from an observation (cos θ, sin θ, θ̇), θ recovered by atan2 — what a policy
/// that sees only observations can run.
pub fn expert_action_obs(obs: &[f64; 3]) -> f64 {
    controller(obs[1].atan2(obs[0]), obs[2], MAX_TORQUE)
}

/// The expert on a batch of f32 observations [N, 3] → [N] torques.
pub fn expert_batch(obs: &[f32]) -> Vec<f32> {
    obs.chunks_exact(OBS_DIM)
        .map(|o| expert_action_obs(&[o[0] as f64, o[1] as f64, o[2] as f64]) as f32)
        .collect()
}

/// A behaviour policy of the datasets: the controller with its swing-up capped, Gaussian action
/// noise, and per-step substitution by a uniform-random torque.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Behaviour {
    /// Per-step probability of a U[−2, 2] torque instead of the controller's.
    pub random_p: f64,
    /// Std of the Gaussian added to the controller's torque (then clipped to ±2).
    pub noise_std: f64,
    /// Cap on the swing-up (energy-pumping) torque.
    pub swing_cap: f64,
}

/// "expert": the expert with N(0, 0.1²) action noise.
pub const EXPERT_BEHAVIOUR: Behaviour = Behaviour {
    random_p: 0.0,
    noise_std: 0.1,
    swing_cap: MAX_TORQUE,
};

/// "medium": tuned so its mean return is about halfway between random and expert (module doc).
pub const MEDIUM_BEHAVIOUR: Behaviour = Behaviour {
    random_p: 0.4,
    noise_std: 0.1,
    swing_cap: 0.55,
};

impl Behaviour {
    /// One action within ±2. Draws exactly four words of `rng` (coin, uniform torque, one normal
    /// pair) on every branch, so the words of step t never depend on earlier branches.
    pub fn act(&self, s: &Pendulum, rng: &mut ChaCha8Rng) -> f64 {
        let coin = rng::uniform_f64(rng);
        let uniform = -MAX_TORQUE + 2.0 * MAX_TORQUE * rng::uniform_f64(rng);
        let z = rng::normal_f64(rng);
        if coin < self.random_p {
            return uniform;
        }
        let u = controller(angle_normalize(s.theta), s.theta_dot, self.swing_cap);
        (u + self.noise_std * z).clamp(-MAX_TORQUE, MAX_TORQUE)
    }

    /// P(a′ ≤ a) for the torque a′ that [`Behaviour::act`] draws at observation `obs` (the
    /// angle recovered by atan2, as [`expert_action_obs`]): right-continuous, with the atoms
    /// at ±2 that the clip puts there. Lets a policy's torques be scored against the exact
    /// behaviour that made a dataset (`rl::action_fit`).
    pub fn cdf(&self, obs: &[f64; 3], a: f64) -> f64 {
        let uniform = ((a + MAX_TORQUE) / (2.0 * MAX_TORQUE)).clamp(0.0, 1.0);
        let controlled = if a < -MAX_TORQUE {
            0.0
        } else if a >= MAX_TORQUE {
            1.0
        } else {
            let c = controller(obs[1].atan2(obs[0]), obs[2], self.swing_cap);
            if self.noise_std > 0.0 {
                normal_cdf((a - c) / self.noise_std)
            } else {
                f64::from(u8::from(a >= c))
            }
        };
        self.random_p * uniform + (1.0 - self.random_p) * controlled
    }

    /// E[a′] for the torque a′ that [`Behaviour::act`] draws at observation `obs`: the random
    /// branch's mean is 0, the controlled branch's the mean of N(c, σ²) clipped to ±2,
    /// −2·Φ(α) + 2·(1 − Φ(β)) + c·(Φ(β) − Φ(α)) + σ·(φ(α) − φ(β)), α = (−2 − c)/σ, β = (2 − c)/σ.
    pub fn mean(&self, obs: &[f64; 3]) -> f64 {
        let c = controller(obs[1].atan2(obs[0]), obs[2], self.swing_cap);
        let controlled = if self.noise_std > 0.0 {
            let s = self.noise_std;
            let (a, b) = ((-MAX_TORQUE - c) / s, (MAX_TORQUE - c) / s);
            let pdf = |z: f64| (-0.5 * z * z).exp() / (2.0 * PI).sqrt();
            -MAX_TORQUE * normal_cdf(a)
                + MAX_TORQUE * (1.0 - normal_cdf(b))
                + c * (normal_cdf(b) - normal_cdf(a))
                + s * (pdf(a) - pdf(b))
        } else {
            c.clamp(-MAX_TORQUE, MAX_TORQUE)
        };
        (1.0 - self.random_p) * controlled
    }
}

/// The standard normal CDF, Φ(z) = ½ erfc(−z/√2).
fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// The one behaviour that made every transition of `kind`, if there is one (Medium, Expert).
/// MediumReplay's episodes each have their own random probability and MediumExpert mixes two
/// policies, so their μ(a|s) weighs behaviours by how often each visits s: not known in closed
/// form.
pub fn single_behaviour(kind: DatasetKind) -> Option<Behaviour> {
    match kind {
        DatasetKind::Medium => Some(MEDIUM_BEHAVIOUR),
        DatasetKind::Expert => Some(EXPERT_BEHAVIOUR),
        DatasetKind::MediumReplay | DatasetKind::MediumExpert => None,
    }
}

/// Episode j of n in the medium-replay run: random probability linear from 1 (j = 0) down to the
/// medium policy's (j = n − 1); everything else as medium.
pub fn replay_behaviour(j: usize, n: usize) -> Behaviour {
    let frac = if n > 1 {
        j as f64 / (n - 1) as f64
    } else {
        1.0
    };
    Behaviour {
        random_p: 1.0 - (1.0 - MEDIUM_BEHAVIOUR.random_p) * frac,
        ..MEDIUM_BEHAVIOUR
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DatasetKind {
    Medium,
    MediumReplay,
    MediumExpert,
    /// D4RL's "expert" level: n episodes of the expert with its action noise. No Table 4 row
    /// uses it; it is the BC prior's sanity check (a unimodal μ(a|s) that a good BC fit
    /// reproduces at the expert's score).
    Expert,
}

/// One transition; `terminal` is always false here (time-outs are not terminals), kept so the
/// IQL code has D4RL's fields.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transition {
    pub obs: [f64; 3],
    pub action: f64,
    pub reward: f64,
    pub next_obs: [f64; 3],
    pub terminal: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub kind: DatasetKind,
    /// Episode-major, step order within an episode: [episodes·HORIZON].
    pub transitions: Vec<Transition>,
    /// Undiscounted return of each episode in the dataset, in episode order.
    pub episode_returns: Vec<f64>,
}

/// One HORIZON-step episode of `b` from stream (seed, purpose, episode): reset from its first two
/// words, then four words per step. Appends the transitions to `out`; returns the return (summed
/// in step order).
pub fn rollout(
    b: &Behaviour,
    seed: u64,
    purpose: &str,
    episode: usize,
    out: &mut Vec<Transition>,
) -> f64 {
    let mut rng = rng::stream(seed, purpose, episode as u64);
    let mut s = Pendulum::reset(&mut rng);
    let mut ret = 0.0;
    for _ in 0..HORIZON {
        let obs = s.observe();
        let action = b.act(&s, &mut rng);
        let reward = s.step(action);
        ret += reward;
        out.push(Transition {
            obs,
            action,
            reward,
            next_obs: s.observe(),
            terminal: false,
        });
    }
    ret
}

/// (stream purpose, behaviour of episode j of n) of one block of a dataset's episodes.
type Block = (&'static str, fn(usize, usize) -> Behaviour);

/// The blocks of `kind`'s dataset, in dataset order.
fn blocks(kind: DatasetKind) -> &'static [Block] {
    match kind {
        DatasetKind::Medium => &[("pendulum-data/medium/medium", |_, _| MEDIUM_BEHAVIOUR)],
        DatasetKind::MediumReplay => &[("pendulum-data/medium-replay/replay", replay_behaviour)],
        DatasetKind::MediumExpert => &[
            ("pendulum-data/medium-expert/medium", |_, _| {
                MEDIUM_BEHAVIOUR
            }),
            ("pendulum-data/medium-expert/expert", |_, _| {
                EXPERT_BEHAVIOUR
            }),
        ],
        DatasetKind::Expert => &[("pendulum-data/expert/expert", |_, _| EXPERT_BEHAVIOUR)],
    }
}

/// The behaviour of every episode of `kind`'s dataset with `episodes` episodes per block, in
/// dataset order: the data's own policy as a mixture, each entry weighing one episode.
pub fn dataset_behaviours(kind: DatasetKind, episodes: usize) -> Vec<Behaviour> {
    blocks(kind)
        .iter()
        .flat_map(|&(_, behaviour)| (0..episodes).map(move |j| behaviour(j, episodes)))
        .collect()
}

/// The returns of behaviour `b` over `n` episodes from the initial states that
/// [`run_episodes`]`(n, seed, ·)` uses (episode k resets from stream (seed, "pendulum-episode",
/// k)), its action noise from stream (seed, `purpose`, k). The behaviour acts on the exact
/// state, as when it made the dataset. Returns sum in step order.
pub fn behaviour_returns(b: &Behaviour, seed: u64, n: usize, purpose: &str) -> Vec<f64> {
    (0..n)
        .map(|k| {
            let mut s = Pendulum::reset(&mut rng::stream(seed, "pendulum-episode", k as u64));
            let mut noise = rng::stream(seed, purpose, k as u64);
            (0..HORIZON).map(|_| s.step(b.act(&s, &mut noise))).sum()
        })
        .collect()
}

/// Builds the dataset `kind` with `episodes` episodes (MediumExpert: `episodes` medium plus
/// `episodes` expert episodes, 50/50 as D4RL), deterministically from streams keyed by `seed`.
pub fn dataset(kind: DatasetKind, episodes: usize, seed: u64) -> Dataset {
    let blocks = blocks(kind);
    let mut transitions = Vec::with_capacity(blocks.len() * episodes * HORIZON);
    let mut episode_returns = Vec::with_capacity(blocks.len() * episodes);
    for &(purpose, behaviour) in blocks {
        for j in 0..episodes {
            let b = behaviour(j, episodes);
            episode_returns.push(rollout(&b, seed, purpose, j, &mut transitions));
        }
    }
    Dataset {
        kind,
        transitions,
        episode_returns,
    }
}

/// Runs `n` episodes side by side for HORIZON steps: episode k starts from
/// `Pendulum::reset(&mut rng::stream(seed, "pendulum-episode", k))`; at every step `policy`
/// gets (step index, observations [n, 3] as f32 row-major) and returns n torques (f32). Returns
/// the n undiscounted returns (f64, summed in step order).
pub fn run_episodes(
    n: usize,
    seed: u64,
    policy: &mut dyn FnMut(usize, &[f32]) -> Vec<f32>,
) -> Vec<f64> {
    let mut states: Vec<Pendulum> = (0..n)
        .map(|k| Pendulum::reset(&mut rng::stream(seed, "pendulum-episode", k as u64)))
        .collect();
    let mut returns = vec![0.0; n];
    let mut obs = vec![0f32; n * OBS_DIM];
    for t in 0..HORIZON {
        for (row, s) in obs.chunks_exact_mut(OBS_DIM).zip(&states) {
            for (dst, v) in row.iter_mut().zip(s.observe()) {
                *dst = v as f32;
            }
        }
        let actions = policy(t, &obs);
        assert_eq!(
            actions.len(),
            n,
            "policy gave {} torques for {n} episodes",
            actions.len()
        );
        for ((s, ret), &u) in states.iter_mut().zip(&mut returns).zip(&actions) {
            *ret += s.step(u as f64);
        }
    }
    returns
}

/// The uniform-random policy for `run_episodes`: the torque of (episode k, step t) is U[−2, 2]
/// from word t of stream (seed, "pendulum-random-torque", k), a pure function of (seed, k, t)
/// however the policy is called.
pub struct RandomPolicy {
    /// One stream per episode: [n].
    streams: Vec<ChaCha8Rng>,
}

impl RandomPolicy {
    pub fn new(seed: u64, n: usize) -> Self {
        let streams = (0..n)
            .map(|k| rng::stream(seed, "pendulum-random-torque", k as u64))
            .collect();
        RandomPolicy { streams }
    }

    /// The n torques of step `t`.
    pub fn act(&mut self, t: usize) -> Vec<f32> {
        self.streams
            .iter_mut()
            .map(|s| {
                s.set_word_pos(t as u128);
                (-MAX_TORQUE + 2.0 * MAX_TORQUE * rng::uniform_f64(s)) as f32
            })
            .collect()
    }
}

/// Seed of the score normaliser's episodes. Both policies run from the same initial states (a
/// paired difference), and the offset keeps them apart from the small seeds of evaluation runs.
pub const SCORE_SEED: u64 = 1_000_000;

/// The normaliser of D4RL-style scores: mean returns of the uniform-random policy and of the
/// expert over `episodes` episodes each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreScale {
    pub random: f64,
    pub expert: f64,
}

/// Both means from `run_episodes(episodes, SCORE_SEED, ·)`: random = [`RandomPolicy`] with seed
/// SCORE_SEED; expert = the noiseless expert on the f32 observations ([`expert_batch`]), the
/// same interface as the policies being scored. Means sum in episode order.
pub fn score_scale(episodes: usize) -> ScoreScale {
    let mut random = RandomPolicy::new(SCORE_SEED, episodes);
    let r = run_episodes(episodes, SCORE_SEED, &mut |t, _| random.act(t));
    let e = run_episodes(episodes, SCORE_SEED, &mut |_, obs| expert_batch(obs));
    ScoreScale {
        random: r.iter().sum::<f64>() / episodes as f64,
        expert: e.iter().sum::<f64>() / episodes as f64,
    }
}

impl ScoreScale {
    /// 100·(R − R_random)/(R_expert − R_random).
    pub fn normalised(&self, ret: f64) -> f64 {
        100.0 * (ret - self.random) / (self.expert - self.random)
    }
}
