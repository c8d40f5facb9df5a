//! Host wrappers of `shaders/energies.wgsl`: log R [B] and ∇log R [B, D] per row, f32, for
//! 25GMM/9GMM ([`Target::Gmm`] with the grid axis), Manywell (any even D) and the hard/easy
//! funnel. The CPU references (`src/energies/*.rs`) compute in f64; the f64 constant terms are
//! computed here and passed to the shader.

use super::{dispatch, grid_1d, to_u32, Dispatch};
use crate::config::FunnelVariant;
use crate::gpu::buffers::{params_buffer, GpuVec};
use crate::gpu::pipelines::{BindingKind::*, EntryPoint};
use crate::gpu::shaders::Shader;
use crate::gpu::{GpuContext, GpuError};
use bytemuck::{Pod, Zeroable};

/// Threads per workgroup in energies.wgsl (`@workgroup_size`), one row each.
pub const WORKGROUP_SIZE: u32 = 64;

/// ½ log 2π.
const HALF_LOG_TAU: f64 = 0.918_938_533_204_672_8;

/// `energies.wgsl` `EnergyParams`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct EnergyParams {
    pub rows: u32,
    pub dim: u32,
    pub n_axis: u32,
    pub row0: u32,
    pub variance: f32,
    pub log_const: f32,
    pub grad_row0: u32,
    pub _pad2: f32,
}

/// Which target a dispatch evaluates.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// Equal-weight grid mixture in 2-D: `axis` the grid coordinates of one axis (25GMM:
    /// {−10, −5, 0, 5, 10}; 9GMM: {−5, 0, 5}), `var` the per-coordinate variance (0.3).
    Gmm { axis: Vec<f64>, var: f64 },
    /// Manywell, D even.
    ManyWell,
    /// Neal's funnel, hard (s² = 9) or easy (s² = 1).
    Funnel(FunnelVariant),
}

impl Target {
    /// 25GMM (means {−10, −5, 0, 5, 10}², variance 0.3).
    pub fn gmm25() -> Self {
        Target::Gmm {
            axis: vec![-10.0, -5.0, 0.0, 5.0, 10.0],
            var: crate::energies::gmm::GMM_VARIANCE,
        }
    }

    /// 9GMM (means {−5, 0, 5}², variance 0.3).
    pub fn gmm9() -> Self {
        Target::Gmm {
            axis: vec![-5.0, 0.0, 5.0],
            var: crate::energies::gmm::GMM_VARIANCE,
        }
    }

    fn entry(&self) -> &'static EntryPoint {
        match self {
            Target::Gmm { .. } => &LOG_REWARD_GRAD_GMM,
            Target::ManyWell => &LOG_REWARD_GRAD_MANYWELL,
            Target::Funnel(_) => &LOG_REWARD_GRAD_FUNNEL,
        }
    }

    fn params(&self, rows: usize, dim: usize) -> EnergyParams {
        let (n_axis, var, log_const) = match self {
            Target::Gmm { axis, var } => {
                assert_eq!(dim, 2, "gpu energies: GMM is 2-D");
                // Per coordinate −log n − ½ log(2π v); two coordinates.
                let c = -(axis.len() as f64).ln() - 0.5 * (std::f64::consts::TAU * var).ln();
                (axis.len(), *var, 2.0 * c)
            }
            Target::ManyWell => {
                assert!(
                    dim >= 2 && dim.is_multiple_of(2),
                    "gpu energies: Manywell needs an even dim, got {dim}"
                );
                (0, 0.0, 0.0)
            }
            Target::Funnel(v) => {
                assert!(dim >= 1, "gpu energies: funnel needs dim ≥ 1");
                let var0: f64 = match v {
                    FunnelVariant::Hard => 9.0,
                    FunnelVariant::Easy => 1.0,
                };
                let m = (dim - 1) as f64;
                (0, var0, -HALF_LOG_TAU - 0.5 * var0.ln() - m * HALF_LOG_TAU)
            }
        };
        EnergyParams {
            rows: to_u32(rows, "gpu energies: rows"),
            dim: to_u32(dim, "gpu energies: dim"),
            n_axis: to_u32(n_axis, "gpu energies: n_axis"),
            row0: 0,
            variance: var as f32,
            log_const: log_const as f32,
            grad_row0: 0,
            _pad2: 0.0,
        }
    }
}

pub static LOG_REWARD_GRAD_GMM: EntryPoint = EntryPoint {
    shader: Shader::Energies,
    name: "log_reward_grad_gmm",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (2, StorageRead),
        (3, StorageReadWrite),
        (4, StorageReadWrite),
    ],
};

pub static LOG_REWARD_GRAD_MANYWELL: EntryPoint = EntryPoint {
    shader: Shader::Energies,
    name: "log_reward_grad_manywell",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (3, StorageReadWrite),
        (4, StorageReadWrite),
    ],
};

pub static LOG_REWARD_GRAD_FUNNEL: EntryPoint = EntryPoint {
    shader: Shader::Energies,
    name: "log_reward_grad_funnel",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (3, StorageReadWrite),
        (4, StorageReadWrite),
    ],
};

