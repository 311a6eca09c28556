//! The whole model on the GPU against the CPU, for every shipped precision: logits along a
//! prompt, 128 greedy tokens, the routing trace, seeded sampling against the CPU sampler
//! (the same stories; how often rounding flips a token), multi-token submissions, batched prefill = step-by-step prefill, and the structural
//! promise of the decode path (one
//! submission and one read-back of 8 bytes per token, nothing created after warm-up).
#![cfg(feature = "gpu")]

mod gpu_common;

use gpu_common::{assert_close, gpu, gpu_greedy};
use itera_core::gpu::model::{GpuModel, MAX_STEPS};
use itera_core::model::{decode_step, State};
use itera_core::sampling::{argmax, Sampler, SamplingSettings};
use itera_core::{format, Weights};
use pollster::block_on;

fn shipped(name: &str) -> Weights {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../weights")
        .join(name);
    format::load_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const MODELS: [&str; 5] = [
    "itera-tiny-f32.safetensors",
    "itera-tiny-f16.safetensors",
    "itera-tiny-q8.safetensors",
    "itera-tiny-q4.safetensors",
    "itera-micro-q8.safetensors",
];

/// A prompt of ids spread over the vocabulary (no tokenizer needed).
fn prompt(w: &Weights, len: usize) -> Vec<u32> {
    (0..len)
        .map(|i| ((i * 7919 + 13) % w.config.vocab_size) as u32)
        .collect()
}

fn cpu_greedy(w: &Weights, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut st = State::new(w);
    let mut logits = Vec::new();
    for &t in prompt {
        logits = decode_step(w, &mut st, t).unwrap().to_vec();
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let next = argmax(&logits);
        out.push(next);
        logits = decode_step(w, &mut st, next).unwrap().to_vec();
    }
    out
}

#[test]
fn logits_along_a_prompt_match_the_cpu_for_every_precision() {
    let Some(g) = gpu() else { return };
    for name in MODELS {
        assert_logits_match(&g, &shipped(name), 12, name);
    }
}

/// The GPU's logits at each position of a prompt of `n` tokens against the CPU's.
fn assert_logits_match(g: &itera_core::gpu::Gpu, w: &Weights, n: usize, what: &str) {
    let mut m = GpuModel::new(g, w).unwrap();
    let mut st = State::new(w);
    for (i, &t) in prompt(w, n).iter().enumerate() {
        let want = decode_step(w, &mut st, t).unwrap().to_vec();
        block_on(m.run(g, &[t], 1, true, false)).unwrap();
        let got = block_on(m.logits(g)).unwrap();
        assert_close(&got, &want, 2e-4, 2e-4, &format!("{what} logits at position {i}"));
    }
}

#[test]
fn greedy_decoding_gives_the_cpu_tokens_for_every_precision() {
    let Some(g) = gpu() else { return };
    for name in MODELS {
        let w = shipped(name);
        let mut m = GpuModel::new(&g, &w).unwrap();
        let p = prompt(&w, 5);
        let want = cpu_greedy(&w, &p, 128);
        assert_eq!(gpu_greedy(&g, &mut m, &p, 128, 1), want, "{name}: single-token mode");
        // Chaining steps in one submission does not depend on the weight precision: two
        // files suffice, which keeps this lavapipe test well under two minutes.
        if name.contains("tiny-q8") || name.contains("tiny-f16") {
            let multi = gpu_greedy(&g, &mut m, &p, 128, 16);
            assert_eq!(multi, want, "{name}: 16 tokens per submission");
        }
    }
}

/// A mixed model (q4, the embedding q8, layer 0's in_proj f16 and x_proj q3, layer 1's
/// out_proj and its experts' w1 f32, its experts' w2 each in another precision, q2 among
/// them): each matrix on the GPU in its own precision (a stack of experts that differ, in
/// f32), as on the CPU — the same logits along a prompt and the same greedy tokens — and the
/// same after a save and load.
#[test]
fn a_mixed_precision_model_decodes_as_on_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut map = itera_core::PrecisionMap::from([
        ("embed".to_string(), itera_core::Precision::Q8),
        ("layers.0.in_proj".to_string(), itera_core::Precision::F16),
        ("layers.0.x_proj".to_string(), itera_core::Precision::Q3),
        ("layers.1.out_proj".to_string(), itera_core::Precision::F32),
    ]);
    use itera_core::Precision::{F32, Q2, Q3, Q8};
    for (e, p) in [F32, Q8, Q3, Q2].into_iter().enumerate() {
        map.insert(format!("layers.1.experts.{e}.w1"), itera_core::Precision::F32);
        map.insert(format!("layers.1.experts.{e}.w2"), p);
    }
    let w = shipped("itera-tiny-f32.safetensors")
        .to_precision_map(itera_core::Precision::Q4, &map)
        .unwrap();
    let w = format::load(&format::save(&w).unwrap()).unwrap();
    assert_eq!(w.precision_map(), map);
    assert_logits_match(&g, &w, 8, "mixed");
    let mut m = GpuModel::new(&g, &w).unwrap();
    let p = prompt(&w, 5);
    assert_eq!(
        gpu_greedy(&g, &mut m, &p, 64, 1),
        cpu_greedy(&w, &p, 64),
        "mixed: greedy tokens"
    );
}

