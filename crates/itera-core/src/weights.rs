//! `Weights`: one tensor per parameter-table slot, in any precision, with random
//! initialisation and precision conversion.

use half::f16;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::family::{Architecture, Specs};
use crate::itera::Itera;
use crate::matrix::Matrix;
use crate::params::{ParamKind, ParamTable};
use crate::precision::{not_a_matrix, Precision, PrecisionMap};
use crate::rng::Pcg32;

/// A parameter's storage. Vectors are always f32 in memory: in f16 files they are converted
/// at load (losslessly) and rounded back at save, so they never need kernels of their own.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    Vector(Vec<f32>),
    Matrix(Matrix),
}

impl Tensor {
    /// The values when stored as f32 (every vector; matrices of f32 weights).
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            Tensor::Vector(v) => Some(v),
            Tensor::Matrix(m) => m.as_f32(),
        }
    }

    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        match self {
            Tensor::Vector(v) => Some(v),
            Tensor::Matrix(m) => m.as_f32_mut(),
        }
    }

    pub fn dequantize(&self) -> Vec<f32> {
        match self {
            Tensor::Vector(v) => v.clone(),
            Tensor::Matrix(m) => m.dequantize(),
        }
    }
}

/// A model's parameters: `tensors[i]` belongs to the table's i-th spec. One type for every
/// family (`A`, the SSM + MoE model by default) and every precision.
pub struct Weights<A: Architecture = Itera> {
    pub config: A::Config,
    pub table: A::Table,
    pub precision: Precision,
    pub tensors: Vec<Tensor>,
}

impl<A: Architecture> Clone for Weights<A> {
    fn clone(&self) -> Self {
        Weights {
            config: self.config.clone(),
            table: self.table.clone(),
            precision: self.precision,
            tensors: self.tensors.clone(),
        }
    }
}

