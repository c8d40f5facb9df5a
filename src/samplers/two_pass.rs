//! The memory-light second pass of the two-pass gradient (spec rtb2024 §1.5, §7.4).
//!
//! Every per-trajectory loss (TB, VarGrad, RTB, MLE, the RL baselines) depends on the policy
//! only through LF_b = Σ_i log p_F(x_{i+1} | x_i) with the states detached, so
//!   ∇θ L = Σ_b ∂L/∂LF_b · Σ_i ∇θ log p_F(x_{i+1} | x_i).
//! The first pass samples the states without a graph and gives the residuals, hence ∂L/∂LF_b;
//! this pass recomputes one step at a time on a fresh tape, seeds its log p_F with ∂L/∂LF_b and
//! accumulates the parameter gradient. Memory is one step's graph instead of T.
//!
//! The sum over steps is taken in step order in f64; the whole-trajectory tape sums the same
//! terms in reverse order in the working precision, so the two agree to rounding, not bitwise.

use super::rollout::{log_pf_of_step, NetOnTape, StepHead};
use super::Sampler;
use crate::cpu::Kernels;
use crate::energies::Energy;
use crate::nn::DriftNet;
use crate::tensor::Tensor;

/// Σ_b `seeds[b]`·Σ_i ∇θ log p_F(x_{i+1} | x_i) over the trajectories `states`
/// (`[T+1, B, D]`), `[P]` in f64. `energy` supplies ∇log R for a Langevin-parametrised
/// network; `cond` (`[B, C]`) conditions a conditional network.
#[allow(clippy::too_many_arguments)]
pub fn step_by_step_grad<S: Kernels>(
    net: &DriftNet,
    params: &[S],
    sampler: &Sampler,
    energy: &dyn Energy,
    states: &[f32],
    seeds: &[f64],
    cond: Option<&[f32]>,
) -> Vec<f64> {
    assert!(
        sampler.guidance.is_none(),
        "guided samplers train nothing: no second pass"
    );
    let (d, t, rows) = (sampler.dim, sampler.steps, seeds.len());
    assert_eq!(
        states.len(),
        (t + 1) * rows * d,
        "states must be [T+1, B, D]"
    );
    let seed_column: Vec<f32> = seeds.iter().map(|&s| s as f32).collect();
    let mut total = vec![0f64; net.num_params()];
    for i in 0..t {
        let x = &states[i * rows * d..(i + 1) * rows * d];
        let next = &states[(i + 1) * rows * d..(i + 2) * rows * d];
        let bound = NetOnTape::bind(net, params, sampler, rows, cond);
        let head = StepHead::new(net, &bound, None);
        let mut tape = bound.tape;
        let x_node = tape.constant(Tensor::from_f32(rows, d, x));
        let next_node = tape.constant(Tensor::from_f32(rows, d, next));
        let (o, _) = head.drift(&mut tape, sampler, energy, x, x_node, i, false);
        let lpf = log_pf_of_step(&mut tape, sampler, i, o, x, x_node, next_node);
        let grads = tape.backward(vec![(lpf, Tensor::from_f32(rows, 1, &seed_column))]);
        for (acc, g) in total.iter_mut().zip(net.flat_grads(&head.vars, &grads)) {
            *acc += g.to_f64();
        }
    }
    total
}
