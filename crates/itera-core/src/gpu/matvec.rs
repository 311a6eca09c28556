//! Matrix × vector on the GPU (shaders/matvec_f32.wgsl, matvec_q8.wgsl): weights uploaded
//! once per matrix in their file layout, dispatched one workgroup per output row.

use wgpu::util::DeviceExt;

use super::Gpu;
use crate::error::{Error, Result};
use crate::matrix::{Matrix, MatrixData};
use crate::precision::groups_per_row;

/// Most workgroups per dispatch dimension (WebGPU's default limit); taller matrices wrap onto y.
const MAX_GROUPS_PER_DIM: u32 = 65_535;

/// A weight matrix resident on the GPU.
pub struct GpuMatrix {
    pub rows: usize,
    pub cols: usize,
    weights: Weights,
}

enum Weights {
    F32(wgpu::Buffer),
    Q8 { q: wgpu::Buffer, scales: wgpu::Buffer },
}

fn storage(gpu: &Gpu, label: &str, bytes: &[u8]) -> wgpu::Buffer {
    // Storage bindings are read in 4-byte words: pad the tail.
    let mut padded = bytes.to_vec();
    padded.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
    gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: &padded,
        usage: wgpu::BufferUsages::STORAGE,
    })
}

impl GpuMatrix {
    /// Uploads `m` (f32 or q8; the other formats come with their kernels).
    pub fn upload(gpu: &Gpu, m: &Matrix) -> Result<GpuMatrix> {
        let weights = match &m.data {
            MatrixData::F32(w) => Weights::F32(storage(gpu, "w f32", bytemuck::cast_slice(w))),
            MatrixData::Q8 { q, scale } => Weights::Q8 {
                q: storage(gpu, "w q8", bytemuck::cast_slice(q)),
                scales: storage(gpu, "w q8 scales", bytemuck::cast_slice(scale)),
            },
            _ => return Err(Error::Gpu(format!("{} matrices have no GPU kernel yet", m.precision()))),
        };
        Ok(GpuMatrix {
            rows: m.rows,
            cols: m.cols,
            weights,
        })
    }

    /// Records `y = W·x` into `encoder` (x and y are GPU buffers of cols and rows floats).
    pub fn record(&self, gpu: &Gpu, encoder: &mut wgpu::CommandEncoder, x: &wgpu::Buffer, y: &wgpu::Buffer) {
        let (rows, cols) = (self.rows as u32, self.cols as u32);
        let (pipeline, dims, buffers): (_, Vec<u32>, Vec<&wgpu::Buffer>) = match &self.weights {
            Weights::F32(w) => (&gpu.pipelines.matvec_f32, vec![rows, cols, 0, 0], vec![w]),
            Weights::Q8 { q, scales } => (
                &gpu.pipelines.matvec_q8,
                vec![rows, cols, groups_per_row(self.cols) as u32, 0],
                vec![q, scales],
            ),
        };
        let uniform = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("matvec dims"),
            contents: bytemuck::cast_slice(&dims),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![uniform.as_entire_binding()];
        entries.extend(buffers.iter().map(|b| b.as_entire_binding()));
        entries.push(x.as_entire_binding());
        entries.push(y.as_entire_binding());
        let entries: Vec<wgpu::BindGroupEntry> = entries
            .into_iter()
            .enumerate()
            .map(|(i, resource)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource,
            })
            .collect();
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("matvec"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        let x_groups = rows.clamp(1, MAX_GROUPS_PER_DIM);
        pass.dispatch_workgroups(x_groups, rows.div_ceil(x_groups).max(1), 1);
    }

    /// `W·x` with a read-back: for tests and one-off use (the model keeps data on the GPU).
    pub fn matvec(&self, gpu: &Gpu, x: &[f32]) -> Result<Vec<f32>> {
        if x.len() != self.cols {
            return Err(Error::ShapeMismatch {
                op: "gpu matvec",
                detail: format!("x has {} values for {} columns", x.len(), self.cols),
            });
        }
        let x_buf = storage(gpu, "x", bytemuck::cast_slice(x));
        let size = (self.rows * 4) as u64;
        let y_buf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("y"),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("y read-back"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        self.record(gpu, &mut encoder, &x_buf, &y_buf);
        encoder.copy_buffer_to_buffer(&y_buf, 0, &read, 0, size);
        gpu.queue.submit([encoder.finish()]);
        read_back(gpu, &read)
    }
}

/// Maps a MAP_READ buffer and copies it out (native: blocks on the device).
#[cfg(not(target_arch = "wasm32"))]
fn read_back(gpu: &Gpu, buffer: &wgpu::Buffer) -> Result<Vec<f32>> {
    let slice = buffer.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu(format!("device poll: {e}")))?;
    rx.recv()
        .map_err(|_| Error::Gpu("read-back never completed".into()))?
        .map_err(|e| Error::Gpu(format!("read-back: {e}")))?;
    let data = slice
        .get_mapped_range()
        .map_err(|e| Error::Gpu(format!("read-back: {e}")))?;
    let out = bytemuck::cast_slice(&data).to_vec();
    drop(data);
    buffer.unmap();
    Ok(out)
}

#[cfg(target_arch = "wasm32")]
fn read_back(_gpu: &Gpu, _buffer: &wgpu::Buffer) -> Result<Vec<f32>> {
    Err(Error::Gpu(
        "blocking read-back is native only; the browser path awaits map_async".into(),
    ))
}
