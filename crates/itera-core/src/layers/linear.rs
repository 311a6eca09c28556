//! Linear layers without bias, `y = x·Wᵀ` with W (out, in) row-major, and their backward.

use crate::kernels::gemm;

/// dx (m, n_in) += dy (m, n_out) · W;  dw (n_out, n_in) += dyᵀ · x.
/// `dx` is `None` where the input needs no gradient (e.g. the token embedding path handles
/// its own). `w` must be the f32 weights.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    m: usize,
    n_out: usize,
    n_in: usize,
) {
    if let Some(dx) = dx {
        gemm(m, n_out, n_in, 1.0, dy, (n_out, 1), w, (n_in, 1), 1.0, dx, (n_in, 1));
    }
    gemm(n_out, m, n_in, 1.0, dy, (1, n_out), x, (n_in, 1), 1.0, dw, (n_in, 1));
}
