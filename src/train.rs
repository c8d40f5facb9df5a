//! The training and evaluation loop of one experiment.
//!
//! [`Trainer`] holds everything a run's future depends on (parameters, Adam state, iteration);
//! every iteration draws its noise from streams keyed by the iteration number, so a trainer
//! restored from a checkpoint continues bit for bit. [`run`] drives a trainer to the end and
//! collects what the harness writes.

use crate::checkpoint::{BufferState, Checkpoint, CheckpointError};
use crate::config::{Backend, ExperimentConfig, Method, TargetConfig};
use crate::energies::{Energy, Funnel, Gmm, ManyWell};
use crate::losses::{
    behaviour_log_prob, ddpo, detailed_balance, dpok, dpok_drift_seed, fl_term, rl_kl, rl_kl_paper,
    step_kl, subtb, trajectory_balance, trajectory_balance_cutoff, trajectory_balance_rows,
    vargrad, vargrad_conditional, LossGrad,
};
use crate::metrics;
use crate::nn::adam::clip_grad_norm;
use crate::nn::{Adam, DriftNet, FlowHead, Group, Lora, LrOverride};
use crate::offpolicy::{self, LocalSearch, Phase, ReplayBuffer};
use crate::rng;
use crate::samplers::pis::rollout_pis_conditional;
use crate::samplers::{
    explore_std, rollout_recording, sample_backward_states, Path, Record, Rollout, Sampler,
};
use crate::tensor::Tensor;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use serde::Serialize;
use std::ops::Range;

/// One row of the training curve (`curve.csv`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CurveRow {
    pub iteration: usize,
    pub loss: f64,
    /// The learned log Z (TB) or the batch estimate (VarGrad).
    pub log_z: f64,
    /// The exploration std ε used this iteration.
    pub explore_std: f64,
}

/// One periodic evaluation (`evals.csv`): the cheap estimators only.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalRow {
    pub iteration: usize,
    pub log_z: f64,
    pub log_z_rw: f64,
    pub elbo: f64,
    pub ess: f64,
}

/// The final metrics (`metrics.json`); `None` is written as null.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    /// log Ẑ = mean of the log-weights (= the ELBO), spec §6.
    pub log_z: f64,
    /// log Ẑ^RW = logmeanexp of the log-weights.
    pub log_z_rw: f64,
    pub true_log_z: Option<f64>,
    /// |log Z − log Ẑ|.
    pub delta_log_z: Option<f64>,
    /// |log Z − log Ẑ^RW|.
    pub delta_log_z_rw: Option<f64>,
    pub elbo: f64,
    /// Mean over exact samples x of log R(x) + log p_B(τ|x) − log p_F(τ), τ ~ p_B(·|x).
    pub eubo: Option<f64>,
    /// Exact 2-Wasserstein distance to as many exact samples (optimal assignment).
    pub w2: Option<f64>,
    /// Normalised effective sample size (Σw)²/(K Σw²) of the importance weights.
    pub ess: f64,
    /// RTB runs only.
    #[serde(flatten)]
    pub posterior: Option<PosteriorMetrics>,
    /// The RTB 2-D toy's target (`Gmm25To9`) only.
    #[serde(flatten)]
    pub modes: Option<metrics::ModeStats>,
    /// The digits target only.
    #[serde(flatten)]
    pub classes: Option<crate::energies::digits::ClassStats>,
    #[serde(flatten)]
    pub bandit: Option<crate::energies::bandit::BanditStats>,
    /// The Pendulum only: the policy's evaluation episodes.
    #[serde(flatten)]
    pub pendulum: Option<crate::rl::task::EpisodeScores>,
}

/// What an RTB run reports besides the estimators (spec rtb2024 §2.7). With RTB's substitution
/// log Ẑ is the ELBO E_q[β log r + log p_θ(τ) − log p_φ(τ)] and log Ẑ^RW its importance-
/// sampled log ∫p_θ·r^β.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PosteriorMetrics {
    /// The learned log Z parameter (RTB).
    pub learned_log_z: Option<f64>,
    /// E_q[log p_φ(τ) − log p_θ(τ)], the trajectory KL of posterior to prior.
    pub kl_traj: f64,
}

/// What the final evaluation returns.
#[derive(Clone, Debug)]
pub struct FinalEval {
    pub metrics: Metrics,
    /// The model's samples x_T, `[n, D]`.
    pub samples: Vec<f32>,
    pub dim: usize,
}

/// Progress reported after each iteration.
#[derive(Clone, Debug)]
pub struct Progress {
    pub iteration: usize,
    pub total: usize,
    pub loss: f64,
    pub log_z: f64,
}

/// Why a run stopped early.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TrainError {
    #[error("non-finite {quantity} at iteration {iteration}: training stopped")]
    NonFinite { iteration: usize, quantity: String },
    #[error("invalid experiment: {0}")]
    Invalid(String),
    #[error("cannot resume: {0}")]
    Resume(#[from] CheckpointError),
    #[error("cannot write checkpoint at iteration {iteration}: {message}")]
    Checkpoint { iteration: usize, message: String },
    #[error("GPU backend: {0}")]
    Device(String),
    #[error("data: {0}")]
    Data(String),
}

/// Everything a finished, failed or interrupted run produced.
#[derive(Debug)]
pub struct RunRecord {
    pub curve: Vec<CurveRow>,
    pub evals: Vec<EvalRow>,
    pub final_eval: Option<FinalEval>,
    pub failure: Option<TrainError>,
    /// `Some(n)`: stopped on request after n iterations, with a checkpoint at n.
    pub interrupted_at: Option<usize>,
    /// Iterations covered by the newest checkpoint handed to [`RunHooks::checkpoint`].
    pub last_checkpoint: Option<usize>,
    /// The trained parameters (layout of the run's network) of a completed run: what an RTB
    /// posterior loads from its prior run.
    pub params: Option<Vec<f32>>,
    /// A completed Pendulum prior's IQL critic (flat, [`crate::rl::iql::Iql::to_flat`]).
    pub critic: Option<Vec<f32>>,
}

/// What a driver of [`run_from`] observes and controls.
pub trait RunHooks {
    /// After every iteration.
    fn progress(&mut self, _p: &Progress) {}
    /// A checkpoint is due (every `checkpoint_every` iterations, and on a stop request):
    /// persist it. An error stops the run as a failure.
    fn checkpoint(&mut self, _ck: &Checkpoint) -> Result<(), String> {
        Ok(())
    }
    /// Polled after every iteration: true stops the run after checkpointing (Ctrl-C).
    fn stop_requested(&mut self) -> bool {
        false
    }
}

/// Hooks that only report progress.
pub struct ProgressOnly<'a>(pub &'a mut dyn FnMut(&Progress));

impl RunHooks for ProgressOnly<'_> {
    fn progress(&mut self, p: &Progress) {
        (self.0)(p)
    }
}

/// Build the target named by a config. Targets with data files read them from the project's
/// `data/` folder (checksummed); the VAE posterior is returned conditioned on evaluation image 0
/// (what plots draw; training conditions each row on its own image, see [`Trainer`]).
pub fn build_energy(cfg: &ExperimentConfig) -> Result<Box<dyn Energy>, TrainError> {
    let gt = cfg.eval.gmm_ground_truth;
    Ok(match &cfg.target {
        TargetConfig::Gmm25 => Box::new(Gmm::grid25(gt)),
        TargetConfig::Gmm9 => Box::new(Gmm::grid9(gt)),
        TargetConfig::Gmm25To9 => Box::new(crate::energies::Gmm25To9::new()),
        TargetConfig::Gaussian { mean, std } => {
            Box::new(crate::energies::Gaussian::new(mean.clone(), *std))
        }
        TargetConfig::Digits { classes, images } => Box::new(
            crate::energies::digits::DigitsClass::load(
                &crate::data::project_dir(),
                classes.clone(),
                *images,
            )
            .map_err(|e| TrainError::Data(e.to_string()))?,
        ),
        TargetConfig::Funnel { variant, dim } => Box::new(Funnel::new(*variant, *dim)),
        TargetConfig::ManyWell { dim } => Box::new(ManyWell::new(*dim)),
        TargetConfig::Lgcp => Box::new(
            crate::energies::Lgcp::load_default().map_err(|e| TrainError::Data(e.to_string()))?,
        ),
        TargetConfig::Bandit { test_states, .. } => Box::new(crate::conditional::BanditTarget {
            bandit: crate::energies::bandit::Bandit::standard(crate::conditional::offline_alpha(
                cfg,
            )),
            test_states: crate::energies::bandit::test_states(*test_states),
        }),
        TargetConfig::Pendulum { .. } => Box::new(crate::rl::task::PendulumTarget),
        TargetConfig::Vae { .. } => {
            let dir = crate::data::project_dir();
            let data = |e: crate::energies::vae::VaeError| TrainError::Data(e.to_string());
            let energy = crate::energies::VaeEnergy::load(&dir).map_err(data)?;
            let eval = crate::energies::vae::load_eval_images(&dir).map_err(data)?;
            let first = eval[..crate::energies::vae::PIXELS].to_vec();
            Box::new(crate::energies::VaeFixedImage::new(energy, first))
        }
    })
}

/// Cut `0..n` into `k` contiguous shards of near-equal size (the first `n mod k` get one more).
pub fn shard_ranges(n: usize, k: usize) -> Vec<Range<usize>> {
    let k = k.clamp(1, n.max(1));
    let (base, extra) = (n / k, n % k);
    let mut start = 0;
    (0..k)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// Map `f` over `items` on one thread per item (the last on the calling thread); results come
/// back in item order, so what is computed never depends on scheduling.
pub fn par_map<T: Send, R: Send>(items: Vec<T>, f: &(dyn Fn(T) -> R + Sync)) -> Vec<R> {
    let mut items = items;
    let Some(last) = items.pop() else {
        return Vec::new();
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = items.into_iter().map(|it| s.spawn(move || f(it))).collect();
        let tail = f(last);
        let mut out: Vec<R> = handles
            .into_iter()
            .map(|h| h.join().expect("worker thread panicked"))
            .collect();
        out.push(tail);
        out
    })
}

/// Σ of the shards' flat gradients, added in shard order.
fn sum_in_order(shard_grads: &[Vec<f32>], len: usize) -> Vec<f32> {
    let mut grad = vec![0f32; len];
    for g in shard_grads {
        for (a, &v) in grad.iter_mut().zip(g) {
            *a += v;
        }
    }
    grad
}

/// A `[rows, 1]` seed from per-row f64 values.
fn rows_seed(v: &[f64]) -> Tensor<f32> {
    Tensor::from_vec(v.len(), 1, v.iter().map(|&x| x as f32).collect())
}

