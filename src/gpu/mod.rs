//! GPU backend: handwritten WGSL compute shaders (`shaders/*.wgsl`) run through `wgpu`.
//! Compiled only with the `gpu` feature (on by default).
//!
//! Layout (house style §5, candle's metal-kernels shape):
//! - this file: [`GpuContext`] (instance from the environment → adapter → device/queue, plus the
//!   pipeline cache and the readback staging buffer), [`GpuError`], the process-wide
//!   [`GpuContext::shared`] context, and device selection ([`select_device`]);
//! - [`shaders`]: `include_str!` of every WGSL file + [`shaders::Shader`];
//! - [`pipelines`]: pipeline cache keyed by (shader, entry point), explicit bind-group layouts;
//! - [`buffers`]: [`GpuVec`] storage vectors, readback, the `<Op>Params` structs;
//! - [`kernels`]: one host wrapper file per shader — `prepare_<op>` (a reusable [`Dispatch`]),
//!   `call_<op>` (record into a caller's `wgpu::CommandEncoder`) and `run_<op>` (upload, submit,
//!   read back: the CPU reference's signature, for tests).
//!
//! Each kernel keeps its CPU reference's per-element operation order (see the shader headers), so
//! GPU results equal the CPU's bit for bit wherever the device computes WGSL `fma` fused and keeps
//! subnormals; `tests/cpu_vs_gpu.rs` checks every kernel against `cpu::Kernels` with named
//! tolerances. WGSL does not promise a fused `fma`, and lavapipe's is not (Mesa 22.3.6 lowers
//! `ffma` to `fmul` + `fadd` for llvmpipe): there the linear kernels equal the CPU order with an
//! unfused fma bit for bit, and everything is within the tolerances. The fixed-order sum is
//! bitwise reproducible run to run on any device (no atomics) but is not the CPU's order. Environment: `WGPU_BACKEND` (vulkan, metal, dx12, gl), `WGPU_ADAPTER_NAME`
//! (substring of the adapter name) and `WGPU_POWER_PREF` choose the adapter.

pub mod buffers;
pub mod kernels;
pub mod pipelines;
pub mod shaders;
pub mod trainer;

pub use buffers::GpuVec;
pub use kernels::Dispatch;

use std::sync::{Mutex, OnceLock};

/// Why the GPU backend could not do something. `Clone` so the process-wide context can hand the
/// same failure to every caller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GpuError {
    /// No adapter at all (or none that can run compute shaders).
    #[error(
        "no GPU adapter found (backends tried: {backends}): {detail}. Install a Vulkan driver — \
         on Debian/Ubuntu Mesa's software driver lavapipe: `apt-get install mesa-vulkan-drivers \
         libvulkan1` — or pick another backend with WGPU_BACKEND=vulkan|metal|dx12|gl"
    )]
    NoAdapter { backends: String, detail: String },
    /// `WGPU_ADAPTER_NAME` is set but matches no adapter.
    #[error("WGPU_ADAPTER_NAME={wanted:?} matches no adapter (found: {found})")]
    AdapterNotFound { wanted: String, found: String },
    /// The adapter exists but the device request failed (limits, features, driver error).
    #[error("requesting a device from adapter {adapter}: {message}")]
    RequestDevice { adapter: String, message: String },
    /// A shader, layout or pipeline failed wgpu/naga validation.
    #[error("GPU validation error in {what}: {message}")]
    Validation { what: String, message: String },
    /// Waiting for the device failed (device lost, timeout).
    #[error("waiting for the GPU: {0}")]
    Poll(String),
    /// Mapping a buffer for readback failed.
    #[error("reading back a GPU buffer: {0}")]
    Readback(String),
}

/// One wgpu device and queue with everything the kernels need: the pipeline cache and the
/// readback staging buffer. Cheap to share (`&GpuContext` is `Send + Sync`); create one per
/// process — [`GpuContext::shared`] — since every context compiles its own pipelines.
#[derive(Debug)]
pub struct GpuContext {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pub pipelines: pipelines::PipelineCache,
    pub(crate) staging: Mutex<buffers::Staging>,
}

impl GpuContext {
    /// Instance from the environment (`WGPU_BACKEND` etc.) → adapter (`WGPU_ADAPTER_NAME` if set,
    /// else the default for `WGPU_POWER_PREF`, high performance unless set) that can run compute
    /// shaders → device and queue with the adapter's limits.
    pub fn new() -> Result<Self, GpuError> {
        let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        pollster::block_on(Self::from_instance_descriptor(desc))
    }

