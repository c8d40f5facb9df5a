//! `repro run CONFIG.ron`: train one config and write its run folder.
//!
//! [`build_run`] is shared with `repro verify`: it writes every file of a run into a staging
//! folder and returns the manifest; `run` then moves the folder into place, `verify` compares it.

use crate::error::CliError;
use crate::manifest::{self, Manifest, Status};
use crate::npy;
use crate::progress::Reporter;
use crate::record;
use crate::run_dir::{self, Staging};
use diffusion_samplers::config::ExperimentConfig;
use diffusion_samplers::train;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The experiment config (RON).
    pub config: PathBuf,
    /// Run folder to create [default: runs/<config file stem>-seed<seed>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Override the config's seed; the run folder records the seed actually used.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Replace an existing run folder (the old one is removed only after the new one is in place).
    #[arg(long)]
    pub force: bool,
    /// No progress on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

/// What [`build_run`] produced besides the files.
pub struct Built {
    pub manifest: Manifest,
    /// The `metrics.json` text, when the run completed.
    pub metrics_json: Option<String>,
}

/// `runs/<config file stem>-seed<seed>`.
pub fn default_out(config: &Path, seed: u64) -> PathBuf {
    let stem = config.file_stem().map(|s| s.to_string_lossy().into_owned());
    PathBuf::from("runs").join(format!("{}-seed{seed}", stem.as_deref().unwrap_or("run")))
}

/// Train `cfg` and write all run files (config, curve, evals, metrics, samples, manifest) into
/// `staging`. A training failure is not an error here: it is recorded in the manifest
/// (status "failed") with whatever files exist.
pub fn build_run(
    cfg: &ExperimentConfig,
    staging: &Staging,
    reporter: &mut Reporter,
) -> Result<Built, CliError> {
    let start = Instant::now();
    let mut files = BTreeMap::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<(), CliError> {
        staging.write(name, bytes)?;
        files.insert(name.to_string(), manifest::digest(bytes));
        Ok(())
    };

    put(manifest::CONFIG, cfg.to_ron().as_bytes())?;
    let rec = train::run(cfg, &mut |p| reporter.update(p));
    reporter.finish();
    put(manifest::CURVE, record::curve_csv(&rec.curve).as_bytes())?;
    put(manifest::EVALS, record::evals_csv(&rec.evals).as_bytes())?;

    let mut failure = rec.failure.map(|e| e.to_string());
    let mut metrics_json = None;
    let mut samples: Option<(Vec<f32>, usize)> = None;
    if failure.is_none() {
        match rec.final_eval {
            None => failure = Some("training returned no final evaluation".to_string()),
            Some(fe) if fe.dim == 0 || fe.samples.len() % fe.dim != 0 => {
                failure = Some(format!(
                    "final evaluation returned {} sample values, not a multiple of D = {}",
                    fe.samples.len(),
                    fe.dim
                ))
            }
            Some(fe) => {
                let text = record::metrics_json(&fe.metrics);
                put(manifest::METRICS, text.as_bytes())?;
                let rows = fe.samples.len() / fe.dim;
                put(
                    manifest::SAMPLES,
                    &npy::encode_f32(rows, fe.dim, &fe.samples),
                )?;
                metrics_json = Some(text);
                samples = Some((fe.samples, fe.dim));
            }
        }
    }
    let figures = crate::plot::write_figures(
        staging.path(),
        cfg,
        &rec.curve,
        &rec.evals,
        samples.as_ref().map(|(x, d)| (x.as_slice(), *d)),
    )?;

    let manifest = Manifest {
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
        config_digest: cfg.digest(),
        seed: cfg.seed,
        status: if failure.is_some() {
            Status::Failed
        } else {
            Status::Complete
        },
        failure,
        files,
        wall_seconds: start.elapsed().as_secs_f64(),
        paper: cfg.paper.clone(),
        figures,
    };
    staging.write(manifest::MANIFEST, manifest.to_json().as_bytes())?;
    Ok(Built {
        manifest,
        metrics_json,
    })
}

pub fn cmd_run(args: RunArgs) -> Result<ExitCode, CliError> {
    let mut cfg = ExperimentConfig::load(&args.config)?;
    if let Some(seed) = args.seed {
        cfg.seed = seed;
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.config, cfg.seed));
    // Refuse before spending time training.
    run_dir::check_target(&out, args.force)?;
    let staging = Staging::new_for(&out)?;

    let mut reporter = Reporter::new("train", args.quiet);
    let built = build_run(&cfg, &staging, &mut reporter)?;
    staging.commit(&out, args.force)?;

    if let Some(msg) = &built.manifest.failure {
        return Err(CliError::train(format!(
            "training failed: {msg}\npartial run (status \"failed\") written to {}",
            out.display()
        )));
    }
    let metrics = built.metrics_json.unwrap_or_default();
    crate::emit(&metrics);
    if !args.quiet {
        eprintln!(
            "run written to {} ({:.1} s)",
            out.display(),
            built.manifest.wall_seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::default_out;
    use std::path::{Path, PathBuf};

    #[test]
    fn default_out_uses_stem_and_seed() {
        assert_eq!(
            default_out(Path::new("paper-configs/sendera2024/gmm25_tb.ron"), 7),
            PathBuf::from("runs/gmm25_tb-seed7")
        );
    }
}
