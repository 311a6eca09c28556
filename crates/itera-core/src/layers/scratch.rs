//! Working buffers of the backward passes, kept between training steps (in the model's cache)
//! so that a step allocates nothing once the first has sized them — llm.c's activation
//! gradients allocated once, without fixing the batch shape up front. Each buffer has one
//! role; `zeroed` hands it out cleared to the length the call needs, growing it only when a
//! call needs more than any before.

/// `buf` as `n` zeros, reusing its allocation.
pub fn zeroed(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    buf.clear();
    buf.resize(n, 0.0);
    buf
}

/// `swiglu_backward`'s buffers: ∂L/∂h, ∂L/∂(W1 x), ∂L/∂(W3 x), each (n, F).
#[derive(Clone, Debug, Default)]
pub struct SwigluGradScratch {
    pub dh: Vec<f32>,
    pub da: Vec<f32>,
    pub db: Vec<f32>,
}

/// `moe_backward`'s buffers: ∂L/∂ of the routing weights (M, k), one expert's output gradient
/// and input gradient (n, D), the router's logits gradient (M, E) and one row of ∂L/∂p (E).
#[derive(Clone, Debug, Default)]
pub struct MoeGradScratch {
    pub dweights: Vec<f32>,
    pub dexp: Vec<f32>,
    pub dx: Vec<f32>,
    pub dlogits: Vec<f32>,
    pub dp: Vec<f32>,
    pub swiglu: SwigluGradScratch,
}

/// `scan_backward`'s buffers: the state gradient and a zero state (Di, N), ∂L/∂B and ∂L/∂C
/// of one step (N).
#[derive(Clone, Debug, Default)]
pub struct ScanGradScratch {
    pub dh: Vec<f32>,
    pub zeros: Vec<f32>,
    pub db: Vec<f32>,
    pub dc: Vec<f32>,
}

/// `ssm_backward`'s buffers, named after the activations whose gradients they hold.
#[derive(Clone, Debug, Default)]
pub struct SsmGradScratch {
    pub dg: Vec<f32>,
    pub dxz: Vec<f32>,
    pub dy: Vec<f32>,
    pub du: Vec<f32>,
    pub ddt: Vec<f32>,
    pub da: Vec<f32>,
    pub dbc: Vec<f32>,
    pub ddtr: Vec<f32>,
    pub dxn: Vec<f32>,
    pub scan: ScanGradScratch,
}
