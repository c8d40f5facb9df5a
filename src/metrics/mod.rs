//! Evaluation metrics (spec §6): log Z estimators and ESS from log-weights, and the exact W2
//! between model samples and a ground-truth set.

pub mod estimators;
pub mod modes;
pub mod w2;

pub use estimators::{ess_normalised, log_z_estimates, logmeanexp, logsumexp, mean};
pub use modes::{mode_stats, ModeStats};
pub use w2::{linear_assignment, squared_distances, try_w2_exact, w2_exact, Assignment, W2Error};
