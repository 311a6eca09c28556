//! A small seeded random generator (PCG32, O'Neill 2014) for initialisation and batch sampling.
//!
//! Hand-written rather than taken from `rand` because the same arithmetic must be reproducible
//! bit-for-bit on every platform (native, wasm). (Token sampling uses a counter-based hash instead,
//! see `sampling`, so the GPU needs no generator state.)

#[derive(Clone, Debug)]
pub struct Pcg32 {
    state: u64,
    inc: u64,
}

const MULTIPLIER: u64 = 6364136223846793005;

impl Pcg32 {
    pub fn new(seed: u64) -> Pcg32 {
        Self::with_stream(seed, 0xda3e_39cb_94b9_5bdb)
    }

    /// Independent streams for the same seed (e.g. one per data-loader worker).
    pub fn with_stream(seed: u64, stream: u64) -> Pcg32 {
        let mut rng = Pcg32 {
            state: 0,
            inc: (stream << 1) | 1,
        };
        rng.next_u32();
        rng.state = rng.state.wrapping_add(seed);
        rng.next_u32();
        rng
    }

    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(MULTIPLIER).wrapping_add(self.inc);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        let rot = (old >> 59) as u32;
        xorshifted.rotate_right(rot)
    }

    /// Uniform in [0, 1) with 24 bits of resolution (exactly representable in f32).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: u32) -> u32 {
        ((self.next_u32() as u64 * n as u64) >> 32) as u32
    }

    /// Standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = (self.next_f32() as f64).max(1e-12);
        let u2 = self.next_f32() as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_deterministic_and_distinct() {
        let a: Vec<u32> = (0..4)
            .map({
                let mut r = Pcg32::new(7);
                move |_| r.next_u32()
            })
            .collect();
        let mut r = Pcg32::new(7);
        assert_eq!(a, (0..4).map(|_| r.next_u32()).collect::<Vec<_>>());
        let mut other = Pcg32::new(8);
        assert_ne!(a[0], other.next_u32());
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = Pcg32::new(1);
        let xs: Vec<f32> = (0..20000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / xs.len() as f32;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }
}
