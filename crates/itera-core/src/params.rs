//! The ONE parameter table: `(name, shape, kind)` for every tensor of a config.
//!
//! Weights, gradients, AdamW moments, safetensors names and the quantizer all iterate this
//! table, so they cannot drift apart. The structured index (`LayerParams`, `FfnParams`) gives
//! the model code named access to table slots without string lookups.

use crate::config::Config;

/// How a parameter is stored in quantized files (SPEC "Weight files").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A 2-D (out, in) matrix: embed, projections, router, experts. Quantized in q8/q4.
    Matrix,
    /// Norm weights, biases, conv taps, A_log, Dskip: always F32 in q8/q4 files.
    Vector,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: ParamKind,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Table slots of one SwiGLU FFN: `out = W2 (silu(W1 x) ⊙ W3 x)`.
#[derive(Clone, Debug)]
pub struct SwigluParams {
    pub w1: usize, // (F, D)
    pub w2: usize, // (D, F)
    pub w3: usize, // (F, D)
}

#[derive(Clone, Debug)]
pub enum FfnParams {
    Dense(SwigluParams),
    Moe {
        router: usize, /* (E, D) */
        experts: Vec<SwigluParams>,
    },
}

/// Table slots of one layer (shapes in SPEC notation).
#[derive(Clone, Debug)]
pub struct LayerParams {
    pub ssm_norm: usize, // (D)
    pub in_proj: usize,  // (2Di, D)
    pub conv_w: usize,   // (Di, K)
    pub conv_b: usize,   // (Di)
    pub x_proj: usize,   // (R+2N, Di)
    pub dt_proj: usize,  // (Di, R)
    pub dt_b: usize,     // (Di)
    pub a_log: usize,    // (Di, N)
    pub d_skip: usize,   // (Di)
    pub out_proj: usize, // (D, Di)
    pub ffn_norm: usize, // (D)
    pub ffn: FfnParams,
}

#[derive(Clone, Debug)]
pub struct ParamTable {
    pub specs: Vec<ParamSpec>,
    pub embed: usize,      // (V, D), also the tied LM head
    pub final_norm: usize, // (D)
    pub layers: Vec<LayerParams>,
}

impl crate::family::Specs for ParamTable {
    fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }
}

impl ParamTable {
    pub fn new(c: &Config) -> ParamTable {
        let (d, di, f) = (c.d_model, c.d_inner(), c.d_ff);
        let mut specs = Vec::new();
        let mut add = |name: String, shape: Vec<usize>, kind: ParamKind| {
            specs.push(ParamSpec { name, shape, kind });
            specs.len() - 1
        };
        use ParamKind::{Matrix, Vector};
        let embed = add("embed".into(), vec![c.vocab_size, d], Matrix);
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let p = |s: &str| format!("layers.{l}.{s}");
            let ssm_norm = add(p("ssm_norm"), vec![d], Vector);
            let in_proj = add(p("in_proj"), vec![2 * di, d], Matrix);
            let conv_w = add(p("conv_w"), vec![di, c.d_conv], Vector);
            let conv_b = add(p("conv_b"), vec![di], Vector);
            let x_proj = add(p("x_proj"), vec![c.x_proj_out(), di], Matrix);
            let dt_proj = add(p("dt_proj"), vec![di, c.dt_rank], Matrix);
            let dt_b = add(p("dt_b"), vec![di], Vector);
            let a_log = add(p("A_log"), vec![di, c.d_state], Vector);
            let d_skip = add(p("Dskip"), vec![di], Vector);
            let out_proj = add(p("out_proj"), vec![d, di], Matrix);
            let ffn_norm = add(p("ffn_norm"), vec![d], Vector);
            let swiglu = |add: &mut dyn FnMut(String, Vec<usize>, ParamKind) -> usize, prefix: String| SwigluParams {
                w1: add(format!("{prefix}.w1"), vec![f, d], Matrix),
                w2: add(format!("{prefix}.w2"), vec![d, f], Matrix),
                w3: add(format!("{prefix}.w3"), vec![f, d], Matrix),
            };
            let ffn = if c.is_moe(l) {
                let router = add(p("router"), vec![c.n_experts, d], Matrix);
                let experts = (0..c.n_experts)
                    .map(|e| swiglu(&mut add, p(&format!("experts.{e}"))))
                    .collect();
                FfnParams::Moe { router, experts }
            } else {
                FfnParams::Dense(swiglu(&mut add, p("ffn")))
            };
            layers.push(LayerParams {
                ssm_norm,
                in_proj,
                conv_w,
                conv_b,
                x_proj,
                dt_proj,
                dt_b,
                a_log,
                d_skip,
                out_proj,
                ffn_norm,
                ffn,
            });
        }
        let final_norm = add("final_norm".into(), vec![d], Vector);
        ParamTable {
            specs,
            embed,
            final_norm,
            layers,
        }
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.name == name)
    }

    /// Total number of scalar parameters.
    pub fn total_params(&self) -> usize {
        self.specs.iter().map(ParamSpec::numel).sum()
    }

    /// Parameters touched per token: everything except the experts a token is not routed to.
    pub fn active_params(&self, c: &Config) -> usize {
        let idle_experts = c.n_experts - c.top_k;
        let per_expert = 3 * c.d_ff * c.d_model;
        self.total_params() - c.n_moe_layers() * idle_experts * per_expert
    }
}