    /// As [`Self::new`] but only on `backends` (overriding `WGPU_BACKEND`), e.g. to test the
    /// missing-adapter error with a backend this machine lacks.
    pub fn with_backends(backends: wgpu::Backends) -> Result<Self, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends = backends;
        pollster::block_on(Self::from_instance_descriptor(desc))
    }

    async fn from_instance_descriptor(desc: wgpu::InstanceDescriptor) -> Result<Self, GpuError> {
        let instance_backends = desc.backends;
        let backends = format!("{:?}", desc.backends);
        let instance = wgpu::Instance::new(desc);
        let adapter = match std::env::var("WGPU_ADAPTER_NAME") {
            Ok(wanted) if !wanted.is_empty() => {
                let adapters = instance.enumerate_adapters(instance_backends).await;
                let lower = wanted.to_lowercase();
                let found: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&lower))
                    .ok_or_else(|| GpuError::AdapterNotFound {
                        wanted,
                        found: if found.is_empty() {
                            "none".into()
                        } else {
                            found.join(", ")
                        },
                    })?
            }
            _ => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::from_env()
                        .unwrap_or(wgpu::PowerPreference::HighPerformance),
                    ..Default::default()
                })
                .await
                .map_err(|e| GpuError::NoAdapter {
                    backends: backends.clone(),
                    detail: e.to_string(),
                })?,
        };
        let info = adapter.get_info();
        let downlevel = adapter.get_downlevel_capabilities();
        if !downlevel
            .flags
            .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        {
            return Err(GpuError::NoAdapter {
                backends,
                detail: format!(
                    "adapter {} ({:?}) cannot run compute shaders",
                    info.name, info.backend
                ),
            });
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("diffusion-samplers"),
                required_features: wgpu::Features::empty(),
                // The adapter's own limits: storage buffers as large as it allows (B·T·H rows).
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;
        Ok(GpuContext {
            adapter,
            device,
            queue,
            info,
            pipelines: Default::default(),
            staging: Default::default(),
        })
    }

    /// The process-wide context, created on first call; later calls return the same context or
    /// the same error. Tests and benches use this so each pipeline compiles once per process.
    pub fn shared() -> Result<&'static GpuContext, GpuError> {
        static SHARED: OnceLock<Result<GpuContext, GpuError>> = OnceLock::new();
        SHARED
            .get_or_init(GpuContext::new)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The adapter's identity (name, vendor, device, type, driver, backend) for run manifests.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// One line for logs and manifests, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) [Vulkan, Cpu,
    /// llvmpipe Mesa 22.3.6 (LLVM 15.0.6)]`.
    pub fn describe(&self) -> String {
        let i = &self.info;
        format!(
            "{} [{:?}, {:?}, {} {}]",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        )
    }

    /// True for a software rasteriser (lavapipe/llvmpipe, WARP, SwiftShader): correct but slow,
    /// so [`DeviceRequest::Auto`] does not pick it.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Blocks until every submitted command buffer has finished.
    pub fn wait(&self) -> Result<(), GpuError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| GpuError::Poll(e.to_string()))
    }

    /// A new command encoder (record any number of `call_<op>`s into it, then [`Self::submit`]).
    pub fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Finishes and submits `encoder`; does not wait (see [`Self::wait`], [`GpuVec::read`]).
    pub fn submit(&self, encoder: wgpu::CommandEncoder) -> wgpu::SubmissionIndex {
        self.queue.submit([encoder.finish()])
    }

    /// Compiles every kernel's pipeline now (benches call this before timing).
    pub fn warm_up(&self) -> Result<(), GpuError> {
        for entry in kernels::ALL_ENTRY_POINTS {
            self.pipelines.get(&self.device, entry)?;
        }
        Ok(())
    }
}

/// Which device the caller asked for (a config's `device = cpu | gpu | auto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    Cpu,
    /// Any adapter, software ones included (lavapipe in CI); missing → an error.
    Gpu,
    /// A hardware GPU when present, otherwise the CPU path.
    Auto,
}

/// The outcome of [`select_device`].
#[derive(Debug)]
pub enum SelectedDevice {
    Cpu {
        /// Why `auto` fell back to the CPU (`None` when the CPU was asked for).
        reason: Option<String>,
    },
    Gpu(&'static GpuContext),
}

/// Resolves a request against the process-wide context: `Gpu` without an adapter is
/// `Err(GpuError::NoAdapter…)` (never a panic); `Auto` takes a hardware GPU and otherwise the CPU,
/// saying why.
pub fn select_device(request: DeviceRequest) -> Result<SelectedDevice, GpuError> {
    match request {
        DeviceRequest::Cpu => Ok(SelectedDevice::Cpu { reason: None }),
        DeviceRequest::Gpu => GpuContext::shared().map(SelectedDevice::Gpu),
        DeviceRequest::Auto => Ok(match GpuContext::shared() {
            Ok(ctx) if !ctx.is_software() => SelectedDevice::Gpu(ctx),
            Ok(ctx) => SelectedDevice::Cpu {
                reason: Some(format!("only a software adapter: {}", ctx.describe())),
            },
            Err(e) => SelectedDevice::Cpu {
                reason: Some(e.to_string()),
            },
        }),
    }
}
