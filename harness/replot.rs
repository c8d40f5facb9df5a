//! `repro plot RUN_DIR`: draw a run folder's figures again from its recorded files (config,
//! `curve.csv`, `evals.csv`, `samples.npy`). Figures are not digested, so this changes nothing
//! `repro verify` checks; it brings folders written before a plotting change up to date.

use crate::error::CliError;
use crate::manifest;
use diffusion_samplers::config::ExperimentConfig;
use diffusion_samplers::data::npy;
use diffusion_samplers::train::{CurveRow, EvalRow};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// A complete or failed run folder.
    pub run_dir: PathBuf,
}

/// The numeric rows of a CSV written by `record.rs` (header skipped).
fn rows(path: &Path, cols: usize) -> Result<Vec<Vec<f64>>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::io("read", path, e))?;
    text.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: Result<Vec<f64>, _> = l.split(',').map(str::parse::<f64>).collect();
            match v {
                Ok(v) if v.len() == cols => Ok(v),
                _ => Err(CliError::usage(format!(
                    "{}: malformed row {l:?}",
                    path.display()
                ))),
            }
        })
        .collect()
}

pub fn cmd_plot(args: PlotArgs) -> Result<ExitCode, CliError> {
    let dir = &args.run_dir;
    let cfg = ExperimentConfig::load(&dir.join(manifest::CONFIG))?;
    let curve: Vec<CurveRow> = rows(&dir.join(manifest::CURVE), 4)?
        .into_iter()
        .map(|r| CurveRow {
            iteration: r[0] as usize,
            loss: r[1],
            log_z: r[2],
            explore_std: r[3],
        })
        .collect();
    let evals: Vec<EvalRow> = rows(&dir.join(manifest::EVALS), 5)?
        .into_iter()
        .map(|r| EvalRow {
            iteration: r[0] as usize,
            log_z: r[1],
            log_z_rw: r[2],
            elbo: r[3],
            ess: r[4],
        })
        .collect();
    let samples_path = dir.join(manifest::SAMPLES);
    let samples = match std::fs::read(&samples_path) {
        Ok(bytes) => Some(
            npy::decode(&bytes)
                .map_err(|e| CliError::usage(format!("{}: {e}", samples_path.display())))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(CliError::io("read", &samples_path, e)),
    };
    let view = samples
        .as_ref()
        .map(|a| (a.data.as_slice(), a.shape.get(1).copied().unwrap_or(1)));
    let written = crate::plot::write_figures(dir, &cfg, &curve, &evals, view)?;
    eprintln!("drew {} in {}", written.join(", "), dir.display());
    Ok(ExitCode::SUCCESS)
}
