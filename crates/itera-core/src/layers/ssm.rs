//! The Mamba-1 selective SSM block (SPEC "SSM block"):
//! `[u, z] = in_proj(x)`; `u = silu(conv(u) + conv_b)`; `[dt_r, B, C] = x_proj(u)`;
//! `dt = softplus(dt_proj(dt_r) + dt_b)`; `y = scan(u, dt, A, B, C) + Dskip ⊙ u`;
//! `out = out_proj(y ⊙ silu(z))`. Input is the block's rmsnorm'ed residual.

use super::activations::{sigmoid, silu, silu_grad, softplus};
use super::conv::{conv_backward, conv_forward, conv_step, conv_tail, ConvDims};
use super::linear::linear_backward;
use super::norm::{rmsnorm_backward, rmsnorm_forward};
use super::scan::{scan_backward, scan_forward, scan_step, ScanDims};
use super::scratch::{zeroed, SsmGradScratch};
use crate::config::Config;
use crate::params::LayerParams;
use crate::weights::{Grads, Weights};

/// Activations of one SSM block over a batch, kept for the backward. Shapes in comments use
/// M = B·T rows.
#[derive(Clone, Debug, Default)]
pub struct SsmCache {
    pub x: Vec<f32>,      // (M, D) block input (the residual stream)
    pub xn: Vec<f32>,     // (M, D) rmsnorm(x)
    pub rstd: Vec<f32>,   // (M)
    pub xz: Vec<f32>,     // (M, 2Di) in_proj output [u_pre | z]
    pub conv: Vec<f32>,   // (M, Di) conv output before silu
    pub u: Vec<f32>,      // (M, Di) silu(conv)
    pub bc: Vec<f32>,     // (M, R+2N) x_proj output [dt_r | B | C]
    pub dtr: Vec<f32>,    // (M, R) dt_r, contiguous for dt_proj
    pub dt_pre: Vec<f32>, // (M, Di) dt_proj(dt_r) + dt_b
    pub dt: Vec<f32>,     // (M, Di) softplus(dt_pre)
    pub a: Vec<f32>,      // (Di, N) A = −exp(A_log)
    pub h_all: Vec<f32>,  // (M, Di, N) every state; empty unless training
    pub h_last: Vec<f32>, // (B, Di, N) final state per sequence
    pub y: Vec<f32>,      // (M, Di) scan output
    pub g: Vec<f32>,      // (M, Di) y ⊙ silu(z)
}

/// Batch shape of a forward: `batch` sequences of `t` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchDims {
    pub batch: usize,
    pub t: usize,
}

impl BatchDims {
    pub fn rows(&self) -> usize {
        self.batch * self.t
    }
}

fn dims(c: &Config, bd: BatchDims) -> (ConvDims, ScanDims) {
    let (di, n, r) = (c.d_inner(), c.d_state, c.dt_rank);
    let conv = ConvDims {
        batch: bd.batch,
        t: bd.t,
        c: di,
        width: c.d_conv,
        x_stride: 2 * di,
    };
    let scan = ScanDims {
        batch: bd.batch,
        t: bd.t,
        di,
        n,
        bc_stride: c.x_proj_out(),
        b_off: r,
        c_off: r + n,
    };
    (conv, scan)
}

/// A = −exp(A_log) (Di, N).
pub fn a_matrix(a_log: &[f32]) -> Vec<f32> {
    let mut a = Vec::new();
    a_matrix_into(a_log, &mut a);
    a
}

/// `a_matrix` into `a`'s buffer.
pub fn a_matrix_into(a_log: &[f32], a: &mut Vec<f32>) {
    a.clear();
    a.extend(a_log.iter().map(|&v| -v.exp()));
}

