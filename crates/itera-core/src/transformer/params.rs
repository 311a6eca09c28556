//! The Transformer's ONE parameter table, under llama2.c `model.py`'s state-dict names, so a
//! PyTorch user loads a file with `load_state_dict` (`strict=False` when the classifier is
//! tied: model.py's state dict lists the shared tensor twice, as `tok_embeddings.weight` and
//! `output.weight`; a tied file holds it once).

use super::config::TransformerConfig;
use crate::family::Specs;
use crate::params::{ParamKind, ParamSpec, SwigluParams};

/// Table slots of one block (shapes (out, in); D = dim, KV = kv_dim, H = hidden_dim).
#[derive(Clone, Debug)]
pub struct BlockParams {
    pub attention_norm: usize, // (D)
    pub wq: usize,             // (D, D)
    pub wk: usize,             // (KV, D)
    pub wv: usize,             // (KV, D)
    pub wo: usize,             // (D, D)
    pub ffn_norm: usize,       // (D)
    pub ffn: SwigluParams,     // w1, w3 (H, D); w2 (D, H)
}

#[derive(Clone, Debug)]
pub struct TransformerTable {
    pub specs: Vec<ParamSpec>,
    pub embed: usize, // (V, D) tok_embeddings
    pub layers: Vec<BlockParams>,
    pub norm: usize, // (D) the final norm
    /// (V, D) the classifier when it is not the embedding.
    pub output: Option<usize>,
}

impl Specs for TransformerTable {
    fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }
}

impl TransformerTable {
    pub fn new(c: &TransformerConfig) -> TransformerTable {
        let (d, kv, h) = (c.dim, c.kv_dim(), c.hidden_dim);
        let mut specs = Vec::new();
        let mut add = |name: String, shape: Vec<usize>, kind: ParamKind| {
            specs.push(ParamSpec { name, shape, kind });
            specs.len() - 1
        };
        use ParamKind::{Matrix, Vector};
        let embed = add("tok_embeddings.weight".into(), vec![c.vocab_size, d], Matrix);
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let p = |s: &str| format!("layers.{l}.{s}.weight");
            layers.push(BlockParams {
                attention_norm: add(p("attention_norm"), vec![d], Vector),
                wq: add(p("attention.wq"), vec![d, d], Matrix),
                wk: add(p("attention.wk"), vec![kv, d], Matrix),
                wv: add(p("attention.wv"), vec![kv, d], Matrix),
                wo: add(p("attention.wo"), vec![d, d], Matrix),
                ffn_norm: add(p("ffn_norm"), vec![d], Vector),
                ffn: SwigluParams {
                    w1: add(p("feed_forward.w1"), vec![h, d], Matrix),
                    w2: add(p("feed_forward.w2"), vec![d, h], Matrix),
                    w3: add(p("feed_forward.w3"), vec![h, d], Matrix),
                },
            });
        }
        let norm = add("norm.weight".into(), vec![d], Vector);
        let output = (!c.shared_classifier).then(|| add("output.weight".into(), vec![c.vocab_size, d], Matrix));
        TransformerTable {
            specs,
            embed,
            layers,
            norm,
            output,
        }
    }

    /// The classifier's slot: `output.weight`, or the embedding when tied.
    pub fn classifier(&self) -> usize {
        self.output.unwrap_or(self.embed)
    }
}

/// The tensors and parameters a config implies, counted in u128 before any table exists (a
/// unit test holds them equal to the table's).
pub struct Implied {
    pub tensors: u128,
    pub params: u128,
}

impl Implied {
    pub fn of(c: &TransformerConfig) -> Implied {
        let [v, d, l, h] = [c.vocab_size, c.dim, c.n_layers, c.hidden_dim].map(|x| x as u128);
        let kv = d / c.n_heads.max(1) as u128 * c.n_kv_heads as u128;
        let classifier = if c.shared_classifier { 0 } else { v * d };
        Implied {
            tensors: 2 + l * 9 + !c.shared_classifier as u128,
            params: v * d + d + l * (2 * d + 2 * d * d + 2 * kv * d + 3 * h * d) + classifier,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_implied_counts_are_the_tables_and_the_presets_match_the_itera_sizes() {
        for name in ["test", "micro", "tiny", "15m"] {
            for shared in [true, false] {
                let c = TransformerConfig {
                    shared_classifier: shared,
                    ..TransformerConfig::preset(name).unwrap()
                };
                let t = TransformerTable::new(&c);
                let implied = Implied::of(&c);
                assert_eq!(implied.tensors, t.specs.len() as u128, "{name}");
                let params: usize = t.specs.iter().map(ParamSpec::numel).sum();
                assert_eq!(implied.params, params as u128, "{name}");
            }
        }
        for name in ["micro", "tiny"] {
            let itera = crate::params::ParamTable::new(&crate::Config::preset(name).unwrap()).total_params();
            let c = TransformerConfig::preset(name).unwrap();
            let params = Implied::of(&c).params as f64;
            let ratio = params / itera as f64;
            assert!((0.95..=1.05).contains(&ratio), "{name}: {params} vs itera {itera}");
        }
    }
}
