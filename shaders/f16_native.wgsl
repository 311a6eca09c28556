enable f16;

// Prelude of linear.wgsl where the device has shader-f16: the weight words are bound a second
// time as an f16 array and f16 weight i is loaded directly and widened. (naga reads
// bitcast<vec2<f16>>(u32) as a scalar, so the words cannot simply be reinterpreted.) Products
// and sums stay f32 with either prelude, so the results agree to f32 rounding.
// gpu/kernels.rs puts this file or f16_packed.wgsl in front of linear.wgsl.

@group(0) @binding(5) var<storage, read> w_half: array<f16>;

fn weight_f16(i: u32) -> f32 {
    return f32(w_half[i]);
}
