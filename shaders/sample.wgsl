// Next-token sampling on the GPU, so a decode step reads back only the token (and its
// log-prob). One workgroup of 256 threads over the V logits of the current step:
//   temperature 0: argmax (ties to the lower id);
//   otherwise q_i = exp((l_i − max) / T), keep q_i ≥ t where t is found by bisection on the
//   f32 bit patterns (positive floats order like their bits): the largest t with at least
//   top_k values ≥ t, then the largest t with kept mass ≥ top_p · (top-k mass); draw
//   r = uniform · kept mass and walk the kept values in id order.
// The uniform comes from a counter-based hash of (seed, absolute position), so a seed
// reproduces a story and needs no generator state on the GPU. Writes tokens[step + 1] (unless
// it is a forced prompt token), the log-prob of that token at temperature 1, and advances the
// step counter. CPU twin: sampling::Sampler, the CPU decoder's own sampler (the same
// arithmetic in the same order; it finds the same thresholds by selection).

struct Sample {
    vocab: u32,
    logits_off: u32,
    temperature: f32,
    top_k: u32,
    top_p: f32,
    seed_lo: u32,
    seed_hi: u32,
    tokens_base: u32,
    logprobs_base: u32,
}

@group(0) @binding(0) var<uniform> p: Sample;
@group(0) @binding(1) var<storage, read_write> act: array<f32>;
@group(0) @binding(2) var<storage, read_write> ctl: array<u32>;

// ctl header: [0] step within this submission, [1] tokens forced (prompt), [2] absolute
// position of step 0 (the random stream's counter).
const STEP: u32 = 0u;
const FORCED: u32 = 1u;
const POSITION: u32 = 2u;

const WG: u32 = 256u;
const ONE_BITS: u32 = 0x3f800000u;
var<workgroup> red_f: array<f32, WG>;
var<workgroup> red_u: array<u32, WG>;
var<workgroup> pick: atomic<u32>;
var<workgroup> last_kept: atomic<u32>;

fn hash(x: u32) -> u32 {
    var v = x;
    v ^= v >> 16u;
    v *= 0x7feb352du;
    v ^= v >> 15u;
    v *= 0x846ca68bu;
    v ^= v >> 16u;
    return v;
}

fn uniform01(position: u32) -> f32 {
    let bits = hash(p.seed_lo ^ hash(p.seed_hi ^ hash(position)));
    return f32(bits >> 8u) * (1.0 / 16777216.0);
}

fn logit(i: u32) -> f32 {
    return act[p.logits_off + i];
}

fn sum_all(v: f32, tid: u32) -> f32 {
    red_f[tid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (tid < stride) {
            red_f[tid] += red_f[tid + stride];
        }
        workgroupBarrier();
    }
    // A value every thread agrees on, so loops over it may contain barriers.
    let total = workgroupUniformLoad(&red_f[0]);
    workgroupBarrier();
    return total;
}

fn max_all(v: f32, tid: u32) -> f32 {
    red_f[tid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (tid < stride) {
            red_f[tid] = max(red_f[tid], red_f[tid + stride]);
        }
        workgroupBarrier();
    }
    let m = workgroupUniformLoad(&red_f[0]);
    workgroupBarrier();
    return m;
}

fn q(i: u32, max_logit: f32) -> f32 {
    return exp((logit(i) - max_logit) / p.temperature);
}

// How many q_i are ≥ t (count = true) or their sum (count = false), this thread's share.
fn share_at_least(t: f32, max_logit: f32, tid: u32, count: bool) -> f32 {
    var s = 0.0;
    for (var i = tid; i < p.vocab; i += WG) {
        let v = q(i, max_logit);
        if (v >= t) {
            s += select(v, 1.0, count);
        }
    }
    return s;
}

