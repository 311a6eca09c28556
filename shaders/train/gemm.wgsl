// The training GEMM, every linear layer's forward and both halves of its backward:
//   C[i, j] (=, +=, or = R[i, j] +) Σ_k A[i, k] · B[k, j]
// Each operand is addressed as off + row·rs + col·cs in one of the three f32 buffers
// (0 parameters, 1 gradients, 2 activations), so one kernel covers Y = X·Wᵀ (B = W read
// transposed), dX = dY·W, and dW = dYᵀ·X (A = dY read transposed) without copies. 16×16 output
// tiles, both operand tiles staged through workgroup memory.
// CPU twin: kernels::gemm (through layers::linear::linear_backward and Matrix::matmul).

struct Gemm {
    m: u32,
    n: u32,
    k: u32,
    a_buf: u32,
    a_off: u32,
    a_rs: u32,
    a_cs: u32,
    b_buf: u32,
    b_off: u32,
    b_rs: u32,
    b_cs: u32,
    c_buf: u32,
    c_off: u32,
    c_rs: u32,
    // 0: C = A·B, 1: C += A·B, 2: C = R + A·B with R in the activations (the residual add).
    mode: u32,
    r_off: u32,
    r_rs: u32,
}

@group(0) @binding(0) var<uniform> p: Gemm;
@group(0) @binding(1) var<storage, read_write> prm: array<f32>;
@group(0) @binding(2) var<storage, read_write> grd: array<f32>;
@group(0) @binding(3) var<storage, read_write> act: array<f32>;

const T: u32 = 16u;
var<workgroup> tile_a: array<f32, 256>; // [row][k]
var<workgroup> tile_b: array<f32, 256>; // [k][col]

fn load(buf: u32, i: u32) -> f32 {
    switch buf {
        case 0u: {
            return prm[i];
        }
        case 1u: {
            return grd[i];
        }
        default: {
            return act[i];
        }
    }
}

@compute @workgroup_size(16, 16)
fn gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wg.y * T + lid.y;
    let col = wg.x * T + lid.x;
    var acc = 0.0;
    for (var k0 = 0u; k0 < p.k; k0 += T) {
        let ka = k0 + lid.x;
        var a = 0.0;
        if (row < p.m && ka < p.k) {
            a = load(p.a_buf, p.a_off + row * p.a_rs + ka * p.a_cs);
        }
        tile_a[lid.y * T + lid.x] = a;
        let kb = k0 + lid.y;
        var b = 0.0;
        if (col < p.n && kb < p.k) {
            b = load(p.b_buf, p.b_off + kb * p.b_rs + col * p.b_cs);
        }
        tile_b[lid.y * T + lid.x] = b;
        workgroupBarrier();
        for (var kk = 0u; kk < T; kk++) {
            acc += tile_a[lid.y * T + kk] * tile_b[kk * T + lid.x];
        }
        workgroupBarrier();
    }
    if (row >= p.m || col >= p.n) {
        return;
    }
    let i = p.c_off + row * p.c_rs + col;
    var c = acc;
    if (p.mode == 1u) {
        c += load(p.c_buf, i);
    } else if (p.mode == 2u) {
        c += act[p.r_off + row * p.r_rs + col];
    }
    if (p.c_buf == 1u) {
        grd[i] = c;
    } else {
        act[i] = c;
    }
}
