//! CPU kernels for the hot paths: dot products, matrix × vector for every precision, and
//! matrix × matrix (`Y = X·Wᵀ`) through the `matrixmultiply` GEMM.
//!
//! Each kernel body is written once as plain, vectorisable Rust (`#[inline(always)]`). On
//! x86-64 it is additionally compiled inside a `#[target_feature(enable = "avx2,fma")]`
//! wrapper chosen at run time, so the same source becomes AVX2 code where the CPU has it;
//! on wasm32 the portable body is vectorised by `+simd128`. The quantized and f16 matvecs,
//! where the autovectoriser's choices were poor (it vectorised across groups), have explicit
//! AVX2 kernels in `x86`, and every matvec has an explicit SIMD128 kernel in `wasm` (bit for
//! bit the portable body but for q8), all tested against these portable bodies.

use half::f16;

use crate::matrix::{Matrix, MatrixData};

mod lowbit;
pub use lowbit::{matvec_q2, matvec_q2_portable, matvec_q3, matvec_q3_portable};
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod wasm;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;
use crate::precision::{groups_per_row, q4_bytes_per_row, GROUP};

/// Lanes of independent accumulators: enough to fill two AVX2 registers and hide FMA latency.
const LANES: usize = 16;

/// Sums lanes pairwise (a tree of vector adds). `iter().sum()` would be an ordered chain of
/// scalar adds with shuffles, which cost as much as the row's multiply-adds on short rows.
#[inline(always)]
pub(crate) fn reduce<const N: usize>(mut acc: [f32; N]) -> f32 {
    let mut width = N / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0]
}

/// IEEE half → f32 from the bits, branch-free so that loops over it vectorise (the `half`
/// crate's scalar conversion checks the CPU on every call). Exact for every value.
#[inline(always)]
pub fn f16_to_f32(h: f16) -> f32 {
    let bits = h.to_bits() as u32;
    let sign = (bits & 0x8000) << 16;
    let em = bits & 0x7fff;
    let normal = f32::from_bits((em << 13) + (112 << 23)); // rebias exponent 15 → 127
    let subnormal = em as f32 * (1.0 / 16_777_216.0); // mantissa · 2^-24
    let inf_nan = f32::from_bits((em << 13) | 0x7f80_0000);
    let v = if em < 0x0400 {
        subnormal
    } else if em >= 0x7c00 {
        inf_nan
    } else {
        normal
    };
    f32::from_bits(v.to_bits() | sign)
}

/// The kernels the matrix products run on this machine, in words (benchmarks report it).
pub fn kernel_set() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if x86::available() {
            return "x86-64 AVX2 + FMA + F16C (explicit kernels)";
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return "x86-64 AVX2 + FMA (portable bodies)";
        }
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return "wasm SIMD128";
    #[allow(unreachable_code)]
    "portable"
}

/// a·b + c, fused where the hardware has an FMA instruction. wasm32 has none, and there
/// `mul_add` is a software routine ~20× slower than the whole matvec around it, so the wasm
/// build multiplies and adds separately (results differ from native in the last bit).
#[inline(always)]
fn madd(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_arch = "wasm32")]
    return a * b + c;
    #[cfg(not(target_arch = "wasm32"))]
    return a.mul_add(b, c);
}

#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..LANES {
            acc[i] = madd(x[i], y[i], acc[i]);
        }
    }
    let mut tail = 0.0;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    reduce(acc) + tail
}

#[inline(always)]
fn matvec_f32_body(w: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
    for (yr, row) in y.iter_mut().zip(w.chunks_exact(cols)) {
        *yr = dot_body(row, x);
    }
}

