//! A Transformer decoding on the GPU against its CPU twin (`transformer::model::decode_step`):
//! logits along a prompt for every precision, greedy tokens one and sixteen per submission,
//! seeded sampling into text through the same generation rules (`GpuGeneration`), a context
//! that fills ending the generation where the CPU's ends, and the odd `test` shape (two query
//! heads per kv head, an untied classifier). Without an adapter the tests print SKIPPED;
//! `cargo xtask test` runs them on lavapipe.
#![cfg(feature = "gpu")]

mod gpu_common;

use gpu_common::{assert_close, gpu, gpu_greedy};
use itera_core::generate::{GenerateOptions, Generation};
use itera_core::gpu::generate::GpuGeneration;
use itera_core::gpu::model::GpuModel;
use itera_core::sampling::{argmax, SamplingSettings};
use itera_core::tokenizer::Tokenizer;
use itera_core::transformer::{self, TransformerConfig, TransformerState};
use itera_core::{format, Architecture, Transformer, Weights};
use pollster::block_on;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shipped(name: &str) -> Weights<Transformer> {
    let bytes = std::fs::read(root().join("weights").join(format!("{name}.safetensors"))).unwrap();
    format::load_as(&bytes).unwrap()
}

fn prompt(vocab: usize, len: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

fn cpu_greedy(w: &Weights<Transformer>, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut st = TransformerState::new(w);
    let mut logits = Vec::new();
    for &t in prompt {
        logits = transformer::model::decode_step(w, &mut st, t).unwrap().to_vec();
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let next = argmax(&logits);
        out.push(next);
        logits = transformer::model::decode_step(w, &mut st, next).unwrap().to_vec();
    }
    out
}

#[test]
fn logits_along_a_prompt_match_the_cpu_for_every_precision() {
    let Some(g) = gpu() else { return };
    for name in [
        "transformer-micro-f32",
        "transformer-micro-f16",
        "transformer-micro-q8",
        "transformer-micro-q4",
        "transformer-tiny-q8",
    ] {
        let w = shipped(name);
        let mut m = GpuModel::transformer(&g, &w).unwrap();
        assert!(!m.routes());
        let mut st = TransformerState::new(&w);
        for (i, &t) in prompt(w.config.vocab_size, 70).iter().enumerate() {
            let want = transformer::model::decode_step(&w, &mut st, t).unwrap().to_vec();
            block_on(m.run(&g, &[t], 1, true, false)).unwrap();
            // Every position's logits up to 20, then a sample (each position costs a read-back).
            if i < 20 || i % 16 == 0 {
                let got = block_on(m.logits(&g)).unwrap();
                assert_close(&got, &want, 2e-4, 2e-4, &format!("{name} logits at position {i}"));
            }
        }
    }
}

#[test]
fn greedy_decoding_gives_the_cpu_tokens_one_or_sixteen_per_submission() {
    let Some(g) = gpu() else { return };
    for name in ["transformer-micro-q8", "transformer-tiny-f16"] {
        let w = shipped(name);
        let mut m = GpuModel::transformer(&g, &w).unwrap();
        let p = prompt(w.config.vocab_size, 5);
        let want = cpu_greedy(&w, &p, 96);
        assert_eq!(
            gpu_greedy(&g, &mut m, &p, 96, 1),
            want,
            "{name}: one token per submission"
        );
        assert_eq!(gpu_greedy(&g, &mut m, &p, 96, 16), want, "{name}: 16 per submission");
    }
}

/// The `test` shape: head size 6, two query heads per kv head, an untied classifier.
#[test]
fn an_odd_shape_with_its_own_classifier_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let c = TransformerConfig {
        shared_classifier: false,
        ..TransformerConfig::preset("test").unwrap()
    };
    let w = Transformer::init_random(&c, 3).unwrap();
    assert!(w.table.output.is_some());
    let mut m = GpuModel::transformer(&g, &w).unwrap();
    let p = prompt(c.vocab_size, 9);
    assert_eq!(gpu_greedy(&g, &mut m, &p, 40, 7), cpu_greedy(&w, &p, 40));
}

/// Seeded sampling into text through `GpuGeneration`, against the CPU `Generation`: the same
/// story; and with a context of 24 positions both stop at the same token.
#[test]
fn generation_writes_the_cpu_story_and_stops_where_the_context_ends() {
    let Some(g) = gpu() else { return };
    let tok = Tokenizer::from_json(&std::fs::read(root().join("weights/tokenizer.json")).unwrap()).unwrap();
    let opts = |max_tokens| GenerateOptions {
        max_tokens,
        sampling: SamplingSettings {
            temperature: 0.8,
            top_k: 0,
            top_p: 0.9,
            seed: 5,
        },
        stop_at_end_of_text: false,
    };
    let short = TransformerConfig {
        max_seq_len: 24,
        ..shipped("transformer-micro-q8").config
    };
    let mut small = shipped("transformer-micro-q8");
    small.config = short;
    for (w, max_tokens) in [(shipped("transformer-micro-q8"), 60), (small, 100)] {
        let prompt = "Once upon a time";
        let mut cpu = Generation::start(&w, &tok, prompt, opts(max_tokens)).unwrap();
        let mut want = Vec::new();
        while let Some(t) = cpu.next(&w, &tok).unwrap() {
            want.push(t.id);
        }
        let mut m = GpuModel::transformer(&g, &w).unwrap();
        let mut run = block_on(GpuGeneration::start(&g, &mut m, &tok, prompt, opts(max_tokens), true)).unwrap();
        let mut got = Vec::new();
        while !run.is_done() {
            let tokens = block_on(run.next_tokens(&g, &mut m, &tok, 16)).unwrap();
            if tokens.is_empty() {
                break;
            }
            got.extend(tokens.iter().map(|t| t.id));
        }
        assert_eq!(got, want, "context {}", w.config.max_seq_len);
        assert_eq!(run.take_routing().len(), got.len(), "an empty routing per token");
        if w.config.max_seq_len == 24 {
            assert!(want.len() < max_tokens, "the context ended it: {} tokens", want.len());
        }
    }
}
