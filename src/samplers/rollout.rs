//! Rollouts: the T-step loop that evaluates the policy, moves the states and records log p_F on
//! the tape (with gradients) or only its values (evaluation).

use super::bridge::log_pb_step;
use super::{Guidance, Sampler};
use crate::autodiff::{Tape, Var};
use crate::cpu::Kernels;
use crate::energies::Energy;
use crate::nn::{DriftNet, NetVars};
use crate::rng;
use crate::tensor::Tensor;

/// Where the states come from.
pub enum Path<'a> {
    /// Sample forward from x₀ = 0 under the policy, with extra exploration std ε. The normal for
    /// (step i, row b, dim j) is number `(i·total_rows + row0 + b)·D + j` of the stream with key
    /// `noise_key`, so shards of a batch draw what the whole batch would.
    Forward {
        noise_key: [u8; 32],
        row0: usize,
        total_rows: usize,
        explore_std: f64,
    },
    /// Follow given states `[T+1, B, D]` (backward trajectories, or replays in f64).
    Given(&'a [f32]),
}

/// What a rollout produced for its B rows.
#[derive(Debug)]
pub struct Rollout<S> {
    /// The tape with every step's graph (gradient rollouts only).
    pub tape: Option<Tape<S>>,
    pub vars: Option<NetVars>,
    /// One `[B, 1]` log p_F node per step (gradient rollouts only).
    pub logpf_nodes: Vec<Var>,
    /// One `[B, 1]` learned log F(x_i, t_i) node per step i = 0..T−1 (gradient rollouts of a
    /// network with a flow head only).
    pub flow_nodes: Vec<Var>,
    /// log Z(c) per row, `[B, 1]` (gradient rollouts of a conditional network with a flow
    /// head: the VAE's TB).
    pub log_z_node: Option<Var>,
    /// Per-step log p_F(x_{i+1}|x_i), `[B, T]` row-major (gradient and [`Record::States`]
    /// rollouts).
    pub step_log_pf: Vec<f64>,
    /// Per-step log p_B(x_i|x_{i+1}) of the same transitions, `[B, T]`, 0 at i = 0 (gradient
    /// and [`Record::States`] rollouts).
    pub step_log_pb: Vec<f64>,
    /// One drift node per step (the EM-form drift u, `[B, ≥D]`; gradient rollouts only): DPOK's
    /// per-step KL differentiates through it.
    pub drift_nodes: Vec<Var>,
    /// Per-step drifts u (first D columns), `[T, B, D]` (gradient and [`Record::Drifts`]
    /// rollouts).
    pub step_drift: Vec<f64>,
    /// The frozen prior's drifts at the same states, `[T, B, D]`: filled by the trainer for
    /// DPOK's per-step KL, empty otherwise.
    pub prior_step_drift: Vec<f64>,
    /// Σ_i log p_F(x_{i+1}|x_i) per row, summed in step order in f64.
    pub log_pf: Vec<f64>,
    /// Σ_{i≥1} log p_B(x_i|x_{i+1}) per row.
    pub log_pb: Vec<f64>,
    /// x_T, `[B, D]`.
    pub x_final: Vec<f32>,
    /// All states `[T+1, B, D]` (gradient rollouts and [`Record::States`] only).
    pub states: Vec<f32>,
}

/// Run `rows` trajectories of the policy with parameters `params` along `path`.
/// With `keep_graph` the whole computation stays on the returned tape for a backward pass;
/// without it each step's nodes are dropped once their values are read.
#[allow(clippy::too_many_arguments)]
pub fn rollout<S: Kernels>(
    net: &DriftNet,
    params: &[S],
    sampler: &Sampler,
    energy: &dyn Energy,
    rows: usize,
    path: Path<'_>,
    keep_graph: bool,
) -> Rollout<S> {
    rollout_conditional(net, params, sampler, energy, rows, path, keep_graph, None)
}

/// [`rollout`] for a conditional network: row b is conditioned on `cond[b]` (`[B, C]`), and
/// `energy` must be the matching conditioned batch (its row b scores state b given `cond[b]`).
#[allow(clippy::too_many_arguments)]
pub fn rollout_conditional<S: Kernels>(
    net: &DriftNet,
    params: &[S],
    sampler: &Sampler,
    energy: &dyn Energy,
    rows: usize,
    path: Path<'_>,
    keep_graph: bool,
    cond: Option<&[f32]>,
) -> Rollout<S> {
    let record = if keep_graph {
        Record::Graph
    } else {
        Record::Values
    };
    rollout_recording(net, params, sampler, energy, rows, path, record, cond)
}

