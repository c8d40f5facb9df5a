//! Off-policy exploration schedule (spec §2.6).

use crate::config::ExplorationConfig;

/// ε at iteration `it`: ε₀·max(0, 1 − it/decay) with decay, ε₀ without; 0 with no exploration.
pub fn explore_std(cfg: Option<&ExplorationConfig>, it: usize) -> f64 {
    match cfg {
        None => 0.0,
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
        };
        assert_eq!(explore_std(Some(&e), 0), 0.2);
        assert!((explore_std(Some(&e), 2500) - 0.1).abs() < 1e-15);
        assert_eq!(explore_std(Some(&e), 5000), 0.0);
        assert_eq!(explore_std(Some(&e), 9000), 0.0);
        let c = ExplorationConfig {
            std: 0.1,
            decay_iters: None,
        };
        assert_eq!(explore_std(Some(&c), 100_000), 0.1);
        assert_eq!(explore_std(None, 3), 0.0);
    }
}
