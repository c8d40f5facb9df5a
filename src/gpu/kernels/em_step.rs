//! Host wrappers of `shaders/em_step.wgsl`: the Euler–Maruyama forward step (x', log p_F, bridge
//! log p_B) and the VJP of log p_F with respect to the policy output, fixed variance, one thread
//! per row. The noise ξ is an input (the host uploads the CPU's ChaCha normals), so a GPU rollout
//! draws exactly the CPU's trajectory.

use super::{dispatch, grid_1d, to_u32, Dispatch};
use crate::gpu::buffers::{params_buffer, GpuVec};
use crate::gpu::pipelines::{BindingKind::*, EntryPoint};
use crate::gpu::shaders::Shader;
use crate::gpu::{GpuContext, GpuError};
use bytemuck::{Pod, Zeroable};

/// Threads per workgroup in em_step.wgsl (`@workgroup_size`), one row each.
pub const WORKGROUP_SIZE: u32 = 64;

/// `em_step.wgsl` `EmStepParams` (see the shader header for the meaning of each field).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct EmStepParams {
    pub rows: u32,
    pub dim: u32,
    pub o_cols: u32,
    pub with_pb: u32,
    pub dt: f32,
    pub var_f: f32,
    pub norm_f: f32,
    pub ratio_b: f32,
    pub var_b: f32,
    pub norm_b: f32,
    pub accumulate: u32,
    pub _pad: u32,
}

/// The scalars of one step: T steps on [0, 1] (dt = 1/T), σ², exploration std ε, step index i,
/// and whether the step's log p_F / log p_B are added to the outputs (a rollout's running sums)
/// or overwrite them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmStepConfig {
    pub dt: f64,
    pub sigma2: f64,
    pub explore_std: f64,
    pub step: usize,
    pub accumulate: bool,
}

impl EmStepConfig {
    /// The step std √(dt·σ² + ε²), in f64 rounded to f32 as the CPU rollout computes it; the
    /// value [`prepare_em_step`]'s `step_std` buffer must hold.
    pub fn step_std(&self) -> f32 {
        (self.dt * self.sigma2 + self.explore_std * self.explore_std).sqrt() as f32
    }
}

impl EmStepParams {
    /// The params for `rows` rows of dimension `dim`, computed as the CPU computes them: var and
    /// ½·ln(2π·var) as the f32 tape
    /// does (`em_logpf` with S = f32: var = dt·exp(ln σ²)); the bridge terms in f64, rounded.
    pub fn new(rows: usize, dim: usize, c: &EmStepConfig) -> Self {
        let dt = c.dt as f32;
        let log_sigma2 = c.sigma2.ln() as f32;
        let var_f = dt * log_sigma2.exp();
        let norm_f = 0.5 * (std::f32::consts::TAU * var_f).ln();
        let (ratio, var_b, norm_b) = if c.step == 0 {
            (0.0, 1.0, 0.0)
        } else {
            let ratio = c.step as f64 / (c.step + 1) as f64;
            let var = c.sigma2 * c.dt * ratio;
            (ratio, var, -0.5 * (std::f64::consts::TAU * var).ln())
        };
        EmStepParams {
            rows: to_u32(rows, "gpu em_step: rows"),
            dim: to_u32(dim, "gpu em_step: dim"),
            o_cols: to_u32(2 * dim, "gpu em_step: 2·dim"),
            with_pb: u32::from(c.step > 0),
            dt,
            var_f,
            norm_f,
            ratio_b: ratio as f32,
            var_b: var_b as f32,
            norm_b: norm_b as f32,
            accumulate: u32::from(c.accumulate),
            _pad: 0,
        }
    }
}

pub static EM_STEP: EntryPoint = EntryPoint {
    shader: Shader::EmStep,
    name: "em_step",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (2, StorageRead),
        (3, StorageRead),
        (4, StorageReadWrite),
        (5, StorageReadWrite),
        (6, StorageReadWrite),
        (10, StorageRead),
    ],
};

