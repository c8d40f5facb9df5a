//! Host wrappers of `shaders/clip.wgsl`: y = clamp(x, −c, c) (NaN ↦ −c, as `Tape::clip`'s
//! `x.max(−c).min(c)`) and its VJP dx = dy where −c ≤ x ≤ c, else 0 (NaN x ↦ 0, as `Op::Clip`),
//! elementwise over N = x.len() values. Selects only, no arithmetic: bitwise equal to the CPU.

use super::{dispatch, grid_1d, to_u32, Dispatch};
use crate::gpu::buffers::{params_buffer, GpuVec};
use crate::gpu::pipelines::{BindingKind::*, EntryPoint};
use crate::gpu::shaders::Shader;
use crate::gpu::{GpuContext, GpuError};
use bytemuck::{Pod, Zeroable};

/// Threads per workgroup in clip.wgsl (`@workgroup_size`, `WG`), one element each.
pub const WORKGROUP_SIZE: u32 = 64;

/// `clip.wgsl` `ClipParams`: n elements, clip limit c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct ClipParams {
    pub n: u32,
    pub limit: f32,
    pub _pad0: u32,
    pub _pad1: u32,
}

pub static CLIP_FORWARD: EntryPoint = EntryPoint {
    shader: Shader::Clip,
    name: "clip_forward",
    bindings: &[(0, Uniform), (1, StorageRead), (3, StorageReadWrite)],
};

pub static CLIP_BACKWARD: EntryPoint = EntryPoint {
    shader: Shader::Clip,
    name: "clip_backward",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (2, StorageRead),
        (4, StorageReadWrite),
    ],
};

fn setup(
    ctx: &GpuContext,
    x: &GpuVec,
    others: &[(&str, &GpuVec)],
    limit: f32,
) -> (wgpu::Buffer, [u32; 3]) {
    for (what, v) in others {
        assert_eq!(v.len(), x.len(), "gpu clip: {what}.len() != x.len()");
    }
    let n = to_u32(x.len(), "gpu clip: n");
    let pb = params_buffer(
        ctx,
        &ClipParams {
            n,
            limit,
            ..Default::default()
        },
        "ClipParams",
    );
    (pb, grid_1d(n.div_ceil(WORKGROUP_SIZE)))
}

/// y = clamp(x, −limit, limit), NaN ↦ −limit (y overwritten, distinct from x).
pub fn prepare_clip_forward(
    ctx: &GpuContext,
    x: &GpuVec,
    y: &GpuVec,
    limit: f32,
) -> Result<Dispatch, GpuError> {
    let (pb, grid) = setup(ctx, x, &[("y", y)], limit);
    dispatch(
        ctx,
        &CLIP_FORWARD,
        &[(0, &pb), (1, x.buffer()), (3, y.buffer())],
        grid,
    )
}

/// dx = dy where −limit ≤ x ≤ limit, else +0 (x = the forward's input; dx overwritten).
pub fn prepare_clip_backward(
    ctx: &GpuContext,
    x: &GpuVec,
    dy: &GpuVec,
    dx: &GpuVec,
    limit: f32,
) -> Result<Dispatch, GpuError> {
    let (pb, grid) = setup(ctx, x, &[("dy", dy), ("dx", dx)], limit);
    dispatch(
        ctx,
        &CLIP_BACKWARD,
        &[
            (0, &pb),
            (1, x.buffer()),
            (2, dy.buffer()),
            (4, dx.buffer()),
        ],
        grid,
    )
}

/// Records [`prepare_clip_forward`] into `encoder`.
pub fn call_clip_forward(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuVec,
    y: &GpuVec,
    limit: f32,
) -> Result<(), GpuError> {
    prepare_clip_forward(ctx, x, y, limit)?.record(encoder);
    Ok(())
}

/// Records [`prepare_clip_backward`] into `encoder`.
pub fn call_clip_backward(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuVec,
    dy: &GpuVec,
    dx: &GpuVec,
    limit: f32,
) -> Result<(), GpuError> {
    prepare_clip_backward(ctx, x, dy, dx, limit)?.record(encoder);
    Ok(())
}

/// `Tape::clip`'s forward on the GPU.
pub fn run_clip_forward(
    ctx: &GpuContext,
    x: &[f32],
    y: &mut [f32],
    limit: f32,
) -> Result<(), GpuError> {
    assert_eq!(x.len(), y.len(), "clip_forward: x.len() != y.len()");
    let gx = GpuVec::from_slice(ctx, x, "x");
    let gy = GpuVec::zeros(ctx, y.len(), "y");
    let mut enc = ctx.encoder("run_clip_forward");
    call_clip_forward(ctx, &mut enc, &gx, &gy, limit)?;
    ctx.submit(enc);
    y.copy_from_slice(&gy.read(ctx)?);
    Ok(())
}

/// The `Op::Clip` VJP on the GPU (overwrites dx).
pub fn run_clip_backward(
    ctx: &GpuContext,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    limit: f32,
) -> Result<(), GpuError> {
    assert_eq!(x.len(), dx.len(), "clip_backward: x.len() != dx.len()");
    let gx = GpuVec::from_slice(ctx, x, "x");
    let gdy = GpuVec::from_slice(ctx, dy, "dy");
    let gdx = GpuVec::zeros(ctx, dx.len(), "dx");
    let mut enc = ctx.encoder("run_clip_backward");
    call_clip_backward(ctx, &mut enc, &gx, &gdy, &gdx, limit)?;
    ctx.submit(enc);
    dx.copy_from_slice(&gdx.read(ctx)?);
    Ok(())
}
