//! Explicit AVX2 + FMA + F16C matrix × vector kernels for the f16, q8, q4, q3 and q2 weight
//! formats.
//!
//! Per 32-value group a kernel loads the packed weights once, widens them to f32 in
//! registers, multiplies with x and adds `scale · (q · x)` into lane accumulators that are
//! reduced once per row (`sum_groups`).

use std::arch::x86_64::*;

use half::f16;

use super::{f16_to_f32, q4_partial_group};
use crate::precision::{groups_per_row, q4_bytes_per_row, GROUP};

/// Whether this CPU can run the kernels below.
pub fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Σ over groups 0..n of `group(gi, acc)`, alternating two accumulators (kept in registers,
/// one per group parity) to hide the FMA latency, reduced to one value.
#[inline(always)]
unsafe fn sum_groups(n: usize, group: impl Fn(usize, __m256) -> __m256) -> f32 {
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut gi = 0;
    while gi + 1 < n {
        a0 = group(gi, a0);
        a1 = group(gi + 1, a1);
        gi += 2;
    }
    if gi < n {
        a0 = group(gi, a0);
    }
    hsum(_mm256_add_ps(a0, a1))
}

/// A row's f16 scales as f32, eight per `vcvtph2ps`: groups then broadcast their scale
/// straight from memory (a load, not a shuffle-port instruction like a register broadcast).
#[inline(always)]
unsafe fn load_scales(src: &[f16], dst: &mut [f32]) {
    let body = src.len() / 8 * 8;
    for i in (0..body).step_by(8) {
        let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
        _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
    }
    for i in body..src.len() {
        dst[i] = f16_to_f32(src[i]);
    }
}

/// 8 signed bytes (the low 8 of `v`) as 8 f32.
#[inline(always)]
unsafe fn i8x8_to_f32(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
}

/// # Safety
/// AVX2, FMA and F16C available; `w` ≥ rows·cols, `x` ≥ cols, rows = `y.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matvec_f16(w: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
    let body = cols / 16 * 16;
    let xp = x.as_ptr();
    for (r, yr) in y.iter_mut().enumerate() {
        let row = w.as_ptr().add(r * cols) as *const u16;
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i < body {
            let h0 = _mm_loadu_si128(row.add(i) as *const __m128i);
            let h1 = _mm_loadu_si128(row.add(i + 8) as *const __m128i);
            a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(h0), _mm256_loadu_ps(xp.add(i)), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(h1), _mm256_loadu_ps(xp.add(i + 8)), a1);
            i += 16;
        }
        let mut sum = hsum(_mm256_add_ps(a0, a1));
        for j in body..cols {
            sum += f16_to_f32(w[r * cols + j]) * x[j];
        }
        *yr = sum;
    }
}

/// # Safety
/// AVX2, FMA and F16C available; `q` ≥ rows·cols, `scale` ≥ rows·groups, `x` ≥ cols.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matvec_q8(q: &[i8], scale: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
    let g = groups_per_row(cols);
    let full = cols / GROUP;
    let xp = x.as_ptr();
    let mut scales = vec![0.0f32; g];
    for (r, yr) in y.iter_mut().enumerate() {
        let row = q.as_ptr().add(r * cols);
        load_scales(&scale[r * g..(r + 1) * g], &mut scales);
        let sp = scales.as_ptr();
        // Each 8-byte load feeds the widening instruction directly (no extract/shift shuffles:
        // the shuffle port is this loop's bottleneck).
        let q8 = |p: *const i8| i8x8_to_f32(_mm_loadl_epi64(p as *const __m128i));
        let group = |gi: usize, acc: __m256| {
            let (qg, xg) = (row.add(gi * GROUP), xp.add(gi * GROUP));
            let mut t = _mm256_mul_ps(q8(qg), _mm256_loadu_ps(xg));
            t = _mm256_fmadd_ps(q8(qg.add(8)), _mm256_loadu_ps(xg.add(8)), t);
            t = _mm256_fmadd_ps(q8(qg.add(16)), _mm256_loadu_ps(xg.add(16)), t);
            t = _mm256_fmadd_ps(q8(qg.add(24)), _mm256_loadu_ps(xg.add(24)), t);
            _mm256_fmadd_ps(_mm256_broadcast_ss(&*sp.add(gi)), t, acc)
        };
        let mut sum = sum_groups(full, group);
        if full < g {
            let tail: f32 = (full * GROUP..cols).map(|j| q[r * cols + j] as f32 * x[j]).sum();
            sum += scales[full] * tail;
        }
        *yr = sum;
    }
}

