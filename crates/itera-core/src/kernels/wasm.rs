//! Explicit wasm SIMD128 kernels for the matrix × vector products of every precision (what
//! decoding spends its time on) and for the scan's lanes.
//!
//! - q8 (the playground's default): per 32-value group the weights are loaded as two 16-byte
//!   vectors, widened to f32 in registers, multiplied with x, and `scale · (q · x)` is added
//!   into a lane accumulator reduced once per row.
//! - f32, f16, q4, q3 and q2 keep the portable bodies' lanes (16, 16, 16, 32, 32) and order of
//!   operations, so each is bit for bit the portable result (browser tests) — the compiler left
//!   those loops partly scalar: f16 converts each half in scalar code, q4 unpacks nibbles one
//!   at a time. f16 converts four halves at once in four operations and an exact
//!   multiplication (`f16x4_to_f32`), equal to `f16_to_f32` for every half.

use core::arch::wasm32::*;

use half::f16;

use super::f16_to_f32;
use super::lowbit::{block_x_sums, mask_pairs, row_rest, Rows};
use crate::precision::{groups_per_row, q4_bytes_per_row, GROUP};

/// The portable kernels' 16 accumulator lanes as four vectors (lanes 4k..4k + 4 in `acc[k]`).
type Lanes16 = [v128; 4];

/// `reduce` over 16 lanes: 8 and 4 apart are whole vectors, then 2 and 1 within one.
#[inline(always)]
fn reduce16(mut acc: Lanes16) -> f32 {
    acc[0] = f32x4_add(acc[0], acc[2]);
    acc[1] = f32x4_add(acc[1], acc[3]);
    let a = f32x4_add(acc[0], acc[1]);
    (f32x4_extract_lane::<0>(a) + f32x4_extract_lane::<2>(a))
        + (f32x4_extract_lane::<1>(a) + f32x4_extract_lane::<3>(a))
}

/// Four halves (sign-extended into i32 lanes) as f32, bit for bit `f16_to_f32`: the half's
/// sign and exponent-and-mantissa moved to their f32 places (shift by 13, which the sign
/// extension fills down to bit 28, masked) are an f32 whose value is the half's times 2^-112 —
/// subnormal halves included, as f32 denormals — so one exact multiplication by 2^112 gives
/// the value; infinities and NaNs (exponent 31, 65,536 and over after that) get f32's all-ones
/// exponent with their mantissa, as the scalar conversion gives them.
#[inline(always)]
fn f16x4_to_f32(halves: v128) -> v128 {
    let placed = v128_and(i32x4_shl(halves, 13), u32x4_splat(0x8fff_e000));
    let value = f32x4_mul(placed, f32x4_splat(f32::from_bits((127 + 112) << 23)));
    let special = i32x4_gt(v128_and(halves, i32x4_splat(0x7fff)), i32x4_splat(0x7bff));
    v128_or(value, v128_and(special, u32x4_splat(0x7f80_0000)))
}

/// `dot_body` in vectors: lane i accumulates x·y + acc over every 16th pair.
fn dot_lanes16(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc: Lanes16 = [f32x4_splat(0.0); 4];
    let whole = n / 16 * 16;
    for at in (0..whole).step_by(16) {
        for (k, lane) in acc.iter_mut().enumerate() {
            *lane = f32x4_add(f32x4_mul(load(a, at + 4 * k), load(b, at + 4 * k)), *lane);
        }
    }
    let mut tail = 0.0;
    for (x, y) in a[whole..].iter().zip(&b[whole..]) {
        tail += x * y;
    }
    reduce16(acc) + tail
}

/// `y = W·x` for an f32 matrix (shapes checked by the caller); bit for bit `matvec_f32_body`.
pub fn matvec_f32(w: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
    for (yr, row) in y.iter_mut().zip(w.chunks_exact(cols)) {
        *yr = dot_lanes16(row, x);
    }
}

