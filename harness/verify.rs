//! `repro verify RUN_DIR`: replay a run from its resolved config and compare digests.
//!
//! The replay is written into a temporary folder (removed afterwards). Each file is checked
//! twice: the replay's digest against the manifest's (does the run reproduce?), and the stored
//! file against the manifest's (was the folder edited since?). Exit 0 only when all agree.

use crate::error::{CliError, EXIT_MISMATCH};
use crate::manifest::{self, Manifest};
use crate::progress::Reporter;
use crate::run::build_run;
use crate::run_dir::Staging;
use diffusion_samplers::config::ExperimentConfig;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// A run folder written by `repro run`.
    pub run_dir: PathBuf,
    /// Print the comparison as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No replay progress on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Serialize)]
struct FileCheck {
    file: String,
    /// Digest in the manifest.
    recorded: Option<String>,
    /// Digest of the replayed file.
    replayed: Option<String>,
    /// Digest of the file in the run folder now.
    stored: Option<String>,
    /// "OK" or "MISMATCH" (replay vs manifest).
    replay: &'static str,
    /// "OK", "CHANGED" or "MISSING" (stored file vs manifest).
    on_disk: &'static str,
    ok: bool,
}

#[derive(Serialize)]
struct Report {
    run_dir: String,
    ok: bool,
    config_digest: String,
    status_recorded: &'static str,
    status_replayed: &'static str,
    files: Vec<FileCheck>,
}

pub fn cmd_verify(args: VerifyArgs) -> Result<ExitCode, CliError> {
    let dir = &args.run_dir;
    if !dir.is_dir() {
        return Err(CliError::usage(format!(
            "{} is not a run folder",
            dir.display()
        )));
    }
    let cfg = ExperimentConfig::load(&dir.join(manifest::CONFIG))?;
    let manifest_path = dir.join(manifest::MANIFEST);
    let text =
        fs::read_to_string(&manifest_path).map_err(|e| CliError::io("read", &manifest_path, e))?;
    let recorded: Manifest = serde_json::from_str(&text).map_err(|e| {
        CliError::usage(format!(
            "{}: not a valid manifest: {e}",
            manifest_path.display()
        ))
    })?;

    let tmp_name = format!("repro-verify-{}", std::process::id());
    let staging = Staging::create(std::env::temp_dir().join(tmp_name))?;
    let mut reporter = Reporter::new("replay", args.quiet || args.json);
    let prior = crate::prior::ensure_prior(&cfg, None, dir, args.quiet || args.json)?;
    let replay = build_run(&cfg, prior, &staging, &mut reporter)?;
    drop(staging); // removes the temporary folder

    let names: BTreeSet<&String> = recorded
        .files
        .keys()
        .chain(replay.manifest.files.keys())
        .collect();
    let mut files = Vec::new();
    for name in names {
        let rec = recorded.files.get(name).cloned();
        let rep = replay.manifest.files.get(name).cloned();
        let stored = fs::read(dir.join(name)).ok().map(|b| manifest::digest(&b));
        let replay_ok = rec.is_some() && rec == rep;
        let disk_ok = rec.is_some() && stored == rec;
        files.push(FileCheck {
            file: name.clone(),
            replay: if replay_ok { "OK" } else { "MISMATCH" },
            on_disk: match (&stored, disk_ok) {
                (_, true) => "OK",
                (None, _) => "MISSING",
                (Some(_), false) => "CHANGED",
            },
            ok: replay_ok && disk_ok,
            recorded: rec,
            replayed: rep,
            stored,
        });
    }
    let config_ok = recorded.config_digest == replay.manifest.config_digest;
    let status_ok = recorded.status == replay.manifest.status;
    let report = Report {
        run_dir: dir.display().to_string(),
        ok: config_ok && status_ok && files.iter().all(|f| f.ok),
        config_digest: recorded.config_digest.clone(),
        status_recorded: recorded.status.as_str(),
        status_replayed: replay.manifest.status.as_str(),
        files,
    };

    let out = if args.json {
        let mut s = serde_json::to_string_pretty(&report).expect("reports serialise");
        s.push('\n');
        s
    } else {
        render_table(&report, config_ok)
    };
    crate::emit(&out);
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_MISMATCH)
    })
}

fn short(d: &Option<String>) -> String {
    match d {
        Some(d) => d.chars().take(16).collect(),
        None => "-".to_string(),
    }
}

fn render_table(r: &Report, config_ok: bool) -> String {
    let w = r
        .files
        .iter()
        .map(|f| f.file.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut s = format!("verify {}\n", r.run_dir);
    s.push_str(&format!(
        "{:<w$}  {:<16}  {:<16}  {:<8}  {}\n",
        "file", "recorded", "replayed", "replay", "on disk"
    ));
    for f in &r.files {
        s.push_str(&format!(
            "{:<w$}  {:<16}  {:<16}  {:<8}  {}\n",
            f.file,
            short(&f.recorded),
            short(&f.replayed),
            f.replay,
            f.on_disk
        ));
    }
    if !config_ok {
        s.push_str("config digest: MISMATCH (the manifest names another config)\n");
    }
    if r.status_recorded != r.status_replayed {
        s.push_str(&format!(
            "status: MISMATCH (recorded {}, replayed {})\n",
            r.status_recorded, r.status_replayed
        ));
    }
    let bad = r.files.iter().filter(|f| !f.ok).count();
    if r.ok {
        s.push_str(&format!("OK: all {} files reproduce\n", r.files.len()));
    } else {
        s.push_str(&format!(
            "MISMATCH: {bad} of {} files do not match\n",
            r.files.len()
        ));
    }
    s
}
