//! The wgpu backend (cargo feature `gpu`): the same code natively (Vulkan, Metal, DX12;
//! lavapipe in CI) and in the browser (WebGPU).
//!
//! - `Gpu`: one device with every compute pipeline, built once from the plain WGSL files in
//!   `shaders/` (`kernels`), and counters of what was created and submitted;
//! - `linear`: weight matrices on the GPU in their file precision (f32/f16/q8/q4);
//! - `plan` + `model`: a model uploaded once, its activation arena and the recorded list of
//!   dispatches for one decode step; `decode` chains K steps in one submission and reads back
//!   only the sampled ids and their log-probs;
//! - `train`: a training step (forward, backward, AdamW) on the GPU, its pipelines built on
//!   first use;
//! - `oneshot`: runs a single kernel on given data, for the parity tests.

pub mod args;
mod dispatch;
pub mod generate;
pub mod kernels;
pub mod linear;
pub mod model;
pub mod oneshot;
mod plan;
pub mod profile;
mod readback;
pub mod train;
pub mod transformer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use kernels::Kernels;

/// A device with the pipelines the model needs, created once.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub kernels: Kernels,
    /// Whether f16 weights are read with shader-f16 (f16_native.wgsl).
    pub native_f16: bool,
    train_kernels: std::sync::OnceLock<train::TrainKernels>,
    pub(crate) counters: Counters,
    /// The first validation error or device loss reported by the device, if any: once set,
    /// every later GPU call fails with it (callers fall back to the CPU).
    failure: Arc<Mutex<Option<String>>>,
}

/// What the backend has asked of the device so far (the bench's structural counters).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    resources: AtomicU64,
    submissions: AtomicU64,
    readbacks: AtomicU64,
    readback_bytes: AtomicU64,
}

/// A snapshot of the counters; subtract two to get what happened in between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Buffers and bind groups created.
    pub resources: u64,
    pub submissions: u64,
    pub readbacks: u64,
    pub readback_bytes: u64,
}

impl std::ops::Sub for CounterSnapshot {
    type Output = CounterSnapshot;
    fn sub(self, rhs: CounterSnapshot) -> CounterSnapshot {
        CounterSnapshot {
            resources: self.resources - rhs.resources,
            submissions: self.submissions - rhs.submissions,
            readbacks: self.readbacks - rhs.readbacks,
            readback_bytes: self.readback_bytes - rhs.readback_bytes,
        }
    }
}

impl Gpu {
    /// Opens the default adapter (`WGPU_BACKEND` etc. are honoured natively). A missing
    /// adapter or device is `Error::Gpu` with the reason, so callers can fall back to the CPU.
    pub async fn new() -> Result<Gpu> {
        Gpu::with_options(true).await
    }

