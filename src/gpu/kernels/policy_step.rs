//! Host wrappers of `shaders/policy_step.wgsl`: one rollout step of the drift network (state
//! encoder + time embedding, joint MLP, output layer, clip, Euler–Maruyama step with log p_F /
//! log p_B) in ONE dispatch, its input-gradient chain in another, and the per-step column sums
//! of dh. Activations live in [T·B, ·] buffers (row n = i·B + b), so after the last backward
//! step one `linear_backward_dw` per layer over all T·B rows forms the weight gradients.
//!
//! Shapes: B batch, D state dim, H hidden (≤ [`MAX_HIDDEN`]), L joint layers (≤
//! [`MAX_JOINT_LAYERS`]), T steps. Weights are one packed buffer ([`PolicyShape::packed_offsets`]).

use super::em_step::EmStepConfig;
use super::{dispatch, grid_1d, to_u32, Dispatch};
use crate::gpu::buffers::{params_buffer, GpuVec};
use crate::gpu::pipelines::{BindingKind::*, EntryPoint};
use crate::gpu::shaders::Shader;
use crate::gpu::{GpuContext, GpuError};
use bytemuck::{Pod, Zeroable};

/// Threads per workgroup (`@workgroup_size`).
pub const WORKGROUP_SIZE: u32 = 64;
/// Batch rows per workgroup (`TR`).
pub const TILE_ROWS: usize = 4;
/// Widest hidden layer (`MAX_H`, the workgroup tile's row length).
pub const MAX_HIDDEN: usize = 256;
/// Most joint hidden layers (binding slots a0..a3, z0..z2, dz0..dz2).
pub const MAX_JOINT_LAYERS: usize = 3;

/// `policy_step.wgsl` `PolicyParams`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct PolicyParams {
    pub batch: u32,
    pub dim: u32,
    pub hidden: u32,
    pub layers: u32,
    pub step: u32,
    pub steps: u32,
    pub with_pb: u32,
    pub accumulate: u32,
    pub dt: f32,
    pub var_f: f32,
    pub norm_f: f32,
    pub ratio_b: f32,
    pub var_b: f32,
    pub norm_b: f32,
    pub out_clip: f32,
    pub lgv_clip: f32,
    pub lp: u32,
    pub lp_width: u32,
    pub learned: u32,
    pub log_var_range: f32,
    pub log_sigma2: f32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

/// The fixed shapes of a fused rollout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolicyShape {
    pub batch: usize,
    pub dim: usize,
    pub hidden: usize,
    pub layers: usize,
    pub steps: usize,
    pub out_clip: f64,
    /// The Langevin parametrization: `Some((S, lgv_clip))` with S = 1 or D scale columns.
    pub lp: Option<(usize, f64)>,
    /// A learned variance: `Some((range, σ²))`, ℓ_j = ln σ² + range·tanh(o[D + j]).
    pub learned: Option<(f64, f64)>,
}

impl PolicyShape {
    /// Why these shapes do not fit the kernel, if they do not.
    pub fn unsupported(&self) -> Option<String> {
        if self.hidden > MAX_HIDDEN {
            return Some(format!(
                "network.hidden = {} exceeds the fused GPU step's {MAX_HIDDEN}",
                self.hidden
            ));
        }
        if self.layers > MAX_JOINT_LAYERS {
            return Some(format!(
                "network.joint_layers = {} exceeds the fused GPU step's {MAX_JOINT_LAYERS}",
                self.layers
            ));
        }
        None
    }

    /// (block name, offset) of every policy block in the packed weight buffer, and its length.
    pub fn packed_offsets(&self) -> (Vec<(String, usize)>, usize) {
        let (d, h) = (self.dim, self.hidden);
        let mut out = vec![("s.lin.w".to_string(), 0), ("s.lin.b".to_string(), h * d)];
        let mut off = h * d + h;
        for k in 0..self.layers {
            out.push((format!("joint.{k}.w"), off));
            out.push((format!("joint.{k}.b"), off + h * h));
            off += h * h + h;
        }
        out.push(("joint.out.w".to_string(), off));
        out.push(("joint.out.b".to_string(), off + 2 * d * h));
        (out, off + 2 * d * h + 2 * d)
    }

