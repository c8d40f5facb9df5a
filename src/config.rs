//! Experiment configs: one RON file per paper table row.
//!
//! Every knob of a run lives here (nothing comes from environment variables). Unknown fields are
//! rejected (`deny_unknown_fields`), omitted sections take the paper's defaults, and
//! [`ExperimentConfig::validate`] rejects impossible values with the field's path and line.
//! The *resolved* config (defaults filled in) is what a run folder records and what
//! `repro verify` replays.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A whole experiment: target × sampler × network × training × evaluation, plus the paper row it
/// replays.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Which paper, table and row this config replays, with the paper's numbers.
    #[serde(default)]
    pub paper: Option<PaperRef>,
    /// Root seed of every random stream (`repro run --seed` overrides it).
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub target: TargetConfig,
    #[serde(default)]
    pub sampler: SamplerConfig,
    #[serde(default)]
    pub network: NetworkConfig,
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalConfig,
    /// Write a checkpoint every this many iterations (default [`DEFAULT_CHECKPOINT_EVERY`]).
    /// Operational only: a resumed run is bitwise identical to an uninterrupted one, so this
    /// never changes a result, and it is left out of the resolved config (and its digest)
    /// unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<usize>,
    /// Where training runs (`repro run --backend` overrides it). The two backends agree within
    /// named tolerances, not bitwise, so a run folder's resolved config names the backend that
    /// actually ran (`Auto` resolved by [`ExperimentConfig::resolve_backend`]); `Cpu`, the
    /// default, is left out so CPU configs keep their digests.
    #[serde(default, skip_serializing_if = "Backend::is_cpu")]
    pub backend: Backend,
    /// RTB fine-tuning (`train.method: Rtb`): the prior run this posterior starts from and
    /// the reward exponent β. Left out when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posterior: Option<PosteriorConfig>,
}

/// A posterior p^post ∝ p_prior(x)·r(x)^β fine-tuned from a pretrained prior by relative
/// trajectory balance (Venkatraman et al. 2024, spec rtb2024 §1); r is `target`'s reward.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PosteriorConfig {
    pub prior: PriorRef,
    /// β on log r (1 in the paper's 2-D and vision experiments).
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// `RlKlPaper`'s weight α on the squared log-ratio (the paper's sweep picks 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_weight: Option<f64>,
    /// RTB's loss cutoff c: L = ½·relu(δ² − c) (the vision code's 0.1); absent, plain ½δ².
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_cutoff: Option<f64>,
    /// The factor on r in `RlKlPaper` and `Ddpo`'s reward (default 1; the vision code uses 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_scale: Option<f64>,
    /// `Guidance`'s γ (1 in the reference), or `Dps`/`LgdMc`'s ζ (0.1 in the vision code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance: Option<f64>,
    /// `LgdMc`'s particles per step (10 in the vision code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub particles: Option<usize>,
    /// `Resample`'s candidates per kept sample (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resample_pool: Option<usize>,
    /// "RTB mixed" on an offline-RL target (spec rtb2024 §4.3 (b)): every second iteration
    /// trains on noising paths of dataset actions (the prior's forward-noising kernel from
    /// u_data, log r at u_data) instead of on-policy trajectories.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dataset_paths: bool,
    /// Train LoRA adapters instead of every weight (spec rtb2024 §3.3 (ii)): each policy weight
    /// matrix stays at the prior's and moves only by a rank-`rank` update (α/rank)·B·A, B
    /// zero-initialised; biases stay frozen, log Z trains. For posteriors that train their own
    /// copy of the prior (Rtb, RlKl, RlKlPaper, Ddpo, Dpok); CPU only. Left out of the resolved
    /// config when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
}

/// The LoRA adapters of a fine-tuned posterior ([`PosteriorConfig::lora`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// R, the rank of each update (the spec suggests 4–8).
    pub rank: usize,
    /// α: the update is scaled by α/R (PEFT's `lora_alpha`); default R, i.e. scale 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
}

impl LoraConfig {
    /// α, the default filled in.
    pub fn alpha(&self) -> f64 {
        self.alpha.unwrap_or(self.rank as f64)
    }
}

impl PosteriorConfig {
    /// `Dpok`'s weight on the per-step KL (default 1: its optimum is then RTB's target).
    pub fn dpok_kl_weight(&self) -> f64 {
        self.kl_weight.unwrap_or(1.0)
    }

    /// `Resample`'s candidates per kept sample.
    pub fn pool(&self) -> usize {
        self.resample_pool.unwrap_or(10)
    }
}

/// The prior run a posterior refers to: its config file (relative to the posterior's config
/// folder) and that config's digest, so an edited prior is never silently used.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriorRef {
    pub config: String,
    pub digest: String,
}

fn default_beta() -> f64 {
    1.0
}

/// The compute backend of a run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// The SIMD CPU kernels and the tape (the reference).
    #[default]
    Cpu,
    /// The WGSL kernels through wgpu on any adapter (software ones included); no adapter is an
    /// error.
    Gpu,
    /// A hardware GPU when one is present and the config is supported there, else the CPU.
    Auto,
}

impl Backend {
    pub fn is_cpu(&self) -> bool {
        *self == Backend::Cpu
    }

    /// `cpu`, `gpu` or `auto` (the CLI's spelling).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Backend::Cpu),
            "gpu" => Ok(Backend::Gpu),
            "auto" => Ok(Backend::Auto),
            other => Err(format!(
                "unknown backend {other:?} (expected cpu, gpu or auto)"
            )),
        }
    }
}

/// Iterations between checkpoints when a config does not say: a few minutes of paper-size
/// training on two cores (25GMM ≈ 20 ms, Manywell ≈ 36 ms per iteration).
pub const DEFAULT_CHECKPOINT_EVERY: usize = 5000;

/// Where a config's expected numbers come from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PaperRef {
    /// e.g. "Sendera et al. 2024".
    pub paper: String,
    /// e.g. "Table 1".
    pub table: String,
    /// e.g. "TB + Expl.".
    pub row: String,
    /// The paper's numbers for this row: metric name (a `metrics.json` key) → (mean, std).
    /// A std of 0 stands for a cell the paper prints without one: `repro table` then quotes
    /// the number and marks no ±2σ band.
    #[serde(default)]
    pub values: BTreeMap<String, (f64, f64)>,
    /// Iterations the paper trained for, when this config runs a different number.
    #[serde(default)]
    pub note: Option<String>,
}

