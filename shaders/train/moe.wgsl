// MoE routing for training over `rows` rows and E experts (router logits from the GEMM):
// - route_forward: softmax in place (probs), top-k with ties to the lower index, weights
//   renormalised over the chosen k; writes the chosen ids (ints) and a dense (rows, E) weight
//   matrix, zero for experts a row did not choose — the combine and its backward read it;
// - aux_forward: the Switch load-balancing loss E·Σ_e f_e·P_e (f_e = share of routed slots,
//   P_e = mean probability); keeps the counts for the backward and adds aux·aux_weight to the
//   report slot;
// - route_dot: ∂L/∂w for one expert: Σ_c dout[row, c]·expert_out[row, c] into column e;
// - route_backward: through the renormalisation (∂L/∂p_j = (∂L/∂w_j − Σ_l ∂L/∂w_l·w_l)/S), the
//   aux term (aux_scale·E·f_e/rows) and the softmax, to the router logits' gradient.
// One thread per row except aux_forward (one thread: E·rows adds, in a fixed order).
// CPU twins: layers::moe::{route, aux_loss, moe_backward}.

struct Route {
    rows: u32,
    e: u32,
    k: u32,
    probs_off: u32,
    w_off: u32,
    experts_off: u32,
    counts_off: u32,
    report_off: u32,
    aux_weight: f32,
    dw_off: u32,
    dlogits_off: u32,
    aux_scale: f32,
    // route_dot
    d: u32,
    expert: u32,
    dout_off: u32,
    out_off: u32,
}

@group(0) @binding(0) var<uniform> p: Route;
@group(0) @binding(3) var<storage, read_write> act: array<f32>;
@group(0) @binding(4) var<storage, read_write> ints: array<u32>;

fn chosen(row: u32, e: u32, upto: u32) -> bool {
    for (var j = 0u; j < upto; j++) {
        if (ints[p.experts_off + row * p.k + j] == e) {
            return true;
        }
    }
    return false;
}

@compute @workgroup_size(64)
fn route_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.x;
    if (row >= p.rows) {
        return;
    }
    let base = p.probs_off + row * p.e;
    var top = act[base];
    for (var e = 1u; e < p.e; e++) {
        top = max(top, act[base + e]);
    }
    var sum = 0.0;
    for (var e = 0u; e < p.e; e++) {
        let v = exp(act[base + e] - top);
        act[base + e] = v;
        sum += v;
    }
    for (var e = 0u; e < p.e; e++) {
        act[base + e] /= sum;
        act[p.w_off + row * p.e + e] = 0.0;
    }
    var picked = 0.0;
    for (var j = 0u; j < p.k; j++) {
        var best = 0xffffffffu;
        for (var e = 0u; e < p.e; e++) {
            // Strictly greater keeps the lowest index among equals.
            if (!chosen(row, e, j) && (best == 0xffffffffu || act[base + e] > act[base + best])) {
                best = e;
            }
        }
        ints[p.experts_off + row * p.k + j] = best;
        picked += act[base + best];
    }
    for (var j = 0u; j < p.k; j++) {
        let e = ints[p.experts_off + row * p.k + j];
        act[p.w_off + row * p.e + e] = act[base + e] / picked;
    }
}

@compute @workgroup_size(1)
fn aux_forward() {
    var aux = 0.0;
    for (var e = 0u; e < p.e; e++) {
        var count = 0u;
        var prob = 0.0;
        for (var row = 0u; row < p.rows; row++) {
            prob += act[p.probs_off + row * p.e + e];
            if (chosen(row, e, p.k)) {
                count++;
            }
        }
        act[p.counts_off + e] = f32(count);
        aux += f32(count) / f32(p.rows * p.k) * (prob / f32(p.rows));
    }
    act[p.report_off] += aux * f32(p.e) * p.aux_weight;
}

@compute @workgroup_size(64)
fn route_dot(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.x;
    if (row >= p.rows) {
        return;
    }
    var acc = 0.0;
    for (var c = 0u; c < p.d; c++) {
        acc += act[p.dout_off + row * p.d + c] * act[p.out_off + row * p.d + c];
    }
    act[p.dw_off + row * p.e + p.expert] = acc;
}

@compute @workgroup_size(64)
fn route_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.x;
    if (row >= p.rows) {
        return;
    }
    let probs = p.probs_off + row * p.e;
    var picked = 0.0;
    var mean = 0.0;
    for (var j = 0u; j < p.k; j++) {
        let e = ints[p.experts_off + row * p.k + j];
        picked += act[probs + e];
        mean += act[p.dw_off + row * p.e + e] * act[p.w_off + row * p.e + e];
    }
    // dp[e] then the softmax backward: dlogit = p ⊙ (dp − Σ p⊙dp).
    var dot = 0.0;
    for (var e = 0u; e < p.e; e++) {
        var dp = p.aux_scale * f32(p.e) * (act[p.counts_off + e] / f32(p.rows * p.k)) / f32(p.rows);
        if (chosen(row, e, p.k)) {
            dp += (act[p.dw_off + row * p.e + e] - mean) / picked;
        }
        act[p.dlogits_off + row * p.e + e] = dp;
        dot += act[probs + e] * dp;
    }
    for (var e = 0u; e < p.e; e++) {
        let i = p.dlogits_off + row * p.e + e;
        act[i] = act[probs + e] * (act[i] - dot);
    }
}
