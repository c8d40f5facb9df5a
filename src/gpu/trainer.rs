//! A whole TB / VarGrad training iteration on the GPU: the T-step Euler–Maruyama rollout with the
//! drift network, the target's log R at x_T, the loss, the backward pass through every step and
//! the time embedding, the gradient-norm clip and Adam — recorded into ONE command encoder (one
//! compute pass) and submitted once; only six scalars come back per iteration.
//!
//! Dispatches (T steps, L joint layers, P parameter blocks): the noise (1), the time embedding
//! (4), one fused forward per step (T, policy_step.wgsl), log R (1), the loss (1), one fused
//! backward per step (T), the weight gradients as one product over all T·B rows per layer
//! (L + 2), the time embedding's backward (6), the gradient norm (P + 1) and Adam (P): about
//! 2T + 2P + L + 16 in all (≈ 250 at T = 100), against ≈ 23 per step with one dispatch per op.
//!
//! Every dispatch is prepared once, when the trainer is built (fixed buffers, fixed shapes), and
//! re-recorded each iteration; what changes per iteration lives in storage buffers (the noise
//! key or the noise, the exploration std, Adam's step constants).
//!
//! Noise ([`NoiseSource`]): the stream is the CPU's — ChaCha8 keyed (seed, "train-noise", it),
//! normal number (i·B + b)·D + j for (step i, row b, dim j), as `Path::Forward` with one shard.
//! `Generate` (the default) runs the ChaCha8 block function in-shader: its words equal the CPU's
//! bit for bit, its f32 Box–Muller normals are within 2⁻¹⁹ relative of the CPU's f64-derived ones
//! (tests/gpu_noise.rs). `Upload` has the host draw the CPU's normals and upload them, bitwise the
//! CPU's noise; it moves 4·T·B·D bytes per iteration (192 MB at D = 1600) and costs the host's
//! Box–Muller, so it measured 2× slower even on lavapipe (benches/gpu_kernels.rs `gpu/noise`).
//!
//! Shapes: B batch, T steps, D state dim, H hidden, F harmonics, L joint hidden layers.
//! Memory: states [(T+1)·B, D]; per layer [T·B, H] activations (h, a_k, z_k, dz_k, dh) and
//! [T·B, 2D] outputs (o_raw, o, d_o); noise [T·B, D].
//! With the Langevin parametrization, s(t_i) runs once per iteration on T rows, ∇log R(x_i) is one
//! energies dispatch per step before the fused step (which adds s ⊙ clip(∇log R)), and its
//! gradient ∂L/∂s is one dispatch (lp_scale_grad) before the scale net's backward.
//! With a learned variance the fused step computes var_j = dt·exp(ℓ_j), its normaliser and the
//! step std √(var_j + ε²) per coordinate in f32 (the CPU's std is rounded from f64).
//! Not on the GPU (refused by [`unsupported`]): H > 256, more than 3 joint layers, LayerNorm.

use super::kernels::adam::{self, AdamStepConfig};
use super::kernels::em_step::EmStepConfig;
use super::kernels::energies::{self, Target};
use super::kernels::losses::{self, LossBuffers};
use super::kernels::policy_step::{self, PolicyBuffers, PolicyShape};
use super::kernels::{chacha, gelu, linear, time_features, transpose, Dispatch};
use super::{GpuContext, GpuError, GpuVec};
use crate::config::{ExperimentConfig, TargetConfig};
use crate::nn::{DriftNet, Group};
use crate::rng;
use crate::samplers::Sampler;

/// One parameter block's device state.
struct Block {
    name: String,
    group: Group,
    rows: usize,
    cols: usize,
    param: GpuVec,
    grad: GpuVec,
    m: GpuVec,
    v: GpuVec,
}

/// The rollout's stored activations, [T·B, ·] each (row i·B + b).
struct Activations {
    h: GpuVec,
    a: Vec<GpuVec>,
    z: Vec<GpuVec>,
    o_raw: GpuVec,
    o: GpuVec,
    d_o: GpuVec,
    dz: Vec<GpuVec>,
    dh: GpuVec,
    dtemb: GpuVec,
    /// ∇log R(x_i) [T·B, D] (LP only; else 1 element).
    grad_r: GpuVec,
    /// Stand-ins for unused bindings: one for writable slots, one for read-only ones (a buffer
    /// may not be both in one dispatch).
    dummy: GpuVec,
    dummy_read: GpuVec,
}

