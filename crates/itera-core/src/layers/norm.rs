//! RMSNorm: `y = x / sqrt(mean(x²) + 1e-5) ⊙ w` over the last dimension.

pub const EPS: f32 = 1e-5;

/// Normalises each row of `x` (rows × d) into `out`; `rstd[r]` = 1/sqrt(mean(x²)+eps) is kept
/// for the backward.
pub fn rmsnorm_forward(out: &mut [f32], rstd: &mut [f32], x: &[f32], w: &[f32], d: usize) {
    for ((o, xr), r) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(rstd.iter_mut()) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
        *r = 1.0 / (ms + EPS).sqrt();
        for ((oi, xi), wi) in o.iter_mut().zip(xr).zip(w) {
            *oi = xi * *r * wi;
        }
    }
}

/// With r = rstd and g = dout ⊙ w:  dx += r·g − (r³/d)·x·Σ(g⊙x);  dw += Σ_rows dout ⊙ x·r.
pub fn rmsnorm_backward(dx: &mut [f32], dw: &mut [f32], dout: &[f32], x: &[f32], w: &[f32], rstd: &[f32], d: usize) {
    for (((dxr, dor), xr), &r) in dx
        .chunks_exact_mut(d)
        .zip(dout.chunks_exact(d))
        .zip(x.chunks_exact(d))
        .zip(rstd)
    {
        let gx: f32 = dor.iter().zip(w).zip(xr).map(|((g, w), x)| g * w * x).sum();
        let c = r * r * r * gx / d as f32;
        for i in 0..d {
            dxr[i] += r * dor[i] * w[i] - c * xr[i];
            dw[i] += dor[i] * xr[i] * r;
        }
    }
}
