//! The diffusion sampler: Euler–Maruyama forward policy p_F, fixed Brownian-bridge backward
//! policy p_B (spec §2.1–2.3), exploration, and rollouts recorded on the tape.

pub mod bridge;
pub mod ddpm;
pub mod dps;
pub mod exploration;
pub mod pis;
pub mod rollout;
pub mod two_pass;

pub use bridge::{log_pb_step, sample_backward_states};
pub use exploration::explore_std;
pub use rollout::{rollout, rollout_conditional, rollout_recording, Path, Record, Rollout};

use crate::config::{ExperimentConfig, Noising};

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
    /// The reference process p_B reverses.
    pub noising: Noising,
    /// A training-free guidance term on the prior's drift (the evaluation-only baselines).
    pub guidance: Option<Guidance>,
    /// The DDPM training schedule under `Noising::Ddpm`.
    pub ddpm: Option<ddpm::Schedule>,
}

/// The training-free guidance baselines of spec rtb2024 §2.6 and §3.1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Guidance {
    /// Classifier guidance with γ·β (`Method::Guidance`): the drift gains
    /// γ·σ²·i/(i+1)·∇(β·log r)(x_i) at the noisy state (DDPM: [`Sampler::guidance_scale`]).
    Classifier(f64),
    /// DPS (`particles` 0) or LGD-MC (`particles` ≥ 1) with step size ζ, on a DDPM: the step's
    /// mean gains ζ·∇_{x_t} log mean_k exp(−L(x̂0(x_t) + r_t·z_k)) ([`dps`]).
    Measurement { zeta: f64, particles: usize },
}

/// One transition i → i+1 of the reference process, as both kernels use it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transition {
    /// p_F's mean is `decay·x_i + u·dt` (1 for Brownian, 1 − β_i·dt for VP, e^{−B_i} for the
    /// exponential VP, √(1 − β_i²) on DDS's cosine grid: the OU drift is the base drift, so the
    /// zero-initialised network starts as the OU process itself). On the cosine grid u is the
    /// network's output times [`Sampler::control_gain`].
    pub decay: f64,
    /// p_F's per-unit-time variance: σ², 2β_i, (1 − e^{−2B_i})/dt, or β_i²·std²/dt.
    pub rate: f64,
    /// p_B(x_i | x_{i+1}) = N(mean_factor·x_{i+1}, var); `None` when x_i is fixed (x₀ = 0 under
    /// the Brownian bridge).
    pub backward: Option<(f64, f64)>,
}

impl Transition {
    /// ln of [`Self::rate`]: the ℓ of a fixed variance.
    pub fn log_rate(&self) -> f64 {
        self.rate.ln()
    }
}

impl Guidance {
    /// The guidance `cfg`'s method samples with, if any: γ defaults to 1 (the 2-D reference),
    /// ζ to 0.1 and the LGD-MC particles to 10 (the vision code).
    pub fn of(cfg: &ExperimentConfig) -> Option<Self> {
        use crate::config::Method;
        let scale = cfg.posterior.as_ref().and_then(|p| p.guidance);
        match cfg.train.method {
            Method::Guidance => {
                let beta = cfg.posterior.as_ref().map_or(1.0, |p| p.beta);
                Some(Guidance::Classifier(scale.unwrap_or(1.0) * beta))
            }
            Method::Dps => Some(Guidance::Measurement {
                zeta: scale.unwrap_or(0.1),
                particles: 0,
            }),
            Method::LgdMc => Some(Guidance::Measurement {
                zeta: scale.unwrap_or(0.1),
                particles: cfg
                    .posterior
                    .as_ref()
                    .and_then(|p| p.particles)
                    .unwrap_or(10),
            }),
            _ => None,
        }
    }
}

