//! Matrix × vector for q3 and q2 (layouts in `crate::lowbit`). The portable body unpacks a
//! whole block shift by shift — each shift of its eight code bytes gives eight consecutive
//! values — into 32 lanes that accumulate `scale · code · x` across the row's blocks (q3's
//! code counts from −4); q2 adds `min · Σx` per block, with the block sums of x taken once per
//! product. Explicit kernels do the same in registers: AVX2 (`x86::matvec_lowbit`, chosen at
//! run time) and SIMD128 (`wasm::matvec_lowbit`, the portable body's lanes and order, so bit
//! for bit the same).

use half::f16;

use super::{dispatch, f16_to_f32, madd, reduce};
use crate::lowbit::{block_bytes, block_len, decode_block, value};
use crate::precision::{groups_per_row, packed_bytes_per_row, Precision, GROUP};

/// The 32 codes of a whole block as f32 (q3: code − 4).
#[inline(always)]
fn whole_block<const Q3: bool>(bytes: &[u8], out: &mut [f32; GROUP]) {
    for s in 0..4 {
        for i in 0..8 {
            let low = (bytes[i] >> (2 * s)) & 3;
            out[8 * s + i] = if Q3 {
                let high = (bytes[8 + i % 4] >> (2 * s + i / 4)) & 1;
                (low | high << 2) as f32 - 4.0
            } else {
                low as f32
            };
        }
    }
}

/// How every q3 / q2 kernel walks a matrix's rows of `cols` values.
pub(super) struct Rows {
    pub p: Precision,
    /// Blocks (groups) per row, and the whole ones among them.
    pub groups: usize,
    pub full: usize,
    /// Bytes per row and per whole block.
    pub row_bytes: usize,
    pub block_bytes: usize,
}

impl Rows {
    #[inline(always)]
    pub fn new(q3: bool, cols: usize) -> Rows {
        let p = if q3 { Precision::Q3 } else { Precision::Q2 };
        Rows {
            p,
            groups: groups_per_row(cols),
            full: cols / GROUP,
            row_bytes: packed_bytes_per_row(p, cols).expect("packed"),
            block_bytes: block_bytes(p),
        }
    }
}

/// q3's four mask bytes of a whole block (after its eight code bytes), and beside them the
/// same shifted right by one: byte i < 8 then holds the third bit of value 8s + i at bit 2s,
/// as the code bytes hold its low bits at bits 2s, 2s + 1 — what the SIMD kernels unpack.
#[inline(always)]
pub(super) fn mask_pairs(block: &[u8]) -> u64 {
    let h = u32::from_le_bytes(block[8..12].try_into().expect("a whole q3 block")) as u64;
    h | ((h >> 1) & 0x7f7f_7f7f) << 32
}

#[inline(always)]
fn matvec_body<const Q3: bool>(q: &[u8], scale: &[f16], min: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
    let Rows {
        p,
        groups: g,
        full,
        row_bytes: bpr,
        block_bytes: bb,
    } = Rows::new(Q3, cols);
    let x_sums = block_x_sums(p, x, cols);
    let mut codes = [0.0f32; GROUP];
    for (r, yr) in y.iter_mut().enumerate() {
        let row = &q[r * bpr..(r + 1) * bpr];
        let scales = &scale[r * g..(r + 1) * g];
        let mut acc = [0.0f32; GROUP];
        for gi in 0..full {
            whole_block::<Q3>(&row[gi * bb..][..bb], &mut codes);
            let (xg, s) = (&x[gi * GROUP..][..GROUP], f16_to_f32(scales[gi]));
            for i in 0..GROUP {
                acc[i] = madd(s, codes[i] * xg[i], acc[i]);
            }
        }
        *yr = reduce(acc) + row_rest(p, row, scale, min, cols, r, x, &x_sums);
    }
}

