//! Device buffers: f32 storage vectors ([`GpuVec`]), `<Op>Params` uniform structs, and readback
//! through one reusable staging buffer per context.
//!
//! Every `<Op>Params` is `#[repr(C)]` + [`bytemuck::Pod`] and mirrors the WGSL struct of the same
//! name field for field; [`PARAMS_LAYOUTS`] lists their Rust sizes and offsets, and
//! `tests/shaders.rs` compares them with naga's layout of the WGSL structs (no GPU needed).
//! Uniform structs are padded to 16 bytes (the uniform address space rounds struct sizes up to 16).

use super::kernels::adam::AdamParams;
use super::kernels::add_row::AddRowParams;
use super::kernels::chacha::ChaChaParams;
use super::kernels::clip::ClipParams;
use super::kernels::em_step::EmStepParams;
use super::kernels::energies::EnergyParams;
use super::kernels::layer_norm::LayerNormParams;
use super::kernels::losses::LossParams;
use super::kernels::policy_step::PolicyParams;
use super::kernels::transpose::TransposeParams;
use super::shaders::Shader;
use super::{GpuContext, GpuError};
use bytemuck::{Pod, Zeroable};
use std::mem::{offset_of, size_of};
use wgpu::util::DeviceExt;

/// `linear.wgsl` `LinearParams`: x [rows, k], w [o, k], y [rows, o].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LinearParams {
    pub rows: u32,
    pub k: u32,
    pub o: u32,
    /// Rows per chunk of the split-K dW entry points (0 for the others).
    pub chunk: u32,
}

/// `gelu.wgsl` `GeluParams`: n elements.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GeluParams {
    pub n: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

/// `reduce.wgsl` `ReduceParams`: `segments` segments of `n` elements, `groups` = ⌈n / 1024⌉.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ReduceParams {
    pub n: u32,
    pub segments: u32,
    pub groups: u32,
    pub _pad: u32,
}

/// `time_features.wgsl` `TimeFeaturesParams`: t [t_len], freqs/phase [f], out [t_len, 2f].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TimeFeaturesParams {
    pub t_len: u32,
    pub f: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

/// The Rust layout of one `<Op>Params` struct, for the naga layout test.
#[derive(Debug)]
pub struct ParamsLayout {
    /// The struct name, identical in Rust and WGSL.
    pub name: &'static str,
    /// The shader that declares the WGSL struct.
    pub shader: Shader,
    pub size: usize,
    /// (field name, byte offset), in declaration order.
    pub fields: &'static [(&'static str, usize)],
}

