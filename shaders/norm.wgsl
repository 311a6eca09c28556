// rmsnorm(x) = x / sqrt(mean(x²) + 1e-5) ⊙ weight, one workgroup per row of `rows` rows of d
// values. CPU twin: layers::norm::rmsnorm_forward.

struct Norm {
    d: u32,
    rows: u32,
    x_off: u32,
    y_off: u32,
    w_off: u32,
    // Distance between consecutive rows (d for a packed matrix; the row width of the
    // prefill's per-token layout).
    stride: u32,
}

@group(0) @binding(0) var<uniform> p: Norm;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> act: array<f32>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(64)
fn rmsnorm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row = wg.x;
    let x = p.x_off + row * p.stride;
    var sum = 0.0;
    for (var j = tid; j < p.d; j += WG) {
        sum += act[x + j] * act[x + j];
    }
    partial[tid] = sum;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (tid < stride) {
            partial[tid] += partial[tid + stride];
        }
        workgroupBarrier();
    }
    let rstd = inverseSqrt(partial[0] / f32(p.d) + 1e-5);
    let y = p.y_off + row * p.stride;
    for (var j = tid; j < p.d; j += WG) {
        act[y + j] = act[x + j] * rstd * params[p.w_off + j];
    }
}
