//! DDPM as a sampler family (Ho et al. 2020; spec rtb2024 §3.1, §7.2): ε-prediction, the
//! paper's linear β schedule rescaled by 1000/T (β from 0.1/T to 20/T), "leading" strided
//! ancestral sampling, optional x̂0 clipping, fixed_large variance.
//!
//! Generation step i = 0..L−1 goes from DDPM time t_i = (L−1−i)·k to t_i − k (k = T/L; the
//! last step ends at "−1", where ᾱ = 1). Each step is Gaussian with
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
use crate::cpu::Kernels;

/// The training schedule: β_t and ᾱ_t for t = 0..T−1.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub betas: Vec<f64>,
    pub alpha_bars: Vec<f64>,
}

impl Schedule {
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
        let mut acc = 1.0;
        let alpha_bars = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        Schedule { betas, alpha_bars }
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
        1.0
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

    /// With the exact ε̂ of N(m, I) data, ε̂*(x, t) = √(1−ᾱ_t)·(x − √ᾱ_t·m), the ancestral chain
    /// in the crate's EM form (decay·x + dt·u, variance rate·dt, from the sampler's own
    /// transitions) samples N(m, I): x̂0 is then E[x0 | x_t] and fixed_large is the exact
    /// reverse variance of unit-variance data. 20 000 chains, T = 100, L = 25.
    #[test]
    fn exact_eps_samples_the_data() {
        use crate::config::ExperimentConfig;
        let cfg = ExperimentConfig::parse(
            "(target: Gaussian(mean: [1.0], std: 1.0),
              sampler: (steps: 25, noising: Ddpm(train_steps: 100, clip: false)),
              train: (method: EpsMse, iterations: 1), eval: (samples: 4, w2: false, eubo: false))",
            "ddpm",
        )
        .unwrap();
        let s = crate::samplers::Sampler::from_config(&cfg);
        let (m, n) = (1.0f64, 20_000usize);
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
        assert!((mean - m).abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.04, "variance {var}");
    }
}
