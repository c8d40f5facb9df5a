//! Host wrappers of `shaders/adam.wgsl`: global gradient-norm clipping and Adam, with every
//! parameter block in its own buffers (param, grad, m, v). One training step records
//! 1. [`prepare_sum_squares`] per block (partials[slot] = Σ g², fixed order),
//! 2. [`prepare_clip_scale`] once (norm = √Σ partials, the clip factor into a 2-element `scale`
//!    buffer: [factor, norm]),
//! 3. [`prepare_adam_step`] per block (g·factor, then `nn::Adam::step`'s update in its f32 order).
//!
//! Matches `nn::adam::clip_grad_norm` (f64 there, f32 here: toleranced) followed by
//! `nn::Adam::step` (the same f32 operations in the same order: bitwise given the same factor, on
//! a device with IEEE ÷ and √ that does not contract a·b + c).

use super::{dispatch, grid_1d, to_u32, Dispatch};
use crate::gpu::buffers::{params_buffer, GpuVec};
use crate::gpu::pipelines::{BindingKind::*, EntryPoint};
use crate::gpu::shaders::Shader;
use crate::gpu::{GpuContext, GpuError};
use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

/// Threads per workgroup of every adam.wgsl entry point (`@workgroup_size`, `TPB`; the
/// sum_squares tree is shaped for it).
pub const WORKGROUP_SIZE: u32 = 256;

/// Length of the `scale` buffer: [clip factor, norm before clipping].
pub const SCALE_LEN: usize = 2;

/// `adam.wgsl` `AdamParams`: the scalars of all three entry points (each reads its own fields;
/// see the shader header).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct AdamParams {
    pub n: u32,
    pub slot: u32,
    pub clip: u32,
    pub _pad0: u32,
    pub max_norm: f32,
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    pub step_size: f32,
    pub bc2_sqrt: f32,
    pub eps: f32,
}

