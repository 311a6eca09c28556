//! q3 and q2 matrices: 3- and 2-bit codes in blocks of 32 values along a row, one f16 scale
//! per block and, for q2, one f16 minimum.
//!
//! Arithmetic — GGUF's block formats (ggml `ggml-quants.c`, the GGUF file-format description):
//! q3 is symmetric like Q4_0 and Q3_K, value = (code − 4) · scale with code 0..8; q2 is affine
//! like Q4_1 and Q2_K, value = code · scale + min with code 0..4.
//!
//! Bits — Q2_K's and Q3_K's arrangement: 2-bit codes four to a byte, where byte i of a block
//! holds values i, i + S, i + 2S and i + 3S (S = the block's code bytes, 8 for a whole block)
//! at bits 0, 2, 4, 6; q3's third bit lives in a mask after the codes (Q3_K's `hmask`), byte i
//! holding bit 0 of values i, i + H, … (H = ⌈n/8⌉ mask bytes). So each shift of a whole block
//! gives eight consecutive values, which the kernels multiply with a contiguous slice of x.
//! A row's last block may be shorter (input widths that are not multiples of 32); its S and H
//! shrink with it, so a row takes ⌈cols/4⌉ (+ ⌈cols/8⌉ for q3) bytes.
//!
//! Deviation from the k-quants: they group sixteen 16-value blocks into 256-value super-blocks
//! whose 4- or 6-bit block scales share one f16 (Q2_K 2.625, Q3_K 3.4375 bits per weight). The
//! shipped models' rows are 32 and 128 values wide, so a super-block would hold one row's one
//! to four blocks and its extra scale would cost more than the 4-bit block scales save. Blocks
//! of 32 with f16 scales cost 3.5 (q3) and 3.0 (q2) bits per weight on any row width.

use half::f16;

use crate::precision::{groups_per_row, Precision, GROUP};

/// Code bytes and mask bytes of a block of `n` values in `p` (q3 or q2).
fn block_parts(p: Precision, n: usize) -> (usize, usize) {
    let mask = if p == Precision::Q3 { n.div_ceil(8) } else { 0 };
    (n.div_ceil(4), mask)
}

/// Bytes of `n` values in `p`, codes and mask: a block of n, and equally a row of n (its whole
/// blocks and its short last one add up to the same ⌈n/4⌉ + ⌈n/8⌉).
pub fn packed_bytes(p: Precision, n: usize) -> usize {
    let (codes, mask) = block_parts(p, n);
    codes + mask
}

/// Bytes of a whole (32-value) block in `p`: 12 for q3, 8 for q2.
pub fn block_bytes(p: Precision) -> usize {
    packed_bytes(p, GROUP)
}

/// Values in block `gi` of a row of `cols`.
pub fn block_len(cols: usize, gi: usize) -> usize {
    GROUP.min(cols - gi * GROUP)
}

/// The codes of one block (`bytes` starts at the block) into `out[..n]`.
#[inline(always)]
pub fn decode_block(p: Precision, bytes: &[u8], n: usize, out: &mut [u8; GROUP]) {
    let (s, h) = block_parts(p, n);
    for (j, o) in out[..n].iter_mut().enumerate() {
        let mut code = (bytes[j % s] >> (2 * (j / s))) & 3;
        if let Some(bit) = j.checked_div(h) {
            code |= ((bytes[s + j % h] >> bit) & 1) << 2;
        }
        *o = code;
    }
}

fn encode_block(p: Precision, codes: &[u8], out: &mut [u8]) {
    let n = codes.len();
    let (s, h) = block_parts(p, n);
    out[..s + h].fill(0);
    for (j, &c) in codes.iter().enumerate() {
        out[j % s] |= (c & 3) << (2 * (j / s));
        if let Some(bit) = j.checked_div(h) {
            out[s + j % h] |= (c >> 2) << bit;
        }
    }
}

/// The value of `code` in a block of scale `s` (and minimum `m`, q2).
#[inline(always)]
pub fn value(p: Precision, code: u8, s: f32, m: f32) -> f32 {
    match p {
        Precision::Q3 => (code as f32 - 4.0) * s,
        _ => code as f32 * s + m,
    }
}