/// The Langevin scale network's buffers, [T, ·] each: features, pre-activations u_k, GELU
/// outputs g_k, the scale s [T, S], and their gradients.
struct LangevinNet {
    feats: GpuVec,
    u: Vec<GpuVec>,
    g: Vec<GpuVec>,
    scale: GpuVec,
    dscale: GpuVec,
    dg: GpuVec,
    du: GpuVec,
    dfeats: GpuVec,
}

/// Where the training noise comes from (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NoiseSource {
    /// ChaCha8 in-shader: the CPU's words bitwise, f32 normals within 2⁻¹⁹ relative.
    #[default]
    Generate,
    /// The host's normals, uploaded: bitwise the CPU's noise.
    Upload,
}

/// Rows per chunk of the split-K weight-gradient products over the rollout's T·B rows.
const DW_CHUNK: usize = 256;

/// Parameters, Adam m, Adam v: flat host vectors in layout order.
pub type HostState = (Vec<f32>, Vec<f32>, Vec<f32>);

/// What one GPU iteration reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuStepStats {
    pub loss: f64,
    /// The learned log Z (TB) or −mean ζ (VarGrad) the loss used.
    pub log_z: f64,
    /// Non-finite values among the per-trajectory log p_F, log p_B, log R.
    pub non_finite: u32,
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f64,
}

/// The device-resident trainer of one experiment.
pub struct GpuTrainer {
    ctx: &'static GpuContext,
    batch: usize,
    dim: usize,
    steps: usize,
    blocks: Vec<Block>,
    noise_source: NoiseSource,
    noise: GpuVec,
    noise_key: GpuVec,
    noise_host: Vec<f32>,
    step_std: GpuVec,
    dt: f64,
    sigma2: f64,
    /// Packed policy weights (as stored, for the backward; transposed weights for the forward)
    /// and, per policy block, (block index, byte offset, is a weight matrix): every block is
    /// copied into `weights`, the biases also into `weights_t`; the plan transposes the weight
    /// matrices into `weights_t`.
    weights: GpuVec,
    weights_t: GpuVec,
    packing: Vec<(usize, u64, bool)>,
    /// Dispatches recorded every iteration, in order (noise, forward, loss, backward, norm).
    plan: Vec<Dispatch>,
    stats: GpuVec,
    scale: GpuVec,
    /// One Adam dispatch per block, built on first use; its step constants are rewritten
    /// (`set_step`) before each submission.
    adam: Vec<Option<adam::AdamStepDispatch>>,
    // Kept alive for the plan's bind groups.
    _keep: Vec<GpuVec>,
    _acts: Activations,
    _lp: Option<LangevinNet>,
}

/// Why a config cannot train on the GPU backend.
pub fn unsupported(cfg: &ExperimentConfig) -> Option<String> {
    use crate::config::Method;
    if !matches!(cfg.train.method, Method::Tb | Method::VarGrad) {
        return Some(format!(
            "train.method {:?} is CPU-only for now (the GPU backend trains TB and VarGrad)",
            cfg.train.method
        ));
    }
    if !matches!(
        cfg.target,
        TargetConfig::Gmm25
            | TargetConfig::Gmm9
            | TargetConfig::Funnel { .. }
            | TargetConfig::ManyWell { .. }
    ) {
        return Some(format!(
            "the target {:?} has no GPU energy kernel yet",
            cfg.target
        ));
    }
    if cfg.train.two_pass {
        return Some("train.two_pass is CPU-only (the GPU trainer keeps its own graph)".into());
    }
    if cfg.network.layer_norm {
        return Some(
            "network.layer_norm is CPU-only for now (the GPU's fused policy step has no \
             LayerNorm; shaders/layer_norm.wgsl is the kernel it would call)"
                .into(),
        );
    }
    if cfg.train.lr_variance_factor.is_some() {
        return Some(
            "train.lr_variance_factor is CPU-only (the GPU's Adam has one rate per group)".into(),
        );
    }
    if !cfg.sampler.noising.is_brownian() {
        return Some("the VP noising (sampler.noising) is CPU-only for now".into());
    }
    if cfg.train.off_policy.is_some() {
        return Some(
            "off-policy training (train.off_policy: backward trajectories, replay buffer, local \
             search) is CPU-only for now"
                .into(),
        );
    }
    PolicyShape {
        batch: cfg.train.batch,
        dim: cfg.dim(),
        hidden: cfg.network.hidden,
        layers: cfg.network.joint_layers,
        steps: cfg.sampler.steps,
        out_clip: cfg.network.out_clip,
        lp: None,
        learned: None,
    }
    .unsupported()
}

