//! A normalised isotropic Gaussian N(μ, s²·I): a reward with closed-form posteriors (a
//! Gaussian prior times it is Gaussian), for RTB checks.

use super::Energy;
use crate::rng;
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Debug)]
pub struct Gaussian {
    mean: Vec<f64>,
    var: f64,
}

impl Gaussian {
    pub fn new(mean: Vec<f64>, std: f64) -> Self {
        Gaussian {
            mean,
            var: std * std,
        }
    }
}

impl Energy for Gaussian {
    fn name(&self) -> String {
        "gaussian".into()
    }

    fn dim(&self) -> usize {
        self.mean.len()
    }

    fn log_reward_row(&self, x: &[f32]) -> f64 {
        let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mut g = vec![0.0; x.len()];
        self.log_reward_grad_f64(&x, &mut g)
    }

    fn grad_log_reward_row(&self, x: &[f32], grad: &mut [f32]) {
        for ((g, &v), m) in grad.iter_mut().zip(x).zip(&self.mean) {
            *g = ((m - v as f64) / self.var) as f32;
        }
    }

    fn log_reward_grad_f64(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let mut sq = 0.0;
        for ((g, &v), m) in grad.iter_mut().zip(x).zip(&self.mean) {
            *g = (m - v) / self.var;
            sq += (v - m) * (v - m);
        }
        -0.5 * sq / self.var
            - 0.5 * self.mean.len() as f64 * (std::f64::consts::TAU * self.var).ln()
    }

    fn log_z(&self) -> Option<f64> {
        Some(0.0)
    }

    fn sample(&self, n: usize, rng_: &mut ChaCha8Rng) -> Option<Vec<f32>> {
        let d = self.mean.len();
        let mut out = vec![0f32; n * d];
        rng::fill_normals(rng_, &mut out);
        let s = self.var.sqrt();
        for row in out.chunks_exact_mut(d) {
            for (v, m) in row.iter_mut().zip(&self.mean) {
                *v = (m + s * *v as f64) as f32;
            }
        }
        Some(out)
    }
}
