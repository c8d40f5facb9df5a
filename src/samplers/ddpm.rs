//! DDPM as a sampler family (Ho et al. 2020; spec rtb2024 §3.1, §4.2, §7.2): ε-prediction,
//! "leading" strided ancestral sampling, optional x̂0 clipping, fixed_large variance, under one
//! of two β schedules: the vision code's linear schedule rescaled by 1000/T (β from 0.1/T to
//! 20/T), or the offline-RL code's ([`Schedule::qflow`]).
//!
//! Generation step i = 0..L−1 goes from DDPM time t_i = (L−1−i)·k to t_i − k (k = T/L; the
//! last step ends at "−1", where ᾱ is the schedule's `alpha_bar_end`: 1, or for the offline-RL
//! schedule the one factor of its T+1 that no step uses). Each step is Gaussian with
//!   x̂0 = clip((x − √(1−ᾱ_t)·ε̂)/√ᾱ_t),
//!   μ  = c1·x̂0 + c2·x,   c1 = √ᾱ_prev·β_eff/(1−ᾱ_t),   c2 = √(ᾱ_t/ᾱ_prev)·(1−ᾱ_prev)/(1−ᾱ_t),
//!   var = β_eff = 1 − ᾱ_t/ᾱ_prev.
//! The last step (t = 0) is kept stochastic with variance β_0 for both the prior and any
//! posterior (the reference code adds no noise there yet scores it with √β_0; spec §3.1
//! recommends this choice).
//!
//! In the crate's Euler–Maruyama form the step is mean `decay·x + u·dt` with decay = c2 and
//! u = (c1/dt)·x̂0, variance rate·dt with rate = β_eff/dt: [`super::Sampler::transition`] and
//! the rollout's ε-head ([`ddpm_drift`]) build exactly that.

use crate::autodiff::{Tape, Var};
use crate::config::DdpmSchedule;
use crate::cpu::Kernels;

/// The training schedule: β_t and ᾱ_t for t = 0..T−1, and ᾱ at time "−1", where the last
/// generation step lands.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub betas: Vec<f64>,
    pub alpha_bars: Vec<f64>,
    /// ᾱ_{−1}: 1 for the vision schedule (the chain ends on clean data); 1 − β′_0 for the
    /// offline-RL one, whose chain ends one small noise level above the data.
    pub alpha_bar_end: f64,
}

impl Schedule {
    /// The schedule `kind` names, over `train_steps` DDPM times.
    pub fn of(kind: DdpmSchedule, train_steps: usize) -> Self {
        match kind {
            DdpmSchedule::ScaledLinear => Schedule::linear(train_steps),
            DdpmSchedule::QFlow => Schedule::qflow(train_steps),
        }
    }

    /// β linear from 1e-4·1000/T to 0.02·1000/T, ᾱ_t = Π_{s≤t}(1 − β_s).
    pub fn linear(train_steps: usize) -> Self {
        let t = train_steps as f64;
        let (lo, hi) = (0.1 / t, 20.0 / t);
        let betas: Vec<f64> = (0..train_steps)
            .map(|i| {
                if train_steps == 1 {
                    lo
                } else {
                    lo + (hi - lo) * i as f64 / (t - 1.0)
                }
            })
            .collect();
        Schedule::from_betas(betas, 1.0)
    }

