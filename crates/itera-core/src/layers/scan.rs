//! The selective scan of Mamba (Gu & Dao 2023, eq. 2a/2b with the zero-order-hold
//! discretisation Ā = exp(Δ·A), B̄x ≈ Δ·B·x of §3.5):
//!
//! `h_t = exp(dt_t ⊙ A) ⊙ h_{t−1} + (dt_t ⊙ u_t) ⊗ B_t`,   `y_t = h_t · C_t + Dskip ⊙ u_t`
//!
//! with h (Di, N) per sequence. The backward is the same recurrence run in reverse time.

use super::activations::exp_fast;
use super::scratch::{zeroed, ScanGradScratch};
use crate::kernels::reduce;

/// Lanes over the state dimension N (one AVX2 register; N = 16 is two chunks).
const L: usize = 8;

/// Shapes of a scan over `batch` sequences of `t` steps: Di channels, N states. `B_t` and
/// `C_t` are read from rows of `bc` with stride `bc_stride` at column offsets `b_off`/`c_off`
/// (they live inside the x_proj output).
#[derive(Clone, Copy, Debug)]
pub struct ScanDims {
    pub batch: usize,
    pub t: usize,
    pub di: usize,
    pub n: usize,
    pub bc_stride: usize,
    pub b_off: usize,
    pub c_off: usize,
}

/// Whether this build has explicit SIMD lanes for the scan other than AVX2's (wasm SIMD128,
/// whose 8-lane loops the compiler leaves scalar because of the exponential).
const WASM_SIMD: bool = cfg!(all(target_arch = "wasm32", target_feature = "simd128"));

/// One time step for one sequence: updates `h` (Di·N) in place and writes `y` (Di).
/// `a` is A = −exp(A_log) (Di, N).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn scan_step(
    y: &mut [f32],
    h: &mut [f32],
    u: &[f32],
    dt: &[f32],
    a: &[f32],
    b: &[f32],
    c: &[f32],
    d_skip: &[f32],
    n: usize,
) {
    scan_step_lanes(y, h, u, dt, a, b, c, d_skip, n, WASM_SIMD)
}

/// `scan_step`, its 8-lane chunks through the wasm SIMD kernel when `simd` (same bits).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn scan_step_lanes(
    y: &mut [f32],
    h: &mut [f32],
    u: &[f32],
    dt: &[f32],
    a: &[f32],
    b: &[f32],
    c: &[f32],
    d_skip: &[f32],
    n: usize,
    simd: bool,
) {
    let full = n / L * L;
    for (i, yi) in y.iter_mut().enumerate() {
        let (dti, ui) = (dt[i], u[i]);
        let dtu = dti * ui;
        let hi = &mut h[i * n..(i + 1) * n];
        let ai = &a[i * n..(i + 1) * n];
        // The state runs in chunks of L lanes so the update and the y reduction vectorise.
        let mut acc = [0.0f32; L];
        let chunks = hi[..full]
            .chunks_exact_mut(L)
            .zip(ai.chunks_exact(L))
            .zip(b.chunks_exact(L))
            .zip(c.chunks_exact(L));
        for (((hh, aa), bb), cc) in chunks {
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            if simd {
                crate::kernels::wasm::scan_forward8(hh, aa, bb, cc, dti, dtu, &mut acc);
                continue;
            }
            let _ = simd;
            for j in 0..L {
                hh[j] = exp_fast(dti * aa[j]) * hh[j] + dtu * bb[j];
                acc[j] += hh[j] * cc[j];
            }
        }
        for s in full..n {
            hi[s] = exp_fast(dti * ai[s]) * hi[s] + dtu * b[s];
            acc[0] += hi[s] * c[s];
        }
        *yi = reduce(acc) + d_skip[i] * ui;
    }
}

crate::kernels::dispatch! {
    /// y (B·T, Di). `h_all` (B·T, Di, N), when given, receives every state for the backward;
    /// `h_last` (B, Di, N) holds each sequence's initial state on entry (zeros for a fresh
    /// sequence) and its final state on return (the decode state after prefill).
    pub fn scan_forward(
        y: &mut [f32],
        h_all: Option<&mut [f32]>,
        h_last: &mut [f32],
        u: &[f32],
        dt: &[f32],
        a: &[f32],
        bc: &[f32],
        d_skip: &[f32],
        d: ScanDims
    ) => scan_forward_body::<WASM_SIMD>
}

