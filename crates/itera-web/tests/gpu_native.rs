//! The page's WebGPU engine, natively on lavapipe (the browser runs the same code on WebGPU,
//! tests/browser.rs): greedy and sampled tokens of every shipped model equal the golden CPU
//! fixture, every
//! token arrives with its routing, a sampled story equals the CPU engine's text shape, and a
//! Transformer writes the CPU engine's story.
//! Without an adapter it prints SKIPPED; `cargo xtask test` sets ITERA_REQUIRE_GPU.
#![cfg(not(target_arch = "wasm32"))]

use std::path::PathBuf;
use std::rc::Rc;

use itera_core::format;
use itera_core::gpu::Gpu;
use itera_core::tokenizer::Tokenizer;
use itera_web::engine::{Engine, GenerateRequest};
use itera_web::gpu_engine::GpuEngine;
use pollster::block_on;
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn gpu() -> Option<Rc<Gpu>> {
    match Gpu::new_blocking() {
        Ok(g) => Some(Rc::new(g)),
        Err(e) if std::env::var_os("ITERA_REQUIRE_GPU").is_some() => panic!("ITERA_REQUIRE_GPU is set but {e}"),
        Err(e) => {
            eprintln!("SKIPPED: {e} (install mesa-vulkan-drivers for lavapipe)");
            None
        }
    }
}

fn gpu_engine(gpu: &Rc<Gpu>, name: &str) -> GpuEngine {
    let w = format::load_file(&root().join("weights").join(format!("{name}.safetensors"))).unwrap();
    let t = Tokenizer::from_file(&root().join("weights/tokenizer.json")).unwrap();
    GpuEngine::new(gpu.clone(), &w, t).unwrap()
}

fn request(prompt: &str, max_tokens: u64, temperature: f32) -> GenerateRequest {
    serde_json::from_value(json!({
        "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
        "top_k": 40, "top_p": 0.9, "seed": 7, "stop_at_end_of_text": false,
    }))
    .unwrap()
}

/// Greedy and sampled: the GPU samples with the CPU's sampler, so every run of the fixture
/// gives the CPU's tokens.
#[test]
fn generated_tokens_on_the_gpu_match_the_golden_cpu_fixture() {
    let Some(g) = gpu() else { return };
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("tests/golden/generated-tokens.json")).unwrap())
            .unwrap();
    let (prompt, n) = (golden["prompt"].as_str().unwrap(), golden["tokens"].as_u64().unwrap());
    for (name, runs) in golden["models"].as_object().unwrap() {
        let mut e = gpu_engine(&g, name);
        for (label, want) in runs.as_object().unwrap() {
            let mut req = json!({ "prompt": prompt, "max_tokens": n, "stop_at_end_of_text": false });
            req.as_object_mut()
                .unwrap()
                .extend(golden["settings"][label].as_object().unwrap().clone());
            block_on(e.start(&serde_json::from_value(req).unwrap())).unwrap();
            let mut tokens = Vec::new();
            loop {
                let out = block_on(e.step(6)).unwrap();
                assert_eq!(
                    out.routing.len(),
                    out.tokens.len(),
                    "{name}: every token comes with its routing"
                );
                tokens.extend(out.tokens);
                if out.done {
                    break;
                }
            }
            let want: Vec<u32> = serde_json::from_value(want.clone()).unwrap();
            assert_eq!(tokens, want, "{name}, {label}");
            assert_eq!(e.sequence().0.len() - e.sequence().1, tokens.len());
        }
    }
}

#[test]
fn routing_and_text_on_the_gpu_equal_the_cpu_engine() {
    let Some(g) = gpu() else { return };
    let mut cpu = Engine::load(
        &std::fs::read(root().join("weights/itera-tiny-q8.safetensors")).unwrap(),
        &std::fs::read(root().join("weights/tokenizer.json")).unwrap(),
    )
    .unwrap();
    let mut e = gpu_engine(&g, "itera-tiny-q8");
    let req = request("The dog", 30, 0.0);
    cpu.start(&req).unwrap();
    let want = cpu.step(30).unwrap();
    block_on(e.start(&req)).unwrap();
    let mut got = block_on(e.step(64)).unwrap();
    while !got.done {
        let more = block_on(e.step(64)).unwrap();
        got.tokens.extend(more.tokens);
        got.routing.extend(more.routing);
        got.text.push_str(&more.text);
        got.done = more.done;
    }
    assert_eq!(got.tokens, want.tokens);
    assert_eq!(got.text, want.text);
    let experts = |r: &Vec<Vec<itera_web::engine::RouteOut>>| {
        r.iter()
            .map(|t| t.iter().map(|l| (l.layer, l.experts.clone())).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    assert_eq!(experts(&got.routing), experts(&want.routing));
}

/// A Transformer on the page's WebGPU engine: the CPU engine's tokens and text, sampled with
/// a seed, each token with an empty routing.
#[test]
fn a_transformer_on_the_gpu_writes_the_cpu_engine_story() {
    let Some(g) = gpu() else { return };
    let (model, tok) = (
        std::fs::read(root().join("weights/transformer-tiny-q8.safetensors")).unwrap(),
        std::fs::read(root().join("weights/tokenizer.json")).unwrap(),
    );
    let mut cpu = Engine::load(&model, &tok).unwrap();
    let (m, t) = cpu.upload(&g).unwrap();
    let mut e = GpuEngine::of(g.clone(), m, t);
    let req = request("The dog", 40, 0.8);
    cpu.start(&req).unwrap();
    let want = cpu.step(40).unwrap();
    block_on(e.start(&req)).unwrap();
    let (mut tokens, mut text) = (Vec::new(), String::new());
    loop {
        let out = block_on(e.step(16)).unwrap();
        assert_eq!(out.routing.len(), out.tokens.len());
        assert!(out.routing.iter().all(Vec::is_empty), "a Transformer routes nothing");
        tokens.extend(out.tokens);
        text.push_str(&out.text);
        if out.done {
            break;
        }
    }
    assert_eq!(tokens, want.tokens);
    assert_eq!(text, want.text);
}

#[test]
fn sampling_on_the_gpu_is_seeded_and_requests_are_checked() {
    let Some(g) = gpu() else { return };
    let mut e = gpu_engine(&g, "itera-micro-q8");
    let story = |e: &mut GpuEngine| {
        block_on(e.start(&request("Once", 25, 0.8))).unwrap();
        block_on(e.step(64)).unwrap().tokens
    };
    let a = story(&mut e);
    assert_eq!(a, story(&mut e), "same seed, same story");
    assert!(
        block_on(e.step(1)).unwrap().tokens.is_empty(),
        "a finished run gives nothing more"
    );
    let bad: GenerateRequest = serde_json::from_value(json!({"prompt": "x", "max_tokens": 0})).unwrap();
    assert!(block_on(e.start(&bad)).is_err());
    let mut fresh = gpu_engine(&g, "itera-micro-q8");
    assert!(block_on(fresh.step(4)).is_err(), "step before start");
}
