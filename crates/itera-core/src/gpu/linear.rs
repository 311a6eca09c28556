//! Weight matrices on the GPU, uploaded once in their file precision (SPEC "Weight files"):
//! linear.wgsl decodes every precision's words itself, so nothing is dequantized on upload.

use super::Gpu;
use crate::error::{Error, Result};
use crate::matrix::{Matrix, MatrixData};
use crate::precision::Precision;

/// A weight matrix resident on the GPU (possibly several stacked by rows: a MoE layer's
/// experts, which linear.wgsl then addresses by the routed expert index).
pub struct GpuMatrix {
    /// Rows of one matrix of the stack.
    pub rows: usize,
    pub cols: usize,
    pub precision: Precision,
    pub(crate) words: wgpu::Buffer,
    /// f16 scales for q8/q4/q3, (scale, min) pairs for q2; a placeholder word for f32/f16,
    /// which have none.
    pub(crate) scales: wgpu::Buffer,
}

impl GpuMatrix {
    pub fn upload(gpu: &Gpu, m: &Matrix) -> Result<GpuMatrix> {
        Self::upload_stacked(gpu, &[m])
    }

    /// Uploads matrices of one shape one after the other, as one (n·rows, cols) matrix: every
    /// format stores rows independently, so concatenation is stacking. A stack whose matrices
    /// differ in precision (a mixed file's experts) is uploaded in f32 — exact, since every
    /// format's values are f32 numbers — so the GPU reads the values the CPU does; only that
    /// stack's memory grows.
    pub fn upload_stacked(gpu: &Gpu, stack: &[&Matrix]) -> Result<GpuMatrix> {
        let first = stack.first().ok_or(Error::EmptyInput("matrix stack"))?;
        let (rows, cols) = (first.rows, first.cols);
        if let Some(odd) = stack.iter().find(|m| (m.rows, m.cols) != (rows, cols)) {
            return Err(Error::ShapeMismatch {
                op: "gpu matrix stack",
                detail: format!("{rows}×{cols} stacked with {}×{}", odd.rows, odd.cols),
            });
        }
        if stack.iter().any(|m| m.precision() != first.precision()) {
            let f32s: Vec<Matrix> = stack.iter().map(|m| m.to_precision(Precision::F32)).collect();
            return Self::upload_stacked(gpu, &f32s.iter().collect::<Vec<_>>());
        }
        let precision = first.precision();
        let mut words = Vec::new();
        let mut scales = Vec::new();
        for m in stack {
            match &m.data {
                MatrixData::F32(v) => words.extend_from_slice(bytemuck::cast_slice(v)),
                MatrixData::F16(v) => words.extend_from_slice(bytemuck::cast_slice(v)),
                MatrixData::Q8 { q, scale } => {
                    words.extend_from_slice(bytemuck::cast_slice(q));
                    scales.extend_from_slice(bytemuck::cast_slice(scale));
                }
                MatrixData::Q4 { q, scale } | MatrixData::Q3 { q, scale } => {
                    words.extend_from_slice(q);
                    scales.extend_from_slice(bytemuck::cast_slice(scale));
                }
                MatrixData::Q2 { q, scale, min } => {
                    words.extend_from_slice(q);
                    for (s, m) in scale.iter().zip(min) {
                        scales.extend_from_slice(bytemuck::bytes_of(s));
                        scales.extend_from_slice(bytemuck::bytes_of(m));
                    }
                }
            }
        }
        let storage = wgpu::BufferUsages::STORAGE;
        Ok(GpuMatrix {
            rows,
            cols,
            precision,
            words: gpu.buffer_init(&format!("weights {precision}"), &words, storage)?,
            scales: gpu.buffer_init("scales", &scales, storage)?,
        })
    }

    pub(crate) fn precision_index(&self) -> usize {
        self.precision.index()
    }
}