/// Unknown fields inside a target's parentheses are refused like anywhere else in a config.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub enum TargetConfig {
    /// 25 Gaussians on the grid {−10,−5,0,5,10}², variance 0.3 (d = 2, log Z = 0).
    Gmm25,
    /// 9 Gaussians on {−5,0,5}², variance 0.3 (d = 2, log Z = 0).
    Gmm9,
    /// Neal's funnel: `Hard` has x₀ ~ N(0, 9) (the paper's), `Easy` N(0, 1); d = 10 in the paper.
    Funnel { variant: FunnelVariant, dim: usize },
    /// Independent double wells, d even (32 in the paper).
    ManyWell { dim: usize },
    /// The log-Gaussian Cox process on the Finnish pines (d = 1600, a 40 × 40 grid; spec §1.5),
    /// unwhitened; log Z unknown (the paper reports raw log Ẑ and log Ẑ^RW).
    Lgcp,
    /// The VAE latent posterior p(z | x) ∝ N(z; 0, I)·p(x | z) of the frozen MNIST VAE (d = 20,
    /// spec §1.6): a conditional sampler trained on MNIST training images with `repeats`
    /// trajectories per image (5 in the README commands, 10 in the paper text), evaluated on
    /// the 100 evaluation images, one trajectory each.
    Vae { repeats: usize },
    /// The constraint of Venkatraman et al.'s 2-D toy (spec rtb2024 §2.1): r = p_9/p_25, the
    /// ratio of the 9-mode mixture (weights 4, 10, 4, 5, 10, 5, 4, 15, 4 over 61) to the
    /// 25GMM, so p_25·r = p_9 (log ∫p_25·r = 0). d = 2.
    Gmm25To9,
    /// A normalised isotropic Gaussian N(mean, std²·I) (log Z = 0): a closed-form reward for
    /// RTB checks. d = `mean.len()`.
    Gaussian { mean: Vec<f64>, std: f64 },
    /// The RTB vision stand-in (spec rtb2024 §3.3): the UCI 8×8 digits in [−1, 1] (d = 64),
    /// or MNIST (`images: Mnist(pool)`), r = max over `classes` of p(c | x) under a frozen
    /// MLP classifier; exact samples are the dataset's images of those classes (all ten for a
    /// prior).
    Digits {
        classes: Vec<u8>,
        /// Which images (the UCI 8×8 digits when omitted, left out of the resolved config then
        /// so existing digests hold).
        #[serde(default, skip_serializing_if = "DigitImagesConfig::is_uci")]
        images: DigitImagesConfig,
    },
    /// The offline-RL stand-in (spec rtb2024 §4.5 A): a contextual bandit with state
    /// s ~ U[−1, 1] and action a ∈ ℝ² (d = 2), behaviour policy μ(a|s) a 5-mode mixture rotating
    /// with s ([`crate::energies::bandit`]), Q = R. The prior (`EpsMse`) is a DDPM on `data`
    /// offline (s, a) pairs conditioned on s; a posterior targets π* ∝ μ·exp(Q/α) with
    /// β = 1/α, `repeats` trajectories per state per iteration (RTB in its VarGrad form), and is
    /// evaluated on `test_states` evenly spaced states against π* on a 200 × 200 grid.
    Bandit {
        repeats: usize,
        #[serde(default = "default_bandit_data")]
        data: usize,
        #[serde(default = "default_bandit_test_states")]
        test_states: usize,
    },
    /// The sequential offline-RL stand-in (spec rtb2024 §4.5 B): a self-written Pendulum
    /// ([`crate::rl::pendulum`]) with a D4RL-style `dataset` of `data_episodes` episodes
    /// (MediumExpert: that many of each), generated from `data_seed`. The action a ∈ [−2, 2]
    /// is diffused pre-tanh, u = artanh(clip(a/2, ±0.99)) (d = 1), or as u = a/2 with
    /// `action: Clipped`, conditioned on the observation (cos θ, sin θ, θ̇).
    /// The prior (`EpsMse`) is the diffusion BC policy; its run then trains the IQL critic
    /// (`iql`) on the same data and saves it beside the prior's parameters. A posterior
    /// (`Rtb` in VarGrad form over `repeats` trajectories per state, or `Resample`) targets
    /// π* ∝ μ(u|s)·exp(Q(s, 2 tanh u)/α)·|det J_tanh|, β = 1/α. Scored by the normalised return
    /// of `episodes` evaluation episodes, and the estimators at `test_states` dataset states.
    Pendulum {
        dataset: crate::rl::pendulum::DatasetKind,
        repeats: usize,
        #[serde(default = "default_pendulum_data_episodes")]
        data_episodes: usize,
        /// The dataset's own seed: like a D4RL file it is fixed, shared by the prior, its
        /// critic and every posterior seed.
        #[serde(default)]
        data_seed: u64,
        #[serde(default = "default_bandit_test_states")]
        test_states: usize,
        #[serde(default = "default_pendulum_episodes")]
        episodes: usize,
        #[serde(default)]
        iql: crate::rl::iql::IqlConfig,
        /// The space the policy diffuses in: the paper's pre-tanh u unless set (then left out
        /// of the resolved config, so existing digests hold).
        #[serde(
            default,
            skip_serializing_if = "crate::rl::task::ActionSpace::is_pre_tanh"
        )]
        action: crate::rl::task::ActionSpace,
        /// An ablation of a posterior's reward: score actions by the exact expert-continuation
        /// value Q^E (`rl::critic_check`, in the critic's unit) instead of the IQL critic, to
        /// separate RTB's extraction from the critic's errors. Off unless set (then left out of
        /// the resolved config).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        oracle_q: bool,
    },
}

fn default_pendulum_data_episodes() -> usize {
    100
}

fn default_pendulum_episodes() -> usize {
    10
}

fn default_bandit_data() -> usize {
    20_000
}

fn default_bandit_test_states() -> usize {
    8
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FunnelVariant {
    Hard,
    Easy,
}

/// How the 25GMM ground-truth set for W2 is drawn.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GmmGroundTruth {
    /// ⌊n/25⌋ samples per mode, as the paper-era reference code did.
    #[default]
    Stratified,
    /// Modes drawn uniformly at random (the reference code after its Feb 2025 fix).
    Multinomial,
}

/// The Euler–Maruyama sampler and its fixed Brownian-bridge backward policy (spec §2.1–2.3).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    /// T, the number of steps (dt = 1/T).
    pub steps: usize,
    /// σ², the base diffusion rate (`t_scale`): 5 for 25GMM and LGCP, 1 for Funnel and Manywell.
    pub sigma2: f64,
    /// Learn a per-dimension log-variance ℓ = log σ² + range·tanh(v) (spec §2.2 step 5).
    pub learned_variance: bool,
    /// `range` above (`--log_var_range`).
    pub log_var_range: f64,
    /// The reference (noising) process p_B: the Brownian bridge to x₀ = 0 of the paper's main
    /// tables, or the VP (Ornstein–Uhlenbeck) process of Table C.2. Left out of the resolved
    /// config when Brownian.
    #[serde(skip_serializing_if = "Noising::is_brownian")]
    pub noising: Noising,
}