/// q8 rows: lanes accumulate `scale · q · x` across every group of the row and are reduced
/// once per row, so the only per-group work is one scalar scale conversion and broadcast.
#[inline(always)]
fn matvec_q8_body(q: &[i8], scale: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
    let g = groups_per_row(cols);
    let full = cols / GROUP;
    for (r, yr) in y.iter_mut().enumerate() {
        let row = &q[r * cols..(r + 1) * cols];
        let scales = &scale[r * g..(r + 1) * g];
        let mut acc = [0.0f32; GROUP];
        for gi in 0..full {
            let (qg, xg, s) = (
                &row[gi * GROUP..][..GROUP],
                &x[gi * GROUP..][..GROUP],
                f16_to_f32(scales[gi]),
            );
            for i in 0..GROUP {
                acc[i] = madd(s, qg[i] as f32 * xg[i], acc[i]);
            }
        }
        let mut sum = reduce(acc);
        if full < g {
            let s = f16_to_f32(scales[full]);
            sum += s * row[full * GROUP..]
                .iter()
                .zip(&x[full * GROUP..])
                .map(|(q, x)| *q as f32 * x)
                .sum::<f32>();
        }
        *yr = sum;
    }
}

/// q4 rows against `x` split into its even and odd elements (`xe`, `xo`), so that the low
/// nibbles (even columns) and high nibbles (odd columns) each meet a contiguous vector.
/// Lanes accumulate across groups as in q8.
#[inline(always)]
fn matvec_q4_body(q: &[u8], scale: &[f16], cols: usize, xe: &[f32], xo: &[f32], y: &mut [f32]) {
    const HALF: usize = GROUP / 2;
    let (g, bpr) = (groups_per_row(cols), q4_bytes_per_row(cols));
    let full = cols / GROUP;
    for (r, yr) in y.iter_mut().enumerate() {
        let row = &q[r * bpr..(r + 1) * bpr];
        let scales = &scale[r * g..(r + 1) * g];
        let mut acc = [0.0f32; HALF];
        for gi in 0..full {
            let (bytes, e, o) = (
                &row[gi * HALF..][..HALF],
                &xe[gi * HALF..][..HALF],
                &xo[gi * HALF..][..HALF],
            );
            let s = f16_to_f32(scales[gi]);
            for i in 0..HALF {
                let lo = ((bytes[i] & 0x0f) as i32 - 8) as f32;
                let hi = ((bytes[i] >> 4) as i32 - 8) as f32;
                acc[i] = madd(s, madd(lo, e[i], hi * o[i]), acc[i]);
            }
        }
        let mut sum = reduce(acc);
        if full < g {
            sum += f16_to_f32(scales[full]) * q4_partial_group(row, full * HALF, xe, xo);
        }
        *yr = sum;
    }
}

/// Σ value·x over a q4 row's partial last group, whose bytes start at `start`. `xo` is one
/// shorter than `xe` when cols is odd; that byte's high nibble is padding (8 = 0.0).
#[inline(always)]
fn q4_partial_group(row: &[u8], start: usize, xe: &[f32], xo: &[f32]) -> f32 {
    let mut tail = 0.0;
    for (j, &b) in row.iter().enumerate().skip(start) {
        tail += ((b & 0x0f) as f32 - 8.0) * xe[j];
        if j < xo.len() {
            tail += ((b >> 4) as f32 - 8.0) * xo[j];
        }
    }
    tail
}

/// f16 rows, portable: converted and multiplied in one pass (the conversion vectorises).
#[inline(always)]
fn matvec_f16_body(w: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
    for (yr, row) in y.iter_mut().zip(w.chunks_exact(cols)) {
        let mut acc = [0.0f32; LANES];
        let mut cw = row.chunks_exact(LANES);
        let mut cx = x.chunks_exact(LANES);
        for (ww, xx) in (&mut cw).zip(&mut cx) {
            for i in 0..LANES {
                acc[i] = madd(f16_to_f32(ww[i]), xx[i], acc[i]);
            }
        }
        let tail: f32 = cw
            .remainder()
            .iter()
            .zip(cx.remainder())
            .map(|(w, x)| f16_to_f32(*w) * x)
            .sum();
        *yr = reduce(acc) + tail;
    }
}