// The largest threshold bit pattern in [lo, hi) whose count or mass of q ≥ it reaches goal.
fn bisect(lo_start: u32, goal: f32, max_logit: f32, tid: u32, count: bool) -> u32 {
    var lo = lo_start;
    var hi = ONE_BITS + 1u;
    while (hi - lo > 1u) {
        let mid = lo + (hi - lo) / 2u;
        if (sum_all(share_at_least(bitcast<f32>(mid), max_logit, tid, count), tid) >= goal) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

fn argmax(tid: u32) -> u32 {
    var best = tid;
    for (var i = tid + WG; i < p.vocab; i += WG) {
        if (logit(i) > logit(best)) {
            best = i;
        }
    }
    red_u[tid] = min(best, p.vocab - 1u);
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (tid < stride) {
            let a = red_u[tid];
            let b = red_u[tid + stride];
            if (logit(b) > logit(a) || (logit(b) == logit(a) && b < a)) {
                red_u[tid] = b;
            }
        }
        workgroupBarrier();
    }
    let id = workgroupUniformLoad(&red_u[0]);
    workgroupBarrier();
    return id;
}

fn draw(max_logit: f32, tid: u32, step: u32) -> u32 {
    var threshold = 0.0;
    if (p.top_k > 0u && p.top_k < p.vocab) {
        threshold = bitcast<f32>(bisect(0u, f32(p.top_k), max_logit, tid, true));
    }
    if (p.top_p < 1.0) {
        let top_k_mass = sum_all(share_at_least(threshold, max_logit, tid, false), tid);
        threshold = bitcast<f32>(bisect(bitcast<u32>(threshold), p.top_p * top_k_mass, max_logit, tid, false));
    }
    // Each thread owns a contiguous run of ids; an exclusive prefix over the runs' masses
    // finds the run holding r, and its thread walks it.
    let run = (p.vocab + WG - 1u) / WG;
    let start = min(tid * run, p.vocab);
    let end = min(start + run, p.vocab);
    var mass = 0.0;
    for (var i = start; i < end; i++) {
        let v = q(i, max_logit);
        if (v >= threshold) {
            mass += v;
            atomicMax(&last_kept, i);
        }
    }
    red_f[tid] = mass;
    workgroupBarrier();
    if (tid == 0u) {
        var acc = 0.0;
        for (var t = 0u; t < WG; t++) {
            let m = red_f[t];
            red_f[t] = acc;
            acc += m;
        }
        red_u[0] = bitcast<u32>(acc);
    }
    workgroupBarrier();
    var r = uniform01(ctl[POSITION] + step) * bitcast<f32>(red_u[0]);
    let before = red_f[tid];
    if (r >= before && r < before + mass) {
        r -= before;
        for (var i = start; i < end; i++) {
            let v = q(i, max_logit);
            if (v >= threshold) {
                r -= v;
                if (r < 0.0) {
                    atomicMin(&pick, i);
                    break;
                }
            }
        }
    }
    workgroupBarrier();
    let id = atomicLoad(&pick);
    // Rounding can leave r at the very end of the mass: take the last kept id.
    return select(id, atomicLoad(&last_kept), id >= p.vocab);
}

@compute @workgroup_size(256)
fn sample(@builtin(local_invocation_index) tid: u32) {
    let step = ctl[STEP];
    if (tid == 0u) {
        atomicStore(&pick, 0xffffffffu);
        atomicStore(&last_kept, 0u);
    }
    workgroupBarrier();
    var local_max = logit(min(tid, p.vocab - 1u));
    for (var i = tid; i < p.vocab; i += WG) {
        local_max = max(local_max, logit(i));
    }
    let max_logit = max_all(local_max, tid);
    var local_sum = 0.0;
    for (var i = tid; i < p.vocab; i += WG) {
        local_sum += exp(logit(i) - max_logit);
    }
    let log_sum = max_logit + log(sum_all(local_sum, tid));

    var id: u32;
    if (p.temperature == 0.0) {
        id = argmax(tid);
    } else {
        id = draw(max_logit, tid, step);
    }
    storageBarrier();
    if (tid == 0u) {
        let next = p.tokens_base + step + 1u;
        if (step + 1u >= ctl[FORCED]) {
            ctl[next] = id;
        }
        ctl[p.logprobs_base + step + 1u] = bitcast<u32>(logit(ctl[next]) - log_sum);
        ctl[STEP] = step + 1u;
    }
}
