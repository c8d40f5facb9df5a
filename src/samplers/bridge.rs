//! The fixed backward policy: a discretised Brownian bridge to x₀ = 0 (spec §2.3), or the VP
//! (OU) noising step (Table C.2); [`Sampler::transition`] gives each step's kernel.
//!
//! Brownian: p_B(x_i | x_{i+1}) = N(x_i; (i/(i+1))·x_{i+1}, σ²·dt·(i/(i+1))·I) for i ≥ 1; x₀ = 0
//! surely. VP: p_B(x_i | x_{i+1}) = N(x_i; (1 − β_i·dt)·x_{i+1}, 2β_i·dt·I) for every i ≥ 0.

use super::Sampler;
use crate::rng;
use rand_chacha::ChaCha8Rng;

/// log p_B(x_i | x_{i+1}) for one row (D values each), f64. Zero for the Brownian i = 0.
pub fn log_pb_step(s: &Sampler, i: usize, x_i: &[f32], x_next: &[f32]) -> f64 {
    let Some((ratio, var)) = s.transition(i).backward else {
        return 0.0;
    };
    let norm = -0.5 * (std::f64::consts::TAU * var).ln();
    let mut acc = 0.0;
    for (&a, &b) in x_i.iter().zip(x_next) {
        let r = a as f64 - ratio * b as f64;
        acc += -0.5 * r * r / var + norm;
    }
    acc
}

/// Backward trajectories from terminal states `x_t` (`[B, D]`): returns all states `[T+1, B, D]`
/// with x_T = `x_t`, x_k ~ p_B(·|x_{k+1}) for k = T−1..1, and x₀ = 0 (Brownian) or
/// x₀ ~ p_B(·|x₁) (VP). The normal used for
/// (k, row b, dim j) is number `((T−1−k)·total_rows + row0 + b)·D + j` of `rng`'s stream, so a
/// batch split into shards draws exactly what the whole batch would.
pub fn sample_backward_states(
    s: &Sampler,
    x_t: &[f32],
    rng: &mut ChaCha8Rng,
    row0: usize,
    total_rows: usize,
) -> Vec<f32> {
    let (d, t) = (s.dim, s.steps);
    let rows = x_t.len() / d;
    let mut states = vec![0f32; (t + 1) * rows * d];
    states[t * rows * d..].copy_from_slice(x_t);
    let mut noise = vec![0f32; rows * d];
    for k in (0..t).rev() {
        let Some((ratio, var)) = s.transition(k).backward else {
            continue;
        };
        let std = var.sqrt();
        rng::normals_at(
            rng,
            (((t - 1 - k) * total_rows + row0) * d) as u64,
            &mut noise,
        );
        let (lo, hi) = states.split_at_mut((k + 1) * rows * d);
        let next = &hi[..rows * d];
        let cur = &mut lo[k * rows * d..];
        for ((c, &n), &z) in cur.iter_mut().zip(next).zip(&noise) {
            *c = (ratio * n as f64 + std * z as f64) as f32;
        }
    }
    states
}
