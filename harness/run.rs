//! `repro run CONFIG.ron`: train one config and write its run folder.
//!
//! [`build_run`] is shared with `repro verify`: it writes every file of a run into a staging
//! folder and returns the manifest; `run` then moves the folder into place, `verify` compares it.

use crate::error::CliError;
use crate::manifest::{self, Manifest, Status};
use crate::progress::Reporter;
use crate::record;
use crate::run_dir::{self, Staging};
use diffusion_samplers::checkpoint::{self, Checkpoint};
use diffusion_samplers::config::{Backend, ExperimentConfig, DEFAULT_CHECKPOINT_EVERY};
use diffusion_samplers::data::npy;
use diffusion_samplers::train::{self, Progress, RunHooks, RunRecord};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The experiment config (RON), or a folder of configs to sweep (with --shard / --seeds).
    pub config: PathBuf,
    /// Run folder to create [default: runs/<config file stem>-seed<seed>]; for a sweep, the
    /// folder under which each run gets `<config path>-seed<seed>` [default: runs].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Sweep only slice I of N (0 ≤ I < N) of the (config × seed) jobs: job j runs on shard
    /// j mod N, so a scheduler's array of N tasks covers every job exactly once.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<(usize, usize)>,
    /// Sweep each config over seeds seed, seed+1, …, seed+K−1 (the paper uses 5).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub seeds: usize,
    /// Iterations between checkpoints [default: the config's, else 5000].
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<usize>,
    /// Override the config's seed; the run folder records the seed actually used.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Train on `cpu`, `gpu` (WGSL kernels; an error without an adapter) or `auto` (a hardware
    /// GPU when present, else the CPU) [default: the config's `backend`, else cpu]. The run
    /// folder's config records the backend that ran.
    #[arg(long, value_name = "cpu|gpu|auto", value_parser = Backend::parse)]
    pub backend: Option<Backend>,
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

/// Applies `--backend` and resolves `auto` (saying why it chose the CPU); a requested GPU that
/// is missing or cannot run the config is an error naming the problem.
pub fn choose_backend(
    cfg: &mut ExperimentConfig,
    backend: Option<Backend>,
    quiet: bool,
) -> Result<(), CliError> {
    if let Some(b) = backend {
        cfg.backend = b;
    }
    let why = train::resolve_backend(cfg).map_err(|e| CliError::usage(e.to_string()))?;
    if let (Some(why), false) = (why, quiet) {
        eprintln!("backend auto: training on the CPU ({why})");
    }
    Ok(())
}

/// The adapter a GPU run trained on (results are bitwise reproducible per device only).
fn device_description(cfg: &ExperimentConfig) -> Option<String> {
    #[cfg(feature = "gpu")]
    if cfg.backend == Backend::Gpu {
        return diffusion_samplers::gpu::GpuContext::shared()
            .ok()
            .map(|c| c.describe());
    }
    let _ = cfg;
    None
}

/// `runs/<config file stem>-seed<seed>`.
pub fn default_out(config: &Path, seed: u64) -> PathBuf {
    let stem = config.file_stem().map(|s| s.to_string_lossy().into_owned());
    PathBuf::from("runs").join(format!("{}-seed{seed}", stem.as_deref().unwrap_or("run")))
}

/// Train `cfg` from scratch and write all run files into `staging` (used by `verify`, which
/// replays into a throwaway folder with no checkpoints).
pub fn build_run(
    cfg: &ExperimentConfig,
    prior: Option<train::PriorRun>,
    staging: &Staging,
    reporter: &mut Reporter,
) -> Result<Built, CliError> {
    let start = Instant::now();
    staging.write(manifest::CONFIG, cfg.to_ron().as_bytes())?;
    let mut hooks = train::ProgressOnly(&mut |p: &Progress| reporter.update(p));
    let rec = train::run_from(cfg, prior, None, 0, &mut hooks);
    reporter.finish();
    write_outputs(cfg, staging, rec, start, None)
}

