// SwiGLU's gate, elementwise: a = silu(a) ⊙ b (a = W1·x, b = W3·x; W2 follows as a matvec),
// for one token (decode) or several `stride` apart (prefill).
// CPU twin: layers::swiglu::swiglu_step.

struct Swiglu {
    n: u32,
    a_off: u32,
    b_off: u32,
    // Tokens (the dispatch's y axis) and the distance between consecutive tokens' values.
    tokens: u32,
    stride: u32,
}

@group(0) @binding(0) var<uniform> p: Swiglu;
@group(0) @binding(1) var<storage, read_write> act: array<f32>;

@compute @workgroup_size(64)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let at = gid.y * p.stride;
    if (gid.x < p.n && gid.y < p.tokens) {
        let i = at + gid.x;
        let a = act[p.a_off + i];
        act[p.a_off + i] = a / (1.0 + exp(-a)) * act[p.b_off + i];
    }
}