/// The learned log F(x_i, t_i) of a gradient rollout's rows, `[rows, T]` row-major.
fn flow_values(roll: &Rollout<f32>, t: usize) -> Vec<f64> {
    let tape = roll.tape.as_ref().expect("gradient rollout keeps its tape");
    let rows = roll.log_pf.len();
    let mut out = vec![0f64; rows * t];
    for (i, &n) in roll.flow_nodes.iter().enumerate() {
        for (b, v) in tape.value(n).data.iter().enumerate() {
            out[b * t + i] = *v as f64;
        }
    }
    out
}

/// A buffer's entries for a checkpoint.
fn buffer_state(b: &ReplayBuffer) -> BufferState {
    let (xs, log_r) = b.entries();
    BufferState {
        dim: b.dim(),
        xs: xs.to_vec(),
        log_r: log_r.to_vec(),
    }
}

/// Importance log-weights log R(x_T) + LB − LF of a rollout's rows.
fn log_weights(roll: &Rollout<f32>, log_r: &[f64]) -> Vec<f64> {
    (0..log_r.len())
        .map(|b| log_r[b] + roll.log_pb[b] - roll.log_pf[b])
        .collect()
}

/// One experiment's trainable state and everything needed to advance it.
pub struct Trainer {
    pub cfg: ExperimentConfig,
    pub energy: Box<dyn Energy>,
    pub net: DriftNet,
    pub sampler: Sampler,
    /// The flat parameter vector (P values), layout `net.layout`.
    pub params: Vec<f32>,
    pub adam: Adam,
    /// Iterations completed.
    pub iteration: usize,
    /// The device-resident state when the run trains on the GPU. Then `params` and `adam` on
    /// the host are refreshed only by [`Trainer::sync_from_device`] (before evaluations and
    /// checkpoints); `adam.steps` is always current.
    #[cfg(feature = "gpu")]
    pub device: Option<crate::gpu::trainer::GpuTrainer>,
    host_stale: bool,
    /// Off-policy runs: the replay buffer of forward terminal states, and the buffer local
    /// search fills (spec §4.2, D_buffer and D_LS).
    pub replay: Option<ReplayBuffer>,
    pub ls_replay: Option<ReplayBuffer>,
    /// The VAE posterior's conditions (training and evaluation images), when the target is
    /// conditional.
    pub vae: Option<crate::conditional::VaeTask>,
    /// The offline-RL task (the contextual bandit or the Pendulum: offline data, test states,
    /// the Pendulum's critic), when the target is one.
    pub offline: Option<crate::conditional::OfflineTask>,
    /// RTB: the frozen prior's parameters (layout `net.layout`, the posterior's own).
    pub prior: Option<Vec<f32>>,
    /// A posterior trained through LoRA adapters (`posterior.lora`). Then `adam` steps the
    /// adapters' vector θ, and `params` is rebuilt from the frozen base and θ after each step.
    pub lora: Option<LoraState>,
}

/// The trainable state of a LoRA posterior: the adapters, the frozen base vector (the prior
/// as the posterior starts from it) and θ.
#[derive(Clone, Debug)]
pub struct LoraState {
    pub lora: Lora,
    pub base: Vec<f32>,
    pub theta: Vec<f32>,
}

/// An iteration's loss, flat gradient, terminal states [B, D] and their log R [B].
type IterationGrad = (LossGrad, Vec<f32>, Vec<f32>, Vec<f64>);

/// Where an iteration's trajectories come from; for the conditional target, with each row's
/// condition `[B, 784]` (B the rows of the iteration).
enum Source<'a> {
    /// Forward from x₀ under the (exploratory) policy: stream (seed, "train-noise", it).
    Forward(Option<&'a [f32]>),
    /// Backward p_B(·|x) from terminal states x [B, D]: stream (seed, "backward-noise", it).
    Backward(Vec<f32>, Option<Vec<f32>>),
}

impl Source<'_> {
    fn conditions(&self) -> Option<&[f32]> {
        match self {
            Source::Forward(cond) => *cond,
            Source::Backward(_, cond) => cond.as_deref(),
        }
    }
}

