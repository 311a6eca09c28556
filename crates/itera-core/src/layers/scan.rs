//! The selective scan of Mamba (Gu & Dao 2023, eq. 2a/2b with the zero-order-hold
//! discretisation Ā = exp(Δ·A), B̄x ≈ Δ·B·x of §3.5):
//!
//! `h_t = exp(dt_t ⊙ A) ⊙ h_{t−1} + (dt_t ⊙ u_t) ⊗ B_t`,   `y_t = h_t · C_t + Dskip ⊙ u_t`
//!
//! with h (Di, N) per sequence. The backward is the same recurrence run in reverse time.

use super::activations::exp_fast;

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
    for (i, yi) in y.iter_mut().enumerate() {
        let (dti, ui) = (dt[i], u[i]);
        let dtu = dti * ui;
        let hi = &mut h[i * n..(i + 1) * n];
        let ai = &a[i * n..(i + 1) * n];
        let mut acc = 0.0;
        for s in 0..n {
            hi[s] = exp_fast(dti * ai[s]) * hi[s] + dtu * b[s];
            acc += hi[s] * c[s];
        }
        *yi = acc + d_skip[i] * ui;
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
    ) => scan_forward_body
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
        d: ScanDims
    ) => scan_backward_body
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn scan_forward_body(
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
            scan_step(
                &mut y[row * di..(row + 1) * di],
                h,
                &u[row * di..(row + 1) * di],
                &dt[row * di..(row + 1) * di],
                a,
                &bcr[b_off..b_off + n],
                &bcr[c_off..c_off + n],
                d_skip,
                n,
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
fn scan_backward_body(
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
    let mut dh = vec![0.0f32; di * n];
    let (mut db, mut dc) = (vec![0.0f32; n], vec![0.0f32; n]);
    for bi in 0..batch {
        dh.fill(0.0);
        for ti in (0..t).rev() {
            let row = bi * t + ti;
            let bcr = &bc[row * bc_stride..(row + 1) * bc_stride];
            let (b, c) = (&bcr[b_off..b_off + n], &bcr[c_off..c_off + n]);
            let h = &h_all[row * di * n..(row + 1) * di * n];
            let h_prev = (ti > 0).then(|| &h_all[(row - 1) * di * n..row * di * n]);
            db.fill(0.0);
            dc.fill(0.0);
            for i in 0..di {
                let (dyi, dti, ui) = (dy[row * di + i], dt[row * di + i], u[row * di + i]);
                dd_skip[i] += dyi * ui;
                let mut du_acc = dyi * d_skip[i];
                let mut ddt_acc = 0.0;
                for s in 0..n {
                    let k = i * n + s;
                    dc[s] += dyi * h[k];
                    let g = dh[k] + dyi * c[s];
                    let decay = exp_fast(dti * a[k]);
                    let hp = h_prev.map_or(0.0, |hp| hp[k]);
                    let g_decay = g * hp * decay; // ∂L/∂(dt·A) through exp
                    ddt_acc += g_decay * a[k] + g * ui * b[s];
                    da[k] += g_decay * dti;
                    du_acc += g * dti * b[s];
                    db[s] += g * dti * ui;
                    dh[k] = g * decay;
                }
                du[row * di + i] += du_acc;
                ddt[row * di + i] += ddt_acc;
            }
            let dbcr = &mut dbc[row * bc_stride..(row + 1) * bc_stride];
            for s in 0..n {
                dbcr[b_off + s] += db[s];
                dbcr[c_off + s] += dc[s];
            }
        }
    }
}
