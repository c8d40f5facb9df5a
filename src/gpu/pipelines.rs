//! Pipeline cache keyed by (shader, entry point), with explicit bind-group layouts (candle's
//! `kernel.rs` cache + wgpu hello_compute's explicit layouts).
//!
//! Every entry point is described once by an [`EntryPoint`]: its shader, its name and its binding
//! table (binding number → kind). The table builds the bind-group layout, so bind groups made for
//! one pipeline work with any pipeline of the same layout, and `tests/shaders.rs` checks each
//! table against naga's reflection of the globals the entry point actually uses — no GPU needed.
//! Shader modules and pipelines are created once per [`GpuContext`](super::GpuContext) (lavapipe
//! compiles each pipeline in 50–400 ms, so tests share one context).

use super::shaders::Shader;
use super::GpuError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What one binding of an entry point is, in the shader's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BindingKind {
    /// `var<uniform>`: a small `<Op>Params` struct.
    Uniform,
    /// `var<storage, read>`.
    StorageRead,
    /// `var<storage, read_write>`.
    StorageReadWrite,
}

/// One compute entry point and its binding table (group 0).
#[derive(Debug)]
pub struct EntryPoint {
    pub shader: Shader,
    /// The WGSL function name.
    pub name: &'static str,
    /// (binding number, kind) for every global the entry point uses, ascending by binding.
    pub bindings: &'static [(u32, BindingKind)],
}

impl EntryPoint {
    /// The bind-group layout entries of the binding table: a bind-group layout is the "C header"
    /// of the resources a pipeline reads and writes (the buffers themselves come with the group).
    fn layout_entries(&self) -> Vec<wgpu::BindGroupLayoutEntry> {
        self.bindings
            .iter()
            .map(|&(binding, kind)| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match kind {
                        BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                        BindingKind::StorageRead => {
                            wgpu::BufferBindingType::Storage { read_only: true }
                        }
                        BindingKind::StorageReadWrite => {
                            wgpu::BufferBindingType::Storage { read_only: false }
                        }
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect()
    }
}

/// A compiled compute pipeline and the layout its bind groups must follow.
#[derive(Debug)]
pub struct Pipeline {
    pub entry: &'static EntryPoint,
    pub bind_group_layout: wgpu::BindGroupLayout,
    pub pipeline: wgpu::ComputePipeline,
}

/// Shader modules and pipelines, created on first use and kept for the context's lifetime.
#[derive(Debug, Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<Shader, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<(Shader, &'static str), Arc<Pipeline>>>,
}

impl PipelineCache {
    /// The pipeline of `entry`, compiling it (and its shader module) on first use. A WGSL or
    /// layout error comes back as [`GpuError::Validation`] instead of wgpu's default panic.
    pub fn get(
        &self,
        device: &wgpu::Device,
        entry: &'static EntryPoint,
    ) -> Result<Arc<Pipeline>, GpuError> {
        let key = (entry.shader, entry.name);
        // Held while compiling: concurrent first uses wait for one compile instead of doing two.
        let mut pipelines = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pipelines.get(&key) {
            return Ok(p.clone());
        }
        let what = format!("{}::{}", entry.shader.name(), entry.name);
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = {
            let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            modules
                .entry(entry.shader)
                .or_insert_with(|| {
                    device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(entry.shader.name()),
                        source: wgpu::ShaderSource::Wgsl(entry.shader.source().into()),
                    })
                })
                .clone()
        };
        let bind_group_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(entry.name),
            entries: &entry.layout_entries(),
        });
        // The pipeline layout lists the bind-group layouts by group index (only group 0 here).
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(entry.name),
            bind_group_layouts: &[Some(&bind_group_layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry.name),
            layout: Some(&layout),
            module: &module,
            entry_point: Some(entry.name),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(err) = pollster::block_on(scope.pop()) {
            // Drop the module too: a broken module must not be reused by a later entry point.
            self.modules
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&entry.shader);
            return Err(GpuError::Validation {
                what,
                message: err.to_string(),
            });
        }
        let p = Arc::new(Pipeline {
            entry,
            bind_group_layout,
            pipeline,
        });
        pipelines.insert(key, p.clone());
        Ok(p)
    }

    /// How many pipelines are compiled (tests check the cache is hit).
    pub fn len(&self) -> usize {
        self.pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// True before the first pipeline is compiled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
