//! Target densities R(x) = exp(−E(x)) with analytic log-density and gradient.
//!
//! To add a target, implement [`Energy`]: `dim`, `log_reward_row`, and (optionally, for speed and
//! exactness) `grad_log_reward_row`; the batch methods loop over rows by default.

use rand_chacha::ChaCha8Rng;

pub mod bandit;
pub mod digits;
pub mod funnel;
pub mod gaussian;
pub mod gmm;
pub mod lgcp;
pub mod many_well;
pub mod reweighted_gmm;
pub mod vae;

pub use funnel::Funnel;
pub use gaussian::Gaussian;
pub use gmm::Gmm;
pub use lgcp::Lgcp;
pub use many_well::ManyWell;
pub use reweighted_gmm::Gmm25To9;
pub use vae::{VaeEnergy, VaeFixedImage, VaeModel};

/// An unnormalised target density on ℝ^D. Rows are `[B, D]` row-major `f32`.
pub trait Energy: Send + Sync {
    /// A short name, e.g. `"25gmm"`.
    fn name(&self) -> String;
    /// D, the state dimension.
    fn dim(&self) -> usize;
    /// log R(x) for one state x ∈ ℝ^D, computed in f64.
    fn log_reward_row(&self, x: &[f32]) -> f64;
    /// ∇ₓ log R(x) for one state. The default takes central differences in f64 (step 1e-3);
    /// targets should override it with the analytic gradient.
    fn grad_log_reward_row(&self, x: &[f32], grad: &mut [f32]) {
        let mut xp: Vec<f32> = x.to_vec();
        for j in 0..x.len() {
            let h = 1e-3f32 * (1.0 + x[j].abs());
            xp[j] = x[j] + h;
            let up = self.log_reward_row(&xp);
            xp[j] = x[j] - h;
            let down = self.log_reward_row(&xp);
            xp[j] = x[j];
            grad[j] = ((up - down) / (2.0 * h as f64)) as f32;
        }
    }
    /// log R for each row of `x` ([B, D]) into `out` ([B]).
    fn log_reward(&self, x: &[f32], out: &mut [f64]) {
        let d = self.dim();
        for (row, o) in x.chunks_exact(d).zip(out.iter_mut()) {
            *o = self.log_reward_row(row);
        }
    }
    /// ∇ log R for each row of `x` ([B, D]) into `grad` ([B, D]).
    fn grad_log_reward(&self, x: &[f32], grad: &mut [f32]) {
        let d = self.dim();
        for (row, g) in x.chunks_exact(d).zip(grad.chunks_exact_mut(d)) {
            self.grad_log_reward_row(row, g);
        }
    }
    /// log R(x) of one state given in f64, with ∇log R written to `grad`: the path f64
    /// gradient checks take (PIS differentiates log R(x_T)). The default rounds x to f32 and
    /// uses the f32 methods; targets override it with exact f64 arithmetic.
    fn log_reward_grad_f64(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let mut g = vec![0f32; x.len()];
        self.grad_log_reward_row(&x32, &mut g);
        for (o, &v) in grad.iter_mut().zip(&g) {
            *o = v as f64;
        }
        self.log_reward_row(&x32)
    }
    /// The true log Z = log ∫R, when known.
    fn log_z(&self) -> Option<f64> {
        None
    }
    /// The class a classifier-based target assigns to state x (the digits), else `None`.
    fn classify(&self, _x: &[f32]) -> Option<usize> {
        None
    }
    /// DPS's measurement loss L(x) and ∇ₓL for one state, for targets defined by a
    /// measurement (the digits: ‖e_c − logits(x)‖ for the best allowed class c), else `None`.
    fn measurement_loss_grad(&self, _x: &[f64]) -> Option<(f64, Vec<f64>)> {
        None
    }
    /// The fixed feature vector of one state that the Fréchet distance and the diversity are
    /// measured in (the digits: the frozen classifier's hidden layer), else `None`.
    fn features(&self, _x: &[f32]) -> Option<Vec<f64>> {
        None
    }
    /// Every real data point the target's samples stand for (the digits: all images of the
    /// allowed classes), `[N, D]`, else `None`.
    fn reference_set(&self) -> Option<Vec<f32>> {
        None
    }
    /// `n` exact samples ([n, D]) when the target can be sampled exactly.
    fn sample(&self, _n: usize, _rng: &mut ChaCha8Rng) -> Option<Vec<f32>> {
        None
    }
}