/// What a rollout keeps besides the per-row sums and x_T.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// Nothing more: each step's graph is dropped once read.
    Values,
    /// The states `[T+1, B, D]` and the per-step terms without the graph (to score the same
    /// moves under another policy, as RTB's prior does, or for the two-pass gradient).
    States,
    /// [`Record::States`] and the per-step drifts (DPOK's prior, whose drifts enter the KL).
    Drifts,
    /// The whole graph, the states and the per-step terms, for a backward pass.
    Graph,
}

/// [`rollout_conditional`] keeping what `record` asks for.
#[allow(clippy::too_many_arguments)]
pub fn rollout_recording<S: Kernels>(
    net: &DriftNet,
    params: &[S],
    sampler: &Sampler,
    energy: &dyn Energy,
    rows: usize,
    path: Path<'_>,
    record: Record,
    cond: Option<&[f32]>,
) -> Rollout<S> {
    let keep_graph = record == Record::Graph;
    let keep_states = record != Record::Values;
    let keep_drifts = matches!(record, Record::Graph | Record::Drifts);
    let (d, t) = (sampler.dim, sampler.steps);
    let dt = sampler.dt();
    let mut bound = NetOnTape::bind(net, params, sampler, rows, cond);
    let guidance_scale = match sampler.guidance {
        Some(Guidance::Classifier(g)) => Some(bound.tape.constant(Tensor::from_f32(
            t,
            1,
            &sampler.guidance_scale(g),
        ))),
        _ => None,
    };
    // DPS / LGD-MC add ζ·g to the step's mean, i.e. (ζ/dt)·g to the EM-form drift.
    let measurement = match sampler.guidance {
        Some(Guidance::Measurement { zeta, particles }) => Some((
            particles,
            bound
                .tape
                .constant(Tensor::from_f32(1, 1, &[(zeta / dt) as f32])),
        )),
        _ => None,
    };
    let head = StepHead::new(net, &bound, guidance_scale);
    let NetOnTape {
        mut tape,
        vars,
        cond_emb,
        ..
    } = bound;
    let log_z_node = match cond_emb {
        Some(c) if keep_graph && net.flow == crate::nn::FlowHead::ConditionLogZ => {
            Some(net.conditional_log_z(&mut tape, &vars, c, rows))
        }
        _ => None,
    };

    let mut states = if keep_states {
        Vec::with_capacity((t + 1) * rows * d)
    } else {
        Vec::new()
    };
    let mut x = vec![0f32; rows * d];
    if let Path::Given(s) = &path {
        assert_eq!(
            s.len(),
            (t + 1) * rows * d,
            "given states must be [T+1, B, D]"
        );
        x.copy_from_slice(&s[..rows * d]);
    }
    let mut noise_rng = match &path {
        Path::Forward { noise_key, .. } => {
            Some(<rand_chacha::ChaCha8Rng as rand_core::SeedableRng>::from_seed(*noise_key))
        }
        Path::Given(_) => None,
    };
    if let (
        true,
        Path::Forward {
            row0, total_rows, ..
        },
        Some(rng),
    ) = (sampler.random_start(), &path, noise_rng.as_mut())
    {
        // x₀ ~ N(0, std²I) from the stream positions after all T steps' normals.
        rng::normals_at(rng, ((t * total_rows + row0) * d) as u64, &mut x);
        sampler.scale_start(&mut x);
    }
    if keep_states {
        states.extend_from_slice(&x);
    }
    let mut noise = vec![0f32; rows * d];
    let mut particle_noise = Vec::new();
    // Everything above lives for the whole rollout; gradient-free rollouts drop each step's
    // nodes back to here.
    let mark = tape.len();
    // LF includes the source density log p₀(x₀) (0 for the Brownian start at the origin).
    let mut log_pf: Vec<f64> = x.chunks_exact(d).map(|x0| sampler.log_p0(x0)).collect();
    let mut log_pb = vec![0f64; rows];
    let mut logpf_nodes = Vec::new();
    let mut flow_nodes = Vec::new();
    let per_step = if keep_states { rows * t } else { 0 };
    let (mut step_log_pf, mut step_log_pb) = (vec![0f64; per_step], vec![0f64; per_step]);
    let mut drift_nodes = Vec::new();
    let mut step_drift = Vec::with_capacity(if keep_drifts { t * rows * d } else { 0 });
    let mut x_node = tape.constant(to_tensor(&x, rows, d));

    for i in 0..t {
        let step = sampler.transition(i);
        let log_rate = step.log_rate();
        let (o, flow) = head.drift(&mut tape, sampler, energy, &x, x_node, i, keep_graph);
        flow_nodes.extend(flow);
        let o = match measurement {
            Some((k, zeta_over_dt)) => {
                // Particle normals for (step i, particle p, row b) sit after the trajectory's
                // T steps and x₀ in the stream: slot T + 1 + i·K + p.
                particle_noise.resize(k * rows * d, 0f32);
                if let (
                    Path::Forward {
                        row0, total_rows, ..
                    },
                    Some(rng),
                ) = (&path, noise_rng.as_mut())
                {
                    for (p, z) in particle_noise.chunks_exact_mut(rows * d).enumerate() {
                        let slot = t + 1 + i * k + p;
                        rng::normals_at(rng, ((slot * total_rows + row0) * d) as u64, z);
                    }
                } else {
                    assert!(k == 0, "LGD-MC draws its particles on its own forward path");
                }
                let g = super::dps::measurement_guidance(
                    net,
                    params,
                    sampler,
                    energy,
                    &x,
                    i,
                    cond,
                    &particle_noise,
                );
                let g = tape.constant(to_tensor(&g, rows, d));
                tape.langevin_add(o, zeta_over_dt, 0, g)
            }
            None => o,
        };
        let x_next: Vec<f32> = match &path {
            Path::Forward {
                row0,
                total_rows,
                explore_std,
                ..
            } => {
                let rng = noise_rng.as_mut().expect("forward path has a stream");
                rng::normals_at(rng, ((i * total_rows + row0) * d) as u64, &mut noise);
                let ov = tape.value(o);
                let eps2 = explore_std * explore_std;
                let fixed_std = (dt * step.rate + eps2).sqrt() as f32;
                let decay = step.decay as f32;
                let mut next = vec![0f32; rows * d];
                for b in 0..rows {
                    let orow = ov.row(b);
                    for j in 0..d {
                        // Step std √(dt·e^ℓ + ε²): the policy's variance plus exploration.
                        let std = match sampler.learned_range {
                            None => fixed_std,
                            Some(r) => {
                                let ell = log_rate + r * orow[d + j].to_f64().tanh();
                                (dt * ell.exp() + eps2).sqrt() as f32
                            }
                        };
                        let u = orow[j].to_f64() as f32;
                        let k = b * d + j;
                        next[k] = x[k] * decay + u * dt as f32 + std * noise[k];
                    }
                }
                next
            }
            Path::Given(s) => s[(i + 1) * rows * d..(i + 2) * rows * d].to_vec(),
        };
        if keep_drifts {
            let ov = tape.value(o);
            for b in 0..rows {
                step_drift.extend(ov.row(b)[..d].iter().map(|v| v.to_f64()));
            }
        }
        if keep_graph {
            drift_nodes.push(o);
        }
        let next_node = tape.constant(to_tensor(&x_next, rows, d));
        let lpf = log_pf_of_step(&mut tape, sampler, i, o, &x, x_node, next_node);
        for b in 0..rows {
            let lf = tape.value(lpf).data[b].to_f64();
            let lb = log_pb_step(
                sampler,
                i,
                &x[b * d..(b + 1) * d],
                &x_next[b * d..(b + 1) * d],
            );
            log_pf[b] += lf;
            log_pb[b] += lb;
            if keep_states {
                step_log_pf[b * t + i] = lf;
                step_log_pb[b * t + i] = lb;
            }
        }
        x = x_next;
        if keep_states {
            states.extend_from_slice(&x);
        }
        if keep_graph {
            logpf_nodes.push(lpf);
            x_node = next_node;
        } else {
            tape.truncate(mark);
            x_node = tape.constant(to_tensor(&x, rows, d));
        }
    }
    Rollout {
        tape: keep_graph.then_some(tape),
        vars: keep_graph.then_some(vars),
        logpf_nodes,
        flow_nodes,
        log_z_node,
        step_log_pf,
        step_log_pb,
        drift_nodes,
        step_drift,
        prior_step_drift: Vec::new(),
        log_pf,
        log_pb,
        x_final: x,
        states,
    }
}

