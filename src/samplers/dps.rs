//! DPS and LGD-MC guidance on a DDPM prior (spec rtb2024 §3.1, §3.3, §7.4): the gradient of a
//! measurement loss at the prior's x̂0, pulled back to the noisy state through the ε-network.
//!
//! At generation step i from state x_t (`[B, D]`):
//!   x̂0(x_t) = clip((x_t − √(1−ᾱ_t)·ε̂(x_t, t))/√ᾱ_t),
//!   g(x_t)   = ∇_{x_t} log mean_k exp(−L(x̂0(x_t) + r_t·z_k)),   r_t = √(1−ᾱ_t),
//! and the step's mean gains ζ·g. DPS is the one-particle limit with no noise, g = −∇L(x̂0);
//! LGD-MC (Song et al. 2023) takes K particles: r_t = σ_t/√(1+σ_t²) with the DDPM's
//! σ_t = √(1−ᾱ_t)/√ᾱ_t, which is √(1−ᾱ_t). L is the target's measurement loss
//! ([`crate::energies::Energy::measurement_loss_grad`]: for the digits ‖e_c − logits(x)‖, as the
//! vision code has it).
//!
//! Two deliberate departures from the vision code, both documented in the configs: the norm is
//! per sample, not over the whole batch tensor (which would make the step size depend on the
//! batch size), and the guidance is added once, to the mean (the code's DDPM step adds its noise
//! to both terms, which only rescales ζ).
//!
//! The chain rule is split at x̂0: v = Σ_k w_k·∇L(particle_k) (w = softmax(−L)) comes from the
//! target's hand-written input gradient, and −Jᵀv through the ε-network and the clip comes from
//! one tape backward with x_t as the tape's input leaf.

use super::rollout::NetOnTape;
use super::Sampler;
use crate::autodiff::{Tape, Var};
use crate::cpu::Kernels;
use crate::energies::Energy;
use crate::nn::DriftNet;
use crate::tensor::Tensor;

/// The guidance g(x_t) of generation step `i` at the states `x` (`[B, D]`), `[B, D]`.
/// `particle_noise` holds K·B·D standard normals, `[K, B, D]` (empty for DPS, K = 0).
#[allow(clippy::too_many_arguments)]
pub fn measurement_guidance<S: Kernels>(
    net: &DriftNet,
    params: &[S],
    sampler: &Sampler,
    energy: &dyn Energy,
    x: &[f32],
    i: usize,
    cond: Option<&[f32]>,
    particle_noise: &[f32],
) -> Vec<f32> {
    let d = sampler.dim;
    let rows = x.len() / d;
    let k = particle_noise.len() / (rows * d);
    assert_eq!(
        particle_noise.len(),
        k * rows * d,
        "particle noise must be [K, B, D]"
    );
    let step = sampler
        .ddpm_step(i)
        .expect("measurement guidance needs a DDPM sampler (validated)");
    let (tape, x_node, x0) = x0_on_tape(net, params, sampler, x, i, cond);
    let x0v: Vec<f64> = tape.value(x0).data.iter().map(|v| v.to_f64()).collect();
    let r_t = (1.0 - step.alpha_bar).sqrt();
    // −v per row: the upstream gradient of log mean_k exp(−L_k) with respect to x̂0.
    let mut seed = vec![0f32; rows * d];
    for b in 0..rows {
        let base = &x0v[b * d..(b + 1) * d];
        let v = if k == 0 {
            loss_grad(energy, base).1
        } else {
            let scored: Vec<(f64, Vec<f64>)> = (0..k)
                .map(|p| {
                    let z = &particle_noise[(p * rows + b) * d..(p * rows + b + 1) * d];
                    let particle: Vec<f64> = base
                        .iter()
                        .zip(z)
                        .map(|(&m, &z)| m + r_t * z as f64)
                        .collect();
                    loss_grad(energy, &particle)
                })
                .collect();
            let min = scored.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
            let w: Vec<f64> = scored.iter().map(|s| (min - s.0).exp()).collect();
            let total: f64 = w.iter().sum();
            let mut v = vec![0f64; d];
            for (wk, (_, g)) in w.iter().zip(&scored) {
                for (vj, gj) in v.iter_mut().zip(g) {
                    *vj += wk / total * gj;
                }
            }
            v
        };
        for (s, vj) in seed[b * d..(b + 1) * d].iter_mut().zip(&v) {
            *s = -*vj as f32;
        }
    }
    let grads = tape.backward(vec![(x0, Tensor::from_f32(rows, d, &seed))]);
    let g = grads[x_node.0]
        .as_ref()
        .expect("x_t reaches x̂0 through the affine head");
    g.data.iter().map(|v| v.to_f64() as f32).collect()
}

/// x̂0(x_t) of generation step `i` at the states `x` (`[B, D]`), `[B, D]` in f64: the point
/// DPS measures (exposed for checks against finite differences).
pub fn predicted_x0<S: Kernels>(
    net: &DriftNet,
    params: &[S],
    sampler: &Sampler,
    x: &[f32],
    i: usize,
    cond: Option<&[f32]>,
) -> Vec<f64> {
    let (tape, _, x0) = x0_on_tape(net, params, sampler, x, i, cond);
    tape.value(x0).data.iter().map(|v| v.to_f64()).collect()
}

/// A fresh tape holding x_t as its input leaf and x̂0(x_t): (tape, x_t, x̂0).
fn x0_on_tape<S: Kernels>(
    net: &DriftNet,
    params: &[S],
    sampler: &Sampler,
    x: &[f32],
    i: usize,
    cond: Option<&[f32]>,
) -> (Tape<S>, Var, Var) {
    let d = sampler.dim;
    let rows = x.len() / d;
    let step = sampler
        .ddpm_step(i)
        .expect("measurement guidance needs a DDPM sampler (validated)");
    let NetOnTape {
        mut tape,
        vars,
        temb,
        cond_emb,
        ..
    } = NetOnTape::bind(net, params, sampler, rows, cond);
    let x_node = tape.param(Tensor::from_f32(rows, d, x));
    let (eps, _) = net.policy_and_flow(&mut tape, &vars, x_node, cond_emb, temb, i, None, false);
    let x0 = tape.affine_head(
        x_node,
        eps,
        S::from_f64(step.x0_from_x),
        S::from_f64(step.x0_from_eps),
    );
    let x0 = if sampler.ddpm_clip() {
        tape.clip(x0, S::ONE)
    } else {
        x0
    };
    (tape, x_node, x0)
}

fn loss_grad(energy: &dyn Energy, x: &[f64]) -> (f64, Vec<f64>) {
    energy
        .measurement_loss_grad(x)
        .expect("a measurement target (validated: Digits)")
}
