//! The constraint of the RTB 2-D toy (Venkatraman et al. 2024; spec rtb2024 §2.1):
//! r(x) = p_9(x)/p_25(x), where p_25 is the 25GMM and p_9 keeps 9 of its modes with unequal
//! weights. A perfect 25GMM prior times r is p_9 exactly; RTB's target is p_θ·r for the learned
//! prior p_θ.

use super::{Energy, Gmm};
use crate::config::GmmGroundTruth;
use crate::rng;
use rand_chacha::ChaCha8Rng;

/// The retained means, in the order of the reference code's list.
pub const RETAINED_MEANS: [[f64; 2]; 9] = [
    [-10.0, -5.0],
    [-5.0, -10.0],
    [-5.0, 0.0],
    [10.0, -5.0],
    [0.0, 0.0],
    [0.0, 5.0],
    [5.0, -5.0],
    [5.0, 0.0],
    [5.0, 10.0],
];

/// Unnormalised weights of [`RETAINED_MEANS`]; they sum to 61.
pub const RETAINED_WEIGHTS: [f64; 9] = [4.0, 10.0, 4.0, 5.0, 10.0, 5.0, 4.0, 15.0, 4.0];

/// log r = log p_9 − log p_25 on ℝ².
#[derive(Clone, Debug)]
pub struct Gmm25To9 {
    prior: Gmm,
    /// log(w_k/61) − log 2πv: the normalised log-weight plus the Gaussian constant.
    log_coef: [f64; 9],
}

impl Default for Gmm25To9 {
    fn default() -> Self {
        Self::new()
    }
}

impl Gmm25To9 {
    pub fn new() -> Self {
        let total: f64 = RETAINED_WEIGHTS.iter().sum();
        let v = super::gmm::GMM_VARIANCE;
        let log_coef =
            RETAINED_WEIGHTS.map(|w| (w / total).ln() - (std::f64::consts::TAU * v).ln());
        Gmm25To9 {
            prior: Gmm::grid25(GmmGroundTruth::Multinomial),
            log_coef,
        }
    }

    /// The normalised target weights of the 9 modes, in [`RETAINED_MEANS`] order.
    pub fn weights() -> [f64; 9] {
        let total: f64 = RETAINED_WEIGHTS.iter().sum();
        RETAINED_WEIGHTS.map(|w| w / total)
    }

    /// The 25GMM the constraint is relative to.
    pub fn grid(&self) -> &Gmm {
        &self.prior
    }

    /// log p_9(x) and its gradient (a softmax average of (μ_k − x)/v), in f64.
    fn log_p9(&self, x: [f64; 2]) -> (f64, [f64; 2]) {
        let inv2v = 0.5 / super::gmm::GMM_VARIANCE;
        let terms: Vec<f64> = RETAINED_MEANS
            .iter()
            .zip(&self.log_coef)
            .map(|(m, c)| c - ((x[0] - m[0]).powi(2) + (x[1] - m[1]).powi(2)) * inv2v)
            .collect();
        let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (mut s, mut g) = (0.0, [0.0; 2]);
        for (t, m) in terms.iter().zip(&RETAINED_MEANS) {
            let w = (t - max).exp();
            s += w;
            g[0] += w * (m[0] - x[0]);
            g[1] += w * (m[1] - x[1]);
        }
        let v = super::gmm::GMM_VARIANCE;
        (max + s.ln(), [g[0] / (s * v), g[1] / (s * v)])
    }
}

impl Energy for Gmm25To9 {
    fn name(&self) -> String {
        "25gmm-to-9".into()
    }

    fn dim(&self) -> usize {
        2
    }

    fn log_reward_row(&self, x: &[f32]) -> f64 {
        let (lp9, _) = self.log_p9([x[0] as f64, x[1] as f64]);
        lp9 - self.prior.log_reward_row(x)
    }

    fn grad_log_reward_row(&self, x: &[f32], grad: &mut [f32]) {
        let mut g = [0f64; 2];
        self.log_reward_grad_f64(&[x[0] as f64, x[1] as f64], &mut g);
        grad[0] = g[0] as f32;
        grad[1] = g[1] as f32;
    }

    fn log_reward_grad_f64(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let (lp9, g9) = self.log_p9([x[0], x[1]]);
        let mut g25 = [0f64; 2];
        let lp25 = self.prior.log_reward_grad_f64(x, &mut g25);
        grad[0] = g9[0] - g25[0];
        grad[1] = g9[1] - g25[1];
        lp9 - lp25
    }

    /// log ∫p_25·r = log ∫p_9 = 0 (the posterior of a perfect prior).
    fn log_z(&self) -> Option<f64> {
        Some(0.0)
    }

    /// Exact p_9 samples: every mode drawn by its weight (inverse CDF on one uniform), then
    /// N(0, 0.3) noise per coordinate.
    fn sample(&self, n: usize, rng_: &mut ChaCha8Rng) -> Option<Vec<f32>> {
        let w = Self::weights();
        let modes: Vec<usize> = (0..n)
            .map(|_| {
                let u = rng::uniform_f64(rng_);
                let mut acc = 0.0;
                w.iter()
                    .position(|&p| {
                        acc += p;
                        u < acc
                    })
                    .unwrap_or(8)
            })
            .collect();
        let mut out = vec![0f32; n * 2];
        rng::fill_normals(rng_, &mut out);
        let std = super::gmm::GMM_VARIANCE.sqrt();
        for (row, &k) in out.chunks_exact_mut(2).zip(&modes) {
            let m = RETAINED_MEANS[k];
            row[0] = (m[0] + std * row[0] as f64) as f32;
            row[1] = (m[1] + std * row[1] as f64) as f32;
        }
        Some(out)
    }
}

/// p_9 itself, the posterior a perfect prior would give: what figures shade under the toy's
/// samples (log r alone is a ratio, not a density).
#[derive(Clone, Debug, Default)]
pub struct NineModeTarget(Gmm25To9);

impl Energy for NineModeTarget {
    fn name(&self) -> String {
        "9-mode target".into()
    }

    fn dim(&self) -> usize {
        2
    }

    fn log_reward_row(&self, x: &[f32]) -> f64 {
        self.0.log_p9([x[0] as f64, x[1] as f64]).0
    }
}
