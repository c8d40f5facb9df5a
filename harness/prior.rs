//! The prior run of an RTB posterior (`posterior.prior`): found by config digest under
//! `<out's parent>/priors/`, trained first when missing, and loaded with its digests checked.

use crate::error::CliError;
use crate::manifest::{self, Manifest, Status};
use crate::run::{self, Job};
use crate::run_dir::{self, Staging};
use diffusion_samplers::config::{ExperimentConfig, Method, TargetConfig};
use diffusion_samplers::data::npy;
use diffusion_samplers::train::PriorRun;
use std::path::{Path, PathBuf};

/// The trained parameters of a run (`[1, P]` f32), written by every completed run.
pub const PARAMS: &str = "params.npy";

/// A Pendulum prior run's IQL critic (`[1, P_critic]` f32), which its posteriors score with.
pub const CRITIC: &str = "critic.npy";

/// Where the prior with config digest `digest` lives for a posterior run written to `out`:
/// `<out's parent>/priors/<digest, 16 hex digits>`, shared by every seed and posterior.
pub fn prior_dir(out: &Path, digest: &str) -> PathBuf {
    let parent = out.parent().unwrap_or(Path::new("."));
    parent.join("priors").join(&digest[..digest.len().min(16)])
}

/// The prior run `cfg` needs (its parameters, and the critic where it saved one), or `None`
/// when it is not a posterior. A missing prior is
/// trained first from its config (resolved against `config_file`'s folder), which must have
/// the digest the posterior names; without `config_file` (a resume) a missing prior is an
/// error.
pub fn ensure_prior(
    cfg: &ExperimentConfig,
    config_file: Option<&Path>,
    out: &Path,
    quiet: bool,
) -> Result<Option<PriorRun>, CliError> {
    let Some(post) = &cfg.posterior else {
        return Ok(None);
    };
    let digest = &post.prior.digest;
    let dir = prior_dir(out, digest);
    if !dir.join(manifest::MANIFEST).exists() {
        let Some(file) = config_file else {
            return Err(CliError::usage(format!(
                "the prior run {} (config digest {digest}) is missing; `repro run` the \
                 posterior's config to train it",
                dir.display()
            )));
        };
        let path = file
            .parent()
            .unwrap_or(Path::new("."))
            .join(&post.prior.config);
        let prior = ExperimentConfig::load(&path)?;
        check_prior(cfg, &prior, &path)?;
        if !quiet {
            eprintln!(
                "training the prior {} first ({})",
                path.display(),
                dir.display()
            );
        }
        let code = if run_dir::partial_path(&dir)?.exists() {
            run::resume_run(&dir, quiet, None, false)?
        } else {
            let job = Job {
                cfg: &prior,
                config_file: Some(&path),
                emit_metrics: false,
                out: &dir,
                force: false,
                quiet,
                checkpoint_every: None,
            };
            run::execute(&job, Staging::new_partial(&dir, false)?, None)?
        };
        // Interrupted (Ctrl-C / SIGTERM): the prior checkpointed, the posterior has not started.
        if code != std::process::ExitCode::SUCCESS {
            return Err(CliError {
                code: run::INTERRUPTED,
                message: format!(
                    "the prior run {} was interrupted before this posterior started; run the \
                     posterior again to resume the prior from its checkpoint",
                    dir.display()
                ),
            });
        }
    } else {
        // An existing prior run is checked against the posterior too, from the resolved
        // config it recorded, so a mismatch is refused before anything is written.
        let path = dir.join(manifest::CONFIG);
        let prior = ExperimentConfig::load(&path)?;
        check_prior(cfg, &prior, &path)?;
    }
    load_prior_run(&dir, digest).map(Some)
}

