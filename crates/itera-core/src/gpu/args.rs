//! The uniform blocks of the WGSL kernels, field for field (each struct mirrors the one at the
//! top of its shader file; tests/shaders.rs compares every field's name, offset and size with
//! the struct naga reflects). Offsets are in f32 elements of the activation arena or u32 words
//! of the control buffer.

use bytemuck::{Pod, Zeroable};

/// A uniform struct's layout as Rust lays it out: the WGSL struct it mirrors (shader file
/// under shaders/, struct name) and its fields.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub shader: &'static str,
    pub wgsl_struct: &'static str,
    pub rust_struct: &'static str,
    pub size: usize,
    /// (name, byte offset, byte size) in declaration order.
    pub fields: &'static [(&'static str, usize, usize)],
}

/// Declares a `#[repr(C)]` uniform struct mirroring `"SHADER" WgslStruct`, with its `LAYOUT`.
macro_rules! uniform {
    (
        $shader:literal $wgsl:ident,
        $(#[$meta:meta])*
        pub struct $name:ident { $(pub $field:ident: $ty:ty,)* }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        pub struct $name { $(pub $field: $ty,)* }

        impl $name {
            pub const LAYOUT: $crate::gpu::args::Layout = $crate::gpu::args::Layout {
                shader: $shader,
                wgsl_struct: stringify!($wgsl),
                rust_struct: stringify!($name),
                size: std::mem::size_of::<$name>(),
                fields: &[$((stringify!($field), std::mem::offset_of!($name, $field), std::mem::size_of::<$ty>()),)*],
            };
        }
    };
}
pub(crate) use uniform;

/// `route_slot` of a matvec that is not an expert dispatch.
pub const NO_ROUTE: u32 = u32::MAX;

uniform! {
    "linear.wgsl" Linear,
    /// linear.wgsl `Linear` (matvec and embed_row).
    #[derive(Clone, Copy, Debug, Pod, Zeroable)]
    pub struct LinearArgs {
        pub rows: u32,
        pub cols: u32,
        pub x_off: u32,
        pub y_off: u32,
        pub accumulate: u32,
        pub route_slot: u32,
        pub route_scale: u32,
        pub route_base: u32,
        pub route_stride: u32,
        pub token_base: u32,
        pub tokens: u32,
        pub x_stride: u32,
        pub y_stride: u32,
    }
}

impl LinearArgs {
    /// y = W·x (rows × cols), not routed.
    pub fn matvec(rows: usize, cols: usize, x_off: usize, y_off: usize) -> LinearArgs {
        LinearArgs {
            rows: rows as u32,
            cols: cols as u32,
            x_off: x_off as u32,
            y_off: y_off as u32,
            accumulate: 0,
            route_slot: NO_ROUTE,
            route_scale: 0,
            route_base: 0,
            route_stride: 0,
            token_base: 0,
            tokens: 1,
            x_stride: cols as u32,
            y_stride: rows as u32,
        }
    }

    /// Y = X·Wᵀ for `tokens` tokens whose x (y) values start `x_stride` (`y_stride`) apart.
    pub fn matmul(
        rows: usize,
        cols: usize,
        tokens: usize,
        (x_off, x_stride): (usize, usize),
        (y_off, y_stride): (usize, usize),
    ) -> LinearArgs {
        LinearArgs {
            tokens: tokens as u32,
            x_stride: x_stride as u32,
            y_stride: y_stride as u32,
            ..LinearArgs::matvec(rows, cols, x_off, y_off)
        }
    }

    /// y += W·x.
    pub fn accumulating(self) -> LinearArgs {
        LinearArgs { accumulate: 1, ..self }
    }

    /// Reads only the rows of the expert routed in `slot` (the trace entry at
    /// `route_base + step · route_stride + 2·slot`); `scale` multiplies by its weight.
    pub fn routed(self, slot: usize, route_base: usize, route_stride: usize, scale: bool) -> LinearArgs {
        LinearArgs {
            route_slot: slot as u32,
            route_scale: scale as u32,
            route_base: route_base as u32,
            route_stride: route_stride as u32,
            ..self
        }
    }
}

uniform! {
    "norm.wgsl" Norm,
    /// norm.wgsl `Norm`.
    #[derive(Clone, Copy, Debug, Pod, Zeroable)]
    pub struct NormArgs {
        pub d: u32,
        pub rows: u32,
        pub x_off: u32,
        pub y_off: u32,
        pub w_off: u32,
        pub stride: u32,
    }
}

uniform! {
    "conv.wgsl" Conv,
    /// conv.wgsl `Conv`.
    #[derive(Clone, Copy, Debug, Pod, Zeroable)]
    pub struct ConvArgs {
        pub channels: u32,
        pub k: u32,
        pub x_off: u32,
        pub tail_off: u32,
        pub y_off: u32,
        pub w_off: u32,
        pub b_off: u32,
        pub tokens: u32,
        pub x_stride: u32,
        pub y_stride: u32,
    }
}

uniform! {
    "scan.wgsl" Scan,
    /// scan.wgsl `Scan`.
    #[derive(Clone, Copy, Debug, Pod, Zeroable)]
    pub struct ScanArgs {
        pub channels: u32,
        pub n: u32,
        pub u_off: u32,
        pub dt_off: u32,
        pub b_off: u32,
        pub z_off: u32,
        pub h_off: u32,
        pub y_off: u32,
        pub dt_b_off: u32,
        pub a_log_off: u32,
        pub d_skip_off: u32,
        pub tokens: u32,
        pub in_stride: u32,
        pub out_stride: u32,
    }
}

uniform! {
    "swiglu.wgsl" Swiglu,
    /// swiglu.wgsl `Swiglu`.
    #[derive(Clone, Copy, Debug, Pod, Zeroable)]
    pub struct SwigluArgs {
        pub n: u32,
        pub a_off: u32,
        pub b_off: u32,
        pub tokens: u32,
        pub stride: u32,
    }
}

uniform! {
    "moe.wgsl" Route,
    /// moe.wgsl `Route`.
    #[derive(Clone, Copy, Debug, Pod, Zeroable)]
    pub struct RouteArgs {
        pub experts: u32,
        pub k: u32,
        pub logits_off: u32,
        pub route_base: u32,
        pub route_stride: u32,
        pub stride: u32,
    }
}

uniform! {
    "sample.wgsl" Sample,
    /// sample.wgsl `Sample`.
    #[derive(Clone, Copy, Debug, Pod, Zeroable)]
    pub struct SampleArgs {
        pub vocab: u32,
        pub logits_off: u32,
        pub temperature: f32,
        pub top_k: u32,
        pub top_p: f32,
        pub seed_lo: u32,
        pub seed_hi: u32,
        pub tokens_base: u32,
        pub logprobs_base: u32,
    }
}

uniform! {
    "attention.wgsl" Attention,
    /// attention.wgsl `Attention` (rope_kv and attention: a Transformer layer's two dispatches).
    #[derive(Clone, Copy, Debug, Pod, Zeroable)]
    pub struct AttentionArgs {
        pub q_off: u32,
        pub k_off: u32,
        pub v_off: u32,
        pub out_off: u32,
        pub scores_off: u32,
        pub k_cache: u32,
        pub v_cache: u32,
        pub cos_off: u32,
        pub sin_off: u32,
        pub head_size: u32,
        pub n_heads: u32,
        pub n_kv_heads: u32,
        pub context: u32,
        pub scale: u32,
    }
}

/// Every decode kernel's uniform block, for the layout test.
pub const LAYOUTS: [Layout; 8] = [
    LinearArgs::LAYOUT,
    NormArgs::LAYOUT,
    ConvArgs::LAYOUT,
    ScanArgs::LAYOUT,
    SwigluArgs::LAYOUT,
    RouteArgs::LAYOUT,
    SampleArgs::LAYOUT,
    AttentionArgs::LAYOUT,
];

/// Workgroups for one thread per item with 64-thread groups.
pub fn groups_for(items: usize) -> (u32, u32) {
    ((items as u32).div_ceil(64).max(1), 1)
}

/// Workgroups for matmul's 16 × 16 tiles of (rows, tokens).
pub fn groups_for_tiles(rows: usize, tokens: usize) -> (u32, u32) {
    ((rows as u32).div_ceil(16).max(1), (tokens as u32).div_ceil(16).max(1))
}

/// Workgroups for one group per row; rows beyond 65535 continue on the y axis.
pub fn groups_per_row(rows: usize) -> (u32, u32) {
    let rows = rows.max(1) as u32;
    let x = rows.min(65_535);
    (x, rows.div_ceil(x))
}
