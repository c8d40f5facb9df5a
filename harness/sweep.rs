//! `repro run FOLDER [--shard I/N] [--seeds K] [--out ROOT]`: a deterministic slice of a
//! (config × seed) sweep, so a scheduler's array job spreads a paper table over machines.
//!
//! Jobs are every `.ron` under FOLDER (sorted by path) × seeds `seed..seed+K`; job j belongs to
//! shard j mod N. Each job's run folder is `ROOT/<config path relative to FOLDER without .ron>
//! -seed<s>`, so shards never share a folder and re-running a shard is safe: complete runs are
//! skipped, interrupted ones resumed, failed ones left alone (pass --force to redo them).

use crate::error::CliError;
use crate::manifest::Status;
use crate::run::{self, Job, RunArgs};
use crate::run_dir::{self, Staging};
use diffusion_samplers::config::ExperimentConfig;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// One (config, seed) job of a sweep.
pub struct SweepJob {
    pub config: PathBuf,
    pub seed_offset: u64,
    pub out: PathBuf,
}

/// Every `.ron` file under `dir`, sorted.
pub fn config_files(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| CliError::io("read folder", &d, e))?;
        for e in entries {
            let p = e.map_err(|e| CliError::io("read folder", &d, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "ron") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// All jobs of the sweep in their fixed order (configs by path, then seeds).
pub fn plan(
    folder: &Path,
    out_root: &Path,
    seeds: usize,
    base_seed: &dyn Fn(&Path) -> Option<u64>,
) -> Result<Vec<SweepJob>, CliError> {
    let mut jobs = Vec::new();
    for config in config_files(folder)? {
        let rel = config
            .strip_prefix(folder)
            .unwrap_or(&config)
            .with_extension("");
        for k in 0..seeds as u64 {
            let seed = base_seed(&config).map(|s| s + k);
            let name = match seed {
                Some(s) => format!("{}-seed{s}", rel.display()),
                None => format!("{}-seed+{k}", rel.display()),
            };
            jobs.push(SweepJob {
                config: config.clone(),
                seed_offset: k,
                out: out_root.join(name),
            });
        }
    }
    Ok(jobs)
}

/// Status of an existing run folder, if any.
fn finished_status(out: &Path) -> Option<Status> {
    let text = std::fs::read_to_string(out.join("manifest.json")).ok()?;
    let m: crate::manifest::Manifest = serde_json::from_str(&text).ok()?;
    Some(m.status)
}

pub fn cmd_sweep(args: &RunArgs) -> Result<ExitCode, CliError> {
    let (shard, shards) = args.shard.unwrap_or((0, 1));
    let out_root = args.out.clone().unwrap_or_else(|| PathBuf::from("runs"));
    // A config that does not parse still gets its jobs (named by offset) so the slicing never
    // depends on which configs are valid; it then fails as a job.
    let base = |p: &Path| {
        ExperimentConfig::load(p)
            .ok()
            .map(|c| args.seed.unwrap_or(c.seed))
    };
    let jobs = plan(&args.config, &out_root, args.seeds, &base)?;
    if jobs.is_empty() {
        return Err(CliError::usage(format!(
            "no .ron configs under {}",
            args.config.display()
        )));
    }
    let mine: Vec<&SweepJob> = jobs
        .iter()
        .enumerate()
        .filter(|(j, _)| j % shards == shard)
        .map(|(_, job)| job)
        .collect();
    eprintln!(
        "shard {shard}/{shards}: {} of {} jobs",
        mine.len(),
        jobs.len()
    );
    let (mut done, mut ran, mut failed) = (0usize, 0usize, Vec::new());
    for job in mine {
        let label = job.out.display().to_string();
        match finished_status(&job.out) {
            Some(Status::Complete) if !args.force => {
                eprintln!("[skip] {label}: complete");
                done += 1;
                continue;
            }
            Some(Status::Failed) if !args.force => {
                eprintln!("[skip] {label}: failed earlier (--force reruns it)");
                failed.push(label);
                continue;
            }
            _ => {}
        }
        let result = if run_dir::partial_path(&job.out)?.is_dir() && !args.force {
            eprintln!("[resume] {label}");
            run::resume_run(&job.out, args.quiet, args.checkpoint_every, true)
        } else {
            eprintln!("[run] {label}");
            start_job(args, job)
        };
        match result {
            Ok(code) if code == ExitCode::SUCCESS => ran += 1,
            Ok(code) => return Ok(code), // interrupted: stop the whole shard, resumable
            Err(e) => {
                eprintln!("[failed] {label}: {e}");
                failed.push(label);
            }
        }
    }
    eprintln!(
        "shard {shard}/{shards}: {done} already complete, {ran} run, {} failed",
        failed.len()
    );
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn start_job(args: &RunArgs, job: &SweepJob) -> Result<ExitCode, CliError> {
    let mut cfg = ExperimentConfig::load(&job.config)?;
    cfg.seed = args.seed.unwrap_or(cfg.seed) + job.seed_offset;
    run::choose_backend(&mut cfg, args.backend, args.quiet)?;
    let staging = Staging::new_partial(&job.out, args.force)?;
    let j = Job {
        cfg: &cfg,
        config_file: Some(&job.config),
        emit_metrics: true,
        out: &job.out,
        force: args.force,
        quiet: args.quiet,
        checkpoint_every: args.checkpoint_every,
    };
    run::execute(&j, staging, None)
}