/// Write the result files of a finished or failed run and its manifest. A training failure is
/// not an error here: it is recorded in the manifest (status "failed") with whatever files
/// exist, naming the last good checkpoint when there is one (`final_dir` is where the folder
/// will live).
fn write_outputs(
    cfg: &ExperimentConfig,
    staging: &Staging,
    rec: RunRecord,
    start: Instant,
    final_dir: Option<&Path>,
) -> Result<Built, CliError> {
    let mut files = BTreeMap::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<(), CliError> {
        staging.write(name, bytes)?;
        files.insert(name.to_string(), manifest::digest(bytes));
        Ok(())
    };
    put(manifest::CONFIG, cfg.to_ron().as_bytes())?;
    put(manifest::CURVE, record::curve_csv(&rec.curve).as_bytes())?;
    put(manifest::EVALS, record::evals_csv(&rec.evals).as_bytes())?;
    if let Some(p) = &rec.params {
        put(crate::prior::PARAMS, &npy::encode_f32(1, p.len(), p))?;
    }
    if let Some(c) = &rec.critic {
        put(crate::prior::CRITIC, &npy::encode_f32(1, c.len(), c))?;
    }

    let mut failure = rec.failure.map(|e| e.to_string());
    if let (Some(msg), Some(n), Some(dir)) = (failure.as_mut(), rec.last_checkpoint, final_dir) {
        let at = dir.join(CHECKPOINT);
        msg.push_str(&format!(
            "; last good checkpoint: iteration {n} ({})",
            at.display()
        ));
    }
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
    if failure.is_none() {
        // A finished run needs no checkpoint; a failed one keeps its last good one.
        staging.remove(CHECKPOINT)?;
    }
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
        device: device_description(cfg),
    };
    staging.write(manifest::MANIFEST, manifest.to_json().as_bytes())?;
    Ok(Built {
        manifest,
        metrics_json,
    })
}

/// The checkpoint file inside a run's `.partial` folder (kept in a failed run's folder).
pub const CHECKPOINT: &str = "checkpoint.bin";

/// Exit code of a run stopped by SIGINT/SIGTERM (128 + SIGINT, the shell convention).
pub const INTERRUPTED: u8 = 130;

/// Set by the first SIGINT or SIGTERM; a second one ends the process at once.
fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Order matters: the conditional shutdown sees the flag set by an earlier signal.
            let _ = signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&flag));
            let _ = signal_hook::flag::register(sig, Arc::clone(&flag));
        }
        flag
    })
    .clone()
}

/// Progress on stderr, checkpoints into the staging folder, and the Ctrl-C flag.
struct HarnessHooks<'a> {
    reporter: &'a mut Reporter,
    staging: &'a Staging,
    stop: Arc<AtomicBool>,
}

impl RunHooks for HarnessHooks<'_> {
    fn progress(&mut self, p: &Progress) {
        self.reporter.update(p);
    }
    fn checkpoint(&mut self, ck: &Checkpoint) -> Result<(), String> {
        self.staging
            .write(CHECKPOINT, &ck.encode())
            .map_err(|e| e.message)
    }
    fn stop_requested(&mut self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// How one run is started.
pub struct Job<'a> {
    pub cfg: &'a ExperimentConfig,
    /// The config file the run started from: an RTB posterior's prior config is found beside
    /// it (`None` on resume, when the prior must already exist).
    pub config_file: Option<&'a Path>,
    /// Print the metrics JSON on stdout when done (not for a prior trained on the way to its
    /// posterior: stdout carries the posterior's metrics only).
    pub emit_metrics: bool,
    pub out: &'a Path,
    pub force: bool,
    pub quiet: bool,
    pub checkpoint_every: Option<usize>,
}