/// Runs the block on `x` (M, D) and writes its output (before the residual add) to `out`.
/// `init` continues a single sequence from a decode state (inference only: the backward
/// assumes a zero initial state).
#[allow(clippy::too_many_arguments)]
pub fn ssm_forward(
    out: &mut [f32],
    x: &[f32],
    w: &Weights,
    p: &LayerParams,
    bd: BatchDims,
    train: bool,
    init: Option<&SsmState>,
    cache: &mut SsmCache,
) {
    assert!(
        init.is_none() || (!train && bd.batch == 1),
        "a forward from a state is single-sequence inference"
    );
    let c = &w.config;
    let (m, d, di, n, r) = (bd.rows(), c.d_model, c.d_inner(), c.d_state, c.dt_rank);
    let (conv_dims, scan_dims) = dims(c, bd);
    cache.x.clear();
    cache.x.extend_from_slice(&x[..m * d]);
    zeroed(&mut cache.xn, m * d);
    zeroed(&mut cache.rstd, m);
    rmsnorm_forward(&mut cache.xn, &mut cache.rstd, x, w.vector(p.ssm_norm), d);
    zeroed(&mut cache.xz, m * 2 * di);
    w.matrix(p.in_proj).matmul(&cache.xn, m, &mut cache.xz);
    zeroed(&mut cache.conv, m * di);
    conv_forward(
        &mut cache.conv,
        &cache.xz,
        w.vector(p.conv_w),
        w.vector(p.conv_b),
        init.map(|s| &s.conv_tail[..]),
        conv_dims,
    );
    cache.u.clear();
    cache.u.extend(cache.conv.iter().map(|&v| silu(v)));
    zeroed(&mut cache.bc, m * c.x_proj_out());
    w.matrix(p.x_proj).matmul(&cache.u, m, &mut cache.bc);
    cache.dtr.clear();
    cache
        .dtr
        .extend(cache.bc.chunks_exact(c.x_proj_out()).flat_map(|row| &row[..r]));
    zeroed(&mut cache.dt_pre, m * di);
    w.matrix(p.dt_proj).matmul(&cache.dtr, m, &mut cache.dt_pre);
    for (row, bias) in cache
        .dt_pre
        .chunks_exact_mut(di)
        .zip(std::iter::repeat(w.vector(p.dt_b)))
    {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }
    cache.dt.clear();
    cache.dt.extend(cache.dt_pre.iter().map(|&v| softplus(v)));
    a_matrix_into(w.vector(p.a_log), &mut cache.a);
    zeroed(&mut cache.y, m * di);
    zeroed(&mut cache.h_last, bd.batch * di * n);
    if let Some(s) = init {
        cache.h_last.copy_from_slice(&s.h);
    }
    if train {
        zeroed(&mut cache.h_all, m * di * n);
    } else {
        cache.h_all.clear();
    }
    let h_all = train.then_some(&mut cache.h_all[..]);
    scan_forward(
        &mut cache.y,
        h_all,
        &mut cache.h_last,
        &cache.u,
        &cache.dt,
        &cache.a,
        &cache.bc,
        w.vector(p.d_skip),
        scan_dims,
    );
    zeroed(&mut cache.g, m * di);
    for ((g, y), xz) in cache
        .g
        .chunks_exact_mut(di)
        .zip(cache.y.chunks_exact(di))
        .zip(cache.xz.chunks_exact(2 * di))
    {
        for i in 0..di {
            g[i] = y[i] * silu(xz[di + i]);
        }
    }
    w.matrix(p.out_proj).matmul(&cache.g, m, out);
}

