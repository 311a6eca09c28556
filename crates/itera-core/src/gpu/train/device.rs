//! One model's side of a training step on the device: its weights uploaded flat, gradient,
//! moment, activation, id and state buffers, and its recorded dispatches bound once.

use super::kernels::TrainBuffers;
use super::layout::ActLayout;
use super::record::{Slots, TrainRecorder};
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
        rec: &TrainRecorder,
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
        let uniforms = gpu.buffer_init("train uniform blocks", &rec.rec.uniform_bytes, U::UNIFORM)?;
        let dispatches = rec.rec.bind(gpu, &uniforms, |_, slots, uniform| {
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
            Ok(buffers.resources(uniform))
        })?;
        let mut segments: Vec<Vec<Dispatch>> = vec![Vec::new()];
        for (i, d) in dispatches.into_iter().enumerate() {
            if cuts.contains(&i) {
                segments.push(Vec::new());
            }
            segments.last_mut().expect("one segment at least").push(d);
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