/// Every params struct the host passes to a shader.
pub const PARAMS_LAYOUTS: &[ParamsLayout] = &[
    ParamsLayout {
        name: "LinearParams",
        shader: Shader::Linear,
        size: size_of::<LinearParams>(),
        fields: &[
            ("rows", offset_of!(LinearParams, rows)),
            ("k", offset_of!(LinearParams, k)),
            ("o", offset_of!(LinearParams, o)),
            ("chunk", offset_of!(LinearParams, chunk)),
        ],
    },
    ParamsLayout {
        name: "GeluParams",
        shader: Shader::Gelu,
        size: size_of::<GeluParams>(),
        fields: &[
            ("n", offset_of!(GeluParams, n)),
            ("_pad0", offset_of!(GeluParams, _pad0)),
            ("_pad1", offset_of!(GeluParams, _pad1)),
            ("_pad2", offset_of!(GeluParams, _pad2)),
        ],
    },
    ParamsLayout {
        name: "ReduceParams",
        shader: Shader::Reduce,
        size: size_of::<ReduceParams>(),
        fields: &[
            ("n", offset_of!(ReduceParams, n)),
            ("segments", offset_of!(ReduceParams, segments)),
            ("groups", offset_of!(ReduceParams, groups)),
            ("_pad", offset_of!(ReduceParams, _pad)),
        ],
    },
    ParamsLayout {
        name: "TimeFeaturesParams",
        shader: Shader::TimeFeatures,
        size: size_of::<TimeFeaturesParams>(),
        fields: &[
            ("t_len", offset_of!(TimeFeaturesParams, t_len)),
            ("f", offset_of!(TimeFeaturesParams, f)),
            ("_pad0", offset_of!(TimeFeaturesParams, _pad0)),
            ("_pad1", offset_of!(TimeFeaturesParams, _pad1)),
        ],
    },
    ParamsLayout {
        name: "AddRowParams",
        shader: Shader::AddRow,
        size: size_of::<AddRowParams>(),
        fields: &[
            ("rows", offset_of!(AddRowParams, rows)),
            ("cols", offset_of!(AddRowParams, cols)),
            ("row", offset_of!(AddRowParams, row)),
            ("_pad", offset_of!(AddRowParams, _pad)),
        ],
    },
    ParamsLayout {
        name: "ClipParams",
        shader: Shader::Clip,
        size: size_of::<ClipParams>(),
        fields: &[
            ("n", offset_of!(ClipParams, n)),
            ("limit", offset_of!(ClipParams, limit)),
            ("_pad0", offset_of!(ClipParams, _pad0)),
            ("_pad1", offset_of!(ClipParams, _pad1)),
        ],
    },
    ParamsLayout {
        name: "LayerNormParams",
        shader: Shader::LayerNorm,
        size: size_of::<LayerNormParams>(),
        fields: &[
            ("rows", offset_of!(LayerNormParams, rows)),
            ("h", offset_of!(LayerNormParams, h)),
            ("eps", offset_of!(LayerNormParams, eps)),
            ("_pad0", offset_of!(LayerNormParams, _pad0)),
        ],
    },
    ParamsLayout {
        name: "LossParams",
        shader: Shader::Losses,
        size: size_of::<LossParams>(),
        fields: &[
            ("n", offset_of!(LossParams, n)),
            ("method", offset_of!(LossParams, method)),
            ("_pad0", offset_of!(LossParams, _pad0)),
            ("_pad1", offset_of!(LossParams, _pad1)),
        ],
    },
    ParamsLayout {
        name: "AdamParams",
        shader: Shader::Adam,
        size: size_of::<AdamParams>(),
        fields: &[
            ("n", offset_of!(AdamParams, n)),
            ("slot", offset_of!(AdamParams, slot)),
            ("clip", offset_of!(AdamParams, clip)),
            ("_pad0", offset_of!(AdamParams, _pad0)),
            ("max_norm", offset_of!(AdamParams, max_norm)),
            ("beta1", offset_of!(AdamParams, beta1)),
            ("one_minus_beta1", offset_of!(AdamParams, one_minus_beta1)),
            ("beta2", offset_of!(AdamParams, beta2)),
            ("one_minus_beta2", offset_of!(AdamParams, one_minus_beta2)),
            ("step_size", offset_of!(AdamParams, step_size)),
            ("bc2_sqrt", offset_of!(AdamParams, bc2_sqrt)),
            ("eps", offset_of!(AdamParams, eps)),
        ],
    },
    ParamsLayout {
        name: "EmStepParams",
        shader: Shader::EmStep,
        size: size_of::<EmStepParams>(),
        fields: &[
            ("rows", offset_of!(EmStepParams, rows)),
            ("dim", offset_of!(EmStepParams, dim)),
            ("o_cols", offset_of!(EmStepParams, o_cols)),
            ("with_pb", offset_of!(EmStepParams, with_pb)),
            ("dt", offset_of!(EmStepParams, dt)),
            ("var_f", offset_of!(EmStepParams, var_f)),
            ("norm_f", offset_of!(EmStepParams, norm_f)),
            ("ratio_b", offset_of!(EmStepParams, ratio_b)),
            ("var_b", offset_of!(EmStepParams, var_b)),
            ("norm_b", offset_of!(EmStepParams, norm_b)),
            ("accumulate", offset_of!(EmStepParams, accumulate)),
            ("_pad", offset_of!(EmStepParams, _pad)),
        ],
    },
    ParamsLayout {
        name: "EnergyParams",
        shader: Shader::Energies,
        size: size_of::<EnergyParams>(),
        fields: &[
            ("rows", offset_of!(EnergyParams, rows)),
            ("dim", offset_of!(EnergyParams, dim)),
            ("n_axis", offset_of!(EnergyParams, n_axis)),
            ("row0", offset_of!(EnergyParams, row0)),
            ("variance", offset_of!(EnergyParams, variance)),
            ("log_const", offset_of!(EnergyParams, log_const)),
            ("grad_row0", offset_of!(EnergyParams, grad_row0)),
            ("_pad2", offset_of!(EnergyParams, _pad2)),
        ],
    },
    ParamsLayout {
        name: "TransposeParams",
        shader: Shader::Transpose,
        size: size_of::<TransposeParams>(),
        fields: &[
            ("o", offset_of!(TransposeParams, o)),
            ("k", offset_of!(TransposeParams, k)),
            ("offset", offset_of!(TransposeParams, offset)),
            ("_pad", offset_of!(TransposeParams, _pad)),
        ],
    },
    ParamsLayout {
        name: "PolicyParams",
        shader: Shader::PolicyStep,
        size: size_of::<PolicyParams>(),
        fields: &[
            ("batch", offset_of!(PolicyParams, batch)),
            ("dim", offset_of!(PolicyParams, dim)),
            ("hidden", offset_of!(PolicyParams, hidden)),
            ("layers", offset_of!(PolicyParams, layers)),
            ("step", offset_of!(PolicyParams, step)),
            ("steps", offset_of!(PolicyParams, steps)),
            ("with_pb", offset_of!(PolicyParams, with_pb)),
            ("accumulate", offset_of!(PolicyParams, accumulate)),
            ("dt", offset_of!(PolicyParams, dt)),
            ("var_f", offset_of!(PolicyParams, var_f)),
            ("norm_f", offset_of!(PolicyParams, norm_f)),
            ("ratio_b", offset_of!(PolicyParams, ratio_b)),
            ("var_b", offset_of!(PolicyParams, var_b)),
            ("norm_b", offset_of!(PolicyParams, norm_b)),
            ("out_clip", offset_of!(PolicyParams, out_clip)),
            ("lgv_clip", offset_of!(PolicyParams, lgv_clip)),
            ("lp", offset_of!(PolicyParams, lp)),
            ("lp_width", offset_of!(PolicyParams, lp_width)),
            ("learned", offset_of!(PolicyParams, learned)),
            ("log_var_range", offset_of!(PolicyParams, log_var_range)),
            ("log_sigma2", offset_of!(PolicyParams, log_sigma2)),
            ("_pad0", offset_of!(PolicyParams, _pad0)),
            ("_pad1", offset_of!(PolicyParams, _pad1)),
            ("_pad2", offset_of!(PolicyParams, _pad2)),
        ],
    },
    ParamsLayout {
        name: "ChaChaParams",
        shader: Shader::ChaCha,
        size: size_of::<ChaChaParams>(),
        fields: &[
            ("block_lo", offset_of!(ChaChaParams, block_lo)),
            ("block_hi", offset_of!(ChaChaParams, block_hi)),
            ("skip", offset_of!(ChaChaParams, skip)),
            ("count", offset_of!(ChaChaParams, count)),
        ],
    },
];

