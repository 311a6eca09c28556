// Prelude: activations.wgsl
//
// The SSM block's sequence kernels for training, over `batch` sequences of `t` tokens
// (M = batch·t rows, every sequence starting from zero state):
// - conv_forward: causal depthwise conv of u_pre (the first Di columns of xz) + bias, and
//   u = silu(conv); one thread per (row, channel);
// - conv_backward_input / conv_backward_weight: with dconv = du ⊙ silu'(conv) formed on the fly,
//   dxz[:, :Di] = Σ taps, and dconv_w += Σ_t dconv·u_pre, dconv_b += Σ_t dconv;
// - scan_forward: h_t = exp(dt·A) ⊙ h_{t−1} + dt·u·B_t, y = h_t·C_t + Dskip·u, every state h_t
//   kept in `hs` (M, Di, N) for the backward; one thread per (sequence, channel);
// - scan_backward: the same recurrence in reverse time (g = ∂L/∂h_t carried backwards,
//   ∂h_t/∂h_{t−1} = exp(dt·A)); one thread per channel walks every sequence, so the A_log and
//   Dskip gradients need no cross-thread sum. The B gradient is a sum over channels: each
//   thread leaves its share in `hs` (h_t is dead once step t is done) and state_reduce adds
//   them up, as it does for the C gradient (Σ_i dy·h_t, taken before the backward scan).
// A = −exp(A_log); dt is the softplus'ed step size. B and C sit in the x_proj output rows
// (stride xo) at columns b_col and b_col + n.
// CPU twins: layers::conv::{conv_forward, conv_backward}, layers::scan::{scan_forward,
// scan_backward}, and the silu around the conv in layers::ssm.

struct Ssm {
    batch: u32,
    t: u32,
    di: u32,
    n: u32,
    k: u32,
    xz_off: u32,
    conv_off: u32,
    u_off: u32,
    dt_off: u32,
    bc_off: u32,
    xo: u32,
    b_col: u32,
    y_off: u32,
    conv_w: u32,
    conv_b: u32,
    a_log: u32,
    d_skip: u32,
    dxz_off: u32,
    du_off: u32,
    ddt_off: u32,
    dy_off: u32,
    dbc_off: u32,
    g_conv_w: u32,
    g_conv_b: u32,
    g_a_log: u32,
    g_d_skip: u32,
    // state_reduce: 0 writes dC = Σ_i dy·h, 1 writes dB = Σ_i (the shares scan_backward left).
    mode: u32,
}

@group(0) @binding(0) var<uniform> p: Ssm;
@group(0) @binding(1) var<storage, read_write> prm: array<f32>;
@group(0) @binding(2) var<storage, read_write> grd: array<f32>;
@group(0) @binding(3) var<storage, read_write> act: array<f32>;
@group(0) @binding(5) var<storage, read_write> hs: array<f32>;

// The most states a channel can have (scan_backward keeps them in registers).
const MAX_N: u32 = 64u;

@compute @workgroup_size(64)
fn conv_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let rows = p.batch * p.t;
    let c = gid.x % p.di;
    let row = gid.x / p.di;
    if (row >= rows) {
        return;
    }
    let ti = row % p.t;
    var acc = prm[p.conv_b + c];
    for (var j = 0u; j < p.k; j++) {
        // Tap j reads the input k − 1 − j steps back, zero before the sequence starts.
        if (ti + j >= p.k - 1u) {
            let src = row + j + 1u - p.k;
            acc += prm[p.conv_w + c * p.k + j] * act[p.xz_off + src * 2u * p.di + c];
        }
    }
    act[p.conv_off + row * p.di + c] = acc;
    act[p.u_off + row * p.di + c] = silu(acc);
}

fn dconv(row: u32, c: u32) -> f32 {
    let i = row * p.di + c;
    return act[p.du_off + i] * silu_grad(act[p.conv_off + i]);
}

@compute @workgroup_size(64)
fn conv_backward_input(@builtin(global_invocation_id) gid: vec3<u32>) {
    let rows = p.batch * p.t;
    let c = gid.x % p.di;
    let row = gid.x / p.di;
    if (row >= rows) {
        return;
    }
    let ti = row % p.t;
    var acc = 0.0;
    for (var j = 0u; j < p.k; j++) {
        // This input feeds tap j of the output k − 1 − j steps later, if that is in the sequence.
        let later = p.k - 1u - j;
        if (ti + later < p.t) {
            acc += dconv(row + later, c) * prm[p.conv_w + c * p.k + j];
        }
    }
    act[p.dxz_off + row * 2u * p.di + c] = acc;
}

