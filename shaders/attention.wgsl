// A Transformer's attention for one decode step over its KV cache, in two kernels.
//
// rope_kv: rotates the step's query and key heads by RoPE at the step's position (adjacent
// pairs; the cos/sin of every position come precomputed in the params buffer, the CPU's
// angles exactly) and appends the rotated key and the value to the layer's cache at that row.
// CPU twin: layers::attention::rope_rotate and the cache append of transformer::decode_step.
//
// attention: one workgroup per query head; the scores of every cached position (q·k / √hs),
// their softmax, and the weighted sum of the values. The query heads of a kv group read the
// same cache rows. CPU twin: layers::attention::attention_forward for one query.
//
// The position is the control words' POSITION (tokens consumed before this submission) plus
// STEP (steps already run in it), so K steps record once and run K times.

// One uniform block for both kernels (a layer's two dispatches differ in nothing else).
struct Attention {
    q_off: u32,
    k_off: u32,
    v_off: u32,
    out_off: u32,
    // Scores scratch: head h's row at scores_off + h * context.
    scores_off: u32,
    // The layer's caches: row t of keys at k_cache + t * kv_dim (values likewise).
    k_cache: u32,
    v_cache: u32,
    // cos of position t, pair i at params[cos_off + t * head_size / 2 + i]; sin likewise.
    cos_off: u32,
    sin_off: u32,
    head_size: u32,
    n_heads: u32,
    n_kv_heads: u32,
    // Positions the caches and the scores hold.
    context: u32,
    // 1 / √head_size as f32 bits.
    scale: u32,
}

const STEP: u32 = 0u;
const POSITION: u32 = 2u;
const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Attention;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> act: array<f32>;
@group(0) @binding(3) var<storage, read_write> ctl: array<u32>;

@compute @workgroup_size(64)
fn rope_kv(@builtin(local_invocation_index) tid: u32) {
    let pos = ctl[POSITION] + ctl[STEP];
    let half = p.head_size / 2u;
    let kv_dim = p.n_kv_heads * p.head_size;
    let q_pairs = p.n_heads * half;
    let pairs = q_pairs + p.n_kv_heads * half;
    for (var j = tid; j < pairs; j += WG) {
        let is_q = j < q_pairs;
        let pair = select(j - q_pairs, j, is_q);
        let i = pair % half;
        let c = params[p.cos_off + pos * half + i];
        let s = params[p.sin_off + pos * half + i];
        let at = select(p.k_off, p.q_off, is_q) + 2u * pair;
        let v0 = act[at];
        let v1 = act[at + 1u];
        let a = v0 * c - v1 * s;
        let b = v0 * s + v1 * c;
        if (is_q) {
            act[at] = a;
            act[at + 1u] = b;
        } else {
            let row = p.k_cache + pos * kv_dim + 2u * pair;
            act[row] = a;
            act[row + 1u] = b;
        }
    }
    for (var j = tid; j < kv_dim; j += WG) {
        act[p.v_cache + pos * kv_dim + j] = act[p.v_off + j];
    }
}

var<workgroup> partial: array<f32, WG>;

// The maximum (take_max) or the sum of every thread's `x` in the workgroup.
fn reduce(tid: u32, x: f32, take_max: bool) -> f32 {
    partial[tid] = x;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (tid < stride) {
            let other = partial[tid + stride];
            partial[tid] = select(partial[tid] + other, max(partial[tid], other), take_max);
        }
        workgroupBarrier();
    }
    let out = partial[0];
    workgroupBarrier();
    return out;
}

@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let h = wg.x;
    let n = ctl[POSITION] + ctl[STEP] + 1u;
    let hs = p.head_size;
    let kv_dim = p.n_kv_heads * hs;
    let kvh = h / (p.n_heads / p.n_kv_heads);
    let q = p.q_off + h * hs;
    let scores = p.scores_off + h * p.context;
    let scale = bitcast<f32>(p.scale);
    var top = -3.4e38;
    for (var t = tid; t < n; t += WG) {
        let k = p.k_cache + t * kv_dim + kvh * hs;
        var dot = 0.0;
        for (var i = 0u; i < hs; i++) {
            dot += act[q + i] * act[k + i];
        }
        let s = dot * scale;
        act[scores + t] = s;
        top = max(top, s);
    }
    top = reduce(tid, top, true);
    var sum = 0.0;
    for (var t = tid; t < n; t += WG) {
        let e = exp(act[scores + t] - top);
        act[scores + t] = e;
        sum += e;
    }
    sum = reduce(tid, sum, false);
    // Every thread's exponentials are in storage before any thread reads them all.
    storageBarrier();
    let inv = 1.0 / sum;
    for (var i = tid; i < hs; i += WG) {
        var acc = 0.0;
        for (var t = 0u; t < n; t++) {
            acc += act[scores + t] * inv * act[p.v_cache + t * kv_dim + kvh * hs + i];
        }
        act[p.out_off + h * hs + i] = acc;
    }
}