/// The energy that scores a batch: the target itself, or the VAE with each row conditioned on
/// its own image.
enum BatchEnergy<'a> {
    Target(&'a dyn Energy),
    Conditioned(crate::conditional::ConditionedBatch<'a>),
    Bandit(crate::conditional::BanditBatch<'a>),
    Pendulum(crate::rl::task::PendulumBatch<'a>),
}

impl BatchEnergy<'_> {
    fn get(&self) -> &dyn Energy {
        match self {
            BatchEnergy::Target(e) => *e,
            BatchEnergy::Conditioned(b) => b,
            BatchEnergy::Bandit(b) => b,
            BatchEnergy::Pendulum(b) => b,
        }
    }
}

/// Resolves `cfg.backend = Auto` to the backend this machine will use (a hardware GPU when
/// present and the config is supported there, else the CPU), returning why Auto chose the CPU.
/// `Gpu` on a machine without an adapter, or for a config the GPU backend does not support, is
/// an error naming the problem.
pub fn resolve_backend(cfg: &mut ExperimentConfig) -> Result<Option<String>, TrainError> {
    #[cfg(feature = "gpu")]
    {
        use crate::gpu::trainer::{does_not_fit, unsupported};
        use crate::gpu::{select_device, DeviceRequest, SelectedDevice};
        let why_not =
            |ctx: &crate::gpu::GpuContext| unsupported(cfg).or_else(|| does_not_fit(ctx, cfg));
        match cfg.backend {
            Backend::Cpu => Ok(None),
            Backend::Gpu => {
                if let Some(why) = unsupported(cfg) {
                    return Err(TrainError::Device(why));
                }
                match select_device(DeviceRequest::Gpu) {
                    Ok(SelectedDevice::Gpu(ctx)) => match does_not_fit(ctx, cfg) {
                        Some(why) => Err(TrainError::Device(why)),
                        None => Ok(None),
                    },
                    Ok(SelectedDevice::Cpu { .. }) => Ok(None),
                    Err(e) => Err(TrainError::Device(e.to_string())),
                }
            }
            Backend::Auto => {
                let why = match select_device(DeviceRequest::Auto) {
                    Ok(SelectedDevice::Gpu(ctx)) => why_not(ctx),
                    Ok(SelectedDevice::Cpu { reason }) => unsupported(cfg).or(reason),
                    Err(e) => Some(e.to_string()),
                };
                cfg.backend = if why.is_some() {
                    Backend::Cpu
                } else {
                    Backend::Gpu
                };
                Ok(why)
            }
        }
    }
    #[cfg(not(feature = "gpu"))]
    match cfg.backend {
        Backend::Cpu => Ok(None),
        Backend::Gpu => Err(TrainError::Device(
            "this build has no GPU backend (built without the `gpu` feature)".into(),
        )),
        Backend::Auto => {
            cfg.backend = Backend::Cpu;
            Ok(Some("built without the `gpu` feature".into()))
        }
    }
}

/// Per-shard output of a training rollout: the tape, log R(x_T) of its rows, and (FL methods)
/// the partial-energy term of every state, `[rows, T]`.
struct ShardRollout {
    roll: Rollout<f32>,
    log_r: Vec<f64>,
    fl: Vec<f64>,
}

/// How an iteration's loss gradient enters the tape.
enum StepSeeds {
    /// ∂L/∂LF_b, the same for every step's log p_F (TB, VarGrad): `[B]`. With `log_z_head`
    /// (the conditional TB) also ∂L/∂log Z(x_b), which is the same δ_b/B: log Z(x_b) enters
    /// the residual as LF_b does.
    PerTrajectory {
        d_log_pf: Vec<f64>,
        log_z_head: bool,
    },
    /// ∂L/∂log p_F and ∂L/∂log F per step (SubTB, DB): `[B, T]` each.
    PerStep {
        d_log_pf: Vec<f64>,
        d_log_f: Vec<f64>,
    },
}

/// A per-trajectory loss's seeds: ∂L/∂LF_b into every step's log p_F (and the conditional
/// log Z(x) head with `log_z_head`).
fn per_trajectory(lg: LossGrad, log_z_head: bool) -> (LossGrad, StepSeeds) {
    let seeds = StepSeeds::PerTrajectory {
        d_log_pf: lg.d_log_pf.clone(),
        log_z_head,
    };
    (lg, seeds)
}

/// The parameter groups a method does not train: VarGrad and PIS learn no log Z.
fn frozen_groups(method: Method) -> &'static [Group] {
    match method {
        Method::Tb | Method::SubTb | Method::Db | Method::Rtb => &[],
        Method::VarGrad
        | Method::Pis
        | Method::Mle
        | Method::EpsMse
        | Method::RlKl
        | Method::RlKlPaper
        | Method::Ddpo
        | Method::Dpok => &[Group::Flow],
        Method::Guidance | Method::Resample | Method::Dps | Method::LgdMc => {
            &[Group::Policy, Group::Flow]
        }
    }
}

impl Trainer {
    pub fn new(cfg: &ExperimentConfig) -> Result<Self, TrainError> {
        Trainer::with_prior(cfg, None)
    }

    /// A trainer for `cfg`; RTB (`train.method: Rtb`) needs the prior's parameters, whose copy
    /// (with log Z reset to 0, spec rtb2024 §1.2) the posterior starts from.
    pub fn with_prior(cfg: &ExperimentConfig, prior: Option<Vec<f32>>) -> Result<Self, TrainError> {
        let mut tr = Trainer::build(cfg)?;
        match (cfg.train.method.uses_prior(), prior) {
            (false, None) => {}
            (false, Some(_)) => {
                return Err(TrainError::Invalid(
                    "prior parameters given to a run that does not start from a prior".into(),
                ))
            }
            (true, None) => {
                return Err(TrainError::Invalid(format!(
                    "posterior: {:?} needs the prior run's parameters",
                    cfg.train.method
                )))
            }
            (true, Some(p)) => {
                // With a Langevin correction the prior's moves are scored by the same vector,
                // whose correction is exactly 0.
                let Some(p) = tr.net.lift_prior(&p, &tr.params) else {
                    return Err(TrainError::Invalid(format!(
                        "posterior.prior: the prior has {} parameters, this network {} (the \
                         prior's network and sampler must equal the posterior's, up to its \
                         Langevin term)",
                        p.len(),
                        tr.net.num_params()
                    )));
                };
                tr.params.clone_from(&p);
                if cfg.sampler.learned_variance {
                    // Log-variance 0 offset: the posterior's steps start at the prior's fixed
                    // variances (the prior never trained those outputs, and never reads them).
                    tr.net.zero_log_var_head(&mut tr.params);
                }
                let z = tr.net.log_z_index();
                tr.params[z] = 0.0;
                tr.prior = Some(p);
                if let Some(l) = cfg.posterior.as_ref().and_then(|p| p.lora.as_ref()) {
                    let lora = Lora::new(&tr.net, l.rank, l.alpha());
                    let theta = lora.init(cfg.seed, &tr.params);
                    tr.adam = Adam::new(&lora.layout);
                    tr.lora = Some(LoraState {
                        lora,
                        base: tr.params.clone(),
                        theta,
                    });
                }
            }
        }
        Ok(tr)
    }

    fn build(cfg: &ExperimentConfig) -> Result<Self, TrainError> {
        cfg.validate()
            .map_err(|(f, m)| TrainError::Invalid(format!("{f}: {m}")))?;
        crate::alloc_tuning::keep_freed_memory();
        let energy = build_energy(cfg)?;
        let vae = match cfg.target {
            TargetConfig::Vae { repeats } => Some(
                crate::conditional::VaeTask::load(&crate::data::project_dir(), repeats)
                    .map_err(|e| TrainError::Data(e.to_string()))?,
            ),
            _ => None,
        };
        let offline = match &cfg.target {
            TargetConfig::Bandit {
                repeats,
                data,
                test_states,
            } => Some(crate::conditional::OfflineTask::Bandit(
                crate::conditional::BanditTask::new(
                    crate::conditional::offline_alpha(cfg),
                    *data,
                    *repeats,
                    *test_states,
                    cfg.seed,
                ),
            )),
            TargetConfig::Pendulum {
                dataset,
                repeats,
                data_episodes,
                data_seed,
                test_states,
                episodes,
                iql,
                action,
                oracle_q,
            } => Some(crate::conditional::OfflineTask::Pendulum(Box::new({
                let mut task = crate::rl::task::PendulumTask::new(
                    *action,
                    *dataset,
                    *data_episodes,
                    *data_seed,
                    *repeats,
                    *test_states,
                    *episodes,
                    iql.clone(),
                    crate::conditional::offline_alpha(cfg),
                );
                task.oracle_q = *oracle_q;
                task
            }))),
            _ => None,
        };
        let cond_dim = match (&vae, &offline) {
            (Some(_), _) => Some(crate::energies::vae::PIXELS),
            (_, Some(task)) => Some(task.cond_dim()),
            _ => None,
        };
        // The VAE's TB learns log Z(x) with the flow head on the condition's embedding.
        let flow = if cfg.train.method.uses_flow() {
            FlowHead::Trunk
        } else if vae.is_some() && cfg.train.method == Method::Tb {
            FlowHead::ConditionLogZ
        } else {
            FlowHead::None
        };
        let net = DriftNet::build(energy.dim(), &cfg.network, flow, cond_dim);
        let params = net.init(cfg.seed);
        let adam = Adam::new(&net.layout);
        let mut cfg = cfg.clone();
        resolve_backend(&mut cfg)?;
        let sampler = Sampler::from_config(&cfg);
        #[cfg(feature = "gpu")]
        let device = match cfg.backend {
            Backend::Gpu => {
                let ctx = crate::gpu::GpuContext::shared()
                    .map_err(|e| TrainError::Device(e.to_string()))?;
                Some(
                    crate::gpu::trainer::GpuTrainer::new(
                        ctx,
                        &cfg,
                        &net,
                        &sampler,
                        &params,
                        Default::default(),
                    )
                    .map_err(|e| TrainError::Device(e.to_string()))?,
                )
            }
            _ => None,
        };
        // A conditional target's buffers hold (z, x) pairs: [z | image] rows.
        let entry_dim = sampler.dim + cond_dim.unwrap_or(0);
        let buffer = |o: &crate::config::OffPolicyConfig| {
            ReplayBuffer::new(o.buffer_capacity, entry_dim, o.sampling)
        };
        let replay = cfg.train.off_policy.as_ref().map(buffer);
        let ls_replay = cfg
            .train
            .off_policy
            .as_ref()
            .filter(|o| o.local_search.is_some())
            .map(buffer);
        Ok(Trainer {
            sampler,
            cfg,
            energy,
            net,
            params,
            adam,
            iteration: 0,
            #[cfg(feature = "gpu")]
            device,
            host_stale: false,
            replay,
            ls_replay,
            vae,
            offline,
            prior: None,
            lora: None,
        })
    }

    /// The contextual bandit's task, when the target is the bandit.
    pub fn bandit(&self) -> Option<&crate::conditional::BanditTask> {
        self.offline.as_ref().and_then(|t| t.bandit())
    }

    /// The Pendulum's task, when the target is the Pendulum.
    pub fn pendulum(&self) -> Option<&crate::rl::task::PendulumTask> {
        self.offline.as_ref().and_then(|t| t.pendulum())
    }

    /// True when this run must be given its prior run's critic before training: a Pendulum
    /// posterior scores actions by the critic's Q.
    pub fn needs_critic(&self) -> bool {
        self.cfg.posterior.is_some() && self.pendulum().is_some_and(|t| t.critic.is_none())
    }

    /// True when this run trains the critic once its own training is done: a Pendulum prior.
    pub fn trains_critic(&self) -> bool {
        self.cfg.posterior.is_none() && self.pendulum().is_some()
    }

    /// Take the critic the prior run saved (its flat parameters).
    pub fn attach_critic(&mut self, flat: &[f32]) -> Result<(), TrainError> {
        let task = self
            .offline
            .as_mut()
            .and_then(|t| t.pendulum_mut())
            .ok_or_else(|| {
                TrainError::Invalid("a critic was given to a run without a Pendulum target".into())
            })?;
        task.load_critic(flat)
            .map_err(|e| TrainError::Invalid(format!("the prior run's critic: {e}")))
    }

    /// Train the Pendulum's IQL critic on the run's dataset (streams keyed by the run's seed)
    /// and return its flat parameters, which the prior run saves for its posteriors.
    pub fn train_critic(&mut self) -> Result<Vec<f32>, TrainError> {
        let seed = self.cfg.seed;
        let it = self.iteration;
        let task = self
            .offline
            .as_mut()
            .and_then(|t| t.pendulum_mut())
            .ok_or_else(|| TrainError::Invalid("only the Pendulum trains a critic".into()))?;
        task.train_critic(seed)
            .map_err(|quantity| TrainError::NonFinite {
                iteration: it,
                quantity: format!("IQL critic ({quantity})"),
            })?;
        Ok(task.critic.as_ref().expect("just trained").to_flat())
    }

    /// Copies the device's parameters and Adam moments to the host (no-op on the CPU backend or
    /// when nothing changed since the last copy).
    pub fn sync_from_device(&mut self) -> Result<(), TrainError> {
        #[cfg(feature = "gpu")]
        if let (true, Some(dev)) = (self.host_stale, &self.device) {
            let (p, m, v) = dev
                .download()
                .map_err(|e| TrainError::Device(e.to_string()))?;
            self.params = p;
            self.adam.m = m;
            self.adam.v = v;
        }
        self.host_stale = false;
        Ok(())
    }

    /// Overwrites the parameters (host and device) — tests and tools start from chosen values.
    /// On a LoRA posterior they become the frozen base, under the current adapters.
    pub fn set_params(&mut self, params: Vec<f32>) {
        assert_eq!(
            params.len(),
            self.net.num_params(),
            "parameter vector length"
        );
        self.params = params;
        if let Some(l) = &mut self.lora {
            // A LoRA posterior's values are its base plus the adapters' update.
            l.base.clone_from(&self.params);
            l.lora.materialise(&l.base, &l.theta, &mut self.params);
        }
        #[cfg(feature = "gpu")]
        if let Some(dev) = &self.device {
            dev.upload(&self.params, &self.adam.m, &self.adam.v);
        }
    }

    /// The backend this trainer runs on (`Auto` already resolved).
    pub fn backend(&self) -> Backend {
        self.cfg.backend
    }

    /// The state after `self.iteration` iterations, with the records so far.
    pub fn checkpoint(&self, curve: &[CurveRow], evals: &[EvalRow]) -> Checkpoint {
        Checkpoint {
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            config_digest: self.cfg.digest(),
            iteration: self.iteration as u64,
            params: self.params.clone(),
            adam_m: self.adam.m.clone(),
            adam_v: self.adam.v.clone(),
            adam_steps: self.adam.steps.clone(),
            curve: curve.to_vec(),
            evals: evals.to_vec(),
            replay: self.replay.as_ref().map(buffer_state),
            ls_replay: self.ls_replay.as_ref().map(buffer_state),
            lora: self.lora.as_ref().map(|l| l.theta.clone()),
        }
    }

    /// A trainer for `cfg` in the state `ck` recorded; refuses a checkpoint of another config,
    /// crate version or network shape.
    pub fn restore(cfg: &ExperimentConfig, ck: &Checkpoint) -> Result<Self, TrainError> {
        Trainer::restore_with_prior(cfg, ck, None)
    }

    /// [`Self::restore`] of an RTB run, with its prior's parameters.
    pub fn restore_with_prior(
        cfg: &ExperimentConfig,
        ck: &Checkpoint,
        prior: Option<Vec<f32>>,
    ) -> Result<Self, TrainError> {
        ck.check_origin(&cfg.digest())?;
        let mut tr = Trainer::with_prior(cfg, prior)?;
        let p = tr.net.num_params();
        let blocks = tr.adam.steps.len();
        if ck.params.len() != p || ck.adam_steps.len() != blocks {
            return Err(TrainError::Resume(CheckpointError::Malformed(format!(
                "{} parameters in {} blocks, the network has {p} in {blocks}",
                ck.params.len(),
                ck.adam_steps.len()
            ))));
        }
        if ck.iteration as usize > tr.total_iterations() || ck.curve.len() != ck.iteration as usize
        {
            return Err(TrainError::Resume(CheckpointError::Malformed(format!(
                "iteration {} with {} curve rows (config trains {})",
                ck.iteration,
                ck.curve.len(),
                tr.total_iterations()
            ))));
        }
        tr.params.clone_from(&ck.params);
        match (tr.lora.as_mut(), &ck.lora) {
            (None, None) => {}
            (Some(l), Some(theta)) if theta.len() == l.theta.len() => {
                l.theta.clone_from(theta);
                // The saved parameters must be the ones the adapters give.
                let mut rebuilt = vec![0f32; p];
                l.lora.materialise(&l.base, theta, &mut rebuilt);
                if rebuilt
                    .iter()
                    .zip(&ck.params)
                    .any(|(a, b)| a.to_bits() != b.to_bits())
                {
                    return Err(TrainError::Resume(CheckpointError::Malformed(
                        "the parameters are not the prior plus the saved LoRA adapters".into(),
                    )));
                }
            }
            _ => {
                return Err(TrainError::Resume(CheckpointError::Malformed(
                    "the LoRA adapters do not match the config's posterior.lora".into(),
                )))
            }
        }
        tr.adam.m.clone_from(&ck.adam_m);
        tr.adam.v.clone_from(&ck.adam_v);
        tr.adam.steps.clone_from(&ck.adam_steps);
        tr.iteration = ck.iteration as usize;
        for (slot, saved, name) in [
            (&mut tr.replay, &ck.replay, "replay buffer"),
            (&mut tr.ls_replay, &ck.ls_replay, "local-search buffer"),
        ] {
            match (slot.as_mut(), saved) {
                (None, None) => {}
                (Some(buf), Some(st)) => {
                    *buf = ReplayBuffer::from_entries(
                        buf.capacity(),
                        buf.dim(),
                        buf.mode(),
                        &st.xs,
                        &st.log_r,
                    )
                    .map_err(|e| {
                        TrainError::Resume(CheckpointError::Malformed(format!("{name}: {e}")))
                    })?;
                }
                _ => {
                    return Err(TrainError::Resume(CheckpointError::Malformed(format!(
                        "the {name} does not match the config"
                    ))))
                }
            }
        }
        #[cfg(feature = "gpu")]
        if let Some(dev) = &tr.device {
            dev.upload(&tr.params, &tr.adam.m, &tr.adam.v);
        }
        Ok(tr)
    }

    pub fn total_iterations(&self) -> usize {
        self.cfg.train.iterations
    }

    /// The learned log Z parameter.
    pub fn learned_log_z(&self) -> f64 {
        self.params[self.net.log_z_index()] as f64
    }

    /// Compute the loss and the flat gradient at the current parameters for iteration `it`'s
    /// forward trajectories, without updating anything. Returns (loss and per-trajectory parts, ∇).
    pub fn loss_and_grad(&self, it: usize) -> Result<(LossGrad, Vec<f32>), TrainError> {
        if self.cfg.train.method == Method::EpsMse {
            return self.eps_mse_loss_and_grad(it);
        }
        if self.cfg.train.method == Method::Mle {
            let data = self.data_batch(it)?;
            return self
                .loss_and_grad_from(it, Source::Backward(data, None))
                .map(|(lg, grad, _, _)| (lg, grad));
        }
        if let Some(task) = self.offline.as_ref().filter(|_| self.dataset_paths_at(it)) {
            // RTB mixed: B dataset (action, state) pairs, each tiled R times (repeat-major),
            // noised backward by the prior's forward kernel (stream "backward-noise").
            let (x, s) = task.data_batch(self.cfg.seed, it, self.cfg.train.batch);
            let r = self.cfg.rows_per_iteration() / self.cfg.train.batch;
            let (x, s) = (
                crate::conditional::tile(&x, r),
                crate::conditional::tile(&s, r),
            );
            return self
                .loss_and_grad_from(it, Source::Backward(x, Some(s)))
                .map(|(lg, grad, _, _)| (lg, grad));
        }
        let conditions = self.forward_conditions(it);
        self.loss_and_grad_from(it, Source::Forward(conditions.as_deref()))
            .map(|(lg, grad, _, _)| (lg, grad))
    }

    /// Whether iteration `it` trains on dataset-noised paths (`posterior.dataset_paths`: the
    /// odd iterations; the even ones stay on-policy).
    fn dataset_paths_at(&self, it: usize) -> bool {
        self.cfg.posterior.as_ref().is_some_and(|p| p.dataset_paths) && it % 2 == 1
    }

    /// DDPM ε-MSE (spec rtb2024 §7.4) on iteration `it`'s data x0 (as [`Self::data_batch`]),
    /// times t_b ~ U{0..T−1} (stream "ddpm-t") and noise ε (stream "ddpm-eps"):
    /// L = (1/(B·D)) Σ_b ‖ε_b − ε̂(√ᾱ_t·x0_b + √(1−ᾱ_t)·ε_b, t_b)‖². The squared error is the
    /// tape's Gaussian log-density of ε under mean ε̂ and unit variance, so its VJP is reused.
    /// With `train.min_snr_gamma` γ, sample b's error is weighted by min(γ/SNR_{t_b}, 1).
    fn eps_mse_loss_and_grad(&self, it: usize) -> Result<(LossGrad, Vec<f32>), TrainError> {
        let sched = self
            .sampler
            .ddpm
            .as_ref()
            .expect("validated: a DDPM sampler");
        let (b, d) = (self.cfg.train.batch, self.sampler.dim);
        // An offline-RL prior is conditioned on each tuple's state.
        let (x0, cond) = match &self.offline {
            Some(task) => {
                let (a, s) = task.data_batch(self.cfg.seed, it, b);
                (a, Some(s))
            }
            None => (self.data_batch(it)?, None),
        };
        let mut t_stream = rng::stream(self.cfg.seed, "ddpm-t", it as u64);
        let train = sched.alpha_bars.len() as u32;
        let ts: Vec<usize> = (0..b)
            .map(|_| rng::below(&mut t_stream, train) as usize)
            .collect();
        let mut eps = vec![0f32; b * d];
        rng::fill_normals(
            &mut rng::stream(self.cfg.seed, "ddpm-eps", it as u64),
            &mut eps,
        );
        let xt: Vec<f32> = (0..b * d)
            .map(|k| {
                let ab = sched.alpha_bars[ts[k / d]];
                (ab.sqrt() * x0[k] as f64 + (1.0 - ab).sqrt() * eps[k] as f64) as f32
            })
            .collect();
        // Min-SNR-γ: SNR_t = ᾱ_t/(1 − ᾱ_t); weight 1 without γ.
        let weights: Vec<f64> = ts
            .iter()
            .map(|&t| match self.cfg.train.min_snr_gamma {
                Some(g) => {
                    let ab = sched.alpha_bars[t];
                    (g * (1.0 - ab) / ab).min(1.0)
                }
                None => 1.0,
            })
            .collect();
        let half_log_tau = 0.5 * d as f64 * std::f64::consts::TAU.ln();
        let scale = 1.0 / (b * d) as f64;
        let parts = par_map(shard_ranges(b, self.cfg.train.shards), &|r: Range<
            usize,
        >| {
            let rows = r.len();
            let mut tape = crate::autodiff::Tape::<f32>::new();
            let vars = self.net.bind(&mut tape, &self.params);
            let times: Vec<f64> = r
                .clone()
                .map(|k| self.sampler.ddpm_time(ts[k], sched))
                .collect();
            let temb = self.net.time_embedding(&mut tape, &vars, &times);
            let x = tape.constant(Tensor::from_f32(rows, d, &xt[r.start * d..r.end * d]));
            let cond_emb = self.cond_rows(cond.as_deref(), &r).map(|c| {
                let node = tape.constant(Tensor::from_f32(rows, c.len() / rows, c));
                self.net.condition_embedding(&mut tape, &vars, node)
            });
            let o = self.net.policy_rows(&mut tape, &vars, x, temb, cond_emb);
            let zero = tape.constant(Tensor::zeros(rows, d));
            let target = tape.constant(Tensor::from_f32(rows, d, &eps[r.start * d..r.end * d]));
            let lp = tape.em_logpf(o, zero, target, 1.0, 0.0, None);
            // ‖ε − ε̂‖² = −2(log N(ε; ε̂, I) + (D/2)·ln 2π).
            let w = &weights[r.clone()];
            let sq: Vec<f64> = tape
                .value(lp)
                .data
                .iter()
                .zip(w)
                .map(|(&v, &w)| -2.0 * (v as f64 + half_log_tau) * w)
                .collect();
            let seed = Tensor::from_vec(
                rows,
                1,
                w.iter().map(|&w| (-2.0 * scale * w) as f32).collect(),
            );
            let grads = tape.backward(vec![(lp, seed)]);
            (sq, self.net.flat_grads(&vars, &grads))
        });
        let loss = parts.iter().flat_map(|(sq, _)| sq).sum::<f64>() * scale;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite {
                iteration: it,
                quantity: "ε-MSE loss".into(),
            });
        }
        let shard_grads: Vec<Vec<f32>> = parts.into_iter().map(|(_, g)| g).collect();
        let lg = LossGrad {
            loss,
            d_log_pf: Vec::new(),
            d_log_z: 0.0,
            log_z: self.learned_log_z(),
        };
        Ok((lg, sum_in_order(&shard_grads, self.net.num_params())))
    }

    /// MLE's iteration-`it` data: B exact samples of the target `[B, D]` from stream
    /// (seed, "data", it), drawn as the target's ground truth is (stratified for the 25GMM:
    /// B/25 per mode, as the reference's pretraining does).
    fn data_batch(&self, it: usize) -> Result<Vec<f32>, TrainError> {
        let mut stream = rng::stream(self.cfg.seed, "data", it as u64);
        self.energy
            .sample(self.cfg.train.batch, &mut stream)
            .ok_or_else(|| {
                TrainError::Invalid(format!(
                    "train.method Mle: the target {} cannot be sampled exactly",
                    self.energy.name()
                ))
            })
    }

    /// Iteration `it`'s training conditions `[R·B, C]` (the VAE posterior's images, the
    /// offline-RL target's states), else `None`.
    fn forward_conditions(&self, it: usize) -> Option<Vec<f32>> {
        let (seed, b) = (self.cfg.seed, self.cfg.train.batch);
        match (&self.vae, &self.offline) {
            (Some(v), _) => Some(v.training_conditions(seed, it, b)),
            (_, Some(task)) => Some(task.training_conditions(seed, it, b)),
            _ => None,
        }
    }

    /// [`Self::loss_and_grad`] for trajectories from `source`; also returns their terminal
    /// states [B, D] and log R [B].
    fn loss_and_grad_from(&self, it: usize, source: Source) -> Result<IterationGrad, TrainError> {
        if self.cfg.train.method == Method::Pis {
            return self.pis_loss_and_grad(it);
        }
        // B trajectories, or R·B for the conditional target (B images × R repeats).
        let b = self.cfg.rows_per_iteration();
        let conditions = source.conditions();
        let d = self.sampler.dim;
        let t = self.sampler.steps;
        let eps = explore_std(self.cfg.train.exploration.as_ref(), it);
        let purpose = match source {
            Source::Forward(_) => "train-noise",
            Source::Backward(..) => "backward-noise",
        };
        let key = rng::stream_key(self.cfg.seed, purpose, it as u64);
        let shards = shard_ranges(b, self.cfg.train.shards);
        let fl_on = self.cfg.train.forward_looking;
        // The two-pass gradient samples without a graph and recomputes each step afterwards.
        let two_pass = self.cfg.train.two_pass;
        let record = if two_pass {
            Record::States
        } else {
            Record::Graph
        };
        let rolls = par_map(shards.clone(), &|r: Range<usize>| {
            let (roll, log_r) = match &source {
                Source::Forward(_) => {
                    let path = Path::Forward {
                        noise_key: key,
                        row0: r.start,
                        total_rows: b,
                        explore_std: eps,
                    };
                    self.rollout_rows(r.len(), path, record, self.cond_rows(conditions, &r))
                }
                Source::Backward(x_t, _) => {
                    let mut noise = ChaCha8Rng::from_seed(key);
                    let xt = &x_t[r.start * d..r.end * d];
                    let states = sample_backward_states(&self.sampler, xt, &mut noise, r.start, b);
                    let cond = self.cond_rows(conditions, &r);
                    self.rollout_rows(r.len(), Path::Given(&states), record, cond)
                }
            };
            let fl = if fl_on {
                self.fl_terms(&roll.states, r.len(), self.cond_rows(conditions, &r))
            } else {
                Vec::new()
            };
            ShardRollout { roll, log_r, fl }
        });
        let cat = |f: &dyn Fn(&ShardRollout) -> &Vec<f64>| {
            rolls
                .iter()
                .flat_map(|s| f(s).iter().copied())
                .collect::<Vec<f64>>()
        };
        let (lf, lb, lr) = (
            cat(&|s| &s.roll.log_pf),
            cat(&|s| &s.roll.log_pb),
            cat(&|s| &s.log_r),
        );
        if rolls
            .iter()
            .any(|s| s.roll.x_final.iter().any(|v| !v.is_finite()))
        {
            return Err(TrainError::NonFinite {
                iteration: it,
                quantity: "sampled states x_T".into(),
            });
        }
        let (lg, step_seeds) = match self.cfg.train.method {
            Method::Tb if self.vae.is_some() => {
                let log_z: Vec<f64> = rolls
                    .iter()
                    .flat_map(|s| {
                        let tape = s
                            .roll
                            .tape
                            .as_ref()
                            .expect("gradient rollout keeps its tape");
                        let node = s.roll.log_z_node.expect("conditional TB has log Z(x)");
                        tape.value(node)
                            .data
                            .iter()
                            .map(|&v| v as f64)
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let lg = trajectory_balance_rows(&log_z, &lf, &lb, &lr);
                per_trajectory(lg, true)
            }
            // RTB is TB on the rows `rollout_rows` returns: LB is the prior's LF, lr is β·log r.
            // The conditional RTB (spec rtb2024 §4.3, §7.4): VarGrad over each state's repeats,
            // log Z(s) the detached group mean.
            Method::Rtb if self.offline.is_some() => {
                let lg = vargrad_conditional(&lf, &lb, &lr, self.cfg.train.batch);
                per_trajectory(lg, false)
            }
            Method::Tb | Method::Rtb => {
                let cutoff = self.cfg.posterior.as_ref().and_then(|p| p.loss_cutoff);
                let lg = match cutoff {
                    Some(c) => trajectory_balance_cutoff(self.learned_log_z(), &lf, &lb, &lr, c),
                    None => trajectory_balance(self.learned_log_z(), &lf, &lb, &lr),
                };
                per_trajectory(lg, false)
            }
            Method::VarGrad => {
                let lg = match self.vae {
                    Some(_) => vargrad_conditional(&lf, &lb, &lr, self.cfg.train.batch),
                    None => vargrad(&lf, &lb, &lr),
                };
                per_trajectory(lg, false)
            }
            Method::SubTb | Method::Db => {
                let step_lf = cat(&|s| &s.roll.step_log_pf);
                let step_lb = cat(&|s| &s.roll.step_log_pb);
                let log_f: Vec<f64> = rolls.iter().flat_map(|s| flow_values(&s.roll, t)).collect();
                let fl = fl_on.then(|| cat(&|s| &s.fl));
                let g = if self.cfg.train.method == Method::SubTb {
                    let lambda = self.cfg.train.lambda();
                    subtb(lambda, &step_lf, &step_lb, &log_f, fl.as_deref(), &lr, b, t)
                } else {
                    // DB takes the flow as one input; FL is additive and gradient-free.
                    let total: Vec<f64> = match &fl {
                        Some(fl) => log_f.iter().zip(fl).map(|(a, c)| a + c).collect(),
                        None => log_f.clone(),
                    };
                    detailed_balance(&step_lf, &step_lb, &total, &lr, b, t)
                };
                // The learned log Z is log F(x₀, 0) (+ its FL constant), averaged over rows.
                let log_z = (0..b)
                    .map(|r| log_f[r * t] + fl.as_ref().map_or(0.0, |fl| fl[r * t]))
                    .sum::<f64>()
                    / b as f64;
                let lg = LossGrad {
                    loss: g.loss,
                    d_log_pf: Vec::new(),
                    d_log_z: 0.0,
                    log_z,
                };
                let seeds = StepSeeds::PerStep {
                    d_log_pf: g.d_log_pf,
                    d_log_f: g.d_log_f,
                };
                (lg, seeds)
            }
            Method::Mle => {
                // L = −(1/B) Σ_b LF_b on p_B paths from data.
                let n = lf.len() as f64;
                let lg = LossGrad {
                    loss: -lf.iter().sum::<f64>() / n,
                    d_log_pf: vec![-1.0 / n; lf.len()],
                    d_log_z: 0.0,
                    log_z: self.learned_log_z(),
                };
                per_trajectory(lg, false)
            }
            Method::RlKl => {
                let post = self.cfg.posterior.as_ref().expect("validated: a posterior");
                // Off-policy: the exploratory sampler's density of the same moves, for the
                // importance weights (fixed variance, validated).
                let behaviour = (eps > 0.0).then(|| {
                    let step_lf = cat(&|s| &s.roll.step_log_pf);
                    let v = self.sampler.dt() * self.sampler.sigma2;
                    behaviour_log_prob(&step_lf, t, d, v, v + eps * eps)
                });
                let lg = rl_kl(
                    &lf,
                    &lb,
                    &lr,
                    post.beta,
                    behaviour.as_deref().map(|v| (v, t)),
                );
                per_trajectory(lg, false)
            }
            Method::Dpok => {
                let post = self.cfg.posterior.as_ref().expect("validated: a posterior");
                let kl: Vec<f64> = rolls.iter().flat_map(|s| self.step_kls(&s.roll)).collect();
                let lg = dpok(&lf, &lb, &lr, &kl, post.dpok_kl_weight());
                per_trajectory(lg, false)
            }
            Method::Ddpo => {
                let post = self.cfg.posterior.as_ref().expect("validated: a posterior");
                let lg = ddpo(&lf, &lb, &lr, post.reward_scale.unwrap_or(1.0));
                per_trajectory(lg, false)
            }
            Method::RlKlPaper => {
                let post = self.cfg.posterior.as_ref().expect("validated: a posterior");
                let alpha = post.kl_weight.expect("validated: a KL weight");
                let lg = rl_kl_paper(&lf, &lb, &lr, alpha, post.reward_scale.unwrap_or(1.0));
                per_trajectory(lg, false)
            }
            Method::EpsMse => unreachable!("ε-MSE is dispatched by loss_and_grad"),
            Method::Guidance | Method::Resample | Method::Dps | Method::LgdMc => {
                return Err(TrainError::Invalid(format!(
                    "{:?} trains nothing (validated iterations: 0)",
                    self.cfg.train.method
                )))
            }
            Method::Pis => unreachable!("PIS returned above"),
        };
        if !lg.loss.is_finite() {
            let what = if lr.iter().any(|v| !v.is_finite()) {
                "log R(x_T) of a sampled state"
            } else if lf.iter().any(|v| !v.is_finite()) {
                "log p_F of a trajectory"
            } else {
                "loss"
            };
            return Err(TrainError::NonFinite {
                iteration: it,
                quantity: what.into(),
            });
        }
        let x_final: Vec<f32> = rolls
            .iter()
            .flat_map(|s| s.roll.x_final.iter().copied())
            .collect();
        let jobs: Vec<(ShardRollout, Range<usize>)> = rolls.into_iter().zip(shards).collect();
        let second_pass = |(s, r): (ShardRollout, Range<usize>)| -> Vec<f32> {
            let StepSeeds::PerTrajectory {
                d_log_pf,
                log_z_head: false,
            } = &step_seeds
            else {
                unreachable!("validated: two_pass is for the per-trajectory losses")
            };
            let cond = self.cond_rows(conditions, &r);
            let batch = self.batch_energy(cond);
            crate::samplers::two_pass::step_by_step_grad(
                &self.net,
                &self.params,
                &self.sampler,
                batch.get(),
                &s.roll.states,
                &d_log_pf[r.clone()],
                cond,
            )
            .into_iter()
            .map(|g| g as f32)
            .collect()
        };
        let graph_pass = |(s, r): (ShardRollout, Range<usize>)| {
            let column = |v: &[f64], i: usize| {
                Tensor::from_vec(
                    r.len(),
                    1,
                    r.clone().map(|row| v[row * t + i] as f32).collect(),
                )
            };
            let seeds: Vec<(crate::autodiff::Var, Tensor<f32>)> = match &step_seeds {
                StepSeeds::PerTrajectory {
                    d_log_pf,
                    log_z_head,
                } => {
                    let seed = rows_seed(&d_log_pf[r.clone()]);
                    let log_z = log_z_head.then(|| {
                        let z = s.roll.log_z_node.expect("conditional TB has log Z(x)");
                        (z, seed.clone())
                    });
                    s.roll
                        .logpf_nodes
                        .iter()
                        .map(|&n| (n, seed.clone()))
                        .chain(log_z)
                        .collect()
                }
                StepSeeds::PerStep { d_log_pf, d_log_f } => {
                    let pf = s.roll.logpf_nodes.iter().enumerate();
                    let fl = s.roll.flow_nodes.iter().enumerate();
                    pf.map(|(i, &n)| (n, column(d_log_pf, i)))
                        .chain(fl.map(|(i, &n)| (n, column(d_log_f, i))))
                        .collect()
                }
            };
            // DPOK: the per-step KL's gradient enters through each step's drift.
            let seeds = if self.cfg.train.method == Method::Dpok {
                let tape = s
                    .roll
                    .tape
                    .as_ref()
                    .expect("gradient rollout keeps its tape");
                let mut seeds = seeds;
                seeds.extend(self.dpok_drift_seeds(&s.roll, tape, b));
                seeds
            } else {
                seeds
            };
            let vars = s.roll.vars.expect("gradient rollout keeps its vars");
            let grads = s
                .roll
                .tape
                .expect("gradient rollout keeps its tape")
                .backward(seeds);
            self.net.flat_grads(&vars, &grads)
        };
        let shard_grads = if two_pass {
            par_map(jobs, &second_pass)
        } else {
            par_map(jobs, &graph_pass)
        };
        let mut grad = sum_in_order(&shard_grads, self.net.num_params());
        if matches!(self.cfg.train.method, Method::Tb | Method::Rtb) {
            grad[self.net.log_z_index()] = lg.d_log_z as f32;
        }
        Ok((lg, grad, x_final, lr))
    }

    /// Each row's Σ_t KL(p_φ(·|x_t) ‖ p_θ(·|x_t)) of a DPOK training rollout (its own and the
    /// prior's drifts at the same states).
    fn step_kls(&self, roll: &Rollout<f32>) -> Vec<f64> {
        let (d, t, dt) = (self.sampler.dim, self.sampler.steps, self.sampler.dt());
        let rows = roll.x_final.len() / d;
        (0..rows)
            .map(|b| {
                (0..t)
                    .map(|i| {
                        let k = (i * rows + b) * d;
                        let rate = self.sampler.transition(i).rate;
                        step_kl(
                            &roll.step_drift[k..k + d],
                            &roll.prior_step_drift[k..k + d],
                            dt,
                            rate,
                        )
                    })
                    .sum()
            })
            .collect()
    }

    /// DPOK's seeds on the drift nodes of a training rollout whose batch has `total` rows:
    /// ∂(w/B · Σ KL)/∂u per step, zero beyond the first D columns of the drift node.
    fn dpok_drift_seeds(
        &self,
        roll: &Rollout<f32>,
        tape: &crate::autodiff::Tape<f32>,
        total: usize,
    ) -> Vec<(crate::autodiff::Var, Tensor<f32>)> {
        let (d, dt) = (self.sampler.dim, self.sampler.dt());
        let rows = roll.x_final.len() / d;
        let w = self
            .cfg
            .posterior
            .as_ref()
            .expect("validated: a posterior")
            .dpok_kl_weight();
        roll.drift_nodes
            .iter()
            .enumerate()
            .map(|(i, &node)| {
                let cols = tape.value(node).cols;
                let rate = self.sampler.transition(i).rate;
                let mut seed = vec![0f32; rows * cols];
                for b in 0..rows {
                    let k = (i * rows + b) * d;
                    let g = dpok_drift_seed(
                        &roll.step_drift[k..k + d],
                        &roll.prior_step_drift[k..k + d],
                        dt,
                        rate,
                        w,
                        total,
                    );
                    for (j, v) in g.into_iter().enumerate() {
                        seed[b * cols + j] = v as f32;
                    }
                }
                (node, Tensor::from_vec(rows, cols, seed))
            })
            .collect()
    }

    /// The FL partial-energy term of states x_0..x_{T−1} of a gradient rollout's `states`
    /// (`[T+1, rows, D]`): `[rows, T]` row-major.
    fn fl_terms(&self, states: &[f32], rows: usize, cond: Option<&[f32]>) -> Vec<f64> {
        let batch = self.batch_energy(cond);
        let energy = batch.get();
        let (d, t) = (self.sampler.dim, self.sampler.steps);
        let dt = self.sampler.dt();
        let mut out = vec![0f64; rows * t];
        let mut log_r = vec![0f64; rows];
        for i in 0..t {
            let x_i = &states[i * rows * d..(i + 1) * rows * d];
            energy.log_reward(x_i, &mut log_r);
            for b in 0..rows {
                let xb = &x_i[b * d..(b + 1) * d];
                out[b * t + i] = fl_term(i as f64 * dt, i, dt, self.sampler.sigma2, xb, log_r[b]);
            }
        }
        out
    }

    /// PIS (spec §3): L = (1/D)(1/B) Σ_b (LF_b − LB_b − log R(x_T)) on reparametrised forward
    /// trajectories, differentiated through the states and log R. The reported log Z is the
    /// batch ELBO mean_b(log R + LB − LF).
    fn pis_loss_and_grad(&self, it: usize) -> Result<IterationGrad, TrainError> {
        let b = self.cfg.rows_per_iteration();
        let d = self.sampler.dim;
        let key = rng::stream_key(self.cfg.seed, "train-noise", it as u64);
        let scale = 1.0 / (d as f64 * b as f64);
        let conditions = self.forward_conditions(it);
        let parts = par_map(shard_ranges(b, self.cfg.train.shards), &|r: Range<
            usize,
        >| {
            let cond = self.cond_rows(conditions.as_deref(), &r);
            let batch = self.batch_energy(cond);
            let energy = batch.get();
            let roll = rollout_pis_conditional::<f32>(
                &self.net,
                &self.params,
                &self.sampler,
                energy,
                r.len(),
                key,
                r.start,
                b,
                cond,
            );
            let ok = roll.x_final.iter().all(|v| v.is_finite())
                && roll.log_r.iter().all(|v| v.is_finite());
            let (lf, lb, lr, x) = (
                roll.log_pf.clone(),
                roll.log_pb.clone(),
                roll.log_r.clone(),
                roll.x_final.clone(),
            );
            let grad = ok.then(|| {
                let seeds = roll.loss_seeds(scale);
                let grads = roll.tape.backward(seeds);
                self.net.flat_grads(&roll.vars, &grads)
            });
            (lf, lb, lr, x, grad)
        });
        let mut lf = Vec::with_capacity(b);
        let mut lb = Vec::with_capacity(b);
        let mut lr = Vec::with_capacity(b);
        let mut x_final = Vec::with_capacity(b * d);
        let mut shard_grads = Vec::new();
        for (f, bb, r, x, g) in parts {
            lf.extend(f);
            lb.extend(bb);
            lr.extend(r);
            x_final.extend(x);
            match g {
                Some(g) => shard_grads.push(g),
                None => {
                    return Err(TrainError::NonFinite {
                        iteration: it,
                        quantity: "sampled states x_T or their log R (PIS)".into(),
                    })
                }
            }
        }
        let sum: f64 = (0..b).map(|i| lf[i] - lb[i] - lr[i]).sum();
        let loss = sum * scale;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite {
                iteration: it,
                quantity: "PIS loss".into(),
            });
        }
        let lg = LossGrad {
            loss,
            d_log_pf: Vec::new(),
            d_log_z: 0.0,
            log_z: -sum / b as f64,
        };
        let grad = sum_in_order(&shard_grads, self.net.num_params());
        Ok((lg, grad, x_final, lr))
    }

    /// One training iteration: trajectories, loss, gradient, Adam step.
    pub fn step(&mut self) -> Result<CurveRow, TrainError> {
        #[cfg(feature = "gpu")]
        if self.device.is_some() {
            return self.step_on_device();
        }
        let it = self.iteration;
        let (lg, grad) = self.off_policy_loss_and_grad(it)?;
        if let Some(i) = grad.iter().position(|g| !g.is_finite()) {
            let name = self
                .net
                .layout
                .specs
                .iter()
                .find(|s| s.range().contains(&i))
                .map(|s| s.name.clone());
            return Err(TrainError::NonFinite {
                iteration: it,
                quantity: format!("gradient of parameter block {}", name.unwrap_or_default()),
            });
        }
        let (lr_policy, lr_flow) = (self.cfg.train.lr_policy_at(it), self.cfg.train.lr_flow);
        let lr = move |g: Group| match g {
            Group::Policy => lr_policy,
            Group::Flow => lr_flow,
        };
        let frozen = frozen_groups(self.cfg.train.method);
        // What Adam steps: the network's vector, or a LoRA posterior's adapters θ (their
        // gradient by the chain rule). Clipping acts on that gradient.
        let mut grad = match &self.lora {
            Some(l) => l.lora.pull_back(&l.theta, &grad),
            None => grad,
        };
        if let Some(c) = self.cfg.train.grad_clip {
            clip_grad_norm(&mut grad, c);
        }
        if let Some(l) = &mut self.lora {
            self.adam
                .step(&l.lora.layout, &mut l.theta, &grad, &lr, frozen);
            // The network's vector is rebuilt from the frozen base.
            l.lora.materialise(&l.base, &l.theta, &mut self.params);
        } else {
            let overrides: Vec<LrOverride> = match self.cfg.train.lr_variance_at(it) {
                Some(lr) => self
                    .net
                    .log_var_head_ranges()
                    .into_iter()
                    .map(|range| LrOverride { range, lr })
                    .collect(),
                None => Vec::new(),
            };
            self.adam.step_with_overrides(
                &self.net.layout,
                &mut self.params,
                &grad,
                &lr,
                frozen,
                &overrides,
            );
        }
        if self.params.iter().any(|p| !p.is_finite()) {
            return Err(TrainError::NonFinite {
                iteration: it,
                quantity: "parameters after the Adam step".into(),
            });
        }
        self.iteration += 1;
        Ok(CurveRow {
            iteration: it,
            loss: lg.loss,
            log_z: lg.log_z,
            explore_std: explore_std(self.cfg.train.exploration.as_ref(), it),
        })
    }

    /// [`Self::step`] on the GPU: one submission (rollout, loss, backward, clip, Adam), one
    /// readback of the loss, log Z, the non-finite count and the gradient norm. A non-finite
    /// value stops the run as on the CPU; the device has already applied that step's update,
    /// which no checkpoint ever records.
    #[cfg(feature = "gpu")]
    fn step_on_device(&mut self) -> Result<CurveRow, TrainError> {
        let it = self.iteration;
        let eps = explore_std(self.cfg.train.exploration.as_ref(), it);
        let (lr_policy, lr_flow) = (self.cfg.train.lr_policy_at(it), self.cfg.train.lr_flow);
        let lr = move |g: Group| match g {
            Group::Policy => lr_policy,
            Group::Flow => lr_flow,
        };
        let frozen = frozen_groups(self.cfg.train.method);
        let seed = self.cfg.seed;
        let dev = self.device.as_mut().expect("device trainer");
        let stats = dev
            .step(seed, it, eps, &mut self.adam.steps, &lr, frozen)
            .map_err(|e| TrainError::Device(e.to_string()))?;
        self.host_stale = true;
        let bad = |what: &str| {
            Err(TrainError::NonFinite {
                iteration: it,
                quantity: what.into(),
            })
        };
        if stats.non_finite > 0 {
            return bad("log p_F, log p_B or log R(x_T) of a trajectory (GPU)");
        }
        if !stats.loss.is_finite() {
            return bad("loss (GPU)");
        }
        if !stats.grad_norm.is_finite() {
            return bad("gradient norm (GPU)");
        }
        self.iteration += 1;
        Ok(CurveRow {
            iteration: it,
            loss: stats.loss,
            log_z: stats.log_z,
            explore_std: eps,
        })
    }

    /// Iteration `it`'s loss and gradient under the off-policy schedule (spec §4.1): forward
    /// iterations also fill the replay buffer; backward ones (odd `it`) first run local search
    /// when due, then train on p_B trajectories from states drawn from the local-search buffer
    /// (the replay buffer while that is empty). Without `off_policy`, every iteration is forward.
    fn off_policy_loss_and_grad(&mut self, it: usize) -> Result<(LossGrad, Vec<f32>), TrainError> {
        let Some(o) = self.cfg.train.off_policy.clone() else {
            return self.loss_and_grad(it);
        };
        let period = o.local_search.as_ref().map(|_| o.local_search_period);
        match offpolicy::phase(it, true, period) {
            Phase::Forward => {
                let conditions = self.forward_conditions(it);
                let source = Source::Forward(conditions.as_deref());
                let (lg, grad, x_t, log_r) = self.loss_and_grad_from(it, source)?;
                let (entries, entry_log_r) = match &conditions {
                    Some(images) => crate::conditional::best_of_repeats(
                        &x_t,
                        &log_r,
                        images,
                        self.cfg.train.batch,
                        self.sampler.dim,
                    ),
                    None => (x_t, log_r),
                };
                if let Some(buf) = self.replay.as_mut() {
                    buf.add(&entries, &entry_log_r);
                }
                Ok((lg, grad))
            }
            Phase::Backward { local_search } => {
                let seed = self.cfg.seed;
                let b = self.cfg.train.batch;
                let d = self.sampler.dim;
                let replay = self
                    .replay
                    .as_ref()
                    .expect("off-policy runs keep a replay buffer");
                if let (true, Some(ls)) = (local_search, &o.local_search) {
                    let (start, _) =
                        replay.sample_batch(b, &mut rng::stream(seed, "ls-start", it as u64));
                    let mut noise = rng::stream(seed, "local-search", it as u64);
                    // A conditional target's entries are [z | x] rows: MALA moves z with each
                    // chain's image fixed, and the samples are re-joined with their images.
                    let (z, images) = match self.vae {
                        Some(_) => {
                            let (z, x) = crate::conditional::split_entries(&start, d);
                            (z, Some(x))
                        }
                        None => (start, None),
                    };
                    let energy = self.batch_energy(images.as_deref());
                    let out = LocalSearch::new(ls.clone()).run(energy.get(), &z, &mut noise);
                    let (samples, log_r) = match &images {
                        Some(x) => (
                            crate::conditional::join_entries(
                                &out.samples,
                                &out.sample_chains,
                                x,
                                d,
                            ),
                            out.log_r,
                        ),
                        None => (out.samples, out.log_r),
                    };
                    if let Some(buf) = self.ls_replay.as_mut() {
                        buf.add(&samples, &log_r);
                    }
                }
                let source = match &self.ls_replay {
                    Some(buf) if !buf.is_empty() => buf,
                    _ => self.replay.as_ref().expect("replay buffer"),
                };
                let (drawn, _) =
                    source.sample_batch(b, &mut rng::stream(seed, "buffer-sample", it as u64));
                let backward = match &self.vae {
                    // R backward trajectories of each drawn (z, x), repeat-major like training.
                    Some(task) => {
                        let (z, images) = crate::conditional::split_entries(&drawn, d);
                        Source::Backward(
                            crate::conditional::tile(&z, task.repeats),
                            Some(crate::conditional::tile(&images, task.repeats)),
                        )
                    }
                    None => Source::Backward(drawn, None),
                };
                self.loss_and_grad_from(it, backward)
                    .map(|(lg, grad, _, _)| (lg, grad))
            }
        }
    }

    /// One shard's rollout with the current parameters, and log R of its terminal states.
    /// `cond` (`[rows, 784]`) conditions each row on its own image (the VAE posterior).
    fn rollout_rows(
        &self,
        rows: usize,
        path: Path<'_>,
        record: Record,
        cond: Option<&[f32]>,
    ) -> (Rollout<f32>, Vec<f64>) {
        let batch = self.batch_energy(cond);
        let energy = batch.get();
        // RTB's prior scores the same moves: it needs the states.
        let record = match (record, &self.prior) {
            (Record::Values, Some(_)) => Record::States,
            (r, _) => r,
        };
        let mut roll = rollout_recording::<f32>(
            &self.net,
            &self.params,
            &self.sampler,
            energy,
            rows,
            path,
            record,
            cond,
        );
        let mut log_r = vec![0f64; rows];
        energy.log_reward(&roll.x_final, &mut log_r);
        if let (Some(prior), Some(post)) = (&self.prior, &self.cfg.posterior) {
            // RTB (spec rtb2024 §1.1): the prior's log-likelihood of the same moves stands where
            // log p_B does, and β·log r where log R does, so every TB-shaped quantity (loss,
            // log-weights, ELBO) becomes its RTB counterpart.
            let plain = self.prior_sampler();
            // DPOK's training rollouts also need the prior's drifts at the same states.
            let dpok = record == Record::Graph && self.cfg.train.method == Method::Dpok;
            let mut scored = rollout_recording::<f32>(
                &self.net,
                prior,
                &plain,
                energy,
                rows,
                Path::Given(&roll.states),
                if dpok { Record::Drifts } else { Record::Values },
                cond,
            );
            roll.log_pb = scored.log_pf;
            roll.prior_step_drift = std::mem::take(&mut scored.step_drift);
            for v in &mut log_r {
                *v *= post.beta;
            }
        }
        (roll, log_r)
    }

    /// The energy of a batch conditioned on `cond` (`[rows, 784]`): the VAE scoring each row
    /// against its own image, or the target itself when there are no conditions.
    fn batch_energy<'a>(&'a self, cond: Option<&'a [f32]>) -> BatchEnergy<'a> {
        match (cond, &self.vae) {
            (Some(images), Some(task)) => {
                BatchEnergy::Conditioned(crate::conditional::ConditionedBatch {
                    energy: &task.energy,
                    images,
                })
            }
            (Some(states), None) => match &self.offline {
                Some(crate::conditional::OfflineTask::Bandit(task)) => {
                    BatchEnergy::Bandit(crate::conditional::BanditBatch {
                        bandit: &task.bandit,
                        states,
                    })
                }
                Some(crate::conditional::OfflineTask::Pendulum(task)) => {
                    BatchEnergy::Pendulum(crate::rl::task::PendulumBatch { task, states })
                }
                None => BatchEnergy::Target(&*self.energy),
            },
            _ => BatchEnergy::Target(&*self.energy),
        }
    }

    /// The conditions of rows `r` of a batch whose conditions are `all` (`[N, C]`).
    fn cond_rows<'a>(&self, all: Option<&'a [f32]>, r: &Range<usize>) -> Option<&'a [f32]> {
        let c = self.net.cond_dim.unwrap_or(0);
        all.map(|all| &all[r.start * c..r.end * c])
    }

    /// Trajectories per evaluation: `eval.samples`, or one per evaluation image (VAE).
    pub fn eval_rows(&self) -> usize {
        self.vae
            .as_ref()
            .map_or(self.cfg.eval.samples, |v| v.eval_count())
    }

    /// `n` on-policy trajectories from stream `key`: their log-weights
    /// log R(x_T) + LB − LF and their terminal states `[n, D]`.
    /// For the VAE posterior, row b is conditioned on evaluation image b (`n` must be
    /// [`Self::eval_rows`]); for an offline-RL target (bandit, Pendulum), row b on test state b mod M.
    pub fn sample_with_weights(&self, n: usize, key: [u8; 32]) -> (Vec<f64>, Vec<f32>) {
        let offline_states = self.offline.as_ref().map(|t| t.eval_conditions(n));
        let cond_all = match (&self.vae, &offline_states) {
            (Some(v), _) => {
                assert_eq!(n, v.eval_count(), "one VAE evaluation trajectory per image");
                Some(&v.eval[..])
            }
            (_, Some(states)) => Some(&states[..]),
            _ => None,
        };
        self.sample_with_conditions(n, cond_all, key)
    }

    /// [`Self::sample_with_weights`] with row b conditioned on row b of `cond_all` (`[n, C]`).
    pub fn sample_with_conditions(
        &self,
        n: usize,
        cond_all: Option<&[f32]>,
        key: [u8; 32],
    ) -> (Vec<f64>, Vec<f32>) {
        let shards = shard_ranges(n, self.cfg.train.shards);
        let parts = par_map(shards, &|r: Range<usize>| {
            let path = Path::Forward {
                noise_key: key,
                row0: r.start,
                total_rows: n,
                explore_std: 0.0,
            };
            let cond = self.cond_rows(cond_all, &r);
            let (roll, lr) = self.rollout_rows(r.len(), path, Record::Values, cond);
            (log_weights(&roll, &lr), roll.x_final)
        });
        let mut w = Vec::with_capacity(n);
        let mut x = Vec::with_capacity(n * self.sampler.dim);
        for (pw, px) in parts {
            w.extend(pw);
            x.extend(px);
        }
        (w, x)
    }

    /// Importance resampling: `n·pool` prior trajectories from stream `key`, and `n` of their
    /// terminal states drawn with replacement in proportion to r^β (the weights w = β log r +
    /// LP − LF, with LF = LP for the prior itself). Returns all n·pool log-weights (the log Z
    /// estimators use the whole pool) and the n drawn states.
    fn resampled(&self, n: usize, pool: usize, key: [u8; 32]) -> (Vec<f64>, Vec<f32>) {
        let d = self.sampler.dim;
        let (w, x) = self.sample_with_weights(n * pool, key);
        // An offline-RL target resamples within each test state (rows k ≡ m mod M share state m).
        let groups = self.offline.as_ref().map_or(1, |t| t.test_state_count());
        let cdfs: Vec<(Vec<usize>, Vec<f64>)> = (0..groups)
            .map(|m| {
                let members: Vec<usize> = (m..w.len()).step_by(groups).collect();
                let cdf = rng::exp_weight_cdf(members.iter().map(|&k| w[k]));
                (members, cdf)
            })
            .collect();
        let mut stream = rng::stream(self.cfg.seed, "resample", 0);
        let mut out = Vec::with_capacity(n * d);
        for j in 0..n {
            let (members, cdf) = &cdfs[j % groups];
            let k = members[rng::pick_from_cdf(cdf, &mut stream)];
            out.extend_from_slice(&x[k * d..(k + 1) * d]);
        }
        (w, out)
    }

    /// The sampler the frozen prior moves (and scores moves) with: the prior's own moves carry
    /// no guidance, and its step variances are the fixed ones even when the posterior learns
    /// its own.
    fn prior_sampler(&self) -> Sampler {
        Sampler {
            guidance: None,
            learned_range: None,
            ..self.sampler.clone()
        }
    }

    /// `n` samples `[n, D]` of the frozen prior itself (no guidance), from stream `key`.
    fn prior_samples(&self, prior: &[f32], n: usize, key: [u8; 32]) -> Vec<f32> {
        let plain = self.prior_sampler();
        let parts = par_map(shard_ranges(n, self.cfg.train.shards), &|r: Range<
            usize,
        >| {
            let path = Path::Forward {
                noise_key: key,
                row0: r.start,
                total_rows: n,
                explore_std: 0.0,
            };
            rollout_recording::<f32>(
                &self.net,
                prior,
                &plain,
                &*self.energy,
                r.len(),
                path,
                Record::Values,
                None,
            )
            .x_final
        });
        parts.concat()
    }

    /// The Fréchet distance to the real images of `classes` of the prior's class-conditional
    /// samples: those of 4·`n` prior samples that the classifier puts in an allowed class.
    fn prior_class_frechet(&self, n: usize, classes: &[u8]) -> Option<f64> {
        let prior = self.prior.as_ref()?;
        let key = rng::stream_key(self.cfg.seed, "prior-class-samples", 0);
        let pool = self.prior_samples(prior, 4 * n, key);
        let kept: Vec<f32> = pool
            .chunks_exact(self.sampler.dim)
            .filter(|row| {
                self.energy
                    .classify(row)
                    .is_some_and(|c| classes.contains(&(c as u8)))
            })
            .flatten()
            .copied()
            .collect();
        (kept.len() >= 2 * self.sampler.dim)
            .then(|| crate::energies::digits::frechet_to_real(&*self.energy, &kept))
    }

    /// EUBO = mean over exact samples x of log R(x) + LB − LF along τ ~ p_B(·|x).
    pub fn eubo(&self, exact: &[f32]) -> f64 {
        let d = self.sampler.dim;
        let n = exact.len() / d;
        let key = rng::stream_key(self.cfg.seed, "eubo-noise", 0);
        let parts = par_map(shard_ranges(n, self.cfg.train.shards), &|r: Range<
            usize,
        >| {
            let mut noise = <rand_chacha::ChaCha8Rng as rand_core::SeedableRng>::from_seed(key);
            let xt = &exact[r.start * d..r.end * d];
            let states = sample_backward_states(&self.sampler, xt, &mut noise, r.start, n);
            // x_T of a backward trajectory is the exact sample itself.
            let (roll, lr) = self.rollout_rows(r.len(), Path::Given(&states), Record::Values, None);
            log_weights(&roll, &lr)
        });
        let all: Vec<f64> = parts.into_iter().flatten().collect();
        all.iter().sum::<f64>() / n as f64
    }

    /// The cheap estimators on `eval.samples` fresh trajectories.
    pub fn evaluate_periodic(&self) -> EvalRow {
        let key = rng::stream_key(self.cfg.seed, "eval-noise", self.iteration as u64);
        let (w, _) = self.sample_with_weights(self.eval_rows(), key);
        let (log_z, log_z_rw) = metrics::log_z_estimates(&w);
        EvalRow {
            iteration: self.iteration,
            log_z,
            log_z_rw,
            elbo: log_z,
            ess: metrics::ess_normalised(&w),
        }
    }

    /// RTB's extra metrics for log-weights `w` of the final samples `x`: KL_traj =
    /// mean(β log r) − mean(w), as w = β log r + log p_θ − log p_φ.
    fn posterior_metrics(&self, w: &[f64], x: &[f32]) -> Option<PosteriorMetrics> {
        let post = self.cfg.posterior.as_ref()?;
        if self.cfg.train.method == Method::Resample {
            // Resampled states have no trajectory of their own.
            return None;
        }
        let mut lr = vec![0f64; w.len()];
        let states = self.offline.as_ref().map(|t| t.eval_conditions(w.len()));
        self.batch_energy(states.as_deref())
            .get()
            .log_reward(x, &mut lr);
        let n = w.len() as f64;
        let kl_traj = (lr.iter().map(|v| post.beta * v).sum::<f64>() - w.iter().sum::<f64>()) / n;
        Some(PosteriorMetrics {
            learned_log_z: (self.cfg.train.method == Method::Rtb).then(|| self.learned_log_z()),
            kl_traj,
        })
    }

    /// The final evaluation (spec §6): estimators, deltas, EUBO and W2 against exact samples.
    pub fn evaluate_final(&self) -> Result<FinalEval, TrainError> {
        crate::alloc_tuning::release_freed_memory();
        let n = self.eval_rows();
        let d = self.sampler.dim;
        let key = rng::stream_key(self.cfg.seed, "final-eval", 0);
        let (w, samples) = match (self.cfg.train.method, &self.cfg.posterior) {
            (Method::Resample, Some(p)) => self.resampled(n, p.pool(), key),
            _ => self.sample_with_weights(n, key),
        };
        if samples.iter().any(|v| !v.is_finite()) {
            return Err(TrainError::NonFinite {
                iteration: self.iteration,
                quantity: "final samples".into(),
            });
        }
        let (log_z, log_z_rw) = metrics::log_z_estimates(&w);
        let true_log_z = self.energy.log_z();
        let needs_exact = self.cfg.eval.w2 || self.cfg.eval.eubo;
        let exact = if needs_exact {
            self.energy
                .sample(n, &mut rng::stream(self.cfg.seed, "ground-truth", 0))
        } else {
            None
        };
        let w2 = match (&exact, self.cfg.eval.w2) {
            (Some(gt), true) => Some(metrics::w2_exact(&samples, gt, n, d)),
            _ => None,
        };
        let eubo = match (&exact, self.cfg.eval.eubo) {
            (Some(gt), true) => Some(self.eubo(gt)),
            _ => None,
        };
        let metrics = Metrics {
            log_z,
            log_z_rw,
            true_log_z,
            delta_log_z: true_log_z.map(|z| (z - log_z).abs()),
            delta_log_z_rw: true_log_z.map(|z| (z - log_z_rw).abs()),
            elbo: log_z,
            eubo,
            w2,
            ess: metrics::ess_normalised(&w),
            posterior: self.posterior_metrics(&w, &samples),
            modes: matches!(self.cfg.target, TargetConfig::Gmm25To9)
                .then(|| metrics::mode_stats(&samples)),
            classes: match &self.cfg.target {
                TargetConfig::Digits { classes, .. } => {
                    let mut stats =
                        crate::energies::digits::class_stats(&*self.energy, &samples, classes);
                    stats.prior_frechet = self.prior_class_frechet(n, classes);
                    Some(stats)
                }
                _ => None,
            },
            bandit: self
                .bandit()
                .map(|t| crate::energies::bandit::stats(&t.bandit, &t.test_states, &samples)),
            pendulum: self.pendulum().map(|t| {
                let policy = match (self.cfg.train.method, &self.cfg.posterior) {
                    (Method::Resample, Some(p)) => {
                        crate::rl::episodes::EpisodePolicy::Resample { pool: p.pool() }
                    }
                    _ => crate::rl::episodes::EpisodePolicy::Diffusion,
                };
                let mut stats = t.stats(&self.episode_returns(policy));
                if let Some((mean, spread)) = t.q_stats(&samples) {
                    stats.mean_q = Some(mean);
                    stats.q_spread = Some(spread);
                }
                // The prior run's critic brings IQL's own policy, the AWR baseline.
                if self.cfg.posterior.is_none() && t.critic.is_some() {
                    let awr = self.episode_returns(crate::rl::episodes::EpisodePolicy::Awr);
                    stats.awr_score = Some(t.stats(&awr).score);
                }
                stats
            }),
        };
        Ok(FinalEval {
            metrics,
            samples,
            dim: d,
        })
    }
}