impl<A: Architecture> std::fmt::Debug for Weights<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("family", &A::FAMILY)
            .field("config", &self.config)
            .field("precision", &self.precision)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl<A: Architecture> Weights<A> {
    /// Builds f32 weights from one f32 vector per table slot (shapes checked by the caller).
    pub fn from_f32_tensors(config: A::Config, values: Vec<Vec<f32>>) -> Weights<A> {
        let table = A::table(&config);
        let tensors = table
            .specs()
            .iter()
            .zip(values)
            .map(|(spec, v)| match spec.kind {
                ParamKind::Matrix => Tensor::Matrix(Matrix::from_f32(spec.shape[0], spec.shape[1], v)),
                ParamKind::Vector => Tensor::Vector(v),
            })
            .collect();
        Weights {
            config,
            table,
            precision: Precision::F32,
            tensors,
        }
    }

    pub fn family(&self) -> crate::family::Family {
        A::FAMILY
    }

    /// The spec of every slot, in table order.
    pub fn specs(&self) -> &[crate::params::ParamSpec] {
        self.table.specs()
    }

    /// The same model in another precision (matrices quantized; vectors rounded through f16
    /// except in f32, as the file formats store them — see `Precision::vectors_in_f16`).
    pub fn to_precision(&self, precision: Precision) -> Weights<A> {
        self.to_precision_map(precision, &PrecisionMap::new())
            .expect("an empty map names no tensor")
    }

    /// The same model with each matrix `map` names in its precision there and every other
    /// tensor in `base` (a mixed file when the map is not empty); a name that is not one of the
    /// model's matrices is refused.
    pub fn to_precision_map(&self, base: Precision, map: &PrecisionMap) -> Result<Weights<A>> {
        if let Some(name) = not_a_matrix(map, self.specs()) {
            return Err(Error::setting(
                "precision map",
                name,
                "the name of one of this model's matrices (vectors take the file's precision)",
            ));
        }
        let tensors = self
            .specs()
            .iter()
            .zip(&self.tensors)
            .map(|(spec, t)| match t {
                Tensor::Matrix(m) => Tensor::Matrix(m.to_precision(map.get(&spec.name).copied().unwrap_or(base))),
                Tensor::Vector(v) if base.vectors_in_f16() => {
                    Tensor::Vector(v.iter().map(|&x| f16::from_f32(x).to_f32()).collect())
                }
                Tensor::Vector(v) => Tensor::Vector(v.clone()),
            })
            .collect();
        Ok(Weights {
            config: self.config.clone(),
            table: self.table.clone(),
            precision: base,
            tensors,
        })
    }

    /// The matrices stored in another precision than `precision`, by name (empty: a uniform
    /// model).
    pub fn precision_map(&self) -> PrecisionMap {
        self.specs()
            .iter()
            .zip(&self.tensors)
            .filter_map(|(spec, t)| match t {
                Tensor::Matrix(m) if m.precision() != self.precision => Some((spec.name.clone(), m.precision())),
                _ => None,
            })
            .collect()
    }

    pub fn matrix(&self, slot: usize) -> &Matrix {
        match &self.tensors[slot] {
            Tensor::Matrix(m) => m,
            Tensor::Vector(_) => panic!("parameter `{}` is not a matrix", self.specs()[slot].name),
        }
    }

    pub fn vector(&self, slot: usize) -> &[f32] {
        match &self.tensors[slot] {
            Tensor::Vector(v) => v,
            Tensor::Matrix(_) => panic!("parameter `{}` is not a vector", self.specs()[slot].name),
        }
    }

    /// f32 view of any slot; only valid for f32 weights (training, backward).
    pub fn f32(&self, slot: usize) -> &[f32] {
        self.tensors[slot]
            .as_f32()
            .unwrap_or_else(|| panic!("parameter `{}` is not stored as f32", self.specs()[slot].name))
    }

    /// Every value of f32 weights in table order (what a browser worker is sent per step).
    pub fn flat_f32(&self) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.total_params());
        for (slot, t) in self.tensors.iter().enumerate() {
            let values = t
                .as_f32()
                .ok_or_else(|| Error::setting("precision", self.precision, "f32 weights"))?;
            debug_assert_eq!(values.len(), self.specs()[slot].numel());
            out.extend_from_slice(values);
        }
        Ok(out)
    }

    /// Overwrites f32 weights with `flat` (table order, `flat_f32`'s layout).
    pub fn load_flat(&mut self, flat: &[f32]) -> Result<()> {
        let total = self.total_params();
        if flat.len() != total {
            return Err(Error::ShapeMismatch {
                op: "weights",
                detail: format!("{} values for {total} parameters", flat.len()),
            });
        }
        if self.precision != Precision::F32 {
            return Err(Error::setting("precision", self.precision, "f32 weights"));
        }
        let mut at = 0;
        for dst in self.tensors.iter_mut().filter_map(Tensor::as_f32_mut) {
            dst.copy_from_slice(&flat[at..at + dst.len()]);
            at += dst.len();
        }
        Ok(())
    }

    /// Total number of scalar parameters.
    pub fn total_params(&self) -> usize {
        self.specs().iter().map(crate::params::ParamSpec::numel).sum()
    }

    /// Bytes of parameter data in memory.
    pub fn size_bytes(&self) -> usize {
        self.tensors
            .iter()
            .map(|t| match t {
                Tensor::Vector(v) => v.len() * 4,
                Tensor::Matrix(m) => m.size_bytes(),
            })
            .sum()
    }
}

