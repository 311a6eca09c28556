// y = W·x for a q8 matrix: int8 values (rows × cols, row-major, packed four to a u32 word,
// little-endian) and one f16 scale per 32 values of a row (packed two to a word), so a value
// is q · scale. CPU twin: kernels::matvec_q8. Needs no shader-f16 support: scales are read
// with unpack2x16float. Same workgroup scheme as matvec_f32.wgsl.

struct Dims {
    rows: u32,
    cols: u32,
    groups_per_row: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> q: array<u32>;
@group(0) @binding(2) var<storage, read> scales: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
const GROUP: u32 = 32u;
var<workgroup> partial: array<f32, WG>;

fn q8_at(i: u32) -> f32 {
    let word = q[i / 4u];
    return f32(extractBits(bitcast<i32>(word), (i % 4u) * 8u, 8u));
}

fn scale_at(i: u32) -> f32 {
    let pair = unpack2x16float(scales[i / 2u]);
    return select(pair.x, pair.y, (i % 2u) == 1u);
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let row = wg.x + wg.y * groups.x;
    var sum = 0.0;
    if (row < dims.rows) {
        let base = row * dims.cols;
        let scale_base = row * dims.groups_per_row;
        for (var j = tid; j < dims.cols; j += WG) {
            sum += q8_at(base + j) * scale_at(scale_base + j / GROUP) * x[j];
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
    if (tid == 0u && row < dims.rows) {
        y[row] = partial[0];
    }
}