/// Why `cfg`'s rollout does not fit `ctx`'s buffer limits, if it does not: the largest buffer is
/// the policy output [T·B, 2D] (o_raw, o and d_o each), then the states [(T+1)·B, D].
pub fn does_not_fit(ctx: &GpuContext, cfg: &ExperimentConfig) -> Option<String> {
    let (t, b, d, h) = (
        cfg.sampler.steps as u64,
        cfg.train.batch as u64,
        cfg.dim() as u64,
        cfg.network.hidden as u64,
    );
    let largest = 4 * [t * b * 2 * d, (t + 1) * b * d, t * b * h]
        .into_iter()
        .max()
        .unwrap_or(0);
    let limits = ctx.device.limits();
    let limit = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size);
    (largest > limit).then(|| {
        format!(
            "the rollout needs a {:.0} MiB storage buffer (T·B·2D floats: sampler.steps = {t}, \
             train.batch = {b}, D = {d}) but {} allows {:.0} MiB per binding; lower the batch or \
             the steps, or train on the CPU",
            largest as f64 / 1048576.0,
            ctx.describe(),
            limit as f64 / 1048576.0
        )
    })
}

fn target_of(cfg: &ExperimentConfig) -> Target {
    match &cfg.target {
        TargetConfig::Gmm25 => Target::gmm25(),
        TargetConfig::Gmm9 => Target::gmm9(),
        TargetConfig::Funnel { variant, .. } => Target::Funnel(*variant),
        TargetConfig::ManyWell { .. } => Target::ManyWell,
        other => unreachable!("`unsupported` refuses {other:?} before a plan is built"),
    }
}