/// # Safety
/// AVX2, FMA and F16C available; `q` ≥ rows·ceil(cols/2), `scale` ≥ rows·groups,
/// `xe` = ceil(cols/2) even elements of x, `xo` = floor(cols/2) odd elements.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matvec_q4(q: &[u8], scale: &[f16], cols: usize, xe: &[f32], xo: &[f32], y: &mut [f32]) {
    const HALF: usize = GROUP / 2;
    let (g, bpr) = (groups_per_row(cols), q4_bytes_per_row(cols));
    let full = cols / GROUP;
    let (mask, eight) = (_mm_set1_epi8(0x0f), _mm_set1_epi8(8));
    let mut scales = vec![0.0f32; g];
    for (r, yr) in y.iter_mut().enumerate() {
        let row = &q[r * bpr..(r + 1) * bpr];
        load_scales(&scale[r * g..(r + 1) * g], &mut scales);
        let sp = scales.as_ptr();
        let group = |gi: usize, acc: __m256| {
            let b = _mm_loadu_si128(row.as_ptr().add(gi * HALF) as *const __m128i);
            // value = nibble − 8; low nibbles are the even columns, high nibbles the odd.
            let lo = _mm_sub_epi8(_mm_and_si128(b, mask), eight);
            let hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), mask), eight);
            let (e, o) = (xe.as_ptr().add(gi * HALF), xo.as_ptr().add(gi * HALF));
            let mut t = _mm256_mul_ps(i8x8_to_f32(lo), _mm256_loadu_ps(e));
            t = _mm256_fmadd_ps(i8x8_to_f32(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(e.add(8)), t);
            t = _mm256_fmadd_ps(i8x8_to_f32(hi), _mm256_loadu_ps(o), t);
            t = _mm256_fmadd_ps(i8x8_to_f32(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(o.add(8)), t);
            _mm256_fmadd_ps(_mm256_broadcast_ss(&*sp.add(gi)), t, acc)
        };
        let mut sum = sum_groups(full, group);
        if full < g {
            sum += scales[full] * q4_partial_group(row, full * HALF, xe, xo);
        }
        *yr = sum;
    }
}

/// # Safety
/// AVX2, FMA and F16C available; shapes as `kernels::lowbit::check` checks them (`min` unused
/// for q3). The q3 / q2 layouts are `crate::lowbit`'s: each shift s of a whole block's eight
/// code bytes gives values 8s..8s+8, and q3's mask byte i % 4 holds their third bits at bit
/// 2s + i / 4.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matvec_lowbit<const Q3: bool>(
    q: &[u8],
    scale: &[f16],
    min: &[f16],
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) {
    use super::lowbit::{block_x_sums, mask_pairs, row_rest, Rows};
    let Rows {
        p,
        groups: g,
        full,
        row_bytes: bpr,
        block_bytes: bb,
    } = Rows::new(Q3, cols);
    let x_sums = block_x_sums(p, x, cols);
    let (three, one, four) = (_mm_set1_epi8(3), _mm_set1_epi8(1), _mm256_set1_ps(4.0));
    let xp = x.as_ptr();
    let mut scales = vec![0.0f32; g];
    for (r, yr) in y.iter_mut().enumerate() {
        let row = &q[r * bpr..(r + 1) * bpr];
        load_scales(&scale[r * g..(r + 1) * g], &mut scales);
        let sp = scales.as_ptr();
        let group = |gi: usize, acc: __m256| {
            let block = &row[gi * bb..][..bb];
            let codes = _mm_loadl_epi64(block.as_ptr() as *const __m128i);
            let high = if Q3 {
                _mm_cvtsi64_si128(mask_pairs(block) as i64)
            } else {
                _mm_setzero_si128()
            };
            let xg = xp.add(gi * GROUP);
            let mut t = _mm256_setzero_ps();
            for s in 0..4 {
                // 16-bit shifts move bits across bytes, but only into bits the masks drop.
                let count = _mm_cvtsi32_si128(2 * s);
                let mut c = _mm_and_si128(_mm_srl_epi16(codes, count), three);
                if Q3 {
                    let h = _mm_and_si128(_mm_srl_epi16(high, count), one);
                    c = _mm_or_si128(c, _mm_slli_epi16(h, 2));
                }
                let mut v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c));
                if Q3 {
                    v = _mm256_sub_ps(v, four);
                }
                t = _mm256_fmadd_ps(v, _mm256_loadu_ps(xg.add(8 * s as usize)), t);
            }
            _mm256_fmadd_ps(_mm256_broadcast_ss(&*sp.add(gi)), t, acc)
        };
        *yr = sum_groups(full, group) + row_rest(p, row, scale, min, cols, r, x, &x_sums);
    }
}