/// The prior config must have the digest the posterior names, be a prior (not itself RTB) and
/// share the posterior's network and sampler (the posterior starts as its copy).
fn check_prior(
    post: &ExperimentConfig,
    prior: &ExperimentConfig,
    path: &Path,
) -> Result<(), CliError> {
    let want = &post.posterior.as_ref().expect("a posterior").prior.digest;
    let got = prior.digest();
    if &got != want {
        return Err(CliError::usage(format!(
            "posterior.prior.digest is {want}, but {} has digest {got} (edited since? put the new \
             digest in the posterior's config to use it)",
            path.display()
        )));
    }
    if prior.train.method == Method::Rtb {
        return Err(CliError::usage(format!(
            "{}: a prior cannot itself be an RTB posterior",
            path.display()
        )));
    }
    if let (
        TargetConfig::Pendulum {
            dataset: d1,
            data_episodes: e1,
            data_seed: s1,
            iql: q1,
            action: a1,
            ..
        },
        TargetConfig::Pendulum {
            dataset: d2,
            data_episodes: e2,
            data_seed: s2,
            iql: q2,
            action: a2,
            ..
        },
    ) = (&prior.target, &post.target)
    {
        if (d1, e1, s1, q1, a1) != (d2, e2, s2, q2, a2) {
            return Err(CliError::usage(format!(
                "{}: a Pendulum posterior trains on its prior's dataset and critic, in its action \
                 space: target.dataset, target.data_episodes, target.data_seed, target.iql and \
                 target.action must equal the prior's",
                path.display()
            )));
        }
    }
    // A posterior may add a Langevin term and a learned step variance (both starting at the
    // prior's) to its copy of the prior.
    if prior.network.langevin
        || prior.network != post.network.without_langevin()
        || prior.sampler.learned_variance
        || prior.sampler != post.sampler.without_learned_variance()
        || prior.dim() != post.dim()
    {
        return Err(CliError::usage(format!(
            "{}: the prior's network, sampler and dimension must equal the posterior's, up to \
             the posterior's Langevin term and learned variance (it starts as a copy of the \
             prior)",
            path.display()
        )));
    }
    Ok(())
}

/// The prior run in `dir` (complete, of config digest `digest`): its parameters, and its critic
/// when it saved one, each checked against the digest its manifest records (read once).
pub fn load_prior_run(dir: &Path, digest: &str) -> Result<PriorRun, CliError> {
    let mpath = dir.join(manifest::MANIFEST);
    let text = std::fs::read_to_string(&mpath).map_err(|e| CliError::io("read", &mpath, e))?;
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| CliError::usage(format!("{}: {e}", mpath.display())))?;
    if m.status != Status::Complete || m.config_digest != digest {
        return Err(CliError::usage(format!(
            "{} is not a complete run of config digest {digest} (status {}, digest {})",
            dir.display(),
            m.status.as_str(),
            m.config_digest
        )));
    }
    let params = load_checked(dir, &m, PARAMS)?.ok_or_else(|| {
        CliError::usage(format!(
            "{}: the complete run has no {PARAMS} in its manifest",
            dir.display()
        ))
    })?;
    let critic = load_checked(dir, &m, CRITIC)?;
    Ok(PriorRun { params, critic })
}

/// The f32 array `name` of the run in `dir`, checked against the digest its manifest `m`
/// records; `None` when the manifest lists no such file.
fn load_checked(dir: &Path, m: &Manifest, name: &str) -> Result<Option<Vec<f32>>, CliError> {
    let Some(want) = m.files.get(name) else {
        return Ok(None);
    };
    let ppath = dir.join(name);
    let bytes = std::fs::read(&ppath).map_err(|e| CliError::io("read", &ppath, e))?;
    if want != &manifest::digest(&bytes) {
        return Err(CliError::usage(format!(
            "{}: its digest does not match the run's manifest (modified?)",
            ppath.display()
        )));
    }
    let arr =
        npy::decode(&bytes).map_err(|e| CliError::usage(format!("{}: {e}", ppath.display())))?;
    Ok(Some(arr.data))
}
