//! Expert pruning: every MoE layer keeps its `keep` experts of highest score on calibration
//! text and loses the rest; the result is an ordinary model with `n_experts = keep` (its router
//! keeps the kept experts' rows, in their order) and `top_k ≤ keep`.
//!
//! The score of an expert is the sum, over the calibration tokens, of the gate weight the router
//! gives it where it is among the top-k (routing frequency × mean gate): the router-weighted
//! frequency of the expert-pruning literature (e.g. Lu et al., "Not All Experts are Equal",
//! ACL 2024, which scores experts by their routing weights on calibration data). The output-norm
//! factor some methods multiply in is left out here.
//!
//! Because `layers::moe::route` renormalises the top-k of a softmax over every expert, the kept
//! experts' weights do not depend on an expert that is never chosen (up to the softmax sum's
//! rounding): removing one changes nothing else.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::family::{Architecture, Specs};
use crate::itera::Itera;
use crate::model::{decode_step, State};
use crate::precision::Precision;
use crate::weights::Weights;

/// Per MoE layer (in layer order), each expert's score on `tokens` (decoded as one sequence).
pub fn expert_scores(w: &Weights, tokens: &[u32]) -> Result<Vec<(usize, Vec<f64>)>> {
    let c = &w.config;
    let layers: Vec<usize> = (0..c.n_layers).filter(|&l| c.is_moe(l)).collect();
    let mut scores: Vec<Vec<f64>> = layers.iter().map(|_| vec![0.0; c.n_experts]).collect();
    let mut st = State::new(w);
    for &t in tokens {
        decode_step(w, &mut st, t)?;
        for (s, &l) in scores.iter_mut().zip(&layers) {
            let route = &st.routing[l];
            for (&e, &g) in route.experts.iter().zip(&route.weights) {
                s[e] += g as f64;
            }
        }
    }
    Ok(layers.into_iter().zip(scores).collect())
}

/// The experts each MoE layer keeps: its `keep` highest scores (ties to the lower index), in
/// index order.
pub fn kept_experts(scores: &[(usize, Vec<f64>)], keep: usize) -> Vec<(usize, Vec<usize>)> {
    scores
        .iter()
        .map(|(l, s)| {
            let mut order: Vec<usize> = (0..s.len()).collect();
            order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
            let mut kept = order[..keep.min(s.len())].to_vec();
            kept.sort_unstable();
            (*l, kept)
        })
        .collect()
}

/// `w` with each MoE layer reduced to the experts `kept` names (the same count in every layer),
/// in `w`'s precision (pruned in f32, then converted back).
pub fn prune(w: &Weights, kept: &[(usize, Vec<usize>)]) -> Result<Weights> {
    let keep = kept.first().map_or(0, |(_, k)| k.len());
    let c = &w.config;
    if keep == 0 || kept.iter().any(|(_, k)| k.len() != keep) || keep > c.n_experts {
        return Err(Error::setting(
            "keep",
            keep,
            format!("the same number of experts in every MoE layer, 1 to {}", c.n_experts),
        ));
    }
    let f32 = w.to_precision(Precision::F32);
    let config = Config {
        n_experts: keep,
        top_k: c.top_k.min(keep),
        ..c.clone()
    };
    let table = Itera::table(&config);
    let source = |name: &str| -> Result<Vec<f32>> {
        let slot = f32
            .table
            .index_of(name)
            .ok_or_else(|| Error::Metadata(format!("pruning: no tensor `{name}`")))?;
        Ok(f32.tensors[slot].dequantize())
    };
    let mut values = Vec::with_capacity(table.specs().len());
    for spec in table.specs() {
        let name = spec.name.as_str();
        let layer = name
            .strip_prefix("layers.")
            .and_then(|r| r.split('.').next())
            .and_then(|l| l.parse::<usize>().ok());
        let experts = layer.and_then(|l| kept.iter().find(|(k, _)| *k == l)).map(|(_, e)| e);
        let v = match (experts, name.split('.').nth(2)) {
            (Some(e), Some("router")) => {
                let d = spec.shape[1];
                let all = source(name)?;
                e.iter().flat_map(|&x| all[x * d..(x + 1) * d].to_vec()).collect()
            }
            (Some(e), Some("experts")) => {
                let parts: Vec<&str> = name.split('.').collect();
                let new: usize = parts[3]
                    .parse()
                    .map_err(|_| Error::Metadata(format!("pruning: `{name}`")))?;
                source(&format!("layers.{}.experts.{}.{}", parts[1], e[new], parts[4]))?
            }
            _ => source(name)?,
        };
        values.push(v);
    }
    let pruned = Weights::from_f32_tensors(config, values);
    Ok(pruned.to_precision(w.precision))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::Tensor;

    /// An expert the router never chooses is pruned away with the logits unchanged bit for bit
    /// (constructed so: with top-1 routing, its router row a copy of expert 0's — a tie, which
    /// the lower index wins — and the top-1 gate p/p = 1 whatever the softmax's sum); the pruned
    /// model is an ordinary file of fewer experts.
    #[test]
    fn removing_an_expert_never_chosen_leaves_the_logits_bit_identical() {
        let mut c = Config::preset("test").unwrap();
        c.vocab_size = 4096;
        c.top_k = 1;
        let mut w = Weights::init_random(&c, 11).unwrap();
        let moe = (0..c.n_layers).find(|&l| c.is_moe(l)).unwrap();
        let never = 1; // between kept experts, so the renumbering is exercised
        let slot = w.table.index_of(&format!("layers.{moe}.router")).unwrap();
        let d = c.d_model;
        if let Tensor::Matrix(m) = &mut w.tensors[slot] {
            let v = m.as_f32_mut().unwrap();
            let first = v[..d].to_vec();
            v[never * d..(never + 1) * d].copy_from_slice(&first);
        }
        let tokens: Vec<u32> = (0..48).map(|i| (i * 97 % 4096) as u32).collect();
        let scores = expert_scores(&w, &tokens).unwrap();
        let s = &scores.iter().find(|(l, _)| *l == moe).unwrap().1;
        assert_eq!(s[never], 0.0, "expert {never} is never chosen: {s:?}");
        assert!(s.iter().filter(|&&x| x > 0.0).count() >= 2, "the others are: {s:?}");
        let kept = kept_experts(&scores, c.n_experts - 1);
        let pruned = prune(&w, &kept).unwrap();
        assert_eq!(
            (pruned.config.n_experts, pruned.config.top_k),
            (c.n_experts - 1, c.top_k.min(c.n_experts - 1))
        );
        let back = crate::format::load(&crate::format::save(&pruned).unwrap()).unwrap();
        let (mut a, mut b) = (State::new(&w), State::new(&back));
        for &t in &tokens {
            let la = decode_step(&w, &mut a, t).unwrap().to_vec();
            let lb = decode_step(&back, &mut b, t).unwrap().to_vec();
            assert!(la.iter().zip(&lb).all(|(x, y)| x.to_bits() == y.to_bits()), "token {t}");
        }
    }
}
