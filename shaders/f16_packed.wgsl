// Prelude of linear.wgsl where the device has no shader-f16 (SwiftShader, many WebGPU
// devices): f16 weight i is half of u32 word i / 2, decoded with unpack2x16float — core WGSL.
// gpu/kernels.rs puts this file or f16_native.wgsl in front of linear.wgsl.

fn weight_f16(i: u32) -> f32 {
    let pair = unpack2x16float(w[i / 2u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}