/// Backward of `ssm_forward`: `dx` (M, D) += ∂L/∂x given `dout` (M, D); weight gradients are
/// added into `grads`. Needs a cache filled with `train = true` and f32 weights.
#[allow(clippy::too_many_arguments)]
pub fn ssm_backward(
    dx: &mut [f32],
    dout: &[f32],
    w: &Weights,
    p: &LayerParams,
    bd: BatchDims,
    cache: &SsmCache,
    s: &mut SsmGradScratch,
    grads: &mut Grads,
) {
    let c = &w.config;
    let (m, d, di, r, xo) = (bd.rows(), c.d_model, c.d_inner(), c.dt_rank, c.x_proj_out());
    let (conv_dims, scan_dims) = dims(c, bd);
    let g = &mut grads.tensors;

    // out = out_proj(g),  g = y ⊙ silu(z)
    let dg = zeroed(&mut s.dg, m * di);
    linear_backward(
        Some(&mut *dg),
        &mut g[p.out_proj],
        dout,
        &cache.g,
        w.f32(p.out_proj),
        m,
        d,
        di,
    );
    let (dxz, dy) = (zeroed(&mut s.dxz, m * 2 * di), zeroed(&mut s.dy, m * di));
    for row in 0..m {
        for i in 0..di {
            let z = cache.xz[row * 2 * di + di + i];
            let dgi = dg[row * di + i];
            dy[row * di + i] = dgi * silu(z);
            dxz[row * 2 * di + di + i] = dgi * cache.y[row * di + i] * silu_grad(z);
        }
    }

    // y = scan(u, dt, A, B, C)
    let (du, ddt) = (zeroed(&mut s.du, m * di), zeroed(&mut s.ddt, m * di));
    let (da, dbc) = (zeroed(&mut s.da, cache.a.len()), zeroed(&mut s.dbc, m * xo));
    scan_backward(
        du,
        ddt,
        da,
        dbc,
        &mut g[p.d_skip],
        dy,
        &cache.u,
        &cache.dt,
        &cache.a,
        &cache.bc,
        w.vector(p.d_skip),
        &cache.h_all,
        scan_dims,
        &mut s.scan,
    );
    // A = −exp(A_log)  ⇒  ∂A/∂A_log = A
    for ((ga, da), a) in g[p.a_log].iter_mut().zip(da.iter()).zip(&cache.a) {
        *ga += da * a;
    }

    // dt = softplus(dt_proj(dt_r) + dt_b)
    for (v, pre) in ddt.iter_mut().zip(&cache.dt_pre) {
        *v *= sigmoid(*pre);
    }
    for row in ddt.chunks_exact(di) {
        g[p.dt_b].iter_mut().zip(row).for_each(|(gb, v)| *gb += v);
    }
    let ddtr = zeroed(&mut s.ddtr, m * r);
    linear_backward(
        Some(&mut *ddtr),
        &mut g[p.dt_proj],
        ddt,
        &cache.dtr,
        w.f32(p.dt_proj),
        m,
        di,
        r,
    );
    for (dst, src) in dbc.chunks_exact_mut(xo).zip(ddtr.chunks_exact(r)) {
        dst[..r].copy_from_slice(src);
    }

    // [dt_r, B, C] = x_proj(u)
    linear_backward(
        Some(&mut *du),
        &mut g[p.x_proj],
        dbc,
        &cache.u,
        w.f32(p.x_proj),
        m,
        xo,
        di,
    );

    // u = silu(conv(u_pre))
    for (v, pre) in du.iter_mut().zip(&cache.conv) {
        *v *= silu_grad(*pre);
    }
    let (gw, gb) = two_mut(g, p.conv_w, p.conv_b);
    conv_backward(dxz, gw, gb, du, &cache.xz, w.vector(p.conv_w), conv_dims);

    // [u_pre, z] = in_proj(xn)
    let dxn = zeroed(&mut s.dxn, m * d);
    linear_backward(
        Some(&mut *dxn),
        &mut g[p.in_proj],
        dxz,
        &cache.xn,
        w.f32(p.in_proj),
        m,
        2 * di,
        d,
    );
    rmsnorm_backward(
        dx,
        &mut g[p.ssm_norm],
        dxn,
        &cache.x,
        w.vector(p.ssm_norm),
        &cache.rstd,
        d,
    );
}

