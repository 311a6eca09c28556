//! The CPU twin of shaders/sample.wgsl: the same bisection thresholds, the same id-order walk
//! and the same counter-based random number, with sums taken in the shader's order (strided
//! per-thread partial sums reduced as a tree; contiguous runs prefixed serially), so the GPU's
//! choices can be checked token for token. (The CPU decoder's own `Sampler` sorts candidates
//! and uses PCG32; both sample the same distribution, not the same stream.)

use crate::sampling::SamplingSettings;

const WG: usize = 256;
const ONE_BITS: u32 = 0x3f80_0000;

fn hash(x: u32) -> u32 {
    let mut v = x;
    v ^= v >> 16;
    v = v.wrapping_mul(0x7feb_352d);
    v ^= v >> 15;
    v = v.wrapping_mul(0x846c_a68b);
    v ^= v >> 16;
    v
}

/// The shader's uniform in [0, 1) for a seed and absolute position.
pub fn uniform01(seed: u64, position: u32) -> f32 {
    let bits = hash(seed as u32 ^ hash((seed >> 32) as u32 ^ hash(position)));
    (bits >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Sum of `f(i)` over the vocabulary as the shader's workgroup reduction computes it.
fn tree_sum(vocab: usize, f: impl Fn(usize) -> f32) -> f32 {
    let mut partial = [0.0f32; WG];
    for (t, p) in partial.iter_mut().enumerate() {
        *p = (t..vocab).step_by(WG).map(&f).sum::<f32>();
    }
    crate::kernels::reduce(partial)
}

/// The token sample.wgsl picks from `logits` at absolute `position`.
pub fn sample_reference(logits: &[f32], s: SamplingSettings, position: u32) -> u32 {
    let vocab = logits.len();
    if s.temperature == 0.0 {
        return crate::sampling::argmax(logits);
    }
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let q = |i: usize| ((logits[i] - max) / s.temperature).exp();
    let at_least = |t: f32, count: bool| {
        tree_sum(vocab, |i| {
            let v = q(i);
            if v >= t {
                if count {
                    1.0
                } else {
                    v
                }
            } else {
                0.0
            }
        })
    };
    let bisect = |start: u32, goal: f32, count: bool| {
        let (mut lo, mut hi) = (start, ONE_BITS + 1);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if at_least(f32::from_bits(mid), count) >= goal {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    };
    let mut threshold = 0.0f32;
    if s.top_k > 0 && s.top_k < vocab {
        threshold = f32::from_bits(bisect(0, s.top_k as f32, true));
    }
    if s.top_p < 1.0 {
        let top_k_mass = at_least(threshold, false);
        threshold = f32::from_bits(bisect(threshold.to_bits(), s.top_p * top_k_mass, false));
    }
    let run = vocab.div_ceil(WG);
    let runs: Vec<(usize, usize, f32)> = (0..WG)
        .map(|t| {
            let start = (t * run).min(vocab);
            let end = (start + run).min(vocab);
            let mass = (start..end).map(q).filter(|&v| v >= threshold).sum::<f32>();
            (start, end, mass)
        })
        .collect();
    let total = runs.iter().fold(0.0f32, |acc, r| acc + r.2);
    let r = uniform01(s.seed, position) * total;
    let mut before = 0.0f32;
    for &(start, end, mass) in &runs {
        if r >= before && r < before + mass {
            let mut left = r - before;
            for i in start..end {
                let v = q(i);
                if v >= threshold {
                    left -= v;
                    if left < 0.0 {
                        return i as u32;
                    }
                }
            }
        }
        before += mass;
    }
    (0..vocab).rev().find(|&i| q(i) >= threshold).unwrap_or(0) as u32
}
