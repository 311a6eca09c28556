//! Shared by the GPU test files: the adapter (or a printed reason to skip), greedy decoding on
//! the GPU, random data, and the atol + |ref|·rtol comparison.
#![allow(dead_code)]

use itera_core::gpu::Gpu;
use itera_core::rng::Pcg32;

pub fn gpu() -> Option<Gpu> {
    match Gpu::new_blocking() {
        Ok(g) => {
            eprintln!("GPU: {}", g.describe());
            Some(g)
        }
        Err(e) if std::env::var_os("ITERA_REQUIRE_GPU").is_some() => {
            panic!("ITERA_REQUIRE_GPU is set but {e} (is mesa-vulkan-drivers installed?)")
        }
        Err(e) => {
            eprintln!("SKIPPED: {e} (install mesa-vulkan-drivers for lavapipe)");
            None
        }
    }
}

/// `prompt` then greedy tokens up to `n` on the GPU, `k` per submission (from the empty
/// context).
pub fn gpu_greedy(g: &Gpu, m: &mut itera_core::gpu::model::GpuModel, prompt: &[u32], n: usize, k: usize) -> Vec<u32> {
    m.reset();
    let mut out = pollster::block_on(m.prefill(g, prompt, false)).unwrap().tokens;
    while out.len() < n {
        let step = k.min(n - out.len());
        out.extend(
            pollster::block_on(m.generate(g, *out.last().unwrap(), step, false))
                .unwrap()
                .tokens,
        );
    }
    out
}

pub fn random(rng: &mut Pcg32, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
}

pub fn assert_close(got: &[f32], want: &[f32], atol: f32, rtol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    // Written so that NaN fails too: only a value within the tolerance passes.
    let within = |g: f32, w: f32| (g - w).abs() <= atol + w.abs() * rtol;
    if let Some(i) = (0..got.len()).find(|&i| !within(got[i], want[i])) {
        panic!(
            "{what}: index {i}: GPU {} vs CPU {} (atol {atol}, rtol {rtol})",
            got[i], want[i]
        );
    }
}
