//! Next-token sampling: greedy at temperature 0, otherwise temperature → top-k → top-p
//! (nucleus) → a draw from the seeded PCG32, so a seed reproduces a story exactly.

use crate::error::{Error, Result};
use crate::rng::Pcg32;

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
        if !self.temperature.is_finite() || !(0.0..=100.0).contains(&self.temperature) {
            return Err(Error::setting(
                "temperature",
                self.temperature,
                "a number in [0, 100] (0 = greedy)",
            ));
        }
        if !self.top_p.is_finite() || self.top_p <= 0.0 || self.top_p > 1.0 {
            return Err(Error::setting("top_p", self.top_p, "a number in (0, 1]"));
        }
        Ok(())
    }
}

/// Samples token ids from logits; owns its scratch so a step allocates nothing.
#[derive(Clone, Debug)]
pub struct Sampler {
    settings: SamplingSettings,
    rng: Pcg32,
    candidates: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(settings: SamplingSettings) -> Result<Sampler> {
        settings.validate()?;
        Ok(Sampler {
            settings,
            rng: Pcg32::new(settings.seed),
            candidates: Vec::new(),
        })
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let s = self.settings;
        if s.temperature == 0.0 {
            return argmax(logits);
        }
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        self.candidates.clear();
        self.candidates.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &z)| (((z - max) / s.temperature).exp(), i as u32)),
        );
        // Most likely first; equal probabilities keep id order so results are deterministic.
        self.candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        if s.top_k > 0 {
            self.candidates.truncate(s.top_k);
        }
        let total: f32 = self.candidates.iter().map(|c| c.0).sum();
        if s.top_p < 1.0 {
            let mut mass = 0.0;
            let keep = self
                .candidates
                .iter()
                .position(|c| {
                    mass += c.0 / total;
                    mass >= s.top_p
                })
                .map_or(self.candidates.len(), |i| i + 1);
            self.candidates.truncate(keep);
        }
        let total: f32 = self.candidates.iter().map(|c| c.0).sum();
        let mut r = self.rng.next_f32() * total;
        for &(p, id) in &self.candidates {
            r -= p;
            if r < 0.0 {
                return id;
            }
        }
        self.candidates.last().map_or(0, |c| c.1)
    }
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
        assert!((0..20).all(|_| s.sample(&logits) == 1));
        let draw = |seed| {
            let mut s = Sampler::new(SamplingSettings {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed,
            })
            .unwrap();
            (0..32).map(|_| s.sample(&logits)).collect::<Vec<_>>()
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
        let seen: std::collections::HashSet<u32> = (0..500).map(|_| s.sample(&logits)).collect();
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
}
