//! Host wrappers of `shaders/gelu.wgsl`: exact-erf GELU forward, backward, and the fused
//! forward + derivative, elementwise over N = x.len() values (any shape, e.g. [B, H]).
//! Same operation order as `cpu::gelu` (and the same erf/exp polynomials, `shaders/math.wgsl`).

use super::{dispatch, grid_1d, to_u32, Dispatch};
use crate::gpu::buffers::{params_buffer, GeluParams, GpuVec};
use crate::gpu::pipelines::{BindingKind::*, EntryPoint};
use crate::gpu::shaders::Shader;
use crate::gpu::{GpuContext, GpuError};

/// Threads per workgroup in gelu.wgsl (`@workgroup_size`, `WG`), one element each.
pub const WORKGROUP_SIZE: u32 = 64;

pub static GELU_FORWARD: EntryPoint = EntryPoint {
    shader: Shader::Gelu,
    name: "gelu_forward",
    bindings: &[(0, Uniform), (1, StorageRead), (3, StorageReadWrite)],
};

pub static GELU_BACKWARD: EntryPoint = EntryPoint {
    shader: Shader::Gelu,
    name: "gelu_backward",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (2, StorageRead),
        (4, StorageReadWrite),
    ],
};

pub static GELU_FORWARD_DERIV: EntryPoint = EntryPoint {
    shader: Shader::Gelu,
    name: "gelu_forward_deriv",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (3, StorageReadWrite),
        (5, StorageReadWrite),
    ],
};

fn setup(ctx: &GpuContext, x: &GpuVec, others: &[(&str, &GpuVec)]) -> (wgpu::Buffer, [u32; 3]) {
    for (what, v) in others {
        assert_eq!(v.len(), x.len(), "gpu gelu: {what}.len() != x.len()");
    }
    let n = to_u32(x.len(), "gpu gelu: n");
    let pb = params_buffer(
        ctx,
        &GeluParams {
            n,
            ..Default::default()
        },
        "GeluParams",
    );
    (pb, grid_1d(n.div_ceil(WORKGROUP_SIZE)))
}

/// y = GELU(x).
pub fn prepare_gelu_forward(
    ctx: &GpuContext,
    x: &GpuVec,
    y: &GpuVec,
) -> Result<Dispatch, GpuError> {
    let (pb, grid) = setup(ctx, x, &[("y", y)]);
    dispatch(
        ctx,
        &GELU_FORWARD,
        &[(0, &pb), (1, x.buffer()), (3, y.buffer())],
        grid,
    )
}

/// dx = dy · GELU'(x) (overwrites dx).
pub fn prepare_gelu_backward(
    ctx: &GpuContext,
    x: &GpuVec,
    dy: &GpuVec,
    dx: &GpuVec,
) -> Result<Dispatch, GpuError> {
    let (pb, grid) = setup(ctx, x, &[("dy", dy), ("dx", dx)]);
    dispatch(
        ctx,
        &GELU_BACKWARD,
        &[
            (0, &pb),
            (1, x.buffer()),
            (2, dy.buffer()),
            (4, dx.buffer()),
        ],
        grid,
    )
}

/// y = GELU(x) and g = GELU'(x) in one pass.
pub fn prepare_gelu_forward_deriv(
    ctx: &GpuContext,
    x: &GpuVec,
    y: &GpuVec,
    g: &GpuVec,
) -> Result<Dispatch, GpuError> {
    let (pb, grid) = setup(ctx, x, &[("y", y), ("g", g)]);
    dispatch(
        ctx,
        &GELU_FORWARD_DERIV,
        &[(0, &pb), (1, x.buffer()), (3, y.buffer()), (5, g.buffer())],
        grid,
    )
}

/// Records [`prepare_gelu_forward`] into `encoder`.
pub fn call_gelu_forward(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuVec,
    y: &GpuVec,
) -> Result<(), GpuError> {
    prepare_gelu_forward(ctx, x, y)?.record(encoder);
    Ok(())
}

/// Records [`prepare_gelu_backward`] into `encoder`.
pub fn call_gelu_backward(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuVec,
    dy: &GpuVec,
    dx: &GpuVec,
) -> Result<(), GpuError> {
    prepare_gelu_backward(ctx, x, dy, dx)?.record(encoder);
    Ok(())
}

/// Records [`prepare_gelu_forward_deriv`] into `encoder`.
pub fn call_gelu_forward_deriv(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuVec,
    y: &GpuVec,
    g: &GpuVec,
) -> Result<(), GpuError> {
    prepare_gelu_forward_deriv(ctx, x, y, g)?.record(encoder);
    Ok(())
}

/// `cpu::Kernels::gelu_forward` on the GPU.
pub fn run_gelu_forward(ctx: &GpuContext, x: &[f32], y: &mut [f32]) -> Result<(), GpuError> {
    assert_eq!(x.len(), y.len(), "gelu_forward: x.len() != y.len()");
    let gx = GpuVec::from_slice(ctx, x, "x");
    let gy = GpuVec::zeros(ctx, y.len(), "y");
    let mut enc = ctx.encoder("run_gelu_forward");
    call_gelu_forward(ctx, &mut enc, &gx, &gy)?;
    ctx.submit(enc);
    y.copy_from_slice(&gy.read(ctx)?);
    Ok(())
}

/// `cpu::Kernels::gelu_backward` on the GPU (overwrites dx).
pub fn run_gelu_backward(
    ctx: &GpuContext,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<(), GpuError> {
    assert_eq!(x.len(), dx.len(), "gelu_backward: x.len() != dx.len()");
    let gx = GpuVec::from_slice(ctx, x, "x");
    let gdy = GpuVec::from_slice(ctx, dy, "dy");
    let gdx = GpuVec::zeros(ctx, dx.len(), "dx");
    let mut enc = ctx.encoder("run_gelu_backward");
    call_gelu_backward(ctx, &mut enc, &gx, &gdy, &gdx)?;
    ctx.submit(enc);
    dx.copy_from_slice(&gdx.read(ctx)?);
    Ok(())
}

/// `cpu::Kernels::gelu_forward_deriv` on the GPU.
pub fn run_gelu_forward_deriv(
    ctx: &GpuContext,
    x: &[f32],
    y: &mut [f32],
    g: &mut [f32],
) -> Result<(), GpuError> {
    assert_eq!(x.len(), y.len(), "gelu_forward_deriv: x.len() != y.len()");
    assert_eq!(x.len(), g.len(), "gelu_forward_deriv: x.len() != g.len()");
    let gx = GpuVec::from_slice(ctx, x, "x");
    let gy = GpuVec::zeros(ctx, y.len(), "y");
    let gg = GpuVec::zeros(ctx, g.len(), "g");
    let mut enc = ctx.encoder("run_gelu_forward_deriv");
    call_gelu_forward_deriv(ctx, &mut enc, &gx, &gy, &gg)?;
    ctx.submit(enc);
    let mut out = ctx.read_many(&[&gy, &gg])?.into_iter();
    y.copy_from_slice(&out.next().unwrap_or_default());
    g.copy_from_slice(&out.next().unwrap_or_default());
    Ok(())
}
