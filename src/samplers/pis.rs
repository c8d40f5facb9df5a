//! The PIS rollout (spec §3 "PIS"): the whole simulation on the tape, so the reverse KL
//! E[log p_F(τ) − log p_B(τ|x_T) − log R(x_T)] can be differentiated by reparametrisation.
//!
//! Unlike [`super::rollout`], whose states are constants (GFlowNet losses differentiate
//! log p_F along fixed trajectories), here x_{i+1} = x_i + u(x_i, t_i)·dt + √(dt·e^ℓ)·ξ_i is a
//! tape node, and so are log p_B(x_i | x_{i+1}) and log R(x_T). With a fixed variance log p_F
//! does not depend on θ once ξ is fixed (its residual is the noise itself), but it is kept on the
//! tape: the learned variance needs it, and the two routes cancel exactly in the algebra.
//! The Langevin term uses the detached clip(∇log R(x_i)), as the reference does.
//!
//! The noise for (step i, row b, dim j) is the same stream position as a forward GFlowNet
//! rollout's ([`super::Path::Forward`]), so shards draw what the whole batch would.
//!
//! Under a VP reference (`sampler.noising`) this is the reverse KL against the OU noising process
//! from x₀ ~ N(0, std²I), whose density enters LF: with Euler–Maruyama steps (`Vp`) the objective of
//! DIS (Berner et al. 2022), with every step the exact OU transition (`VpExponential`, the
//! exponential integrator) that of DDS (Vargas et al. 2023), and with DDS's own cosine grid and
//! variance-scaled control (`VpCosine`) DDS as its authors run it. The kernels come from
//! [`Sampler::transition`], shared with the GFlowNet losses.

use super::rollout::{
    add_reference_drift, clipped_grad_log_reward, interpolated_score, scale_control, NetOnTape,
};
use super::Sampler;
use crate::autodiff::{Tape, Var};
use crate::cpu::Kernels;
use crate::energies::Energy;
use crate::nn::{DriftNet, NetVars};
use crate::rng;
use crate::tensor::Tensor;

/// A PIS rollout of B rows, with every quantity of the loss on its tape.
pub struct PisRollout<S> {
    pub tape: Tape<S>,
    pub vars: NetVars,
    /// `[B, 1]` per step i = 0..T−1.
    pub logpf_nodes: Vec<Var>,
    /// `[B, 1]` per step i = 1..T−1 under the Brownian bridge (p_B(x₀|x₁) = 1: x₀ = 0 surely),
    /// every step i = 0..T−1 under VP.
    pub logpb_nodes: Vec<Var>,
    /// log R(x_T), `[B, 1]`, with ∇log R as its Jacobian.
    pub log_r_node: Var,
    /// LF, LB and log R per row, summed in step order in f64.
    pub log_pf: Vec<f64>,
    pub log_pb: Vec<f64>,
    pub log_r: Vec<f64>,
    /// x_T, `[B, D]` (rounded to f32).
    pub x_final: Vec<f32>,
}

impl<S: Kernels> PisRollout<S> {
    /// The backward seeds of the PIS loss `scale`·Σ_b (LF_b − LB_b − log R(x_T,b)): +scale into
    /// every log p_F node, −scale into every log p_B node and into log R.
    pub fn loss_seeds(&self, scale: f64) -> Vec<(Var, Tensor<S>)> {
        let rows = self.log_pf.len();
        let c = |v: f64| Tensor::from_vec(rows, 1, vec![S::from_f64(v); rows]);
        self.logpf_nodes
            .iter()
            .map(|&n| (n, c(scale)))
            .chain(self.logpb_nodes.iter().map(|&n| (n, c(-scale))))
            .chain(std::iter::once((self.log_r_node, c(-scale))))
            .collect()
    }
}

/// Simulate `rows` trajectories with parameters `params`, drawing normals for rows
/// `row0..row0+rows` of a `total_rows` batch from the stream `noise_key`.
#[allow(clippy::too_many_arguments)]
pub fn rollout_pis<S: Kernels>(
    net: &DriftNet,
    params: &[S],
    sampler: &Sampler,
    energy: &dyn Energy,
    rows: usize,
    noise_key: [u8; 32],
    row0: usize,
    total_rows: usize,
) -> PisRollout<S> {
    rollout_pis_conditional(
        net, params, sampler, energy, rows, noise_key, row0, total_rows, None,
    )
}

