//! Recording and replaying dispatches — how both the decode model and the training step run.
//! A `Recorder` collects dispatches before their bind groups exist: every kernel's uniform
//! block packed into the bytes of one uniform buffer (a slot each), and per dispatch the
//! kernel, its slot, what else it binds and its workgroups. `Recorder::bind` then makes every
//! bind group once (at load); `run_pass` replays the list in one compute pass.

use super::kernels::Kernel;
use super::Gpu;
use crate::error::Result;

/// Uniform blocks sit at multiples of WebGPU's minimum uniform offset alignment.
pub(crate) const UNIFORM_SLOT: u64 = 256;

/// A dispatch before its bind group exists. `B` is what it binds besides its uniform block
/// and the shared buffers: a weight matrix for the decode step, a layer's SSM states or the
/// AdamW moments for training.
#[derive(Clone, Copy)]
pub(crate) struct Spec<'k, B> {
    pub kernel: &'k Kernel,
    /// Byte offset of its uniform block in the uniform buffer.
    pub slot: u64,
    pub binds: B,
    pub groups: (u32, u32),
}

pub(crate) struct Recorder<'k, B> {
    pub uniform_bytes: Vec<u8>,
    pub specs: Vec<Spec<'k, B>>,
}

impl<'k, B: Copy> Recorder<'k, B> {
    pub fn new() -> Self {
        Recorder {
            uniform_bytes: Vec::new(),
            specs: Vec::new(),
        }
    }

    /// Records `kernel` with uniform block `args`; returns the block's slot (to rewrite later).
    pub fn push<A: bytemuck::Pod>(&mut self, kernel: &'k Kernel, args: A, binds: B, groups: (u32, u32)) -> u64 {
        let slot = self.uniform_bytes.len() as u64;
        self.uniform_bytes.extend_from_slice(bytemuck::bytes_of(&args));
        self.uniform_bytes.resize((slot + UNIFORM_SLOT) as usize, 0);
        self.specs.push(Spec {
            kernel,
            slot,
            binds,
            groups,
        });
        slot
    }

    /// Every recorded dispatch bound: `resources(kernel, binds, uniform)` gives a dispatch's
    /// bind group entries, its uniform block (in `uniforms`, made from `uniform_bytes`) first.
    pub fn bind<'b>(
        &self,
        gpu: &Gpu,
        uniforms: &'b wgpu::Buffer,
        mut resources: impl FnMut(&Kernel, B, wgpu::BindingResource<'b>) -> Result<Vec<wgpu::BindingResource<'b>>>,
    ) -> Result<Vec<Dispatch>> {
        self.specs
            .iter()
            .map(|s| {
                let uniform = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: uniforms,
                    offset: s.slot,
                    size: wgpu::BufferSize::new(UNIFORM_SLOT),
                });
                let entries = resources(s.kernel, s.binds, uniform)?;
                Ok(Dispatch {
                    label: s.kernel.label,
                    pipeline: s.kernel.pipeline.clone(),
                    bind_group: gpu.bind_group(gpu.kernels.layout(s.kernel.signature), &entries),
                    groups: s.groups,
                })
            })
            .collect()
    }
}

pub(crate) struct Dispatch {
    /// The kernel's name, for profiles.
    pub label: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group: wgpu::BindGroup,
    pub groups: (u32, u32),
}

/// `dispatches` `times` over, in one compute pass of `encoder`.
pub(crate) fn run_pass(encoder: &mut wgpu::CommandEncoder, dispatches: &[Dispatch], times: usize) {
    let mut pass = encoder.begin_compute_pass(&Default::default());
    for _ in 0..times {
        for d in dispatches {
            pass.set_pipeline(&d.pipeline);
            pass.set_bind_group(0, &d.bind_group, &[]);
            pass.dispatch_workgroups(d.groups.0, d.groups.1, 1);
        }
    }
}
