//! The page's engine, natively: greedy and sampled tokens match the committed golden fixture
//! that the GPU and browser suites (tests/gpu_native.rs, tests/browser.rs) also check, streaming in small steps gives the same
//! text as the core generator, comparison and evaluation behave, and bad input is refused
//! with a specific message. `ITERA_UPDATE_GOLDEN=1` rewrites the fixture.
#![cfg(not(target_arch = "wasm32"))]

use std::path::PathBuf;

use itera_core::generate::{generate, GenerateOptions};
use itera_core::lm::AnyWeights;
use itera_core::sampling::SamplingSettings;
use itera_core::tokenizer::Tokenizer;
use itera_web::compare::compare;
use itera_web::engine::{Engine, GenerateRequest};
use serde_json::{json, Value};

const PROMPT: &str = "Once upon a time, there was a";
const GREEDY_TOKENS: usize = 40;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model_file(name: &str) -> Vec<u8> {
    std::fs::read(root().join("weights").join(format!("{name}.safetensors"))).unwrap()
}

fn tokenizer_file() -> Vec<u8> {
    std::fs::read(root().join("weights/tokenizer.json")).unwrap()
}

fn engine(name: &str) -> Engine {
    Engine::load(&model_file(name), &tokenizer_file()).unwrap()
}

fn request(max_tokens: usize, temperature: f32) -> GenerateRequest {
    serde_json::from_value(json!({
        "prompt": PROMPT,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": 0.9,
        "seed": 7,
        "stop_at_end_of_text": false,
    }))
    .unwrap()
}

/// The tokens of a run to the end, `step` at a time.
fn run(e: &mut Engine, req: &GenerateRequest, step: usize) -> Vec<u32> {
    e.start(req).unwrap();
    let mut tokens = Vec::new();
    loop {
        let out = e.step(step).unwrap();
        tokens.extend(out.tokens);
        if out.done {
            return tokens;
        }
    }
}

fn greedy(e: &mut Engine) -> Vec<u32> {
    run(e, &request(GREEDY_TOKENS, 0.0), 7)
}

/// The settings of tests/golden/generated-tokens.json: greedy, then two sampled ones (one
/// sampler on every backend, so the GPU suites expect these stories too).
fn golden_settings() -> Vec<(&'static str, Value)> {
    vec![
        (
            "greedy",
            json!({ "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0 }),
        ),
        (
            "T 0.8, top-p 0.9, seed 7",
            json!({ "temperature": 0.8, "top_k": 0, "top_p": 0.9, "seed": 7 }),
        ),
        (
            "T 1, top-k 40, top-p 0.95, seed 2^40 + 3",
            json!({ "temperature": 1.0, "top_k": 40, "top_p": 0.95, "seed": (1u64 << 40) + 3 }),
        ),
    ]
}

#[test]
fn generated_tokens_match_the_golden_fixture_for_every_shipped_model() {
    let path = root().join("tests/golden/generated-tokens.json");
    let settings = golden_settings();
    let mut models = serde_json::Map::new();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("weights/manifest.json")).unwrap()).unwrap();
    for model in manifest["models"].as_array().unwrap() {
        for file in model["precisions"].as_array().unwrap() {
            let name = file["key"].as_str().unwrap().to_string();
            let mut e = engine(&name);
            let runs: serde_json::Map<String, Value> = settings
                .iter()
                .map(|(label, s)| {
                    let mut req =
                        json!({ "prompt": PROMPT, "max_tokens": GREEDY_TOKENS, "stop_at_end_of_text": false });
                    req.as_object_mut().unwrap().extend(s.as_object().unwrap().clone());
                    let req: GenerateRequest = serde_json::from_value(req).unwrap();
                    (label.to_string(), json!(run(&mut e, &req, 7)))
                })
                .collect();
            models.insert(name, Value::Object(runs));
        }
    }
    let settings = Value::Object(settings.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
    let fresh = json!({ "prompt": PROMPT, "tokens": GREEDY_TOKENS, "settings": settings, "models": models });
    if std::env::var_os("ITERA_UPDATE_GOLDEN").is_some() {
        // One line per run keeps diffs readable.
        let line = |v: &Value| serde_json::to_string(v).unwrap();
        let block = |m: &serde_json::Map<String, Value>, indent: &str, each: &dyn Fn(&Value) -> String| {
            let lines: Vec<String> = m.iter().map(|(k, v)| format!("{indent}{k:?}: {}", each(v))).collect();
            lines.join(",\n")
        };
        let runs = |v: &Value| format!("{{\n{}\n    }}", block(v.as_object().unwrap(), "      ", &line));
        let text = format!(
            "{{\n  \"prompt\": {PROMPT:?},\n  \"tokens\": {GREEDY_TOKENS},\n  \"settings\": {{\n{}\n  }},\n  \"models\": {{\n{}\n  }}\n}}\n",
            block(fresh["settings"].as_object().unwrap(), "    ", &line),
            block(&models, "    ", &runs),
        );
        std::fs::write(&path, text).unwrap();
    }
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        golden, fresh,
        "run with ITERA_UPDATE_GOLDEN=1 after retraining the shipped models or changing the sampler"
    );
}

