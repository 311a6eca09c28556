//! Next-token sampling: greedy at temperature 0, otherwise temperature → top-k → top-p
//! (nucleus) → a draw from a counter-based uniform of (seed, position). The same arithmetic
//! runs on the GPU (shaders/sample.wgsl), so a seed reproduces a story on every backend.

use crate::error::{Error, Result};

/// Highest temperature accepted (0 = greedy).
pub const MAX_TEMPERATURE: f32 = 100.0;

/// Sampling settings. `Default` is the one default every surface shows (CLI, page, API).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingSettings {
    /// 0 = greedy (argmax, ties to the lower id).
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 = no limit.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p; 1 = no limit.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        SamplingSettings {
            temperature: 0.8,
            top_k: 0,
            top_p: 0.9,
            seed: 0,
        }
    }
}

impl SamplingSettings {
    pub fn greedy() -> Self {
        SamplingSettings {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || !(0.0..=MAX_TEMPERATURE).contains(&self.temperature) {
            return Err(Error::setting(
                "temperature",
                self.temperature,
                format!("a number in [0, {MAX_TEMPERATURE}] (0 = greedy)"),
            ));
        }
        if !self.top_p.is_finite() || self.top_p <= 0.0 || self.top_p > 1.0 {
            return Err(Error::setting("top_p", self.top_p, "a number in (0, 1]"));
        }
        Ok(())
    }
}

/// Threads in the GPU sampler's workgroup: the CPU adds in the same lanes and order.
const LANES: usize = 256;

/// The sampler's uniform in [0, 1) for a seed and the absolute position of the token just
/// consumed: a counter-based hash (no generator state, so the GPU needs none either).
pub fn uniform01(seed: u64, position: u32) -> f32 {
    let bits = mix(seed as u32 ^ mix((seed >> 32) as u32 ^ mix(position)));
    (bits >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// A 32-bit integer hash (two multiply–xorshift rounds), the same in shaders/sample.wgsl.
fn mix(x: u32) -> u32 {
    let mut v = x;
    v ^= v >> 16;
    v = v.wrapping_mul(0x7feb_352d);
    v ^= v >> 15;
    v = v.wrapping_mul(0x846c_a68b);
    v ^= v >> 16;
    v
}

/// Samples token ids from logits; owns its scratch so a step allocates nothing.
///
/// The algorithm is the GPU's (shaders/sample.wgsl), so one seed writes one story on every
/// backend: q_i = exp((l_i − max) / T); keep q_i ≥ t where t is the k-th largest q (top-k),
/// then the largest q value whose kept mass reaches top_p · (top-k mass); draw r = uniform ·
/// kept mass and walk the kept values in id order. Masses are added as the shader adds them
/// (strided per-lane sums reduced as a tree; contiguous runs prefixed serially). The shader
/// bisects on f32 bit patterns; here the same thresholds are found with selection, which
/// gives the identical value in a dozen passes instead of thirty (see `top_p_threshold`).
#[derive(Clone, Debug)]
pub struct Sampler {
    settings: SamplingSettings,
    q: Vec<f32>,
    candidates: Vec<f32>,
    /// (lane = id % 256, q) of the values a top-p probe still adds, in id order.
    active: Vec<(u8, f32)>,
}

impl Sampler {
    pub fn new(settings: SamplingSettings) -> Result<Sampler> {
        settings.validate()?;
        Ok(Sampler {
            settings,
            q: Vec::new(),
            candidates: Vec::new(),
            active: Vec::new(),
        })
    }

    /// The token that follows the one at absolute `position` (0 = the first token consumed),
    /// given the logits that token produced.
    pub fn sample(&mut self, logits: &[f32], position: u32) -> u32 {
        let s = self.settings;
        if s.temperature == 0.0 || logits.is_empty() {
            return argmax(logits);
        }
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        self.q.clear();
        self.q.extend(logits.iter().map(|&z| ((z - max) / s.temperature).exp()));
        let vocab = self.q.len();
        let mut threshold = 0.0f32;
        if s.top_k > 0 && s.top_k < vocab {
            // The largest t with at least k values ≥ t is the k-th largest value.
            self.candidates.clear();
            self.candidates.extend_from_slice(&self.q);
            let (_, kth, _) = self
                .candidates
                .select_nth_unstable_by(s.top_k - 1, |a, b| b.total_cmp(a));
            threshold = *kth;
        }
        if s.top_p < 1.0 {
            threshold = self.top_p_threshold(threshold, s.top_p);
        }
        self.draw(threshold, uniform01(s.seed, position))
    }

    /// The largest t ≥ `floor` whose kept mass reaches `top_p` · (mass ≥ `floor`), as the
    /// shader's bisection finds it. The kept mass changes only at the q values (and rounding
    /// is monotone, so it never grows with t), so that t is the largest q value ≥ `floor`
    /// that reaches the goal, or `floor` itself: a binary search over the candidates by
    /// selection. Each probe sums the values still ≥ the search's lower end (in id order, with
    /// their lanes): the rest add nothing to any later probe, and adding 0 changes no sum, so
    /// dropping them keeps every sum exact while the work halves as the search climbs.
    fn top_p_threshold(&mut self, floor: f32, top_p: f32) -> f32 {
        self.active.clear();
        self.active.extend(
            self.q
                .iter()
                .enumerate()
                .filter(|(_, &v)| v >= floor)
                .map(|(i, &v)| (i as u8, v)),
        );
        let goal = top_p * kept_mass(&self.active, floor);
        self.candidates.clear();
        self.candidates.extend(self.q.iter().copied().filter(|&v| v > floor));
        let (mut best, mut rest) = (floor, &mut self.candidates[..]);
        while !rest.is_empty() {
            let mid = rest.len() / 2;
            let (below, &mut pivot, above) = rest.select_nth_unstable_by(mid, f32::total_cmp);
            if kept_mass(&self.active, pivot) >= goal {
                best = pivot;
                rest = above;
                self.active.retain(|&(_, v)| v >= pivot);
            } else {
                rest = below;
            }
        }
        best
    }

    /// The kept value (q ≥ `threshold`) that `u` · kept mass falls in, walking ids in order:
    /// each lane owns a contiguous run of ids; the run holding r is found by an exclusive
    /// prefix over the runs' masses, then walked.
    fn draw(&self, threshold: f32, u: f32) -> u32 {
        let run = self.q.len().div_ceil(LANES);
        let kept = |&v: &f32| v >= threshold;
        // At most LANES runs: each run's kept mass once, then their sum in run order.
        let mut masses = [0.0f32; LANES];
        for (mass, ids) in masses.iter_mut().zip(self.q.chunks(run)) {
            *mass = ids.iter().filter(|v| kept(v)).sum::<f32>();
        }
        let total = masses.iter().fold(0.0f32, |acc, &m| acc + m);
        let r = u * total;
        let mut before = 0.0f32;
        for ((lane, ids), &mass) in self.q.chunks(run).enumerate().zip(&masses) {
            if r >= before && r < before + mass {
                let mut left = r - before;
                for (i, &v) in ids.iter().enumerate() {
                    if v >= threshold {
                        left -= v;
                        if left < 0.0 {
                            return (lane * run + i) as u32;
                        }
                    }
                }
            }
            before += mass;
        }
        // Rounding can leave r at the very end of the mass: the last kept id.
        self.q.iter().rposition(kept).unwrap_or(0) as u32
    }
}

/// Sum of the values ≥ `threshold` among (lane = id % 256, value) entries in id order, in the
/// shader's order: each lane adds its values in id order, then the 256 lane sums are reduced
/// as a tree.
fn kept_mass(entries: &[(u8, f32)], threshold: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    for &(lane, v) in entries {
        if v >= threshold {
            lanes[lane as usize] += v;
        }
    }
    crate::kernels::reduce(lanes)
}

/// Index of the largest value, the lowest index among ties.
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_first_maximum() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_reproduce() {
        let logits = [0.5, 2.0, 1.0, 1.9];
        let mut s = Sampler::new(SamplingSettings {
            temperature: 1.0,
            top_k: 1,
            top_p: 1.0,
            seed: 3,
        })
        .unwrap();
        assert!((0..20).all(|pos| s.sample(&logits, pos) == 1));
        let draw = |seed| {
            let mut s = Sampler::new(SamplingSettings {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed,
            })
            .unwrap();
            (0..32).map(|pos| s.sample(&logits, pos)).collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
    }

    #[test]
    fn top_p_excludes_the_tail() {
        // p ≈ [0.64, 0.24, 0.09, 0.03]: top_p 0.8 keeps the first two only.
        let logits = [3.0, 2.0, 1.0, 0.0];
        let mut s = Sampler::new(SamplingSettings {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.8,
            seed: 1,
        })
        .unwrap();
        let seen: std::collections::HashSet<u32> = (0..500).map(|pos| s.sample(&logits, pos)).collect();
        assert_eq!(seen, [0, 1].into_iter().collect());
    }

    #[test]
    fn bad_settings_are_rejected() {
        for bad in [
            SamplingSettings {
                temperature: -1.0,
                ..Default::default()
            },
            SamplingSettings {
                temperature: f32::NAN,
                ..Default::default()
            },
            SamplingSettings {
                top_p: 0.0,
                ..Default::default()
            },
            SamplingSettings {
                top_p: 1.5,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(Sampler::new(bad), Err(Error::InvalidSetting { .. })),
                "{bad:?}"
            );
        }
    }

    /// The shader's threshold search: bisection on the f32 bit patterns in [lo, 1].
    fn bisect(q: &[f32], lo: f32, goal: f32, count: bool) -> f32 {
        let at_least = |t: f32| {
            let mut lanes = [0.0f32; LANES];
            for (i, &v) in q.iter().enumerate() {
                if v >= t {
                    lanes[i % LANES] += if count { 1.0 } else { v };
                }
            }
            crate::kernels::reduce(lanes)
        };
        let (mut lo, mut hi) = (lo.to_bits(), 1.0f32.to_bits() + 1);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if at_least(f32::from_bits(mid)) >= goal {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        f32::from_bits(lo)
    }

    #[test]
    fn selection_finds_the_thresholds_the_shaders_bisection_finds() {
        let mut rng = crate::rng::Pcg32::new(11);
        let mut checked = 0;
        for vocab in [1usize, 7, 256, 300, 4096] {
            for (temperature, top_k, top_p) in [(0.8, 0, 0.9), (1.0, 40, 0.5), (0.3, 3, 0.99), (2.0, 1, 0.7)] {
                // Ties (a few repeated values) and a long flat tail, as real logits have.
                let logits: Vec<f32> = (0..vocab).map(|_| (rng.below(50) as f32 * 0.37).sin() * 6.0).collect();
                let mut s = Sampler::new(SamplingSettings {
                    temperature,
                    top_k,
                    top_p,
                    seed: 1,
                })
                .unwrap();
                s.sample(&logits, 0);
                let q = s.q.clone();
                let floor = if top_k > 0 && top_k < vocab {
                    bisect(&q, 0.0, top_k as f32, true)
                } else {
                    0.0
                };
                let mut kth = q.clone();
                if top_k > 0 && top_k < vocab {
                    kth.sort_by(|a, b| b.total_cmp(a));
                    assert_eq!(
                        floor.to_bits(),
                        kth[top_k - 1].to_bits(),
                        "top-k threshold, vocab {vocab}"
                    );
                }
                let entries: Vec<(u8, f32)> = q.iter().enumerate().map(|(i, &v)| (i as u8, v)).collect();
                let want = bisect(&q, floor, top_p * kept_mass(&entries, floor), false);
                assert_eq!(
                    s.top_p_threshold(floor, top_p).to_bits(),
                    want.to_bits(),
                    "top-p threshold, vocab {vocab}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 20);
    }

    #[test]
    fn the_uniform_depends_on_seed_and_position_only() {
        assert_eq!(uniform01(7, 3), uniform01(7, 3));
        assert_ne!(uniform01(7, 3), uniform01(7, 4));
        assert_ne!(
            uniform01(7, 3),
            uniform01(7 | 1 << 32, 3),
            "the seed's high word counts"
        );
        let mean = (0..10_000).map(|p| uniform01(5, p) as f64).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }
}