/// What step i's drift needs besides the states: the bound network, its learned LP scale, and
/// classifier guidance's per-step scale of the ∇log R term.
pub(crate) struct StepHead<'a> {
    pub net: &'a DriftNet,
    pub vars: NetVars,
    pub temb: Var,
    pub cond_emb: Option<Var>,
    pub lp_scale: Option<Var>,
    pub guidance_scale: Option<Var>,
}

impl<'a> StepHead<'a> {
    /// The head of the network `on` bound, with classifier guidance's `[T, 1]` scale node.
    pub fn new<S>(net: &'a DriftNet, on: &NetOnTape<S>, guidance_scale: Option<Var>) -> Self {
        StepHead {
            net,
            vars: on.vars.clone(),
            temb: on.temb,
            cond_emb: on.cond_emb,
            lp_scale: on.lp_scale,
            guidance_scale,
        }
    }

    /// Step i's EM-form drift at states `x` (`[B, D]`, on the tape as `x_node`) and, with
    /// `want_flow`, its flow: the network with its LP term, for a DDPM the ε → x̂0 → drift
    /// map, and classifier guidance. Measurement guidance is added by the caller (it needs the
    /// rollout's noise stream).
    #[allow(clippy::too_many_arguments)]
    pub fn drift<S: Kernels>(
        &self,
        tape: &mut Tape<S>,
        sampler: &Sampler,
        energy: &dyn Energy,
        x: &[f32],
        x_node: Var,
        i: usize,
        want_flow: bool,
    ) -> (Var, Option<Var>) {
        let d = sampler.dim;
        // Classifier guidance rides on the LP term with a fixed scale (validation keeps it
        // apart from a learned LP); a DDPM's network predicts ε, so there it joins the drift
        // after ε → x̂0 instead.
        let (lp_scale, after_ddpm) = match sampler.ddpm {
            Some(_) => (self.lp_scale, self.guidance_scale),
            None => (self.lp_scale.or(self.guidance_scale), None),
        };
        // clip(∇log R(x)), once for whichever term uses it.
        let grad = (lp_scale.is_some() || after_ddpm.is_some()).then(|| {
            let mut grad = vec![0f32; x.len()];
            clipped_grad_log_reward(energy, sampler, x, &mut grad);
            tape.constant(to_tensor(&grad, x.len() / d, d))
        });
        // DIS's interpolated score replaces the LP input (validation keeps it from guidance).
        let interpolated = match (self.net.interpolated_score, grad) {
            (true, Some(g)) => Some(interpolated_score(tape, sampler, g, x_node, i)),
            _ => None,
        };
        let lp = lp_scale.zip(interpolated.map_or(grad, |(input, _)| Some(input)));
        let (o, flow) = self.net.policy_and_flow(
            tape,
            &self.vars,
            x_node,
            self.cond_emb,
            self.temb,
            i,
            lp,
            want_flow,
        );
        // DDPM: the network predicts ε; the step's drift comes from its x̂0.
        let o = match sampler.ddpm_step(i) {
            Some(s) => {
                let keep_log_var = sampler.learned_range.is_some();
                let (dt, clip) = (sampler.dt(), sampler.ddpm_clip());
                super::ddpm::ddpm_drift(tape, o, x_node, &s, dt, clip, keep_log_var)
            }
            None => o,
        };
        let o = match after_ddpm.zip(grad) {
            Some((scale, g)) => tape.langevin_add(o, scale, i, g),
            None => o,
        };
        let o = match interpolated {
            Some((_, reference)) => add_reference_drift(tape, o, reference),
            None => o,
        };
        (scale_control(tape, sampler, o, i), flow)
    }
}