crate::kernels::dispatch! {
    /// `scan_forward` without the wasm SIMD lanes: the reference the browser test holds it
    /// to, bit for bit.
    pub fn scan_forward_portable(
        y: &mut [f32],
        h_all: Option<&mut [f32]>,
        h_last: &mut [f32],
        u: &[f32],
        dt: &[f32],
        a: &[f32],
        bc: &[f32],
        d_skip: &[f32],
        d: ScanDims
    ) => scan_forward_body::<false>
}

crate::kernels::dispatch! {
    /// Gradients of the scan, accumulated (+=): du, ddt (B·T, Di); da (Di, N) w.r.t. A;
    /// dbc (same layout as bc: only the B and C columns are written); dd_skip (Di).
    pub fn scan_backward(
        du: &mut [f32],
        ddt: &mut [f32],
        da: &mut [f32],
        dbc: &mut [f32],
        dd_skip: &mut [f32],
        dy: &[f32],
        u: &[f32],
        dt: &[f32],
        a: &[f32],
        bc: &[f32],
        d_skip: &[f32],
        h_all: &[f32],
        d: ScanDims,
        scratch: &mut ScanGradScratch
    ) => scan_backward_body::<WASM_SIMD>
}

crate::kernels::dispatch! {
    /// `scan_backward` without the wasm SIMD lanes (see `scan_forward_portable`).
    pub fn scan_backward_portable(
        du: &mut [f32],
        ddt: &mut [f32],
        da: &mut [f32],
        dbc: &mut [f32],
        dd_skip: &mut [f32],
        dy: &[f32],
        u: &[f32],
        dt: &[f32],
        a: &[f32],
        bc: &[f32],
        d_skip: &[f32],
        h_all: &[f32],
        d: ScanDims,
        scratch: &mut ScanGradScratch
    ) => scan_backward_body::<false>
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn scan_forward_body<const SIMD: bool>(
    y: &mut [f32],
    mut h_all: Option<&mut [f32]>,
    h_last: &mut [f32],
    u: &[f32],
    dt: &[f32],
    a: &[f32],
    bc: &[f32],
    d_skip: &[f32],
    d: ScanDims,
) {
    let ScanDims {
        batch,
        t,
        di,
        n,
        bc_stride,
        b_off,
        c_off,
    } = d;
    for bi in 0..batch {
        let h = &mut h_last[bi * di * n..(bi + 1) * di * n];
        for ti in 0..t {
            let row = bi * t + ti;
            let bcr = &bc[row * bc_stride..(row + 1) * bc_stride];
            scan_step_lanes(
                &mut y[row * di..(row + 1) * di],
                h,
                &u[row * di..(row + 1) * di],
                &dt[row * di..(row + 1) * di],
                a,
                &bcr[b_off..b_off + n],
                &bcr[c_off..c_off + n],
                d_skip,
                n,
                SIMD,
            );
            if let Some(h_all) = h_all.as_deref_mut() {
                h_all[row * di * n..(row + 1) * di * n].copy_from_slice(h);
            }
        }
    }
}

/// Reverse recurrence: with g_t = ∂L/∂h_t (from y_t and from h_{t+1}),
/// ∂h_t/∂h_{t−1} = exp(dt·A), so g_{t−1} = dy_{t−1} C_{t−1} + g_t ⊙ exp(dt_t A).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn scan_backward_body<const SIMD: bool>(
    du: &mut [f32],
    ddt: &mut [f32],
    da: &mut [f32],
    dbc: &mut [f32],
    dd_skip: &mut [f32],
    dy: &[f32],
    u: &[f32],
    dt: &[f32],
    a: &[f32],
    bc: &[f32],
    d_skip: &[f32],
    h_all: &[f32],
    d: ScanDims,
    scratch: &mut ScanGradScratch,
) {
    let ScanDims {
        batch,
        t,
        di,
        n,
        bc_stride,
        b_off,
        c_off,
    } = d;
    let full = n / L * L;
    #[cfg(target_arch = "x86_64")]
    let avx2 = crate::kernels::x86::available();
    let ScanGradScratch { dh, zeros, db, dc } = scratch;
    let (dh, zeros) = (zeroed(dh, di * n), &*zeroed(zeros, di * n));
    let (db, dc) = (zeroed(db, n), zeroed(dc, n));
    for bi in 0..batch {
        dh.fill(0.0);
        for ti in (0..t).rev() {
            let row = bi * t + ti;
            let bcr = &bc[row * bc_stride..(row + 1) * bc_stride];
            let (b, c) = (&bcr[b_off..b_off + n], &bcr[c_off..c_off + n]);
            let h = &h_all[row * di * n..(row + 1) * di * n];
            let h_prev = if ti > 0 {
                &h_all[(row - 1) * di * n..row * di * n]
            } else {
                zeros
            };
            db.fill(0.0);
            dc.fill(0.0);
            for i in 0..di {
                let (dyi, dti, ui) = (dy[row * di + i], dt[row * di + i], u[row * di + i]);
                dd_skip[i] += dyi * ui;
                let k0 = i * n;
                let (hk, hpk, ak) = (&h[k0..k0 + n], &h_prev[k0..k0 + n], &a[k0..k0 + n]);
                let (dhk, dak) = (&mut dh[k0..k0 + n], &mut da[k0..k0 + n]);
                let x = Lane {
                    h: hk,
                    h_prev: hpk,
                    a: ak,
                    b,
                    c,
                    dy: dyi,
                    dt: dti,
                    u: ui,
                };
                let (mut ddt_acc, mut du_acc) = ([0.0f32; L], [0.0f32; L]);
                for s0 in (0..full).step_by(L) {
                    #[cfg(target_arch = "x86_64")]
                    if avx2 {
                        let at = |v: &[f32]| v[s0..s0 + L].as_ptr();
                        // SAFETY: AVX2 detected; s0 + L ≤ n = every slice's length.
                        unsafe {
                            crate::kernels::x86::scan_lanes8(
                                [at(hk), at(hpk), at(ak), at(b), at(c)],
                                [dyi, dti, ui],
                                dhk[s0..s0 + L].as_mut_ptr(),
                                dak[s0..s0 + L].as_mut_ptr(),
                                db[s0..s0 + L].as_mut_ptr(),
                                dc[s0..s0 + L].as_mut_ptr(),
                                ddt_acc.as_mut_ptr(),
                                du_acc.as_mut_ptr(),
                            )
                        };
                        continue;
                    }
                    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                    if SIMD {
                        let w = s0..s0 + L;
                        crate::kernels::wasm::scan_backward8(
                            [&hk[w.clone()], &hpk[w.clone()], &ak[w.clone()], &b[w.clone()], &c[w]],
                            [dyi, dti, ui],
                            [
                                &mut dhk[s0..s0 + L],
                                &mut dak[s0..s0 + L],
                                &mut db[s0..s0 + L],
                                &mut dc[s0..s0 + L],
                            ],
                            [&mut ddt_acc, &mut du_acc],
                        );
                        continue;
                    }
                    lanes_backward::<L>(&x, s0, dhk, dak, db, dc, &mut ddt_acc, &mut du_acc);
                }
                for s in full..n {
                    let (mut ddt1, mut du1) = ([0.0f32; 1], [0.0f32; 1]);
                    lanes_backward::<1>(&x, s, dhk, dak, db, dc, &mut ddt1, &mut du1);
                    ddt_acc[0] += ddt1[0];
                    du_acc[0] += du1[0];
                }
                du[row * di + i] += dyi * d_skip[i] + reduce(du_acc);
                ddt[row * di + i] += reduce(ddt_acc);
            }
            let dbcr = &mut dbc[row * bc_stride..(row + 1) * bc_stride];
            for s in 0..n {
                dbcr[b_off + s] += db[s];
                dbcr[c_off + s] += dc[s];
            }
        }
    }
}