/// `y = W·x` for an f16 matrix (shapes checked by the caller); bit for bit `matvec_f16_body`.
pub fn matvec_f16(w: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
    let whole = cols / 16 * 16;
    for (yr, row) in y.iter_mut().zip(w.chunks_exact(cols)) {
        let mut acc: Lanes16 = [f32x4_splat(0.0); 4];
        for at in (0..whole).step_by(16) {
            // SAFETY: the row holds 16 halves from `at` (at + 16 ≤ whole ≤ cols); loads may be unaligned.
            let (h0, h1) = unsafe {
                (
                    v128_load(row[at..at + 8].as_ptr() as *const v128),
                    v128_load(row[at + 8..at + 16].as_ptr() as *const v128),
                )
            };
            let bits = [
                i32x4_extend_low_i16x8(h0),
                i32x4_extend_high_i16x8(h0),
                i32x4_extend_low_i16x8(h1),
                i32x4_extend_high_i16x8(h1),
            ];
            for (k, (lane, b)) in acc.iter_mut().zip(bits).enumerate() {
                *lane = f32x4_add(f32x4_mul(f16x4_to_f32(b), load(x, at + 4 * k)), *lane);
            }
        }
        let tail: f32 = row[whole..]
            .iter()
            .zip(&x[whole..cols])
            .map(|(w, x)| f16_to_f32(*w) * x)
            .sum();
        *yr = reduce16(acc) + tail;
    }
}

/// Sixteen 4-bit codes (one per byte of `nibbles`), minus 8, as four f32 vectors.
#[inline(always)]
fn q4_values(nibbles: v128) -> [v128; 4] {
    let (lo, hi) = (u16x8_extend_low_u8x16(nibbles), u16x8_extend_high_u8x16(nibbles));
    let eight = i32x4_splat(8);
    [
        u32x4_extend_low_u16x8(lo),
        u32x4_extend_high_u16x8(lo),
        u32x4_extend_low_u16x8(hi),
        u32x4_extend_high_u16x8(hi),
    ]
    .map(|v| f32x4_convert_i32x4(i32x4_sub(v, eight)))
}

/// `y = W·x` for a q4 matrix against x's even / odd elements (shapes checked by the caller);
/// bit for bit `matvec_q4_body`: lane i accumulates scale · (lo·e + hi·o) + acc.
pub fn matvec_q4(q: &[u8], scale: &[f16], cols: usize, xe: &[f32], xo: &[f32], y: &mut [f32]) {
    const HALF: usize = GROUP / 2;
    let (g, bpr) = (groups_per_row(cols), q4_bytes_per_row(cols));
    let full = cols / GROUP;
    for (r, yr) in y.iter_mut().enumerate() {
        let row = &q[r * bpr..(r + 1) * bpr];
        let scales = &scale[r * g..(r + 1) * g];
        let mut acc: Lanes16 = [f32x4_splat(0.0); 4];
        for gi in 0..full {
            let at = gi * HALF;
            // SAFETY: a whole group's 16 bytes lie in the row; loads may be unaligned.
            let bytes = unsafe { v128_load(row[at..at + HALF].as_ptr() as *const v128) };
            let lo = q4_values(v128_and(bytes, u8x16_splat(0x0f)));
            let hi = q4_values(u8x16_shr(bytes, 4));
            let s = f32x4_splat(f16_to_f32(scales[gi]));
            for k in 0..4 {
                let inner = f32x4_add(
                    f32x4_mul(lo[k], load(xe, at + 4 * k)),
                    f32x4_mul(hi[k], load(xo, at + 4 * k)),
                );
                acc[k] = f32x4_add(f32x4_mul(s, inner), acc[k]);
            }
        }
        let mut sum = reduce16(acc);
        if full < g {
            sum += f16_to_f32(scales[full]) * super::q4_partial_group(row, full * HALF, xe, xo);
        }
        *yr = sum;
    }
}

/// Σ over 16 int8 weights × 16 x values, as four f32 lanes.
#[inline(always)]
fn dot16(q: v128, x: &[f32]) -> v128 {
    let (lo, hi) = (i16x8_extend_low_i8x16(q), i16x8_extend_high_i8x16(q));
    let parts = [
        i32x4_extend_low_i16x8(lo),
        i32x4_extend_high_i16x8(lo),
        i32x4_extend_low_i16x8(hi),
        i32x4_extend_high_i16x8(hi),
    ];
    let mut t = f32x4_splat(0.0);
    for (k, p) in parts.into_iter().enumerate() {
        // SAFETY: `x` holds 16 values (checked by the caller's slicing).
        let xv = unsafe { v128_load(x[k * 4..][..4].as_ptr() as *const v128) };
        t = f32x4_add(t, f32x4_mul(f32x4_convert_i32x4(p), xv));
    }
    t
}