/// What a row's sum adds after its whole blocks, the same in every kernel: the short last
/// block's products and, for q2, `min · Σx` of every block (`x_sums`, `block_x_sums`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn row_rest(
    p: Precision,
    row: &[u8],
    scale: &[f16],
    min: &[f16],
    cols: usize,
    r: usize,
    x: &[f32],
    x_sums: &[f32],
) -> f32 {
    let (g, full) = (groups_per_row(cols), cols / GROUP);
    let mut rest = 0.0;
    if full < g {
        let mut tail = [0u8; GROUP];
        decode_block(p, &row[full * block_bytes(p)..], block_len(cols, full), &mut tail);
        let s = f16_to_f32(scale[r * g + full]);
        rest += x[full * GROUP..cols]
            .iter()
            .zip(&tail)
            .map(|(x, &c)| value(p, c, s, 0.0) * x)
            .sum::<f32>();
    }
    if p == Precision::Q2 {
        let mins = &min[r * g..(r + 1) * g];
        rest += mins.iter().zip(x_sums).map(|(m, xs)| f16_to_f32(*m) * xs).sum::<f32>();
    }
    rest
}

/// Σx over each 32-value block of x (q2's minimums multiply them); empty for q3.
pub(super) fn block_x_sums(p: Precision, x: &[f32], cols: usize) -> Vec<f32> {
    match p {
        Precision::Q2 => x[..cols].chunks(GROUP).map(|c| c.iter().sum()).collect(),
        _ => Vec::new(),
    }
}

#[inline(always)]
fn matvec_q3_body(q: &[u8], scale: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
    matvec_body::<true>(q, scale, &[], cols, x, y)
}

#[inline(always)]
fn matvec_q2_body(q: &[u8], scale: &[f16], min: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
    matvec_body::<false>(q, scale, min, cols, x, y)
}

dispatch! {
    /// q3 `y = W·x` without the x86 kernel (the reference in tests).
    pub fn matvec_q3_portable(q: &[u8], scale: &[f16], cols: usize, x: &[f32], y: &mut [f32]) => matvec_q3_body
}
dispatch! {
    /// q2 `y = W·x` without the x86 kernel (the reference in tests).
    pub fn matvec_q2_portable(q: &[u8], scale: &[f16], min: &[f16], cols: usize, x: &[f32], y: &mut [f32]) => matvec_q2_body
}

/// `y = W·x` for a q3 matrix, reading the packed codes and f16 scales directly.
pub fn matvec_q3(q: &[u8], scale: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
    check(Precision::Q3, q, scale, &[], cols, x, y.len());
    #[cfg(target_arch = "x86_64")]
    if super::x86::available() {
        // SAFETY: the CPU has the features; shapes checked above.
        return unsafe { super::x86::matvec_lowbit::<true>(q, scale, &[], cols, x, y) };
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return super::wasm::matvec_lowbit::<true>(q, scale, &[], cols, x, y);
    #[allow(unreachable_code)]
    matvec_q3_portable(q, scale, cols, x, y)
}

/// `y = W·x` for a q2 matrix, reading the packed codes, f16 scales and minimums directly.
pub fn matvec_q2(q: &[u8], scale: &[f16], min: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
    check(Precision::Q2, q, scale, min, cols, x, y.len());
    #[cfg(target_arch = "x86_64")]
    if super::x86::available() {
        // SAFETY: the CPU has the features; shapes checked above.
        return unsafe { super::x86::matvec_lowbit::<false>(q, scale, min, cols, x, y) };
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return super::wasm::matvec_lowbit::<false>(q, scale, min, cols, x, y);
    #[allow(unreachable_code)]
    matvec_q2_portable(q, scale, min, cols, x, y)
}

/// The shape checks of both entry points (before any slicing in the bodies).
fn check(p: Precision, q: &[u8], scale: &[f16], min: &[f16], cols: usize, x: &[f32], rows: usize) {
    let g = groups_per_row(cols);
    let ok = q.len() >= rows * packed_bytes_per_row(p, cols).unwrap()
        && scale.len() >= rows * g
        && (p == Precision::Q3 || min.len() >= rows * g)
        && x.len() >= cols;
    assert!(ok, "matvec_{p} shapes");
}