/// Two distinct mutable gradient buffers.
pub(crate) fn two_mut(g: &mut [Vec<f32>], a: usize, b: usize) -> (&mut [f32], &mut [f32]) {
    assert_ne!(a, b);
    if a < b {
        let (lo, hi) = g.split_at_mut(b);
        (&mut lo[a], &mut hi[0])
    } else {
        let (lo, hi) = g.split_at_mut(a);
        (&mut hi[0], &mut lo[b])
    }
}

/// Recurrent state of one SSM block: all a decode step needs from the past.
#[derive(Clone, Debug)]
pub struct SsmState {
    pub h: Vec<f32>,         // (Di, N)
    pub conv_tail: Vec<f32>, // (K−1, Di) previous conv inputs, oldest first
}

impl SsmState {
    pub fn new(c: &Config) -> SsmState {
        SsmState {
            h: vec![0.0; c.d_inner() * c.d_state],
            conv_tail: vec![0.0; (c.d_conv - 1) * c.d_inner()],
        }
    }

    /// The state of sequence `bi` after a forward over the whole batch (which, for a
    /// continuation, started from this state).
    pub fn from_cache(&mut self, c: &Config, cache: &SsmCache, bd: BatchDims, bi: usize) {
        let len = self.h.len();
        self.h.copy_from_slice(&cache.h_last[bi * len..(bi + 1) * len]);
        conv_tail(&mut self.conv_tail, &cache.xz, bi, dims(c, bd).0);
    }
}

/// Per-token scratch buffers, allocated once per decode `State`.
#[derive(Clone, Debug)]
pub struct SsmScratch {
    xn: Vec<f32>,
    xz: Vec<f32>,
    conv: Vec<f32>,
    bc: Vec<f32>,
    dt: Vec<f32>,
    y: Vec<f32>,
}

impl SsmScratch {
    pub fn new(c: &Config) -> SsmScratch {
        let di = c.d_inner();
        SsmScratch {
            xn: vec![0.0; c.d_model],
            xz: vec![0.0; 2 * di],
            conv: vec![0.0; di],
            bc: vec![0.0; c.x_proj_out()],
            dt: vec![0.0; di],
            y: vec![0.0; di],
        }
    }
}

/// One decode step of the block on the residual `x` (D): writes the block output to `out`.
/// `a` is A = −exp(A_log) for this layer, precomputed once per state.
pub fn ssm_step(
    out: &mut [f32],
    x: &[f32],
    w: &Weights,
    p: &LayerParams,
    a: &[f32],
    st: &mut SsmState,
    s: &mut SsmScratch,
) {
    let c = &w.config;
    let (di, n, r, width) = (c.d_inner(), c.d_state, c.dt_rank, c.d_conv);
    let mut rstd = [0.0];
    rmsnorm_forward(&mut s.xn, &mut rstd, x, w.vector(p.ssm_norm), c.d_model);
    w.matrix(p.in_proj).matvec(&s.xn, &mut s.xz);
    let (u_pre, z) = s.xz.split_at_mut(di);
    conv_step(
        &mut s.conv,
        u_pre,
        &mut st.conv_tail,
        w.vector(p.conv_w),
        w.vector(p.conv_b),
        di,
        width,
    );
    for v in s.conv.iter_mut() {
        *v = silu(*v);
    }
    let u = &s.conv;
    w.matrix(p.x_proj).matvec(u, &mut s.bc);
    w.matrix(p.dt_proj).matvec(&s.bc[..r], &mut s.dt);
    for (v, b) in s.dt.iter_mut().zip(w.vector(p.dt_b)) {
        *v = softplus(*v + b);
    }
    let (b, cc) = (&s.bc[r..r + n], &s.bc[r + n..r + 2 * n]);
    scan_step(&mut s.y, &mut st.h, u, &s.dt, a, b, cc, w.vector(p.d_skip), n);
    for (y, z) in s.y.iter_mut().zip(z.iter()) {
        *y *= silu(*z);
    }
    w.matrix(p.out_proj).matvec(&s.y, out);
}