/// Row `r` of a q3 / q2 matrix of `out.len()` columns as f32, from the whole matrix's codes,
/// scales and (q2) minimums.
pub fn decode_row(p: Precision, q: &[u8], scale: &[f16], min: &[f16], r: usize, out: &mut [f32]) {
    let cols = out.len();
    let (g, bpr) = (groups_per_row(cols), packed_bytes(p, cols));
    let bytes = &q[r * bpr..(r + 1) * bpr];
    let mut codes = [0u8; GROUP];
    for gi in 0..g {
        let n = block_len(cols, gi);
        decode_block(p, &bytes[gi * block_bytes(p)..], n, &mut codes);
        let m = min.get(r * g + gi).map_or(0.0, |m| m.to_f32());
        let s = scale[r * g + gi].to_f32();
        for (o, &c) in out[gi * GROUP..][..n].iter_mut().zip(&codes) {
            *o = value(p, c, s, m);
        }
    }
}

/// A quantized q3 / q2 matrix: packed codes, f16 scales (rows × groups) and, q2 only, f16
/// minimums (rows × groups; empty for q3).
pub struct LowBits {
    pub q: Vec<u8>,
    pub scale: Vec<f16>,
    pub min: Vec<f16>,
}

/// Quantizes `values` (rows × cols) to q3 or q2: per block, a few candidate ranges (clipping
/// the extremes a little usually buys finer steps for the rest, as in `quantize_q4`), each
/// refined by one least-squares fit of the scale (and minimum) to its codes; the candidate of
/// lowest squared error wins.
pub fn quantize(p: Precision, values: &[f32], rows: usize, cols: usize) -> LowBits {
    assert!(matches!(p, Precision::Q3 | Precision::Q2), "lowbit::quantize of {p}");
    let (g, bpr) = (groups_per_row(cols), packed_bytes(p, cols));
    let mut q = vec![0u8; rows * bpr];
    let mut scale = vec![f16::ZERO; rows * g];
    let mut min = vec![f16::ZERO; if p == Precision::Q2 { rows * g } else { 0 }];
    let mut codes = [0u8; GROUP];
    for r in 0..rows {
        for gi in 0..g {
            let src = &values[r * cols + gi * GROUP..][..block_len(cols, gi)];
            let (s, m) = if p == Precision::Q3 {
                (best_symmetric(src), f16::ZERO)
            } else {
                best_affine(src)
            };
            scale[r * g + gi] = s;
            if p == Precision::Q2 {
                min[r * g + gi] = m;
            }
            let codes = &mut codes[..src.len()];
            encode(p, src, s.to_f32(), m.to_f32(), codes);
            encode_block(p, codes, &mut q[r * bpr + gi * block_bytes(p)..]);
        }
    }
    LowBits { q, scale, min }
}

/// The nearest code of every value for scale `s` (and minimum `m`).
fn encode(p: Precision, src: &[f32], s: f32, m: f32, codes: &mut [u8]) {
    for (c, &v) in codes.iter_mut().zip(src) {
        *c = match (p, s == 0.0) {
            (Precision::Q3, true) => 4,
            (Precision::Q3, false) => (v / s + 4.5).floor().clamp(0.0, 7.0) as u8,
            (_, true) => 0,
            (_, false) => ((v - m) / s).round().clamp(0.0, 3.0) as u8,
        };
    }
}

fn error(p: Precision, src: &[f32], s: f32, m: f32) -> f32 {
    let mut codes = [0u8; GROUP];
    let codes = &mut codes[..src.len()];
    encode(p, src, s, m, codes);
    src.iter()
        .zip(codes.iter())
        .map(|(&v, &c)| (v - value(p, c, s, m)).powi(2))
        .sum()
}

const SHRINK: [f32; 7] = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7];

