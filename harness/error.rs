//! The harness's one error type: a message for stderr and the process exit code it maps to.
//!
//! Exit codes (documented in `repro --help`):
//! - 1: `repro verify` found a mismatch, or `repro list` met a config it could not read;
//! - 2: bad usage, a bad config, or an output location that cannot be written;
//! - 3: training stopped early (the partial run folder is still written).

use std::fmt;
use std::path::Path;

/// Mismatch (verify) or unreadable configs (list).
pub const EXIT_MISMATCH: u8 = 1;
/// Bad usage, bad config, unwritable output.
pub const EXIT_USAGE: u8 = 2;
/// Training failed (non-finite value, invalid experiment).
pub const EXIT_TRAIN_FAILED: u8 = 3;

/// A failed command: what to print and which exit code to return.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    /// Bad usage / config / output location (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    /// Training failed (exit 3).
    pub fn train(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_TRAIN_FAILED,
            message: message.into(),
        }
    }

    /// An I/O failure on `path` while doing `action` ("create folder", "write", ...) (exit 2).
    pub fn io(action: &str, path: &Path, err: std::io::Error) -> Self {
        CliError::usage(format!("cannot {action} {}: {err}", path.display()))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<diffusion_samplers::config::ConfigError> for CliError {
    fn from(e: diffusion_samplers::config::ConfigError) -> Self {
        CliError::usage(e.to_string())
    }
}