/// A uniform buffer holding one params struct (one per recorded dispatch: all writes of
/// `queue.write_buffer` land before a submit, so dispatches recorded into one encoder cannot share
/// one params buffer with different contents).
pub fn params_buffer<P: Pod>(ctx: &GpuContext, params: &P, label: &str) -> wgpu::Buffer {
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM,
        })
}

/// An f32 vector in device memory (a storage buffer that can also be copied to and from).
/// The buffer is at least 4 bytes even when empty (wgpu cannot bind a zero-sized buffer).
#[derive(Debug)]
pub struct GpuVec {
    buffer: wgpu::Buffer,
    len: usize,
}

const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

fn byte_len(len: usize) -> u64 {
    (len.max(1) * size_of::<f32>()) as u64
}

impl GpuVec {
    /// Uploads `data` into a new storage buffer.
    pub fn from_slice(ctx: &GpuContext, data: &[f32], label: &str) -> Self {
        let buffer = if data.is_empty() {
            Self::zeros(ctx, 0, label).buffer
        } else {
            ctx.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytemuck::cast_slice(data),
                    usage: STORAGE_USAGE,
                })
        };
        GpuVec {
            buffer,
            len: data.len(),
        }
    }

    /// A new storage buffer of `len` zeros (wgpu zero-initialises every buffer it creates).
    pub fn zeros(ctx: &GpuContext, len: usize, label: &str) -> Self {
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: byte_len(len),
            usage: STORAGE_USAGE,
            mapped_at_creation: false,
        });
        GpuVec { buffer, len }
    }

    /// Overwrites the contents with `data` (same length), ordered before the next submit.
    pub fn write(&self, ctx: &GpuContext, data: &[f32]) {
        assert_eq!(data.len(), self.len, "GpuVec::write: length mismatch");
        if !data.is_empty() {
            ctx.queue
                .write_buffer(&self.buffer, 0, bytemuck::cast_slice(data));
        }
    }

    /// Copies the contents back to the host (one copy submission after all earlier work; waits).
    pub fn read(&self, ctx: &GpuContext) -> Result<Vec<f32>, GpuError> {
        Ok(ctx.read_many(&[self])?.pop().unwrap_or_default())
    }

    /// Number of f32 elements.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The underlying wgpu buffer (for bind groups and copies).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

