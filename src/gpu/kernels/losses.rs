//! Host wrappers of `shaders/losses.wgsl`: trajectory balance (learned log Z) and VarGrad (batch
//! log Z) on the device — the loss, ∂L/∂LF_b, ∂L/∂log Z and a non-finite count in one workgroup,
//! in the fixed order documented in the shader header (bitwise reproducible run to run). The CPU
//! references (`losses::trajectory_balance`, `losses::vargrad`) are f64; this is f32, so the two
//! agree within the tolerances of tests/gpu_train_ops.rs, not bitwise.

use super::{dispatch, to_u32, Dispatch};
use crate::config::Method;
use crate::gpu::buffers::{params_buffer, GpuVec};
use crate::gpu::pipelines::{BindingKind::*, EntryPoint};
use crate::gpu::shaders::Shader;
use crate::gpu::{GpuContext, GpuError};
use bytemuck::{Pod, Zeroable};

/// Threads of the single workgroup in losses.wgsl (`@workgroup_size`, `TPB`; the tree is
/// shaped for it).
pub const WORKGROUP_SIZE: u32 = 256;

/// Length of the `stats` output: [loss, log Z, non-finite count, 0].
pub const STATS_LEN: usize = 4;
/// `stats[STAT_LOSS]` = L.
pub const STAT_LOSS: usize = 0;
/// `stats[STAT_LOG_Z]` = the learned log Z (TB) or −mean ζ (VarGrad).
pub const STAT_LOG_Z: usize = 1;
/// `stats[STAT_NON_FINITE]` = how many of LF, LB, lr are ±∞ or NaN (an exact count, as f32).
pub const STAT_NON_FINITE: usize = 2;

/// `losses.wgsl` `LossParams`: B trajectories, method 0 = TB, 1 = VarGrad.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LossParams {
    pub n: u32,
    pub method: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

/// The shader's method code (TB and VarGrad; [`crate::gpu::trainer::unsupported`] refuses
/// the others before a plan is built).
pub fn method_code(method: Method) -> u32 {
    match method {
        Method::Tb => 0,
        Method::VarGrad => 1,
        other => panic!("the GPU loss kernel has no {other:?}"),
    }
}

pub static LOSS_GRAD: EntryPoint = EntryPoint {
    shader: Shader::Losses,
    name: "loss_grad",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (2, StorageRead),
        (3, StorageRead),
        (4, StorageRead),
        (5, StorageReadWrite),
        (6, StorageReadWrite),
        (7, StorageReadWrite),
    ],
};

/// The device buffers of one loss evaluation. Inputs: `log_pf`, `log_pb`, `log_r` ([B] each)
/// and `log_z` ([1], the learned log Z parameter; bound but not read for VarGrad). Outputs
/// (overwritten): `d_log_pf` [B], `d_log_z` [1] (0 for VarGrad), `stats` [[`STATS_LEN`]].
#[derive(Clone, Copy, Debug)]
pub struct LossBuffers<'a> {
    pub log_pf: &'a GpuVec,
    pub log_pb: &'a GpuVec,
    pub log_r: &'a GpuVec,
    pub log_z: &'a GpuVec,
    pub d_log_pf: &'a GpuVec,
    pub d_log_z: &'a GpuVec,
    pub stats: &'a GpuVec,
}

