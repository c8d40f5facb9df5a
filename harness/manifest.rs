//! `manifest.json`: what a run folder holds and how to check it.
//!
//! The manifest is the one file that is *not* digested: it records the blake3 digest of every
//! other file plus things that may differ between identical runs (wall time).

use diffusion_samplers::config::PaperRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The file names of a run folder.
pub const CONFIG: &str = "config.ron";
pub const METRICS: &str = "metrics.json";
pub const CURVE: &str = "curve.csv";
pub const EVALS: &str = "evals.csv";
pub const SAMPLES: &str = "samples.npy";
pub const MANIFEST: &str = "manifest.json";

/// How a run ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Complete,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Complete => "complete",
            Status::Failed => "failed",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Manifest {
    /// `CARGO_PKG_VERSION` of the binary that wrote the run.
    pub crate_version: String,
    /// blake3 of the resolved config RON (`ExperimentConfig::digest`), equal to
    /// `files["config.ron"]`.
    pub config_digest: String,
    /// The seed actually used (after `--seed`).
    pub seed: u64,
    pub status: Status,
    /// Why training stopped, when `status` is failed.
    pub failure: Option<String>,
    /// File name → blake3 hex digest of its bytes, for every file written besides the manifest
    /// (a failed run has no `metrics.json` / `samples.npy`).
    pub files: BTreeMap<String, String>,
    /// Time spent training, evaluating and writing (the only time-dependent value of a run).
    pub wall_seconds: f64,
    /// The paper row the config replays.
    pub paper: Option<PaperRef>,
    /// PNG figures in the folder. Not digested: rasterised text depends on the machine's fonts.
    #[serde(default)]
    pub figures: Vec<String>,
    /// The GPU adapter of a `backend: Gpu` run (GPU results replay bitwise on the same device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl Manifest {
    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("manifests always serialise");
        s.push('\n');
        s
    }
}

/// blake3 of `bytes` as lowercase hex.
pub fn digest(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}
