// y = W·x for an f32 matrix W (rows × cols, row-major). CPU twin: kernels::matvec_f32.
// One workgroup per output row: its 64 threads stride across the row, then reduce their
// partial sums in workgroup memory. Rows beyond 65535 continue on the dispatch's y axis.

struct Dims {
    rows: u32,
    cols: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG>;

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
        for (var j = tid; j < dims.cols; j += WG) {
            sum += w[base + j] * x[j];
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