impl GpuTrainer {
    /// Uploads `params` (layout `net.layout`) and zero Adam moments, and prepares every dispatch.
    pub fn new(
        ctx: &'static GpuContext,
        cfg: &ExperimentConfig,
        net: &DriftNet,
        sampler: &Sampler,
        params: &[f32],
        noise_source: NoiseSource,
    ) -> Result<Self, GpuError> {
        if let Some(why) = unsupported(cfg).or_else(|| does_not_fit(ctx, cfg)) {
            return Err(GpuError::Validation {
                what: "GPU backend".into(),
                message: why,
            });
        }
        let (b, d, t) = (cfg.train.batch, sampler.dim, sampler.steps);
        let (h, f, l) = (net.hidden, net.harmonics, net.joint_layers);
        let blocks: Vec<Block> = net
            .layout
            .specs
            .iter()
            .map(|s| Block {
                name: s.name.clone(),
                group: s.group,
                rows: s.rows,
                cols: s.cols,
                param: GpuVec::from_slice(ctx, &params[s.range()], &s.name),
                grad: GpuVec::zeros(ctx, s.len(), "grad"),
                m: GpuVec::zeros(ctx, s.len(), "adam m"),
                v: GpuVec::zeros(ctx, s.len(), "adam v"),
            })
            .collect();
        let idx = |name: &str| -> usize {
            blocks
                .iter()
                .position(|bl| bl.name == name)
                .unwrap_or_else(|| panic!("no parameter block {name}"))
        };
        let mut plan = Vec::new();
        let mut keep = Vec::new();

        // The noise of the whole rollout, [T·B, D] (Generate; Upload writes the buffer instead).
        let noise = GpuVec::zeros(ctx, t * b * d, "noise [T·B, D]");
        let noise_key = chacha::upload_key(ctx, &[0u8; 32]);
        if noise_source == NoiseSource::Generate {
            plan.push(chacha::prepare_chacha8_normals(ctx, &noise_key, 0, &noise)?);
        }

        // Time embedding T(t_i) for all T steps at once: [T, H].
        let times: Vec<f32> = sampler.times().iter().map(|&v| v as f32).collect();
        let freqs: Vec<f32> = net.frequencies().iter().map(|&v| v as f32).collect();
        let g_times = GpuVec::from_slice(ctx, &times, "times");
        let g_freqs = GpuVec::from_slice(ctx, &freqs, "freqs");
        let feats = GpuVec::zeros(ctx, t * 2 * f, "time features");
        let t1 = GpuVec::zeros(ctx, t * h, "t.lin1 out");
        let t1a = GpuVec::zeros(ctx, t * h, "t.lin1 gelu");
        let temb = GpuVec::zeros(ctx, t * h, "temb");
        let bl = |name: &str| &blocks[idx(name)];
        let phase = bl("t.phase");
        plan.push(time_features::prepare_time_features(
            ctx,
            &g_times,
            &g_freqs,
            &phase.param,
            &feats,
        )?);
        let lin = |x: &GpuVec, name: &str, y: &GpuVec, rows: usize| {
            let (w, bias) = (bl(&format!("{name}.w")), bl(&format!("{name}.b")));
            linear::prepare_linear_forward(ctx, x, &w.param, &bias.param, y, rows, w.cols, w.rows)
        };
        plan.push(lin(&feats, "t.lin1", &t1, t)?);
        plan.push(gelu::prepare_gelu_forward(ctx, &t1, &t1a)?);
        plan.push(lin(&t1a, "t.lin2", &temb, t)?);

        // The Langevin scale s(t_i) for all T steps: [T, S] (per-op kernels, T rows).
        let lp_width = net.langevin.map(|(_, per_dim)| if per_dim { d } else { 1 });
        let lp_net = match net.langevin {
            None => None,
            Some((layers_lp, _)) => {
                let w = lp_width.unwrap_or(1);
                let feats = GpuVec::zeros(ctx, t * 2 * f, "lp features");
                let u: Vec<GpuVec> = (0..layers_lp)
                    .map(|_| GpuVec::zeros(ctx, t * h, "lp u"))
                    .collect();
                let g: Vec<GpuVec> = (0..layers_lp)
                    .map(|_| GpuVec::zeros(ctx, t * h, "lp g"))
                    .collect();
                let scale = GpuVec::zeros(ctx, t * w, "lp scale");
                plan.push(time_features::prepare_time_features(
                    ctx,
                    &g_times,
                    &g_freqs,
                    &bl("lp.phase").param,
                    &feats,
                )?);
                plan.push(lin(&feats, "lp.lin1", &u[0], t)?);
                for k in 0..layers_lp {
                    plan.push(gelu::prepare_gelu_forward(ctx, &u[k], &g[k])?);
                    if k + 1 < layers_lp {
                        plan.push(lin(&g[k], &format!("lp.{k}"), &u[k + 1], t)?);
                    }
                }
                plan.push(lin(&g[layers_lp - 1], "lp.out", &scale, t)?);
                Some(LangevinNet {
                    feats,
                    u,
                    g,
                    scale,
                    dscale: GpuVec::zeros(ctx, t * w, "lp dscale"),
                    dg: GpuVec::zeros(ctx, t * h, "lp dg"),
                    du: GpuVec::zeros(ctx, t * h, "lp du"),
                    dfeats: GpuVec::zeros(ctx, t * 2 * f, "lp dfeats"),
                })
            }
        };

        // The rollout: one fused dispatch per step (policy_step.wgsl), activations in [T·B, ·].
        let shape = PolicyShape {
            batch: b,
            dim: d,
            hidden: h,
            layers: l,
            steps: t,
            out_clip: net.out_clip,
            lp: lp_width.map(|w| (w, sampler.lgv_clip)),
            learned: sampler.learned_range.map(|r| (r, sampler.sigma2)),
        };
        let (offsets, packed_len) = shape.packed_offsets();
        let weights = GpuVec::zeros(ctx, packed_len, "packed policy weights");
        let weights_t = GpuVec::zeros(ctx, packed_len, "packed policy weights, transposed");
        let packing: Vec<(usize, u64, bool)> = offsets
            .iter()
            .map(|(name, off)| {
                let bytes = (off * size_of::<f32>()) as u64;
                (idx(name), bytes, name.ends_with(".w"))
            })
            .collect();
        for (name, off, o, k) in shape.weight_blocks() {
            plan.push(transpose::prepare_transpose_into(
                ctx,
                &bl(&name).param,
                o,
                k,
                &weights_t,
                off,
            )?);
        }
        let n = t * b;
        let states = GpuVec::zeros(ctx, (t + 1) * b * d, "states [(T+1)·B, D]");
        let step_std = GpuVec::zeros(ctx, 2, "step std, exploration variance");
        let lf = GpuVec::zeros(ctx, b, "sum log p_F");
        let lb = GpuVec::zeros(ctx, b, "sum log p_B");
        let d_lf = GpuVec::zeros(ctx, b, "dL/dLF");
        let act = |what: &str, cols: usize| GpuVec::zeros(ctx, n * cols, what);
        let acts = Activations {
            h: act("h", h),
            a: (0..=l).map(|_| act("a", h)).collect(),
            z: (0..l).map(|_| act("z", h)).collect(),
            o_raw: act("o_raw", 2 * d),
            o: act("o", 2 * d),
            d_o: act("d_o", 2 * d),
            dz: (0..l).map(|_| act("dz", h)).collect(),
            dh: act("dh", h),
            dtemb: GpuVec::zeros(ctx, t * h, "dtemb"),
            grad_r: GpuVec::zeros(ctx, if lp_net.is_some() { n * d } else { 1 }, "grad log R"),
            dummy: GpuVec::zeros(ctx, 1, "unused binding"),
            dummy_read: GpuVec::zeros(ctx, 1, "unused read-only binding"),
        };
        let bufs = PolicyBuffers {
            weights: &weights,
            weights_t: &weights_t,
            temb: &temb,
            noise: &noise,
            step_std: &step_std,
            xs: &states,
            h: &acts.h,
            a: &acts.a,
            z: &acts.z,
            o_raw: &acts.o_raw,
            o: &acts.o,
            log_pf: &lf,
            log_pb: &lb,
            d_log_pf: &d_lf,
            d_o: &acts.d_o,
            dz: &acts.dz,
            dh: &acts.dh,
            dtemb: &acts.dtemb,
            lp_scale: lp_net.as_ref().map_or(&acts.dummy_read, |n| &n.scale),
            grad_r: &acts.grad_r,
            dscale: lp_net.as_ref().map_or(&acts.dummy, |n| &n.dscale),
            dummy: &acts.dummy,
        };
        let em = |i: usize| EmStepConfig {
            dt: sampler.dt(),
            sigma2: sampler.sigma2,
            explore_std: 0.0,
            step: i,
            accumulate: i > 0,
        };
        let target = target_of(cfg);
        let tdata = energies::target_buffer(ctx, &target);
        let log_r = GpuVec::zeros(ctx, b, "log R");
        let grad_r = GpuVec::zeros(ctx, b * d, "grad log R(x_T)");
        for i in 0..t {
            if lp_net.is_some() {
                // ∇log R(x_i) into rows i·B… of grad_r (log R itself is not needed here).
                plan.push(energies::prepare_log_reward_grad_rows(
                    ctx,
                    &target,
                    d,
                    &tdata,
                    &states,
                    i * b,
                    &log_r,
                    &acts.grad_r,
                    i * b,
                )?);
            }
            plan.push(policy_step::prepare_policy_forward(
                ctx,
                &shape,
                &em(i),
                &bufs,
            )?);
        }

        // log R(x_T) and the loss.
        plan.push(energies::prepare_log_reward_grad_rows(
            ctx,
            &target,
            d,
            &tdata,
            &states,
            t * b,
            &log_r,
            &grad_r,
            0,
        )?);
        let stats = GpuVec::zeros(ctx, 4, "loss stats");
        let log_z = bl("log_z");
        plan.push(losses::prepare_loss_grad(
            ctx,
            cfg.train.method,
            &LossBuffers {
                log_pf: &lf,
                log_pb: &lb,
                log_r: &log_r,
                log_z: &log_z.param,
                d_log_pf: &d_lf,
                d_log_z: &log_z.grad,
                stats: &stats,
            },
        )?);

        // Backward: the input-gradient chain step by step (last first), then every weight
        // gradient as one product over all T·B rows, and the time embedding's per-step sums.
        for i in (0..t).rev() {
            plan.push(policy_step::prepare_policy_backward(
                ctx,
                &shape,
                &em(i),
                &bufs,
            )?);
        }
        let dw = |dy: &GpuVec, x: &GpuVec, name: &str, rows: usize| {
            let (w, bias) = (bl(&format!("{name}.w")), bl(&format!("{name}.b")));
            linear::prepare_linear_backward_dw(
                ctx, dy, x, &w.grad, &bias.grad, rows, w.cols, w.rows,
            )
        };
        let dx = |dy: &GpuVec, name: &str, out: &GpuVec, rows: usize| {
            let w = bl(&format!("{name}.w"));
            linear::prepare_linear_backward_dx(ctx, dy, &w.param, out, rows, w.cols, w.rows)
        };
        // Weight gradients over all T·B rows, split into chunks of DW_CHUNK rows (partial sums
        // added in chunk order), so a long product keeps the device busy.
        let chunks = linear::split_chunks(n, DW_CHUNK);
        let widest = (2 * d * h).max(h * h).max(h * d);
        let part_w = GpuVec::zeros(ctx, chunks * widest, "dW partial sums");
        let part_b = GpuVec::zeros(ctx, chunks * h.max(2 * d), "db partial sums");
        let dw_rows = |dy: &GpuVec, x: &GpuVec, name: &str| {
            let (w, bias) = (bl(&format!("{name}.w")), bl(&format!("{name}.b")));
            linear::prepare_linear_backward_dw_split(
                ctx, dy, x, &w.grad, &bias.grad, &part_w, &part_b, n, w.cols, w.rows, DW_CHUNK,
            )
        };
        plan.extend(dw_rows(&acts.d_o, &acts.a[l], "joint.out")?);
        for k in 0..l {
            plan.extend(dw_rows(&acts.dz[k], &acts.a[k], &format!("joint.{k}"))?);
        }
        plan.extend(dw_rows(&acts.dh, &states, "s.lin")?);
        plan.push(policy_step::prepare_segment_col_sums(
            ctx,
            &shape,
            &acts.dh,
            &acts.dtemb,
        )?);
        let dtemb = &acts.dtemb;
        if let (Some(lpn), Some((layers_lp, _))) = (&lp_net, net.langevin) {
            plan.push(policy_step::prepare_lp_scale_grad(ctx, &shape, &bufs)?);
            let last = layers_lp - 1;
            plan.push(dw(&lpn.dscale, &lpn.g[last], "lp.out", t)?);
            plan.push(dx(&lpn.dscale, "lp.out", &lpn.dg, t)?);
            for k in (0..layers_lp).rev() {
                plan.push(gelu::prepare_gelu_backward(
                    ctx, &lpn.u[k], &lpn.dg, &lpn.du,
                )?);
                let (name, input) = if k == 0 {
                    ("lp.lin1".to_string(), &lpn.feats)
                } else {
                    (format!("lp.{}", k - 1), &lpn.g[k - 1])
                };
                plan.push(dw(&lpn.du, input, &name, t)?);
                let out = if k == 0 { &lpn.dfeats } else { &lpn.dg };
                plan.push(dx(&lpn.du, &name, out, t)?);
            }
            let lp_phase = bl("lp.phase");
            plan.push(time_features::prepare_time_features_backward(
                ctx,
                &g_times,
                &g_freqs,
                &lp_phase.param,
                &lpn.dfeats,
                &lp_phase.grad,
            )?);
        }
        // The time embedding's backward.
        let dt1a = GpuVec::zeros(ctx, t * h, "dt1a");
        let dt1 = GpuVec::zeros(ctx, t * h, "dt1");
        let dfeats = GpuVec::zeros(ctx, t * 2 * f, "dfeats");
        plan.push(dw(dtemb, &t1a, "t.lin2", t)?);
        plan.push(dx(dtemb, "t.lin2", &dt1a, t)?);
        plan.push(gelu::prepare_gelu_backward(ctx, &t1, &dt1a, &dt1)?);
        plan.push(dw(&dt1, &feats, "t.lin1", t)?);
        plan.push(dx(&dt1, "t.lin1", &dfeats, t)?);
        plan.push(time_features::prepare_time_features_backward(
            ctx,
            &g_times,
            &g_freqs,
            &phase.param,
            &dfeats,
            &phase.grad,
        )?);

        // Global gradient norm (block order) and the clip scale.
        let partials = GpuVec::zeros(ctx, blocks.len(), "grad norm partials");
        let scale = GpuVec::zeros(ctx, adam::SCALE_LEN, "clip scale");
        for (slot, bl) in blocks.iter().enumerate() {
            plan.push(adam::prepare_sum_squares(ctx, &bl.grad, &partials, slot)?);
        }
        plan.push(adam::prepare_clip_scale(
            ctx,
            &partials,
            &scale,
            cfg.train.grad_clip,
        )?);

        keep.extend([
            states, log_r, g_times, g_freqs, feats, t1, t1a, temb, lf, lb, tdata, grad_r, d_lf,
            dt1a, dt1, dfeats, partials, part_w, part_b,
        ]);
        Ok(GpuTrainer {
            ctx,
            batch: b,
            dim: d,
            steps: t,
            blocks,
            noise_source,
            noise,
            noise_key,
            noise_host: Vec::new(),
            step_std,
            dt: sampler.dt(),
            sigma2: sampler.sigma2,
            weights,
            weights_t,
            packing,
            plan,
            stats,
            scale,
            adam: Vec::new(),
            _keep: keep,
            _acts: acts,
            _lp: lp_net,
        })
    }