/// `y = W·x` for an f32 (rows, cols) matrix.
pub fn matvec_f32(w: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return wasm::matvec_f32(w, cols, x, y);
    #[allow(unreachable_code)]
    matvec_f32_portable(w, cols, x, y)
}

/// `y = W·x` for an f16 matrix.
pub fn matvec_f16(w: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
    assert!(w.len() >= y.len() * cols && x.len() >= cols, "matvec_f16 shapes");
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the CPU has the features; lengths checked above.
        return unsafe { x86::matvec_f16(w, cols, x, y) };
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return wasm::matvec_f16(w, cols, x, y);
    #[allow(unreachable_code)]
    matvec_f16_portable(w, cols, x, y)
}

/// `y = W·x` for a q8 matrix, reading the int8 data and f16 scales directly.
pub fn matvec_q8(q: &[i8], scale: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
    assert!(
        q.len() >= y.len() * cols && scale.len() >= y.len() * groups_per_row(cols) && x.len() >= cols,
        "matvec_q8 shapes"
    );
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the CPU has the features; lengths checked above.
        return unsafe { x86::matvec_q8(q, scale, cols, x, y) };
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return wasm::matvec_q8(q, scale, cols, x, y);
    #[allow(unreachable_code)]
    matvec_q8_portable(q, scale, cols, x, y)
}

/// `y = W·x` for a q4 matrix; `xe`/`xo` are the even/odd elements of x.
pub fn matvec_q4(q: &[u8], scale: &[f16], cols: usize, xe: &[f32], xo: &[f32], y: &mut [f32]) {
    let ok = q.len() >= y.len() * q4_bytes_per_row(cols) && scale.len() >= y.len() * groups_per_row(cols);
    assert!(
        ok && xe.len() == cols.div_ceil(2) && xo.len() == cols / 2,
        "matvec_q4 shapes"
    );
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the CPU has the features; lengths checked above.
        return unsafe { x86::matvec_q4(q, scale, cols, xe, xo, y) };
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return wasm::matvec_q4(q, scale, cols, xe, xo, y);
    #[allow(unreachable_code)]
    matvec_q4_portable(q, scale, cols, xe, xo, y)
}

/// Generates a public entry point that runs `$body` through the AVX2+FMA copy when the CPU
/// supports it and through the portable copy otherwise.
macro_rules! dispatch {
    ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $body:path) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { $body($($arg),*) }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features the copy was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use dispatch;

dispatch! {
    /// f32 `y = W·x` without the wasm kernel (the reference in tests).
    pub fn matvec_f32_portable(w: &[f32], cols: usize, x: &[f32], y: &mut [f32]) => matvec_f32_body
}
dispatch! {
    /// q8 `y = W·x` without the x86 or wasm SIMD kernels (the reference in tests).
    pub fn matvec_q8_portable(q: &[i8], scale: &[f16], cols: usize, x: &[f32], y: &mut [f32]) => matvec_q8_body
}
dispatch! {
    /// q4 `y = W·x` without the x86 or wasm kernels.
    pub fn matvec_q4_portable(q: &[u8], scale: &[f16], cols: usize, xe: &[f32], xo: &[f32], y: &mut [f32]) => matvec_q4_body
}
dispatch! {
    /// `y = W·x` for an f16 matrix without F16C or the wasm kernel (other CPUs; the reference).
    pub fn matvec_f16_portable(w: &[f16], cols: usize, x: &[f32], y: &mut [f32]) => matvec_f16_body
}

impl Matrix {
    /// `y = W·x`: x has `cols` values, y gets `rows`. Reads quantized data as stored.
    pub fn matvec(&self, x: &[f32], y: &mut [f32]) {
        let (rows, cols) = (self.rows, self.cols);
        assert!(
            x.len() >= cols && y.len() >= rows,
            "matvec: x {} / y {} for {rows}x{cols}",
            x.len(),
            y.len()
        );
        let (x, y) = (&x[..cols], &mut y[..rows]);
        match &self.data {
            MatrixData::F32(w) => matvec_f32(w, cols, x, y),
            MatrixData::F16(w) => matvec_f16(w, cols, x, y),
            MatrixData::Q8 { q, scale } => matvec_q8(q, scale, cols, x, y),
            MatrixData::Q4 { q, scale } => {
                let xe: Vec<f32> = x.iter().step_by(2).copied().collect();
                let xo: Vec<f32> = x.iter().skip(1).step_by(2).copied().collect();
                matvec_q4(q, scale, cols, &xe, &xo, y)
            }
            MatrixData::Q3 { q, scale } => matvec_q3(q, scale, cols, x, y),
            MatrixData::Q2 { q, scale, min } => matvec_q2(q, scale, min, cols, x, y),
        }
    }

