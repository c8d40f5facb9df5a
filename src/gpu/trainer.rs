//! A whole TB / VarGrad training iteration on the GPU: the T-step Euler–Maruyama rollout with the
//! drift network, the target's log R at x_T, the loss, the backward pass through every step and
//! the time embedding, the gradient-norm clip and Adam — recorded into ONE command encoder (one
//! compute pass) and submitted once; only six scalars come back per iteration.
//!
//! Every dispatch is prepared once, when the trainer is built (fixed buffers, fixed shapes), and
//! re-recorded each iteration; what changes per iteration lives in storage buffers (the noise,
//! the exploration std) or is rebuilt cheaply (the Adam dispatches, whose bias corrections move).
//!
//! Noise: the host draws the CPU's normals — stream (seed, "train-noise", it), number
//! (i·B + b)·D + j for (step i, row b, dim j), exactly `Path::Forward` with one shard — and
//! uploads them, so the GPU follows the CPU's trajectories up to rounding (see
//! benches/gpu_kernels.rs `gpu/noise` for why upload beats an in-shader generator here).
//!
//! Shapes: B batch, T steps, D state dim, H hidden, F harmonics, L joint hidden layers.
//! Memory: per step h, a₀, z_k, a_{k+1} (k < L) [B, H] and o_raw, o [B, 2D]; states [T+1][B, D].
//! Not on the GPU yet (refused by [`GpuTrainer::supports`]): the Langevin parametrization and the
//! learned variance.

use super::kernels::adam::{self, AdamStepConfig};
use super::kernels::em_step::{self, EmStepConfig};
use super::kernels::energies::{self, Target};
use super::kernels::losses::{self, LossBuffers};
use super::kernels::{add_row, clip, gelu, linear, time_features, Dispatch};
use super::{GpuContext, GpuError, GpuVec};
use crate::config::{ExperimentConfig, Method, TargetConfig};
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

/// One step's stored activations.
struct StepBufs {
    /// h = S(x_i) + T(t_i) [B, H] (pre-activation of the first GELU).
    h: GpuVec,
    /// a[0] = GELU(h), a[k+1] = GELU(z[k]) [B, H].
    a: Vec<GpuVec>,
    /// z[k] joint pre-activations [B, H].
    z: Vec<GpuVec>,
    /// Raw (pre-clip) and clipped policy output [B, 2D].
    o_raw: GpuVec,
    o: GpuVec,
}

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
    method: Method,
    grad_clip: Option<f64>,
    blocks: Vec<Block>,
    noise: Vec<GpuVec>,
    noise_host: Vec<f32>,
    step_std: GpuVec,
    dt: f64,
    sigma2: f64,
    /// Dispatches recorded every iteration, in order (forward, loss, backward, grad norm).
    plan: Vec<Dispatch>,
    /// Buffers cleared at the start of every iteration (gradients and accumulators).
    cleared: Vec<usize>,
    stats: GpuVec,
    scale: GpuVec,
    /// One Adam dispatch per block, built on first use; its step constants are rewritten
    /// (`set_step`) before each submission.
    adam: Vec<Option<adam::AdamStepDispatch>>,
    states: Vec<GpuVec>,
    log_r: GpuVec,
    // Kept alive for the plan's bind groups.
    _keep: Vec<GpuVec>,
    _steps: Vec<StepBufs>,
}

/// Why a config cannot train on the GPU backend.
pub fn unsupported(cfg: &ExperimentConfig) -> Option<String> {
    if cfg.network.langevin {
        return Some("the Langevin parametrization (network.langevin) is CPU-only for now".into());
    }
    if cfg.sampler.learned_variance {
        return Some("a learned variance (sampler.learned_variance) is CPU-only for now".into());
    }
    None
}

