//! How well a Pendulum BC policy reproduces its dataset's actions (`repro actions`): the
//! policy draws one torque at each of N dataset states, and its torques are compared with the
//! dataset's own torques at the same states. Under a perfect fit the two are samples of the
//! same distribution, so every statistic here agrees up to sampling noise.
//!
//! Where one scripted behaviour made the whole dataset (medium, expert), its torque CDF is known
//! at every state ([`Behaviour::cdf`]), so the policy can be checked state by state, also on the
//! states its own episodes visit: the probability integral transform (PIT) F(a|s) of a policy
//! torque a is uniform on [0, 1] exactly when the policy draws from the behaviour there.
//!
//! Shapes: N states, one torque each (A = 1).

use super::episodes::{EpisodeLog, EpisodePolicy};
use super::pendulum::{expert_action_obs, single_behaviour, Behaviour, OBS_DIM};
use super::task::{evenly_spaced_rows, PendulumTask};
use crate::rng;
use crate::train::Trainer;
use serde::Serialize;

/// A torque at least this large in magnitude counts as saturated: the bang-bang swing-up's
/// and the LQR's at the edge of its region (the data clips at ±2, the pre-tanh policy can
/// reach only 2·tanh(artanh 0.99) = 1.98).
pub const SATURATED: f64 = 1.9;

/// Within this distance of the noiseless expert's torque at the same state, a torque counts
/// as the expert's (the data's expert noise has standard deviation 0.1).
pub const NEAR_EXPERT: f64 = 0.25;

/// The statistics of one set of states.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActionFit {
    pub states: usize,
    /// Fractions of saturated torques, dataset and policy.
    pub data_saturated: f64,
    pub policy_saturated: f64,
    /// Fractions within [`NEAR_EXPERT`] of the expert's torque, dataset and policy.
    pub data_near_expert: f64,
    pub policy_near_expert: f64,
    /// The 1-Wasserstein distance between the two sets of torques (as 1-D samples).
    pub w1: f64,
}

/// The statistics of `data` and `policy` torques (`[N]` each, row i at state i) against the
/// expert's torques `expert` (`[N]`). Sums run in row order, W1 over both sorted samples.
pub fn action_fit(data: &[f64], policy: &[f64], expert: &[f64]) -> ActionFit {
    let n = data.len();
    assert!(
        n > 0 && policy.len() == n && expert.len() == n,
        "action_fit needs N ≥ 1 torques of each kind, got {}, {} and {}",
        n,
        policy.len(),
        expert.len()
    );
    let frac = |xs: &[f64], f: &dyn Fn(usize, f64) -> bool| {
        xs.iter().enumerate().filter(|&(i, &x)| f(i, x)).count() as f64 / n as f64
    };
    let saturated = |_: usize, a: f64| a.abs() >= SATURATED;
    let near = |i: usize, a: f64| (a - expert[i]).abs() < NEAR_EXPERT;
    let sorted = |xs: &[f64]| {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        v
    };
    let (d, p) = (sorted(data), sorted(policy));
    let w1 = d.iter().zip(&p).map(|(a, b)| (a - b).abs()).sum::<f64>() / n as f64;
    ActionFit {
        states: n,
        data_saturated: frac(data, &saturated),
        policy_saturated: frac(policy, &saturated),
        data_near_expert: frac(data, &near),
        policy_near_expert: frac(policy, &near),
        w1,
    }
}

/// A state counts as upright when cos θ exceeds this: where balancing is decided.
pub const UPRIGHT_COS: f64 = 0.95;

/// One policy torque at each of N evenly spaced dataset states (row k·N_data/N), beside the
/// dataset's own torque there.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetDraws {
    /// The states' observations (f64, as the dataset holds them): `[N]`.
    pub obs: Vec<[f64; OBS_DIM]>,
    /// `[N]` torques each.
    pub data: Vec<f64>,
    pub policy: Vec<f64>,
}

/// The policy's draws at `n` evenly spaced dataset states; its noise is stream (seed,
/// "action-fit", 0).
pub fn dataset_draws(tr: &Trainer, n: usize) -> DatasetDraws {
    let task: &PendulumTask = tr.pendulum().expect("action fit needs a Pendulum target");
    let rows: Vec<usize> = evenly_spaced_rows(task.dataset.transitions.len(), n).collect();
    let obs32: Vec<f32> = rows
        .iter()
        .flat_map(|&r| task.obs[r * OBS_DIM..(r + 1) * OBS_DIM].iter().copied())
        .collect();
    let key = rng::stream_key(tr.cfg.seed, "action-fit", 0);
    let (_, u) = tr.sample_with_conditions(n, Some(&obs32), key);
    DatasetDraws {
        obs: rows
            .iter()
            .map(|&r| task.dataset.transitions[r].obs)
            .collect(),
        data: rows
            .iter()
            .map(|&r| task.dataset.transitions[r].action)
            .collect(),
        policy: u.iter().map(|&v| task.action.torque(v) as f64).collect(),
    }
}