    /// (block name, offset, rows O, cols K) of every weight matrix in the packed layout: the
    /// blocks the forward reads transposed ([K, O] at the same offset).
    pub fn weight_blocks(&self) -> Vec<(String, usize, usize, usize)> {
        let (d, h) = (self.dim, self.hidden);
        let (offsets, _) = self.packed_offsets();
        offsets
            .into_iter()
            .filter(|(name, _)| name.ends_with(".w"))
            .map(|(name, off)| {
                let (o, k) = match name.as_str() {
                    "s.lin.w" => (h, d),
                    "joint.out.w" => (2 * d, h),
                    _ => (h, h),
                };
                (name, off, o, k)
            })
            .collect()
    }

    /// The transposed packing of `packed` on the host (biases unchanged, each W [O, K] → Wᵀ).
    pub fn transpose_packed(&self, packed: &[f32]) -> Vec<f32> {
        let mut out = packed.to_vec();
        for (_, off, o, k) in self.weight_blocks() {
            for j in 0..o {
                for p in 0..k {
                    out[off + p * o + j] = packed[off + j * k + p];
                }
            }
        }
        out
    }

    fn params(&self, em: &EmStepConfig) -> PolicyParams {
        let e = super::em_step::EmStepParams::new(self.batch, self.dim, em);
        PolicyParams {
            batch: to_u32(self.batch, "policy_step: B"),
            dim: to_u32(self.dim, "policy_step: D"),
            hidden: to_u32(self.hidden, "policy_step: H"),
            layers: to_u32(self.layers, "policy_step: L"),
            step: to_u32(em.step, "policy_step: step"),
            steps: to_u32(self.steps, "policy_step: T"),
            with_pb: e.with_pb,
            accumulate: e.accumulate,
            dt: e.dt,
            var_f: e.var_f,
            norm_f: e.norm_f,
            ratio_b: e.ratio_b,
            var_b: e.var_b,
            norm_b: e.norm_b,
            out_clip: self.out_clip as f32,
            lgv_clip: self.lp.map_or(0.0, |(_, c)| c as f32),
            lp: u32::from(self.lp.is_some()),
            lp_width: to_u32(self.lp.map_or(1, |(w, _)| w), "policy_step: S"),
            learned: u32::from(self.learned.is_some()),
            log_var_range: self.learned.map_or(0.0, |(r, _)| r as f32),
            log_sigma2: self.learned.map_or(0.0, |(_, s2)| s2.ln() as f32),
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        }
    }

    fn tile_grid(&self) -> [u32; 3] {
        grid_1d(to_u32(
            self.batch.div_ceil(TILE_ROWS),
            "policy_step: workgroups",
        ))
    }
}

/// Every buffer of a fused rollout (see the shader header for shapes). `a` has L + 1 entries,
/// `z` and `dz` L; missing slots are bound to `dummy`.
pub struct PolicyBuffers<'a> {
    /// The packed weights as stored (backward) and transposed (forward), see
    /// [`PolicyShape::packed_offsets`] and [`PolicyShape::transpose_packed`].
    pub weights: &'a GpuVec,
    pub weights_t: &'a GpuVec,
    pub temb: &'a GpuVec,
    pub noise: &'a GpuVec,
    pub step_std: &'a GpuVec,
    pub xs: &'a GpuVec,
    pub h: &'a GpuVec,
    pub a: &'a [GpuVec],
    pub z: &'a [GpuVec],
    pub o_raw: &'a GpuVec,
    pub o: &'a GpuVec,
    pub log_pf: &'a GpuVec,
    pub log_pb: &'a GpuVec,
    pub d_log_pf: &'a GpuVec,
    pub d_o: &'a GpuVec,
    pub dz: &'a [GpuVec],
    pub dh: &'a GpuVec,
    pub dtemb: &'a GpuVec,
    /// s(t_i) [T, S], ∇log R(x_i) [T·B, D] and ∂L/∂s [T, S] (LP only; else `dummy`).
    pub lp_scale: &'a GpuVec,
    pub grad_r: &'a GpuVec,
    pub dscale: &'a GpuVec,
    pub dummy: &'a GpuVec,
}

const RW: crate::gpu::pipelines::BindingKind = StorageReadWrite;

