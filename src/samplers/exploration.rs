//! Off-policy exploration schedule (spec §2.6).

use crate::config::ExplorationConfig;

/// ε at iteration `it`: ε₀·max(0, 1 − it/decay) with decay, ε₀ without; 0 with no exploration.
/// Below `hold_iters` it is ε₀.
pub fn explore_std(cfg: Option<&ExplorationConfig>, it: usize) -> f64 {
    match cfg {
        None => 0.0,
        Some(e) if e.hold_iters.is_some_and(|h| it < h) => e.std,
        Some(e) => match e.decay_iters {
            None => e.std,
            Some(n) => e.std * (1.0 - it as f64 / n as f64).max(0.0),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decays_linearly_then_stays_zero() {
        let e = ExplorationConfig {
            std: 0.2,
            decay_iters: Some(5000),
            hold_iters: None,
        };
        assert_eq!(explore_std(Some(&e), 0), 0.2);
        assert!((explore_std(Some(&e), 2500) - 0.1).abs() < 1e-15);
        assert_eq!(explore_std(Some(&e), 5000), 0.0);
        assert_eq!(explore_std(Some(&e), 9000), 0.0);
        let c = ExplorationConfig {
            std: 0.1,
            decay_iters: None,
            hold_iters: None,
        };
        assert_eq!(explore_std(Some(&c), 100_000), 0.1);
        assert_eq!(explore_std(None, 3), 0.0);
    }

    /// The RTB toy's schedule (spec rtb2024 §1.4): 0.5 below 500, then 0.5·(1 − it/4500),
    /// which jumps to ≈ 0.444 at 500 and reaches 0 at 4500.
    #[test]
    fn holds_then_joins_the_decay() {
        let e = ExplorationConfig {
            std: 0.5,
            decay_iters: Some(4500),
            hold_iters: Some(500),
        };
        assert_eq!(explore_std(Some(&e), 499), 0.5);
        assert!((explore_std(Some(&e), 500) - 0.5 * (1.0 - 500.0 / 4500.0)).abs() < 1e-15);
        assert_eq!(explore_std(Some(&e), 4500), 0.0);
    }
}