/// Whether the state observed as `o` is upright (cos θ > [`UPRIGHT_COS`]).
fn is_upright(o: &[f64; OBS_DIM]) -> bool {
    o[0] > UPRIGHT_COS
}

/// The indices of the upright states among `obs`.
fn upright_rows(obs: &[[f64; OBS_DIM]]) -> Vec<usize> {
    (0..obs.len()).filter(|&i| is_upright(&obs[i])).collect()
}

/// The fit over all the drawn states and over the upright ones (`None` if there are none).
pub fn policy_action_fit(d: &DatasetDraws) -> (ActionFit, Option<ActionFit>) {
    let expert: Vec<f64> = d.obs.iter().map(expert_action_obs).collect();
    let all = action_fit(&d.data, &d.policy, &expert);
    let upright = upright_rows(&d.obs);
    let pick = |xs: &[f64]| upright.iter().map(|&i| xs[i]).collect::<Vec<_>>();
    let up =
        (!upright.is_empty()).then(|| action_fit(&pick(&d.data), &pick(&d.policy), &pick(&expert)));
    (all, up)
}

/// Bins of the PIT histogram: tenths of [0, 1].
pub const PIT_BINS: usize = 10;

/// The randomised PIT of torque `a` under behaviour `b` at `obs`, with `v` ∈ [0, 1) its
/// randomisation. Torques of magnitude ≥ [`SATURATED`] are lumped into one event per side: the
/// behaviour's clip puts atoms at ±2, which a pre-tanh policy can only approach (it tops out
/// at 1.98), so the two are compared on whether a torque saturates, not on where. The lumped
/// event's PIT is uniform over its CDF interval, so a draw of the behaviour itself gives an
/// exactly uniform PIT.
pub fn pit(b: &Behaviour, obs: &[f64; OBS_DIM], a: f64, v: f64) -> f64 {
    if a >= SATURATED {
        // F is continuous at ±SATURATED (its atoms are at ±2), so F(L−) = F(L).
        let lo = b.cdf(obs, SATURATED);
        lo + v * (1.0 - lo)
    } else if a <= -SATURATED {
        v * b.cdf(obs, -SATURATED)
    } else {
        b.cdf(obs, a)
    }
}

/// How far a set of PIT values is from uniform.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PitFit {
    pub states: usize,
    /// Kolmogorov–Smirnov distance sup |F̂(u) − u|.
    pub ks: f64,
    /// Fraction of the values in each tenth of [0, 1]: a policy too sharp where the behaviour
    /// is spread piles into the middle tenths, one biased to one side tilts the histogram.
    pub tenths: [f64; PIT_BINS],
}

/// The KS distance and histogram of PIT values `u` (each in [0, 1]; at least one).
pub fn pit_fit(u: &[f64]) -> PitFit {
    assert!(!u.is_empty(), "pit_fit needs at least one value");
    let n = u.len();
    let mut sorted = u.to_vec();
    sorted.sort_by(f64::total_cmp);
    let ks = sorted
        .iter()
        .enumerate()
        .map(|(i, &x)| ((i + 1) as f64 / n as f64 - x).max(x - i as f64 / n as f64))
        .fold(0.0, f64::max);
    let mut tenths = [0.0; PIT_BINS];
    for &x in u {
        tenths[((x * PIT_BINS as f64) as usize).min(PIT_BINS - 1)] += 1.0 / n as f64;
    }
    PitFit {
        states: n,
        ks,
        tenths,
    }
}

/// The KS distance that n uniform values exceed with probability 5 % (asymptotic 1.358/√n).
pub fn ks_critical_95(n: usize) -> f64 {
    1.358 / (n as f64).sqrt()
}

/// PIT fits over all states, the upright ones and the rest (`None` where a subset is empty).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PitSplit {
    pub all: PitFit,
    pub upright: Option<PitFit>,
    pub elsewhere: Option<PitFit>,
}

