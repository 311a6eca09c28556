// Prelude: activations.wgsl
//
// Element-wise steps of the training forward and backward, one thread per element of a
// (rows × cols) block; operand x is read at x_off + row·x_rs + col in the activations, so
// column blocks of wider rows (z inside xz) need no copies. `op` picks the formula:
//   0 DT:           a += bias[col]; b = softplus(a)         (dt_pre, dt; bias in the parameters)
//   1 GATE:         c = a ⊙ silu(b)                          (y, z → g)
//   2 GATE_BACK:    d = c ⊙ silu(b); e = c ⊙ a ⊙ silu'(b)     (dg → dy, dz)
//   3 DT_BACK:      a ⊙= σ(b)                                (ddt, dt_pre)
//   4 SWIGLU:       c = silu(a) ⊙ b                          (W1x, W3x → h)
//   5 SWIGLU_BACK:  d = c ⊙ b ⊙ silu'(a); e = c ⊙ silu(a)     (dh → dW1x, dW3x)
//   6 ROW_AXPY:     c += b[row] · a                          (MoE combine: weight of the row)
//   7 ROW_SCALE:    c = b[row] · a                           (MoE backward: weighted dout)
//   8 COPY:         c = a
// `b[row]` reads b_off + row·b_rs (one value per row). colsum adds Σ_rows a[row, col] into
// the gradients at g_off + col (a bias gradient).
// CPU twins: the loops in layers::ssm, layers::swiglu and layers::moe.

struct Pointwise {
    rows: u32,
    cols: u32,
    op: u32,
    a_off: u32,
    a_rs: u32,
    b_off: u32,
    b_rs: u32,
    c_off: u32,
    c_rs: u32,
    d_off: u32,
    d_rs: u32,
    e_off: u32,
    e_rs: u32,
    bias_off: u32,
    g_off: u32,
}

// The `op` codes (gpu::train::args::Op; tests/shaders.rs checks the two agree).
const OP_DT: u32 = 0u;
const OP_GATE: u32 = 1u;
const OP_GATE_BACK: u32 = 2u;
const OP_DT_BACK: u32 = 3u;
const OP_SWIGLU: u32 = 4u;
const OP_SWIGLU_BACK: u32 = 5u;
const OP_ROW_AXPY: u32 = 6u;
const OP_ROW_SCALE: u32 = 7u;
const OP_COPY: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Pointwise;
@group(0) @binding(1) var<storage, read_write> prm: array<f32>;
@group(0) @binding(2) var<storage, read_write> grd: array<f32>;
@group(0) @binding(3) var<storage, read_write> act: array<f32>;

@compute @workgroup_size(64)
fn pointwise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    // Two-dimensional grids lift the 65535-workgroup limit for big blocks.
    let e = gid.x + gid.y * groups.x * 64u;
    if (e >= p.rows * p.cols) {
        return;
    }
    let row = e / p.cols;
    let col = e % p.cols;
    let ai = p.a_off + row * p.a_rs + col;
    let bi = p.b_off + row * p.b_rs + col;
    let ci = p.c_off + row * p.c_rs + col;
    let di = p.d_off + row * p.d_rs + col;
    let ei = p.e_off + row * p.e_rs + col;
    switch p.op {
        case OP_DT: {
            let pre = act[ai] + prm[p.bias_off + col];
            act[ai] = pre;
            act[bi] = softplus(pre);
        }
        case OP_GATE: {
            act[ci] = act[ai] * silu(act[bi]);
        }
        case OP_GATE_BACK: {
            let z = act[bi];
            let dg = act[ci];
            act[di] = dg * silu(z);
            act[ei] = dg * act[ai] * silu_grad(z);
        }
        case OP_DT_BACK: {
            act[ai] *= sigmoid(act[bi]);
        }
        case OP_SWIGLU: {
            act[ci] = silu(act[ai]) * act[bi];
        }
        case OP_SWIGLU_BACK: {
            let a = act[ai];
            let dh = act[ci];
            act[di] = dh * act[bi] * silu_grad(a);
            act[ei] = dh * silu(a);
        }
        case OP_ROW_AXPY: {
            act[ci] += act[p.b_off + row * p.b_rs] * act[ai];
        }
        case OP_ROW_SCALE: {
            act[ci] = act[p.b_off + row * p.b_rs] * act[ai];
        }
        case OP_COPY, default: {
            act[ci] = act[ai];
        }
    }
}

@compute @workgroup_size(64)
fn colsum(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    if (col >= p.cols) {
        return;
    }
    var acc = 0.0;
    for (var row = 0u; row < p.rows; row++) {
        acc += act[p.a_off + row * p.a_rs + col];
    }
    grd[p.g_off + col] += acc;
}