// One thread per (channel, tap), tap k being the bias.
@compute @workgroup_size(64)
fn conv_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x / (p.k + 1u);
    let j = gid.x % (p.k + 1u);
    if (c >= p.di) {
        return;
    }
    var acc = 0.0;
    for (var row = 0u; row < p.batch * p.t; row++) {
        if (j == p.k) {
            acc += dconv(row, c);
        } else if ((row % p.t) + j >= p.k - 1u) {
            acc += dconv(row, c) * act[p.xz_off + (row + j + 1u - p.k) * 2u * p.di + c];
        }
    }
    if (j == p.k) {
        grd[p.g_conv_b + c] += acc;
    } else {
        grd[p.g_conv_w + c * p.k + j] += acc;
    }
}

@compute @workgroup_size(64)
fn scan_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x % p.di;
    let b = gid.x / p.di;
    if (b >= p.batch) {
        return;
    }
    for (var ti = 0u; ti < p.t; ti++) {
        let row = b * p.t + ti;
        let dt = act[p.dt_off + row * p.di + i];
        let u = act[p.u_off + row * p.di + i];
        let bc = p.bc_off + row * p.xo + p.b_col;
        var y = 0.0;
        for (var s = 0u; s < p.n; s++) {
            let a = -exp(prm[p.a_log + i * p.n + s]);
            let h = (row * p.di + i) * p.n + s;
            var prev = 0.0;
            if (ti > 0u) {
                prev = hs[h - p.di * p.n];
            }
            hs[h] = exp(dt * a) * prev + dt * u * act[bc + s];
            y += hs[h] * act[bc + p.n + s];
        }
        act[p.y_off + row * p.di + i] = y + prm[p.d_skip + i] * u;
    }
}

@compute @workgroup_size(64)
fn scan_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.di) {
        return;
    }
    var dh: array<f32, MAX_N>;
    var da: array<f32, MAX_N>;
    for (var s = 0u; s < p.n; s++) {
        da[s] = 0.0;
    }
    var dd = 0.0;
    for (var b = 0u; b < p.batch; b++) {
        for (var s = 0u; s < p.n; s++) {
            dh[s] = 0.0;
        }
        for (var step = 0u; step < p.t; step++) {
            let ti = p.t - 1u - step;
            let row = b * p.t + ti;
            let at = row * p.di + i;
            let dy = act[p.dy_off + at];
            let dt = act[p.dt_off + at];
            let u = act[p.u_off + at];
            let bc = p.bc_off + row * p.xo + p.b_col;
            dd += dy * u;
            var ddt = 0.0;
            var du = dy * prm[p.d_skip + i];
            for (var s = 0u; s < p.n; s++) {
                let a = -exp(prm[p.a_log + i * p.n + s]);
                let h = at * p.n + s;
                var prev = 0.0;
                if (ti > 0u) {
                    prev = hs[h - p.di * p.n];
                }
                let bs = act[bc + s];
                let g = dh[s] + dy * act[bc + p.n + s];
                let decay = exp(dt * a);
                let g_decay = g * prev * decay;
                ddt += g_decay * a + g * u * bs;
                da[s] += g_decay * dt;
                du += g * dt * bs;
                // h_t is not read again: its slot takes this channel's share of dB_t.
                hs[h] = g * dt * u;
                dh[s] = g * decay;
            }
            act[p.du_off + at] = du;
            act[p.ddt_off + at] = ddt;
        }
    }
    // A = −exp(A_log) ⇒ ∂A/∂A_log = A.
    for (var s = 0u; s < p.n; s++) {
        grd[p.g_a_log + i * p.n + s] += da[s] * -exp(prm[p.a_log + i * p.n + s]);
    }
    grd[p.g_d_skip + i] += dd;
}

// One thread per (row, state): dC (mode 0) or dB (mode 1) of that row, summed over channels.
@compute @workgroup_size(64)
fn state_reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
    let s = gid.x % p.n;
    let row = gid.x / p.n;
    if (row >= p.batch * p.t) {
        return;
    }
    var acc = 0.0;
    for (var i = 0u; i < p.di; i++) {
        let h = hs[(row * p.di + i) * p.n + s];
        if (p.mode == 0u) {
            acc += act[p.dy_off + row * p.di + i] * h;
        } else {
            acc += h;
        }
    }
    let col = select(p.b_col + p.n, p.b_col, p.mode == 1u);
    act[p.dbc_off + row * p.xo + col + s] = acc;
}
