//! `repro score RUN_DIR [--episodes N]`: a Pendulum run's policies scored again over N
//! evaluation episodes instead of the run's own few (its config's `episodes`, 10 as the
//! paper's D4RL protocol). The run's own episodes are the first of the N (episode k starts
//! from stream (seed, "pendulum-episode", k)), so every row is paired: the run's diffusion
//! policy (the BC prior or the posterior), IQL's AWR policy where the run has the critic, and
//! the dataset's own behaviour policies from the same initial states. Ten episodes of a
//! policy whose episodes either balance or fail leave its score uncertain by ±10–15 points,
//! and the initial states of a seed's ten move every policy's score together: the behaviour
//! that made the medium dataset scores 6 on seed 12345's ten and 51 on its first hundred.
//! Reads the run (and a posterior's prior run) with digests checked; writes nothing.

use crate::error::CliError;
use crate::manifest;
use crate::prior::{ensure_prior, load_prior_run};
use diffusion_samplers::config::{ExperimentConfig, Method, TargetConfig};
use diffusion_samplers::rl::episodes::EpisodePolicy;
use diffusion_samplers::rl::pendulum::DatasetKind;
use diffusion_samplers::rl::pendulum::{behaviour_returns, dataset_behaviours};
use diffusion_samplers::rl::task::PendulumTask;
use diffusion_samplers::train::Trainer;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// A complete Pendulum run folder: a BC prior, or a posterior beside its `priors/` folder.
    pub run_dir: PathBuf,
    /// Evaluation episodes per policy (the run's own are the first of them).
    #[arg(long, default_value_t = 100)]
    pub episodes: usize,
    /// Start from this seed's initial states instead of the run's own (the policy's noise
    /// follows it too): scores a prior on the states of each of its posteriors' seeds.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// One table row from the raw returns of all N episodes and of the run's own first few:
/// the task's normalised mean and population std ([`PendulumTask::stats`]), and the standard
/// error of the mean, sd/√(N − 1) (the sample std over √N).
fn row(task: &PendulumTask, name: &str, all: &[f64], own: &[f64]) -> String {
    let (a, o) = (task.stats(all), task.stats(own));
    let se = if all.len() > 1 {
        a.score_std / ((all.len() - 1) as f64).sqrt()
    } else {
        f64::NAN
    };
    format!(
        "| {name} | {} | {:.1} | {:.1} | {se:.1} | {:.1} ± {:.1} |\n",
        all.len(),
        a.score,
        a.score_std,
        o.score,
        o.score_std
    )
}

/// A Pendulum run loaded for re-evaluation: its resolved config (seed replaced by `--seed`),
/// a trainer with the run's parameters and the critic attached where there is one, and the
/// prior's parameters for a posterior.
pub struct PendulumRun {
    pub cfg: ExperimentConfig,
    pub own_seed: u64,
    pub tr: Trainer,
    pub prior_params: Option<Vec<f32>>,
    pub dataset: DatasetKind,
    pub data_episodes: usize,
}

/// Load the Pendulum run in `dir` (a BC prior, or a posterior beside its `priors/` folder),
/// digests checked; `command` names the command in the refusal of any other run.
pub fn load_pendulum_run(
    dir: &Path,
    seed: Option<u64>,
    command: &str,
) -> Result<PendulumRun, CliError> {
    let mut cfg = ExperimentConfig::load(&dir.join(manifest::CONFIG))?;
    let TargetConfig::Pendulum {
        dataset,
        data_episodes,
        ..
    } = cfg.target
    else {
        return Err(CliError::usage(format!(
            "{}: `repro {command}` reads Pendulum runs (target Pendulum)",
            dir.display()
        )));
    };
    let run = load_prior_run(dir, &cfg.digest())?;
    // The seed keys the episodes' initial states and the policies' noise only; the
    // parameters come from the run's files.
    let own_seed = cfg.seed;
    if let Some(seed) = seed {
        cfg.seed = seed;
    }
    let bad = |e: diffusion_samplers::train::TrainError| CliError::usage(format!("{e}"));
    let (mut tr, critic, prior_params) = match ensure_prior(&cfg, None, dir, true)? {
        Some(prior) => (
            Trainer::with_prior(&cfg, Some(prior.params.clone())).map_err(bad)?,
            prior.critic,
            Some(prior.params),
        ),
        None => (Trainer::new(&cfg).map_err(bad)?, run.critic, None),
    };
    tr.set_params(run.params);
    if let Some(c) = &critic {
        tr.attach_critic(c).map_err(bad)?;
    }
    Ok(PendulumRun {
        cfg,
        own_seed,
        tr,
        prior_params,
        dataset,
        data_episodes,
    })
}