/// Streaming in steps gives the core generator's text and tokens, for either family.
#[test]
fn streaming_in_steps_equals_the_core_generator() {
    for name in ["itera-micro-q8", "transformer-micro-q8"] {
        let mut e = engine(name);
        let req = request(60, 0.8);
        e.start(&req).unwrap();
        let mut text = String::new();
        let mut steps = 0;
        loop {
            let out = e.step(3).unwrap();
            assert_eq!(out.tokens.len(), out.logprobs.len());
            assert_eq!(out.tokens.len(), out.routing.len());
            assert!(out.logprobs.iter().all(|&p| p <= 0.0 && p.is_finite()));
            text.push_str(&out.text);
            steps += 1;
            if out.done {
                break;
            }
        }
        assert_eq!(steps, 20, "{name}");
        let opts = GenerateOptions {
            max_tokens: 60,
            sampling: SamplingSettings {
                temperature: 0.8,
                top_k: 0,
                top_p: 0.9,
                seed: 7,
            },
            stop_at_end_of_text: false,
        };
        let tok = Tokenizer::from_json(&tokenizer_file()).unwrap();
        let core = match AnyWeights::load(&model_file(name)).unwrap() {
            AnyWeights::Itera(w) => generate(&w, &tok, PROMPT, opts, |_| true),
            AnyWeights::Transformer(w) => generate(&w, &tok, PROMPT, opts, |_| true),
        }
        .unwrap();
        assert_eq!(text, core.text, "{name}");
        let (sequence, from) = e.sequence();
        assert_eq!(&sequence[from..], &core.tokens[..], "{name}");
    }
}

/// A Transformer's description and cost: no experts, a KV cache that grows with the position
/// (the SSM's state does not); both families decode on WebGPU.
#[test]
fn the_page_describes_either_family_and_its_cost_per_token() {
    let (itera, transformer) = (engine("itera-tiny-q8"), engine("transformer-tiny-q8"));
    let (a, b) = (itera.info(), transformer.info());
    assert_eq!((a.kind, b.kind), ("itera", "transformer"));
    assert_eq!((a.description, b.description), ("SSM + MoE", "Transformer"));
    assert_eq!(a.tokenizer, b.tokenizer, "one tokenizer, one fingerprint");
    assert!(b.moe_layers.is_empty() && b.n_experts == 0 && b.n_heads > 0);
    assert!(a.webgpu && b.webgpu, "both families decode on WebGPU");
    assert_eq!(a.max_context, None);
    assert!(b.max_context.unwrap() >= 8192);
    let ratio = b.params as f64 / a.params as f64;
    assert!((0.95..=1.05).contains(&ratio), "a same-size pair: {ratio}");
    let (t64, t2048) = (transformer.token_cost(64), transformer.token_cost(2048));
    assert!(t2048.state_bytes == 32 * t64.state_bytes && t2048.flops > t64.flops);
    assert_eq!(itera.token_cost(64), itera.token_cost(2048));
    let r = transformer
        .eval("Once upon a time there was a cat.<|endoftext|>The dog ran to the park.")
        .unwrap();
    assert!(r.bits_per_byte > 0.5 && r.bits_per_byte < 5.0, "{}", r.bits_per_byte);
}