/// A pruned model (3 of itera-micro's 4 experts per MoE layer) is an ordinary model: the GPU
/// decodes it as the CPU does.
#[test]
fn a_pruned_model_decodes_as_on_the_cpu() {
    use itera_core::prune::{expert_scores, kept_experts, prune};
    let Some(g) = gpu() else { return };
    let w = shipped("itera-micro-f32.safetensors");
    let kept = kept_experts(&expert_scores(&w, &prompt(&w, 64)).unwrap(), 3);
    let w = format::load(&format::save(&prune(&w, &kept).unwrap()).unwrap()).unwrap();
    assert_eq!(w.config.n_experts, 3);
    let mut m = GpuModel::new(&g, &w).unwrap();
    let p = prompt(&w, 5);
    assert_eq!(
        gpu_greedy(&g, &mut m, &p, 48, 1),
        cpu_greedy(&w, &p, 48),
        "pruned: greedy tokens"
    );
}

#[test]
fn prompts_longer_than_one_submission_continue_the_state() {
    let Some(g) = gpu() else { return };
    let w = shipped("itera-tiny-q8.safetensors");
    let mut m = GpuModel::new(&g, &w).unwrap();
    let p = prompt(&w, MAX_STEPS * 2 + 3);
    assert_eq!(gpu_greedy(&g, &mut m, &p, 20, 7), cpu_greedy(&w, &p, 20));
}

#[test]
fn batched_prefill_and_step_by_step_prefill_agree() {
    let Some(g) = gpu() else { return };
    for name in MODELS {
        let w = shipped(name);
        // Two batched chunks of 64, then 19 forced steps (the last samples).
        let p = prompt(&w, 2 * 64 + 19);
        let mut outs = Vec::new();
        for batched in [true, false] {
            let mut m = GpuModel::new(&g, &w).unwrap();
            let first = block_on(m.prefill_with(&g, &p, true, batched)).unwrap();
            let logits = block_on(m.logits(&g)).unwrap();
            let next = block_on(m.generate(&g, first.tokens[0], 8, false)).unwrap().tokens;
            outs.push((first, logits, next));
        }
        let ((a, la, na), (b, lb, nb)) = (&outs[0], &outs[1]);
        assert_close(la, lb, 2e-4, 2e-4, &format!("{name}: logits after the prompt"));
        assert_eq!(
            (&a.tokens, na),
            (&b.tokens, nb),
            "{name}: greedy tokens after the prompt"
        );
        for (ra, rb) in a.routing[0].iter().zip(&b.routing[0]) {
            assert_eq!(ra.experts, rb.experts, "{name}: routing of the last prompt token");
        }
    }
}

#[test]
fn the_routing_trace_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let w = shipped("itera-tiny-f32.safetensors");
    let mut m = GpuModel::new(&g, &w).unwrap();
    let p = prompt(&w, 9);
    let out = block_on(m.run(&g, &p, p.len(), true, true)).unwrap();
    let mut st = State::new(&w);
    for (i, &t) in p.iter().enumerate() {
        decode_step(&w, &mut st, t).unwrap();
        for (layer, (got, want)) in out.routing[i].iter().zip(&st.routing).enumerate() {
            assert_eq!(got.experts, want.experts, "position {i} layer {layer}");
            assert_close(&got.weights, &want.weights, 1e-4, 1e-4, "routing weights");
        }
    }
    assert!(
        out.routing[0].iter().any(|r| !r.experts.is_empty()),
        "tiny has MoE layers"
    );
}