impl Weights {
    /// Random initialisation of an itera model in f32, deterministic for a seed.
    ///
    /// Projections: N(0, 1/fan_in), with residual outputs (out_proj, w2) further scaled by
    /// 1/sqrt(2·n_layers) as in GPT-2 so the residual stream does not grow with depth.
    /// Embedding and router: N(0, 0.02²). SSM: A_log[i, n] = ln(n + 1) (S4D-real, Mamba §3.6);
    /// dt_b = softplus⁻¹(dt) with dt log-uniform in [1e-3, 1e-1]; dt_proj uniform ±R^-1/2;
    /// conv taps uniform ±K^-1/2; Dskip = 1; norms = 1; biases = 0.
    pub fn init_random(config: &Config, seed: u64) -> Result<Weights> {
        config.validate()?;
        let table = ParamTable::new(config);
        let mut rng = Pcg32::new(seed);
        let residual_scale = 1.0 / (2.0 * config.n_layers as f32).sqrt();
        let mut values = Vec::with_capacity(table.len());
        for spec in &table.specs {
            let n = spec.numel();
            let leaf = spec.name.rsplit('.').next().unwrap_or(&spec.name);
            let normal = |rng: &mut Pcg32, std: f32| (0..n).map(|_| rng.normal() * std).collect::<Vec<f32>>();
            let uniform = |rng: &mut Pcg32, bound: f32| {
                (0..n)
                    .map(|_| (rng.next_f32() * 2.0 - 1.0) * bound)
                    .collect::<Vec<f32>>()
            };
            let fan_in = *spec.shape.last().unwrap_or(&1) as f32;
            let v = match leaf {
                "embed" | "router" => normal(&mut rng, 0.02),
                "ssm_norm" | "ffn_norm" | "final_norm" | "Dskip" => vec![1.0; n],
                "conv_b" => vec![0.0; n],
                "conv_w" => uniform(&mut rng, 1.0 / (config.d_conv as f32).sqrt()),
                "dt_proj" => uniform(&mut rng, 1.0 / (config.dt_rank as f32).sqrt()),
                "dt_b" => (0..n)
                    .map(|_| {
                        let dt = (1e-3f32.ln() + rng.next_f32() * (1e-1f32.ln() - 1e-3f32.ln())).exp();
                        dt + (-(-dt).exp_m1()).ln() // softplus⁻¹(dt) = dt + ln(1 − e^−dt)
                    })
                    .collect(),
                "A_log" => (0..n).map(|i| ((i % config.d_state) as f32 + 1.0).ln()).collect(),
                "out_proj" | "w2" => normal(&mut rng, residual_scale / fan_in.sqrt()),
                _ => normal(&mut rng, 1.0 / fan_in.sqrt()),
            };
            values.push(v);
        }
        Ok(Weights::from_f32_tensors(config.clone(), values))
    }
}

/// Gradients (or AdamW moments): one f32 buffer per table slot, zero-initialised.
#[derive(Clone, Debug)]
pub struct Grads {
    pub tensors: Vec<Vec<f32>>,
}

impl Grads {
    pub fn zeros(table: &(impl Specs + ?Sized)) -> Grads {
        Grads {
            tensors: table.specs().iter().map(|s| vec![0.0; s.numel()]).collect(),
        }
    }

    pub fn zero(&mut self) {
        for t in &mut self.tensors {
            t.fill(0.0);
        }
    }

    /// Overwrites every slot from `flat` (table order).
    pub fn load_flat(&mut self, flat: &[f32]) -> Result<()> {
        let total: usize = self.tensors.iter().map(Vec::len).sum();
        if flat.len() != total {
            return Err(Error::ShapeMismatch {
                op: "gradients",
                detail: format!("{} values for {total} parameters", flat.len()),
            });
        }
        let mut at = 0;
        for t in &mut self.tensors {
            let n = t.len();
            t.copy_from_slice(&flat[at..at + n]);
            at += n;
        }
        Ok(())
    }

    /// Every slot's values in table order.
    pub fn flat(&self) -> Vec<f32> {
        self.tensors.iter().flatten().copied().collect()
    }

    /// Global L2 norm over every slot (for gradient clipping), accumulated in f64.
    pub fn norm(&self) -> f32 {
        self.tensors
            .iter()
            .flatten()
            .map(|&g| g as f64 * g as f64)
            .sum::<f64>()
            .sqrt() as f32
    }
}
