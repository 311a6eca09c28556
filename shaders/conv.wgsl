// Prelude: activations.wgsl
//
// Causal depthwise conv over time followed by silu, for `tokens` consecutive tokens (1 when
// decoding, the prompt when prefilling): for channel c and token t,
// u_t = silu(b[c] + Σ_j w[c, j] · x_{t−K+1+j}[c]) where the last tap multiplies the current
// input and inputs before the first token come from the layer's conv tail ((K−1) × channels,
// oldest first), which shifts by one per token. One thread per channel walks the tokens.
// CPU twin: layers::conv::conv_step (then silu) once per token.

struct Conv {
    channels: u32,
    k: u32,
    x_off: u32,
    tail_off: u32,
    y_off: u32,
    w_off: u32,
    b_off: u32,
    tokens: u32,
    // Distance between consecutive tokens' values in x and in y.
    x_stride: u32,
    y_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Conv;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> act: array<f32>;

@compute @workgroup_size(64)
fn conv(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.channels) {
        return;
    }
    let w = p.w_off + c * p.k;
    for (var t = 0u; t < p.tokens; t++) {
        let x = act[p.x_off + t * p.x_stride + c];
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
        act[p.y_off + t * p.y_stride + c] = silu(acc);
    }
}
