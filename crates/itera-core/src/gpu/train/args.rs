//! The uniform blocks of the training kernels (shaders/train/), field for field. Offsets are
//! in f32 elements of the parameter, gradient or activation buffer, or u32 words of the ids.

use bytemuck::{Pod, Zeroable};

use crate::gpu::args::{uniform, Layout};

/// Which f32 buffer a GEMM operand lives in (gemm.wgsl `load`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Buf {
    Params = 0,
    Grads = 1,
    Act = 2,
}

/// An operand: buffer, offset, row stride, column stride.
#[derive(Clone, Copy, Debug)]
pub struct Operand {
    pub buf: Buf,
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
}

impl Operand {
    /// Row-major activations with `width` columns per row (or a column block of wider rows).
    pub fn act(off: usize, rs: usize) -> Operand {
        Operand {
            buf: Buf::Act,
            off,
            rs,
            cs: 1,
        }
    }

    /// The same memory read transposed.
    pub fn t(self) -> Operand {
        Operand {
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// How a GEMM writes C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Set,
    Add,
    /// C = R + A·B with R (activations) at this offset and row stride.
    Residual(usize, usize),
}

uniform! {
    "train/gemm.wgsl" Gemm,
    /// gemm.wgsl `Gemm`.
    #[derive(Clone, Copy, Debug, Pod, Zeroable)]
    pub struct GemmArgs {
        pub m: u32,
        pub n: u32,
        pub k: u32,
        pub a_buf: u32,
        pub a_off: u32,
        pub a_rs: u32,
        pub a_cs: u32,
        pub b_buf: u32,
        pub b_off: u32,
        pub b_rs: u32,
        pub b_cs: u32,
        pub c_buf: u32,
        pub c_off: u32,
        pub c_rs: u32,
        pub mode: u32,
        pub r_off: u32,
        pub r_rs: u32,
    }
}

impl GemmArgs {
    /// C (m × n) ← A (m × k) · B (k × n), C row-major at `c` with row stride `c_rs`.
    pub fn new(
        (m, n, k): (usize, usize, usize),
        a: Operand,
        b: Operand,
        c: (Buf, usize, usize),
        write: Write,
    ) -> GemmArgs {
        let (mode, r_off, r_rs) = match write {
            Write::Set => (0, 0, 0),
            Write::Add => (1, 0, 0),
            Write::Residual(off, rs) => (2, off as u32, rs as u32),
        };
        GemmArgs {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            a_buf: a.buf as u32,
            a_off: a.off as u32,
            a_rs: a.rs as u32,
            a_cs: a.cs as u32,
            b_buf: b.buf as u32,
            b_off: b.off as u32,
            b_rs: b.rs as u32,
            b_cs: b.cs as u32,
            c_buf: c.0 as u32,
            c_off: c.1 as u32,
            c_rs: c.2 as u32,
            mode,
            r_off,
            r_rs,
        }
    }
}

uniform! {
    "train/norm.wgsl" Norm,
    /// norm.wgsl `Norm`.
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct NormArgs {
        pub rows: u32,
        pub d: u32,
        pub x_off: u32,
        pub y_off: u32,
        pub rstd_off: u32,
        pub w_off: u32,
        pub dy_off: u32,
        pub dx_off: u32,
        pub gw_off: u32,
        pub accumulate: u32,
    }
}

uniform! {
    "train/ssm.wgsl" Ssm,
    /// ssm.wgsl `Ssm`.
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct SsmArgs {
        pub batch: u32,
        pub t: u32,
        pub di: u32,
        pub n: u32,
        pub k: u32,
        pub xz_off: u32,
        pub conv_off: u32,
        pub u_off: u32,
        pub dt_off: u32,
        pub bc_off: u32,
        pub xo: u32,
        pub b_col: u32,
        pub y_off: u32,
        pub conv_w: u32,
        pub conv_b: u32,
        pub a_log: u32,
        pub d_skip: u32,
        pub dxz_off: u32,
        pub du_off: u32,
        pub ddt_off: u32,
        pub dy_off: u32,
        pub dbc_off: u32,
        pub g_conv_w: u32,
        pub g_conv_b: u32,
        pub g_a_log: u32,
        pub g_d_skip: u32,
        pub mode: u32,
    }
}

/// pointwise.wgsl `op` values (its `OP_…` constants; tests/shaders.rs checks both sides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Op {
    Dt = 0,
    Gate = 1,
    GateBack = 2,
    DtBack = 3,
    Swiglu = 4,
    SwigluBack = 5,
    RowAxpy = 6,
    RowScale = 7,
    Copy = 8,
}

impl Op {
    pub const ALL: [Op; 9] = [
        Op::Dt,
        Op::Gate,
        Op::GateBack,
        Op::DtBack,
        Op::Swiglu,
        Op::SwigluBack,
        Op::RowAxpy,
        Op::RowScale,
        Op::Copy,
    ];