/// The noising process the sampler reverses (spec Table C.2).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub enum Noising {
    /// dX = σ dW pinned at x₀ = 0: p_B is the discretised Brownian bridge, x₀ = 0 surely.
    #[default]
    Brownian,
    /// The VP / OU process dX_s = −β(s)X_s ds + √(2β(s))·std dW_s in noising time s = 1 − t, β
    /// linear from `beta_min` (s = 0, the target end) to `beta_max` (s = 1): x₀ ~ N(0, std²I),
    /// the process's stationary law, and `sampler.sigma2` is unused.
    Vp {
        beta_min: f64,
        beta_max: f64,
        /// The stationary law's std (the scale of Berner et al.'s VP SDE and prior): 1 unless
        /// set, and left out of the resolved config then. A target far wider than N(0, I)
        /// (25GMM spans ±10) is out of a unit start's reach.
        #[serde(default = "unit_std", skip_serializing_if = "is_unit_std")]
        std: f64,
    },
    /// The same OU process with each step integrated exactly (the exponential integrator of DDS,
    /// Vargas et al. 2023): over a step the OU moves x to e^{−B}·x plus N(0, (1 − e^{−2B})·std²)
    /// noise, B = ∫β ds. Every step keeps N(0, std²I) stationary and is reversible, so unlike
    /// the Euler kernel any β·dt is allowed.
    VpExponential {
        beta_min: f64,
        beta_max: f64,
        /// As `Vp`'s.
        #[serde(default = "unit_std", skip_serializing_if = "is_unit_std")]
        std: f64,
    },
    /// DDS as Vargas et al. 2023 define it (and Berner et al.'s public DDS config runs it): the
    /// exponential integrator on the cosine time grid, with the control scaled by each step's
    /// variance. Step i has length h_i = horizon·cos⁴(φ_i)/Σ_j cos⁴(φ_j), φ_i =
    /// ((i/T + 0.008)/1.008)·π/2, so the steps are long at the noise end and shrink toward the
    /// target; with β_i² = min(h_i, 1) the step is x' = √(1 − β_i²)·x + β_i²·std²·u +
    /// std·β_i·ξ. That kernel keeps N(0, std²I) stationary and is reversible, so it is its own
    /// backward kernel. `horizon` is the grid's total length (12.8 in Berner et al.'s public
    /// log-variance DDS config, 6.4 in their basic one).
    VpCosine {
        horizon: f64,
        /// As `Vp`'s.
        #[serde(default = "unit_std", skip_serializing_if = "is_unit_std")]
        std: f64,
    },
    /// DDPM (ε-prediction) trained on `train_steps` times under the β `schedule` and sampled
    /// with `sampler.steps` leading-strided ancestral steps (fixed_large variance, or
    /// fixed_small with `small_variance`), x̂0 clipped to [−1, 1] when `clip` (spec rtb2024
    /// §3.1, §4.2, §7.2). x₀ ~ N(0, I); the network's output is ε̂; `sampler.sigma2` is unused.
    Ddpm {
        train_steps: usize,
        clip: bool,
        /// The β schedule: the vision code's (β from 0.1/T to 20/T) unless set. Left out of
        /// the resolved config when it is that default.
        #[serde(default, skip_serializing_if = "DdpmSchedule::is_scaled_linear")]
        schedule: DdpmSchedule,
        /// Ho et al.'s fixed_small variance β̃ = β_eff·(1 − ᾱ_prev)/(1 − ᾱ_t) for every step
        /// but the last (which keeps β_0): the posterior q(x_prev | x_t, x0)'s own variance. The
        /// vision code's fixed_large β_eff over-disperses few-step samples of low-dimensional
        /// data.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        small_variance: bool,
    },
}

/// A DDPM's β schedule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DdpmSchedule {
    /// The vision code's (spec rtb2024 §3.1): β linear from 0.1/T to 20/T, the 1000-step
    /// schedule rescaled to T steps; the chain ends on clean data.
    #[default]
    ScaledLinear,
    /// The offline-RL code's (spec rtb2024 §4.2, T = 75 there): T+1 β's linear from about
    /// 3.65e-4 to 0.0203 whatever T is, the T ancestral steps at the T noisiest of them, noise
    /// added at every step (see `samplers::ddpm::Schedule::qflow`).
    QFlow,
}

impl DdpmSchedule {
    pub fn is_scaled_linear(&self) -> bool {
        *self == DdpmSchedule::ScaledLinear
    }
}

impl Noising {
    pub fn is_brownian(&self) -> bool {
        *self == Noising::Brownian
    }

    /// The std of the VP processes' stationary law (their x₀ ~ N(0, std²I)); 1 otherwise.
    pub fn stationary_std(&self) -> f64 {
        match *self {
            Noising::Vp { std, .. }
            | Noising::VpExponential { std, .. }
            | Noising::VpCosine { std, .. } => std,
            _ => 1.0,
        }
    }
}

fn unit_std() -> f64 {
    1.0
}

fn is_unit_std(std: &f64) -> bool {
    *std == 1.0
}

impl SamplerConfig {
    /// This sampler with fixed step variances (the learned-variance fields at their defaults):
    /// what a posterior that learns its variances shares with its prior.
    pub fn without_learned_variance(&self) -> SamplerConfig {
        let d = SamplerConfig::default();
        SamplerConfig {
            learned_variance: false,
            log_var_range: d.log_var_range,
            ..self.clone()
        }
    }
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            steps: 100,
            sigma2: 5.0,
            learned_variance: false,
            log_var_range: 4.0,
            noising: Noising::Brownian,
        }
    }
}

/// The images of the vision target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DigitImagesConfig {
    /// The UCI 8×8 digits (1 797 images, d = 64).
    #[default]
    Uci8x8,
    /// The 60 000 MNIST training images, average-pooled over `pool`×`pool` blocks (1, 2, 4 or
    /// 7): d = (28/pool)², 196 at pool 2 (spec §3.3's 14×14 middle ground), 784 at pool 1.
    Mnist(usize),
}

impl DigitImagesConfig {
    pub fn is_uci(&self) -> bool {
        *self == DigitImagesConfig::Uci8x8
    }

    /// D, pixels per image.
    pub fn pixels(&self) -> usize {
        match self {
            DigitImagesConfig::Uci8x8 => crate::energies::digits::PIXELS,
            DigitImagesConfig::Mnist(pool) => (28 / pool.max(&1)).pow(2),
        }
    }
}

/// The PIS drift network (spec §2.4).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// H: width of every hidden layer and both embeddings.
    pub hidden: usize,
    /// Number of fixed frequencies in the time features (sin and cos of each).
    pub harmonics: usize,
    /// Hidden Linear+GELU blocks of the joint policy after the first GELU.
    pub joint_layers: usize,
    /// Langevin parametrization: add s(t)·clip(∇log R) to the drift.
    pub langevin: bool,
    /// Layers of the LP scale net s(t) (`lgv_layers`).
    pub langevin_layers: usize,
    /// s(t) per dimension instead of a scalar.
    pub langevin_per_dim: bool,
    /// Clip of ∇log R in the LP term (`lgv_clip`).
    pub lgv_clip: f64,
    /// Clip of the raw network output (`gfn_clip`).
    pub out_clip: f64,
    /// LayerNorm (learned gain and bias) on every hidden pre-activation, before its GELU: the
    /// Linear → LayerNorm → GELU blocks of the offline-RL denoiser (spec rtb2024 §4.2). Off by
    /// default, and then left out of the resolved config, so existing digests hold.
    #[serde(skip_serializing_if = "is_false")]
    pub layer_norm: bool,
    /// DIS's interpolated-score parametrisation (Berner et al.'s public DIS config): the LP
    /// term's input becomes σ²(t)·[(1 − t)·∇log N(x; 0, std²I) + t·clip(∇log R(x))] and the
    /// drift gains σ²(t)·x/std², so that with s(t) = 1 (its initial value here) the drift is
    /// the time reversal's for marginals whose score is that interpolation. Needs
    /// `langevin: true` and a VP reference. Off by default, and then left out of the resolved
    /// config.
    #[serde(skip_serializing_if = "is_false")]
    pub interpolated_score: bool,
}

impl NetworkConfig {
    /// This network without its Langevin term (the LP fields at their defaults): what a
    /// posterior with an LP correction shares with its prior, which has none.
    pub fn without_langevin(&self) -> NetworkConfig {
        let d = NetworkConfig::default();
        NetworkConfig {
            langevin: false,
            langevin_layers: d.langevin_layers,
            langevin_per_dim: d.langevin_per_dim,
            lgv_clip: d.lgv_clip,
            interpolated_score: false,
            ..self.clone()
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            hidden: 64,
            harmonics: 64,
            joint_layers: 2,
            langevin: false,
            langevin_layers: 3,
            langevin_per_dim: false,
            lgv_clip: 100.0,
            out_clip: 1e4,
            layer_norm: false,
            interpolated_score: false,
        }
    }
}

