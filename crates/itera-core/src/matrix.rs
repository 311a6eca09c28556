//! A weight matrix (out, in) stored in one of the precisions, with its quantizer, dequantizer
//! and row access. Kernels that multiply by it live in `kernels`; q3 / q2 blocks in `lowbit`.

use half::f16;

use crate::lowbit;
use crate::precision::{groups_per_row, q4_bytes_per_row, Precision, GROUP};

/// Row-major (rows = out, cols = in) storage. Quantized variants keep the file's layout so a
/// model loads without a whole-model dequantize.
#[derive(Clone, Debug, PartialEq)]
pub enum MatrixData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    /// `q` (rows, cols) I8; `scale` (rows, groups) — value = q · scale.
    Q8 {
        q: Vec<i8>,
        scale: Vec<f16>,
    },
    /// `q` (rows, ceil(cols/2)) two nibbles per byte, low first — value = (nibble − 8) · scale.
    Q4 {
        q: Vec<u8>,
        scale: Vec<f16>,
    },
    /// `q` (rows, ⌈cols/4⌉ + ⌈cols/8⌉) blocks of 2-bit codes and their third-bit mask
    /// (`lowbit`); `scale` (rows, groups) — value = (code − 4) · scale.
    Q3 {
        q: Vec<u8>,
        scale: Vec<f16>,
    },
    /// `q` (rows, ⌈cols/4⌉) blocks of 2-bit codes (`lowbit`); `scale`, `min` (rows, groups) —
    /// value = code · scale + min.
    Q2 {
        q: Vec<u8>,
        scale: Vec<f16>,
        min: Vec<f16>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: MatrixData,
}

impl Matrix {
    pub fn from_f32(rows: usize, cols: usize, values: Vec<f32>) -> Matrix {
        assert_eq!(values.len(), rows * cols, "matrix data length");
        Matrix {
            rows,
            cols,
            data: MatrixData::F32(values),
        }
    }

    pub fn precision(&self) -> Precision {
        match self.data {
            MatrixData::F32(_) => Precision::F32,
            MatrixData::F16(_) => Precision::F16,
            MatrixData::Q8 { .. } => Precision::Q8,
            MatrixData::Q4 { .. } => Precision::Q4,
            MatrixData::Q3 { .. } => Precision::Q3,
            MatrixData::Q2 { .. } => Precision::Q2,
        }
    }

    /// The f32 values when stored as f32 (training works on these directly).
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            MatrixData::F32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        match &mut self.data {
            MatrixData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Bytes this matrix occupies in memory (and, up to headers, on disk).
    pub fn size_bytes(&self) -> usize {
        match &self.data {
            MatrixData::F32(v) => v.len() * 4,
            MatrixData::F16(v) => v.len() * 2,
            MatrixData::Q8 { q, scale } => q.len() + scale.len() * 2,
            MatrixData::Q4 { q, scale } | MatrixData::Q3 { q, scale } => q.len() + scale.len() * 2,
            MatrixData::Q2 { q, scale, min } => q.len() + (scale.len() + min.len()) * 2,
        }
    }

    /// Converts to another precision. Quantized sources are dequantized first, so converting
    /// q4 → q8 does not invent precision but does not lose more either.
    pub fn to_precision(&self, precision: Precision) -> Matrix {
        if precision == self.precision() {
            return self.clone();
        }
        let values = self.dequantize();
        let (rows, cols) = (self.rows, self.cols);
        let data = match precision {
            Precision::F32 => MatrixData::F32(values),
            Precision::F16 => MatrixData::F16(values.iter().map(|&v| f16::from_f32(v)).collect()),
            Precision::Q8 => quantize_q8(&values, rows, cols),
            Precision::Q4 => quantize_q4(&values, rows, cols),
            Precision::Q3 => {
                let lowbit::LowBits { q, scale, .. } = lowbit::quantize(precision, &values, rows, cols);
                MatrixData::Q3 { q, scale }
            }
            Precision::Q2 => {
                let lowbit::LowBits { q, scale, min } = lowbit::quantize(precision, &values, rows, cols);
                MatrixData::Q2 { q, scale, min }
            }
        };
        Matrix { rows, cols, data }
    }

    /// All values as f32, (rows, cols) row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        self.dequantize_rows(0, self.rows, &mut out);
        out
    }

    /// Dequantizes rows `r0..r1` into `out` ((r1 − r0) × cols).
    pub fn dequantize_rows(&self, r0: usize, r1: usize, out: &mut [f32]) {
        let cols = self.cols;
        for (r, dst) in (r0..r1).zip(out.chunks_exact_mut(cols)) {
            self.row_into(r, dst);
        }
    }