/// q3: the extreme value lands on code 0 (scale = extreme / −4, Q4_0's trick, so either sign
/// gets the wider half of the range) or on code 7 (scale = extreme / 3), shrunk a little.
fn best_symmetric(src: &[f32]) -> f16 {
    let extreme = src.iter().fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let mut best = (f32::INFINITY, f16::ZERO);
    let mut consider = |s: f32| {
        let s = f16::from_f32(s);
        let err = error(Precision::Q3, src, s.to_f32(), 0.0);
        if err < best.0 {
            best = (err, s);
        }
    };
    for shrink in SHRINK {
        for divisor in [-4.0, 3.0] {
            let s = extreme / divisor * shrink;
            consider(s);
            // Least squares on these codes: s = Σ v·k / Σ k², k = code − 4.
            let mut codes = [0u8; GROUP];
            encode(
                Precision::Q3,
                src,
                f16::from_f32(s).to_f32(),
                0.0,
                &mut codes[..src.len()],
            );
            let (mut vk, mut kk) = (0.0f32, 0.0f32);
            for (&v, &c) in src.iter().zip(&codes) {
                let k = c as f32 - 4.0;
                vk += v * k;
                kk += k * k;
            }
            if kk > 0.0 {
                consider(vk / kk);
            }
        }
    }
    best.1
}

/// q2: the block's [min, max] range, each end pulled in by 0–15 % of it, spread over the four
/// codes; each candidate then refitted by least squares of value ≈ code · s + m.
fn best_affine(src: &[f32]) -> (f16, f16) {
    let lo = src.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = src.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let range = hi - lo;
    if range == 0.0 {
        return (f16::ZERO, f16::from_f32(lo));
    }
    let mut best = (f32::INFINITY, f16::ZERO, f16::ZERO);
    let mut consider = |s: f32, m: f32| {
        let (s, m) = (f16::from_f32(s), f16::from_f32(m));
        let err = error(Precision::Q2, src, s.to_f32(), m.to_f32());
        if err < best.0 {
            best = (err, s, m);
        }
    };
    for a in [0.0, 0.05, 0.1, 0.15] {
        for b in [0.0, 0.05, 0.1, 0.15] {
            let (m, s) = (lo + a * range, (range * (1.0 - a - b)) / 3.0);
            consider(s, m);
            let mut codes = [0u8; GROUP];
            encode(
                Precision::Q2,
                src,
                f16::from_f32(s).to_f32(),
                f16::from_f32(m).to_f32(),
                &mut codes[..src.len()],
            );
            if let Some((s, m)) = least_squares(src, &codes[..src.len()]) {
                consider(s, m);
            }
        }
    }
    (best.1, best.2)
}

/// The (s, m) minimising Σ (v − (c·s + m))², if the codes are not all equal.
fn least_squares(src: &[f32], codes: &[u8]) -> Option<(f32, f32)> {
    let n = src.len() as f32;
    let (mut sc, mut sv, mut scc, mut scv) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
    for (&v, &c) in src.iter().zip(codes) {
        let c = c as f32;
        sc += c;
        sv += v;
        scc += c * c;
        scv += c * v;
    }
    let det = n * scc - sc * sc;
    if det <= 0.0 {
        return None;
    }
    let s = (n * scv - sc * sv) / det;
    Some((s, (sv - s * sc) / n))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout: byte i of a whole block holds values i, i+8, i+16, i+24 (shifts 0, 2, 4, 6)
    /// and q3's mask byte i holds the third bit of values i, i+4, …, i+28; a short block
    /// packs by its own length. Every code survives encode → decode.
    #[test]
    fn blocks_pack_as_documented_and_round_trip() {
        let codes: Vec<u8> = (0..GROUP as u8).map(|j| (j * 5 + 3) % 8).collect();
        let mut bytes = [0u8; 12];
        encode_block(Precision::Q3, &codes, &mut bytes);
        for j in 0..GROUP {
            assert_eq!((bytes[j % 8] >> (2 * (j / 8))) & 3, codes[j] & 3, "low bits of {j}");
            assert_eq!((bytes[8 + j % 4] >> (j / 4)) & 1, codes[j] >> 2, "mask bit of {j}");
        }
        for p in [Precision::Q3, Precision::Q2] {
            for n in [1, 3, 7, 9, 17, 31, 32] {
                let want: Vec<u8> = codes[..n]
                    .iter()
                    .map(|c| if p == Precision::Q2 { c & 3 } else { *c })
                    .collect();
                let mut bytes = [0u8; 12];
                encode_block(p, &want, &mut bytes);
                let mut back = [0u8; GROUP];
                decode_block(p, &bytes, n, &mut back);
                assert_eq!(&back[..n], &want[..], "{p} n={n}");
            }
        }
    }
}
