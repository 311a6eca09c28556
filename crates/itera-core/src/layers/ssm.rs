//! The Mamba-1 selective SSM block (SPEC "SSM block"):
//! `[u, z] = in_proj(x)`; `u = silu(conv(u) + conv_b)`; `[dt_r, B, C] = x_proj(u)`;
//! `dt = softplus(dt_proj(dt_r) + dt_b)`; `y = scan(u, dt, A, B, C) + Dskip ⊙ u`;
//! `out = out_proj(y ⊙ silu(z))`. Input is the block's rmsnorm'ed residual.

use super::activations::{sigmoid, silu, silu_grad, softplus};
use super::conv::{conv_backward, conv_forward, conv_step, conv_tail, ConvDims};
use super::linear::linear_backward;
use super::norm::{rmsnorm_backward, rmsnorm_forward};
use super::scan::{scan_backward, scan_forward, scan_step, ScanDims};
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
        k: c.d_conv,
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

fn resize(v: &mut Vec<f32>, n: usize) {
    v.clear();
    v.resize(n, 0.0);
}

/// A = −exp(A_log) (Di, N).
pub fn a_matrix(a_log: &[f32]) -> Vec<f32> {
    a_log.iter().map(|&v| -v.exp()).collect()
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
    let k = cache;
    k.x.clear();
    k.x.extend_from_slice(&x[..m * d]);
    resize(&mut k.xn, m * d);
    resize(&mut k.rstd, m);
    rmsnorm_forward(&mut k.xn, &mut k.rstd, x, w.vector(p.ssm_norm), d);
    resize(&mut k.xz, m * 2 * di);
    w.matrix(p.in_proj).matmul(&k.xn, m, &mut k.xz);
    resize(&mut k.conv, m * di);
    conv_forward(
        &mut k.conv,
        &k.xz,
        w.vector(p.conv_w),
        w.vector(p.conv_b),
        init.map(|s| &s.conv_tail[..]),
        conv_dims,
    );
    k.u.clear();
    k.u.extend(k.conv.iter().map(|&v| silu(v)));
    resize(&mut k.bc, m * c.x_proj_out());
    w.matrix(p.x_proj).matmul(&k.u, m, &mut k.bc);
    k.dtr.clear();
    k.dtr
        .extend(k.bc.chunks_exact(c.x_proj_out()).flat_map(|row| &row[..r]));
    resize(&mut k.dt_pre, m * di);
    w.matrix(p.dt_proj).matmul(&k.dtr, m, &mut k.dt_pre);
    for (row, bias) in k.dt_pre.chunks_exact_mut(di).zip(std::iter::repeat(w.vector(p.dt_b))) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }
    k.dt.clear();
    k.dt.extend(k.dt_pre.iter().map(|&v| softplus(v)));
    k.a = a_matrix(w.vector(p.a_log));
    resize(&mut k.y, m * di);
    resize(&mut k.h_last, bd.batch * di * n);
    if let Some(s) = init {
        k.h_last.copy_from_slice(&s.h);
    }
    if train {
        resize(&mut k.h_all, m * di * n);
    } else {
        k.h_all.clear();
    }
    let h_all = train.then_some(&mut k.h_all[..]);
    scan_forward(
        &mut k.y,
        h_all,
        &mut k.h_last,
        &k.u,
        &k.dt,
        &k.a,
        &k.bc,
        w.vector(p.d_skip),
        scan_dims,
    );
    resize(&mut k.g, m * di);
    for ((g, y), xz) in
        k.g.chunks_exact_mut(di)
            .zip(k.y.chunks_exact(di))
            .zip(k.xz.chunks_exact(2 * di))
    {
        for i in 0..di {
            g[i] = y[i] * silu(xz[di + i]);
        }
    }
    w.matrix(p.out_proj).matmul(&k.g, m, out);
}