/// Train `cfg` to the end and evaluate; `progress` is called after every iteration.
pub fn run(cfg: &ExperimentConfig, progress: &mut dyn FnMut(&Progress)) -> RunRecord {
    run_from(cfg, None, None, 0, &mut ProgressOnly(progress))
}

/// What a posterior takes from its prior run: the prior's parameters and, for the Pendulum,
/// the critic trained beside it.
#[derive(Clone, Debug, PartialEq)]
pub struct PriorRun {
    pub params: Vec<f32>,
    pub critic: Option<Vec<f32>>,
}

/// Train `cfg` from scratch or from `resume`, handing a checkpoint to `hooks` every
/// `checkpoint_every` iterations (0: never) and whenever a stop is requested. A resumed run
/// produces exactly the records an uninterrupted one does: the trainer state is restored bit
/// for bit and all randomness is keyed by the iteration number. `prior`: an RTB run's prior
/// run ([`Trainer::with_prior`], [`Trainer::attach_critic`]). A Pendulum prior trains its
/// critic after its last iteration (not checkpointed: an interrupted critic starts over) and
/// returns it in [`RunRecord::critic`].
pub fn run_from(
    cfg: &ExperimentConfig,
    prior: Option<PriorRun>,
    resume: Option<Checkpoint>,
    checkpoint_every: usize,
    hooks: &mut dyn RunHooks,
) -> RunRecord {
    let mut rec = RunRecord {
        curve: Vec::new(),
        evals: Vec::new(),
        final_eval: None,
        failure: None,
        interrupted_at: None,
        last_checkpoint: None,
        params: None,
        critic: None,
    };
    let (params, critic) = match prior {
        Some(p) => (Some(p.params), p.critic),
        None => (None, None),
    };
    let started = match resume {
        None => Trainer::with_prior(cfg, params),
        Some(ck) => Trainer::restore_with_prior(cfg, &ck, params).inspect(|t| {
            rec.curve = ck.curve;
            rec.evals = ck.evals;
            rec.last_checkpoint = Some(t.iteration);
        }),
    };
    let started = started.and_then(|mut t| {
        if let Some(c) = &critic {
            t.attach_critic(c)?;
        }
        if t.needs_critic() {
            return Err(TrainError::Invalid(
                "a Pendulum posterior scores actions with its prior run's critic (critic.npy), \
                 and none was given"
                    .into(),
            ));
        }
        Ok(t)
    });
    let mut tr = match started {
        Ok(t) => t,
        Err(e) => {
            rec.failure = Some(e);
            return rec;
        }
    };
    let total = tr.total_iterations();
    let every = cfg.eval.every;
    while tr.iteration < total {
        match tr.step() {
            Ok(row) => {
                hooks.progress(&Progress {
                    iteration: row.iteration + 1,
                    total,
                    loss: row.loss,
                    log_z: row.log_z,
                });
                rec.curve.push(row);
            }
            Err(e) => {
                rec.failure = Some(e);
                return rec;
            }
        }
        if every > 0 && tr.iteration % every == 0 && tr.iteration < total {
            if let Err(e) = tr.sync_from_device() {
                rec.failure = Some(e);
                return rec;
            }
            rec.evals.push(tr.evaluate_periodic());
        }
        let due =
            checkpoint_every > 0 && tr.iteration % checkpoint_every == 0 && tr.iteration < total;
        let stop = hooks.stop_requested();
        if due || stop {
            if let Err(e) = tr.sync_from_device() {
                rec.failure = Some(e);
                return rec;
            }
            let ck = tr.checkpoint(&rec.curve, &rec.evals);
            if let Err(message) = hooks.checkpoint(&ck) {
                rec.failure = Some(TrainError::Checkpoint {
                    iteration: tr.iteration,
                    message,
                });
                return rec;
            }
            rec.last_checkpoint = Some(tr.iteration);
        }
        if stop && tr.iteration < total {
            rec.interrupted_at = Some(tr.iteration);
            return rec;
        }
    }
    if let Err(e) = tr.sync_from_device() {
        rec.failure = Some(e);
        return rec;
    }
    if tr.trains_critic() {
        match tr.train_critic() {
            Ok(c) => rec.critic = Some(c),
            Err(e) => {
                rec.failure = Some(e);
                return rec;
            }
        }
    }
    match tr.evaluate_final() {
        Ok(f) => {
            rec.evals.push(EvalRow {
                iteration: tr.iteration,
                log_z: f.metrics.log_z,
                log_z_rw: f.metrics.log_z_rw,
                elbo: f.metrics.elbo,
                ess: f.metrics.ess,
            });
            rec.final_eval = Some(f);
            rec.params = Some(tr.params.clone());
        }
        Err(e) => rec.failure = Some(e),
    }
    rec
}
