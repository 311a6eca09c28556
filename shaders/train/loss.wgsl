// Training losses on the logits (rows = batch·t, V): cross-entropy of the next token and, when
// distilling, KL(softmax(teacher/τ) ‖ softmax(student/τ)), over the positions that have a next
// token (t − 1 per sequence).
// - softmax_loss: one workgroup per row; keeps the row's CE and KL and overwrites its logits
//   with ∂L/∂logits = ce_scale·(softmax(z) − onehot) + kl_scale·(q_τ − p_τ) (zero for a
//   sequence's last position); every thread reads and writes only its own columns, after the
//   row's reductions, so the in-place update is safe;
// - loss_total: one workgroup sums the rows' losses in a fixed order and adds
//   ce_weight·mean(CE) and kl_weight·mean(KL) to the report.
// CPU twins: layers::loss::{cross_entropy, distill_kl}.

struct Loss {
    rows: u32,
    t: u32,
    v: u32,
    logits_off: u32,
    teacher_off: u32,
    tokens_off: u32,
    rowloss_off: u32,
    distill: u32,
    ce_scale: f32,
    kl_scale: f32,
    tau: f32,
    report_off: u32,
    ce_weight: f32,
    kl_weight: f32,
}

@group(0) @binding(0) var<uniform> p: Loss;
@group(0) @binding(3) var<storage, read_write> act: array<f32>;
@group(0) @binding(4) var<storage, read_write> ints: array<u32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, WG>;

fn reduce_max(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            partial[lid] = max(partial[lid], partial[lid + half]);
        }
        workgroupBarrier();
    }
    let out = partial[0];
    workgroupBarrier();
    return out;
}

fn reduce_sum(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            partial[lid] += partial[lid + half];
        }
        workgroupBarrier();
    }
    let out = partial[0];
    workgroupBarrier();
    return out;
}

// log Σ exp(scale·row[i]) over the row at `off`.
fn log_sum_exp(off: u32, scale: f32, lid: u32) -> f32 {
    var top = -3.4e38;
    for (var i = lid; i < p.v; i += WG) {
        top = max(top, scale * act[off + i]);
    }
    let m = reduce_max(top, lid);
    var sum = 0.0;
    for (var i = lid; i < p.v; i += WG) {
        sum += exp(scale * act[off + i] - m);
    }
    return m + log(reduce_sum(sum, lid));
}

@compute @workgroup_size(256)
fn softmax_loss(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = wg.x + wg.y * 65535u;
    let lid = lid3.x;
    if (row >= p.rows) {
        return;
    }
    let z = p.logits_off + row * p.v;
    if (row % p.t == p.t - 1u) {
        for (var i = lid; i < p.v; i += WG) {
            act[z + i] = 0.0;
        }
        if (lid == 0u) {
            act[p.rowloss_off + 2u * row] = 0.0;
            act[p.rowloss_off + 2u * row + 1u] = 0.0;
        }
        return;
    }
    let next_id = ints[p.tokens_off + row + 1u];
    let lse = log_sum_exp(z, 1.0, lid);
    var lp = 0.0;
    var lq = 0.0;
    var kl = 0.0;
    let tz = p.teacher_off + row * p.v;
    if (p.distill == 1u) {
        let inv = 1.0 / p.tau;
        lp = log_sum_exp(tz, inv, lid);
        lq = log_sum_exp(z, inv, lid);
        var part = 0.0;
        for (var i = lid; i < p.v; i += WG) {
            let logp = act[tz + i] * inv - lp;
            part += exp(logp) * (logp - (act[z + i] * inv - lq));
        }
        kl = reduce_sum(part, lid);
    }
    if (lid == 0u) {
        act[p.rowloss_off + 2u * row] = lse - act[z + next_id];
        act[p.rowloss_off + 2u * row + 1u] = kl;
    }
    for (var i = lid; i < p.v; i += WG) {
        let zi = act[z + i];
        var g = p.ce_scale * (exp(zi - lse) - select(0.0, 1.0, i == next_id));
        if (p.distill == 1u) {
            let inv = 1.0 / p.tau;
            g += p.kl_scale * (exp(zi * inv - lq) - exp(act[tz + i] * inv - lp));
        }
        act[z + i] = g;
    }
}

@compute @workgroup_size(256)
fn loss_total(@builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    var ce = 0.0;
    var kl = 0.0;
    for (var row = lid; row < p.rows; row += WG) {
        ce += act[p.rowloss_off + 2u * row];
        kl += act[p.rowloss_off + 2u * row + 1u];
    }
    let ce_sum = reduce_sum(ce, lid);
    let kl_sum = reduce_sum(kl, lid);
    if (lid == 0u) {
        let count = f32(p.rows - p.rows / p.t);
        act[p.report_off] += p.ce_weight * ce_sum / count;
        act[p.report_off + 1u] += p.kl_weight * kl_sum / count;
    }
}