/// h_i of Vargas et al.'s cosine grid of `steps` steps over [0, horizon]:
/// horizon·cos⁴(φ_i)/Σ_j cos⁴(φ_j), φ_i = ((i/T + s)/(1 + s))·π/2 with s = 0.008 (Nichol &
/// Dhariwal's offset). Their grid also has an (i = T) step of length cos⁴(π/2) = 0, which moves
/// nothing and is left out; the lengths sum to `horizon`, largest at the noise end (i = 0).
pub fn cosine_step_length(i: usize, steps: usize, horizon: f64) -> f64 {
    const OFFSET: f64 = 0.008;
    let weight = |j: usize| {
        let phase =
            (j as f64 / steps as f64 + OFFSET) / (1.0 + OFFSET) * std::f64::consts::FRAC_PI_2;
        phase.cos().powi(4)
    };
    let total: f64 = (0..steps).map(weight).sum();
    horizon * weight(i) / total
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
            noising: cfg.sampler.noising,
            ddpm: match cfg.sampler.noising {
                Noising::Ddpm {
                    train_steps,
                    schedule,
                    ..
                } => Some(ddpm::Schedule::of(schedule, train_steps)),
                _ => None,
            },
            guidance: Guidance::of(cfg),
        }
    }

    /// The classifier-guidance scale of every step's drift, `[T, 1]`: γ·σ²·i/(i+1), the
    /// Brownian bridge's variance ratio (0 at i = 0; spec rtb2024 §2.6), or for a DDPM γ·β_eff/dt,
    /// so that the step's mean gains γ·β_eff·∇log r(x_t) (the step's variance times the
    /// gradient: classifier guidance of Dhariwal & Nichol, spec §7.4 "scaled by the DDPM
    /// variance").
    pub fn guidance_scale(&self, gamma: f64) -> Vec<f32> {
        (0..self.steps)
            .map(|i| match self.ddpm_step(i) {
                Some(_) => (gamma * self.ddpm_variance(i) / self.dt()) as f32,
                None => (gamma * self.sigma2 * i as f64 / (i + 1) as f64) as f32,
            })
            .collect()
    }

    /// The kernels of transition i → i+1 (spec §2.2–2.3; VP: Table C.2). Under VP both kernels of
    /// transition i use β_i = β(s) at noising time s = 1 − t_{i+1}, the time the backward
    /// (noising) step starts from.
    pub fn transition(&self, i: usize) -> Transition {
        let dt = self.dt();
        match self.noising {
            Noising::Brownian => Transition {
                decay: 1.0,
                rate: self.sigma2,
                backward: (i > 0).then(|| {
                    let ratio = i as f64 / (i + 1) as f64;
                    (ratio, self.sigma2 * dt * ratio)
                }),
            },
            Noising::Vp {
                beta_min,
                beta_max,
                std,
            } => {
                let s = 1.0 - (i + 1) as f64 * dt;
                let beta = beta_min + (beta_max - beta_min) * s;
                let var = std * std;
                Transition {
                    decay: 1.0 - beta * dt,
                    rate: 2.0 * beta * var,
                    backward: Some((1.0 - beta * dt, 2.0 * beta * dt * var)),
                }
            }
            Noising::Ddpm { .. } => {
                let s = self.ddpm_step(i).expect("a DDPM sampler has its schedule");
                // p_B is the DDPM noising step q(x_t | x_{t−k}) = N(√(ᾱ_t/ᾱ_prev)·x, β_eff).
                Transition {
                    decay: s.c2,
                    rate: self.ddpm_variance(i) / dt,
                    backward: Some(((s.alpha_bar / s.alpha_bar_prev).sqrt(), s.beta_eff)),
                }
            }
            Noising::VpExponential {
                beta_min,
                beta_max,
                std,
            } => {
                // Noising time runs over [s, s + dt], s = 1 − t_{i+1}; β is linear, so the
                // trapezoid gives B = ∫β ds exactly.
                let s = 1.0 - (i + 1) as f64 * dt;
                let beta = |s: f64| beta_min + (beta_max - beta_min) * s;
                let big_b = 0.5 * (beta(s) + beta(s + dt)) * dt;
                let decay = (-big_b).exp();
                // (1 − e^{−2B})·std² without cancellation for small B.
                let var = -(-2.0 * big_b).exp_m1() * std * std;
                Transition {
                    decay,
                    rate: var / dt,
                    backward: Some((decay, var)),
                }
            }
            Noising::VpCosine { horizon, std } => {
                // Vargas et al.'s β_i² = min(h_i, 1) (α = 1); the kernel is x' = √(1 − β²)·x +
                // N(0, β²·std²), reversible w.r.t. N(0, std²I).
                let beta2 = cosine_step_length(i, self.steps, horizon).min(1.0);
                let decay = (1.0 - beta2).sqrt();
                let var = beta2 * std * std;
                Transition {
                    decay,
                    rate: var / dt,
                    backward: Some((decay, var)),
                }
            }
        }
    }

    /// The factor between the network's output u and the EM-form drift o of step i (the mean
    /// is decay·x + o·dt): DDS's step mean is decay·x + var_i·u, so o = (var_i/dt)·u, the
    /// step's rate. `None` (a factor of 1) for every other reference.
    pub fn control_gain(&self, i: usize) -> Option<f64> {
        match self.noising {
            Noising::VpCosine { .. } => Some(self.transition(i).rate),
            _ => None,
        }
    }

    /// x₀ ~ N(0, std²I) (VP) instead of x₀ = 0.
    pub fn random_start(&self) -> bool {
        !self.noising.is_brownian()
    }

    /// Scale standard normals in place into the random start's x₀ ~ N(0, std²I).
    pub fn scale_start(&self, x0: &mut [f32]) {
        let std = self.noising.stationary_std();
        if std != 1.0 {
            x0.iter_mut().for_each(|v| *v = (*v as f64 * std) as f32);
        }
    }

    /// log p₀(x₀) of one row: log N(x₀; 0, std²I) under VP (part of LF, without gradient), 0
    /// for the Brownian start at the origin.
    pub fn log_p0(&self, x0: &[f32]) -> f64 {
        if !self.random_start() {
            return 0.0;
        }
        let std = self.noising.stationary_std();
        let log_norm = 0.5 * std::f64::consts::TAU.ln() + std.ln();
        x0.iter()
            .map(|&v| {
                let z = v as f64 / std;
                -0.5 * z * z - log_norm
            })
            .sum()
    }

    /// dt = 1/T.
    pub fn dt(&self) -> f64 {
        1.0 / self.steps as f64
    }

    /// t_i = i·dt for i = 0..T−1 (the times at which the policy is evaluated); under DDPM the
    /// ε-network's input t_i/T_train of each step's DDPM time instead.
    pub fn times(&self) -> Vec<f64> {
        match &self.ddpm {
            Some(s) => (0..self.steps)
                .map(|i| self.ddpm_time(ddpm::step(s, self.steps, i).t, s))
                .collect(),
            None => (0..self.steps).map(|i| i as f64 * self.dt()).collect(),
        }
    }

    /// The ε-network's time input for DDPM time t: t/T_train.
    pub fn ddpm_time(&self, t: usize, s: &ddpm::Schedule) -> f64 {
        t as f64 / s.alpha_bars.len() as f64
    }

    /// Step i's DDPM constants, under `Noising::Ddpm`.
    pub fn ddpm_step(&self, i: usize) -> Option<ddpm::DdpmStep> {
        self.ddpm.as_ref().map(|s| ddpm::step(s, self.steps, i))
    }

    /// The variance of generation step i of a DDPM: β_eff (fixed_large), or with
    /// `small_variance` β̃ = β_eff·(1 − ᾱ_prev)/(1 − ᾱ_t), except at a last step that lands on
    /// clean data (ᾱ_prev = 1, where β̃ would be 0), which keeps β_eff.
    pub fn ddpm_variance(&self, i: usize) -> f64 {
        let s = self.ddpm_step(i).expect("a DDPM sampler has its schedule");
        match self.noising {
            Noising::Ddpm {
                small_variance: true,
                ..
            } if s.alpha_bar_prev < 1.0 => {
                s.beta_eff * (1.0 - s.alpha_bar_prev) / (1.0 - s.alpha_bar)
            }
            _ => s.beta_eff,
        }
    }

    /// Whether x̂0 is clipped (DDPM).
    pub fn ddpm_clip(&self) -> bool {
        matches!(self.noising, Noising::Ddpm { clip: true, .. })
    }
}