/// The training objective.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Trajectory balance with a learned scalar log Z.
    Tb,
    /// VarGrad: TB with log Z replaced by the batch mean of the log-ratio.
    VarGrad,
    /// Sub-trajectory balance with the conditional flow log F(x, t) (λ: `train.subtb_lambda`;
    /// FL-SubTB with `train.forward_looking`).
    SubTb,
    /// Detailed balance with the conditional flow (FL with `train.forward_looking`).
    Db,
    /// PIS: the reverse KL by reparametrisation, differentiated through the simulated
    /// trajectory and log R(x_T).
    Pis,
    /// Prior pretraining (spec rtb2024 §2.4): maximum likelihood of p_F on backward (p_B)
    /// trajectories from exact samples of `target`, L = −mean_b Σ_i log p_F. Learns no log Z.
    Mle,
    /// DDPM prior pretraining (spec rtb2024 §3.3, §7.4): the ε-MSE
    /// mean ‖ε − ε̂(√ᾱ_t·x0 + √(1−ᾱ_t)·ε, t)‖² over exact samples x0 of `target`, one uniform
    /// t per sample; needs `sampler.noising: Ddpm`. Learns no log Z.
    EpsMse,
    /// Relative trajectory balance (spec rtb2024 §1.1): TB with log p_B replaced by the frozen
    /// prior's log-likelihood of the same moves and log R by β·log r; needs `posterior`.
    Rtb,
    /// KL-regularised REINFORCE as corrected by Deleu et al. 2025 (spec rtb2024 §1.6): advantage
    /// log r − (1/β)(Σlog q − Σlog p), centred; off-policy with `train.exploration` (tempered
    /// self-normalised importance weights). Its optimum is RTB's.
    RlKl,
    /// The RTB paper's RL baseline as its code runs it (spec rtb2024 §1.6, §2.6): REINFORCE
    /// on `reward_scale`·r plus `posterior.kl_weight`·(Σlog q − Σlog p)². On-policy. With
    /// reward_scale 10 and kl_weight 0.01 it is DPOK as the vision code runs it (spec §3.3).
    RlKlPaper,
    /// DDPO (spec rtb2024 §3.3): REINFORCE on `reward_scale`·r with the advantage whitened over
    /// the batch and no KL term. On-policy.
    Ddpo,
    /// DPOK with its analytic per-step KL (Fan et al. 2023; spec rtb2024 §3.3, §7.4): REINFORCE
    /// on β·log r with a batch-mean baseline, plus `posterior.kl_weight` (default 1) times
    /// Σ_t ‖μ_φ − μ_θ‖²/(2σ_t²), the KL between the posterior's and the prior's Gaussian steps
    /// from the same sampled state, differentiated through μ_φ. With weight 1 its optimum is
    /// RTB's target. On-policy, fixed variance.
    Dpok,
    /// Classifier guidance (spec rtb2024 §2.6): the prior's drift plus
    /// γ·σ²·i/(i+1)·∇log r(x_i) at the noisy state, γ = `posterior.guidance`. Trains nothing
    /// (`iterations: 0`).
    Guidance,
    /// Importance resampling of prior samples by r^β (`posterior.resample_pool` candidates per
    /// kept sample): the sanity baseline. Trains nothing (`iterations: 0`).
    Resample,
    /// DPS (Chung et al. 2023; spec rtb2024 §3.1) on a DDPM prior of a measurement target (the
    /// digits): each step's mean gains −ζ·∇_{x_t}‖e_c − logits(x̂0(x_t))‖, differentiated
    /// through the ε-network and the classifier; ζ = `posterior.guidance` (default 0.1).
    /// Trains nothing (`iterations: 0`).
    Dps,
    /// LGD-MC (Song et al. 2023; spec rtb2024 §3.1): DPS with the loss averaged over
    /// `posterior.particles` (default 10) particles x̂0 + r_t·z, r_t = √(1−ᾱ_t), as
    /// ζ·∇_{x_t} log mean_k exp(−L_k). Trains nothing (`iterations: 0`).
    LgdMc,
}

impl Method {
    /// Does the method start from a prior run (`posterior`)?
    pub fn uses_prior(self) -> bool {
        matches!(
            self,
            Method::Rtb
                | Method::RlKl
                | Method::RlKlPaper
                | Method::Ddpo
                | Method::Dpok
                | Method::Guidance
                | Method::Resample
                | Method::Dps
                | Method::LgdMc
        )
    }

    /// Does the method only evaluate the prior, with no training iterations?
    pub fn evaluates_only(self) -> bool {
        matches!(
            self,
            Method::Guidance | Method::Resample | Method::Dps | Method::LgdMc
        )
    }

    /// Is the method a posterior that trains its own copy of the prior (and so may add a
    /// learned step variance to it)? DPOK is not: its per-step KL is written for fixed
    /// variances.
    pub fn trains_posterior(self) -> bool {
        self.uses_prior() && !self.evaluates_only() && self != Method::Dpok
    }

    /// Does the method train the conditional flow head log F(x, t)?
    pub fn uses_flow(self) -> bool {
        matches!(self, Method::SubTb | Method::Db)
    }
}

/// Off-policy exploration: extra per-step noise std ε added in variance (spec §2.6).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExplorationConfig {
    /// ε₀, a standard deviation (0.2 in "+ Expl." rows).
    pub std: f64,
    /// ε decays linearly to 0 over this many iterations (the reference hard-codes 5000);
    /// `None` keeps it constant.
    #[serde(default = "default_decay")]
    pub decay_iters: Option<usize>,
    /// ε stays ε₀ for iterations below this, then follows the decay from where it stands (the
    /// RTB 2-D toy: 500, spec rtb2024 §1.4). Left out when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_iters: Option<usize>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub method: Method,
    /// Training iterations (one Adam step each).
    pub iterations: usize,
    /// B, trajectories per iteration.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Adam learning rate of the policy networks.
    #[serde(default = "default_lr_policy")]
    pub lr_policy: f64,
    /// Adam learning rate of log Z.
    #[serde(default = "default_lr_flow")]
    pub lr_flow: f64,
    /// Cosine-anneal the policy learning rate from `lr_policy` at the first iteration to this
    /// value after the last (PyTorch `CosineAnnealingLR` with η_min = this); absent, constant.
    /// A function of the iteration only, so a resumed run is still bitwise an uninterrupted
    /// one. log Z's rate stays constant. Left out of the resolved config when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_policy_final: Option<f64>,
    /// With `sampler.learned_variance`: the log-variance head (the network's second D outputs)
    /// steps at this factor times the policy's rate, on the policy's schedule. Why: at the
    /// policy's rate, Adam's first steps move every step's variance at once by about that rate
    /// in v, which can throw a fine-tuned posterior far from its prior. CPU only. Left out of
    /// the resolved config when unset (factor 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_variance_factor: Option<f64>,
    /// EpsMse only: weight each sample's squared error by min(γ/SNR_t, 1), SNR_t = ᾱ_t/(1 − ᾱ_t)
    /// (Min-SNR-γ, Hang et al. 2023; the offline-RL prior's loss with γ = 5, spec rtb2024
    /// §4.2). The weighted errors are still averaged over B·D. Left out of the resolved config
    /// when unset (every weight 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_snr_gamma: Option<f64>,
    #[serde(default)]
    pub exploration: Option<ExplorationConfig>,
    /// Clip the global gradient norm to this value (the paper uses none).
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// The batch is cut into this many fixed shards whose gradients are summed in shard order.
    /// Results depend on it (summation order), never on the machine's core count.
    #[serde(default = "default_shards")]
    pub shards: usize,
    /// Off-policy training (spec §4): alternate forward and backward iterations, with a replay
    /// buffer and optional local search. Left out of the resolved config when off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off_policy: Option<OffPolicyConfig>,
    /// SubTB's λ (`--subtb_lambda`, 2 when omitted). Left out of the resolved config when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtb_lambda: Option<f64>,
    /// The forward-looking partial energy added to log F_i (`--partial_energy`, FL-SubTB): SubTb
    /// and Db only. Left out of the resolved config when off.
    #[serde(default, skip_serializing_if = "is_false")]
    pub forward_looking: bool,
    /// The memory-light two-pass gradient (spec rtb2024 §1.5, §7.4): one pass samples the
    /// trajectories without a graph and gives the residuals, a second recomputes one step at
    /// a time and accumulates ∂L/∂LF_b·∇log p_F. Same gradient as the whole-trajectory tape up
    /// to rounding, with one step's graph in memory instead of T. For the per-trajectory losses
    /// (TB, VarGrad, RTB, MLE and the RL baselines). Left out of the resolved config when off.
    #[serde(default, skip_serializing_if = "is_false")]
    pub two_pass: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// λ when a SubTB config does not say (spec §3).
