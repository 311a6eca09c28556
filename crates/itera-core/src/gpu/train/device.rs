//! One model's side of a training step on the device: its weights uploaded flat, gradient,
//! moment, activation, id and state buffers, and its recorded dispatches bound once.

use super::kernels::TrainBuffers;
use super::layout::ActLayout;
use super::record::{Recorder, Slots, UNIFORM_SLOT};
use crate::error::{Error, Result};
use crate::gpu::dispatch::Dispatch;
use crate::gpu::Gpu;
use crate::weights::Weights;

/// One model on the device: its buffers and its recorded dispatches, cut into segments (one
/// per micro-batch, the student's optimiser last) that run as separate compute passes of the
/// step's one submission — between them the teacher's logits are copied over.
pub(super) struct OnDevice {
    pub params: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    /// AdamW's first and second moments (a teacher has none).
    pub moments: Option<[wgpu::Buffer; 2]>,
    pub act: wgpu::Buffer,
    pub ints: wgpu::Buffer,
    pub segments: Vec<Vec<Dispatch>>,
    _states: Vec<wgpu::Buffer>,
    _uniforms: wgpu::Buffer,
}

impl OnDevice {
    /// Uploads `w`, makes the buffers `layout` needs (gradients, and the moments when
    /// `trained`; each one table long, so each fits a binding whenever the weights do) and
    /// binds the recorded dispatches, cut after each index in `cuts`.
    pub fn new(
        gpu: &Gpu,
        w: &Weights,
        layout: &ActLayout,
        trained: bool,
        rec: &Recorder,
        cuts: &[usize],
    ) -> Result<OnDevice> {
        use wgpu::BufferUsages as U;
        let c = &w.config;
        let flat: Vec<f32> = w
            .tensors
            .iter()
            .flat_map(|x| x.as_f32().expect("checked f32").iter().copied())
            .collect();
        let io = U::STORAGE | U::COPY_SRC | U::COPY_DST;
        let params = gpu.buffer_init("train params", bytemuck::cast_slice(&flat), io)?;
        let table_bytes = flat.len() as u64 * 4;
        let grads = gpu.buffer("train grads", if trained { table_bytes } else { 4 }, io);
        let moments = trained.then(|| [0, 1].map(|_| gpu.buffer("AdamW moments", table_bytes, io)));
        let act = gpu.buffer("train activations", layout.len as u64 * 4, io);
        let ints = gpu.buffer("train ids", layout.ints_len as u64 * 4, io);
        let state_len = (layout.rows * c.d_inner() * c.d_state) as u64 * 4;
        let states: Vec<wgpu::Buffer> = (0..c.n_layers)
            .map(|_| gpu.buffer("train states", state_len, U::STORAGE))
            .collect();
        let uniforms = gpu.buffer_init("train uniform blocks", &rec.uniform_bytes, U::UNIFORM)?;
        let mut segments = vec![Vec::new()];
        for (i, &(kernel, slot, slots, groups)) in rec.specs.iter().enumerate() {
            if cuts.contains(&i) {
                segments.push(Vec::new());
            }
            let (slot4, slot5) = match (slots, &moments) {
                (Slots::States(layer), _) => (&ints, &states[layer]),
                (Slots::Moments, Some([m, v])) => (m, v),
                (Slots::Moments, None) => return Err(Error::Gpu("a teacher has no optimiser to record".into())),
            };
            let buffers = TrainBuffers {
                params: &params,
                grads: &grads,
                act: &act,
                ints: slot4,
                states: slot5,
            };
            let uniform = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &uniforms,
                offset: slot,
                size: wgpu::BufferSize::new(UNIFORM_SLOT),
            });
            let bind_group = gpu.bind_group(gpu.kernels.layout(kernel.signature), &buffers.resources(uniform));
            segments.last_mut().expect("one segment at least").push(Dispatch {
                label: kernel.label,
                pipeline: kernel.pipeline.clone(),
                bind_group,
                groups,
            });
        }
        Ok(OnDevice {
            params,
            grads,
            moments,
            act,
            ints,
            segments,
            _states: states,
            _uniforms: uniforms,
        })
    }
}
