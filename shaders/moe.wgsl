// MoE routing for one token: p = softmax(router logits) over E experts, the top k (ties go to
// the lower expert index), their weights renormalised to sum to 1. The decisions are written
// to the routing trace in `ctl` at the current step — (expert, bitcast weight) per slot — where
// the expert matvecs (linear.wgsl, route_slot) read them: routing never leaves the GPU.
// E and k are small (≤ 16), so one thread does it. CPU twin: layers::moe::route after softmax.

struct Route {
    experts: u32,
    k: u32,
    logits_off: u32,
    // ctl index of this layer's slot 0 at step 0, and the stride between steps.
    route_base: u32,
    route_stride: u32,
    // Prefill: workgroup t routes token t, its logits `stride` after token t − 1's, into the
    // trace at step ctl[0] + t. Decoding dispatches one workgroup.
    stride: u32,
}

@group(0) @binding(0) var<uniform> p: Route;
@group(0) @binding(1) var<storage, read_write> act: array<f32>;
@group(0) @binding(2) var<storage, read_write> ctl: array<u32>;

const MAX_EXPERTS: u32 = 16u;

@compute @workgroup_size(1)
fn route(@builtin(workgroup_id) wg: vec3<u32>) {
    let logits = p.logits_off + wg.x * p.stride;
    var probs: array<f32, MAX_EXPERTS>;
    var taken: array<bool, MAX_EXPERTS>;
    var max_logit = act[logits];
    for (var e = 1u; e < p.experts; e++) {
        max_logit = max(max_logit, act[logits + e]);
    }
    var total = 0.0;
    for (var e = 0u; e < p.experts; e++) {
        probs[e] = exp(act[logits + e] - max_logit);
        taken[e] = false;
        total += probs[e];
    }
    var chosen: array<u32, MAX_EXPERTS>;
    var kept = 0.0;
    for (var j = 0u; j < p.k; j++) {
        var best = MAX_EXPERTS;
        for (var e = 0u; e < p.experts; e++) {
            // Strictly greater keeps the lowest index among equals.
            if (!taken[e] && (best == MAX_EXPERTS || probs[e] > probs[best])) {
                best = e;
            }
        }
        taken[best] = true;
        chosen[j] = best;
        kept += probs[best] / total;
    }
    let base = p.route_base + (ctl[0] + wg.x) * p.route_stride;
    for (var j = 0u; j < p.k; j++) {
        ctl[base + 2u * j] = chosen[j];
        ctl[base + 2u * j + 1u] = bitcast<u32>(probs[chosen[j]] / total / kept);
    }
}
