//! One kernel on given data, read back: how the parity tests drive each WGSL kernel against
//! its CPU twin. It creates its buffers per call, which the model's decode path never does.

use super::kernels::{Bindings, Kernel};
use super::linear::GpuMatrix;
use super::{readback, Gpu};
use crate::error::Result;

/// The buffers a kernel may bind; those its signature does not use are ignored.
#[derive(Default)]
pub struct Inputs<'a> {
    pub weights: Option<&'a GpuMatrix>,
    pub params: &'a [f32],
    pub act: &'a [f32],
    pub ctl: &'a [u32],
}

/// Runs `kernel` once over `groups` workgroups with the uniform block `uniform` and returns
/// the arena and the control words afterwards.
pub async fn run(
    gpu: &Gpu,
    kernel: &Kernel,
    uniform: &[u32],
    inputs: Inputs<'_>,
    groups: (u32, u32),
) -> Result<(Vec<f32>, Vec<u32>)> {
    use wgpu::BufferUsages as U;
    let uniform = gpu.buffer_init("uniform", bytemuck::cast_slice(uniform), U::UNIFORM)?;
    let params = gpu.buffer_init("params", bytemuck::cast_slice(inputs.params), U::STORAGE)?;
    let io = U::STORAGE | U::COPY_SRC;
    let act = gpu.buffer_init("act", bytemuck::cast_slice(inputs.act), io)?;
    let ctl = gpu.buffer_init("ctl", bytemuck::cast_slice(inputs.ctl), io)?;
    let resources = kernel.signature.resources(Bindings {
        uniform: uniform.as_entire_binding(),
        weights: inputs.weights,
        params: &params,
        act: &act,
        ctl: &ctl,
    });
    let bind_group = gpu.bind_group(gpu.kernels.layout(kernel.signature), &resources);
    let (act_len, ctl_len) = (act.size(), ctl.size());
    let act_read = gpu.buffer("act read-back", act_len, U::MAP_READ | U::COPY_DST);
    let ctl_read = gpu.buffer("ctl read-back", ctl_len, U::MAP_READ | U::COPY_DST);
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
    }
    encoder.copy_buffer_to_buffer(&act, 0, &act_read, 0, act_len);
    encoder.copy_buffer_to_buffer(&ctl, 0, &ctl_read, 0, ctl_len);
    gpu.submit(encoder);
    let act_out = readback::read(gpu, &act_read, act_len).await?;
    let ctl_out = readback::read(gpu, &ctl_read, ctl_len).await?;
    Ok((
        bytemuck::pod_collect_to_vec(&act_out[..inputs.act.len() * 4]),
        bytemuck::pod_collect_to_vec(&ctl_out[..inputs.ctl.len() * 4]),
    ))
}

/// `run` for native callers.
#[cfg(not(target_arch = "wasm32"))]
pub fn run_blocking(
    gpu: &Gpu,
    kernel: &Kernel,
    uniform: &[u32],
    inputs: Inputs<'_>,
    groups: (u32, u32),
) -> Result<(Vec<f32>, Vec<u32>)> {
    pollster::block_on(run(gpu, kernel, uniform, inputs, groups))
}

/// The five buffers of a training kernel (Signature::Train), in and out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainData {
    pub params: Vec<f32>,
    pub grads: Vec<f32>,
    pub act: Vec<f32>,
    pub ints: Vec<u32>,
    pub states: Vec<f32>,
}

/// Runs the training kernel `kernel` once over `groups` workgroups with the uniform block
/// `args` and returns all five buffers afterwards.
pub async fn run_train<A: bytemuck::Pod>(
    gpu: &Gpu,
    kernel: &Kernel,
    args: A,
    data: &TrainData,
    groups: (u32, u32),
) -> Result<TrainData> {
    use wgpu::BufferUsages as U;
    let uniform = gpu.buffer_init("uniform", bytemuck::bytes_of(&args), U::UNIFORM)?;
    let io = U::STORAGE | U::COPY_SRC;
    let f32s = [&data.params, &data.grads, &data.act, &data.states];
    let [params, grads, act, states] = f32s.map(|v| gpu.buffer_init("train data", bytemuck::cast_slice(v), io));
    let (params, grads, act, states) = (params?, grads?, act?, states?);
    let ints = gpu.buffer_init("ints", bytemuck::cast_slice(&data.ints), io)?;
    let buffers = super::train::TrainBuffers {
        params: &params,
        grads: &grads,
        act: &act,
        ints: &ints,
        states: &states,
    };
    let bind_group = gpu.bind_group(
        gpu.kernels.layout(kernel.signature),
        &buffers.resources(uniform.as_entire_binding()),
    );
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
    }
    let all = [&params, &grads, &act, &ints, &states];
    let reads: Vec<wgpu::Buffer> = all
        .iter()
        .map(|b| {
            let read = gpu.buffer("read-back", b.size(), U::MAP_READ | U::COPY_DST);
            encoder.copy_buffer_to_buffer(b, 0, &read, 0, b.size());
            read
        })
        .collect();
    gpu.submit(encoder);
    let mut out = Vec::new();
    for read in &reads {
        out.push(readback::read(gpu, read, read.size()).await?);
    }
    let f = |bytes: &[u8], len: usize| -> Vec<f32> { bytemuck::pod_collect_to_vec(&bytes[..len * 4]) };
    Ok(TrainData {
        params: f(&out[0], data.params.len()),
        grads: f(&out[1], data.grads.len()),
        act: f(&out[2], data.act.len()),
        ints: bytemuck::pod_collect_to_vec(&out[3][..data.ints.len() * 4]),
        states: f(&out[4], data.states.len()),
    })
}

/// `run_train` for native callers.
#[cfg(not(target_arch = "wasm32"))]
pub fn run_train_blocking<A: bytemuck::Pod>(
    gpu: &Gpu,
    kernel: &Kernel,
    args: A,
    data: &TrainData,
    groups: (u32, u32),
) -> Result<TrainData> {
    pollster::block_on(run_train(gpu, kernel, args, data, groups))
}