/// The hyper-parameters of one block's Adam step. `t` is the block's step count AFTER this
/// step's increment (1 on the first step), as `Adam::step` uses it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStepConfig {
    pub lr: f64,
    pub t: u64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl AdamStepConfig {
    /// `Adam`'s defaults (β = (0.9, 0.999), ε = 1e−8) at learning rate `lr`, step `t`.
    pub fn new(lr: f64, t: u64) -> Self {
        AdamStepConfig {
            lr,
            t,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// The params of a block of `n` elements, every constant computed as `Adam::step` computes
    /// it: β as f32, 1 − β in f32, step_size = (lr / (1 − β1^t)) and bc2_sqrt = √(1 − β2^t) in
    /// f64 rounded to f32, ε as f32.
    pub fn params(&self, n: usize) -> AdamParams {
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        let t = self.t as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        AdamParams {
            n: to_u32(n, "gpu adam_step: n"),
            beta1: b1,
            one_minus_beta1: 1.0 - b1,
            beta2: b2,
            one_minus_beta2: 1.0 - b2,
            step_size: (self.lr / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            eps: self.eps as f32,
            ..Default::default()
        }
    }
}

pub static SUM_SQUARES: EntryPoint = EntryPoint {
    shader: Shader::Adam,
    name: "sum_squares",
    bindings: &[(0, Uniform), (1, StorageRead), (2, StorageReadWrite)],
};

pub static CLIP_SCALE: EntryPoint = EntryPoint {
    shader: Shader::Adam,
    name: "clip_scale",
    bindings: &[(0, Uniform), (2, StorageReadWrite), (3, StorageReadWrite)],
};

pub static ADAM_STEP: EntryPoint = EntryPoint {
    shader: Shader::Adam,
    name: "adam_step",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (3, StorageReadWrite),
        (4, StorageReadWrite),
        (5, StorageReadWrite),
        (6, StorageReadWrite),
    ],
};

/// partials[slot] = Σ_i grad[i]² over one block (any length; one workgroup, fixed order).
pub fn prepare_sum_squares(
    ctx: &GpuContext,
    grad: &GpuVec,
    partials: &GpuVec,
    slot: usize,
) -> Result<Dispatch, GpuError> {
    assert!(
        slot < partials.len(),
        "gpu sum_squares: slot {slot} >= partials.len() = {}",
        partials.len()
    );
    let p = AdamParams {
        n: to_u32(grad.len(), "gpu sum_squares: n"),
        slot: to_u32(slot, "gpu sum_squares: slot"),
        ..Default::default()
    };
    let pb = params_buffer(ctx, &p, "AdamParams");
    dispatch(
        ctx,
        &SUM_SQUARES,
        &[(0, &pb), (1, grad.buffer()), (2, partials.buffer())],
        [1, 1, 1],
    )
}

/// scale = [factor, norm]: norm = √(Σ partials, in slot order); factor = max_norm / (norm + 1e−6)
/// when `max_norm` is `Some` and norm > max_norm, else 1 (`None`: measure only, never clip).
pub fn prepare_clip_scale(
    ctx: &GpuContext,
    partials: &GpuVec,
    scale: &GpuVec,
    max_norm: Option<f64>,
) -> Result<Dispatch, GpuError> {
    assert_eq!(scale.len(), SCALE_LEN, "gpu clip_scale: scale.len() != 2");
    let p = AdamParams {
        n: to_u32(partials.len(), "gpu clip_scale: n_blocks"),
        clip: u32::from(max_norm.is_some()),
        max_norm: max_norm.unwrap_or(0.0) as f32,
        ..Default::default()
    };
    let pb = params_buffer(ctx, &p, "AdamParams");
    dispatch(
        ctx,
        &CLIP_SCALE,
        &[(0, &pb), (2, partials.buffer()), (3, scale.buffer())],
        [1, 1, 1],
    )
}

/// A prepared [`prepare_adam_step`]: the step constants change every step (t, and the learning
/// rate if scheduled), so the params buffer is kept and rewritten by [`Self::set_step`].
#[derive(Debug)]
pub struct AdamStepDispatch {
    pub dispatch: Dispatch,
    params: wgpu::Buffer,
    n: usize,
}

impl AdamStepDispatch {
    /// Writes `cfg`'s constants into the params buffer. Like every `queue.write_buffer`, it lands
    /// before the NEXT submit: set, record, submit, once per step.
    pub fn set_step(&self, ctx: &GpuContext, cfg: &AdamStepConfig) {
        ctx.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&cfg.params(self.n)));
    }

    /// Records the launch in its own compute pass.
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        self.dispatch.record(encoder);
    }

    /// Records the launch into an open compute pass.
    pub fn record_in_pass(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.dispatch.record_in_pass(pass);
    }
}

/// One Adam step of one block: g = grad·scale[0]; m, v, param updated in place (the order of
/// `Adam::step`). `scale` is the [`prepare_clip_scale`] output (or a buffer holding [1, ·]).
#[allow(clippy::too_many_arguments)]
pub fn prepare_adam_step(
    ctx: &GpuContext,
    param: &GpuVec,
    grad: &GpuVec,
    m: &GpuVec,
    v: &GpuVec,
    scale: &GpuVec,
    cfg: &AdamStepConfig,
) -> Result<AdamStepDispatch, GpuError> {
    let n = param.len();
    for (what, b) in [("grad", grad), ("m", m), ("v", v)] {
        assert_eq!(b.len(), n, "gpu adam_step: {what}.len() != param.len()");
    }
    assert_eq!(scale.len(), SCALE_LEN, "gpu adam_step: scale.len() != 2");
    let groups = to_u32(n, "gpu adam_step: n").div_ceil(WORKGROUP_SIZE);
    // Like `params_buffer`, plus COPY_DST so `set_step` can rewrite it.
    let pb = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("AdamParams (adam_step)"),
            contents: bytemuck::bytes_of(&cfg.params(n)),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        });
    let d = dispatch(
        ctx,
        &ADAM_STEP,
        &[
            (0, &pb),
            (1, grad.buffer()),
            (3, scale.buffer()),
            (4, param.buffer()),
            (5, m.buffer()),
            (6, v.buffer()),
        ],
        grid_1d(groups),
    )?;
    Ok(AdamStepDispatch {
        dispatch: d,
        params: pb,
        n,
    })
}