/// `y = W·x` for a q8 matrix (shapes checked by the caller).
pub fn matvec_q8(q: &[i8], scale: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
    let g = groups_per_row(cols);
    let full = cols / GROUP;
    for (r, yr) in y.iter_mut().enumerate() {
        let row = &q[r * cols..(r + 1) * cols];
        let scales = &scale[r * g..(r + 1) * g];
        let mut acc = f32x4_splat(0.0);
        for gi in 0..full {
            let (qg, xg) = (&row[gi * GROUP..][..GROUP], &x[gi * GROUP..][..GROUP]);
            // SAFETY: `qg` holds 32 bytes; v128 loads may be unaligned.
            let (q0, q1) = unsafe {
                (
                    v128_load(qg.as_ptr() as *const v128),
                    v128_load(qg[16..].as_ptr() as *const v128),
                )
            };
            let t = f32x4_add(dot16(q0, &xg[..16]), dot16(q1, &xg[16..]));
            acc = f32x4_add(acc, f32x4_mul(f32x4_splat(f16_to_f32(scales[gi])), t));
        }
        let mut sum = f32x4_extract_lane::<0>(acc)
            + f32x4_extract_lane::<1>(acc)
            + f32x4_extract_lane::<2>(acc)
            + f32x4_extract_lane::<3>(acc);
        if full < g {
            let tail: f32 = row[full * GROUP..]
                .iter()
                .zip(&x[full * GROUP..])
                .map(|(q, x)| *q as f32 * x)
                .sum();
            sum += f16_to_f32(scales[full]) * tail;
        }
        *yr = sum;
    }
}

/// `y = W·x` for a q3 (`Q3`) or q2 matrix (shapes checked by the caller): `matvec_body` of
/// kernels/lowbit.rs in vectors — lane i of the 32 accumulates `scale · (code · x) + acc` in the
/// same order, and the lanes are summed in `reduce`'s tree.
pub fn matvec_lowbit<const Q3: bool>(q: &[u8], scale: &[f16], min: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
    let Rows {
        p,
        groups: g,
        full,
        row_bytes: bpr,
        block_bytes: bb,
    } = Rows::new(Q3, cols);
    let x_sums = block_x_sums(p, x, cols);
    let (three, one, four) = (u8x16_splat(3), u8x16_splat(1), f32x4_splat(4.0));
    for (r, yr) in y.iter_mut().enumerate() {
        let row = &q[r * bpr..(r + 1) * bpr];
        let mut acc = [f32x4_splat(0.0); 8];
        for gi in 0..full {
            let block = &row[gi * bb..][..bb];
            let codes = u64x2(u64::from_le_bytes(block[..8].try_into().unwrap()), 0);
            let high = if Q3 { u64x2(mask_pairs(block), 0) } else { u64x2(0, 0) };
            let s = f32x4_splat(f16_to_f32(scale[r * g + gi]));
            let xg = &x[gi * GROUP..][..GROUP];
            for k in 0..4 {
                // 16-bit shifts move bits across bytes, but only into bits the masks drop.
                let mut c = v128_and(u16x8_shr(codes, 2 * k as u32), three);
                if Q3 {
                    let h = v128_and(u16x8_shr(high, 2 * k as u32), one);
                    c = v128_or(c, u16x8_shl(h, 2));
                }
                let wide = u16x8_extend_low_u8x16(c);
                for (half, v) in [u32x4_extend_low_u16x8(wide), u32x4_extend_high_u16x8(wide)]
                    .into_iter()
                    .enumerate()
                {
                    let mut v = f32x4_convert_u32x4(v);
                    if Q3 {
                        v = f32x4_sub(v, four);
                    }
                    let lane = 2 * k + half;
                    acc[lane] = f32x4_add(f32x4_mul(s, f32x4_mul(v, load(xg, 4 * lane))), acc[lane]);
                }
            }
        }
        // `reduce` over 32 lanes: 16, 8 and 4 apart are whole vectors, then 2 and 1 within one.
        for width in [4, 2, 1] {
            for k in 0..width {
                acc[k] = f32x4_add(acc[k], acc[k + width]);
            }
        }
        let a = acc[0];
        let (l0, l1) = (
            f32x4_extract_lane::<0>(a) + f32x4_extract_lane::<2>(a),
            f32x4_extract_lane::<1>(a) + f32x4_extract_lane::<3>(a),
        );
        *yr = (l0 + l1) + row_rest(p, row, scale, min, cols, r, x, &x_sums);
    }
}