/// The reusable MAP_READ buffer readbacks copy into (grown to the next power of two on demand).
#[derive(Debug, Default)]
pub(crate) struct Staging {
    buffer: Option<wgpu::Buffer>,
}

impl GpuContext {
    /// Copies each vector back to the host in one submission through the context's staging
    /// buffer, then waits for the device. Earlier submissions complete first (queue order).
    pub fn read_many(&self, vecs: &[&GpuVec]) -> Result<Vec<Vec<f32>>, GpuError> {
        // Offsets rounded up to 8 bytes (wgpu::MAP_ALIGNMENT) so every slice could also be
        // mapped on its own.
        let mut offsets = Vec::with_capacity(vecs.len());
        let mut total = 0u64;
        for v in vecs {
            offsets.push(total);
            total += (v.len * size_of::<f32>()) as u64;
            total = total.next_multiple_of(wgpu::MAP_ALIGNMENT);
        }
        if total == 0 {
            return Ok(vecs.iter().map(|_| Vec::new()).collect());
        }
        // Held for the whole readback: one mapping of the staging buffer at a time.
        let mut staging = self.staging.lock().unwrap_or_else(|e| e.into_inner());
        let need = total.next_power_of_two().max(256);
        if staging.buffer.as_ref().is_none_or(|b| b.size() < total) {
            staging.buffer = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback staging"),
                size: need,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let buf = staging
            .buffer
            .as_ref()
            .expect("staging buffer just created");
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        for (v, &off) in vecs.iter().zip(&offsets) {
            if v.len > 0 {
                encoder.copy_buffer_to_buffer(
                    &v.buffer,
                    0,
                    buf,
                    off,
                    (v.len * size_of::<f32>()) as u64,
                );
            }
        }
        self.queue.submit([encoder.finish()]);
        let slice = buf.slice(0..total);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|e| GpuError::Readback(format!("map callback dropped: {e}")))?
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let out = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| GpuError::Readback(e.to_string()))?;
            vecs.iter()
                .zip(&offsets)
                .map(|(v, &off)| {
                    let bytes = &view[off as usize..off as usize + v.len * size_of::<f32>()];
                    bytemuck::pod_collect_to_vec::<u8, f32>(bytes)
                })
                .collect()
        };
        buf.unmap();
        Ok(out)
    }
}