    /// `Y = X·Wᵀ` for X (m, cols) row-major, Y (m, rows). f32 goes straight to GEMM; the other
    /// precisions dequantize a panel of rows at a time into a small buffer (never the whole
    /// matrix) and multiply that panel.
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32]) {
        let (rows, cols) = (self.rows, self.cols);
        assert!(x.len() >= m * cols && y.len() >= m * rows, "matmul shapes");
        if let MatrixData::F32(w) = &self.data {
            gemm(m, cols, rows, 1.0, x, (cols, 1), w, (1, cols), 0.0, y, (rows, 1));
            return;
        }
        const PANEL: usize = 64;
        let mut panel = vec![0.0f32; PANEL.min(rows) * cols];
        for r0 in (0..rows).step_by(PANEL) {
            let r1 = (r0 + PANEL).min(rows);
            let n = r1 - r0;
            self.dequantize_rows(r0, r1, &mut panel[..n * cols]);
            gemm(
                m,
                cols,
                n,
                1.0,
                x,
                (cols, 1),
                &panel[..n * cols],
                (1, cols),
                0.0,
                &mut y[r0..],
                (rows, 1),
            );
        }
    }
}

/// `C = alpha·A·B + beta·C` with A (m, k), B (k, n), C (m, n) given by (row, column) strides,
/// so transposed operands need no copy. Bounds are checked before the unsafe GEMM call.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
    (rsc, csc): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |r: usize, c: usize, rs: usize, cs: usize| (r - 1) * rs + (c - 1) * cs;
    if k > 0 {
        assert!(last(m, k, rsa, csa) < a.len(), "gemm: A too short");
        assert!(last(k, n, rsb, csb) < b.len(), "gemm: B too short");
    }
    assert!(last(m, n, rsc, csc) < c.len(), "gemm: C too short");
    // SAFETY: every index the GEMM touches is below the lengths checked above; A and B are
    // shared borrows and C an exclusive one, so they cannot alias.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            csc as isize,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precision::Precision;
    use crate::rng::Pcg32;

    fn naive_matvec(w: &[f32], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
        (0..rows)
            .map(|r| (0..cols).map(|c| w[r * cols + c] as f64 * x[c] as f64).sum::<f64>() as f32)
            .collect()
    }

    /// Every precision's matvec and matmul equal the f32 product of the dequantized matrix,
    /// on shapes that are not multiples of the 16-lane or 32-group sizes.
    #[test]
    fn quantized_products_match_dequantized_f32() {
        let mut rng = Pcg32::new(3);
        for (rows, cols, m) in [(7, 45, 3), (33, 64, 5), (5, 7, 2), (17, 97, 4)] {
            let w: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
            let x: Vec<f32> = (0..m * cols).map(|_| rng.normal()).collect();
            for p in Precision::ALL {
                let mat = Matrix::from_f32(rows, cols, w.clone()).to_precision(p);
                let deq = mat.dequantize();
                let mut y = vec![0.0; m * rows];
                mat.matmul(&x, m, &mut y);
                for i in 0..m {
                    let want = naive_matvec(&deq, rows, cols, &x[i * cols..(i + 1) * cols]);
                    let mut got = vec![0.0; rows];
                    mat.matvec(&x[i * cols..(i + 1) * cols], &mut got);
                    for r in 0..rows {
                        let tol = 1e-4 + want[r].abs() * 1e-5;
                        assert!(
                            (got[r] - want[r]).abs() < tol,
                            "{p} matvec {rows}x{cols} r{r}: {} vs {}",
                            got[r],
                            want[r]
                        );
                        let gm = y[i * rows + r];
                        assert!(
                            (gm - want[r]).abs() < tol,
                            "{p} matmul {rows}x{cols} r{r}: {gm} vs {}",
                            want[r]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn f16_conversion_is_exact_for_every_half() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            let (want, got) = (h.to_f32(), f16_to_f32(h));
            assert!(
                want.to_bits() == got.to_bits() || (want.is_nan() && got.is_nan()),
                "{bits:#06x}: {want} vs {got}"
            );
        }
    }

    #[test]
    fn portable_and_x86_quantized_kernels_agree() {
        let mut rng = Pcg32::new(9);
        for (rows, cols) in [(5, 37), (3, 96), (4, 7), (2, 65), (3, 128)] {
            let w: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
            let x: Vec<f32> = (0..cols).map(|_| rng.normal()).collect();
            let xe: Vec<f32> = x.iter().step_by(2).copied().collect();
            let xo: Vec<f32> = x.iter().skip(1).step_by(2).copied().collect();
            let (mut a, mut b) = (vec![0.0; rows], vec![0.0; rows]);
            match crate::matrix::quantize_q8(&w, rows, cols) {
                MatrixData::Q8 { q, scale } => {
                    matvec_q8(&q, &scale, cols, &x, &mut a);
                    matvec_q8_portable(&q, &scale, cols, &x, &mut b);
                }
                _ => unreachable!(),
            }
            for (a, b) in a.iter().zip(&b) {
                assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "q8 {rows}x{cols}: {a} vs {b}");
            }
            match crate::matrix::quantize_q4(&w, rows, cols) {
                MatrixData::Q4 { q, scale } => {
                    matvec_q4(&q, &scale, cols, &xe, &xo, &mut a);
                    matvec_q4_portable(&q, &scale, cols, &xe, &xo, &mut b);
                }
                _ => unreachable!(),
            }
            for (a, b) in a.iter().zip(&b) {
                assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "q4 {rows}x{cols}: {a} vs {b}");
            }
            for p in [Precision::Q3, Precision::Q2] {
                match Matrix::from_f32(rows, cols, w.clone()).to_precision(p).data {
                    MatrixData::Q3 { q, scale } => {
                        matvec_q3(&q, &scale, cols, &x, &mut a);
                        matvec_q3_portable(&q, &scale, cols, &x, &mut b);
                    }
                    MatrixData::Q2 { q, scale, min } => {
                        matvec_q2(&q, &scale, &min, cols, &x, &mut a);
                        matvec_q2_portable(&q, &scale, &min, cols, &x, &mut b);
                    }
                    _ => unreachable!(),
                }
                for (a, b) in a.iter().zip(&b) {
                    assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "{p} {rows}x{cols}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn portable_and_f16c_f16_kernels_agree() {
        let mut rng = Pcg32::new(8);
        let (rows, cols) = (5, 37);
        let w: Vec<f16> = (0..rows * cols).map(|_| f16::from_f32(rng.normal())).collect();
        let x: Vec<f32> = (0..cols).map(|_| rng.normal()).collect();
        let (mut a, mut b) = (vec![0.0; rows], vec![0.0; rows]);
        matvec_f16(&w, cols, &x, &mut a);
        matvec_f16_portable(&w, cols, &x, &mut b);
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn gemm_handles_transposed_strides() {
        // A (2,3), Bᵀ given as (3,2) through strides.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let w = [1.0, 0.0, -1.0, 2.0, 1.0, 0.5]; // (2,3): rows are output columns
        let mut c = [0.0; 4];
        gemm(2, 3, 2, 1.0, &a, (3, 1), &w, (1, 3), 0.0, &mut c, (2, 1));
        assert_eq!(c, [-2.0, 5.5, -2.0, 16.0]);
    }
}
