//! Host wrappers of `shaders/layer_norm.wgsl`: LayerNorm forward (saving each row's μ and rstd),
//! the input gradient, and the γ/β gradients, on x [B, H]. Same operations in the same order as
//! `cpu::layer_norm` (one thread per row walks the row in the 8-lane sum order; one thread per
//! column walks the rows ascending).
//!
//! Not in a trainer yet: the GPU trainer runs the Sendera et al. drift net, which has no
//! LayerNorm, and refuses `network.layer_norm` (see `gpu::trainer::unsupported`).

use super::{dispatch, grid_1d, to_u32, Dispatch};
use crate::cpu::LAYER_NORM_EPS;
use crate::gpu::buffers::{params_buffer, GpuVec};
use crate::gpu::pipelines::{BindingKind::*, EntryPoint};
use crate::gpu::shaders::Shader;
use crate::gpu::{GpuContext, GpuError};
use bytemuck::{Pod, Zeroable};

/// Threads per workgroup in layer_norm.wgsl (`@workgroup_size`, `WG`).
pub const WORKGROUP_SIZE: u32 = 64;

/// `layer_norm.wgsl` `LayerNormParams`: x [rows, h], ε.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct LayerNormParams {
    pub rows: u32,
    pub h: u32,
    pub eps: f32,
    pub _pad0: u32,
}

pub static LAYER_NORM_FORWARD: EntryPoint = EntryPoint {
    shader: Shader::LayerNorm,
    name: "layer_norm_forward",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (2, StorageRead),
        (3, StorageRead),
        (4, StorageReadWrite),
        (5, StorageReadWrite),
        (6, StorageReadWrite),
    ],
};

pub static LAYER_NORM_BACKWARD_DX: EntryPoint = EntryPoint {
    shader: Shader::LayerNorm,
    name: "layer_norm_backward_dx",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (2, StorageRead),
        (5, StorageReadWrite),
        (6, StorageReadWrite),
        (7, StorageRead),
        (8, StorageReadWrite),
    ],
};

pub static LAYER_NORM_BACKWARD_PARAMS: EntryPoint = EntryPoint {
    shader: Shader::LayerNorm,
    name: "layer_norm_backward_params",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (5, StorageReadWrite),
        (6, StorageReadWrite),
        (7, StorageRead),
        (9, StorageReadWrite),
        (10, StorageReadWrite),
    ],
};

/// The buffers the forward and both backward passes share: x [B, H], γ [H], μ and rstd [B].
/// (β, y, dy, dx, dγ, dβ are passed to the passes that read or write them.)
pub struct LayerNormBuffers<'a> {
    pub x: &'a GpuVec,
    pub gamma: &'a GpuVec,
    pub mean: &'a GpuVec,
    pub rstd: &'a GpuVec,
}

fn params(ctx: &GpuContext, b: &LayerNormBuffers, rows: usize, h: usize) -> wgpu::Buffer {
    assert!(h > 0, "gpu layer_norm: no features");
    assert_eq!(b.x.len(), rows * h, "gpu layer_norm: x is not [B, H]");
    assert_eq!(b.gamma.len(), h, "gpu layer_norm: gamma is not [H]");
    assert_eq!(b.mean.len(), rows, "gpu layer_norm: mean is not [B]");
    assert_eq!(b.rstd.len(), rows, "gpu layer_norm: rstd is not [B]");
    params_buffer(
        ctx,
        &LayerNormParams {
            rows: to_u32(rows, "gpu layer_norm: rows"),
            h: to_u32(h, "gpu layer_norm: h"),
            eps: LAYER_NORM_EPS as f32,
            _pad0: 0,
        },
        "LayerNormParams",
    )
}

/// y = LayerNorm(x)·γ + β; writes μ and rstd.
pub fn prepare_layer_norm_forward(
    ctx: &GpuContext,
    b: &LayerNormBuffers,
    beta: &GpuVec,
    y: &GpuVec,
    rows: usize,
    h: usize,
) -> Result<Dispatch, GpuError> {
    let pb = params(ctx, b, rows, h);
    assert_eq!(beta.len(), h, "gpu layer_norm: beta is not [H]");
    assert_eq!(y.len(), rows * h, "gpu layer_norm: y is not [B, H]");
    let groups = to_u32(rows, "gpu layer_norm: rows").div_ceil(WORKGROUP_SIZE);
    dispatch(
        ctx,
        &LAYER_NORM_FORWARD,
        &[
            (0, &pb),
            (1, b.x.buffer()),
            (2, b.gamma.buffer()),
            (3, beta.buffer()),
            (4, y.buffer()),
            (5, b.mean.buffer()),
            (6, b.rstd.buffer()),
        ],
        grid_1d(groups),
    )
}