    /// The offline-RL code's schedule (spec rtb2024 §4.2), T = `train_steps` (75 there): T+1
    /// β′_s = (0.02 − 1e-4)·(s+1)/T + 1e-4 for s = 0..T, from about 3.65e-4 (s = 0) up to
    /// about 0.0203 (s = T), ᾱ′_s = Π_{j≤s}(1 − β′_j). Its sampler takes T ancestral steps at
    /// s = T..1, each with variance β′_s, and its ε-MSE draws s from the same 1..T. So the
    /// crate's time t = 0..T−1 is s = t + 1, and the step from t = 0 lands on
    /// ᾱ′_0 = 1 − β′_0 (noise is added there too). The reference's reversed indexing (its
    /// index 0 the noisiest) is only a relabelling of these times.
    pub fn qflow(train_steps: usize) -> Self {
        let t = train_steps as f64;
        let beta = |s: usize| (0.02 - 1e-4) * (s as f64 + 1.0) / t + 1e-4;
        let alpha_bar_end = 1.0 - beta(0);
        let betas: Vec<f64> = (1..=train_steps).map(beta).collect();
        Schedule::from_betas(betas, alpha_bar_end)
    }

    /// The schedule of `betas` landing on `alpha_bar_end`: ᾱ_t = ᾱ_end·Π_{s≤t}(1 − β_s), the
    /// product taken in time order.
    fn from_betas(betas: Vec<f64>, alpha_bar_end: f64) -> Self {
        let mut acc = alpha_bar_end;
        let alpha_bars = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        Schedule {
            betas,
            alpha_bars,
            alpha_bar_end,
        }
    }
}

/// One generation step's constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdpmStep {
    /// The DDPM time the step starts from.
    pub t: usize,
    pub alpha_bar: f64,
    pub alpha_bar_prev: f64,
    /// 1 − ᾱ_t/ᾱ_prev, the strided step's β (fixed_large variance).
    pub beta_eff: f64,
    /// x̂0 = x0_from_x·x + x0_from_eps·ε̂ (before clipping).
    pub x0_from_x: f64,
    pub x0_from_eps: f64,
    /// μ = c1·x̂0 + c2·x.
    pub c1: f64,
    pub c2: f64,
}

/// Step i of L-step leading-stride sampling under `schedule`.
pub fn step(schedule: &Schedule, sampling_steps: usize, i: usize) -> DdpmStep {
    let train = schedule.alpha_bars.len();
    let k = train / sampling_steps;
    let t = (sampling_steps - 1 - i) * k;
    let alpha_bar = schedule.alpha_bars[t];
    let alpha_bar_prev = if t >= k {
        schedule.alpha_bars[t - k]
    } else {
        schedule.alpha_bar_end
    };
    let beta_eff = 1.0 - alpha_bar / alpha_bar_prev;
    DdpmStep {
        t,
        alpha_bar,
        alpha_bar_prev,
        beta_eff,
        x0_from_x: 1.0 / alpha_bar.sqrt(),
        x0_from_eps: -(1.0 - alpha_bar).sqrt() / alpha_bar.sqrt(),
        c1: alpha_bar_prev.sqrt() * beta_eff / (1.0 - alpha_bar),
        c2: (alpha_bar / alpha_bar_prev).sqrt() * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar),
    }
}