    /// `new`, using shader-f16 for f16 weights only when `native_f16` is asked for and the
    /// adapter has it (the tests run both paths on one adapter).
    pub async fn with_options(native_f16: bool) -> Result<Gpu> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Gpu(format!("no GPU adapter: {e}")))?;
        let info = adapter.get_info();
        // The defaults (128 MiB storage bindings, 8 storage buffers per stage) hold every
        // shipped model and the 15m benchmark config; larger buffers and bindings are asked
        // for where the adapter grants them (training a bigger model needs them), which every
        // WebGPU implementation allows up to the adapter's own limits.
        let granted = adapter.limits();
        let mut limits = wgpu::Limits::default().using_resolution(granted.clone());
        limits.max_storage_buffer_binding_size = granted
            .max_storage_buffer_binding_size
            .max(limits.max_storage_buffer_binding_size);
        limits.max_buffer_size = granted.max_buffer_size.max(limits.max_buffer_size);
        // Timestamp queries (kernel timings in the bench) where the adapter has them.
        let mut optional = wgpu::Features::TIMESTAMP_QUERY;
        if native_f16 {
            optional |= wgpu::Features::SHADER_F16;
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("itera"),
                required_features: adapter.features() & optional,
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Gpu(format!("cannot open {} ({:?}): {e}", info.name, info.backend)))?;
        // Without these handlers wgpu panics on an uncaptured error; a panic must never
        // cross the wasm boundary, so errors are recorded and returned by the next call.
        let failure = Arc::new(Mutex::new(None));
        let slot = failure.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| record(&slot, format!("GPU error: {e}"))));
        let slot = failure.clone();
        device.set_device_lost_callback(move |reason, message| {
            record(&slot, format!("the GPU device was lost ({reason:?}): {message}"))
        });
        let native_f16 = device.features().contains(wgpu::Features::SHADER_F16);
        let kernels = Kernels::new(&device, native_f16);
        Ok(Gpu {
            device,
            queue,
            info,
            kernels,
            native_f16,
            train_kernels: std::sync::OnceLock::new(),
            counters: Counters::default(),
            failure,
        })
    }

    /// `new` for native callers.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Gpu> {
        pollster::block_on(Gpu::new())
    }

    /// `with_options` for native callers.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_options_blocking(native_f16: bool) -> Result<Gpu> {
        pollster::block_on(Gpu::with_options(native_f16))
    }

    /// Human-readable adapter description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits) on Vulkan".
    pub fn describe(&self) -> String {
        let f16 = if self.native_f16 { ", shader-f16" } else { "" };
        match self.info.name.as_str() {
            // Browsers keep the adapter's name to themselves.
            "" => format!("{:?}{f16}", self.info.backend),
            name => format!("{name} on {:?}{f16}", self.info.backend),
        }
    }

    /// `Err` once the device has reported an error or was lost.
    pub fn check(&self) -> Result<()> {
        match self.failure.lock().map(|f| f.clone()) {
            Ok(None) => Ok(()),
            Ok(Some(message)) => Err(Error::Gpu(message)),
            Err(_) => Err(Error::Gpu("the GPU error record is poisoned".into())),
        }
    }

    /// The training pipelines, compiled on first use.
    pub fn train_kernels(&self) -> &train::TrainKernels {
        self.train_kernels
            .get_or_init(|| train::TrainKernels::new(&self.device, &self.kernels))
    }

    pub fn counters(&self) -> CounterSnapshot {
        let c = &self.counters;
        CounterSnapshot {
            resources: c.resources.load(Ordering::Relaxed),
            submissions: c.submissions.load(Ordering::Relaxed),
            readbacks: c.readbacks.load(Ordering::Relaxed),
            readback_bytes: c.readback_bytes.load(Ordering::Relaxed),
        }
    }

    /// A buffer holding `bytes` (padded to whole 4-byte words, as storage bindings read them).
    /// Written through the queue rather than mapped at creation: on a lost device mapping
    /// fails inside wgpu with a panic, a queue write merely records an error.
    pub(crate) fn buffer_init(&self, label: &str, bytes: &[u8], usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        self.check()?;
        if usage.contains(wgpu::BufferUsages::STORAGE) {
            self.check_binding(label, bytes.len() as u64)?;
        }
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
        let buffer = self.buffer(label, padded.len() as u64, usage | wgpu::BufferUsages::COPY_DST);
        self.queue.write_buffer(&buffer, 0, &padded);
        Ok(buffer)
    }

    /// `Err` when one storage binding of `bytes` exceeds the device's limit (128 MiB by default).
    pub(crate) fn check_binding(&self, what: &str, bytes: u64) -> Result<()> {
        let limit = self.device.limits().max_storage_buffer_binding_size;
        if bytes > limit {
            return Err(Error::Gpu(format!(
                "{what} needs {bytes} bytes in one binding, the device allows {limit}"
            )));
        }
        Ok(())
    }

    pub(crate) fn buffer(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        self.counters.resources.fetch_add(1, Ordering::Relaxed);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.div_ceil(4).max(1) * 4,
            usage,
            mapped_at_creation: false,
        })
    }

    pub(crate) fn bind_group(
        &self,
        layout: &wgpu::BindGroupLayout,
        resources: &[wgpu::BindingResource],
    ) -> wgpu::BindGroup {
        self.counters.resources.fetch_add(1, Ordering::Relaxed);
        let entries: Vec<wgpu::BindGroupEntry> = resources
            .iter()
            .enumerate()
            .map(|(i, r)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: r.clone(),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout,
            entries: &entries,
        })
    }

    pub(crate) fn submit(&self, encoder: wgpu::CommandEncoder) {
        self.counters.submissions.fetch_add(1, Ordering::Relaxed);
        self.queue.submit([encoder.finish()]);
    }
}

fn record(slot: &Mutex<Option<String>>, message: String) {
    if let Ok(mut f) = slot.lock() {
        f.get_or_insert(message);
    }
}
