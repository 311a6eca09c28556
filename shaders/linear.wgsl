// Prelude: f16_packed.wgsl or f16_native.wgsl
//
// Everything that reads a weight matrix W (rows × cols, row-major, out × in): y = W·x for one
// token, the tiled Y = X·Wᵀ for many, and the embedding row gather. One file for every weight
// precision: the pipeline-overridable constant PRECISION selects how `weight()` decodes an
// element, so each precision gets its own compiled pipeline from the same source (the index
// in Precision::ALL: 0 f32, 1 f16, 2 q8, 3 q4, 4 q3, 5 q2 — SPEC "Weight files"; q3 / q2
// block layouts in crates/itera-core/src/lowbit.rs).
// Weights are bound as u32 words: f16 weights are read by `weight_f16` from the prelude in
// front of this file — f16_native.wgsl (an f16 view of the same buffer, binding 5) where the
// device has shader-f16, f16_packed.wgsl (unpack2x16float) everywhere else; int8 and int4
// with extractBits; the f16 scales with unpack2x16float. Quantized scales are f16, one per 32
// values of a row; q2's scales buffer holds (scale, min) pairs.
//
// Activations live in one f32 arena (`act`) addressed by offsets; `ctl` holds the decode
// control words (step counter, token ids, routing trace; see gpu/plan.rs).
// CPU twins: Matrix::matvec (kernels::matvec_*) and Matrix::row_into.

override PRECISION: u32 = 0u;

const NO_ROUTE: u32 = 0xffffffffu;

