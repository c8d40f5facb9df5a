//! Manywell (spec §1.4): D/2 independent copies of a 2-D double well.
//!
//! Pair k is (a, b) = (x_{2k}, x_{2k+1}) and contributes −a⁴ + 6a² + ½a − ½b² to log R, which is
//! unnormalised. The b-factor integrates to √(2π); the a-factor's integral Z₁ has no closed form,
//! so we integrate it numerically once at construction (composite Simpson, f64) and tabulate its
//! CDF on the same grid for exact inverse-CDF sampling of a.

use super::Energy;
use crate::rng;
use rand_chacha::ChaCha8Rng;

/// ½ log 2π.
const HALF_LOG_TAU: f64 = 0.918_938_533_204_672_8;

/// Quadrature interval for the a-marginal. The integrand at ±5 is below e^{−470} of its peak
/// (e^{9.9} at a ≈ 1.75), so the truncation is far below f64 resolution.
const A_LO: f64 = -5.0;
const A_HI: f64 = 5.0;
/// Grid cells on [A_LO, A_HI] (even, for Simpson): h = 1e-4. Simpson's error is O(h⁴) ≈ 1e-16
/// relative; the sampler's piecewise-uniform cells move a sample by at most h/2.
const A_CELLS: usize = 100_000;

/// f(a) = −a⁴ + 6a² + a/2, the log of the unnormalised a-marginal.
#[inline]
fn log_well(a: f64) -> f64 {
    let a2 = a * a;
    -a2 * a2 + 6.0 * a2 + 0.5 * a
}

#[derive(Clone, Debug)]
pub struct ManyWell {
    dim: usize,
    /// log Z₁ = log ∫ exp(f(a)) da.
    log_z1: f64,
    /// Normalised CDF of the a-marginal at the grid nodes A_LO + i·h, i = 0..=A_CELLS
    /// (cdf[0] = 0, cdf[A_CELLS] = 1 exactly), by cumulative trapezoid.
    cdf: Vec<f64>,
}

impl ManyWell {
    /// Panics unless `dim` is even and positive.
    pub fn new(dim: usize) -> Self {
        assert!(
            dim >= 2 && dim.is_multiple_of(2),
            "ManyWell::new: dim must be even and positive, got {dim}"
        );
        let h = (A_HI - A_LO) / A_CELLS as f64;
        // Node values, shifted by the max so the sums stay near 1 (the peak is ≈ e^{9.9}).
        let logs: Vec<f64> = (0..=A_CELLS)
            .map(|i| log_well(A_LO + i as f64 * h))
            .collect();
        let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = logs.iter().map(|&l| (l - max).exp()).collect();

        // Composite Simpson: h/3 · [w₀ + 4w₁ + 2w₂ + … + 4w_{N−1} + w_N].
        let mut simpson = w[0] + w[A_CELLS];
        for (i, &wi) in w.iter().enumerate().take(A_CELLS).skip(1) {
            simpson += if i % 2 == 1 { 4.0 * wi } else { 2.0 * wi };
        }
        let log_z1 = max + (simpson * h / 3.0).ln();

        let mut cdf = Vec::with_capacity(A_CELLS + 1);
        let mut acc = 0.0;
        cdf.push(0.0);
        for pair in w.windows(2) {
            acc += 0.5 * h * (pair[0] + pair[1]);
            cdf.push(acc);
        }
        // x / x == 1 exactly, so the last node is 1 and every u ∈ (0, 1) falls inside a cell.
        for c in &mut cdf {
            *c /= acc;
        }
        ManyWell { dim, log_z1, cdf }
    }

    /// log Z₁ = log ∫ exp(−a⁴ + 6a² + a/2) da (spec: Z₁ = 11784.50927).
    pub fn log_z1(&self) -> f64 {
        self.log_z1
    }

    /// log Z of one double well, log Z₁ + ½ log 2π (spec: 10.293480).
    pub fn log_z_per_well(&self) -> f64 {
        self.log_z1 + HALF_LOG_TAU
    }

    /// One draw of a by inverse CDF: u ~ U(0, 1), then linear interpolation inside the cell
    /// [cdf[i], cdf[i+1]) holding u.
    fn sample_a(&self, rng: &mut ChaCha8Rng) -> f64 {
        let u = rng::uniform_f64(rng);
        // First node with cdf > u; cdf[0] = 0 ≤ u and cdf[N] = 1 > u, so 1 ≤ hi ≤ N.
        let hi = self.cdf.partition_point(|&c| c <= u);
        let lo = hi - 1;
        let h = (A_HI - A_LO) / A_CELLS as f64;
        let frac = (u - self.cdf[lo]) / (self.cdf[hi] - self.cdf[lo]);
        A_LO + (lo as f64 + frac) * h
    }
}

impl Energy for ManyWell {
    fn name(&self) -> String {
        "manywell".into()
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn log_reward_row(&self, x: &[f32]) -> f64 {
        let mut s = 0.0;
        for pair in x.chunks_exact(2) {
            let (a, b) = (pair[0] as f64, pair[1] as f64);
            s += log_well(a) - 0.5 * b * b;
        }
        s
    }

    /// ∂/∂a = −4a³ + 12a + ½,  ∂/∂b = −b.
    fn grad_log_reward_row(&self, x: &[f32], grad: &mut [f32]) {
        self.grad_log_reward(x, grad);
    }

    fn grad_log_reward(&self, x: &[f32], grad: &mut [f32]) {
        // x, grad: [B, D] with D even, so the whole buffer is a flat run of (a, b) pairs and one
        // branch-free loop covers every row.
        for (p, g) in x.chunks_exact(2).zip(grad.chunks_exact_mut(2)) {
            let a = p[0] as f64;
            g[0] = (-4.0 * a * a * a + 12.0 * a + 0.5) as f32;
            g[1] = -p[1];
        }
    }

    fn log_z(&self) -> Option<f64> {
        Some(0.5 * self.dim as f64 * self.log_z_per_well())
    }

    /// Exact: per pair, a by inverse CDF (one uniform), then b ~ N(0, 1); rows in order.
    fn sample(&self, n: usize, rng: &mut ChaCha8Rng) -> Option<Vec<f32>> {
        let mut out = vec![0f32; n * self.dim];
        for pair in out.chunks_exact_mut(2) {
            pair[0] = self.sample_a(rng) as f32;
            pair[1] = rng::normal_f64(rng) as f32;
        }
        Some(out)
    }
}