/// `exp_fast` on 8 lanes, the same operations in the same order (no FMA contraction), so
/// it is bit-identical to the scalar function the forward scan uses.
#[inline(always)]
unsafe fn exp8(x: __m256) -> __m256 {
    let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0)), _mm256_set1_ps(88.0));
    let round = _mm256_set1_ps(12_582_912.0);
    let t = _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)), round);
    let n = _mm256_sub_ps(t, round);
    let n_int = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(round));
    let r = _mm256_sub_ps(
        _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693_145_75))),
        _mm256_mul_ps(n, _mm256_set1_ps(1.428_606_8e-6)),
    );
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_add_ps(_mm256_set1_ps(c), _mm256_mul_ps(r, p));
    }
    let scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n_int, _mm256_set1_epi32(127)), 23));
    _mm256_mul_ps(scale, p)
}

/// The scan backward for 8 state elements of one (time step, channel): the same arithmetic,
/// in the same order, as `lanes_backward` in layers/scan.rs.
///
/// # Safety
/// AVX2 available; every pointer valid for 8 f32 (`dh`, `da`, `db`, `dc`, `ddt`, `du` writable).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scan_lanes8(
    ins: [*const f32; 5], // h, h_prev, a, b, c
    [dy, dt, u]: [f32; 3],
    dh: *mut f32,
    da: *mut f32,
    db: *mut f32,
    dc: *mut f32,
    ddt: *mut f32,
    du: *mut f32,
) {
    let [h, hp, a, b, c] = ins.map(|p| _mm256_loadu_ps(p));
    let (dyv, dtv, uv) = (_mm256_set1_ps(dy), _mm256_set1_ps(dt), _mm256_set1_ps(u));
    _mm256_storeu_ps(dc, _mm256_add_ps(_mm256_loadu_ps(dc), _mm256_mul_ps(dyv, h)));
    let g = _mm256_add_ps(_mm256_loadu_ps(dh), _mm256_mul_ps(dyv, c));
    let decay = exp8(_mm256_mul_ps(dtv, a));
    let g_decay = _mm256_mul_ps(_mm256_mul_ps(g, hp), decay);
    let t = _mm256_add_ps(_mm256_mul_ps(g_decay, a), _mm256_mul_ps(_mm256_mul_ps(g, uv), b));
    _mm256_storeu_ps(ddt, _mm256_add_ps(_mm256_loadu_ps(ddt), t));
    _mm256_storeu_ps(da, _mm256_add_ps(_mm256_loadu_ps(da), _mm256_mul_ps(g_decay, dtv)));
    let gdt = _mm256_mul_ps(g, dtv);
    _mm256_storeu_ps(du, _mm256_add_ps(_mm256_loadu_ps(du), _mm256_mul_ps(gdt, b)));
    _mm256_storeu_ps(db, _mm256_add_ps(_mm256_loadu_ps(db), _mm256_mul_ps(gdt, uv)));
    _mm256_storeu_ps(dh, _mm256_mul_ps(g, decay));
}