struct Linear {
    rows: u32,
    cols: u32,
    x_off: u32,
    y_off: u32,
    // 1: y += W·x (the residual add), 0: y = W·x.
    accumulate: u32,
    // MoE expert dispatch: with route_slot = j, W holds every expert stacked by rows and only
    // the expert chosen in slot j at the current step is read; route_scale multiplies the
    // result by that expert's routing weight (the combine).
    route_slot: u32,
    route_scale: u32,
    // ctl index of this layer's slot 0 at step 0, and the stride between steps.
    route_base: u32,
    route_stride: u32,
    // embed_row: ctl index of the token list (the token is tokens[step]).
    token_base: u32,
    // matmul: number of tokens, and the distance between consecutive tokens' x and y.
    tokens: u32,
    x_stride: u32,
    y_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Linear;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> scales: array<u32>;
@group(0) @binding(3) var<storage, read_write> act: array<f32>;
@group(0) @binding(4) var<storage, read_write> ctl: array<u32>;

const WG: u32 = 64u;
const GROUP: u32 = 32u;
var<workgroup> partial: array<f32, WG>;

fn half_at(i: u32) -> f32 {
    let pair = unpack2x16float(scales[i / 2u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

fn group_index(row: u32, col: u32) -> u32 {
    return row * ((p.cols + GROUP - 1u) / GROUP) + col / GROUP;
}

fn group_scale(row: u32, col: u32) -> f32 {
    return half_at(group_index(row, col));
}

fn byte_at(i: u32) -> u32 {
    return extractBits(w[i / 4u], (i % 4u) * 8u, 8u);
}

// Element (row, col) of W as f32.
fn weight(row: u32, col: u32) -> f32 {
    switch PRECISION {
        case 0u: {
            return bitcast<f32>(w[row * p.cols + col]);
        }
        case 1u: {
            return weight_f16(row * p.cols + col);
        }
        case 2u: {
            let q = extractBits(bitcast<i32>(w[(row * p.cols + col) / 4u]), ((row * p.cols + col) % 4u) * 8u, 8u);
            return f32(q) * group_scale(row, col);
        }
        case 3u: {
            let byte = byte_at(row * ((p.cols + 1u) / 2u) + col / 2u);
            let q = i32(extractBits(byte, (col % 2u) * 4u, 4u)) - 8;
            return f32(q) * group_scale(row, col);
        }
        case 4u: {
            return f32(i32(low_bit_code(row, col, true)) - 4) * group_scale(row, col);
        }
        default: {
            let g = group_index(row, col);
            return f32(low_bit_code(row, col, false)) * half_at(2u * g) + half_at(2u * g + 1u);
        }
    }
}

// The code of element (row, col) of a q3 (`q3` true) or q2 matrix: in its 32-value block (the
// row's last may be shorter, n values), byte j % S of the S = ⌈n/4⌉ code bytes holds bits
// 2·(j / S) of value j; q3's third bit is bit j / H of byte j % H of the H = ⌈n/8⌉ mask bytes
// after them. A whole block takes 12 (q3) or 8 (q2) bytes; a row, ⌈cols/4⌉ (+ ⌈cols/8⌉).
fn low_bit_code(row: u32, col: u32, q3: bool) -> u32 {
    var row_bytes = (p.cols + 3u) / 4u;
    var block_bytes = 8u;
    if (q3) {
        row_bytes += (p.cols + 7u) / 8u;
        block_bytes = 12u;
    }
    let block = col / GROUP;
    let j = col % GROUP;
    let n = min(GROUP, p.cols - block * GROUP);
    let s = (n + 3u) / 4u;
    let start = row * row_bytes + block * block_bytes;
    var code = extractBits(byte_at(start + j % s), 2u * (j / s), 2u);
    if (q3) {
        let h = (n + 7u) / 8u;
        code |= extractBits(byte_at(start + s + j % h), j / h, 1u) << 2u;
    }
    return code;
}

// The expert chosen in this dispatch's slot for token `token` of the current step, and its
// routing weight.
fn route_entry(token: u32) -> vec2<u32> {
    let i = p.route_base + (ctl[0] + token) * p.route_stride + 2u * p.route_slot;
    return vec2<u32>(ctl[i], ctl[i + 1u]);
}

// One workgroup per output row: 64 threads stride across the row, then reduce in workgroup
// memory. With one token, rows beyond 65535 continue on the dispatch's y axis; with several
// (the prefill's routed experts: each token reads its own expert) the y axis is the token.
@compute @workgroup_size(64)
fn matvec(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    var row = wg.x + wg.y * groups.x;
    var token = 0u;
    if (p.tokens > 1u) {
        row = wg.x;
        token = wg.y;
    }
    let x_off = p.x_off + token * p.x_stride;
    let y_off = p.y_off + token * p.y_stride;
    var w_row = row;
    var scale = 1.0;
    if (p.route_slot != NO_ROUTE) {
        let entry = route_entry(token);
        w_row = entry.x * p.rows + row;
        if (p.route_scale == 1u) {
            scale = bitcast<f32>(entry.y);
        }
    }
    var sum = 0.0;
    if (row < p.rows) {
        for (var j = tid; j < p.cols; j += WG) {
            sum += weight(w_row, j) * act[x_off + j];
        }
    }
    partial[tid] = sum;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (tid < stride) {
            partial[tid] += partial[tid + stride];
        }
        workgroupBarrier();
    }
    if (tid == 0u && row < p.rows) {
        let y = partial[0] * scale;
        if (p.accumulate == 1u) {
            act[y_off + row] += y;
        } else {
            act[y_off + row] = y;
        }
    }
}

// y = W[token] (the embedding lookup), token = tokens[step] from ctl; one thread per column.
// The prefill gathers `tokens` rows (the y axis), y_stride apart, from tokens[step + t].
@compute @workgroup_size(64)
fn embed_row(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    if (col < p.cols && gid.y < p.tokens) {
        let token = ctl[p.token_base + ctl[0] + gid.y];
        act[p.y_off + gid.y * p.y_stride + col] = weight(token, col);
    }
}

// Y = X·Wᵀ for `tokens` tokens (prefill, training): each 16 × 16 workgroup computes a tile of
// 16 output rows × 16 tokens, stepping through the shared dimension 16 columns at a time with
// both operands staged in workgroup memory (each weight is decoded once per tile, not once
// per token). CPU twin: Matrix::matmul.
const TILE: u32 = 16u;
var<workgroup> x_tile: array<array<f32, 16>, 16>; // [token][k]
var<workgroup> w_tile: array<array<f32, 16>, 16>; // [row][k]

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wg.x * TILE + lid.x;
    let token = wg.y * TILE + lid.y;
    let load_row = wg.x * TILE + lid.y;
    var sum = 0.0;
    for (var k0 = 0u; k0 < p.cols; k0 += TILE) {
        let k = k0 + lid.x;
        var xv = 0.0;
        if (token < p.tokens && k < p.cols) {
            xv = act[p.x_off + token * p.x_stride + k];
        }
        x_tile[lid.y][lid.x] = xv;
        var wv = 0.0;
        if (load_row < p.rows && k < p.cols) {
            wv = weight(load_row, k);
        }
        w_tile[lid.y][lid.x] = wv;
        workgroupBarrier();
        for (var j = 0u; j < TILE; j++) {
            sum += x_tile[lid.y][j] * w_tile[lid.x][j];
        }
        workgroupBarrier();
    }
    if (row < p.rows && token < p.tokens) {
        let y = p.y_off + token * p.y_stride + row;
        if (p.accumulate == 1u) {
            act[y] += sum;
        } else {
            act[y] = sum;
        }
    }
}
