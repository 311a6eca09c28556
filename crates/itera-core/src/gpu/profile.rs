//! Kernel timings of one decode step with timestamp queries (WebGPU's `timestamp-query`
//! feature): the recorded step is replayed with every dispatch in its own pass, each pass
//! timestamped at its start and end. Creates its query set and buffers per call — a
//! measurement tool, not part of the decode path.

use super::model::GpuModel;
use super::{readback, Gpu};
use crate::error::Result;

/// Total GPU time per kernel label over one decode step, slowest first (seconds), or None
/// when the adapter has no timestamp queries.
pub async fn profile_step(gpu: &Gpu, m: &mut GpuModel, token: u32) -> Result<Option<Vec<(&'static str, f64)>>> {
    if !gpu.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
        return Ok(None);
    }
    use wgpu::BufferUsages as U;
    let n = m.step.len() as u32 * 2;
    let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
        label: Some("decode step timestamps"),
        ty: wgpu::QueryType::Timestamp,
        count: n,
    });
    let resolved = gpu.buffer("timestamps", n as u64 * 8, U::QUERY_RESOLVE | U::COPY_SRC);
    let read = gpu.buffer("timestamps read-back", n as u64 * 8, U::MAP_READ | U::COPY_DST);
    let mut encoder = m.begin(gpu, &[token]);
    for (i, d) in m.step.iter().enumerate() {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(d.label),
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &set,
                beginning_of_pass_write_index: Some(2 * i as u32),
                end_of_pass_write_index: Some(2 * i as u32 + 1),
            }),
        });
        pass.set_pipeline(&d.pipeline);
        pass.set_bind_group(0, &d.bind_group, &[]);
        pass.dispatch_workgroups(d.groups.0, d.groups.1, 1);
    }
    encoder.resolve_query_set(&set, 0..n, &resolved, 0);
    encoder.copy_buffer_to_buffer(&resolved, 0, &read, 0, n as u64 * 8);
    gpu.submit(encoder);
    m.position += 1;
    let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&readback::read(gpu, &read, n as u64 * 8).await?);
    let ns_per_tick = gpu.queue.get_timestamp_period() as f64;
    let mut totals: Vec<(&'static str, f64)> = Vec::new();
    for (d, pair) in m.step.iter().zip(ticks.chunks_exact(2)) {
        let seconds = pair[1].saturating_sub(pair[0]) as f64 * ns_per_tick * 1e-9;
        match totals.iter_mut().find(|(l, _)| *l == d.label) {
            Some(t) => t.1 += seconds,
            None => totals.push((d.label, seconds)),
        }
    }
    totals.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Some(totals))
}