    /// Row `r` as f32 (the embedding lookup).
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let cols = self.cols;
        let out = &mut out[..cols];
        match &self.data {
            MatrixData::F32(v) => out.copy_from_slice(&v[r * cols..(r + 1) * cols]),
            MatrixData::F16(v) => {
                use half::slice::HalfFloatSliceExt;
                v[r * cols..(r + 1) * cols].convert_to_f32_slice(out);
            }
            MatrixData::Q8 { q, scale } => {
                let g = groups_per_row(cols);
                let q = &q[r * cols..(r + 1) * cols];
                for (j, o) in out.iter_mut().enumerate() {
                    *o = q[j] as f32 * scale[r * g + j / GROUP].to_f32();
                }
            }
            MatrixData::Q4 { q, scale } => {
                let (g, bpr) = (groups_per_row(cols), q4_bytes_per_row(cols));
                let q = &q[r * bpr..(r + 1) * bpr];
                for (j, o) in out.iter_mut().enumerate() {
                    let byte = q[j / 2];
                    let nibble = if j % 2 == 0 { byte & 0x0f } else { byte >> 4 };
                    *o = (nibble as f32 - 8.0) * scale[r * g + j / GROUP].to_f32();
                }
            }
            MatrixData::Q3 { q, scale } => lowbit::decode_row(Precision::Q3, q, scale, &[], r, out),
            MatrixData::Q2 { q, scale, min } => lowbit::decode_row(Precision::Q2, q, scale, min, r, out),
        }
    }
}

/// Symmetric absmax quantization to int8 per group of 32 along the row (GGUF Q8_0 arithmetic:
/// scale = absmax / 127, q = round(x / scale)). The f16-rounded scale is used for rounding so
/// the stored pair reproduces the value as closely as the format allows.
pub fn quantize_q8(values: &[f32], rows: usize, cols: usize) -> MatrixData {
    let g = groups_per_row(cols);
    let mut q = vec![0i8; rows * cols];
    let mut scale = vec![f16::ZERO; rows * g];
    for r in 0..rows {
        for gi in 0..g {
            let (c0, c1) = (gi * GROUP, ((gi + 1) * GROUP).min(cols));
            let src = &values[r * cols + c0..r * cols + c1];
            let amax = src.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let s = f16::from_f32(amax / 127.0);
            scale[r * g + gi] = s;
            let s = s.to_f32();
            let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
            for (dst, &v) in q[r * cols + c0..r * cols + c1].iter_mut().zip(src) {
                *dst = (v * inv).round().clamp(-127.0, 127.0) as i8;
            }
        }
    }
    MatrixData::Q8 { q, scale }
}

/// 4-bit quantization per group of 32 (GGUF Q4_0 arithmetic: value = (q − 8)·scale, q in 0..16).
///
/// Q4_0 takes scale = m / −8 where m is the signed value of largest magnitude, so that value
/// lands exactly on q = 0. We keep that arithmetic but pick, per group, the scale among a few
/// shrunk candidates that minimises the squared error: clipping the single extreme value
/// slightly usually buys finer steps for the other 31. Same format, lower error.
pub fn quantize_q4(values: &[f32], rows: usize, cols: usize) -> MatrixData {
    let (g, bpr) = (groups_per_row(cols), q4_bytes_per_row(cols));
    let mut q = vec![0x88u8; rows * bpr];
    let mut scale = vec![f16::ZERO; rows * g];
    let mut codes = [0u8; GROUP];
    for r in 0..rows {
        for gi in 0..g {
            let (c0, c1) = (gi * GROUP, ((gi + 1) * GROUP).min(cols));
            let src = &values[r * cols + c0..r * cols + c1];
            let extreme = src.iter().fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            let mut best = (f32::INFINITY, f16::ZERO);
            for shrink in [1.0f32, 0.96, 0.92, 0.88, 0.84, 0.80, 0.76] {
                let s = f16::from_f32(extreme / -8.0 * shrink);
                let err = q4_group_error(src, s.to_f32());
                if err < best.0 {
                    best = (err, s);
                }
            }
            let s = best.1;
            scale[r * g + gi] = s;
            for (c, &v) in codes.iter_mut().zip(src) {
                *c = q4_code(v, s.to_f32());
            }
            for (j, &code) in codes[..c1 - c0].iter().enumerate() {
                let col = c0 + j;
                let byte = &mut q[r * bpr + col / 2];
                *byte = if col % 2 == 0 {
                    (*byte & 0xf0) | code
                } else {
                    (*byte & 0x0f) | (code << 4)
                };
            }
        }
    }
    MatrixData::Q4 { q, scale }
}

