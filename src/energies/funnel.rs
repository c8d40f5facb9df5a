//! Neal's funnel (spec §1.3): x₀ ~ N(0, s²) and x_i | x₀ ~ N(0, e^{x₀}) for i = 1..D−1.
//!
//! `Hard` (the paper's "Funnel") has s = 3; `Easy` has s = 1 (the PIS variant the paper criticises
//! in §B.1). The density is normalised (log Z = 0) and sampled exactly, ancestrally.

use super::Energy;
use crate::config::FunnelVariant;
use crate::rng;
use rand_chacha::ChaCha8Rng;

/// ½ log 2π.
const HALF_LOG_TAU: f64 = 0.918_938_533_204_672_8;

#[derive(Clone, Debug)]
pub struct Funnel {
    variant: FunnelVariant,
    dim: usize,
    /// Var(x₀): 9 (hard) or 1 (easy).
    var0: f64,
}

impl Funnel {
    /// Panics if `dim == 0`.
    pub fn new(variant: FunnelVariant, dim: usize) -> Self {
        assert!(dim >= 1, "Funnel::new: dim must be at least 1, got {dim}");
        let var0 = match variant {
            FunnelVariant::Hard => 9.0,
            FunnelVariant::Easy => 1.0,
        };
        Funnel { variant, dim, var0 }
    }

    pub fn variant(&self) -> FunnelVariant {
        self.variant
    }
}

impl Energy for Funnel {
    fn name(&self) -> String {
        match self.variant {
            FunnelVariant::Hard => "funnel".into(),
            FunnelVariant::Easy => "easy-funnel".into(),
        }
    }

    fn dim(&self) -> usize {
        self.dim
    }

    /// log N(x₀; 0, s²) + Σ_{i≥1} [−½ log 2π − x₀/2 − ½ x_i² e^{−x₀}].
    fn log_reward_row(&self, x: &[f32]) -> f64 {
        let x0 = x[0] as f64;
        let sum_sq: f64 = x[1..].iter().map(|&v| (v as f64) * (v as f64)).sum();
        let m = (self.dim - 1) as f64;
        -HALF_LOG_TAU - 0.5 * self.var0.ln() - 0.5 * x0 * x0 / self.var0
            + m * (-HALF_LOG_TAU - 0.5 * x0)
            - 0.5 * sum_sq * (-x0).exp()
    }

    /// ∂/∂x₀ = −x₀/s² − (D−1)/2 + ½ e^{−x₀} Σ_{i≥1} x_i²;  ∂/∂x_i = −x_i e^{−x₀}.
    fn grad_log_reward_row(&self, x: &[f32], grad: &mut [f32]) {
        let x0 = x[0] as f64;
        let e = (-x0).exp();
        let mut sum_sq = 0.0;
        for (&v, g) in x[1..].iter().zip(grad[1..].iter_mut()) {
            let v = v as f64;
            sum_sq += v * v;
            *g = (-v * e) as f32;
        }
        let m = (self.dim - 1) as f64;
        grad[0] = (-x0 / self.var0 - 0.5 * m + 0.5 * e * sum_sq) as f32;
    }

    fn log_z(&self) -> Option<f64> {
        Some(0.0)
    }

    /// Ancestral: draw [n, D] standard normals z, then x₀ = s·z₀ and x_i = e^{x₀/2}·z_i.
    fn sample(&self, n: usize, rng: &mut ChaCha8Rng) -> Option<Vec<f32>> {
        let d = self.dim;
        let mut out = vec![0f32; n * d];
        rng::fill_normals(rng, &mut out);
        let s = self.var0.sqrt();
        for row in out.chunks_exact_mut(d) {
            let x0 = s * row[0] as f64;
            let scale = (0.5 * x0).exp();
            row[0] = x0 as f32;
            for v in &mut row[1..] {
                *v = (scale * *v as f64) as f32;
            }
        }
        Some(out)
    }
}