#[test]
fn seeded_sampling_follows_the_cpu_twin_and_reproduces() {
    let Some(g) = gpu() else { return };
    let w = shipped("itera-tiny-q8.safetensors");
    let mut m = GpuModel::new(&g, &w).unwrap();
    let settings = SamplingSettings {
        temperature: 0.8,
        top_k: 40,
        top_p: 0.9,
        seed: 42,
    };
    m.set_sampling(&g, settings).unwrap();
    let mut sampler = Sampler::new(settings).unwrap();
    let p = prompt(&w, 3);
    let first = block_on(m.prefill(&g, &p, false)).unwrap();
    let mut tokens = first.tokens.clone();
    for _ in 0..24 {
        let logits = block_on(m.logits(&g)).unwrap();
        let want = sampler.sample(&logits, m.position as u32 - 1);
        assert_eq!(
            *tokens.last().unwrap(),
            want,
            "sampled token at position {}",
            m.position
        );
        let next = block_on(m.generate(&g, want, 1, false)).unwrap();
        tokens.extend(next.tokens);
    }
    m.reset();
    let again = gpu_greedy(&g, &mut m, &p, tokens.len(), 8);
    assert_eq!(again, tokens, "same seed, same story, whatever the submission size");
    assert!(
        tokens.iter().collect::<std::collections::HashSet<_>>().len() > 5,
        "it samples"
    );
}

#[test]
fn a_decode_step_is_one_submission_and_one_small_read_back_with_nothing_created() {
    let Some(g) = gpu() else { return };
    let w = shipped("itera-tiny-q8.safetensors");
    let mut m = GpuModel::new(&g, &w).unwrap();
    let p = prompt(&w, 4);
    let mut last = *block_on(m.prefill(&g, &p, false)).unwrap().tokens.last().unwrap();
    let before = g.counters();
    for _ in 0..10 {
        last = block_on(m.generate(&g, last, 1, false)).unwrap().tokens[0];
    }
    let single = g.counters() - before;
    assert_eq!((single.submissions, single.readbacks, single.resources), (10, 10, 0));
    assert_eq!(single.readback_bytes, 10 * 8, "token id + log-prob");
    let before = g.counters();
    block_on(m.generate(&g, last, 32, false)).unwrap();
    let multi = g.counters() - before;
    assert_eq!((multi.submissions, multi.readbacks, multi.resources), (1, 1, 0));
    assert_eq!(multi.readback_bytes, 32 * 8);
}

#[test]
fn bad_requests_are_errors() {
    let Some(g) = gpu() else { return };
    let w = shipped("itera-micro-q4.safetensors");
    let mut m = GpuModel::new(&g, &w).unwrap();
    assert!(block_on(m.prefill(&g, &[], false)).is_err());
    assert!(block_on(m.run(&g, &[w.config.vocab_size as u32], 1, true, false)).is_err());
    assert!(block_on(m.run(&g, &[1, 2], 1, true, false)).is_err());
    assert!(block_on(m.generate(&g, 1, MAX_STEPS + 1, false)).is_err());
    let bad = SamplingSettings {
        top_p: 0.0,
        ..Default::default()
    };
    assert!(m.set_sampling(&g, bad).is_err());
}