fn pit_split(obs: &[[f64; OBS_DIM]], u: &[f64]) -> PitSplit {
    let (upright, rest): (Vec<usize>, Vec<usize>) =
        (0..obs.len()).partition(|&i| is_upright(&obs[i]));
    let fit = |rows: &[usize]| {
        (!rows.is_empty()).then(|| pit_fit(&rows.iter().map(|&i| u[i]).collect::<Vec<_>>()))
    };
    PitSplit {
        all: pit_fit(u),
        upright: fit(&upright),
        elsewhere: fit(&rest),
    }
}

/// The policy against the dataset's behaviour, state by state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BehaviourFit {
    /// PIT of the policy's and of the dataset's own torques at the drawn dataset states (the
    /// dataset's are the control: uniform up to sampling noise).
    pub policy_at_data: PitSplit,
    pub data_at_data: PitSplit,
    /// PIT of the torques the policy took in its own evaluation episodes, at the states it
    /// visited there.
    pub policy_in_episodes: PitSplit,
    /// Fraction of upright steps: in the policy's episodes, and in the dataset.
    pub episodes_upright: f64,
    pub data_upright: f64,
    /// The mean normalised score of those episodes (the run's own diffusion score).
    pub episodes_score: f64,
    /// Over the episodes' steps away from upright (the swing-up), the mean energy input
    /// 3·a·θ̇ (dE/dt of E = ½θ̇² + 15 cos θ) and the mean torque: of the policy's torques, and
    /// of the behaviour's mean torque at the same states. `None` without such steps.
    pub swing_power: Option<(f64, f64)>,
    pub swing_torque: Option<(f64, f64)>,
}

/// [`BehaviourFit`] of the trainer's diffusion policy, when one behaviour made its dataset
/// ([`single_behaviour`]); `None` otherwise. The PIT randomisations are streams (seed,
/// "action-fit-pit", 0 | 1 | 2) for the policy at the dataset states, the dataset there and
/// the episodes, one word per state in row order.
pub fn behaviour_fit(tr: &Trainer, d: &DatasetDraws) -> Option<BehaviourFit> {
    let task: &PendulumTask = tr.pendulum().expect("action fit needs a Pendulum target");
    let b = single_behaviour(task.dataset.kind)?;
    let seed = tr.cfg.seed;
    let pits = |index: u64, obs: &[[f64; OBS_DIM]], a: &[f64]| -> Vec<f64> {
        let mut v = rng::stream(seed, "action-fit-pit", index);
        obs.iter()
            .zip(a)
            .map(|(o, &x)| pit(&b, o, x, rng::uniform_f64(&mut v)))
            .collect()
    };
    let mut log = EpisodeLog::default();
    let returns = tr.scored_episodes(EpisodePolicy::Diffusion, task.episodes, Some(&mut log));
    let ep_obs: Vec<[f64; OBS_DIM]> = log
        .obs
        .chunks_exact(OBS_DIM)
        .map(|o| [o[0] as f64, o[1] as f64, o[2] as f64])
        .collect();
    let ep_torques: Vec<f64> = log.torques.iter().map(|&a| a as f64).collect();
    let upright_share = |obs: &[[f64; OBS_DIM]]| upright_rows(obs).len() as f64 / obs.len() as f64;
    let all_obs: Vec<[f64; OBS_DIM]> = task.dataset.transitions.iter().map(|t| t.obs).collect();
    // 3·a·θ̇ is the energy input: θ̈ = 15 sin θ + 3a, so d/dt(½θ̇² + 15 cos θ) = 3aθ̇.
    let swing: Vec<usize> = (0..ep_obs.len())
        .filter(|&i| !is_upright(&ep_obs[i]))
        .collect();
    let swing_mean = |f: &dyn Fn(usize) -> f64| {
        (!swing.is_empty()).then(|| swing.iter().map(|&i| f(i)).sum::<f64>() / swing.len() as f64)
    };
    let power = |a: &dyn Fn(usize) -> f64| swing_mean(&|i| 3.0 * a(i) * ep_obs[i][2]);
    let policy_a = |i: usize| ep_torques[i];
    let behaviour_a = |i: usize| b.mean(&ep_obs[i]);
    Some(BehaviourFit {
        policy_at_data: pit_split(&d.obs, &pits(0, &d.obs, &d.policy)),
        data_at_data: pit_split(&d.obs, &pits(1, &d.obs, &d.data)),
        policy_in_episodes: pit_split(&ep_obs, &pits(2, &ep_obs, &ep_torques)),
        episodes_upright: upright_share(&ep_obs),
        data_upright: upright_share(&all_obs),
        episodes_score: task.stats(&returns).score,
        swing_power: power(&policy_a).zip(power(&behaviour_a)),
        swing_torque: swing_mean(&policy_a).zip(swing_mean(&behaviour_a)),
    })
}
