//! Causal depthwise 1-D convolution over time (SPEC: K−1 zeros of left padding; tap K−1
//! multiplies the current step): `out[t,c] = b[c] + Σ_j w[c,j]·x[t−(K−1)+j, c]`.

/// Shapes of one convolution call: `batch` sequences of `t` steps with `c` channels read from
/// rows of stride `x_stride` (x may be a column block of a wider matrix).
#[derive(Clone, Copy, Debug)]
pub struct ConvDims {
    pub batch: usize,
    pub t: usize,
    pub c: usize,
    pub width: usize,
    pub x_stride: usize,
}

/// out (B·T, C) from x (B·T rows of stride `x_stride`, first C columns), w (C, K), b (C).
/// `init`, when given, is each sequence's tail of the K−1 inputs before t = 0 ((B, K−1, C),
/// oldest first) — a continuation of earlier decoding; otherwise they are zero.
pub fn conv_forward(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], init: Option<&[f32]>, d: ConvDims) {
    let ConvDims {
        batch,
        t,
        c,
        width,
        x_stride,
    } = d;
    for bi in 0..batch {
        for ti in 0..t {
            let o = &mut out[(bi * t + ti) * c..(bi * t + ti + 1) * c];
            o.copy_from_slice(&b[..c]);
            for j in 0..width {
                // Input step for tap j; taps before the sequence start read the initial tail
                // (row ti + j of it) or the zero padding.
                let xr = match ((ti + j).checked_sub(width - 1), init) {
                    (Some(src_t), _) => &x[(bi * t + src_t) * x_stride..][..c],
                    (None, Some(tail)) => &tail[(bi * (width - 1) + ti + j) * c..][..c],
                    (None, None) => continue,
                };
                for ch in 0..c {
                    o[ch] += w[ch * width + j] * xr[ch];
                }
            }
        }
    }
}

/// dx (strided like x) += Σ taps; dw (C, K) += Σ_t dout·x; db (C) += Σ_t dout.
pub fn conv_backward(dx: &mut [f32], dw: &mut [f32], db: &mut [f32], dout: &[f32], x: &[f32], w: &[f32], d: ConvDims) {
    let ConvDims {
        batch,
        t,
        c,
        width,
        x_stride,
    } = d;
    for bi in 0..batch {
        for ti in 0..t {
            let g = &dout[(bi * t + ti) * c..(bi * t + ti + 1) * c];
            for ch in 0..c {
                db[ch] += g[ch];
            }
            for j in 0..width {
                let Some(src_t) = (ti + j).checked_sub(width - 1) else {
                    continue;
                };
                let row = (bi * t + src_t) * x_stride;
                for ch in 0..c {
                    dw[ch * width + j] += g[ch] * x[row + ch];
                    dx[row + ch] += g[ch] * w[ch * width + j];
                }
            }
        }
    }
}

/// One decode step: `tail` holds the previous K−1 inputs (oldest first, C each) and is shifted
/// to include `x_t` afterwards.
pub fn conv_step(out: &mut [f32], x_t: &[f32], tail: &mut [f32], w: &[f32], b: &[f32], c: usize, width: usize) {
    for ch in 0..c {
        let mut acc = b[ch] + w[ch * width + width - 1] * x_t[ch];
        for j in 0..width - 1 {
            acc += w[ch * width + j] * tail[j * c + ch];
        }
        out[ch] = acc;
    }
    if width > 1 {
        tail.copy_within(c.., 0);
        tail[(width - 2) * c..].copy_from_slice(&x_t[..c]);
    }
}

/// The decode tail after a prefill of sequence `bi`: its last K−1 inputs. When the prefill
/// was shorter than K−1, the older entries come from the tail it started from (`tail`'s own
/// content), shifted.
pub fn conv_tail(tail: &mut [f32], x: &[f32], bi: usize, d: ConvDims) {
    let ConvDims {
        t, c, width, x_stride, ..
    } = d;
    let keep = (width - 1).saturating_sub(t); // old tail rows that survive
    tail.copy_within((width - 1 - keep) * c..(width - 1) * c, 0);
    for j in keep..width - 1 {
        let src_t = t + j - (width - 1);
        tail[j * c..(j + 1) * c].copy_from_slice(&x[(bi * t + src_t) * x_stride..][..c]);
    }
}
