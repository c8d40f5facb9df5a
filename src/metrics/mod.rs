//! Evaluation metrics (spec §6): log Z estimators and ESS from log-weights, the exact W2
//! between model samples and a ground-truth set, and the Fréchet distance and cosine diversity of
//! classifier features (spec rtb2024 §3.3).

pub mod estimators;
pub mod frechet;
pub mod modes;
pub mod w2;

pub use estimators::{ess_normalised, log_z_estimates, logmeanexp, logsumexp, mean};
pub use frechet::{cosine_diversity, frechet_distance, FeatureStats};
pub use modes::{mode_stats, ModeStats};
pub use w2::{linear_assignment, squared_distances, try_w2_exact, w2_exact, Assignment, W2Error};