/// `exp_fast` on four lanes: the same operations in the same order (wasm SIMD has no fused
/// multiply-add), so every lane is bit-identical to the scalar function.
#[inline(always)]
fn exp4(x: v128) -> v128 {
    let x = f32x4_min(f32x4_max(x, f32x4_splat(-87.0)), f32x4_splat(88.0));
    let round = f32x4_splat(12_582_912.0);
    let t = f32x4_add(f32x4_mul(x, f32x4_splat(std::f32::consts::LOG2_E)), round);
    let n = f32x4_sub(t, round);
    let n_int = i32x4_sub(t, round);
    let r = f32x4_sub(
        f32x4_sub(x, f32x4_mul(n, f32x4_splat(0.693_145_75))),
        f32x4_mul(n, f32x4_splat(1.428_606_8e-6)),
    );
    let mut p = f32x4_splat(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = f32x4_add(f32x4_splat(c), f32x4_mul(r, p));
    }
    f32x4_mul(i32x4_shl(i32x4_add(n_int, i32x4_splat(127)), 23), p)
}

fn load(v: &[f32], at: usize) -> v128 {
    // SAFETY: the slice holds four values from `at` (bounds-checked here); loads may be unaligned.
    unsafe { v128_load(v[at..at + 4].as_ptr() as *const v128) }
}

fn store(v: &mut [f32], at: usize, x: v128) {
    // SAFETY: as `load`.
    unsafe { v128_store(v[at..at + 4].as_mut_ptr() as *mut v128, x) }
}

/// v[at..at + 4] += x.
fn add_to(v: &mut [f32], at: usize, x: v128) {
    let sum = f32x4_add(load(v, at), x);
    store(v, at, sum);
}

/// The forward scan's update for 8 state elements (`scan_step`'s lanes): h = exp(dt·a)·h +
/// dtu·b and acc += h·c, as two 4-lane halves.
#[inline(always)]
pub fn scan_forward8(h: &mut [f32], a: &[f32], b: &[f32], c: &[f32], dt: f32, dtu: f32, acc: &mut [f32; 8]) {
    let (dtv, dtuv) = (f32x4_splat(dt), f32x4_splat(dtu));
    for at in [0, 4] {
        let hv = f32x4_add(
            f32x4_mul(exp4(f32x4_mul(dtv, load(a, at))), load(h, at)),
            f32x4_mul(dtuv, load(b, at)),
        );
        store(h, at, hv);
        add_to(acc, at, f32x4_mul(hv, load(c, at)));
    }
}

/// The scan backward for 8 state elements of one (time step, channel): the arithmetic of
/// `lanes_backward` in layers/scan.rs in the same order. `ins` = [h, h_prev, a, b, c] and
/// `outs` = [dh, da, db, dc] (8 values each), `acc` = [ddt, du] lane accumulators.
#[inline(always)]
pub fn scan_backward8(ins: [&[f32]; 5], [dy, dt, u]: [f32; 3], outs: [&mut [f32]; 4], acc: [&mut [f32; 8]; 2]) {
    let [h, hp, a, b, c] = ins;
    let [dh, da, db, dc] = outs;
    let [ddt, du] = acc;
    let (dyv, dtv, uv) = (f32x4_splat(dy), f32x4_splat(dt), f32x4_splat(u));
    for at in [0, 4] {
        let (hv, hpv, av, bv, cv) = (load(h, at), load(hp, at), load(a, at), load(b, at), load(c, at));
        add_to(dc, at, f32x4_mul(dyv, hv));
        let g = f32x4_add(load(dh, at), f32x4_mul(dyv, cv));
        let decay = exp4(f32x4_mul(dtv, av));
        let g_decay = f32x4_mul(f32x4_mul(g, hpv), decay);
        let t = f32x4_add(f32x4_mul(g_decay, av), f32x4_mul(f32x4_mul(g, uv), bv));
        add_to(ddt, at, t);
        add_to(da, at, f32x4_mul(g_decay, dtv));
        let gdt = f32x4_mul(g, dtv);
        add_to(du, at, f32x4_mul(gdt, bv));
        add_to(db, at, f32x4_mul(gdt, uv));
        store(dh, at, f32x4_mul(g, decay));
    }
}
