//! Reading GPU buffers back: map, await, copy out, unmap. Natively the device is polled until
//! the map completes; in the browser the map resolves on the event loop, so this is async.

use super::Gpu;
use crate::error::{Error, Result};
use std::sync::atomic::Ordering;

/// Copies out `len` bytes of a MAP_READ buffer (counted as one read-back).
pub(crate) async fn read(gpu: &Gpu, buffer: &wgpu::Buffer, len: u64) -> Result<Vec<u8>> {
    gpu.check()?;
    gpu.counters.readbacks.fetch_add(1, Ordering::Relaxed);
    gpu.counters.readback_bytes.fetch_add(len, Ordering::Relaxed);
    let slice = buffer.slice(..len);
    let (tx, rx) = futures_channel::oneshot::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    #[cfg(not(target_arch = "wasm32"))]
    gpu.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu(format!("device lost while waiting for the GPU: {e}")))?;
    rx.await
        .map_err(|_| Error::Gpu("the device dropped a read-back (device lost?)".into()))?
        .map_err(|e| Error::Gpu(format!("read-back failed: {e}")))?;
    let bytes = slice
        .get_mapped_range()
        .map_err(|e| Error::Gpu(format!("read-back failed: {e}")))?
        .to_vec();
    buffer.unmap();
    // Errors are reported asynchronously: a failed dispatch leaves garbage, not an error here.
    gpu.check()?;
    Ok(bytes)
}