/// The tensors and scalar parameters a config implies, counted without building its table
/// (in u128: every dimension is at most 2^20, so no product of four overflows). A hostile
/// config is refused on these figures before any table or buffer exists; a unit test holds
/// them equal to `ParamTable::new`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Implied {
    pub tensors: u128,
    pub params: u128,
}

impl Implied {
    pub fn of(c: &Config) -> Implied {
        let [v, d, l, e, f, k] =
            [c.vocab_size, c.d_model, c.n_layers, c.n_experts, c.d_ff, c.d_conv].map(|x| x as u128);
        let di = c.expand as u128 * d;
        let (n, r) = (c.d_state as u128, c.dt_rank as u128);
        let moe = if c.moe_every == 0 { 0 } else { l / c.moe_every as u128 };
        // Per layer: 7 vectors (norms, conv, dt bias, A_log, Dskip) and 4 SSM matrices.
        let ssm = 2 * d + di * k + 3 * di + di * n + 2 * di * d + (r + 2 * n) * di + di * r + d * di;
        let swiglu = 3 * f * d;
        Implied {
            tensors: 2 + l * (7 + 4 + 3) + moe * (1 + 3 * e - 3),
            params: v * d + d + l * (ssm + swiglu) + moe * (e * d + (e - 1) * swiglu),
        }
    }
}

/// A model's size before it exists: parameters, and the bytes of its weight file in each
/// precision (tensor data exactly, the safetensors header estimated from the names — within
/// about a kilobyte), so the page can show them while a student's shape is being edited.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModelSize {
    pub params: usize,
    pub active_params: usize,
    pub bytes: std::collections::BTreeMap<&'static str, usize>,
}

impl ModelSize {
    /// The sizes of a model of either family with config `c`.
    pub fn of<A: crate::family::Architecture>(c: &A::Config) -> ModelSize {
        use crate::family::Specs;
        use crate::precision::{groups_per_row, packed_bytes_per_row, Precision};
        let table = A::table(c);
        let specs = table.specs();
        let mut bytes = std::collections::BTreeMap::new();
        for p in Precision::ALL {
            let mut total = 8 + 800; // length prefix, metadata (config JSON)
            for s in specs {
                let n = s.numel();
                let (rows, cols) = (s.shape[0], *s.shape.last().unwrap_or(&1));
                total += s.name.len() + 64; // a header entry: name, dtype, shape, offsets
                total += match (s.kind, p) {
                    (_, Precision::F32) => 4 * n,
                    (ParamKind::Vector, _) | (ParamKind::Matrix, Precision::F16) => 2 * n,
                    (ParamKind::Matrix, Precision::Q8) => n,
                    (ParamKind::Matrix, _) => rows * packed_bytes_per_row(p, cols).expect("packed"),
                };
                if s.kind == ParamKind::Matrix {
                    // Each group tensor: f16 per group, and its own header entry.
                    total += p.group_tensors().len() * (rows * groups_per_row(cols) * 2 + s.name.len() + 70);
                }
            }
            bytes.insert(p.as_str(), total);
        }
        ModelSize {
            params: specs.iter().map(ParamSpec::numel).sum(),
            active_params: A::active_params(c),
            bytes,
        }
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;
    use crate::precision::Precision;
    use crate::weights::Weights;

    #[test]
    fn the_implied_counts_are_the_tables() {
        for preset in ["test", "micro", "tiny", "15m"] {
            let base = Config::preset(preset).unwrap();
            for (moe_every, n_layers, expand) in [
                (base.moe_every, base.n_layers, base.expand),
                (0, 3, 1),
                (1, 5, 3),
                (3, 7, 2),
            ] {
                let c = Config {
                    moe_every,
                    n_layers,
                    expand,
                    ..base.clone()
                };
                let table = ParamTable::new(&c);
                let implied = Implied::of(&c);
                assert_eq!(implied.tensors, table.len() as u128, "{preset} {moe_every} {n_layers}");
                assert_eq!(
                    implied.params,
                    table.total_params() as u128,
                    "{preset} {moe_every} {n_layers}"
                );
            }
        }
    }

    #[test]
    fn the_estimated_file_sizes_are_within_a_kilobyte_of_the_real_ones() {
        for preset in ["test", "micro"] {
            let c = Config::preset(preset).unwrap();
            let size = ModelSize::of::<crate::Itera>(&c);
            let w = Weights::init_random(&c, 1).unwrap();
            assert_eq!(size.params, w.table.total_params());
            for p in Precision::ALL {
                let real = crate::format::save(&w.to_precision(p)).unwrap().len();
                let est = size.bytes[p.as_str()];
                assert!(est.abs_diff(real) < 1024, "{preset} {p}: estimated {est}, real {real}");
            }
        }
    }
}
