//! Host wrapper of `shaders/transpose.wgsl`: dst[offset + p·O + j] = src[j·K + p], a row-major
//! [O, K] block written transposed into a larger buffer (the fused step's forward weights).

use super::{dispatch, grid_1d, to_u32, Dispatch};
use crate::gpu::buffers::{params_buffer, GpuVec};
use crate::gpu::pipelines::{BindingKind::*, EntryPoint};
use crate::gpu::shaders::Shader;
use crate::gpu::{GpuContext, GpuError};
use bytemuck::{Pod, Zeroable};

/// Threads per workgroup (`@workgroup_size`), one element each.
pub const WORKGROUP_SIZE: u32 = 64;

/// `transpose.wgsl` `TransposeParams`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TransposeParams {
    pub o: u32,
    pub k: u32,
    pub offset: u32,
    pub _pad: u32,
}

pub static TRANSPOSE_INTO: EntryPoint = EntryPoint {
    shader: Shader::Transpose,
    name: "transpose_into",
    bindings: &[(0, Uniform), (1, StorageRead), (2, StorageReadWrite)],
};

/// dst[offset..offset + K·O] = srcᵀ for src [O, K] (row-major).
pub fn prepare_transpose_into(
    ctx: &GpuContext,
    src: &GpuVec,
    o: usize,
    k: usize,
    dst: &GpuVec,
    offset: usize,
) -> Result<Dispatch, GpuError> {
    assert_eq!(src.len(), o * k, "gpu transpose: src is not [O, K]");
    assert!(
        dst.len() >= offset + o * k,
        "gpu transpose: dst shorter than offset + O·K"
    );
    let p = TransposeParams {
        o: to_u32(o, "gpu transpose: O"),
        k: to_u32(k, "gpu transpose: K"),
        offset: to_u32(offset, "gpu transpose: offset"),
        _pad: 0,
    };
    let pb = params_buffer(ctx, &p, "TransposeParams");
    dispatch(
        ctx,
        &TRANSPOSE_INTO,
        &[(0, &pb), (1, src.buffer()), (2, dst.buffer())],
        grid_1d(to_u32(o * k, "gpu transpose: O·K").div_ceil(WORKGROUP_SIZE)),
    )
}

/// The transpose on host slices (upload, run, read back): srcᵀ [K, O].
pub fn run_transpose(
    ctx: &GpuContext,
    src: &[f32],
    o: usize,
    k: usize,
) -> Result<Vec<f32>, GpuError> {
    let s = GpuVec::from_slice(ctx, src, "src");
    let d = GpuVec::zeros(ctx, o * k, "dst");
    let mut enc = ctx.encoder("run_transpose");
    prepare_transpose_into(ctx, &s, o, k, &d, 0)?.record(&mut enc);
    ctx.submit(enc);
    d.read(ctx)
}
