//! How much each group of matrices suffers from a lower precision: the model is quantized one
//! group at a time (every other tensor stays f32) and scored on calibration text against the
//! f32 model — the change in bits per byte and the mean KL divergence of the f32 next-token
//! distribution to the quantized one.
//!
//! The method is the divergence-based sensitivity of ZeroQ (Cai et al., "ZeroQ: A Novel Zero Shot
//! Quantization Framework", CVPR 2020: quantize one layer, measure the KL divergence between the
//! full-precision and the quantized model's outputs), measured on real text; HAWQ (Dong et al.,
//! ICCV 2019) ranks layers by the Hessian's top eigenvalue instead, which needs second-order
//! information this project's training does not compute.
//!
//! Memory: the f32 model's log-probabilities of every calibration position are kept (positions
//! × vocabulary × 4 bytes: 64 MiB at 4,096 positions of a 4,096-token vocabulary).

use serde::Serialize;

use crate::error::{Error, Result};
use crate::layers::ssm::BatchDims;
use crate::lm::{AnyCache, AnyWeights};
use crate::params::ParamKind;
use crate::precision::{Precision, PrecisionMap};
use crate::tokenizer::Tokenizer;

/// Matrices quantized together: one projection, or one expert's (or a dense FFN's) matrices.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Group {
    pub name: String,
    pub tensors: Vec<String>,
    pub params: usize,
}

/// The groups of a model's matrices, in table order: an expert's or a dense FFN's matrices
/// (`…experts.E.w1/w2/w3`, `…ffn.w1/w2/w3`) together, every other matrix alone.
pub fn groups(w: &AnyWeights) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for spec in w.specs().iter().filter(|s| s.kind == ParamKind::Matrix) {
        let together = spec.name.contains(".experts.") || spec.name.contains(".ffn.");
        let name = match spec.name.rsplit_once('.') {
            Some((head, _)) if together => head.to_string(),
            _ => spec.name.clone(),
        };
        let params = spec.shape.iter().product::<usize>();
        match out.last_mut() {
            Some(g) if g.name == name => {
                g.tensors.push(spec.name.clone());
                g.params += params;
            }
            _ => out.push(Group {
                name,
                tensors: vec![spec.name.clone()],
                params,
            }),
        }
    }
    out
}

/// The calibration positions: windows of `window` tokens from the start of the texts (each
/// text's tokens, one after the other), at most `max_tokens` in all.
pub struct Probe {
    tokens: Vec<u32>,
    window: usize,
    /// Bytes of the tokens predicted (every window's tokens but its first).
    bytes: usize,
}

impl Probe {
    pub fn new(tokenizer: &Tokenizer, texts: &[String], max_tokens: usize, window: usize) -> Result<Probe> {
        let mut tokens = Vec::new();
        for t in texts {
            if tokens.len() >= max_tokens {
                break;
            }
            tokens.extend(crate::train::encode_corpus(tokenizer, t)?);
        }
        let windows = tokens.len().min(max_tokens) / window;
        if windows == 0 {
            return Err(Error::EmptyInput("calibration text (fewer tokens than one window)"));
        }
        tokens.truncate(windows * window);
        let mut bytes = 0;
        for w in tokens.chunks(window) {
            for &t in &w[1..] {
                bytes += tokenizer.token_bytes(t)?.len();
            }
        }
        Ok(Probe { tokens, window, bytes })
    }

    /// The calibration tokens, window after window.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Positions scored (predicted tokens).
    pub fn positions(&self) -> usize {
        self.tokens.len() / self.window * (self.window - 1)
    }
}

/// One model's figures on the probe.
struct Scores {
    bits_per_byte: f64,
    /// Every scored position's log-probabilities (positions × vocabulary), kept for the f32 model.
    log_probs: Vec<f32>,
    /// Mean KL(reference ‖ this) over the positions (0 without a reference).
    kl: f64,
}

fn log_softmax(row: &[f32], out: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let log_z = max as f64 + sum.ln();
    for (o, &x) in out.iter_mut().zip(row) {
        *o = (x as f64 - log_z) as f32;
    }
}