/// Train (or resume) one run in its `.partial` folder and move the result into place.
/// Interrupted runs stay in `.partial` with a checkpoint and return exit code 130.
pub fn execute(
    job: &Job,
    staging: Staging,
    resume: Option<Checkpoint>,
) -> Result<ExitCode, CliError> {
    let start = Instant::now();
    let cfg = job.cfg;
    if resume.is_none() {
        staging.write(manifest::CONFIG, cfg.to_ron().as_bytes())?;
    }
    let every = job
        .checkpoint_every
        .or(cfg.checkpoint_every)
        .unwrap_or(DEFAULT_CHECKPOINT_EVERY);
    let prior = crate::prior::ensure_prior(cfg, job.config_file, job.out, job.quiet)?;
    let mut reporter = Reporter::new("train", job.quiet);
    let mut hooks = HarnessHooks {
        reporter: &mut reporter,
        staging: &staging,
        stop: stop_flag(),
    };
    let rec = train::run_from(cfg, prior, resume, every, &mut hooks);
    reporter.finish();
    if let Some(at) = rec.interrupted_at {
        let where_ = staging.path().join(CHECKPOINT);
        staging.keep_for_resume();
        eprintln!(
            "interrupted after iteration {at}: checkpoint written to {}\nresume with: repro resume {}",
            where_.display(),
            job.out.display()
        );
        return Ok(ExitCode::from(INTERRUPTED));
    }
    let built = write_outputs(cfg, &staging, rec, start, Some(job.out))?;
    staging.commit(job.out, job.force)?;
    if let Some(msg) = &built.manifest.failure {
        return Err(CliError::train(format!(
            "training failed: {msg}\npartial run (status \"failed\") written to {}",
            job.out.display()
        )));
    }
    if job.emit_metrics {
        crate::emit(&built.metrics_json.unwrap_or_default());
    }
    if !job.quiet {
        eprintln!(
            "run written to {} ({:.1} s)",
            job.out.display(),
            built.manifest.wall_seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn cmd_run(args: RunArgs) -> Result<ExitCode, CliError> {
    if args.config.is_dir() {
        return crate::sweep::cmd_sweep(&args);
    }
    if args.shard.is_some() || args.seeds != 1 {
        return Err(CliError::usage(
            "--shard and --seeds apply to a folder of configs",
        ));
    }
    let mut cfg = ExperimentConfig::load(&args.config)?;
    if let Some(seed) = args.seed {
        cfg.seed = seed;
    }
    choose_backend(&mut cfg, args.backend, args.quiet)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.config, cfg.seed));
    // Refuse before spending time training.
    run_dir::check_target(&out, args.force)?;
    let staging = Staging::new_partial(&out, args.force)?;
    let job = Job {
        cfg: &cfg,
        config_file: Some(&args.config),
        emit_metrics: true,
        out: &out,
        force: args.force,
        quiet: args.quiet,
        checkpoint_every: args.checkpoint_every,
    };
    execute(&job, staging, None)
}

/// `repro resume DIR`: continue an interrupted or crashed run from its last checkpoint.
#[derive(clap::Args, Debug)]
pub struct ResumeArgs {
    /// The run folder given to `repro run` (its unfinished state is in DIR.partial).
    pub dir: PathBuf,
    /// No progress on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    /// Iterations between checkpoints [default: the config's, else 5000].
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<usize>,
}

pub fn cmd_resume(args: ResumeArgs) -> Result<ExitCode, CliError> {
    resume_run(&args.dir, args.quiet, args.checkpoint_every, true)
}

/// Resume the unfinished run of `out` (shared with sweeps).
pub fn resume_run(
    out: &Path,
    quiet: bool,
    checkpoint_every: Option<usize>,
    emit_metrics: bool,
) -> Result<ExitCode, CliError> {
    let staging = Staging::reopen_partial(out)?;
    let cfg = ExperimentConfig::load(&staging.path().join(manifest::CONFIG))?;
    let ck_path = staging.path().join(CHECKPOINT);
    let resume = match std::fs::read(&ck_path) {
        Ok(bytes) => {
            let ck = checkpoint::decode(&bytes)
                .and_then(|ck| ck.check_origin(&cfg.digest()).map(|()| ck))
                .map_err(|e| CliError::usage(format!("{}: {e}", ck_path.display())))?;
            if !quiet {
                eprintln!("resuming {} from iteration {}", out.display(), ck.iteration);
            }
            Some(ck)
        }
        // Stopped before its first checkpoint: start again from iteration 0 (same result).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(CliError::io("read", &ck_path, e)),
    };
    let job = Job {
        cfg: &cfg,
        config_file: None,
        emit_metrics,
        out,
        force: false,
        quiet,
        checkpoint_every,
    };
    execute(&job, staging, resume)
}

/// `I/N` with 0 ≤ I < N.
fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s.split_once('/').ok_or("expected I/N, e.g. 0/4")?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| "I is not a number")?,
        n.trim().parse().map_err(|_| "N is not a number")?,
    );
    if n == 0 || i >= n {
        return Err(format!("shard {i}/{n}: need 0 ≤ I < N"));
    }
    Ok((i, n))
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