/// The policy a run's own evaluation episodes act with, and its name in the tables.
pub fn run_policy(cfg: &ExperimentConfig) -> (EpisodePolicy, String) {
    match (cfg.train.method, &cfg.posterior) {
        (Method::Resample, Some(p)) => (
            EpisodePolicy::Resample { pool: p.pool() },
            "the run's policy (resampling)".to_string(),
        ),
        (Method::EpsMse, _) => (EpisodePolicy::Diffusion, "the BC prior".to_string()),
        (m, _) => (
            EpisodePolicy::Diffusion,
            format!("the run's policy ({m:?})"),
        ),
    }
}

pub fn cmd_score(args: ScoreArgs) -> Result<ExitCode, CliError> {
    let dir = &args.run_dir;
    if args.episodes == 0 {
        return Err(CliError::usage("--episodes must be at least 1".to_string()));
    }
    let PendulumRun {
        cfg,
        own_seed,
        tr,
        dataset,
        data_episodes,
        ..
    } = load_pendulum_run(dir, args.seed, "score")?;
    let task = tr.pendulum().expect("a Pendulum target");
    let own_n = task.episodes;
    let (policy, name) = run_policy(&cfg);
    let states = if cfg.seed == own_seed {
        format!(
            "Seed {own_seed}; every policy starts from the same initial states, and the run's \
             own {own_n} episodes are the first {own_n} of them."
        )
    } else {
        format!(
            "Seed {} (the run's own is {own_seed}); every policy starts from the same initial \
             states, those of seed {}'s first episodes.",
            cfg.seed, cfg.seed
        )
    };
    let mut out = format!(
        "# {}: scores over {} evaluation episodes\n\n{states} \
         Scores are normalised (100 · (R − R_random)/(R_expert − R_random)); sd is over \
         episodes, se the standard error of the mean.\n\n| policy | N | score | sd | se | its \
         first {own_n} (mean ± sd) |\n|---|---|---|---|---|---|\n",
        dir.display(),
        args.episodes,
    );
    let all = tr.scored_episodes(policy, args.episodes, None);
    let own = tr.scored_episodes(policy, own_n, None);
    out.push_str(&row(task, &name, &all, &own));
    if task.critic.is_some() {
        let all = tr.scored_episodes(EpisodePolicy::Awr, args.episodes, None);
        out.push_str(&row(
            task,
            "IQL's AWR policy",
            &all,
            &all[..own_n.min(all.len())],
        ));
    }
    // The data's own policy: every dataset episode's behaviour, each over the same episodes,
    // averaged per episode (the mixture the dataset samples; the score is affine in the
    // return, so averaging returns averages scores).
    let behaviours = dataset_behaviours(dataset, data_episodes);
    let mut data = vec![0.0; args.episodes];
    for (j, b) in behaviours.iter().enumerate() {
        let r = behaviour_returns(b, cfg.seed, args.episodes, &format!("score-behaviour/{j}"));
        for (d, x) in data.iter_mut().zip(r) {
            *d += x / behaviours.len() as f64;
        }
    }
    out.push_str(&row(
        task,
        &format!(
            "the dataset's behaviour ({} episode policies)",
            behaviours.len()
        ),
        &data,
        &data[..own_n.min(data.len())],
    ));
    crate::emit(&out);
    Ok(ExitCode::SUCCESS)
}