pub const DEFAULT_SUBTB_LAMBDA: f64 = 2.0;

impl TrainConfig {
    /// SubTB's λ, the default filled in.
    pub fn lambda(&self) -> f64 {
        self.subtb_lambda.unwrap_or(DEFAULT_SUBTB_LAMBDA)
    }

    /// The policy's learning rate at `iteration`: `lr_policy`, cosine-annealed to
    /// `lr_policy_final` over `iterations` when that is set.
    pub fn lr_policy_at(&self, iteration: usize) -> f64 {
        match self.lr_policy_final {
            Some(f) => crate::nn::adam::cosine_lr(self.lr_policy, f, iteration, self.iterations),
            None => self.lr_policy,
        }
    }

    /// The log-variance head's learning rate at `iteration`, when it has its own.
    pub fn lr_variance_at(&self, iteration: usize) -> Option<f64> {
        self.lr_variance_factor
            .map(|f| f * self.lr_policy_at(iteration))
    }
}

/// The reference code's `--both_ways` machinery (spec §4.1–4.3): even iterations train on
/// forward (exploratory) trajectories and add their x_T to the replay buffer; odd ones train on
/// backward trajectories p_B(·|x) from buffer states x; with local search, every
/// `local_search_period` iterations (at it ≡ 1) MALA from buffer samples refills a second buffer
/// that the backward iterations then draw from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OffPolicyConfig {
    /// FIFO capacity of each buffer (600 000 in the paper).
    #[serde(default = "default_buffer_capacity")]
    pub buffer_capacity: usize,
    /// How buffer states are drawn (rank-prioritized with k = 0.01 in the paper).
    #[serde(default)]
    pub sampling: crate::offpolicy::SamplingMode,
    /// Parallel MALA on buffer samples (`--local_search`).
    #[serde(default)]
    pub local_search: Option<crate::offpolicy::LocalSearchConfig>,
    /// Iterations between local searches (100).
    #[serde(default = "default_local_search_period")]
    pub local_search_period: usize,
}

fn default_buffer_capacity() -> usize {
    600_000
}

fn default_local_search_period() -> usize {
    crate::offpolicy::REFERENCE_LOCAL_SEARCH_PERIOD
}

/// What is measured, with how many samples, how often.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Trajectories (and ground-truth samples) per evaluation: 2000 in the paper.
    pub samples: usize,
    /// Evaluate log Ẑ / log Ẑ^RW every this many iterations (0: only at the end).
    pub every: usize,
    /// Compute W2 against exact samples at the end (exact assignment, O(n³)).
    pub w2: bool,
    /// Compute the EUBO from backward trajectories of exact samples at the end.
    pub eubo: bool,
    /// How the GMM ground-truth set is drawn.
    pub gmm_ground_truth: GmmGroundTruth,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            samples: 2000,
            every: 1000,
            w2: true,
            eubo: true,
            gmm_ground_truth: GmmGroundTruth::Stratified,
        }
    }
}

fn default_seed() -> u64 {
    12345
}
fn default_decay() -> Option<usize> {
    Some(5000)
}
fn default_batch() -> usize {
    300
}
fn default_lr_policy() -> f64 {
    1e-3
}
fn default_lr_flow() -> f64 {
    0.1
}
fn default_shards() -> usize {
    2
}

/// A config that could not be read or makes no sense, with where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: {message}")]
    Parse {
        path: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{path}:{line}: invalid value for `{field}`: {message}")]
    Invalid {
        path: String,
        line: usize,
        field: String,
        message: String,
    },
}

/// A validation failure at `field`, saying why.
fn bad<T>(field: &str, msg: impl Into<String>) -> Result<T, (String, String)> {
    Err((field.to_string(), msg.into()))
}

