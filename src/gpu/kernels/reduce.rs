//! Host wrappers of `shaders/reduce.wgsl`: the fixed-order segmented sum, two passes
//! (per-workgroup partial sums, then one workgroup per segment over its partials). The order is
//! documented in the shader header; it depends only on the segment length N, so every run on
//! every device adds in the same order (no atomics). It is NOT `cpu::Kernels::sum`'s order, so
//! GPU vs CPU agree within the ε·n bound `GPU_SUM` of tests/cpu_vs_gpu.rs, not bitwise.

use super::{dispatch, to_u32, Dispatch, MAX_GROUPS_PER_DIM};
use crate::gpu::buffers::{params_buffer, GpuVec, ReduceParams};
use crate::gpu::pipelines::{BindingKind::*, EntryPoint};
use crate::gpu::shaders::Shader;
use crate::gpu::{GpuContext, GpuError};

/// Elements per pass-1 workgroup (reduce.wgsl `CHUNK` = 256 threads × 4 items).
pub const CHUNK: usize = 1024;
/// Threads per workgroup of both passes (reduce.wgsl `TPB`; the tree is shaped for it).
pub const WORKGROUP_SIZE: u32 = 256;

pub static SUM_PARTIALS: EntryPoint = EntryPoint {
    shader: Shader::Reduce,
    name: "sum_partials",
    bindings: &[(0, Uniform), (1, StorageRead), (2, StorageReadWrite)],
};

pub static SUM_FINISH: EntryPoint = EntryPoint {
    shader: Shader::Reduce,
    name: "sum_finish",
    bindings: &[(0, Uniform), (2, StorageReadWrite), (3, StorageReadWrite)],
};

/// The two launches of a segmented sum; the partials buffer lives in their bind groups.
#[derive(Debug)]
pub struct SumDispatch {
    pub partials: Dispatch,
    pub finish: Dispatch,
}

impl SumDispatch {
    /// Records both passes, in order, into one compute pass.
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("sum"),
            timestamp_writes: None,
        });
        self.record_in_pass(&mut pass);
    }

    /// Records both passes into an open compute pass (wgpu orders pass 2 after pass 1's writes).
    pub fn record_in_pass(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.partials.record_in_pass(pass);
        self.finish.record_in_pass(pass);
    }
}

/// out[s] = Σ_i x[s·n + i] for s in 0..segments; x is [segments, n], out is [segments]
/// (overwritten). segments ≤ 65535.
pub fn prepare_sum(
    ctx: &GpuContext,
    x: &GpuVec,
    out: &GpuVec,
    segments: usize,
    n: usize,
) -> Result<SumDispatch, GpuError> {
    assert_eq!(x.len(), segments * n, "gpu sum: x.len() != segments·n");
    assert_eq!(out.len(), segments, "gpu sum: out.len() != segments");
    let s = to_u32(segments, "gpu sum: segments");
    assert!(s <= MAX_GROUPS_PER_DIM, "gpu sum: segments = {s} > 65535");
    let groups = to_u32(n.div_ceil(CHUNK), "gpu sum: groups");
    assert!(groups <= MAX_GROUPS_PER_DIM, "gpu sum: n = {n} too long");
    let p = ReduceParams {
        n: to_u32(n, "gpu sum: n"),
        segments: s,
        groups,
        _pad: 0,
    };
    let pb = params_buffer(ctx, &p, "ReduceParams");
    let partials = GpuVec::zeros(ctx, segments * groups as usize, "sum partials");
    let pass1 = dispatch(
        ctx,
        &SUM_PARTIALS,
        &[(0, &pb), (1, x.buffer()), (2, partials.buffer())],
        [groups, s, 1],
    )?;
    let pass2 = dispatch(
        ctx,
        &SUM_FINISH,
        &[(0, &pb), (2, partials.buffer()), (3, out.buffer())],
        [1, s, 1],
    )?;
    Ok(SumDispatch {
        partials: pass1,
        finish: pass2,
    })
}

/// Records [`prepare_sum`] into `encoder`.
pub fn call_sum(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuVec,
    out: &GpuVec,
    segments: usize,
    n: usize,
) -> Result<(), GpuError> {
    prepare_sum(ctx, x, out, segments, n)?.record(encoder);
    Ok(())
}

/// Σ x on the GPU (one segment), in the shader's fixed order.
pub fn run_sum(ctx: &GpuContext, x: &[f32]) -> Result<f32, GpuError> {
    let mut out = [0f32];
    run_segmented_sum(ctx, x, &mut out, 1, x.len())?;
    Ok(out[0])
}

/// out[s] = Σ_i x[s·n + i] on the GPU.
pub fn run_segmented_sum(
    ctx: &GpuContext,
    x: &[f32],
    out: &mut [f32],
    segments: usize,
    n: usize,
) -> Result<(), GpuError> {
    let gx = GpuVec::from_slice(ctx, x, "x");
    let go = GpuVec::zeros(ctx, out.len(), "sums");
    let mut enc = ctx.encoder("run_sum");
    call_sum(ctx, &mut enc, &gx, &go, segments, n)?;
    ctx.submit(enc);
    out.copy_from_slice(&go.read(ctx)?);
    Ok(())
}
