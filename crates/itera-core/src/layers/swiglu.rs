//! SwiGLU feed-forward: `out = W2 (silu(W1 x) ⊙ W3 x)`, used for dense layers and as each
//! MoE expert.

use super::activations::{silu, silu_grad};
use super::linear::linear_backward;
use super::scratch::{zeroed, SwigluGradScratch};
use crate::family::Architecture;
use crate::params::SwigluParams;
use crate::weights::{Grads, Weights};

/// Activations of one SwiGLU over `n` rows.
#[derive(Clone, Debug, Default)]
pub struct SwigluCache {
    pub a: Vec<f32>, // (n, F) W1 x
    pub b: Vec<f32>, // (n, F) W3 x
    pub h: Vec<f32>, // (n, F) silu(a) ⊙ b
}

/// out (n, D) = SwiGLU(x (n, D)).
pub fn swiglu_forward<A: Architecture>(
    out: &mut [f32],
    x: &[f32],
    n: usize,
    w: &Weights<A>,
    p: &SwigluParams,
    cache: &mut SwigluCache,
) {
    let f = w.matrix(p.w1).rows;
    for v in [&mut cache.a, &mut cache.b, &mut cache.h] {
        v.clear();
        v.resize(n * f, 0.0);
    }
    w.matrix(p.w1).matmul(x, n, &mut cache.a);
    w.matrix(p.w3).matmul(x, n, &mut cache.b);
    for ((h, a), b) in cache.h.iter_mut().zip(&cache.a).zip(&cache.b) {
        *h = silu(*a) * b;
    }
    w.matrix(p.w2).matmul(&cache.h, n, out);
}

/// dx (n, D) += ∂L/∂x; weight gradients added into `grads`.
#[allow(clippy::too_many_arguments)]
pub fn swiglu_backward<A: Architecture>(
    dx: &mut [f32],
    dout: &[f32],
    x: &[f32],
    n: usize,
    w: &Weights<A>,
    p: &SwigluParams,
    cache: &SwigluCache,
    s: &mut SwigluGradScratch,
    grads: &mut Grads,
) {
    let (d, f) = (w.matrix(p.w2).rows, w.matrix(p.w1).rows);
    let g = &mut grads.tensors;
    let dh = zeroed(&mut s.dh, n * f);
    linear_backward(Some(&mut *dh), &mut g[p.w2], dout, &cache.h, w.f32(p.w2), n, d, f);
    let (da, db) = (zeroed(&mut s.da, n * f), zeroed(&mut s.db, n * f));
    for i in 0..n * f {
        da[i] = dh[i] * cache.b[i] * silu_grad(cache.a[i]);
        db[i] = dh[i] * silu(cache.a[i]);
    }
    linear_backward(Some(&mut *dx), &mut g[p.w1], da, x, w.f32(p.w1), n, f, d);
    linear_backward(Some(dx), &mut g[p.w3], db, x, w.f32(p.w3), n, f, d);
}

/// One row: out (D) = SwiGLU(x (D)); `a`, `b` are F-sized scratch.
pub fn swiglu_step<A: Architecture>(
    out: &mut [f32],
    x: &[f32],
    w: &Weights<A>,
    p: &SwigluParams,
    a: &mut [f32],
    b: &mut [f32],
) {
    w.matrix(p.w1).matvec(x, a);
    w.matrix(p.w3).matvec(x, b);
    for (a, b) in a.iter_mut().zip(b.iter()) {
        *a = silu(*a) * b;
    }
    w.matrix(p.w2).matvec(a, out);
}