/// The loss of `method` and its gradients over B = `bufs.log_pf.len()` ≥ 1 trajectories (one
/// workgroup).
pub fn prepare_loss_grad(
    ctx: &GpuContext,
    method: Method,
    bufs: &LossBuffers<'_>,
) -> Result<Dispatch, GpuError> {
    let b = bufs.log_pf.len();
    assert!(b >= 1, "gpu loss: no trajectories");
    for (what, v) in [
        ("log_pb", bufs.log_pb),
        ("log_r", bufs.log_r),
        ("d_log_pf", bufs.d_log_pf),
    ] {
        assert_eq!(v.len(), b, "gpu loss: {what}.len() != log_pf.len()");
    }
    assert_eq!(bufs.log_z.len(), 1, "gpu loss: log_z.len() != 1");
    assert_eq!(bufs.d_log_z.len(), 1, "gpu loss: d_log_z.len() != 1");
    assert_eq!(bufs.stats.len(), STATS_LEN, "gpu loss: stats.len() != 4");
    let p = LossParams {
        n: to_u32(b, "gpu loss: B"),
        method: method_code(method),
        ..Default::default()
    };
    let pb = params_buffer(ctx, &p, "LossParams");
    dispatch(
        ctx,
        &LOSS_GRAD,
        &[
            (0, &pb),
            (1, bufs.log_pf.buffer()),
            (2, bufs.log_pb.buffer()),
            (3, bufs.log_r.buffer()),
            (4, bufs.log_z.buffer()),
            (5, bufs.d_log_pf.buffer()),
            (6, bufs.d_log_z.buffer()),
            (7, bufs.stats.buffer()),
        ],
        [1, 1, 1],
    )
}

/// Records [`prepare_loss_grad`] into `encoder`.
pub fn call_loss_grad(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    method: Method,
    bufs: &LossBuffers<'_>,
) -> Result<(), GpuError> {
    prepare_loss_grad(ctx, method, bufs)?.record(encoder);
    Ok(())
}

/// What [`run_loss_grad`] reads back: `losses::LossGrad` in f32, plus the non-finite count.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuLossGrad {
    pub loss: f32,
    /// ∂L/∂LF_b for every trajectory b.
    pub d_log_pf: Vec<f32>,
    /// ∂L/∂log Z (0 for VarGrad).
    pub d_log_z: f32,
    /// The learned log Z (TB) or −mean ζ (VarGrad).
    pub log_z: f32,
    /// How many of the 3·B inputs are ±∞ or NaN.
    pub non_finite: u32,
}

/// `losses::trajectory_balance(log_z, …)` (TB) or `losses::vargrad(…)` (VarGrad, `log_z`
/// ignored) on the GPU, in f32.
pub fn run_loss_grad(
    ctx: &GpuContext,
    method: Method,
    log_z: f32,
    log_pf: &[f32],
    log_pb: &[f32],
    log_r: &[f32],
) -> Result<GpuLossGrad, GpuError> {
    let (lf, lb, lr) = (
        GpuVec::from_slice(ctx, log_pf, "log_pf"),
        GpuVec::from_slice(ctx, log_pb, "log_pb"),
        GpuVec::from_slice(ctx, log_r, "log_r"),
    );
    let lz = GpuVec::from_slice(ctx, &[log_z], "log_z");
    let d_lf = GpuVec::zeros(ctx, log_pf.len(), "d_log_pf");
    let d_lz = GpuVec::zeros(ctx, 1, "d_log_z");
    let stats = GpuVec::zeros(ctx, STATS_LEN, "loss stats");
    let bufs = LossBuffers {
        log_pf: &lf,
        log_pb: &lb,
        log_r: &lr,
        log_z: &lz,
        d_log_pf: &d_lf,
        d_log_z: &d_lz,
        stats: &stats,
    };
    let mut enc = ctx.encoder("run_loss_grad");
    call_loss_grad(ctx, &mut enc, method, &bufs)?;
    ctx.submit(enc);
    let mut out = ctx.read_many(&[&d_lf, &d_lz, &stats])?.into_iter();
    let d_log_pf = out.next().unwrap_or_default();
    let d_log_z = out.next().unwrap_or_default()[0];
    let s = out.next().unwrap_or_default();
    Ok(GpuLossGrad {
        loss: s[STAT_LOSS],
        d_log_pf,
        d_log_z,
        log_z: s[STAT_LOG_Z],
        non_finite: s[STAT_NON_FINITE] as u32,
    })
}