/// DIS's interpolated score at step i (Berner et al.'s public DIS parametrisation), from the
/// constant `grad` = clip(∇log R(x)) and the states `x_node`: the LP input
/// σ²_i·[(1 − t_i)·(−x/std²) + t_i·grad] and the drift's parameter-free part σ²_i·x/std²
/// (`[B, D]` each). σ²_i is the step's noise rate and t_i = i/T runs from the VP's stationary
/// start (t = 0) to the target. With s(t) = 1 the drift is σ²_i·t_i·(x/std² + grad): zero at
/// the start, where the OU's own drift keeps N(0, std²I), and the time reversal's
/// σ²·∇log R − (base drift) at the target. The x parts stay on the tape, so PIS differentiates
/// through them; ∇log R stays detached, as in the LP.
pub(crate) fn interpolated_score<S: Kernels>(
    tape: &mut Tape<S>,
    sampler: &Sampler,
    grad: Var,
    x_node: Var,
    i: usize,
) -> (Var, Var) {
    let t = i as f64 * sampler.dt();
    let rate = sampler.transition(i).rate;
    let per_var = rate / sampler.noising.stationary_std().powi(2);
    let target = tape.scale(grad, S::from_f64(rate * t));
    let prior = tape.scale(x_node, S::from_f64(-per_var * (1.0 - t)));
    let input = tape.add(prior, target);
    let reference = tape.scale(x_node, S::from_f64(per_var));
    (input, reference)
}

