//! How well a Pendulum BC policy reproduces its dataset's actions (`repro actions`): the
//! policy draws one torque at each of N dataset states, and its torques are compared with the
//! dataset's own torques at the same states. Under a perfect fit the two are samples of the
//! same distribution, so every statistic here agrees up to sampling noise.
//!
//! Shapes: N states, one torque each (A = 1).

use super::pendulum::{expert_action_obs, OBS_DIM};
use super::task::{evenly_spaced_rows, PendulumTask};
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

/// A BC policy's fit over `n` evenly spaced dataset states (row k·N_data/n), overall and on
/// the upright ones (cos θ > 0.95, where balancing is decided; `None` if there are none). The
/// policy's noise is stream (seed, "action-fit", 0).
pub fn policy_action_fit(tr: &Trainer, n: usize) -> (ActionFit, Option<ActionFit>) {
    let task: &PendulumTask = tr.pendulum().expect("action fit needs a Pendulum target");
    let rows: Vec<usize> = evenly_spaced_rows(task.dataset.transitions.len(), n).collect();
    let obs: Vec<f32> = rows
        .iter()
        .flat_map(|&r| task.obs[r * OBS_DIM..(r + 1) * OBS_DIM].iter().copied())
        .collect();
    let key = crate::rng::stream_key(tr.cfg.seed, "action-fit", 0);
    let (_, u) = tr.sample_with_conditions(n, Some(&obs), key);
    let policy: Vec<f64> = u.iter().map(|&v| task.action.torque(v) as f64).collect();
    let data: Vec<f64> = rows
        .iter()
        .map(|&r| task.dataset.transitions[r].action)
        .collect();
    let expert: Vec<f64> = rows
        .iter()
        .map(|&r| expert_action_obs(&task.dataset.transitions[r].obs))
        .collect();
    let all = action_fit(&data, &policy, &expert);
    let upright: Vec<usize> = (0..n)
        .filter(|&i| task.dataset.transitions[rows[i]].obs[0] > 0.95)
        .collect();
    let pick = |xs: &[f64]| upright.iter().map(|&i| xs[i]).collect::<Vec<_>>();
    let up =
        (!upright.is_empty()).then(|| action_fit(&pick(&data), &pick(&policy), &pick(&expert)));
    (all, up)
}