    /// The name of its constant in pointwise.wgsl.
    pub fn wgsl_name(self) -> &'static str {
        match self {
            Op::Dt => "OP_DT",
            Op::Gate => "OP_GATE",
            Op::GateBack => "OP_GATE_BACK",
            Op::DtBack => "OP_DT_BACK",
            Op::Swiglu => "OP_SWIGLU",
            Op::SwigluBack => "OP_SWIGLU_BACK",
            Op::RowAxpy => "OP_ROW_AXPY",
            Op::RowScale => "OP_ROW_SCALE",
            Op::Copy => "OP_COPY",
        }
    }
}

uniform! {
    "train/pointwise.wgsl" Pointwise,
    /// pointwise.wgsl `Pointwise`: operands a..e as (offset, row stride).
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct PointwiseArgs {
        pub rows: u32,
        pub cols: u32,
        pub op: u32,
        pub a_off: u32,
        pub a_rs: u32,
        pub b_off: u32,
        pub b_rs: u32,
        pub c_off: u32,
        pub c_rs: u32,
        pub d_off: u32,
        pub d_rs: u32,
        pub e_off: u32,
        pub e_rs: u32,
        pub bias_off: u32,
        pub g_off: u32,
    }
}

impl PointwiseArgs {
    /// Operands a, b, … in order as (offset, row stride); those not given are 0.
    pub fn new(op: Op, (rows, cols): (usize, usize), operands: &[(usize, usize)]) -> PointwiseArgs {
        let mut o = [[0u32; 2]; 5];
        for (dst, &(off, rs)) in o.iter_mut().zip(operands) {
            *dst = [off as u32, rs as u32];
        }
        PointwiseArgs {
            rows: rows as u32,
            cols: cols as u32,
            op: op as u32,
            a_off: o[0][0],
            a_rs: o[0][1],
            b_off: o[1][0],
            b_rs: o[1][1],
            c_off: o[2][0],
            c_rs: o[2][1],
            d_off: o[3][0],
            d_rs: o[3][1],
            e_off: o[4][0],
            e_rs: o[4][1],
            ..Default::default()
        }
    }
}

uniform! {
    "train/moe.wgsl" Route,
    /// moe.wgsl `Route`.
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct RouteArgs {
        pub rows: u32,
        pub e: u32,
        pub k: u32,
        pub probs_off: u32,
        pub w_off: u32,
        pub experts_off: u32,
        pub counts_off: u32,
        pub report_off: u32,
        pub aux_weight: f32,
        pub dw_off: u32,
        pub dlogits_off: u32,
        pub aux_scale: f32,
        pub d: u32,
        pub expert: u32,
        pub dout_off: u32,
        pub out_off: u32,
    }
}

uniform! {
    "train/loss.wgsl" Loss,
    /// loss.wgsl `Loss`.
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct LossArgs {
        pub rows: u32,
        pub t: u32,
        pub v: u32,
        pub logits_off: u32,
        pub teacher_off: u32,
        pub tokens_off: u32,
        pub rowloss_off: u32,
        pub distill: u32,
        pub ce_scale: f32,
        pub kl_scale: f32,
        pub tau: f32,
        pub report_off: u32,
        pub ce_weight: f32,
        pub kl_weight: f32,
    }
}

uniform! {
    "train/embed.wgsl" Embed,
    /// embed.wgsl `Embed`.
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct EmbedArgs {
        pub rows: u32,
        pub d: u32,
        pub tokens_off: u32,
        pub table_off: u32,
        pub x_off: u32,
        pub g_off: u32,
    }
}

uniform! {
    "train/adamw.wgsl" Adam,
    /// adamw.wgsl `Adam`.
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct AdamArgs {
        pub len: u32,
        pub off: u32,
        pub report_off: u32,
        pub partial_off: u32,
        pub decay: f32,
        pub beta1: f32,
        pub beta2: f32,
        pub eps: f32,
        pub clip: f32,
    }
}

/// adamw.wgsl: the report's slots and the number of partial sums of the norm.
pub mod report {
    pub const LR: usize = 0;
    pub const C1: usize = 1;
    pub const C2: usize = 2;
    pub const CE: usize = 3;
    pub const KL: usize = 4;
    pub const AUX: usize = 5;
    pub const NORM_SQ: usize = 6;
    pub const LEN: usize = 8;
    pub const PARTS: usize = 64;
}

/// Workgroups of 64 for `items` one-per-thread items, on a 2-D grid past 65535 groups
/// (pointwise.wgsl and embed_forward index with `gid.x + gid.y·groups.x·64`).
pub fn groups_2d(items: usize, wg: usize) -> (u32, u32) {
    let groups = items.div_ceil(wg).max(1) as u32;
    let x = groups.min(65_535);
    (x, groups.div_ceil(x))
}

/// Every training kernel's uniform block, for the layout test.
pub const LAYOUTS: [Layout; 8] = [
    GemmArgs::LAYOUT,
    NormArgs::LAYOUT,
    SsmArgs::LAYOUT,
    PointwiseArgs::LAYOUT,
    RouteArgs::LAYOUT,
    LossArgs::LAYOUT,
    EmbedArgs::LAYOUT,
    AdamArgs::LAYOUT,
];