    /// Sets iteration `it`'s noise (stream (seed, "train-noise", it)) and the step std.
    fn set_noise(&mut self, seed: u64, it: usize, explore_std: f64) {
        let key = rng::stream_key(seed, "train-noise", it as u64);
        match self.noise_source {
            NoiseSource::Generate => chacha::write_key(self.ctx, &self.noise_key, &key),
            NoiseSource::Upload => {
                let mut stream =
                    <rand_chacha::ChaCha8Rng as rand_core::SeedableRng>::from_seed(key);
                self.noise_host
                    .resize(self.steps * self.batch * self.dim, 0.0);
                rng::normals_at(&mut stream, 0, &mut self.noise_host);
                self.noise.write(self.ctx, &self.noise_host);
            }
        }
        let cfg = EmStepConfig {
            dt: self.dt,
            sigma2: self.sigma2,
            explore_std,
            step: 0,
            accumulate: false,
        };
        let eps2 = (explore_std * explore_std) as f32;
        self.step_std.write(self.ctx, &[cfg.step_std(), eps2]);
    }

    /// Records one iteration (weights packed, gradients cleared, the plan, then `extra`, e.g.
    /// Adam) into one encoder and submits it; does not wait.
    fn submit_iteration(&self, extra: &[&Dispatch]) {
        let mut enc = self.ctx.encoder("gpu training iteration");
        for &(bi, off, is_matrix) in &self.packing {
            let p = &self.blocks[bi].param;
            let bytes = (p.len() * size_of::<f32>()) as u64;
            enc.copy_buffer_to_buffer(p.buffer(), 0, self.weights.buffer(), off, bytes);
            if !is_matrix {
                enc.copy_buffer_to_buffer(p.buffer(), 0, self.weights_t.buffer(), off, bytes);
            }
        }
        for bl in &self.blocks {
            enc.clear_buffer(bl.grad.buffer(), 0, None);
        }
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("rollout + backward + adam"),
                timestamp_writes: None,
            });
            for dsp in self.plan.iter().chain(extra.iter().copied()) {
                dsp.record_in_pass(&mut pass);
            }
        }
        self.ctx.submit(enc);
    }

    /// The loss and the (unclipped) gradient at the current parameters for iteration `it`,
    /// without updating anything: flat gradient in layout order. For parity tests.
    pub fn loss_and_grad(
        &mut self,
        seed: u64,
        it: usize,
        explore_std: f64,
    ) -> Result<(GpuStepStats, Vec<f32>), GpuError> {
        self.set_noise(seed, it, explore_std);
        self.submit_iteration(&[]);
        let stats = self.read_stats()?;
        let grads: Vec<&GpuVec> = self.blocks.iter().map(|b| &b.grad).collect();
        let g = self.ctx.read_many(&grads)?.concat();
        Ok((stats, g))
    }

    fn read_stats(&self) -> Result<GpuStepStats, GpuError> {
        let v = self.ctx.read_many(&[&self.stats, &self.scale])?;
        Ok(GpuStepStats {
            loss: v[0][0] as f64,
            log_z: v[0][1] as f64,
            non_finite: v[0][2] as u32,
            grad_norm: v[1][1] as f64,
        })
    }

    /// One training iteration: loss, gradient, clip, Adam — one submission, one readback of the
    /// stats. `steps` are the per-block Adam step counts (advanced here for updated blocks);
    /// `lr` the group learning rates; `frozen` groups are not updated.
    pub fn step(
        &mut self,
        seed: u64,
        it: usize,
        explore_std: f64,
        steps: &mut [u64],
        lr: &dyn Fn(Group) -> f64,
        frozen: &[Group],
    ) -> Result<GpuStepStats, GpuError> {
        self.set_noise(seed, it, explore_std);
        if self.adam.is_empty() {
            self.adam = self.blocks.iter().map(|_| None).collect();
        }
        let mut updated = Vec::new();
        for (bi, bl) in self.blocks.iter().enumerate() {
            if frozen.contains(&bl.group) {
                continue;
            }
            steps[bi] += 1;
            let ac = AdamStepConfig::new(lr(bl.group), steps[bi]);
            match &self.adam[bi] {
                Some(d) => d.set_step(self.ctx, &ac),
                None => {
                    self.adam[bi] = Some(adam::prepare_adam_step(
                        self.ctx,
                        &bl.param,
                        &bl.grad,
                        &bl.m,
                        &bl.v,
                        &self.scale,
                        &ac,
                    )?)
                }
            }
            updated.push(bi);
        }
        let updates: Vec<&Dispatch> = updated
            .iter()
            .filter_map(|&bi| self.adam[bi].as_ref().map(|d| &d.dispatch))
            .collect();
        self.submit_iteration(&updates);
        self.read_stats()
    }

    /// Parameters, Adam m and v, each flat in layout order (waits for the device).
    pub fn download(&self) -> Result<HostState, GpuError> {
        let p: Vec<&GpuVec> = self.blocks.iter().map(|b| &b.param).collect();
        let m: Vec<&GpuVec> = self.blocks.iter().map(|b| &b.m).collect();
        let v: Vec<&GpuVec> = self.blocks.iter().map(|b| &b.v).collect();
        Ok((
            self.ctx.read_many(&p)?.concat(),
            self.ctx.read_many(&m)?.concat(),
            self.ctx.read_many(&v)?.concat(),
        ))
    }

    /// Overwrites parameters and Adam moments (flat, layout order), e.g. after a restore.
    pub fn upload(&self, params: &[f32], m: &[f32], v: &[f32]) {
        let mut off = 0;
        for bl in &self.blocks {
            let n = bl.rows * bl.cols;
            bl.param.write(self.ctx, &params[off..off + n]);
            bl.m.write(self.ctx, &m[off..off + n]);
            bl.v.write(self.ctx, &v[off..off + n]);
            off += n;
        }
    }
}
