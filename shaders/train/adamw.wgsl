// The optimiser step on the GPU, after a batch's gradients are complete:
// - sum_squares / sum_squares_total: the squared global gradient norm, as fixed partial sums
//   (one per workgroup) added in order by a single workgroup into report[NORM];
// - adamw: one tensor per dispatch (weight decay applies to matrices only): clip the gradient
//   to `clip` by the global norm, update the moments, step the weights. When the loss or the
//   norm is not finite it changes nothing, so the host can stop with the last good weights.
// The moments have buffers of their own (bound in the slots where the other training kernels
// bind ids and SSM states), laid out like the parameters, so that no binding holds more than
// one table's worth of values.
// The report holds [lr, 1 − β1ᵗ, 1 − β2ᵗ, CE, KL, aux, norm²] (written per step by the host
// and by the loss kernels).
// CPU twin: train::optim::AdamW::update with the clipping of train::step::finish_step.

struct Adam {
    len: u32,
    off: u32,
    report_off: u32,
    partial_off: u32,
    decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    clip: f32,
}

@group(0) @binding(0) var<uniform> p: Adam;
@group(0) @binding(1) var<storage, read_write> prm: array<f32>;
@group(0) @binding(2) var<storage, read_write> grd: array<f32>;
@group(0) @binding(3) var<storage, read_write> act: array<f32>;
@group(0) @binding(4) var<storage, read_write> mom1: array<f32>;
@group(0) @binding(5) var<storage, read_write> mom2: array<f32>;

const WG: u32 = 256u;
// Workgroups of sum_squares (and so the number of partial sums).
const PARTS: u32 = 64u;
const LR: u32 = 0u;
const C1: u32 = 1u;
const C2: u32 = 2u;
const CE: u32 = 3u;
const NORM: u32 = 6u;
var<workgroup> partial: array<f32, WG>;

fn reduce_sum(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            partial[lid] += partial[lid + half];
        }
        workgroupBarrier();
    }
    return partial[0];
}

@compute @workgroup_size(256)
fn sum_squares(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    var acc = 0.0;
    for (var i = wg.x * WG + lid.x; i < p.len; i += PARTS * WG) {
        acc += grd[i] * grd[i];
    }
    let total = reduce_sum(acc, lid.x);
    if (lid.x == 0u) {
        act[p.partial_off + wg.x] = total;
    }
}

@compute @workgroup_size(256)
fn sum_squares_total(@builtin(local_invocation_id) lid: vec3<u32>) {
    var acc = 0.0;
    if (lid.x < PARTS) {
        acc = act[p.partial_off + lid.x];
    }
    let total = reduce_sum(acc, lid.x);
    if (lid.x == 0u) {
        act[p.report_off + NORM] = total;
    }
}

// Bit test rather than x == x: compilers may assume floats are never NaN or infinite.
fn finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(256)
fn adamw(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = gid.x + gid.y * groups.x * WG;
    if (e >= p.len) {
        return;
    }
    let r = p.report_off;
    let norm = sqrt(act[r + NORM]);
    if (!(finite(norm) && finite(act[r + CE]) && finite(act[r + CE + 1u]) && finite(act[r + CE + 2u]))) {
        return;
    }
    let scale = select(1.0, p.clip / norm, norm > p.clip);
    let i = p.off + e;
    let g = grd[i] * scale;
    let m = p.beta1 * mom1[i] + (1.0 - p.beta1) * g;
    let v = p.beta2 * mom2[i] + (1.0 - p.beta2) * g * g;
    mom1[i] = m;
    mom2[i] = v;
    let update = (m / act[r + C1]) / (sqrt(v / act[r + C2]) + p.eps);
    prm[i] -= act[r + LR] * (update + p.decay * prm[i]);
}
