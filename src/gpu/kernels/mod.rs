//! Host wrappers, one file per shader (candle's `kernels/<op>.rs`). Per entry point `<op>`:
//! - `pub static <OP>: EntryPoint` — shader, name, binding table (checked against naga in
//!   `tests/shaders.rs`);
//! - `prepare_<op>(ctx, …) -> Dispatch` — checks shapes, fetches the cached pipeline, builds the
//!   params buffer and bind group once; the [`Dispatch`] can be recorded any number of times
//!   (a training loop prepares its dispatches once and re-records them every iteration);
//! - `call_<op>(ctx, encoder, …)` — prepare + record into the caller's encoder, so a whole
//!   rollout can go into one command buffer;
//! - `run_<op>(ctx, …)` — the CPU reference's signature on host slices: upload, record, submit,
//!   read back. For tests and one-off use; it allocates every call.
//!
//! Shapes are asserted (a wrong length is a programming error, as in `cpu::`); device and
//! validation failures are `GpuError`s.

pub mod adam;
pub mod add_row;
pub mod chacha;
pub mod clip;
pub mod em_step;
pub mod energies;
pub mod gelu;
pub mod layer_norm;
pub mod linear;
pub mod losses;
pub mod policy_step;
pub mod reduce;
pub mod time_features;
pub mod transpose;

use super::pipelines::{EntryPoint, Pipeline};
use super::{GpuContext, GpuError};
use std::sync::Arc;

/// Every entry point of every shader (warm-up, layout tests).
pub static ALL_ENTRY_POINTS: &[&EntryPoint] = &[
    &linear::LINEAR_FORWARD,
    &linear::LINEAR_BACKWARD_DX,
    &linear::LINEAR_BACKWARD_DW,
    &linear::LINEAR_BACKWARD_DW_PARTIAL,
    &linear::LINEAR_BACKWARD_DW_REDUCE,
    &gelu::GELU_FORWARD,
    &gelu::GELU_BACKWARD,
    &gelu::GELU_FORWARD_DERIV,
    &reduce::SUM_PARTIALS,
    &reduce::SUM_FINISH,
    &time_features::TIME_FEATURES,
    &add_row::ADD_ROW,
    &add_row::COL_SUM_INTO_ROW,
    &clip::CLIP_FORWARD,
    &clip::CLIP_BACKWARD,
    &losses::LOSS_GRAD,
    &adam::SUM_SQUARES,
    &adam::CLIP_SCALE,
    &adam::ADAM_STEP,
    &time_features::TIME_FEATURES_BACKWARD,
    &em_step::EM_STEP,
    &em_step::EM_LOGPF_BACKWARD,
    &energies::LOG_REWARD_GRAD_GMM,
    &energies::LOG_REWARD_GRAD_MANYWELL,
    &energies::LOG_REWARD_GRAD_FUNNEL,
    &policy_step::POLICY_FORWARD,
    &policy_step::POLICY_BACKWARD,
    &policy_step::SEGMENT_COL_SUMS,
    &policy_step::LP_SCALE_GRAD,
    &transpose::TRANSPOSE_INTO,
    &chacha::CHACHA8_WORDS,
    &chacha::CHACHA8_NORMALS,
    &chacha::BOX_MULLER_WORDS,
    &layer_norm::LAYER_NORM_FORWARD,
    &layer_norm::LAYER_NORM_BACKWARD_DX,
    &layer_norm::LAYER_NORM_BACKWARD_PARAMS,
];

/// Most workgroups per grid dimension every WebGPU device accepts.
pub const MAX_GROUPS_PER_DIM: u32 = 65_535;

/// A 1-D count of workgroups laid out as a 2-D grid (x ≤ 65535): the shaders flatten
/// `gid.x + gid.y·(num_workgroups.x·WG)` and bounds-check, so surplus threads just return.
pub fn grid_1d(groups: u32) -> [u32; 3] {
    if groups <= MAX_GROUPS_PER_DIM {
        [groups, 1, 1]
    } else {
        [MAX_GROUPS_PER_DIM, groups.div_ceil(MAX_GROUPS_PER_DIM), 1]
    }
}

/// One recorded-ready kernel launch: pipeline + bind group (buffers and params) + grid.
#[derive(Debug)]
pub struct Dispatch {
    pub pipeline: Arc<Pipeline>,
    pub bind_group: wgpu::BindGroup,
    /// Workgroups in x, y, z; all zero means nothing to do (empty input).
    pub workgroups: [u32; 3],
}

impl Dispatch {
    /// Records the launch in its own compute pass.
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(self.pipeline.entry.name),
            timestamp_writes: None,
        });
        self.record_in_pass(&mut pass);
    }

    /// Records the launch into an open compute pass (several launches per pass are cheaper;
    /// wgpu orders storage writes and reads between dispatches of a pass).
    pub fn record_in_pass(&self, pass: &mut wgpu::ComputePass<'_>) {
        if self.workgroups.contains(&0) {
            return;
        }
        pass.set_pipeline(&self.pipeline.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Builds the [`Dispatch`] of `entry`: `buffers` must name exactly the bindings of the entry's
/// table (binding 0, the params uniform, included).
pub(crate) fn dispatch(
    ctx: &GpuContext,
    entry: &'static EntryPoint,
    buffers: &[(u32, &wgpu::Buffer)],
    workgroups: [u32; 3],
) -> Result<Dispatch, GpuError> {
    debug_assert_eq!(
        buffers.iter().map(|b| b.0).collect::<Vec<_>>(),
        entry.bindings.iter().map(|b| b.0).collect::<Vec<_>>(),
        "{}: bindings do not match the entry point's table",
        entry.name
    );
    let pipeline = ctx.pipelines.get(&ctx.device, entry)?;
    let entries: Vec<wgpu::BindGroupEntry> = buffers
        .iter()
        .map(|&(binding, buffer)| wgpu::BindGroupEntry {
            binding,
            resource: buffer.as_entire_binding(),
        })
        .collect();
    // A bind group = the concrete buffers for one layout (the "arguments" of the launch). Caught
    // in an error scope: a buffer past the adapter's binding-size limit is an error, not a panic.
    let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(entry.name),
        layout: &pipeline.bind_group_layout,
        entries: &entries,
    });
    if let Some(err) = pollster::block_on(scope.pop()) {
        return Err(GpuError::Validation {
            what: format!("{}::{} bind group", entry.shader.name(), entry.name),
            message: err.to_string(),
        });
    }
    Ok(Dispatch {
        pipeline,
        bind_group,
        workgroups,
    })
}

/// `u32` for a shape value that must fit the shaders' u32 indexing.
pub(crate) fn to_u32(v: usize, what: &str) -> u32 {
    u32::try_from(v).unwrap_or_else(|_| panic!("{what} = {v} does not fit in u32"))
}
