//! Scalar activations (SPEC conventions) and their derivatives.

/// σ(x) = 1 / (1 + e⁻ˣ), with the vectorisable `exp_fast` (training calls it for every
/// activation of every layer; libm's expf was the largest cost after the scan).
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_fast(-x))
}

/// silu(x) = x·σ(x).
#[inline]
pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// d silu / dx = σ(x)·(1 + x·(1 − σ(x))).
#[inline]
pub fn silu_grad(x: f32) -> f32 {
    let s = sigmoid(x);
    s * (1.0 + x * (1.0 - s))
}

/// softplus(x) = ln(1 + eˣ), switching to x above 20 where the two agree to f32 precision.
/// Its derivative is σ(x).
#[inline]
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        exp_fast(x).ln_1p()
    }
}

/// eˣ without a libm call, so loops over it vectorise (the scan takes Di·N of these per
/// token). Range reduction x = n·ln2 + r with |r| ≤ ln2/2, then the degree-6 Taylor
/// polynomial of eʳ (truncation r⁷/7! ≤ 1.2e-7 relative, about one f32 ulp) scaled by 2ⁿ
/// through the exponent bits. Rounding uses the 1.5·2²³ trick, which needs no SSE4.1.
/// Inputs below −87 (results under 1.6e-38) return ≈1.6e-38 rather than a subnormal.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75; // ln 2 split so n·LN2_HI is exact
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³
                                     // Comparisons rather than `clamp`: wasm's f32.min/max differ from Rust's on NaN, so
                                     // `clamp` becomes a libm call there and the loops around it stop vectorising. Same values
                                     // (NaN passes through, as with `clamp`).
    #[allow(clippy::manual_clamp)]
    let x = if x < -87.0 {
        -87.0
    } else if x > 88.0 {
        88.0
    } else {
        x
    };
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    // t's low mantissa bits hold n itself: no float → int conversion (whose saturating
    // semantics would need branches and stop the loop from vectorising).
    let n_int = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    f32::from_bits(((n_int + 127) as u32) << 23) * p
}

/// `out[i] = exp(v[i] − max v)` through `exp_fast`; returns (max, Σ out). The shifted
/// exponentials of one row serve both its log-sum-exp (max + ln Σ) and its softmax
/// (out / Σ), so a loss over a whole vocabulary takes one exp per logit.
pub fn exp_shifted(v: &[f32], out: &mut [f32]) -> (f32, f32) {
    let max = v.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for (o, &x) in out.iter_mut().zip(v) {
        *o = exp_fast(x - max);
    }
    (max, sum_lanes(out))
}

/// Σ v in eight interleaved partial sums (which vectorise, unlike one running sum).
pub fn sum_lanes(v: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += x;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// In-place numerically stable softmax.
pub fn softmax(v: &mut [f32]) {
    let max = v.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in v.iter_mut() {
        *x *= inv;
    }
}

/// ln Σ exp(v), stable.
pub fn log_sum_exp(v: &[f32]) -> f32 {
    let max = v.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    max + v.iter().map(|&x| (x - max).exp()).sum::<f32>().ln()
}

/// `log_sum_exp` through the vectorisable `exp_fast`: for per-token use over a whole
/// vocabulary, where a software `expf` (wasm) would cost a tenth of a decode step.
pub fn log_sum_exp_fast(v: &[f32]) -> f32 {
    let max = v.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    max + v.iter().map(|&x| exp_fast(x - max)).sum::<f32>().ln()
}

#[cfg(test)]
mod tests {
    use super::exp_fast;

    #[test]
    fn exp_fast_is_within_two_ulp_of_exp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (want, got) = ((x as f64).exp(), exp_fast(x) as f64);
            worst = worst.max(((got - want) / want).abs());
            x += 0.000_731;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert_eq!(exp_fast(0.0), 1.0);
    }
}