/// Records [`prepare_sum_squares`] into `encoder`.
pub fn call_sum_squares(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    grad: &GpuVec,
    partials: &GpuVec,
    slot: usize,
) -> Result<(), GpuError> {
    prepare_sum_squares(ctx, grad, partials, slot)?.record(encoder);
    Ok(())
}

/// Records [`prepare_clip_scale`] into `encoder`.
pub fn call_clip_scale(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    partials: &GpuVec,
    scale: &GpuVec,
    max_norm: Option<f64>,
) -> Result<(), GpuError> {
    prepare_clip_scale(ctx, partials, scale, max_norm)?.record(encoder);
    Ok(())
}

/// Records [`prepare_adam_step`] into `encoder`.
#[allow(clippy::too_many_arguments)]
pub fn call_adam_step(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    param: &GpuVec,
    grad: &GpuVec,
    m: &GpuVec,
    v: &GpuVec,
    scale: &GpuVec,
    cfg: &AdamStepConfig,
) -> Result<(), GpuError> {
    prepare_adam_step(ctx, param, grad, m, v, scale, cfg)?.record(encoder);
    Ok(())
}

/// Σ g² of one block on the GPU, in the shader's fixed order.
pub fn run_sum_squares(ctx: &GpuContext, grad: &[f32]) -> Result<f32, GpuError> {
    let g = GpuVec::from_slice(ctx, grad, "grad");
    let partials = GpuVec::zeros(ctx, 1, "partials");
    let mut enc = ctx.encoder("run_sum_squares");
    call_sum_squares(ctx, &mut enc, &g, &partials, 0)?;
    ctx.submit(enc);
    Ok(partials.read(ctx)?[0])
}

/// [clip factor, norm] of the gradient made of `blocks` (sum_squares per block, then
/// clip_scale): the factor `nn::adam::clip_grad_norm(…, max_norm)` multiplies by (1 when it does
/// not clip) and the norm it returns.
pub fn run_clip_grad_norm(
    ctx: &GpuContext,
    blocks: &[&[f32]],
    max_norm: Option<f64>,
) -> Result<[f32; 2], GpuError> {
    let gs: Vec<GpuVec> = blocks
        .iter()
        .map(|b| GpuVec::from_slice(ctx, b, "grad"))
        .collect();
    let partials = GpuVec::zeros(ctx, blocks.len(), "partials");
    let scale = GpuVec::zeros(ctx, SCALE_LEN, "scale");
    let mut enc = ctx.encoder("run_clip_grad_norm");
    for (slot, g) in gs.iter().enumerate() {
        call_sum_squares(ctx, &mut enc, g, &partials, slot)?;
    }
    call_clip_scale(ctx, &mut enc, &partials, &scale, max_norm)?;
    ctx.submit(enc);
    let s = scale.read(ctx)?;
    Ok([s[0], s[1]])
}

/// One Adam step of one block on the GPU with clip factor `scale` (param, m, v updated in place):
/// `Adam::step`'s inner loop for that block after `clip_grad_norm` multiplied its gradient by
/// `scale`.
pub fn run_adam_step(
    ctx: &GpuContext,
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    scale: f32,
    cfg: &AdamStepConfig,
) -> Result<(), GpuError> {
    let gp = GpuVec::from_slice(ctx, param, "param");
    let gg = GpuVec::from_slice(ctx, grad, "grad");
    let gm = GpuVec::from_slice(ctx, m, "m");
    let gv = GpuVec::from_slice(ctx, v, "v");
    let gs = GpuVec::from_slice(ctx, &[scale, 0.0], "scale");
    let mut enc = ctx.encoder("run_adam_step");
    call_adam_step(ctx, &mut enc, &gp, &gg, &gm, &gv, &gs, cfg)?;
    ctx.submit(enc);
    let mut out = ctx.read_many(&[&gp, &gm, &gv])?.into_iter();
    param.copy_from_slice(&out.next().unwrap_or_default());
    m.copy_from_slice(&out.next().unwrap_or_default());
    v.copy_from_slice(&out.next().unwrap_or_default());
    Ok(())
}