fn score(w: &AnyWeights, probe: &Probe, reference: Option<&[f32]>, keep: bool) -> Result<Scores> {
    let vocab = w.vocab_size();
    let t = probe.window;
    let mut cache = AnyCache::default();
    let mut row = vec![0.0f32; vocab];
    let mut log_probs = Vec::new();
    let (mut ce, mut kl, mut at) = (0.0f64, 0.0f64, 0usize);
    for win in probe.tokens.chunks(t) {
        let logits = w.logits(win, BatchDims { batch: 1, t }, &mut cache)?;
        for p in 0..t - 1 {
            log_softmax(&logits[p * vocab..(p + 1) * vocab], &mut row);
            ce -= row[win[p + 1] as usize] as f64;
            if let Some(r) = reference {
                let r = &r[at * vocab..(at + 1) * vocab];
                kl += r
                    .iter()
                    .zip(&row)
                    .map(|(&a, &b)| (a as f64).exp() * (a as f64 - b as f64))
                    .sum::<f64>();
            }
            if keep {
                log_probs.extend_from_slice(&row);
            }
            at += 1;
        }
    }
    Ok(Scores {
        bits_per_byte: ce / std::f64::consts::LN_2 / probe.bytes as f64,
        log_probs,
        // A divergence is never below 0: a value below is the rounding of identical rows.
        kl: (kl / at as f64).max(0.0),
    })
}

/// Bits per byte of `w` on the probe's positions.
pub fn bits_per_byte(w: &AnyWeights, probe: &Probe) -> Result<f64> {
    Ok(score(w, probe, None, false)?.bits_per_byte)
}

/// The names of `w`'s matrices, in table order.
fn matrix_names(w: &AnyWeights) -> Vec<&str> {
    w.specs()
        .iter()
        .filter(|s| s.kind == ParamKind::Matrix)
        .map(|s| s.name.as_str())
        .collect()
}

/// The weights of a choice as a file holds them: the most common matrix precision as the
/// file's (vectors in f16 unless that is f32), the other matrices in the map.
pub fn apply(w: &AnyWeights, map: &PrecisionMap) -> Result<AnyWeights> {
    let matrices = matrix_names(w);
    let of = |name: &str| map.get(name).copied().unwrap_or(Precision::F32);
    let base = Precision::ALL
        .into_iter()
        .max_by_key(|&p| matrices.iter().filter(|n| of(n) == p).count())
        .expect("precisions");
    let relative: PrecisionMap = matrices
        .iter()
        .filter(|n| of(n) != base)
        .map(|n| (n.to_string(), of(n)))
        .collect();
    w.to_precision(Precision::F32).to_precision_map(base, &relative)
}

/// One group in one precision against the f32 model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub group: String,
    pub precision: Precision,
    pub params: usize,
    /// Bytes the group's matrices save against f32.
    pub bytes_saved: usize,
    pub bits_per_byte: f64,
    pub delta_bits_per_byte: f64,
    /// Mean KL(f32 ‖ this) per position, in nats.
    pub kl: f64,
}

/// The sensitivity table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Table {
    pub positions: usize,
    pub f32_bits_per_byte: f64,
    pub groups: Vec<Group>,
    pub rows: Vec<Row>,
}

/// Quantizes each group of `w` (made f32 first) to each of `precisions` alone and scores it on
/// `probe` against the f32 model; `progress(done, total)` after each.
pub fn sensitivity(
    w: &AnyWeights,
    probe: &Probe,
    precisions: &[Precision],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Table> {
    let f32 = w.to_precision(Precision::F32);
    let reference = score(&f32, probe, None, true)?;
    let groups = groups(&f32);
    let total = groups.len() * precisions.len();
    let mut rows = Vec::with_capacity(total);
    for g in &groups {
        for &p in precisions {
            let map: PrecisionMap = g.tensors.iter().map(|t| (t.clone(), p)).collect();
            let q = f32.to_precision_map(Precision::F32, &map)?;
            let s = score(&q, probe, Some(&reference.log_probs), false)?;
            rows.push(Row {
                group: g.name.clone(),
                precision: p,
                params: g.params,
                bytes_saved: f32.size_bytes() - q.size_bytes(),
                bits_per_byte: s.bits_per_byte,
                delta_bits_per_byte: s.bits_per_byte - reference.bits_per_byte,
                kl: s.kl,
            });
            progress(rows.len(), total);
        }
    }
    Ok(Table {
        positions: probe.positions(),
        f32_bits_per_byte: reference.bits_per_byte,
        groups,
        rows,
    })
}

/// What a precision search aims at: the most held-out bits per byte the quantization may add,
/// or (when given) the most bytes the matrices may take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    DeltaBitsPerByte(f64),
    Bytes(usize),
}

/// A chosen precision per matrix, with what the table predicts and what a real evaluation
/// measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Choice {
    /// Every matrix not in f32, by name.
    pub map: PrecisionMap,
    pub bytes: usize,
    pub predicted_delta_bits_per_byte: f64,
    pub measured_delta_bits_per_byte: f64,
}

