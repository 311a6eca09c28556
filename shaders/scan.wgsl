// Prelude: activations.wgsl
//
// The selective SSM scan over `tokens` consecutive tokens (1 when decoding, the prompt when
// prefilling), with the gate fused: for channel i and each token in order,
//   dt = softplus(dt_raw[i] + dt_b[i]);  A = −exp(A_log[i, :])
//   h[i, s] = exp(dt·A[s]) · h[i, s] + dt · u[i] · B[s]
//   y[i] = (Σ_s h[i, s] · C[s] + Dskip[i] · u[i]) · silu(z[i])
// One thread per channel walks the tokens, the N state values in a loop. Each token's inputs
// sit `in_stride` apart in the arena (a row of the batch layout), outputs `out_stride` apart.
// CPU twin: layers::scan::scan_step plus the softplus before it and the silu(z) gate after it
// (layers::ssm::ssm_step), once per token.

struct Scan {
    channels: u32,
    n: u32,
    u_off: u32,
    dt_off: u32,
    // B at b_off, C at b_off + n.
    b_off: u32,
    z_off: u32,
    h_off: u32,
    y_off: u32,
    dt_b_off: u32,
    a_log_off: u32,
    d_skip_off: u32,
    tokens: u32,
    in_stride: u32,
    out_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Scan;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> act: array<f32>;

@compute @workgroup_size(64)
fn scan(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.channels) {
        return;
    }
    for (var t = 0u; t < p.tokens; t++) {
        let at = t * p.in_stride;
        let dt = softplus(act[at + p.dt_off + i] + params[p.dt_b_off + i]);
        let u = act[at + p.u_off + i];
        let dtu = dt * u;
        var y = 0.0;
        for (var s = 0u; s < p.n; s++) {
            let a = -exp(params[p.a_log_off + i * p.n + s]);
            let h = p.h_off + i * p.n + s;
            act[h] = exp(dt * a) * act[h] + dtu * act[at + p.b_off + s];
            y += act[h] * act[at + p.b_off + p.n + s];
        }
        y += params[p.d_skip_off + i] * u;
        act[t * p.out_stride + p.y_off + i] = y * silu(act[at + p.z_off + i]);
    }
}
