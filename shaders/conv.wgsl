// Causal depthwise conv over time followed by silu, one decode step: for channel c,
// u = silu(b[c] + Σ_j w[c, j] · x_{t−K+1+j}[c]) where the last tap multiplies the current
// input and the K−1 older inputs come from the layer's conv tail ((K−1) × channels, oldest
// first), which then shifts by one. One thread per channel. CPU twin: layers::conv::conv_step
// followed by silu.

struct Conv {
    channels: u32,
    k: u32,
    x_off: u32,
    tail_off: u32,
    y_off: u32,
    w_off: u32,
    b_off: u32,
}

@group(0) @binding(0) var<uniform> p: Conv;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> act: array<f32>;

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

@compute @workgroup_size(64)
fn conv_step(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.channels) {
        return;
    }
    let w = p.w_off + c * p.k;
    let x = act[p.x_off + c];
    var acc = params[p.b_off + c] + params[w + p.k - 1u] * x;
    for (var j = 0u; j + 1u < p.k; j++) {
        acc += params[w + j] * act[p.tail_off + j * p.channels + c];
    }
    for (var j = 0u; j + 2u < p.k; j++) {
        act[p.tail_off + j * p.channels + c] = act[p.tail_off + (j + 1u) * p.channels + c];
    }
    if (p.k > 1u) {
        act[p.tail_off + (p.k - 2u) * p.channels + c] = x;
    }
    act[p.y_off + c] = silu(acc);
}
