//! Mode statistics of the RTB 2-D toy (spec rtb2024 §2.7, §2.9): which of the 25 grid modes
//! each sample sits near, and how far the resulting histogram is from the 9-mode target.

use crate::energies::gmm::GMM_VARIANCE;
use crate::energies::reweighted_gmm::{Gmm25To9, RETAINED_MEANS};
use serde::Serialize;

/// Mode coverage of samples against the 9-mode target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModeStats {
    /// Fraction of samples within 3σ of one of the 25 grid means (exact p_9 samples:
    /// 1 − e^{−4.5} ≈ 0.989).
    pub near_mode: f64,
    /// Fraction of samples within 3σ of one of the 9 retained means.
    pub on_retained: f64,
    /// Total variation between the sample histogram over the 25 modes (plus the mass near no
    /// mode) and the target weights.
    pub tv: f64,
    /// The histogram's mass on each retained mode, in grid order (first coordinate outer).
    pub retained_weights: Vec<f64>,
}

/// [`ModeStats`] of samples `x` (`[n, 2]`).
pub fn mode_stats(x: &[f32]) -> ModeStats {
    let grid = Gmm25To9::new();
    let means = grid.grid().means();
    let radius = 3.0 * GMM_VARIANCE.sqrt();
    let n = x.len() / 2;
    let mut counts = vec![0usize; means.len()];
    let mut far = 0usize;
    for row in x.chunks_exact(2) {
        let k = grid.grid().nearest_mode(row);
        let (dx, dy) = (row[0] as f64 - means[k][0], row[1] as f64 - means[k][1]);
        if (dx * dx + dy * dy).sqrt() <= radius {
            counts[k] += 1;
        } else {
            far += 1;
        }
    }
    // Target mass per grid mode: the 9 weights where the means match, 0 elsewhere.
    let weights = Gmm25To9::weights();
    let target: Vec<f64> = means
        .iter()
        .map(|m| {
            RETAINED_MEANS
                .iter()
                .position(|r| r == m)
                .map_or(0.0, |i| weights[i])
        })
        .collect();
    let frac = |c: usize| c as f64 / n as f64;
    let mut tv = frac(far);
    let mut on_retained = 0.0;
    let mut retained_weights = Vec::new();
    for (k, &c) in counts.iter().enumerate() {
        tv += (frac(c) - target[k]).abs();
        if target[k] > 0.0 {
            on_retained += frac(c);
            retained_weights.push(frac(c));
        }
    }
    ModeStats {
        near_mode: frac(n - far),
        on_retained,
        tv: 0.5 * tv,
        retained_weights,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energies::Energy;
    use crate::rng;

    /// Exact p_9 samples: 98.9 % near a mode, all of it on the retained ones, TV ≈ the far mass
    /// plus sampling noise.
    #[test]
    fn exact_samples_match_the_target() {
        let e = Gmm25To9::new();
        let x = e.sample(40_000, &mut rng::stream(1, "modes", 0)).unwrap();
        let s = mode_stats(&x);
        let near = 1.0 - (-4.5f64).exp();
        assert!((s.near_mode - near).abs() < 0.003, "{s:?}");
        assert_eq!(s.near_mode, s.on_retained);
        assert!(s.tv < 0.02, "{s:?}");
        // Grid order: (−10,−5), (−5,−10), (−5,0), (0,0), (0,5), (5,−5), (5,0), (5,10), (10,−5).
        let want = [4.0, 10.0, 4.0, 10.0, 5.0, 4.0, 15.0, 4.0, 5.0].map(|w| w / 61.0 * near);
        for (got, want) in s.retained_weights.iter().zip(want) {
            assert!((got - want).abs() < 0.01, "{got} vs {want}");
        }
    }

    /// Uniform 25GMM samples keep 9/25 of their near mass on the retained modes.
    #[test]
    fn prior_samples_spread_over_all_modes() {
        let g = crate::energies::Gmm::grid25(crate::config::GmmGroundTruth::Stratified);
        let x = g.sample(25_000, &mut rng::stream(2, "modes", 0)).unwrap();
        let s = mode_stats(&x);
        let near = 1.0 - (-4.5f64).exp();
        assert!((s.on_retained - 9.0 / 25.0 * near).abs() < 0.01, "{s:?}");
        assert!(s.tv > 0.6, "{s:?}");
    }
}