fn target_of(cfg: &ExperimentConfig) -> Target {
    match &cfg.target {
        TargetConfig::Gmm25 => Target::gmm25(),
        TargetConfig::Gmm9 => Target::gmm9(),
        TargetConfig::Funnel { variant, .. } => Target::Funnel(*variant),
        TargetConfig::ManyWell { .. } => Target::ManyWell,
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
    ) -> Result<Self, GpuError> {
        if let Some(why) = unsupported(cfg) {
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
        let mut cleared: Vec<usize> = (0..blocks.len()).collect();

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

        // The rollout.
        let states: Vec<GpuVec> = (0..=t)
            .map(|i| GpuVec::zeros(ctx, b * d, &format!("x_{i}")))
            .collect();
        let noise: Vec<GpuVec> = (0..t)
            .map(|i| GpuVec::zeros(ctx, b * d, &format!("xi_{i}")))
            .collect();
        let step_std = GpuVec::zeros(ctx, 1, "step std");
        let lf = GpuVec::zeros(ctx, b, "sum log p_F");
        let lb = GpuVec::zeros(ctx, b, "sum log p_B");
        let s_out = GpuVec::zeros(ctx, b * h, "s.lin out");
        let clip_limit = net.out_clip as f32;
        let mut step_bufs = Vec::with_capacity(t);
        for i in 0..t {
            let sb = StepBufs {
                h: GpuVec::zeros(ctx, b * h, "h"),
                a: (0..=l).map(|_| GpuVec::zeros(ctx, b * h, "a")).collect(),
                z: (0..l).map(|_| GpuVec::zeros(ctx, b * h, "z")).collect(),
                o_raw: GpuVec::zeros(ctx, b * 2 * d, "o_raw"),
                o: GpuVec::zeros(ctx, b * 2 * d, "o"),
            };
            plan.push(lin(&states[i], "s.lin", &s_out, b)?);
            plan.push(add_row::prepare_add_row(
                ctx, &s_out, &temb, &sb.h, b, h, i,
            )?);
            plan.push(gelu::prepare_gelu_forward(ctx, &sb.h, &sb.a[0])?);
            for k in 0..l {
                plan.push(lin(&sb.a[k], &format!("joint.{k}"), &sb.z[k], b)?);
                plan.push(gelu::prepare_gelu_forward(ctx, &sb.z[k], &sb.a[k + 1])?);
            }
            plan.push(lin(&sb.a[l], "joint.out", &sb.o_raw, b)?);
            plan.push(clip::prepare_clip_forward(
                ctx, &sb.o_raw, &sb.o, clip_limit,
            )?);
            let ec = EmStepConfig {
                dt: sampler.dt(),
                sigma2: sampler.sigma2,
                explore_std: 0.0,
                step: i,
                accumulate: i > 0,
            };
            plan.push(em_step::prepare_em_step(
                ctx,
                &ec,
                d,
                &sb.o,
                &states[i],
                &noise[i],
                &states[i + 1],
                &lf,
                &lb,
                &step_std,
            )?);
            step_bufs.push(sb);
        }

        // log R(x_T) and the loss.
        let target = target_of(cfg);
        let tdata = energies::target_buffer(ctx, &target);
        let log_r = GpuVec::zeros(ctx, b, "log R");
        let grad_r = GpuVec::zeros(ctx, b * d, "grad log R");
        plan.push(energies::prepare_log_reward_grad(
            ctx, &target, d, &tdata, &states[t], &log_r, &grad_r,
        )?);
        let d_lf = GpuVec::zeros(ctx, b, "dL/dLF");
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

        // Backward through every step, last first (the tape's order).
        let du = GpuVec::zeros(ctx, b * 2 * d, "du");
        let d_o = GpuVec::zeros(ctx, b * 2 * d, "do");
        let da = GpuVec::zeros(ctx, b * h, "da");
        let dz = GpuVec::zeros(ctx, b * h, "dz");
        let dtemb = GpuVec::zeros(ctx, t * h, "dtemb");
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
        for i in (0..t).rev() {
            let sb = &step_bufs[i];
            let ec = EmStepConfig {
                dt: sampler.dt(),
                sigma2: sampler.sigma2,
                explore_std: 0.0,
                step: i,
                accumulate: false,
            };
            plan.push(em_step::prepare_em_logpf_backward(
                ctx,
                &ec,
                d,
                &sb.o,
                &states[i],
                &states[i + 1],
                &d_lf,
                &du,
            )?);
            plan.push(clip::prepare_clip_backward(
                ctx, &sb.o_raw, &du, &d_o, clip_limit,
            )?);
            plan.push(dw(&d_o, &sb.a[l], "joint.out", b)?);
            plan.push(dx(&d_o, "joint.out", &da, b)?);
            for k in (0..l).rev() {
                plan.push(gelu::prepare_gelu_backward(ctx, &sb.z[k], &da, &dz)?);
                let name = format!("joint.{k}");
                plan.push(dw(&dz, &sb.a[k], &name, b)?);
                plan.push(dx(&dz, &name, &da, b)?);
            }
            plan.push(gelu::prepare_gelu_backward(ctx, &sb.h, &da, &dz)?);
            plan.push(dw(&dz, &states[i], "s.lin", b)?);
            plan.push(add_row::prepare_col_sum_into_row(
                ctx, &dz, &dtemb, b, h, i,
            )?);
        }
        // The time embedding's backward.
        let dt1a = GpuVec::zeros(ctx, t * h, "dt1a");
        let dt1 = GpuVec::zeros(ctx, t * h, "dt1");
        let dfeats = GpuVec::zeros(ctx, t * 2 * f, "dfeats");
        plan.push(dw(&dtemb, &t1a, "t.lin2", t)?);
        plan.push(dx(&dtemb, "t.lin2", &dt1a, t)?);
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
            g_times, g_freqs, feats, t1, t1a, temb, lf, lb, s_out, tdata, grad_r, d_lf, du, d_o,
            da, dz, dt1a, dt1, dfeats, partials,
        ]);
        let dtemb_slot = keep.len();
        keep.push(dtemb);
        cleared.push(blocks.len() + dtemb_slot);
        Ok(GpuTrainer {
            ctx,
            batch: b,
            dim: d,
            steps: t,
            method: cfg.train.method,
            grad_clip: cfg.train.grad_clip,
            blocks,
            noise,
            noise_host: vec![0f32; b * d],
            step_std,
            dt: sampler.dt(),
            sigma2: sampler.sigma2,
            plan,
            cleared,
            stats,
            scale,
            adam: Vec::new(),
            states,
            log_r,
            _keep: keep,
            _steps: step_bufs,
        })
    }

    /// The buffer behind cleared slot `k` (blocks' gradients first, then `_keep` entries).
    fn cleared_buffer(&self, k: usize) -> &GpuVec {
        if k < self.blocks.len() {
            &self.blocks[k].grad
        } else {
            &self._keep[k - self.blocks.len()]
        }
    }

    /// Uploads iteration `it`'s noise (stream (seed, "train-noise", it)) and the step std.
    fn upload_noise(&mut self, seed: u64, it: usize, explore_std: f64) {
        let key = rng::stream_key(seed, "train-noise", it as u64);
        let mut stream = <rand_chacha::ChaCha8Rng as rand_core::SeedableRng>::from_seed(key);
        let n = self.batch * self.dim;
        for i in 0..self.steps {
            rng::normals_at(&mut stream, (i * n) as u64, &mut self.noise_host);
            self.noise[i].write(self.ctx, &self.noise_host);
        }
        let cfg = EmStepConfig {
            dt: self.dt,
            sigma2: self.sigma2,
            explore_std,
            step: 0,
            accumulate: false,
        };
        self.step_std.write(self.ctx, &[cfg.step_std()]);
    }

    /// Records the whole forward + loss + backward + gradient norm (no parameter update) and
    /// submits it; returns without waiting.
    fn submit_loss_and_grad(&mut self, seed: u64, it: usize, explore_std: f64) {
        self.upload_noise(seed, it, explore_std);
        let mut enc = self.ctx.encoder("gpu training iteration");
        for &k in &self.cleared {
            enc.clear_buffer(self.cleared_buffer(k).buffer(), 0, None);
        }
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("rollout + backward"),
                timestamp_writes: None,
            });
            for dsp in &self.plan {
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
        self.submit_loss_and_grad(seed, it, explore_std);
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
        self.upload_noise(seed, it, explore_std);
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
        let mut enc = self.ctx.encoder("gpu training iteration");
        for &k in &self.cleared {
            enc.clear_buffer(self.cleared_buffer(k).buffer(), 0, None);
        }
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("rollout + backward + adam"),
                timestamp_writes: None,
            });
            for dsp in &self.plan {
                dsp.record_in_pass(&mut pass);
            }
            for &bi in &updated {
                if let Some(d) = &self.adam[bi] {
                    d.record_in_pass(&mut pass);
                }
            }
        }
        self.ctx.submit(enc);
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

    /// x_T of the last iteration's rollout [B, D] and log R of it [B] (for tests).
    pub fn last_terminal_states(&self) -> Result<(Vec<f32>, Vec<f32>), GpuError> {
        let v = self
            .ctx
            .read_many(&[&self.states[self.steps], &self.log_r])?;
        Ok((v[0].clone(), v[1].clone()))
    }

    /// The method this trainer optimises.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The gradient-norm clip, if any.
    pub fn grad_clip(&self) -> Option<f64> {
        self.grad_clip
    }
}