impl ExperimentConfig {
    /// Read, parse and validate a RON config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse and validate RON text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: ExperimentConfig =
            ron::Options::default()
                .from_str(text)
                .map_err(|e| ConfigError::Parse {
                    path: origin.to_string(),
                    line: e.span.start.line,
                    col: e.span.start.col,
                    message: e.code.to_string(),
                })?;
        cfg.validate()
            .map_err(|(field, message)| ConfigError::Invalid {
                path: origin.to_string(),
                line: locate_field(text, &field),
                field,
                message,
            })?;
        Ok(cfg)
    }

    /// The resolved config as RON (every default written out): what a run folder records.
    pub fn to_ron(&self) -> String {
        let pretty = ron::ser::PrettyConfig::new()
            .depth_limit(4)
            .struct_names(false);
        ron::ser::to_string_pretty(self, pretty).expect("configs always serialise")
    }

    /// blake3 of the resolved RON: names a config in manifests and prior references.
    pub fn digest(&self) -> String {
        blake3::hash(self.to_ron().as_bytes()).to_hex().to_string()
    }

    /// The state dimension D of the target.
    pub fn dim(&self) -> usize {
        match &self.target {
            TargetConfig::Gmm25
            | TargetConfig::Gmm9
            | TargetConfig::Gmm25To9
            | TargetConfig::Bandit { .. } => 2,
            TargetConfig::Pendulum { .. } => crate::rl::pendulum::ACTION_DIM,
            TargetConfig::Gaussian { mean, .. } => mean.len(),
            TargetConfig::Digits { images, .. } => images.pixels(),
            TargetConfig::Funnel { dim, .. } | TargetConfig::ManyWell { dim } => *dim,
            TargetConfig::Vae { .. } => crate::energies::vae::LATENT,
            TargetConfig::Lgcp => crate::energies::lgcp::GRID * crate::energies::lgcp::GRID,
        }
    }

    /// The trajectories per iteration: B, or R·B for the conditional (VAE) target.
    pub fn rows_per_iteration(&self) -> usize {
        match self.target {
            TargetConfig::Vae { repeats }
            | TargetConfig::Bandit { repeats, .. }
            | TargetConfig::Pendulum { repeats, .. } => repeats * self.train.batch,
            _ => self.train.batch,
        }
    }

    /// The checks an offline-RL target (`what`) shares: its `methods`, R ≥ 2 repeats for RTB's
    /// VarGrad form, whole evaluation rows per test state, a DDPM prior, and none of the
    /// machinery it has no use for.
    fn validate_offline(
        &self,
        what: &str,
        methods: &[Method],
        repeats: usize,
        test_states: usize,
    ) -> Result<(), (String, String)> {
        let m = self.train.method;
        if !methods.contains(&m) {
            return bad(
                "train.method",
                format!("{what} is built for {methods:?} (EpsMse: the prior), not {m:?}"),
            );
        }
        if repeats == 0 || test_states == 0 {
            return bad(
                "target",
                format!("{what} needs repeats ≥ 1 and test_states ≥ 1"),
            );
        }
        if m == Method::Rtb && repeats < 2 {
            return bad(
                "target.repeats",
                "RTB's VarGrad log Z(s) centres over each state's repeats: needs ≥ 2",
            );
        }
        if !self.eval.samples.is_multiple_of(test_states) {
            return bad(
                "eval.samples",
                format!(
                    "{what} evaluates eval.samples / test_states actions per test state: {} is \
                     not a multiple of {test_states}",
                    self.eval.samples
                ),
            );
        }
        if !matches!(self.sampler.noising, Noising::Ddpm { .. }) {
            return bad(
                "sampler.noising",
                format!("{what}'s prior is a DDPM: Ddpm(..)"),
            );
        }
        if self.train.off_policy.is_some() || self.eval.w2 || self.eval.eubo {
            return bad(
                "target",
                format!("{what} has no replay buffer, W2 or EUBO (set them off)"),
            );
        }
        Ok(())
    }

    /// Check every value; on failure return (field path, why).
    pub fn validate(&self) -> Result<(), (String, String)> {
        fn positive(field: &str, v: f64) -> Result<(), (String, String)> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                bad(field, format!("must be a positive finite number, got {v}"))
            }
        }
        match &self.target {
            TargetConfig::ManyWell { dim } if *dim == 0 || dim % 2 == 1 => {
                return bad(
                    "target.dim",
                    format!("Manywell needs an even dimension ≥ 2, got {dim}"),
                )
            }
            TargetConfig::Funnel { dim, .. } if *dim < 2 => {
                return bad(
                    "target.dim",
                    format!("the funnel needs dimension ≥ 2, got {dim}"),
                )
            }
            TargetConfig::Vae { repeats } => {
                if *repeats == 0 {
                    return bad("target.repeats", "must be at least 1");
                }
                if self.train.method == Method::Db {
                    return bad(
                        "train.method",
                        "the VAE posterior trains with VarGrad (cond-tb-avg), TB with a \
                         learned log Z(x), SubTb (FL-SubTB) or PIS; DB is not wired for it",
                    );
                }
                if *repeats < 2 && self.train.method == Method::VarGrad {
                    return bad(
                        "target.repeats",
                        "conditional VarGrad centres over each image's repeats: needs ≥ 2",
                    );
                }
            }
            TargetConfig::Bandit {
                repeats,
                data,
                test_states,
            } => {
                if *data < 2 {
                    return bad("target.data", "the bandit needs at least 2 offline tuples");
                }
                let methods = [
                    Method::EpsMse,
                    Method::Rtb,
                    Method::Dpok,
                    Method::Resample,
                    Method::Guidance,
                ];
                self.validate_offline("the bandit", &methods, *repeats, *test_states)?;
            }
            TargetConfig::Pendulum {
                repeats,
                data_episodes,
                test_states,
                episodes,
                iql,
                oracle_q,
                ..
            } => {
                if *data_episodes == 0 || *episodes == 0 {
                    return bad(
                        "target",
                        "the Pendulum needs data_episodes ≥ 1 and episodes ≥ 1",
                    );
                }
                if *oracle_q && self.posterior.is_none() {
                    return bad(
                        "target.oracle_q",
                        "replaces a posterior's reward; a BC prior has none",
                    );
                }
                if let Err(msg) = iql.validate() {
                    return bad("target.iql", msg);
                }
                let methods = [Method::EpsMse, Method::Rtb, Method::Resample];
                self.validate_offline("the Pendulum", &methods, *repeats, *test_states)?;
            }
            _ => {}
        }
        let s = &self.sampler;
        if s.steps == 0 {
            return bad("sampler.steps", "T must be at least 1");
        }
        positive("sampler.sigma2", s.sigma2)?;
        positive("sampler.log_var_range", s.log_var_range)?;
        if let Noising::Vp {
            beta_min,
            beta_max,
            std,
        }
        | Noising::VpExponential {
            beta_min,
            beta_max,
            std,
        } = s.noising
        {
            positive("sampler.noising.beta_min", beta_min)?;
            positive("sampler.noising.beta_max", beta_max)?;
            positive("sampler.noising.std", std)?;
        }
        if let Noising::VpCosine { horizon, std } = s.noising {
            positive("sampler.noising.horizon", horizon)?;
            positive("sampler.noising.std", std)?;
            if s.learned_variance {
                return bad(
                    "sampler.learned_variance",
                    "VpCosine scales the whole network output by the step's variance (DDS's \
                     control), so it has no learned-variance head",
                );
            }
            if self.posterior.is_some() {
                return bad(
                    "sampler.noising",
                    "VpCosine is DDS's reference for a sampler trained from scratch, not a \
                     posterior's prior",
                );
            }
        }
        if let Noising::Vp {
            beta_min, beta_max, ..
        } = s.noising
        {
            let worst = beta_min.max(beta_max) / s.steps as f64;
            if worst >= 1.0 {
                return bad(
                    "sampler.noising",
                    format!("β·dt = {worst} ≥ 1: the OU Euler step would flip the state's sign; use more steps"),
                );
            }
        }
        let n = &self.network;
        if n.hidden == 0 {
            return bad("network.hidden", "must be at least 1");
        }
        if n.harmonics == 0 {
            return bad("network.harmonics", "must be at least 1");
        }
        if n.langevin_layers == 0 {
            return bad("network.langevin_layers", "must be at least 1");
        }
        positive("network.lgv_clip", n.lgv_clip)?;
        positive("network.out_clip", n.out_clip)?;
        if n.interpolated_score {
            if !n.langevin {
                return bad(
                    "network.interpolated_score",
                    "needs network.langevin: true (its s(t) scales the interpolated score)",
                );
            }
            if !matches!(
                self.sampler.noising,
                Noising::Vp { .. } | Noising::VpExponential { .. }
            ) {
                return bad(
                    "network.interpolated_score",
                    "needs a VP reference (sampler.noising: Vp or VpExponential), whose \
                     stationary law is the start the score interpolates from",
                );
            }
            if self.posterior.is_some() {
                return bad(
                    "network.interpolated_score",
                    "is DIS's parametrisation of a sampler trained from scratch, not of a posterior",
                );
            }
        }
        let t = &self.train;
        if t.iterations == 0 && !t.method.evaluates_only() {
            return bad("train.iterations", "must be at least 1");
        }
        if t.batch == 0 {
            return bad("train.batch", "B must be at least 1");
        }
        if t.method == Method::VarGrad && t.batch < 2 {
            return bad(
                "train.batch",
                "VarGrad needs B ≥ 2 (it centres over the batch)",
            );
        }
        positive("train.lr_policy", t.lr_policy)?;
        positive("train.lr_flow", t.lr_flow)?;
        if let Some(f) = t.lr_policy_final {
            if !(f.is_finite() && f >= 0.0) {
                return bad(
                    "train.lr_policy_final",
                    "must be a finite learning rate ≥ 0",
                );
            }
        }
        if let Some(f) = t.lr_variance_factor {
            positive("train.lr_variance_factor", f)?;
            if !self.sampler.learned_variance {
                return bad(
                    "train.lr_variance_factor",
                    "scales the learned variances' rate: set sampler.learned_variance too",
                );
            }
        }
        if let Some(g) = t.min_snr_gamma {
            positive("train.min_snr_gamma", g)?;
            if t.method != Method::EpsMse {
                return bad(
                    "train.min_snr_gamma",
                    "weights the ε-MSE of a DDPM prior: method must be EpsMse",
                );
            }
        }
        if let Some(e) = &t.exploration {
            if !(e.std.is_finite() && e.std >= 0.0) {
                return bad(
                    "train.exploration.std",
                    format!("must be ≥ 0, got {}", e.std),
                );
            }
            if e.decay_iters == Some(0) {
                return bad("train.exploration.decay_iters", "must be ≥ 1 (or None)");
            }
        }
        if let Some(l) = t.subtb_lambda {
            if t.method != Method::SubTb {
                return bad("train.subtb_lambda", "only SubTb has a λ");
            }
            positive("train.subtb_lambda", l)?;
        }
        if t.forward_looking && !t.method.uses_flow() {
            return bad(
                "train.forward_looking",
                "the FL partial energy is a term of the learned flow: SubTb or Db only",
            );
        }
        if !s.noising.is_brownian() && t.forward_looking {
            return bad(
                "train.forward_looking",
                "the FL partial energy assumes the Brownian reference process (sampler.noising)",
            );
        }
        if t.two_pass {
            let per_trajectory = matches!(
                t.method,
                Method::Tb
                    | Method::VarGrad
                    | Method::Rtb
                    | Method::Mle
                    | Method::RlKl
                    | Method::RlKlPaper
                    | Method::Ddpo
            );
            if !per_trajectory || matches!(self.target, TargetConfig::Vae { .. }) {
                return bad(
                    "train.two_pass",
                    format!(
                        "the two-pass gradient is built for the per-trajectory losses (Tb, \
                         VarGrad, Rtb, Mle, RlKl, RlKlPaper, Ddpo) on unconditional targets, \
                         not {:?} on {:?}",
                        t.method, self.target
                    ),
                );
            }
        }
        if self.posterior.as_ref().is_some_and(|p| p.dataset_paths) {
            let offline = matches!(
                self.target,
                TargetConfig::Bandit { .. } | TargetConfig::Pendulum { .. }
            );
            if t.method != Method::Rtb || !offline {
                return bad(
                    "posterior.dataset_paths",
                    "dataset-noised paths are RTB's off-policy step on an offline-RL target \
                     (Bandit or Pendulum)",
                );
            }
        }
        match (t.method.uses_prior(), &self.posterior) {
            (true, None) => {
                return bad(
                    "posterior",
                    format!("{:?} starts from a prior: give posterior.prior", t.method),
                )
            }
            (true, Some(p)) if !(p.beta.is_finite() && p.beta >= 0.0) => {
                return bad(
                    "posterior.beta",
                    format!(
                        "must be a finite number ≥ 0 (0 leaves the prior as it is), got {}",
                        p.beta
                    ),
                )
            }
            (true, Some(p)) => {
                if t.method == Method::RlKl && p.beta == 0.0 {
                    return bad("posterior.beta", "RlKl divides by β: must be > 0");
                }
                if matches!(t.method, Method::Ddpo | Method::Dpok) && t.exploration.is_some() {
                    return bad("train.exploration", "DDPO and DPOK are on-policy");
                }
                if t.method == Method::Dpok {
                    if let Some(w) = p.kl_weight {
                        if !(w.is_finite() && w >= 0.0) {
                            return bad("posterior.kl_weight", "must be finite and ≥ 0");
                        }
                    }
                    if self.sampler.learned_variance {
                        return bad(
                            "sampler.learned_variance",
                            "DPOK's per-step KL is written for fixed step variances",
                        );
                    }
                }
                if let Some(c) = p.reward_scale {
                    positive("posterior.reward_scale", c)?;
                }
                if t.method == Method::RlKlPaper {
                    match p.kl_weight {
                        Some(a) if a.is_finite() && a >= 0.0 => {}
                        other => {
                            return bad(
                                "posterior.kl_weight",
                                format!("RlKlPaper needs a finite weight ≥ 0, got {other:?}"),
                            )
                        }
                    }
                    if t.exploration.is_some() {
                        return bad("train.exploration", "the paper's RL baseline is on-policy");
                    }
                }
                if let Some(g) = p.guidance {
                    if !g.is_finite() {
                        return bad("posterior.guidance", "must be finite");
                    }
                }
                if let Some(c) = p.loss_cutoff {
                    if !(c.is_finite() && c >= 0.0) || t.method != Method::Rtb {
                        return bad(
                            "posterior.loss_cutoff",
                            format!(
                                "an RTB cutoff must be a finite number ≥ 0, got {c} for {:?}",
                                t.method
                            ),
                        );
                    }
                }
                if p.resample_pool == Some(0) {
                    return bad("posterior.resample_pool", "must be at least 1");
                }
                if p.particles.is_some() && t.method != Method::LgdMc {
                    return bad("posterior.particles", "only LgdMc draws particles");
                }
                if p.particles == Some(0) {
                    return bad("posterior.particles", "must be at least 1");
                }
                if let Some(l) = &p.lora {
                    if t.method.evaluates_only() {
                        return bad(
                            "posterior.lora",
                            format!(
                                "{:?} trains nothing: adapters need a trained posterior",
                                t.method
                            ),
                        );
                    }
                    if l.rank == 0 {
                        return bad("posterior.lora.rank", "must be at least 1");
                    }
                    if let Some(a) = l.alpha {
                        positive("posterior.lora.alpha", a)?;
                    }
                    if t.lr_variance_factor.is_some() {
                        return bad(
                            "train.lr_variance_factor",
                            "the variance head has no block of its own under posterior.lora",
                        );
                    }
                }
                if matches!(t.method, Method::Dps | Method::LgdMc)
                    && !matches!(self.target, TargetConfig::Digits { .. })
                {
                    return bad(
                        "target",
                        format!(
                            "{:?} guides by a classifier's measurement: it is built for Digits",
                            t.method
                        ),
                    );
                }
                if t.method.evaluates_only() && t.iterations != 0 {
                    return bad(
                        "train.iterations",
                        format!("{:?} trains nothing: set iterations: 0", t.method),
                    );
                }
                if t.method == Method::Guidance && self.network.langevin {
                    return bad(
                        "network.langevin",
                        "guidance adds its own ∇log r term: use a prior without LP",
                    );
                }
            }
            (false, Some(_)) => {
                return bad(
                    "posterior",
                    format!(
                        "{:?} does not start from a prior (remove posterior)",
                        t.method
                    ),
                )
            }
            _ => {}
        }
        if t.method.uses_prior() || t.method == Method::Mle {
            let name = format!("{:?}", t.method);
            if t.off_policy.is_some() {
                return bad(
                    "train.off_policy",
                    format!("{name} is not built with the replay buffer"),
                );
            }
            let ddpm_ok =
                t.method.uses_prior() && matches!(self.sampler.noising, Noising::Ddpm { .. });
            if !(self.sampler.noising.is_brownian() || ddpm_ok)
                || (self.sampler.learned_variance && !t.method.trains_posterior())
            {
                return bad(
                    "sampler",
                    format!(
                        "{name} is built for the Brownian sampler with fixed variance (and, for \
                         posteriors, the DDPM sampler; only a trained posterior may learn its \
                         variances)"
                    ),
                );
            }
            if matches!(self.target, TargetConfig::Vae { .. }) {
                return bad(
                    "target",
                    format!("{name} is not built for the conditional VAE target"),
                );
            }
            if self.eval.eubo {
                return bad(
                    "eval.eubo",
                    "the EUBO scores p_B paths, which RTB and MLE runs do not model: set false",
                );
            }
        }
        match (s.noising, t.method) {
            (
                Noising::Ddpm {
                    train_steps,
                    schedule,
                    ..
                },
                m,
            ) => {
                if !matches!(
                    m,
                    Method::EpsMse
                        | Method::Rtb
                        | Method::RlKl
                        | Method::RlKlPaper
                        | Method::Ddpo
                        | Method::Dpok
                        | Method::Resample
                        | Method::Guidance
                        | Method::Dps
                        | Method::LgdMc
                ) {
                    return bad(
                        "train.method",
                        format!("{m:?} is not built for the DDPM sampler (EpsMse, Rtb, RlKl, RlKlPaper, Ddpo, Dpok, Resample, Guidance, Dps, LgdMc are)"),
                    );
                }
                if train_steps == 0 {
                    return bad("sampler.noising.train_steps", "need T ≥ 1");
                }
                if schedule.is_scaled_linear() && train_steps <= 20 {
                    return bad(
                        "sampler.noising.train_steps",
                        format!("β runs up to 20/T, which must stay below 1: need T > 20, got {train_steps}"),
                    );
                }
                if train_steps % s.steps != 0 {
                    return bad(
                        "sampler.noising.train_steps",
                        format!(
                            "must be a positive multiple of sampler.steps ({}), got {train_steps}",
                            s.steps
                        ),
                    );
                }
                if s.learned_variance && !m.trains_posterior() {
                    return bad(
                        "sampler.learned_variance",
                        "a DDPM's variances are fixed (fixed_large or fixed_small); only a \
                         trained posterior (Rtb, RlKl, RlKlPaper, Ddpo) learns its own",
                    );
                }
                // The ε-space Langevin term of the offline-RL posterior (spec rtb2024 §4.2) is
                // a correction learned on top of a prior: a DDPM prior itself has none.
                if self.network.langevin && (!m.uses_prior() || m.evaluates_only()) {
                    return bad(
                        "network.langevin",
                        "a DDPM takes the Langevin term only as a trained posterior's correction \
                         (Rtb, RlKl, RlKlPaper, Ddpo, Dpok)",
                    );
                }
                if m == Method::EpsMse && t.exploration.is_some() {
                    return bad(
                        "train.exploration",
                        "ε-MSE trains on noised data: no exploration",
                    );
                }
            }
            (_, Method::EpsMse) => {
                return bad(
                    "sampler.noising",
                    "EpsMse trains a DDPM: set noising: Ddpm(..)",
                );
            }
            (_, Method::Dps | Method::LgdMc) => {
                return bad(
                    "sampler.noising",
                    "DPS and LGD-MC guide a DDPM's x̂0: set noising: Ddpm(..)",
                );
            }
            _ => {}
        }
        if t.method == Method::Mle && t.exploration.is_some() {
            return bad(
                "train.exploration",
                "MLE trains on p_B paths from data: no exploration",
            );
        }
        if let TargetConfig::Digits { classes, images } = &self.target {
            if classes.is_empty() || classes.iter().any(|&c| c > 9) {
                return bad(
                    "target.classes",
                    format!("must be digits 0..=9, at least one: {classes:?}"),
                );
            }
            if let DigitImagesConfig::Mnist(pool) = images {
                if ![1, 2, 4, 7].contains(pool) {
                    return bad(
                        "target.images",
                        format!("Mnist(pool) must divide 28 into equal blocks (1, 2, 4 or 7), got {pool}"),
                    );
                }
            }
        }
        if let TargetConfig::Gaussian { mean, std } = &self.target {
            if mean.is_empty() {
                return bad("target.mean", "needs at least one coordinate");
            }
            positive("target.std", *std)?;
        }
        if t.method == Method::Pis {
            if t.exploration.is_some() {
                return bad(
                    "train.exploration",
                    "PIS trains on its own (reparametrised) trajectories: no exploration",
                );
            }
            if t.off_policy.is_some() {
                return bad("train.off_policy", "PIS is on-policy only");
            }
        }
        if let Some(c) = t.grad_clip {
            positive("train.grad_clip", c)?;
        }
        if t.shards == 0 || t.shards > self.rows_per_iteration() {
            return bad(
                "train.shards",
                format!(
                    "must be in 1..={} (the trajectories per iteration), got {}",
                    self.rows_per_iteration(),
                    t.shards
                ),
            );
        }
        if let Some(o) = &t.off_policy {
            if o.buffer_capacity < t.batch {
                return bad(
                    "train.off_policy.buffer_capacity",
                    format!(
                        "must hold at least one batch ({}), got {}",
                        t.batch, o.buffer_capacity
                    ),
                );
            }
            o.sampling
                .validate()
                .map_err(|(f, m)| (format!("train.off_policy.sampling.{f}"), m))?;
            if let Some(ls) = &o.local_search {
                ls.validate()
                    .map_err(|(f, m)| (format!("train.off_policy.local_search.{f}"), m))?;
            }
            if o.local_search_period < 2 {
                return bad(
                    "train.off_policy.local_search_period",
                    "must be at least 2 (local search runs at it ≡ 1 mod the period)",
                );
            }
        }
        if self.checkpoint_every == Some(0) {
            return bad("checkpoint_every", "must be at least 1 (or omitted)");
        }
        if self.eval.samples < 2 {
            return bad("eval.samples", "must be at least 2");
        }
        Ok(())
    }
}

/// The 1-based line where a dotted field path (`"train.batch"`) is written in `text`, found by
/// walking the path's names in order; 1 when a name is absent (a default was used).
pub fn locate_field(text: &str, path: &str) -> usize {
    let mut from = 0usize;
    let mut found = None;
    for name in path.split('.') {
        let mut search = from;
        let mut hit = None;
        while let Some(pos) = text[search..].find(name) {
            let at = search + pos;
            let before_ok = at == 0 || !is_ident(text.as_bytes()[at - 1]);
            let after = &text[at + name.len()..];
            let after_ok = after.trim_start().starts_with(':');
            if before_ok && after_ok {
                hit = Some(at);
                break;
            }
            search = at + name.len();
        }
        match hit {
            Some(at) => {
                from = at + name.len();
                found = Some(at);
            }
            None => break,
        }
    }
    found
        .map(|at| text[..at].matches('\n').count() + 1)
        .unwrap_or(1)
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