/// The EM-form drift u = (c1/dt)·x̂0 of the ε-head `o` (`[B, ≥D]`) at state `x` (`[B, D]`),
/// with x̂0 clipped to [−1, 1] when `clip`: `[B, D]`, or with `keep_log_var` `[B, 2D]` = [u ; v]
/// with o's log-variance columns v (a posterior that learns its step variances).
pub fn ddpm_drift<S: Kernels>(
    tape: &mut Tape<S>,
    o: Var,
    x: Var,
    s: &DdpmStep,
    dt: f64,
    clip: bool,
    keep_log_var: bool,
) -> Var {
    let x0 = tape.affine_head(x, o, S::from_f64(s.x0_from_x), S::from_f64(s.x0_from_eps));
    let x0 = if clip { tape.clip(x0, S::ONE) } else { x0 };
    let u = tape.scale(x0, S::from_f64(s.c1 / dt));
    if keep_log_var {
        tape.replace_head(o, u)
    } else {
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The step's mean and variance are those of the DDPM posterior q(x_{t−k} | x_t, x0): the
    /// Gaussian product of q(x_{t−k} | x0) = N(√ᾱ_prev·x0, 1 − ᾱ_prev) and
    /// q(x_t | x_{t−k}) = N(√(ᾱ_t/ᾱ_prev)·x_{t−k}, β_eff), except that the variance is β_eff
    /// (fixed_large) instead of the posterior's.
    #[test]
    fn coefficients_are_the_ddpm_posterior_mean() {
        let sch = Schedule::linear(200);
        assert!((sch.betas[0] - 5e-4).abs() < 1e-15 && (sch.betas[199] - 0.1).abs() < 1e-15);
        // The last step (ᾱ_prev = 1) has x̂0 itself as its mean: checked below.
        for i in [0usize, 17, 48] {
            let s = step(&sch, 50, i);
            let a = s.alpha_bar / s.alpha_bar_prev;
            // Posterior precision and mean of x' given x_t = xt and x0.
            let (x0, xt) = (0.7, -1.3);
            let prec = 1.0 / (1.0 - s.alpha_bar_prev) + a / s.beta_eff;
            let mean = (s.alpha_bar_prev.sqrt() * x0 / (1.0 - s.alpha_bar_prev)
                + a.sqrt() * xt / s.beta_eff)
                / prec;
            assert!((s.c1 * x0 + s.c2 * xt - mean).abs() < 1e-12, "step {i}");
            // x̂0 inverts x_t = √ᾱ·x0 + √(1−ᾱ)·ε.
            let eps = 0.4;
            let xt = s.alpha_bar.sqrt() * x0 + (1.0 - s.alpha_bar).sqrt() * eps;
            assert!((s.x0_from_x * xt + s.x0_from_eps * eps - x0).abs() < 1e-12);
        }
        let last = step(&sch, 50, 49);
        assert_eq!((last.t, last.alpha_bar_prev), (0, 1.0));
        assert!((last.beta_eff - sch.betas[0]).abs() < 1e-15);
        assert!((last.c1 - 1.0).abs() < 1e-12 && last.c2.abs() < 1e-12);
    }

    /// The offline-RL schedule against the reference sampler's update as the spec writes it
    /// (rtb2024 §4.2): T+1 β's, index 0 the noisiest, ᾱ the cumulative products re-indexed;
    /// step i: u ← (u − (1−α_i)/√(1−ᾱ_i)·ε)/√α_i + √β_i·z. Every one of the T steps (the
    /// last included) must have that mean and variance β_i in the crate's form, at T = 75
    /// with one sampling step per DDPM time.
    #[test]
    fn offline_rl_schedule_is_the_reference_update() {
        let t = 75usize;
        let sch = Schedule::qflow(t);
        // β_k = (0.02 − 1e-4)·(T+1−k)/T + 1e-4, k = 0..T (the spec's "about 0.0203 down to
        // about 3.65e-4").
        let beta: Vec<f64> = (0..=t)
            .map(|k| (0.02 - 1e-4) * (t + 1 - k) as f64 / t as f64 + 1e-4)
            .collect();
        assert!((beta[0] - 0.0203).abs() < 1e-4 && (beta[t] - 3.65e-4).abs() < 1e-6);
        // ᾱ: cumulative products of 1 − β from the clean end, then flipped back.
        let mut acc = 1.0;
        let mut alpha_bar: Vec<f64> = beta
            .iter()
            .rev()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        alpha_bar.reverse();
        for i in 0..t {
            let s = step(&sch, t, i);
            let (a, ab) = (1.0 - beta[i], alpha_bar[i]);
            assert!((s.alpha_bar - ab).abs() < 1e-14, "step {i}: ᾱ");
            assert!((s.beta_eff - beta[i]).abs() < 1e-14, "step {i}: variance");
            let (x, eps) = (0.8, -0.45);
            let reference = (x - (1.0 - a) / (1.0 - ab).sqrt() * eps) / a.sqrt();
            let x0 = s.x0_from_x * x + s.x0_from_eps * eps;
            assert!(
                (s.c1 * x0 + s.c2 * x - reference).abs() < 1e-12,
                "step {i}: mean"
            );
        }
        // The last step lands one level above the data: ᾱ = 1 − β_T, not 1.
        assert!((sch.alpha_bar_end - (1.0 - beta[t])).abs() < 1e-15);
        assert_eq!(Schedule::linear(100).alpha_bar_end, 1.0);
    }

    /// With the exact ε̂ of N(m, I) data, ε̂*(x, t) = √(1−ᾱ_t)·(x − √ᾱ_t·m), the ancestral chain
    /// in the crate's EM form (decay·x + dt·u, variance rate·dt, from the sampler's own
    /// transitions) samples N(m, I): x̂0 is then E[x0 | x_t] and fixed_large is the exact
    /// reverse variance of unit-variance data. 20 000 chains, T = 100, L = 25.
    ///
    /// The offline-RL schedule (T = 75, one step per time) is the same chain, but its noisiest
    /// level keeps ᾱ_{T−1} ≈ 0.46 of the signal, so starting at N(0, I) instead of
    /// N(√ᾱ_{T−1}·m, I) is a mean offset. Each exact reverse kernel of unit-variance data keeps
    /// the variance at 1 and carries a mean offset by Cov(x_{t−1}, x_t)/Var(x_t) = √(ᾱ_t/ᾱ_{t−1});
    /// the product telescopes, so the chain ends at
    /// N(m·(√ᾱ_end − ᾱ_{T−1}/√ᾱ_end), 1): about 0.54·m, as the reference's sampler would.
    #[test]
    fn exact_eps_samples_the_data() {
        exact_eps_chain("steps: 25, noising: Ddpm(train_steps: 100, clip: false)");
        exact_eps_chain("steps: 75, noising: Ddpm(train_steps: 75, clip: false, schedule: QFlow)");
    }

    fn exact_eps_chain(sampler: &str) {
        use crate::config::ExperimentConfig;
        let cfg = ExperimentConfig::parse(
            &format!(
                "(target: Gaussian(mean: [1.0], std: 1.0), sampler: ({sampler}),
                  train: (method: EpsMse, iterations: 1),
                  eval: (samples: 4, w2: false, eubo: false))"
            ),
            "ddpm",
        )
        .unwrap();
        let s = crate::samplers::Sampler::from_config(&cfg);
        let (m, n) = (1.0f64, 20_000usize);
        let sch = s.ddpm.as_ref().unwrap();
        let (end, start) = (sch.alpha_bar_end, *sch.alpha_bars.last().unwrap());
        let expected = m * (end.sqrt() - start / end.sqrt());
        let mut rng = crate::rng::stream(3, "ddpm-exact", 0);
        let (mut sum, mut sq) = (0.0, 0.0);
        for _ in 0..n {
            let mut x = crate::rng::normal_f64(&mut rng);
            for i in 0..s.steps {
                let st = s.ddpm_step(i).unwrap();
                let tr = s.transition(i);
                let eps = (1.0 - st.alpha_bar).sqrt() * (x - st.alpha_bar.sqrt() * m);
                let x0 = st.x0_from_x * x + st.x0_from_eps * eps;
                let u = st.c1 / s.dt() * x0;
                x = tr.decay * x
                    + s.dt() * u
                    + (tr.rate * s.dt()).sqrt() * crate::rng::normal_f64(&mut rng);
            }
            sum += x;
            sq += x * x;
        }
        let mean = sum / n as f64;
        let var = sq / n as f64 - mean * mean;
        // Standard errors: 0.007 for the mean, 0.01 for the variance.
        assert!(
            (mean - expected).abs() < 0.03,
            "{sampler}: mean {mean}, expected {expected}"
        );
        assert!((var - 1.0).abs() < 0.04, "{sampler}: variance {var}");
    }
}
