//! The wgpu backend (cargo feature `gpu`): one `Gpu` context per device that owns the device,
//! its queue and every compute pipeline, built once from the plain WGSL files in `shaders/`.
//! The same code runs natively (Vulkan, Metal, DX12; lavapipe in CI) and in the browser.
//!
//! This is the backend's foundation: device setup with fallback errors, the pipeline cache,
//! weight upload and the matrix × vector kernels for f32 and q8, each checked against its CPU
//! twin (`tests/gpu_kernels.rs`). The rest of the model's kernels build on the same pieces.

pub mod matvec;

use crate::error::{Error, Result};

/// A device with the pipelines the model needs, created once.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub(crate) pipelines: Pipelines,
}

pub(crate) struct Pipelines {
    pub matvec_f32: wgpu::ComputePipeline,
    pub matvec_q8: wgpu::ComputePipeline,
}

impl Gpu {
    /// Opens the default adapter (`WGPU_BACKEND` etc. are honoured natively). A missing
    /// adapter or device is `Error::Gpu` with the reason, so callers can fall back to the CPU.
    pub async fn new() -> Result<Gpu> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions::default())
            .await
            .map_err(|e| Error::Gpu(format!("no GPU adapter: {e}")))?;
        let info = adapter.get_info();
        // The defaults (128 MiB storage bindings) are enough for every shipped model, and
        // asking for no more than the defaults works on every WebGPU device.
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("itera"),
                required_limits: wgpu::Limits::default().using_resolution(adapter.limits()),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Gpu(format!("cannot open {} ({:?}): {e}", info.name, info.backend)))?;
        let pipelines = Pipelines {
            matvec_f32: pipeline(
                &device,
                "matvec_f32",
                include_str!("../../../../shaders/matvec_f32.wgsl"),
            ),
            matvec_q8: pipeline(&device, "matvec_q8", include_str!("../../../../shaders/matvec_q8.wgsl")),
        };
        Ok(Gpu {
            device,
            queue,
            info,
            pipelines,
        })
    }

    /// `new` for native callers.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Gpu> {
        pollster::block_on(Gpu::new())
    }

    /// Human-readable adapter description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits) on Vulkan".
    pub fn describe(&self) -> String {
        format!("{} on {:?}", self.info.name, self.info.backend)
    }
}

fn pipeline(device: &wgpu::Device, name: &str, source: &str) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(name),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(name),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    })
}