/// The moves of a search: a group going to a lower precision, in the order they were taken.
fn moves(t: &Table, bound: Bound, f32_bytes: usize) -> Vec<(usize, Precision)> {
    // Per group, its precision so far (None: f32) with the bytes it saves and what it costs.
    let mut at: Vec<Option<&Row>> = vec![None; t.groups.len()];
    let mut taken = Vec::new();
    let (mut saved, mut delta) = (0usize, 0.0f64);
    loop {
        let within = |delta: f64| match bound {
            Bound::DeltaBitsPerByte(max) => delta <= max,
            Bound::Bytes(_) => true,
        };
        if let Bound::Bytes(max) = bound {
            if f32_bytes - saved <= max {
                break;
            }
        }
        // The move with the most bytes saved per bit per byte lost (a free one first).
        let mut best: Option<(f64, usize, &Row)> = None;
        for (g, group) in t.groups.iter().enumerate() {
            let (s0, d0) = at[g].map_or((0, 0.0), |r| (r.bytes_saved, r.delta_bits_per_byte.max(0.0)));
            for r in t.rows.iter().filter(|r| r.group == group.name && r.bytes_saved > s0) {
                let cost = r.delta_bits_per_byte.max(0.0) - d0;
                if !within(delta + cost) {
                    continue;
                }
                let worth = (r.bytes_saved - s0) as f64 / cost.max(1e-12);
                if best.is_none_or(|(w, _, _)| worth > w) {
                    best = Some((worth, g, r));
                }
            }
        }
        let Some((_, g, r)) = best else { break };
        let (s0, d0) = at[g].map_or((0, 0.0), |r| (r.bytes_saved, r.delta_bits_per_byte.max(0.0)));
        saved += r.bytes_saved - s0;
        delta += r.delta_bits_per_byte.max(0.0) - d0;
        at[g] = Some(r);
        taken.push((g, r.precision));
    }
    taken
}

/// The map of the first `n` moves: each group in the last precision it moved to.
fn map_of(t: &Table, moves: &[(usize, Precision)]) -> PrecisionMap {
    let mut map = PrecisionMap::new();
    for &(g, p) in moves {
        for name in &t.groups[g].tensors {
            map.insert(name.clone(), p);
        }
    }
    map
}

/// The smallest precision map the table predicts within `bound` (greedy: the move with the
/// most bytes saved per bit per byte lost first, each group's ΔBPB as measured alone), then
/// checked by scoring the mixed model on `probe`: errors add up across groups, so while the
/// measured ΔBPB is over a BPB bound the last moves are undone. Each candidate is scored and
/// sized as its file holds it (`apply`: vectors in f16 unless f32). Every uniform precision is
/// scored too, and wins where it is smaller within a BPB bound (or closer to f32 within a byte
/// bound): the per-group figures are noisy on a short text, and a search must never end worse
/// than one precision for the whole file.
pub fn choose(w: &AnyWeights, probe: &Probe, t: &Table, bound: Bound) -> Result<Choice> {
    let f32 = w.to_precision(Precision::F32);
    let mut best = greedy_choice(&f32, probe, t, bound)?;
    let matrices = matrix_names(&f32);
    for p in Precision::ALL
        .into_iter()
        .filter(|&p| t.rows.iter().any(|r| r.precision == p))
    {
        let map: PrecisionMap = matrices.iter().map(|n| (n.to_string(), p)).collect();
        let q = apply(&f32, &map)?;
        let measured = score(&q, probe, None, false)?.bits_per_byte - t.f32_bits_per_byte;
        let bytes = q.size_bytes();
        let better = match bound {
            Bound::DeltaBitsPerByte(max) => measured <= max && bytes < best.bytes,
            Bound::Bytes(max) => bytes <= max && measured < best.measured_delta_bits_per_byte,
        };
        if better {
            let predicted = t
                .rows
                .iter()
                .filter(|r| r.precision == p)
                .map(|r| r.delta_bits_per_byte.max(0.0))
                .sum();
            best = Choice {
                bytes,
                map,
                predicted_delta_bits_per_byte: predicted,
                measured_delta_bits_per_byte: measured,
            };
        }
    }
    Ok(best)
}

