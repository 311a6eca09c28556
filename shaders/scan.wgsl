// The selective SSM scan, one decode step, with the gate fused: for channel i,
//   dt = softplus(dt_raw[i] + dt_b[i]);  A = −exp(A_log[i, :])
//   h[i, s] = exp(dt·A[s]) · h[i, s] + dt · u[i] · B[s]
//   y[i] = (Σ_s h[i, s] · C[s] + Dskip[i] · u[i]) · silu(z[i])
// One thread per channel, the N state values in a loop. CPU twin: layers::scan::scan_step
// plus the softplus before it and the silu(z) gate after it (layers::ssm::ssm_step).

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
}

@group(0) @binding(0) var<uniform> p: Scan;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> act: array<f32>;

fn softplus(x: f32) -> f32 {
    return select(log(1.0 + exp(x)), x, x > 20.0);
}

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

@compute @workgroup_size(64)
fn scan_step(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.channels) {
        return;
    }
    let dt = softplus(act[p.dt_off + i] + params[p.dt_b_off + i]);
    let u = act[p.u_off + i];
    let dtu = dt * u;
    var y = 0.0;
    for (var s = 0u; s < p.n; s++) {
        let a = -exp(params[p.a_log_off + i * p.n + s]);
        let h = p.h_off + i * p.n + s;
        act[h] = exp(dt * a) * act[h] + dtu * act[p.b_off + s];
        y += act[h] * act[p.b_off + p.n + s];
    }
    y += params[p.d_skip_off + i] * u;
    act[p.y_off + i] = y * silu(act[p.z_off + i]);
}
