//! Host wrappers of `shaders/time_features.wgsl`: out[i, k] = sin(a), out[i, F + k] = cos(a),
//! a = fma(t[i], f[k], φ[k]); t [T], freqs/phase [F], out [T, 2F]; and the phase gradient
//! dphase[F] += Σ_i dout[i,k]·cos a − dout[i,F+k]·sin a. Same operation order as
//! `cpu::time_features::time_features_ref` / `time_features_backward_ref` (sin/cos from
//! `shaders/math.wgsl`).

use super::{dispatch, grid_1d, to_u32, Dispatch};
use crate::gpu::buffers::{params_buffer, GpuVec, TimeFeaturesParams};
use crate::gpu::pipelines::{BindingKind::*, EntryPoint};
use crate::gpu::shaders::Shader;
use crate::gpu::{GpuContext, GpuError};

/// Threads per workgroup in time_features.wgsl (`@workgroup_size`, `WG`), one (i, k) pair each.
pub const WORKGROUP_SIZE: u32 = 64;

pub static TIME_FEATURES: EntryPoint = EntryPoint {
    shader: Shader::TimeFeatures,
    name: "time_features",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (2, StorageRead),
        (3, StorageRead),
        (4, StorageReadWrite),
    ],
};

pub static TIME_FEATURES_BACKWARD: EntryPoint = EntryPoint {
    shader: Shader::TimeFeatures,
    name: "time_features_backward",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (2, StorageRead),
        (3, StorageRead),
        (5, StorageRead),
        (6, StorageReadWrite),
    ],
};

fn params(ctx: &GpuContext, t: &GpuVec, f: usize) -> wgpu::Buffer {
    params_buffer(
        ctx,
        &TimeFeaturesParams {
            t_len: to_u32(t.len(), "T"),
            f: to_u32(f, "F"),
            ..Default::default()
        },
        "TimeFeaturesParams",
    )
}

/// dphase[F] += the phase gradient of the features of t[T] given dout[T, 2F] (accumulates).
pub fn prepare_time_features_backward(
    ctx: &GpuContext,
    t: &GpuVec,
    freqs: &GpuVec,
    phase: &GpuVec,
    dout: &GpuVec,
    dphase: &GpuVec,
) -> Result<Dispatch, GpuError> {
    let f = freqs.len();
    assert_eq!(
        phase.len(),
        f,
        "time_features_backward: phase.len() != freqs.len()"
    );
    assert_eq!(
        dphase.len(),
        f,
        "time_features_backward: dphase.len() != freqs.len()"
    );
    assert_eq!(
        dout.len(),
        t.len() * 2 * f,
        "time_features_backward: dout.len() != t.len()·2·freqs.len()"
    );
    let pb = params(ctx, t, f);
    dispatch(
        ctx,
        &TIME_FEATURES_BACKWARD,
        &[
            (0, &pb),
            (1, t.buffer()),
            (2, freqs.buffer()),
            (3, phase.buffer()),
            (5, dout.buffer()),
            (6, dphase.buffer()),
        ],
        grid_1d(to_u32(f, "F").div_ceil(WORKGROUP_SIZE)),
    )
}

/// `cpu::Kernels::time_features_backward` on the GPU (accumulates into `dphase`).
pub fn run_time_features_backward(
    ctx: &GpuContext,
    t: &[f32],
    freqs: &[f32],
    phase: &[f32],
    dout: &[f32],
    dphase: &mut [f32],
) -> Result<(), GpuError> {
    let gt = GpuVec::from_slice(ctx, t, "t");
    let gf = GpuVec::from_slice(ctx, freqs, "freqs");
    let gp = GpuVec::from_slice(ctx, phase, "phase");
    let gd = GpuVec::from_slice(ctx, dout, "dout");
    let gdp = GpuVec::from_slice(ctx, dphase, "dphase");
    let mut enc = ctx.encoder("run_time_features_backward");
    prepare_time_features_backward(ctx, &gt, &gf, &gp, &gd, &gdp)?.record(&mut enc);
    ctx.submit(enc);
    dphase.copy_from_slice(&gdp.read(ctx)?);
    Ok(())
}

/// out[T, 2F] = (sin, cos) features of t[T] (overwrites out).
pub fn prepare_time_features(
    ctx: &GpuContext,
    t: &GpuVec,
    freqs: &GpuVec,
    phase: &GpuVec,
    out: &GpuVec,
) -> Result<Dispatch, GpuError> {
    let f = freqs.len();
    assert_eq!(phase.len(), f, "time_features: phase.len() != freqs.len()");
    assert_eq!(
        out.len(),
        t.len() * 2 * f,
        "time_features: out.len() != t.len()·2·freqs.len()"
    );
    let pairs = to_u32(t.len() * 2 * f, "time_features: T·2F") / 2;
    let pb = params(ctx, t, f);
    dispatch(
        ctx,
        &TIME_FEATURES,
        &[
            (0, &pb),
            (1, t.buffer()),
            (2, freqs.buffer()),
            (3, phase.buffer()),
            (4, out.buffer()),
        ],
        grid_1d(pairs.div_ceil(WORKGROUP_SIZE)),
    )
}

/// Records [`prepare_time_features`] into `encoder`.
pub fn call_time_features(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    t: &GpuVec,
    freqs: &GpuVec,
    phase: &GpuVec,
    out: &GpuVec,
) -> Result<(), GpuError> {
    prepare_time_features(ctx, t, freqs, phase, out)?.record(encoder);
    Ok(())
}

/// `cpu::Kernels::time_features` on the GPU.
pub fn run_time_features(
    ctx: &GpuContext,
    t: &[f32],
    freqs: &[f32],
    phase: &[f32],
    out: &mut [f32],
) -> Result<(), GpuError> {
    let gt = GpuVec::from_slice(ctx, t, "t");
    let gf = GpuVec::from_slice(ctx, freqs, "freqs");
    let gp = GpuVec::from_slice(ctx, phase, "phase");
    let go = GpuVec::zeros(ctx, out.len(), "out");
    let mut enc = ctx.encoder("run_time_features");
    call_time_features(ctx, &mut enc, &gt, &gf, &gp, &go)?;
    ctx.submit(enc);
    out.copy_from_slice(&go.read(ctx)?);
    Ok(())
}
