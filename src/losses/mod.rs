//! GFlowNet losses on per-trajectory sums (spec §3).
//!
//! Trajectories are detached (as in the reference), so a loss depends on the parameters only
//! through LF_b = Σ_i log p_F and a learned log Z. Each loss returns its value and ∂L/∂LF_b,
//! ∂L/∂log Z; the tape then carries ∂L/∂LF_b into every step's log p_F node.

pub mod rl;
pub mod subtb;
pub mod tb;

pub use rl::{behaviour_log_prob, ddpo, dpok, dpok_drift_seed, rl_kl, rl_kl_paper, step_kl};
pub use subtb::{detailed_balance, fl_term, subtb, SubTbGrad};
pub use tb::{
    trajectory_balance, trajectory_balance_cutoff, trajectory_balance_rows, vargrad,
    vargrad_conditional, LossGrad,
};