fn q4_code(v: f32, s: f32) -> u8 {
    if s == 0.0 {
        return 8;
    }
    (v / s + 8.5).floor().clamp(0.0, 15.0) as u8
}

fn q4_group_error(src: &[f32], s: f32) -> f32 {
    src.iter()
        .map(|&v| (v - (q4_code(v, s) as f32 - 8.0) * s).powi(2))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Pcg32;

    fn random(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut rng = Pcg32::new(seed);
        (0..rows * cols).map(|_| rng.normal() * 0.1).collect()
    }

    /// Worst-case error of each format relative to the group's absmax (q2: its range), on odd
    /// shapes (cols not a multiple of 32, odd for q4): q8 half a step of absmax/127; q4 at
    /// most the clipping of the extreme value (≤ 24% of absmax with the smallest candidate
    /// scale) and an RMS error under a tenth of absmax; q3 / q2 as their constants say; f16
    /// 2^-11 relative.
    /// q3's worst error as a fraction of the block's absmax: half a step (absmax/8 at the
    /// widest candidate scale) or the clipping of the extreme at the narrowest (30 %).
    const Q3_MAX_ERROR: f32 = 0.3;
    /// q2's worst error as a fraction of the block's range: clipping of up to 15 % at either end
    /// or half a step (1/6) of the range; the test adds the f16 rounding of the minimum (a
    /// one-value block is its minimum).
    const Q2_MAX_ERROR: f32 = 0.25;

    #[test]
    fn round_trip_error_is_within_format_bounds() {
        for (rows, cols) in [(3, 45), (5, 32), (2, 7), (4, 65)] {
            let v = random(rows, cols, rows as u64 * 100 + cols as u64);
            for p in [
                Precision::F16,
                Precision::Q8,
                Precision::Q4,
                Precision::Q3,
                Precision::Q2,
            ] {
                let m = Matrix::from_f32(rows, cols, v.clone()).to_precision(p);
                let back = m.dequantize();
                for r in 0..rows {
                    for gi in 0..groups_per_row(cols) {
                        let range = r * cols + gi * GROUP..r * cols + ((gi + 1) * GROUP).min(cols);
                        let amax = v[range.clone()].iter().fold(0.0f32, |a, x| a.max(x.abs()));
                        let lo = v[range.clone()].iter().copied().fold(f32::INFINITY, f32::min);
                        let hi = v[range.clone()].iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        for i in range {
                            let err = (back[i] - v[i]).abs();
                            let bound = match p {
                                Precision::F16 => v[i].abs() * 4.9e-4 + 1e-7,
                                Precision::Q8 => amax / 127.0 * 0.5 * 1.002 + 1e-7,
                                Precision::Q4 => amax * 0.25,
                                Precision::Q3 => amax * Q3_MAX_ERROR,
                                Precision::Q2 => (hi - lo) * Q2_MAX_ERROR + amax * 4.9e-4,
                                Precision::F32 => 0.0,
                            };
                            assert!(
                                err <= bound,
                                "{p} ({rows}x{cols}) [{i}]: {} vs {} err {err} > {bound}",
                                back[i],
                                v[i]
                            );
                        }
                        let range = r * cols + gi * GROUP..r * cols + ((gi + 1) * GROUP).min(cols);
                        let n = range.len() as f32;
                        let rms = (range.map(|i| (back[i] - v[i]).powi(2)).sum::<f32>() / n).sqrt();
                        let rms_bound = match p {
                            Precision::Q4 => amax / 10.0,
                            Precision::Q3 => amax / 5.0,
                            Precision::Q2 => (hi - lo) / 6.0 + amax * 4.9e-4,
                            _ => f32::INFINITY,
                        };
                        assert!(
                            rms <= rms_bound,
                            "{p} rms {rms} > {rms_bound} ({rows}x{cols} group {gi})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn q4_layout_is_low_nibble_first() {
        // Values chosen so the scale is exactly 1: extreme −8 → code 0.
        let v = vec![-8.0, 7.0, 1.0];
        let m = Matrix::from_f32(1, 3, v.clone()).to_precision(Precision::Q4);
        let MatrixData::Q4 { q, scale } = &m.data else {
            panic!("not q4")
        };
        assert_eq!(scale[0].to_f32(), 1.0);
        assert_eq!(q, &vec![0x0f << 4, 0x80 | 9]);
        assert_eq!(m.dequantize(), v);
    }

    #[test]
    fn zero_groups_quantize_to_zero() {
        for p in [Precision::Q8, Precision::Q4, Precision::Q3, Precision::Q2] {
            let m = Matrix::from_f32(2, 40, vec![0.0; 80]).to_precision(p);
            assert!(m.dequantize().iter().all(|&x| x == 0.0));
        }
    }
}
