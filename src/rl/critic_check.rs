//! Is the IQL critic right about a policy's actions? RTB extracts the posterior
//! ∝ prior·exp(Q/α), so a posterior can only beat its prior where the critic ranks actions the
//! way the environment does. This module scores actions against the environment itself.
//!
//! The Pendulum is deterministic and its scripted expert is a deterministic, near-optimal
//! controller ([`super::pendulum::expert_action`]), so for any state s and torque a the
//! expert-continuation value Q^E(s, a) = r(s, a) + Σ_{k≥1} γ^k·r(s_k, a_E(s_k)) is computed
//! exactly by simulation, with no sampling: take a once, then let the expert act. It is a stand-in
//! for Q* (the expert's own episodes score 100 by the score's definition, and the best learned
//! policy reaches 99.7), and unlike a policy's own Monte Carlo return it ranks two actions at
//! one state under the same continuation, so rankings of different policies' actions compare.
//!
//! Scales: the critic learns from rewards × `reward_scale` (spec rtb2024 §4.3), so Q^E is
//! reported in that unit too.

use super::pendulum::{expert_action, Pendulum, OBS_DIM};

/// Steps of the expert's continuation: γ^1000 = 4.3·10⁻⁵ at γ = 0.99, and a step's reward is
/// at most π² + 6.4 + 0.004 ≈ 16.3 in size, so the truncated tail is below 0.07 raw reward.
pub const CONTINUATION_STEPS: usize = 1000;

/// The state behind an observation (cos θ, sin θ, θ̇): θ by atan2. The dynamics and the cost
/// see θ only through sin θ and the wrapped angle, so the wrap atan2 picks changes nothing.
pub fn state_of(obs: &[f32]) -> Pendulum {
    Pendulum {
        theta: (obs[1] as f64).atan2(obs[0] as f64),
        theta_dot: obs[2] as f64,
    }
}

/// Q^E(s, a) in raw reward units: the discounted return of torque `a` at `s` followed by the
/// expert for `steps − 1` more steps, summed in step order.
pub fn expert_continuation_q(s: Pendulum, a: f64, gamma: f64, steps: usize) -> f64 {
    let mut p = s;
    let mut total = 0.0;
    let mut weight = 1.0;
    for k in 0..steps {
        let u = if k == 0 { a } else { expert_action(&p) };
        total += weight * p.step(u);
        weight *= gamma;
    }
    total
}

/// Q^E at each row of observations `[N, S]` and torques `[N]`, times `reward_scale` (the
/// critic's unit).
pub fn expert_q_batch(obs: &[f32], torques: &[f32], gamma: f64, reward_scale: f64) -> Vec<f64> {
    obs.chunks_exact(OBS_DIM)
        .zip(torques)
        .map(|(o, &a)| {
            reward_scale * expert_continuation_q(state_of(o), a as f64, gamma, CONTINUATION_STEPS)
        })
        .collect()
}

/// How the critic's Q of one policy's actions compares with Q^E at the same rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    pub rows: usize,
    /// Means over rows, in the critic's unit.
    pub critic_q: f64,
    pub expert_q: f64,
    /// The Pearson correlation of the two across rows (NaN when either is constant).
    pub correlation: f64,
}

/// The calibration of critic values `critic` against expert-continuation values `truth`
/// (same rows), summed in row order.
pub fn calibration(critic: &[f64], truth: &[f64]) -> Calibration {
    assert_eq!(critic.len(), truth.len(), "one truth per critic value");
    let n = critic.len() as f64;
    let mc = critic.iter().sum::<f64>() / n;
    let mt = truth.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&c, &t) in critic.iter().zip(truth) {
        sxy += (c - mc) * (t - mt);
        sxx += (c - mc) * (c - mc);
        syy += (t - mt) * (t - mt);
    }
    Calibration {
        rows: critic.len(),
        critic_q: mc,
        expert_q: mt,
        correlation: sxy / (sxx * syy).sqrt(),
    }
}

/// Policy A's actions against policy B's at the same states: how often each judge prefers A,
/// and by how much on average.
#[derive(Clone, Debug, PartialEq)]
pub struct Preference {
    pub states: usize,
    /// Fraction of states where the critic's Q of A's action exceeds B's (ties count half).
    pub critic_prefers_a: f64,
    /// The same under Q^E.
    pub expert_prefers_a: f64,
    /// Fraction of states where the two judges agree on the better action (ties count half).
    pub agreement: f64,
    /// Mean Q(A) − Q(B) under the critic and under Q^E.
    pub critic_gain: f64,
    pub expert_gain: f64,
}

fn wins(a: f64, b: f64) -> f64 {
    match a.partial_cmp(&b) {
        Some(std::cmp::Ordering::Greater) => 1.0,
        Some(std::cmp::Ordering::Equal) => 0.5,
        _ => 0.0,
    }
}

/// The preference of A over B, from both judges' values of each policy's action at the same
/// states, in state order.
pub fn preference(
    critic_a: &[f64],
    critic_b: &[f64],
    expert_a: &[f64],
    expert_b: &[f64],
) -> Preference {
    let n = critic_a.len();
    assert!(
        critic_b.len() == n && expert_a.len() == n && expert_b.len() == n,
        "one value per state for each policy and judge"
    );
    let (mut cp, mut ep, mut agree, mut cg, mut eg) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for i in 0..n {
        let c = wins(critic_a[i], critic_b[i]);
        let e = wins(expert_a[i], expert_b[i]);
        cp += c;
        ep += e;
        agree += if c == 0.5 || e == 0.5 {
            0.5
        } else if c == e {
            1.0
        } else {
            0.0
        };
        cg += critic_a[i] - critic_b[i];
        eg += expert_a[i] - expert_b[i];
    }
    let n_f = n as f64;
    Preference {
        states: n,
        critic_prefers_a: cp / n_f,
        expert_prefers_a: ep / n_f,
        agreement: agree / n_f,
        critic_gain: cg / n_f,
        expert_gain: eg / n_f,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_of_an_affine_critic() {
        let truth = [1.0, 2.0, 4.0, 8.0];
        let critic: Vec<f64> = truth.iter().map(|t| 3.0 * t - 1.0).collect();
        let c = calibration(&critic, &truth);
        assert_eq!((c.rows, c.expert_q), (4, 3.75));
        assert!((c.critic_q - 10.25).abs() < 1e-12);
        assert!((c.correlation - 1.0).abs() < 1e-12);
        let flipped: Vec<f64> = truth.iter().map(|t| -t).collect();
        assert!((calibration(&flipped, &truth).correlation + 1.0).abs() < 1e-12);
    }

    #[test]
    fn preference_counts_ties_as_half() {
        // State 0: both prefer A; 1: critic A, truth B; 2: tie under the critic; 3: both B.
        let p = preference(
            &[2.0, 2.0, 1.0, 0.0],
            &[1.0, 1.0, 1.0, 1.0],
            &[5.0, 0.0, 3.0, 0.0],
            &[4.0, 1.0, 1.0, 2.0],
        );
        assert_eq!(p.critic_prefers_a, (1.0 + 1.0 + 0.5) / 4.0);
        assert_eq!(p.expert_prefers_a, 2.0 / 4.0);
        assert_eq!(p.agreement, (1.0 + 0.0 + 0.5 + 1.0) / 4.0);
        assert_eq!(p.critic_gain, 0.25);
        assert_eq!(p.expert_gain, 0.0);
    }
}