#[test]
fn text_generation_matches_the_cpu_text_and_routing() {
    let Some(g) = gpu() else { return };
    use itera_core::generate::{generate, GenerateOptions};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../weights");
    let tok = itera_core::tokenizer::Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let w = shipped("itera-tiny-q8.safetensors");
    let mut m = GpuModel::new(&g, &w).unwrap();
    let sampled = |temperature, top_k, top_p, seed| SamplingSettings {
        temperature,
        top_k,
        top_p,
        seed,
    };
    for (prompt, max_tokens, stop, sampling) in [
        ("Once upon a time", 40, true, SamplingSettings::greedy()),
        ("", 300, true, SamplingSettings::greedy()),
        ("Tom had a red ball.", 25, false, SamplingSettings::greedy()),
        // Sampled: the CPU and the GPU share one sampler, so one seed writes one story.
        ("Once upon a time", 60, false, sampled(0.8, 0, 0.9, 7)),
        ("", 60, true, sampled(1.0, 40, 0.95, 1 << 40 | 3)),
        ("The cat", 60, false, sampled(0.6, 5, 1.0, 12345)),
        ("Lily", 60, false, sampled(1.2, 0, 1.0, 99)),
    ] {
        let opts = GenerateOptions {
            max_tokens,
            sampling,
            stop_at_end_of_text: stop,
        };
        let want = generate(&w, &tok, prompt, opts, |_| true).unwrap();
        // Greedy runs also one token per submission; the sampled ones 16 (the sampler reads
        // its position from the control words either way).
        let chunks: &[usize] = if sampling.temperature == 0.0 { &[1, 16] } else { &[16] };
        for &chunk in chunks {
            let got = block_on(itera_core::gpu::generate::generate(
                &g,
                &mut m,
                &tok,
                prompt,
                opts,
                chunk,
                |_| true,
            ))
            .unwrap();
            let what = format!("{prompt:?}, {sampling:?}, {chunk} per submission");
            assert_eq!(got.prompt_tokens, want.prompt_tokens, "{what}");
            assert_eq!(got.tokens, want.tokens, "{what}");
            assert_eq!(got.text, want.text, "{what}");
            let experts = |r: &[Vec<itera_core::model::Route>]| {
                r.iter()
                    .map(|l| l.iter().map(|r| r.experts.clone()).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            };
            assert_eq!(experts(&got.routing), experts(&want.routing), "{what}: routing");
        }
    }
}

/// How often float rounding still flips a sampled token: the GPU samples after each token of
/// a long CPU-sampled story (teacher-forced, so one flip does not change what follows), and
/// every choice is compared with the CPU's. CPU and GPU logits differ in the last bits
/// (another summation order), which moves the sampler's cumulative masses and thresholds by
/// as much: a flip needs the draw to land within that distance of a boundary.
#[test]
fn sampled_tokens_rarely_flip_between_cpu_and_gpu_logits() {
    let Some(g) = gpu() else { return };
    use itera_core::generate::{GenerateOptions, Generation};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../weights");
    let tok = itera_core::tokenizer::Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    // Tokens per story; ITERA_FLIP_TOKENS runs a longer measurement.
    let per_story: usize = std::env::var("ITERA_FLIP_TOKENS").map_or(150, |v| v.parse().unwrap());
    let (mut compared, mut flipped) = (0usize, 0usize);
    for (name, seed, top_k, top_p) in [
        ("itera-tiny-q8.safetensors", 1, 0, 0.9),
        ("itera-tiny-f32.safetensors", 2, 40, 1.0),
        ("itera-micro-q4.safetensors", 3, 0, 0.95),
        ("itera-micro-f16.safetensors", 4, 20, 0.8),
    ] {
        let w = shipped(name);
        let sampling = SamplingSettings {
            temperature: 1.0,
            top_k,
            top_p,
            seed,
        };
        let opts = GenerateOptions {
            max_tokens: per_story,
            sampling,
            stop_at_end_of_text: false,
        };
        let mut cpu = Generation::start(&w, &tok, "Once upon a time", opts).unwrap();
        while cpu.next(&w, &tok).unwrap().is_some() {}
        let (sequence, prompt_len) = cpu.sequence();
        let mut m = GpuModel::new(&g, &w).unwrap();
        m.set_sampling(&g, sampling).unwrap();
        let mut choice = block_on(m.prefill(&g, &sequence[..prompt_len], false)).unwrap().tokens[0];
        for (i, &want) in sequence[prompt_len..].iter().enumerate() {
            compared += 1;
            if choice != want {
                flipped += 1;
                eprintln!("{name}: token {i} after the prompt: GPU {choice}, CPU {want}");
            }
            choice = block_on(m.generate(&g, want, 1, false)).unwrap().tokens[0];
        }
    }
    eprintln!("sampled tokens flipped by rounding: {flipped} of {compared}");
    assert_eq!(compared, 4 * per_story);
    assert!(
        flipped * 200 <= compared,
        "{flipped} of {compared} flipped: more than rounding explains"
    );
}

#[test]
fn a_lost_device_is_an_error_not_a_panic() {
    let Some(g) = gpu() else { return };
    let w = shipped("itera-micro-q8.safetensors");
    let mut m = GpuModel::new(&g, &w).unwrap();
    block_on(m.prefill(&g, &[1, 2], false)).unwrap();
    g.device.destroy();
    let r = block_on(m.generate(&g, 3, 4, false));
    match r {
        Err(itera_core::Error::Gpu(message)) => eprintln!("after destroy: {message}"),
        other => panic!("expected a GPU error, got {other:?}"),
    }
    assert!(g.check().is_err(), "the failure stays recorded");
    assert!(GpuModel::new(&g, &w).is_err() || block_on(m.generate(&g, 3, 1, false)).is_err());
}