pub static EM_LOGPF_BACKWARD: EntryPoint = EntryPoint {
    shader: Shader::EmStep,
    name: "em_logpf_backward",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (2, StorageRead),
        (7, StorageRead),
        (8, StorageRead),
        (9, StorageReadWrite),
    ],
};

fn rows_of(x: &GpuVec, dim: usize, what: &str) -> usize {
    assert!(dim > 0, "{what}: dim must be positive");
    assert_eq!(x.len() % dim, 0, "{what}: x.len() not a multiple of dim");
    x.len() / dim
}

/// x_next = x + u·dt + std·ξ, log_pf [B], log_pb [B] for o [B, 2D], x, xi [B, D]; std is
/// `step_std[0]` (see [`EmStepConfig::step_std`]); `cfg.explore_std` is not read here.
#[allow(clippy::too_many_arguments)]
pub fn prepare_em_step(
    ctx: &GpuContext,
    cfg: &EmStepConfig,
    dim: usize,
    o: &GpuVec,
    x: &GpuVec,
    xi: &GpuVec,
    x_next: &GpuVec,
    log_pf: &GpuVec,
    log_pb: &GpuVec,
    step_std: &GpuVec,
) -> Result<Dispatch, GpuError> {
    let rows = rows_of(x, dim, "gpu em_step");
    assert_eq!(o.len(), rows * 2 * dim, "gpu em_step: o is not [B, 2D]");
    assert_eq!(xi.len(), x.len(), "gpu em_step: xi.len() != x.len()");
    assert_eq!(
        x_next.len(),
        x.len(),
        "gpu em_step: x_next.len() != x.len()"
    );
    assert_eq!(log_pf.len(), rows, "gpu em_step: log_pf is not [B]");
    assert_eq!(log_pb.len(), rows, "gpu em_step: log_pb is not [B]");
    assert_eq!(step_std.len(), 1, "gpu em_step: step_std is not [1]");
    let p = EmStepParams::new(rows, dim, cfg);
    let pb = params_buffer(ctx, &p, "EmStepParams");
    dispatch(
        ctx,
        &EM_STEP,
        &[
            (0, &pb),
            (1, o.buffer()),
            (2, x.buffer()),
            (3, xi.buffer()),
            (4, x_next.buffer()),
            (5, log_pf.buffer()),
            (6, log_pb.buffer()),
            (10, step_std.buffer()),
        ],
        grid_1d(p.rows.div_ceil(WORKGROUP_SIZE)),
    )
}

/// du [B, 2D] = ∂(Σ_b g_b·log p_F,b)/∂o (second half zero: fixed variance). Overwrites du.
#[allow(clippy::too_many_arguments)]
pub fn prepare_em_logpf_backward(
    ctx: &GpuContext,
    cfg: &EmStepConfig,
    dim: usize,
    o: &GpuVec,
    x: &GpuVec,
    x_next: &GpuVec,
    g: &GpuVec,
    du: &GpuVec,
) -> Result<Dispatch, GpuError> {
    let rows = rows_of(x, dim, "gpu em_logpf_backward");
    assert_eq!(
        o.len(),
        rows * 2 * dim,
        "gpu em_logpf_backward: o is not [B, 2D]"
    );
    assert_eq!(
        du.len(),
        o.len(),
        "gpu em_logpf_backward: du.len() != o.len()"
    );
    assert_eq!(x_next.len(), x.len(), "gpu em_logpf_backward: x_next.len()");
    assert_eq!(g.len(), rows, "gpu em_logpf_backward: g is not [B]");
    let p = EmStepParams::new(rows, dim, cfg);
    let pb = params_buffer(ctx, &p, "EmStepParams");
    dispatch(
        ctx,
        &EM_LOGPF_BACKWARD,
        &[
            (0, &pb),
            (1, o.buffer()),
            (2, x.buffer()),
            (7, x_next.buffer()),
            (8, g.buffer()),
            (9, du.buffer()),
        ],
        grid_1d(p.rows.div_ceil(WORKGROUP_SIZE)),
    )
}