/// `o` (`[B, D]` or `[B, 2D]`) plus the parameter-free drift `reference` (`[B, D]`) in its
/// first D columns, after the network's output clip.
pub(crate) fn add_reference_drift<S: Kernels>(tape: &mut Tape<S>, o: Var, reference: Var) -> Var {
    let one = tape.constant(Tensor::from_vec(1, 1, vec![S::ONE]));
    tape.langevin_add(o, one, 0, reference)
}

/// The EM-form drift of step i from the network's control `o` (`[B, D]`): `o` itself, or
/// under DDS's reference (`VpCosine`) `o` times the step's rate, so that the step's mean gains
/// var_i·u as in Vargas et al.'s integrator.
pub(crate) fn scale_control<S: Kernels>(
    tape: &mut Tape<S>,
    sampler: &Sampler,
    o: Var,
    i: usize,
) -> Var {
    match sampler.control_gain(i) {
        Some(gain) => tape.scale(o, S::from_f64(gain)),
        None => o,
    }
}

/// log p_F(x_{i+1} | x_i) of step i, `[B, 1]`, for the drift head `o` at `x` (`x_node`) and the
/// next states `next_node`: the Gaussian with mean decay·x + o·dt and the step's variance
/// (learned when the sampler learns it).
pub(crate) fn log_pf_of_step<S: Kernels>(
    tape: &mut Tape<S>,
    sampler: &Sampler,
    i: usize,
    o: Var,
    x: &[f32],
    x_node: Var,
    next_node: Var,
) -> Var {
    let step = sampler.transition(i);
    let d = sampler.dim;
    // p_F's mean is decay·x + u·dt: hand em_logpf the decayed state as its base.
    let base = if step.decay == 1.0 {
        x_node
    } else {
        let decay = step.decay as f32;
        let xs: Vec<f32> = x.iter().map(|&v| v * decay).collect();
        tape.constant(to_tensor(&xs, x.len() / d, d))
    };
    let range = sampler.learned_range.map(S::from_f64);
    tape.em_logpf(
        o,
        base,
        next_node,
        S::from_f64(sampler.dt()),
        S::from_f64(step.log_rate()),
        range,
    )
}

/// The per-rollout part of the network, bound to a fresh tape: the parameters, the time
/// embedding of every step, the LP scale s(t) and the condition embedding (conditional nets).
pub(crate) struct NetOnTape<S> {
    pub tape: Tape<S>,
    pub vars: NetVars,
    pub temb: Var,
    pub lp_scale: Option<Var>,
    pub cond_emb: Option<Var>,
}

impl<S: Kernels> NetOnTape<S> {
    /// Panics unless `cond` (`[rows, C]`) is given exactly when the network is conditional.
    pub fn bind(
        net: &DriftNet,
        params: &[S],
        sampler: &Sampler,
        rows: usize,
        cond: Option<&[f32]>,
    ) -> Self {
        let mut tape = Tape::<S>::new();
        let vars = net.bind(&mut tape, params);
        let ts = sampler.times();
        let temb = net.time_embedding(&mut tape, &vars, &ts);
        let lp_scale = net.langevin_scale(&mut tape, &vars, &ts);
        assert_eq!(
            cond.is_some(),
            net.cond_dim.is_some(),
            "a conditional network needs conditions, and only it takes them"
        );
        let cond_emb = cond.map(|c| {
            let width = net.cond_dim.expect("conditional network");
            assert_eq!(c.len(), rows * width, "conditions must be [B, C]");
            let node = tape.constant(to_tensor(c, rows, width));
            net.condition_embedding(&mut tape, &vars, node)
        });
        NetOnTape {
            tape,
            vars,
            temb,
            lp_scale,
            cond_emb,
        }
    }
}

/// The Langevin term's input: clip(nan_to_num(∇log R(x))) at ±`lgv_clip` into `grad` (`[B, D]`).
pub(crate) fn clipped_grad_log_reward(
    energy: &dyn Energy,
    sampler: &Sampler,
    x: &[f32],
    grad: &mut [f32],
) {
    energy.grad_log_reward(x, grad);
    for g in grad.iter_mut() {
        *g = clip_nan_to_num(*g, sampler.lgv_clip as f32);
    }
}

fn to_tensor<S: Kernels>(x: &[f32], rows: usize, cols: usize) -> Tensor<S> {
    Tensor::from_f32(rows, cols, x)
}

/// PyTorch's `nan_to_num` (NaN → 0, ±∞ → ±max) followed by clipping to ±`limit`.
#[inline]
pub fn clip_nan_to_num(g: f32, limit: f32) -> f32 {
    let g = if g.is_nan() { 0.0 } else { g };
    g.clamp(-limit, limit)
}