/// A device copy of the target's constant data (the GMM axis; a 1-element dummy otherwise), so a
/// training loop uploads it once.
pub fn target_buffer(ctx: &GpuContext, target: &Target) -> GpuVec {
    match target {
        Target::Gmm { axis, .. } => {
            let a: Vec<f32> = axis.iter().map(|&v| v as f32).collect();
            GpuVec::from_slice(ctx, &a, "gmm axis")
        }
        _ => GpuVec::zeros(ctx, 1, "no target data"),
    }
}

/// log_r [B] and grad [B, D] of x [B, D]; `data` from [`target_buffer`] (same target).
pub fn prepare_log_reward_grad(
    ctx: &GpuContext,
    target: &Target,
    dim: usize,
    data: &GpuVec,
    x: &GpuVec,
    log_r: &GpuVec,
    grad: &GpuVec,
) -> Result<Dispatch, GpuError> {
    assert!(dim > 0, "gpu energies: dim must be positive");
    assert_eq!(
        x.len() % dim,
        0,
        "gpu energies: x.len() not a multiple of dim"
    );
    assert_eq!(grad.len(), x.len(), "gpu energies: grad.len() != x.len()");
    prepare_log_reward_grad_rows(ctx, target, dim, data, x, 0, log_r, grad, 0)
}

/// As [`prepare_log_reward_grad`] for rows row0 … row0 + B − 1 of a longer x (B = log_r.len()),
/// e.g. x_T inside a rollout's [(T+1)·B, D] state buffer; the gradient goes to rows grad_row0 …
/// grad_row0 + B − 1 of `grad`.
#[allow(clippy::too_many_arguments)]
pub fn prepare_log_reward_grad_rows(
    ctx: &GpuContext,
    target: &Target,
    dim: usize,
    data: &GpuVec,
    x: &GpuVec,
    row0: usize,
    log_r: &GpuVec,
    grad: &GpuVec,
    grad_row0: usize,
) -> Result<Dispatch, GpuError> {
    assert!(dim > 0, "gpu energies: dim must be positive");
    let rows = log_r.len();
    assert!(
        x.len() >= (row0 + rows) * dim,
        "gpu energies: x has fewer than row0 + B rows"
    );
    assert!(
        grad.len() >= (grad_row0 + rows) * dim,
        "gpu energies: grad has fewer than grad_row0 + B rows"
    );
    let mut p = target.params(rows, dim);
    p.row0 = to_u32(row0, "gpu energies: row0");
    p.grad_row0 = to_u32(grad_row0, "gpu energies: grad_row0");
    if let Target::Gmm { axis, .. } = target {
        assert_eq!(
            data.len(),
            axis.len(),
            "gpu energies: data is not the GMM axis"
        );
    }
    let pb = params_buffer(ctx, &p, "EnergyParams");
    let grid = grid_1d(p.rows.div_ceil(WORKGROUP_SIZE));
    let entry = target.entry();
    if matches!(target, Target::Gmm { .. }) {
        dispatch(
            ctx,
            entry,
            &[
                (0, &pb),
                (1, x.buffer()),
                (2, data.buffer()),
                (3, log_r.buffer()),
                (4, grad.buffer()),
            ],
            grid,
        )
    } else {
        dispatch(
            ctx,
            entry,
            &[
                (0, &pb),
                (1, x.buffer()),
                (3, log_r.buffer()),
                (4, grad.buffer()),
            ],
            grid,
        )
    }
}

/// Records [`prepare_log_reward_grad`] into `encoder`.
#[allow(clippy::too_many_arguments)]
pub fn call_log_reward_grad(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    target: &Target,
    dim: usize,
    data: &GpuVec,
    x: &GpuVec,
    log_r: &GpuVec,
    grad: &GpuVec,
) -> Result<(), GpuError> {
    prepare_log_reward_grad(ctx, target, dim, data, x, log_r, grad)?.record(encoder);
    Ok(())
}

/// On host slices: returns (log R [B], ∇log R [B, D]).
pub fn run_log_reward_grad(
    ctx: &GpuContext,
    target: &Target,
    dim: usize,
    x: &[f32],
) -> Result<(Vec<f32>, Vec<f32>), GpuError> {
    let rows = x.len() / dim.max(1);
    let data = target_buffer(ctx, target);
    let gx = GpuVec::from_slice(ctx, x, "x");
    let gr = GpuVec::zeros(ctx, rows, "log_r");
    let gg = GpuVec::zeros(ctx, x.len(), "grad");
    let mut enc = ctx.encoder("run_log_reward_grad");
    call_log_reward_grad(ctx, &mut enc, target, dim, &data, &gx, &gr, &gg)?;
    ctx.submit(enc);
    let mut out = ctx.read_many(&[&gr, &gg])?.into_iter();
    Ok((
        out.next().unwrap_or_default(),
        out.next().unwrap_or_default(),
    ))
}