/// Records [`prepare_em_step`] into `encoder`.
#[allow(clippy::too_many_arguments)]
pub fn call_em_step(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    cfg: &EmStepConfig,
    dim: usize,
    o: &GpuVec,
    x: &GpuVec,
    xi: &GpuVec,
    x_next: &GpuVec,
    log_pf: &GpuVec,
    log_pb: &GpuVec,
    step_std: &GpuVec,
) -> Result<(), GpuError> {
    prepare_em_step(ctx, cfg, dim, o, x, xi, x_next, log_pf, log_pb, step_std)?.record(encoder);
    Ok(())
}

/// Records [`prepare_em_logpf_backward`] into `encoder`.
#[allow(clippy::too_many_arguments)]
pub fn call_em_logpf_backward(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    cfg: &EmStepConfig,
    dim: usize,
    o: &GpuVec,
    x: &GpuVec,
    x_next: &GpuVec,
    g: &GpuVec,
    du: &GpuVec,
) -> Result<(), GpuError> {
    prepare_em_logpf_backward(ctx, cfg, dim, o, x, x_next, g, du)?.record(encoder);
    Ok(())
}

/// Host outputs of one [`run_em_step`].
#[derive(Clone, Debug, PartialEq)]
pub struct EmStepOut {
    pub x_next: Vec<f32>,
    pub log_pf: Vec<f32>,
    pub log_pb: Vec<f32>,
}

/// One step on host slices (o [B, 2D], x and xi [B, D]): upload, run, read back.
pub fn run_em_step(
    ctx: &GpuContext,
    cfg: &EmStepConfig,
    dim: usize,
    o: &[f32],
    x: &[f32],
    xi: &[f32],
) -> Result<EmStepOut, GpuError> {
    let rows = x.len() / dim.max(1);
    let go = GpuVec::from_slice(ctx, o, "o");
    let gx = GpuVec::from_slice(ctx, x, "x");
    let gxi = GpuVec::from_slice(ctx, xi, "xi");
    let gn = GpuVec::zeros(ctx, x.len(), "x_next");
    let gf = GpuVec::zeros(ctx, rows, "log_pf");
    let gb = GpuVec::zeros(ctx, rows, "log_pb");
    let gs = GpuVec::from_slice(ctx, &[cfg.step_std()], "step_std");
    let mut enc = ctx.encoder("run_em_step");
    call_em_step(ctx, &mut enc, cfg, dim, &go, &gx, &gxi, &gn, &gf, &gb, &gs)?;
    ctx.submit(enc);
    let mut out = ctx.read_many(&[&gn, &gf, &gb])?.into_iter();
    Ok(EmStepOut {
        x_next: out.next().unwrap_or_default(),
        log_pf: out.next().unwrap_or_default(),
        log_pb: out.next().unwrap_or_default(),
    })
}

/// The log p_F VJP on host slices: returns du [B, 2D].
pub fn run_em_logpf_backward(
    ctx: &GpuContext,
    cfg: &EmStepConfig,
    dim: usize,
    o: &[f32],
    x: &[f32],
    x_next: &[f32],
    g: &[f32],
) -> Result<Vec<f32>, GpuError> {
    let go = GpuVec::from_slice(ctx, o, "o");
    let gx = GpuVec::from_slice(ctx, x, "x");
    let gn = GpuVec::from_slice(ctx, x_next, "x_next");
    let gg = GpuVec::from_slice(ctx, g, "g");
    let gdu = GpuVec::zeros(ctx, o.len(), "du");
    let mut enc = ctx.encoder("run_em_logpf_backward");
    call_em_logpf_backward(ctx, &mut enc, cfg, dim, &go, &gx, &gn, &gg, &gdu)?;
    ctx.submit(enc);
    gdu.read(ctx)
}
