//! Explicit wasm SIMD128 kernel for the q8 matrix × vector product — the playground's default
//! precision and most of its decode time. Per 32-value group the int8 weights are loaded as
//! two 16-byte vectors, widened to f32 in registers, multiplied with x, and `scale · (q · x)`
//! is added into a lane accumulator reduced once per row. (The portable loop's 32 scalar
//! lanes do not vectorise well for wasm; f32, f16 and q4 stay portable.)

use core::arch::wasm32::*;

use half::f16;

use super::f16_to_f32;
use crate::precision::{groups_per_row, GROUP};

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