/// [`rollout_pis`] for a conditional network: row b conditioned on `cond[b]` (`[B, C]`), with
/// `energy` the matching conditioned batch.
#[allow(clippy::too_many_arguments)]
pub fn rollout_pis_conditional<S: Kernels>(
    net: &DriftNet,
    params: &[S],
    sampler: &Sampler,
    energy: &dyn Energy,
    rows: usize,
    noise_key: [u8; 32],
    row0: usize,
    total_rows: usize,
    cond: Option<&[f32]>,
) -> PisRollout<S> {
    let (d, t) = (sampler.dim, sampler.steps);
    let dt = sampler.dt();
    let NetOnTape {
        mut tape,
        vars,
        temb,
        lp_scale,
        cond_emb,
    } = NetOnTape::bind(net, params, sampler, rows, cond);
    let mut noise_rng = <rand_chacha::ChaCha8Rng as rand_core::SeedableRng>::from_seed(noise_key);
    let mut noise = vec![0f32; rows * d];
    let range = sampler.learned_range.map(S::from_f64);
    // x₀ = 0 (Brownian), or x₀ ~ N(0, std²I) (VP: DIS, DDS) from the stream positions after all T steps'
    // normals, as the GFlowNet rollout draws it; x₀ is a constant either way.
    let mut x0 = vec![0f32; rows * d];
    if sampler.random_start() {
        rng::normals_at(
            &mut noise_rng,
            ((t * total_rows + row0) * d) as u64,
            &mut x0,
        );
        sampler.scale_start(&mut x0);
    }
    let mut x_node = tape.constant(Tensor::from_f32(rows, d, &x0));
    let mut log_pf: Vec<f64> = x0.chunks_exact(d).map(|r| sampler.log_p0(r)).collect();
    let mut log_pb = vec![0f64; rows];
    let (mut logpf_nodes, mut logpb_nodes) = (Vec::with_capacity(t), Vec::with_capacity(t));
    for i in 0..t {
        let step = sampler.transition(i);
        let log_sigma2 = S::from_f64(step.log_rate());
        let mut reference = None;
        let lp = lp_scale.map(|scale| {
            let x32 = to_f32(&tape.value(x_node).data);
            let mut g = vec![0f32; rows * d];
            clipped_grad_log_reward(energy, sampler, &x32, &mut g);
            let g = tape.constant(Tensor::from_f32(rows, d, &g));
            if !net.interpolated_score {
                return (scale, g);
            }
            let (input, r) = interpolated_score(&mut tape, sampler, g, x_node, i);
            reference = Some(r);
            (scale, input)
        });
        let (o, _) = net.policy_and_flow(&mut tape, &vars, x_node, cond_emb, temb, i, lp, false);
        let o = match reference {
            Some(r) => add_reference_drift(&mut tape, o, r),
            None => o,
        };
        let o = scale_control(&mut tape, sampler, o, i);
        rng::normals_at(
            &mut noise_rng,
            ((i * total_rows + row0) * d) as u64,
            &mut noise,
        );
        let xi = Tensor::from_f32(rows, d, &noise);
        // p_F's mean is decay·x + u·dt (decay = 1 under the Brownian reference).
        let base = if step.decay == 1.0 {
            x_node
        } else {
            tape.scale(x_node, S::from_f64(step.decay))
        };
        let next = tape.em_step(o, base, xi, S::from_f64(dt), log_sigma2, range);
        let lpf = tape.em_logpf(o, base, next, S::from_f64(dt), log_sigma2, range);
        for (acc, v) in log_pf.iter_mut().zip(&tape.value(lpf).data) {
            *acc += v.to_f64();
        }
        logpf_nodes.push(lpf);
        if let Some((ratio, var)) = step.backward {
            let lpb = tape.bridge_logpb(x_node, next, S::from_f64(ratio), S::from_f64(var));
            for (acc, v) in log_pb.iter_mut().zip(&tape.value(lpb).data) {
                *acc += v.to_f64();
            }
            logpb_nodes.push(lpb);
        }
        x_node = next;
    }
    let (log_r, jac) = log_reward_and_grad(energy, &tape.value(x_node).data, rows, d);
    let values = Tensor::from_vec(rows, 1, log_r.iter().map(|&v| S::from_f64(v)).collect());
    let x_final = to_f32(&tape.value(x_node).data);
    let log_r_node = tape.row_function(x_node, values, jac);
    PisRollout {
        tape,
        vars,
        logpf_nodes,
        logpb_nodes,
        log_r_node,
        log_pf,
        log_pb,
        log_r,
        x_final,
    }
}

/// log R and ∇log R of the rows of `x` (`[B, D]`): the target's batched f32 methods when
/// training in f32, its exact f64 path under an f64 gradient check.
fn log_reward_and_grad<S: Kernels>(
    energy: &dyn Energy,
    x: &[S],
    rows: usize,
    d: usize,
) -> (Vec<f64>, Tensor<S>) {
    let mut log_r = vec![0f64; rows];
    if S::IS_F64 {
        let mut jac = vec![0f64; rows * d];
        for b in 0..rows {
            let xb: Vec<f64> = x[b * d..(b + 1) * d].iter().map(|v| v.to_f64()).collect();
            log_r[b] = energy.log_reward_grad_f64(&xb, &mut jac[b * d..(b + 1) * d]);
        }
        let jac = jac.into_iter().map(S::from_f64).collect();
        (log_r, Tensor::from_vec(rows, d, jac))
    } else {
        let x32 = to_f32(x);
        let mut g = vec![0f32; rows * d];
        energy.log_reward(&x32, &mut log_r);
        energy.grad_log_reward(&x32, &mut g);
        (log_r, Tensor::from_f32(rows, d, &g))
    }
}

fn to_f32<S: Kernels>(x: &[S]) -> Vec<f32> {
    x.iter().map(|v| v.to_f64() as f32).collect()
}