pub static POLICY_FORWARD: EntryPoint = EntryPoint {
    shader: Shader::PolicyStep,
    name: "policy_forward",
    bindings: &[
        (0, Uniform),
        (2, StorageRead),
        (3, StorageRead),
        (4, StorageRead),
        (5, RW),
        (6, RW),
        (7, RW),
        (8, RW),
        (9, RW),
        (10, RW),
        (11, RW),
        (12, RW),
        (13, RW),
        (14, RW),
        (15, RW),
        (16, RW),
        (17, RW),
        (25, StorageRead),
        (26, StorageRead),
        (28, StorageRead),
    ],
};

pub static POLICY_BACKWARD: EntryPoint = EntryPoint {
    shader: Shader::PolicyStep,
    name: "policy_backward",
    bindings: &[
        (0, Uniform),
        (1, StorageRead),
        (5, RW),
        (6, RW),
        (11, RW),
        (12, RW),
        (13, RW),
        (14, RW),
        (15, RW),
        (18, StorageRead),
        (19, RW),
        (20, RW),
        (21, RW),
        (22, RW),
        (23, RW),
    ],
};

pub static LP_SCALE_GRAD: EntryPoint = EntryPoint {
    shader: Shader::PolicyStep,
    name: "lp_scale_grad",
    bindings: &[(0, Uniform), (19, RW), (26, StorageRead), (27, RW)],
};

pub static SEGMENT_COL_SUMS: EntryPoint = EntryPoint {
    shader: Shader::PolicyStep,
    name: "segment_col_sums",
    bindings: &[(0, Uniform), (23, RW), (24, RW)],
};

fn slot<'a>(v: &'a [GpuVec], k: usize, dummy: &'a GpuVec) -> &'a wgpu::Buffer {
    v.get(k).unwrap_or(dummy).buffer()
}

fn check(shape: &PolicyShape, b: &PolicyBuffers<'_>) {
    let (n, d, h) = (shape.batch * shape.steps, shape.dim, shape.hidden);
    assert!(shape.unsupported().is_none(), "{:?}", shape.unsupported());
    assert_eq!(
        b.weights.len(),
        shape.packed_offsets().1,
        "policy_step: packed weights"
    );
    assert_eq!(
        b.temb.len(),
        shape.steps * h,
        "policy_step: temb is not [T, H]"
    );
    assert_eq!(b.noise.len(), n * d, "policy_step: noise is not [T·B, D]");
    assert_eq!(
        b.xs.len(),
        (n + shape.batch) * d,
        "policy_step: xs is not [(T+1)·B, D]"
    );
    for (what, v, want) in [
        ("h", b.h, n * h),
        ("dh", b.dh, n * h),
        ("o_raw", b.o_raw, n * 2 * d),
        ("o", b.o, n * 2 * d),
        ("d_o", b.d_o, n * 2 * d),
        ("log_pf", b.log_pf, shape.batch),
        ("log_pb", b.log_pb, shape.batch),
        ("d_log_pf", b.d_log_pf, shape.batch),
    ] {
        assert_eq!(v.len(), want, "policy_step: {what}.len()");
    }
    assert_eq!(
        b.a.len(),
        shape.layers + 1,
        "policy_step: a needs L + 1 buffers"
    );
    assert_eq!(b.z.len(), shape.layers, "policy_step: z needs L buffers");
    assert_eq!(b.dz.len(), shape.layers, "policy_step: dz needs L buffers");
    for v in b.a.iter().chain(b.z).chain(b.dz) {
        assert_eq!(
            v.len(),
            n * h,
            "policy_step: activation buffers are [T·B, H]"
        );
    }
}

