// The token embedding for training: embed_forward gathers row tokens[r] of the (V, D) table
// into x (one thread per element); embed_backward adds each row of dx into the gradient row of
// its token — one thread per column walks the rows in order, so tokens that repeat need no
// atomics and the sum is deterministic.
// CPU twin: the gather in model::forward and the scatter at the end of model::backward.

struct Embed {
    rows: u32,
    d: u32,
    tokens_off: u32,
    table_off: u32,
    x_off: u32,
    g_off: u32,
}

@group(0) @binding(0) var<uniform> p: Embed;
@group(0) @binding(1) var<storage, read_write> prm: array<f32>;
@group(0) @binding(2) var<storage, read_write> grd: array<f32>;
@group(0) @binding(3) var<storage, read_write> act: array<f32>;
@group(0) @binding(4) var<storage, read_write> ints: array<u32>;

@compute @workgroup_size(64)
fn embed_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = gid.x + gid.y * groups.x * 64u;
    if (e >= p.rows * p.d) {
        return;
    }
    let row = e / p.d;
    let c = e % p.d;
    act[p.x_off + e] = prm[p.table_off + ints[p.tokens_off + row] * p.d + c];
}

@compute @workgroup_size(64)
fn embed_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.d) {
        return;
    }
    for (var row = 0u; row < p.rows; row++) {
        let g = p.g_off + ints[p.tokens_off + row] * p.d + c;
        grd[g] += act[p.x_off + row * p.d + c];
    }
}
