// RMSNorm for training over `rows` rows of width d: y = x · rstd · w, rstd = 1/sqrt(mean(x²) + eps)
// (kept for the backward), and its backward
//   dx (+)= rstd·g − (rstd³/d)·x·Σ(g⊙x),  g = dy ⊙ w      (rmsnorm_backward, one row per workgroup)
//   dw += Σ_rows dy ⊙ x · rstd                           (rmsnorm_weight_grad, one column per thread)
// x, y, dy, dx live in the activations, w in the parameters, dw in the gradients.
// CPU twin: layers::norm::{rmsnorm_forward, rmsnorm_backward}.

struct Norm {
    rows: u32,
    d: u32,
    x_off: u32,
    y_off: u32,
    rstd_off: u32,
    w_off: u32,
    dy_off: u32,
    dx_off: u32,
    gw_off: u32,
    // rmsnorm_backward: 1 adds into dx, 0 overwrites it.
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> p: Norm;
@group(0) @binding(1) var<storage, read_write> prm: array<f32>;
@group(0) @binding(2) var<storage, read_write> grd: array<f32>;
@group(0) @binding(3) var<storage, read_write> act: array<f32>;

const WG: u32 = 64u;
const EPS: f32 = 1e-5;
var<workgroup> partial: array<f32, WG>;

// Sum of `v` over the workgroup (every thread gets it).
fn workgroup_sum(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            partial[lid] += partial[lid + half];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64)
fn rmsnorm_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wg.x;
    let x = p.x_off + row * p.d;
    var ss = 0.0;
    for (var i = lid.x; i < p.d; i += WG) {
        ss += act[x + i] * act[x + i];
    }
    let rstd = 1.0 / sqrt(workgroup_sum(ss, lid.x) / f32(p.d) + EPS);
    for (var i = lid.x; i < p.d; i += WG) {
        act[p.y_off + row * p.d + i] = act[x + i] * rstd * prm[p.w_off + i];
    }
    if (lid.x == 0u) {
        act[p.rstd_off + row] = rstd;
    }
}

@compute @workgroup_size(64)
fn rmsnorm_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wg.x;
    let x = p.x_off + row * p.d;
    let dy = p.dy_off + row * p.d;
    var gx = 0.0;
    for (var i = lid.x; i < p.d; i += WG) {
        gx += act[dy + i] * prm[p.w_off + i] * act[x + i];
    }
    let r = act[p.rstd_off + row];
    let c = r * r * r * workgroup_sum(gx, lid.x) / f32(p.d);
    for (var i = lid.x; i < p.d; i += WG) {
        let g = r * act[dy + i] * prm[p.w_off + i] - c * act[x + i];
        let dx = p.dx_off + row * p.d + i;
        act[dx] = select(g, act[dx] + g, p.accumulate == 1u);
    }
}

@compute @workgroup_size(64)
fn rmsnorm_weight_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.d) {
        return;
    }
    var acc = 0.0;
    for (var row = 0u; row < p.rows; row++) {
        acc += act[p.dy_off + row * p.d + i] * act[p.x_off + row * p.d + i] * act[p.rstd_off + row];
    }
    grd[p.gw_off + i] += acc;
}