/// Step `em.step` forward for all B rows (see the shader header).
pub fn prepare_policy_forward(
    ctx: &GpuContext,
    shape: &PolicyShape,
    em: &EmStepConfig,
    b: &PolicyBuffers<'_>,
) -> Result<Dispatch, GpuError> {
    check(shape, b);
    let pb = params_buffer(ctx, &shape.params(em), "PolicyParams");
    let d = b.dummy;
    dispatch(
        ctx,
        &POLICY_FORWARD,
        &[
            (0, &pb),
            (2, b.temb.buffer()),
            (3, b.noise.buffer()),
            (4, b.step_std.buffer()),
            (5, b.xs.buffer()),
            (6, b.h.buffer()),
            (7, slot(b.a, 0, d)),
            (8, slot(b.a, 1, d)),
            (9, slot(b.a, 2, d)),
            (10, slot(b.a, 3, d)),
            (11, slot(b.z, 0, d)),
            (12, slot(b.z, 1, d)),
            (13, slot(b.z, 2, d)),
            (14, b.o_raw.buffer()),
            (15, b.o.buffer()),
            (16, b.log_pf.buffer()),
            (17, b.log_pb.buffer()),
            (25, b.lp_scale.buffer()),
            (26, b.grad_r.buffer()),
            (28, b.weights_t.buffer()),
        ],
        shape.tile_grid(),
    )
}

/// Step `em.step` backward (d_o, dz_k, dh of its rows), seeded by `d_log_pf`.
pub fn prepare_policy_backward(
    ctx: &GpuContext,
    shape: &PolicyShape,
    em: &EmStepConfig,
    b: &PolicyBuffers<'_>,
) -> Result<Dispatch, GpuError> {
    check(shape, b);
    let pb = params_buffer(ctx, &shape.params(em), "PolicyParams");
    let d = b.dummy;
    dispatch(
        ctx,
        &POLICY_BACKWARD,
        &[
            (0, &pb),
            (1, b.weights.buffer()),
            (5, b.xs.buffer()),
            (6, b.h.buffer()),
            (11, slot(b.z, 0, d)),
            (12, slot(b.z, 1, d)),
            (13, slot(b.z, 2, d)),
            (14, b.o_raw.buffer()),
            (15, b.o.buffer()),
            (18, b.d_log_pf.buffer()),
            (19, b.d_o.buffer()),
            (20, slot(b.dz, 0, d)),
            (21, slot(b.dz, 1, d)),
            (22, slot(b.dz, 2, d)),
            (23, b.dh.buffer()),
        ],
        shape.tile_grid(),
    )
}

/// ∂L/∂s [T, S] of the Langevin scale from d_o [T·B, 2D] and ∇log R [T·B, D] (overwrites).
pub fn prepare_lp_scale_grad(
    ctx: &GpuContext,
    shape: &PolicyShape,
    b: &PolicyBuffers<'_>,
) -> Result<Dispatch, GpuError> {
    check(shape, b);
    let (w, _) = shape
        .lp
        .expect("lp_scale_grad needs the Langevin parametrization");
    let pb = params_buffer(ctx, &shape.params(&dummy_em()), "PolicyParams");
    dispatch(
        ctx,
        &LP_SCALE_GRAD,
        &[
            (0, &pb),
            (19, b.d_o.buffer()),
            (26, b.grad_r.buffer()),
            (27, b.dscale.buffer()),
        ],
        grid_1d(to_u32(shape.steps * w, "T·S").div_ceil(WORKGROUP_SIZE)),
    )
}

/// Step constants for the entry points that use only the shapes.
fn dummy_em() -> EmStepConfig {
    EmStepConfig {
        dt: 1.0,
        sigma2: 1.0,
        explore_std: 0.0,
        step: 0,
        accumulate: false,
    }
}

/// dtemb[T, H] = per-step column sums of dh [T·B, H] (overwrites dtemb).
pub fn prepare_segment_col_sums(
    ctx: &GpuContext,
    shape: &PolicyShape,
    dh: &GpuVec,
    dtemb: &GpuVec,
) -> Result<Dispatch, GpuError> {
    assert_eq!(
        dh.len(),
        shape.steps * shape.batch * shape.hidden,
        "segment_col_sums: dh"
    );
    assert_eq!(
        dtemb.len(),
        shape.steps * shape.hidden,
        "segment_col_sums: dtemb"
    );
    let pb = params_buffer(ctx, &shape.params(&dummy_em()), "PolicyParams");
    dispatch(
        ctx,
        &SEGMENT_COL_SUMS,
        &[(0, &pb), (23, dh.buffer()), (24, dtemb.buffer())],
        grid_1d(to_u32(shape.steps * shape.hidden, "T·H").div_ceil(WORKGROUP_SIZE)),
    )
}