/// `choose`'s greedy search alone.
fn greedy_choice(f32: &AnyWeights, probe: &Probe, t: &Table, bound: Bound) -> Result<Choice> {
    let mut taken = moves(t, bound, f32.size_bytes());
    loop {
        let map = map_of(t, &taken);
        let q = apply(f32, &map)?;
        let measured = score(&q, probe, None, false)?.bits_per_byte - t.f32_bits_per_byte;
        let predicted = {
            let mut last: Vec<f64> = vec![0.0; t.groups.len()];
            for &(g, p) in &taken {
                let r = t.rows.iter().find(|r| r.group == t.groups[g].name && r.precision == p);
                last[g] = r.map_or(0.0, |r| r.delta_bits_per_byte.max(0.0));
            }
            last.iter().sum()
        };
        let over = matches!(bound, Bound::DeltaBitsPerByte(max) if measured > max);
        if !over || taken.is_empty() {
            return Ok(Choice {
                bytes: q.size_bytes(),
                map,
                predicted_delta_bits_per_byte: predicted,
                measured_delta_bits_per_byte: measured,
            });
        }
        taken.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::weights::Weights;

    fn model() -> AnyWeights {
        let mut c = Config::preset("test").unwrap();
        c.vocab_size = 4096;
        Weights::init_random(&c, 3).unwrap().into()
    }

    #[test]
    fn experts_and_dense_ffns_are_grouped_and_every_matrix_is_in_one_group() {
        let w = model();
        let g = groups(&w);
        let names: Vec<&str> = g.iter().map(|g| g.name.as_str()).collect();
        assert!(
            names.contains(&"embed") && names.contains(&"layers.0.in_proj"),
            "{names:?}"
        );
        let expert = g.iter().find(|g| g.name.contains(".experts.")).unwrap();
        assert_eq!(expert.tensors.len(), 3, "{expert:?}");
        let matrices = w.specs().iter().filter(|s| s.kind == ParamKind::Matrix).count();
        assert_eq!(g.iter().map(|g| g.tensors.len()).sum::<usize>(), matrices);
    }

    /// f32 against itself is 0 KL; a lower precision saves bytes, and over the groups q8 costs a
    /// KL above 0 and q4 more.
    #[test]
    fn quantizing_a_group_is_measured_against_the_f32_model() {
        let tok = Tokenizer::from_json(include_bytes!("../../../weights/tokenizer.json")).unwrap();
        let text = include_str!("../../../web/eval-stories.txt").to_string();
        let probe = Probe::new(&tok, &[text], 256, 32).unwrap();
        let w = model();
        let mut calls = 0;
        let t = sensitivity(
            &w,
            &probe,
            &[Precision::F32, Precision::Q8, Precision::Q4],
            &mut |_, _| calls += 1,
        )
        .unwrap();
        assert_eq!(calls, t.groups.len() * 3);
        assert_eq!(t.positions, 8 * 31);
        for g in &t.groups {
            let row = |p| t.rows.iter().find(|r| r.group == g.name && r.precision == p).unwrap();
            assert_eq!((row(Precision::F32).kl, row(Precision::F32).bytes_saved), (0.0, 0));
            assert!(
                row(Precision::Q8).kl >= 0.0 && row(Precision::Q8).bytes_saved > 0,
                "{g:?} {:?}",
                row(Precision::Q8)
            );
            assert!(row(Precision::Q4).bytes_saved > row(Precision::Q8).bytes_saved, "{g:?}");
        }
        let total = |p| t.rows.iter().filter(|r| r.precision == p).map(|r| r.kl).sum::<f64>();
        assert!(total(Precision::Q8) > 0.0);
        assert!(
            total(Precision::Q4) > total(Precision::Q8),
            "q4 departs further than q8 over the groups"
        );
    }

    /// The search keeps the measured ΔBPB within its bound and goes smaller as the bound
    /// loosens; a byte bound is met.
    #[test]
    fn the_search_keeps_within_its_bound() {
        let tok = Tokenizer::from_json(include_bytes!("../../../weights/tokenizer.json")).unwrap();
        let text = include_str!("../../../web/eval-stories.txt").to_string();
        let probe = Probe::new(&tok, &[text], 512, 64).unwrap();
        // Trained weights: a random model's near-uniform predictions hardly move when quantized.
        let w: AnyWeights = crate::format::load(include_bytes!("../../../weights/itera-micro-f32.safetensors"))
            .unwrap()
            .into();
        let t = sensitivity(
            &w,
            &probe,
            &[Precision::F16, Precision::Q8, Precision::Q4],
            &mut |_, _| {},
        )
        .unwrap();
        let f32_bytes = w.to_precision(Precision::F32).size_bytes();
        let mut last = usize::MAX;
        for pct in [0.1, 1.0, 5.0] {
            let max = t.f32_bits_per_byte * pct / 100.0;
            let c = choose(&w, &probe, &t, Bound::DeltaBitsPerByte(max)).unwrap();
            assert!(c.measured_delta_bits_per_byte <= max, "{pct} %: {c:?}");
            assert!(c.bytes <= last && c.bytes < f32_bytes, "{pct} %: {} bytes", c.bytes);
            last = c.bytes;
        }
        let c = choose(&w, &probe, &t, Bound::Bytes(f32_bytes / 3)).unwrap();
        assert!(c.bytes <= f32_bytes / 3, "{} > {}", c.bytes, f32_bytes / 3);
    }
}