/// dx (overwritten) from dy and the forward's x, μ, rstd.
pub fn prepare_layer_norm_backward_dx(
    ctx: &GpuContext,
    b: &LayerNormBuffers,
    dy: &GpuVec,
    dx: &GpuVec,
    rows: usize,
    h: usize,
) -> Result<Dispatch, GpuError> {
    let pb = params(ctx, b, rows, h);
    assert_eq!(dy.len(), rows * h, "gpu layer_norm: dy is not [B, H]");
    assert_eq!(dx.len(), rows * h, "gpu layer_norm: dx is not [B, H]");
    let groups = to_u32(rows, "gpu layer_norm: rows").div_ceil(WORKGROUP_SIZE);
    dispatch(
        ctx,
        &LAYER_NORM_BACKWARD_DX,
        &[
            (0, &pb),
            (1, b.x.buffer()),
            (2, b.gamma.buffer()),
            (5, b.mean.buffer()),
            (6, b.rstd.buffer()),
            (7, dy.buffer()),
            (8, dx.buffer()),
        ],
        grid_1d(groups),
    )
}

/// dγ += Σ_r dy·n, dβ += Σ_r dy (rows ascending, accumulated into what the buffers hold).
pub fn prepare_layer_norm_backward_params(
    ctx: &GpuContext,
    b: &LayerNormBuffers,
    dy: &GpuVec,
    dgamma: &GpuVec,
    dbeta: &GpuVec,
    rows: usize,
    h: usize,
) -> Result<Dispatch, GpuError> {
    let pb = params(ctx, b, rows, h);
    assert_eq!(dy.len(), rows * h, "gpu layer_norm: dy is not [B, H]");
    assert_eq!(dgamma.len(), h, "gpu layer_norm: dgamma is not [H]");
    assert_eq!(dbeta.len(), h, "gpu layer_norm: dbeta is not [H]");
    let groups = to_u32(h, "gpu layer_norm: h").div_ceil(WORKGROUP_SIZE);
    dispatch(
        ctx,
        &LAYER_NORM_BACKWARD_PARAMS,
        &[
            (0, &pb),
            (1, b.x.buffer()),
            (5, b.mean.buffer()),
            (6, b.rstd.buffer()),
            (7, dy.buffer()),
            (9, dgamma.buffer()),
            (10, dbeta.buffer()),
        ],
        grid_1d(groups),
    )
}

/// `cpu::Kernels::layer_norm_forward` on the GPU.
#[allow(clippy::too_many_arguments)]
pub fn run_layer_norm_forward(
    ctx: &GpuContext,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    rows: usize,
    h: usize,
) -> Result<(), GpuError> {
    let (gx, gg, gb) = (
        GpuVec::from_slice(ctx, x, "x"),
        GpuVec::from_slice(ctx, gamma, "gamma"),
        GpuVec::from_slice(ctx, beta, "beta"),
    );
    let (gm, gr) = (
        GpuVec::zeros(ctx, rows, "mean"),
        GpuVec::zeros(ctx, rows, "rstd"),
    );
    let gy = GpuVec::zeros(ctx, y.len(), "y");
    let bufs = LayerNormBuffers {
        x: &gx,
        gamma: &gg,
        mean: &gm,
        rstd: &gr,
    };
    let mut enc = ctx.encoder("run_layer_norm_forward");
    prepare_layer_norm_forward(ctx, &bufs, &gb, &gy, rows, h)?.record(&mut enc);
    ctx.submit(enc);
    let mut out = ctx.read_many(&[&gy, &gm, &gr])?.into_iter();
    y.copy_from_slice(&out.next().unwrap_or_default());
    mean.copy_from_slice(&out.next().unwrap_or_default());
    rstd.copy_from_slice(&out.next().unwrap_or_default());
    Ok(())
}

/// `cpu::Kernels::layer_norm_backward` on the GPU: dx overwritten, dγ and dβ accumulated.
#[allow(clippy::too_many_arguments)]
pub fn run_layer_norm_backward(
    ctx: &GpuContext,
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    rows: usize,
    h: usize,
) -> Result<(), GpuError> {
    let (gx, gg) = (
        GpuVec::from_slice(ctx, x, "x"),
        GpuVec::from_slice(ctx, gamma, "gamma"),
    );
    let (gm, gr) = (
        GpuVec::from_slice(ctx, mean, "mean"),
        GpuVec::from_slice(ctx, rstd, "rstd"),
    );
    let gdy = GpuVec::from_slice(ctx, dy, "dy");
    let gdx = GpuVec::zeros(ctx, dx.len(), "dx");
    let gdg = GpuVec::from_slice(ctx, dgamma, "dgamma");
    let gdb = GpuVec::from_slice(ctx, dbeta, "dbeta");
    let bufs = LayerNormBuffers {
        x: &gx,
        gamma: &gg,
        mean: &gm,
        rstd: &gr,
    };
    let mut enc = ctx.encoder("run_layer_norm_backward");
    prepare_layer_norm_backward_dx(ctx, &bufs, &gdy, &gdx, rows, h)?.record(&mut enc);
    prepare_layer_norm_backward_params(ctx, &bufs, &gdy, &gdg, &gdb, rows, h)?.record(&mut enc);
    ctx.submit(enc);
    let mut out = ctx.read_many(&[&gdx, &gdg, &gdb])?.into_iter();
    dx.copy_from_slice(&out.next().unwrap_or_default());
    dgamma.copy_from_slice(&out.next().unwrap_or_default());
    dbeta.copy_from_slice(&out.next().unwrap_or_default());
    Ok(())
}