/// What the backward of one (time step, channel) reads, for `lane_backward`.
struct Lane<'a> {
    h: &'a [f32],      // (N) h_t
    h_prev: &'a [f32], // (N) h_{t−1}
    a: &'a [f32],      // (N) A row
    b: &'a [f32],      // (N) B_t
    c: &'a [f32],      // (N) C_t
    dy: f32,
    dt: f32,
    u: f32,
}

/// State elements s0..s0+W: g = ∂L/∂h_t[s] (from y_t and the carried ∂L/∂h_{t+1}); the
/// decay's gradient reaches dt and A, the input's reaches dt, u and B; `dh` becomes the carry
/// for h_{t−1}. Every slice is viewed as a [f32; W] so the W lanes need no bounds checks and
/// vectorise; a plain function (not a closure) so that it inlines into the AVX2 copy.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn lanes_backward<const W: usize>(
    x: &Lane,
    s0: usize,
    dh: &mut [f32],
    da: &mut [f32],
    db: &mut [f32],
    dc: &mut [f32],
    ddt: &mut [f32; W],
    du: &mut [f32; W],
) {
    fn view<const W: usize>(v: &[f32], s0: usize) -> &[f32; W] {
        v[s0..s0 + W].try_into().expect("W-wide window")
    }
    fn view_mut<const W: usize>(v: &mut [f32], s0: usize) -> &mut [f32; W] {
        (&mut v[s0..s0 + W]).try_into().expect("W-wide window")
    }
    let (h, hp, a) = (view::<W>(x.h, s0), view::<W>(x.h_prev, s0), view::<W>(x.a, s0));
    let (b, c) = (view::<W>(x.b, s0), view::<W>(x.c, s0));
    let (dh, da) = (view_mut::<W>(dh, s0), view_mut::<W>(da, s0));
    let (db, dc) = (view_mut::<W>(db, s0), view_mut::<W>(dc, s0));
    for j in 0..W {
        dc[j] += x.dy * h[j];
        let g = dh[j] + x.dy * c[j];
        let decay = exp_fast(x.dt * a[j]);
        let g_decay = g * hp[j] * decay; // ∂L/∂(dt·A) through exp
        ddt[j] += g_decay * a[j] + g * x.u * b[j];
        da[j] += g_decay * x.dt;
        du[j] += g * x.dt * b[j];
        db[j] += g * x.dt * x.u;
        dh[j] = g * decay;
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::rng::Pcg32;

    /// The AVX2 lanes and the portable lanes compute the same bits.
    #[test]
    fn avx2_and_portable_backward_lanes_agree_exactly() {
        if !crate::kernels::x86::available() {
            println!("SKIPPED: this CPU has no AVX2/FMA/F16C");
            return;
        }
        let mut rng = Pcg32::new(4);
        let mut v = |scale: f32| (0..L).map(|_| scale * rng.normal()).collect::<Vec<f32>>();
        let (h, hp, a, b, c) = (
            v(1.0),
            v(1.0),
            v(1.0).iter().map(|x| -x.abs() - 0.1).collect::<Vec<_>>(),
            v(1.0),
            v(1.0),
        );
        let x = Lane {
            h: &h,
            h_prev: &hp,
            a: &a,
            b: &b,
            c: &c,
            dy: 0.7,
            dt: 0.3,
            u: -1.2,
        };
        let init = [v(0.5), v(0.5), v(0.5), v(0.5)];
        let (mut p, mut q) = (init.clone(), init.clone());
        let (mut pd, mut pu, mut qd, mut qu) = ([0.1f32; L], [0.2f32; L], [0.1f32; L], [0.2f32; L]);
        let [dh, da, db, dc] = &mut p;
        lanes_backward::<L>(&x, 0, dh, da, db, dc, &mut pd, &mut pu);
        let [dh, da, db, dc] = &mut q;
        let ptr = |v: &[f32]| v.as_ptr();
        // SAFETY: AVX2 checked above; every buffer holds L = 8 values.
        unsafe {
            crate::kernels::x86::scan_lanes8(
                [ptr(&h), ptr(&hp), ptr(&a), ptr(&b), ptr(&c)],
                [0.7, 0.3, -1.2],
                dh.as_mut_ptr(),
                da.as_mut_ptr(),
                db.as_mut_ptr(),
                dc.as_mut_ptr(),
                qd.as_mut_ptr(),
                qu.as_mut_ptr(),
            )
        };
        assert_eq!(p, q);
        assert_eq!((pd, pu), (qd, qu));
    }
}
