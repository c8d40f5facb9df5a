//! Equal-weight Gaussian mixtures on a square grid: 25GMM and 9GMM (spec §1.1–1.2).
//!
//! The means are the product grid `axis × axis` with variance 0.3 per coordinate, so the mixture
//! density factorises over the two coordinates:
//!
//!   (1/K) Σ_k N(x; μ_k, vI) = Π_c [(1/n) Σ_a N(x_c; axis[a], v)],   K = n².
//!
//! We use that identity for log R and ∇log R: per row it costs 2n exponentials instead of K, and
//! the gradient of each coordinate is a 1-D softmax average. The value is the same as the
//! spec's logsumexp over K modes up to f64 rounding.

use super::Energy;
use crate::config::GmmGroundTruth;
use crate::rng;
use rand_chacha::ChaCha8Rng;

/// Variance of every component, per coordinate (std ≈ 0.5477).
pub const GMM_VARIANCE: f64 = 0.3;

/// An equal-weight, normalised mixture of N(μ_k, 0.3·I₂) with μ_k on the grid `axis × axis`.
#[derive(Clone, Debug)]
pub struct Gmm {
    name: String,
    /// Grid coordinates of one axis, ascending; mode k = (axis[k / n], axis[k % n]), n = axis.len().
    axis: Vec<f64>,
    var: f64,
    /// How [`Energy::sample`] draws the ground-truth set.
    ground_truth: GmmGroundTruth,
}

impl Gmm {
    /// 25GMM: means {−10, −5, 0, 5, 10}², first coordinate the outer loop; log Z = 0.
    /// `gt` says how [`Energy::sample`] draws ground-truth sets.
    pub fn grid25(gt: GmmGroundTruth) -> Self {
        Gmm::on_grid("25gmm", vec![-10.0, -5.0, 0.0, 5.0, 10.0], gt)
    }

    /// 9GMM: means {−5, 0, 5}²; log Z = 0.
    pub fn grid9(gt: GmmGroundTruth) -> Self {
        Gmm::on_grid("9gmm", vec![-5.0, 0.0, 5.0], gt)
    }

    fn on_grid(name: &str, axis: Vec<f64>, ground_truth: GmmGroundTruth) -> Self {
        Gmm {
            name: name.to_string(),
            axis,
            var: GMM_VARIANCE,
            ground_truth,
        }
    }

    pub fn ground_truth(&self) -> GmmGroundTruth {
        self.ground_truth
    }

    /// K, the number of modes.
    pub fn num_modes(&self) -> usize {
        self.axis.len() * self.axis.len()
    }

    /// The means in mode order ([K, 2]; first coordinate the outer loop, as the reference code).
    pub fn means(&self) -> Vec<[f64; 2]> {
        let n = self.axis.len();
        (0..n * n)
            .map(|k| [self.axis[k / n], self.axis[k % n]])
            .collect()
    }

    /// Index of the mode whose mean is closest to `x` (for mode-coverage counts).
    pub fn nearest_mode(&self, x: &[f32]) -> usize {
        let nearest = |c: f32| -> usize {
            let c = c as f64;
            let mut best = 0;
            for (a, &m) in self.axis.iter().enumerate() {
                if (c - m).abs() < (c - self.axis[best]).abs() {
                    best = a;
                }
            }
            best
        };
        nearest(x[0]) * self.axis.len() + nearest(x[1])
    }

    /// log of the 1-D factor (1/n) Σ_a N(c; axis[a], v), by a max-shifted logsumexp.
    #[inline]
    fn log_factor(&self, c: f64) -> f64 {
        let inv2v = 0.5 / self.var;
        let mut max = f64::NEG_INFINITY;
        for &m in &self.axis {
            max = max.max(-(c - m) * (c - m) * inv2v);
        }
        let mut s = 0.0;
        for &m in &self.axis {
            s += (-(c - m) * (c - m) * inv2v - max).exp();
        }
        max + s.ln() - (self.axis.len() as f64).ln() - 0.5 * (std::f64::consts::TAU * self.var).ln()
    }

    /// d/dc of `log_factor`: Σ_a π_a (axis[a] − c)/v with π = softmax_a(−(c − axis[a])²/2v).
    #[inline]
    fn dlog_factor(&self, c: f64) -> f64 {
        let inv2v = 0.5 / self.var;
        let mut max = f64::NEG_INFINITY;
        for &m in &self.axis {
            max = max.max(-(c - m) * (c - m) * inv2v);
        }
        let (mut s, mut sm) = (0.0, 0.0);
        for &m in &self.axis {
            let w = (-(c - m) * (c - m) * inv2v - max).exp();
            s += w;
            sm += w * m;
        }
        // Σ π_a (m_a − c)/v = (Σ w_a m_a / Σ w_a − c)/v.
        (sm / s - c) / self.var
    }
}

impl Energy for Gmm {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn dim(&self) -> usize {
        2
    }

    fn log_reward_row(&self, x: &[f32]) -> f64 {
        self.log_factor(x[0] as f64) + self.log_factor(x[1] as f64)
    }

    fn grad_log_reward_row(&self, x: &[f32], grad: &mut [f32]) {
        grad[0] = self.dlog_factor(x[0] as f64) as f32;
        grad[1] = self.dlog_factor(x[1] as f64) as f32;
    }

    fn grad_log_reward(&self, x: &[f32], grad: &mut [f32]) {
        // x, grad: [B, 2]. The gradient is separable, so one flat loop over all B·2 coordinates.
        for (&c, g) in x.iter().zip(grad.iter_mut()) {
            *g = self.dlog_factor(c as f64) as f32;
        }
    }

    fn log_reward_grad_f64(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        grad[0] = self.dlog_factor(x[0]);
        grad[1] = self.dlog_factor(x[1]);
        self.log_factor(x[0]) + self.log_factor(x[1])
    }

    fn log_z(&self) -> Option<f64> {
        Some(0.0)
    }

    /// `Stratified`: ⌊n/K⌋ per mode in mode order, then the n mod K left over at uniformly random
    /// modes (the paper-era reference set). `Multinomial`: every mode drawn uniformly. Then
    /// N(0, 0.3) noise on each coordinate. Random numbers: the modes first, then the noise.
    fn sample(&self, n: usize, rng: &mut ChaCha8Rng) -> Option<Vec<f32>> {
        let k = self.num_modes();
        let mut modes = Vec::with_capacity(n);
        match self.ground_truth {
            GmmGroundTruth::Stratified => {
                for m in 0..k {
                    modes.extend(std::iter::repeat_n(m, n / k));
                }
                for _ in 0..n % k {
                    modes.push(rng::below(rng, k as u32) as usize);
                }
            }
            GmmGroundTruth::Multinomial => {
                for _ in 0..n {
                    modes.push(rng::below(rng, k as u32) as usize);
                }
            }
        }
        // out: [n, 2]; filled with N(0, 1) first, then scaled and shifted in f64.
        let mut out = vec![0f32; n * 2];
        rng::fill_normals(rng, &mut out);
        let std = self.var.sqrt();
        let na = self.axis.len();
        for (row, &m) in out.chunks_exact_mut(2).zip(&modes) {
            row[0] = (self.axis[m / na] + std * row[0] as f64) as f32;
            row[1] = (self.axis[m % na] + std * row[1] as f64) as f32;
        }
        Some(out)
    }
}