#[test]
fn routing_names_each_moe_layer_with_top_k_experts() {
    let mut e = engine("itera-tiny-q8");
    let info = e.info();
    e.start(&request(5, 0.0)).unwrap();
    let out = e.step(5).unwrap();
    for per_token in &out.routing {
        let layers: Vec<usize> = per_token.iter().map(|r| r.layer).collect();
        assert_eq!(layers, info.moe_layers);
        for r in per_token {
            assert_eq!(r.experts.len(), info.top_k);
            assert!(r.experts.iter().all(|&x| x < info.n_experts));
            assert!((r.weights.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        }
    }
}

/// A model against itself: exact; against its q4 file: close, routing mostly alike; against
/// its pruned file: close, routing not comparable.
#[test]
fn comparison_of_a_model_with_itself_is_exact_and_quantization_is_close() {
    let mut f32_model = engine("itera-tiny-f32");
    greedy(&mut f32_model);
    let (tokens, from) = f32_model.sequence();
    let tokens = tokens.to_vec();
    let same = compare(&f32_model, &f32_model, &tokens, from).unwrap();
    assert_eq!(same.positions, GREEDY_TOKENS);
    assert!(same.mean_kl < 1e-6, "{}", same.mean_kl);
    assert_eq!((same.top1_agreement, same.routing_agreement), (1.0, Some(1.0)));
    let q4 = compare(&f32_model, &engine("itera-tiny-q4"), &tokens, from).unwrap();
    assert!(q4.mean_kl > 1e-5 && q4.mean_kl < 0.2, "q4 mean KL {}", q4.mean_kl);
    assert!(q4.top1_agreement > 0.7, "{}", q4.top1_agreement);
    assert!(q4.routing_agreement.unwrap() > 0.5, "{:?}", q4.routing_agreement);
    assert!(compare(&f32_model, &f32_model, &tokens, 0).is_err());
    // A pruned model numbers its kept experts afresh: no routing agreement to state.
    let pruned = compare(&f32_model, &engine("itera-tiny-keep3-q4"), &tokens, from).unwrap();
    assert_eq!(pruned.routing_agreement, None);
    assert!(pruned.top1_agreement > 0.7, "{}", pruned.top1_agreement);
}

/// Two families on one tokenizer compare token by token (no routing to agree on); a model
/// with another tokenizer is refused by name.
#[test]
fn comparison_across_families_needs_only_a_shared_tokenizer() {
    let mut itera = engine("itera-tiny-f32");
    greedy(&mut itera);
    let (tokens, from) = itera.sequence();
    let tokens = tokens.to_vec();
    let transformer = engine("transformer-tiny-f32");
    let c = compare(&itera, &transformer, &tokens, from).unwrap();
    assert_eq!(c.positions, GREEDY_TOKENS);
    assert_eq!(c.routing_agreement, None);
    // Two different models: they disagree somewhere, but both learnt the same stories.
    assert!(c.mean_kl > 1e-3 && c.mean_kl.is_finite(), "{}", c.mean_kl);
    assert!(c.top1_agreement > 0.2 && c.top1_agreement < 1.0, "{}", c.top1_agreement);
    let back = compare(&transformer, &itera, &tokens, from).unwrap();
    assert_eq!(back.positions, c.positions);
    let data = root().join("../shared/data/teacher");
    let (Ok(checkpoint), Ok(tok512)) = (
        std::fs::read(data.join("stories260K.bin")),
        std::fs::read(data.join("tok512.bin")),
    ) else {
        eprintln!("skipped the llama2.c half: ../shared/data/teacher has no stories260K.bin + tok512.bin");
        return;
    };
    let llama2 = Engine::llama2(&checkpoint, &tok512).unwrap();
    assert_eq!(llama2.info().kind, "llama2");
    assert!(!llama2.info().webgpu, "a llama2.c checkpoint decodes on the CPU");
    assert_ne!(llama2.info().tokenizer, itera.info().tokenizer);
    let err = compare(&itera, &llama2, &tokens, from).unwrap_err().to_string();
    assert!(err.contains("different tokenizers"), "{err}");
}

/// The comparison walks the sequence one prefill chunk at a time; over chunk boundaries it
/// scores every position as one whole-sequence forward does.
#[test]
fn comparison_across_prefill_chunks_equals_one_whole_forward() {
    use itera_core::layers::activations::log_sum_exp;
    use itera_core::model::{prefill_with_cache, Cache, State, PREFILL_CHUNK};
    let (a, b) = (engine("itera-tiny-f32"), engine("itera-tiny-q4"));
    let tokens: Vec<u32> = (0..2 * PREFILL_CHUNK as u32 + 45)
        .map(|i| (i * 37 + 11) % 4096)
        .collect();
    let from = PREFILL_CHUNK - 3;
    let chunked = compare(&a, &b, &tokens, from).unwrap();
    let whole = |w: &itera_core::Weights| {
        let mut cache = Cache::default();
        prefill_with_cache(w, &tokens, &mut State::new(w), &mut cache).unwrap();
        cache.logits
    };
    let (wa, wb) = (a.itera().unwrap().0, b.itera().unwrap().0);
    let (la, lb) = (whole(wa), whole(wb));
    let v = wa.config.vocab_size;
    assert_eq!(chunked.positions, tokens.len() - from);
    for (i, pos) in (from - 1..tokens.len() - 1).enumerate() {
        let (p, q) = (&la[pos * v..][..v], &lb[pos * v..][..v]);
        let (lp, lq) = (log_sum_exp(p), log_sum_exp(q));
        let kl: f64 = p
            .iter()
            .zip(q)
            .map(|(&x, &y)| ((x - lp) as f64).exp() * ((x - lp) as f64 - (y - lq) as f64))
            .sum();
        let got = chunked.kl[i] as f64;
        assert!(
            (got - kl.max(0.0)).abs() <= 1e-5 + 1e-3 * kl.abs(),
            "position {pos}: {got} vs {kl}"
        );
    }
}

#[test]
fn evaluation_gives_bits_per_byte() {
    let e = engine("itera-micro-q8");
    let r = e
        .eval("Once upon a time there was a cat.<|endoftext|>The dog ran to the park.")
        .unwrap();
    assert_eq!(r.documents, 2);
    assert!(r.bits_per_byte > 0.5 && r.bits_per_byte < 5.0, "{}", r.bits_per_byte);
    assert!(e.eval("  \n").unwrap_err().to_string().contains("evaluation text"));
}

#[test]
fn bad_input_is_refused_with_a_specific_message() {
    let tok = std::fs::read(root().join("weights/tokenizer.json")).unwrap();
    let model = std::fs::read(root().join("weights/itera-micro-q8.safetensors")).unwrap();
    let msg = |r: Result<Engine, itera_core::Error>| r.err().expect("must fail").to_string();
    assert!(msg(Engine::load(b"not a model", &tok)).contains("safetensors"));
    assert!(msg(Engine::load(&model[..model.len() / 2], &tok)).contains("safetensors"));
    assert!(msg(Engine::load(&model, b"{}")).contains("tokenizer"));
    let mut e = Engine::load(&model, &tok).unwrap();
    assert!(e.step(1).unwrap_err().to_string().contains("start"));
    for (field, value) in [
        ("max_tokens", json!(0)),
        ("temperature", json!(-1.0)),
        ("top_p", json!(0.0)),
    ] {
        let mut req = json!({ "prompt": "Hi", "max_tokens": 5 });
        req[field] = value;
        let req: GenerateRequest = serde_json::from_value(req).unwrap();
        let err = e.start(&req).unwrap_err().to_string();
        assert!(err.contains(field), "{field}: {err}");
        assert!(e.step(1).is_err(), "a refused request leaves no generation behind");
    }
    let huge: GenerateRequest =
        serde_json::from_value(json!({ "prompt": "a".repeat(70_000), "max_tokens": 1 })).unwrap();
    assert!(e.start(&huge).unwrap_err().to_string().contains("prompt"));
}

/// A mixed file (q4 with the embedding q8) loads in the page's engine, says its precisions in
/// `info()` and writes the tokens the core writes with the same weights.
#[test]
fn a_mixed_precision_file_loads_and_says_its_map() {
    let map = itera_core::PrecisionMap::from([("embed".to_string(), itera_core::Precision::Q8)]);
    let w = itera_core::format::load(&model_file("itera-tiny-f32"))
        .unwrap()
        .to_precision_map(itera_core::Precision::Q4, &map)
        .unwrap();
    let mut e = Engine::load(&itera_core::format::save(&w).unwrap(), &tokenizer_file()).unwrap();
    let info = serde_json::to_value(e.info()).unwrap();
    assert_eq!(
        (&info["precision"], &info["precision_map"]),
        (&json!("q4"), &json!({"embed": "q8"}))
    );
    let tok = Tokenizer::from_json(&tokenizer_file()).unwrap();
    let opts = GenerateOptions {
        max_tokens: 12,
        sampling: SamplingSettings {
            temperature: 0.0,
            ..SamplingSettings::default()
        },
        stop_at_end_of_text: false,
    };
    let want = generate(&w, &tok, PROMPT, opts, |_| true).unwrap();
    run(&mut e, &request(12, 0.0), 3);
    let (sequence, from) = e.sequence();
    assert_eq!(&sequence[from..], &want.tokens[..]);
}