/// Backward of `ssm_forward`: `dx` (M, D) += ∂L/∂x given `dout` (M, D); weight gradients are
/// added into `grads`. Needs a cache filled with `train = true` and f32 weights.
pub fn ssm_backward(
    dx: &mut [f32],
    dout: &[f32],
    w: &Weights,
    p: &LayerParams,
    bd: BatchDims,
    k: &SsmCache,
    grads: &mut Grads,
) {
    let c = &w.config;
    let (m, d, di, r, xo) = (bd.rows(), c.d_model, c.d_inner(), c.dt_rank, c.x_proj_out());
    let (conv_dims, scan_dims) = dims(c, bd);
    let g = &mut grads.tensors;

    // out = out_proj(g),  g = y ⊙ silu(z)
    let mut dg = vec![0.0; m * di];
    linear_backward(
        Some(&mut dg),
        &mut g[p.out_proj],
        dout,
        &k.g,
        w.f32(p.out_proj),
        m,
        d,
        di,
    );
    let mut dxz = vec![0.0; m * 2 * di];
    let mut dy = vec![0.0; m * di];
    for row in 0..m {
        for i in 0..di {
            let z = k.xz[row * 2 * di + di + i];
            let dgi = dg[row * di + i];
            dy[row * di + i] = dgi * silu(z);
            dxz[row * 2 * di + di + i] = dgi * k.y[row * di + i] * silu_grad(z);
        }
    }

    // y = scan(u, dt, A, B, C)
    let (mut du, mut ddt, mut da) = (vec![0.0; m * di], vec![0.0; m * di], vec![0.0; k.a.len()]);
    let mut dbc = vec![0.0; m * xo];
    scan_backward(
        &mut du,
        &mut ddt,
        &mut da,
        &mut dbc,
        &mut g[p.d_skip],
        &dy,
        &k.u,
        &k.dt,
        &k.a,
        &k.bc,
        w.vector(p.d_skip),
        &k.h_all,
        scan_dims,
    );
    // A = −exp(A_log)  ⇒  ∂A/∂A_log = A
    for ((ga, da), a) in g[p.a_log].iter_mut().zip(&da).zip(&k.a) {
        *ga += da * a;
    }

    // dt = softplus(dt_proj(dt_r) + dt_b)
    for (v, pre) in ddt.iter_mut().zip(&k.dt_pre) {
        *v *= sigmoid(*pre);
    }
    for row in ddt.chunks_exact(di) {
        g[p.dt_b].iter_mut().zip(row).for_each(|(gb, v)| *gb += v);
    }
    let mut ddtr = vec![0.0; m * r];
    linear_backward(
        Some(&mut ddtr),
        &mut g[p.dt_proj],
        &ddt,
        &k.dtr,
        w.f32(p.dt_proj),
        m,
        di,
        r,
    );
    for (dst, src) in dbc.chunks_exact_mut(xo).zip(ddtr.chunks_exact(r)) {
        dst[..r].copy_from_slice(src);
    }

    // [dt_r, B, C] = x_proj(u)
    linear_backward(Some(&mut du), &mut g[p.x_proj], &dbc, &k.u, w.f32(p.x_proj), m, xo, di);

    // u = silu(conv(u_pre))
    for (v, pre) in du.iter_mut().zip(&k.conv) {
        *v *= silu_grad(*pre);
    }
    let (gw, gb) = two_mut(g, p.conv_w, p.conv_b);
    conv_backward(&mut dxz, gw, gb, &du, &k.xz, w.vector(p.conv_w), conv_dims);

    // [u_pre, z] = in_proj(xn)
    let mut dxn = vec![0.0; m * d];
    linear_backward(
        Some(&mut dxn),
        &mut g[p.in_proj],
        &dxz,
        &k.xn,
        w.f32(p.in_proj),
        m,
        2 * di,
        d,
    );
    rmsnorm_backward(dx, &mut g[p.ssm_norm], &dxn, &k.x, w.vector(p.ssm_norm), &k.rstd, d);
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
    pub fn from_cache(&mut self, c: &Config, k: &SsmCache, bd: BatchDims, bi: usize) {
        let len = self.h.len();
        self.h.copy_from_slice(&k.h_last[bi * len..(bi + 1) * len]);
        conv_tail(&mut self.conv_tail, &k.xz, bi, dims(c, bd).0);
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
    let (di, n, r, k) = (c.d_inner(), c.d_state, c.dt_rank, c.d_conv);
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
        k,
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
