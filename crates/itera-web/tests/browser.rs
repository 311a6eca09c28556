//! The wasm API inside headless Chromium (wasm-bindgen-test; run by `cargo xtask test`):
//! every shipped model loads from bytes and its greedy and sampled tokens equal native CPU's,
//! on the CPU and on WebGPU (the golden fixture that tests/native.rs checks natively), streaming and comparison work through the
//! JS-facing types, a Transformer decodes on WebGPU as on the CPU, a GPU training step (plain
//! and distilling) matches the CPU on WebGPU, and
//! malformed input is a `JsError` with a clear message, never a trap; the longest prompt
//! runs within a fixed heap and a longer one is refused with a message.
#![cfg(target_arch = "wasm32")]

#[path = "../../itera-core/tests/peak_heap/mod.rs"]
mod peak_heap;

use itera_web::{compare, gpu_init, Model};
use serde_json::Value;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const TOKENIZER: &[u8] = include_bytes!("../../../weights/tokenizer.json");
const GOLDEN: &str = include_str!("../../../tests/golden/generated-tokens.json");

macro_rules! shipped {
    ($($name:literal),*) => {
        [$(($name, include_bytes!(concat!("../../../weights/", $name, ".safetensors")) as &[u8])),*]
    };
}

const MODELS: [(&str, &[u8]); 18] = shipped!(
    "itera-tiny-f32",
    "itera-tiny-f16",
    "itera-tiny-q8",
    "itera-tiny-q4",
    "itera-tiny-q3",
    "itera-tiny-q2",
    "itera-tiny-auto1",
    "itera-tiny-auto5",
    "itera-tiny-keep3-q4",
    "itera-micro-f32",
    "itera-micro-f16",
    "itera-micro-q8",
    "itera-micro-q4",
    "itera-micro-q3",
    "itera-micro-q2",
    "itera-micro-auto1",
    "itera-micro-auto5",
    "itera-micro-keep3-q4"
);

/// The embedded file of the shipped model `key`.
fn file(key: &str) -> &'static [u8] {
    MODELS
        .iter()
        .find(|(n, _)| *n == key)
        .unwrap_or_else(|| panic!("{key} is not embedded"))
        .1
}

/// The embedded files are the manifest's models, in its order.
#[wasm_bindgen_test]
fn the_embedded_models_are_the_manifests() {
    let manifest: Value = serde_json::from_str(include_str!("../../../weights/manifest.json")).unwrap();
    let keys: Vec<&str> = manifest["models"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["precisions"].as_array().unwrap())
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, MODELS.map(|m| m.0), "weights/manifest.json");
}

fn message(e: wasm_bindgen::JsError) -> String {
    js_sys::Error::from(JsValue::from(e)).message().into()
}

/// A JSON value as the plain JS object the page would pass.
fn js(v: &Value) -> JsValue {
    js_sys::JSON::parse(&v.to_string()).unwrap()
}

/// A JS result as JSON, to read its fields.
fn value(v: JsValue) -> Value {
    serde_json::from_str(&String::from(js_sys::JSON::stringify(&v).unwrap())).unwrap()
}

/// The fixture's request for one of its settings (greedy or sampled).
fn golden_request(golden: &Value, label: &str) -> Value {
    let mut req = serde_json::json!({
        "prompt": golden["prompt"], "max_tokens": golden["tokens"], "stop_at_end_of_text": false,
    });
    req.as_object_mut()
        .unwrap()
        .extend(golden["settings"][label].as_object().unwrap().clone());
    req
}

fn tokens_on_the_cpu(m: &mut Model, req: &Value) -> Vec<u64> {
    m.start(js(req)).map_err(message).unwrap();
    let mut tokens = Vec::new();
    loop {
        let out = value(m.step(5).map_err(message).unwrap());
        tokens.extend(out["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()));
        if out["done"].as_bool().unwrap() {
            return tokens;
        }
    }
}

/// Greedy and sampled runs of every shipped model equal native CPU's.
#[wasm_bindgen_test]
fn generated_tokens_equal_native_cpu_for_every_shipped_model() {
    let golden: Value = serde_json::from_str(GOLDEN).unwrap();
    for (name, bytes) in MODELS {
        let mut m = Model::new(bytes, TOKENIZER).map_err(message).unwrap();
        for (label, want) in golden["models"][name].as_object().unwrap() {
            let want: Vec<u64> = serde_json::from_value(want.clone()).unwrap();
            let got = tokens_on_the_cpu(&mut m, &golden_request(&golden, label));
            assert_eq!(got, want, "{name}, {label}");
        }
    }
}

fn js_message(e: JsValue) -> String {
    js_sys::Error::from(e).message().into()
}

async fn tokens_on_webgpu(m: &Model, req: &Value) -> Vec<u64> {
    JsFuture::from(m.start_gpu(js(req))).await.map_err(js_message).unwrap();
    let mut tokens = Vec::new();
    loop {
        let out = value(JsFuture::from(m.step_gpu(7)).await.map_err(js_message).unwrap());
        let step_tokens = out["tokens"].as_array().unwrap();
        assert_eq!(
            out["routing"].as_array().unwrap().len(),
            step_tokens.len(),
            "routing per token"
        );
        tokens.extend(step_tokens.iter().map(|t| t.as_u64().unwrap()));
        if out["done"].as_bool().unwrap() {
            return tokens;
        }
    }
}

/// The same golden tokens with every matrix multiply, the routing and the sampling on WebGPU
/// (SwiftShader in CI: no shader-f16, so f16 runs through unpack2x16float): greedy for every
/// variant of itera-micro (each precision, the mixed files, the pruned one) plus the page's
/// default, itera-tiny q8, and the sampled runs (one sampler on the CPU and the GPU) for
/// itera-micro q4 and itera-tiny q8. SwiftShader runs each dispatch on the CPU, and the other
/// tiny files add minutes while covering no new kernel (every shipped file runs every setting
/// on lavapipe in tests/gpu_native.rs).
#[wasm_bindgen_test]
async fn generated_tokens_on_webgpu_equal_native_cpu_for_every_shipped_model() {
    let adapter = JsFuture::from(gpu_init())
        .await
        .map_err(js_message)
        .expect("WebGPU must be available (Chromium flags in webdriver.json)");
    web_sys_log(&format!("WebGPU adapter: {}", adapter.as_string().unwrap_or_default()));
    let golden: Value = serde_json::from_str(GOLDEN).unwrap();
    let mut sampled = 0;
    for (name, bytes) in MODELS
        .into_iter()
        .filter(|(n, _)| n.starts_with("itera-micro") || *n == "itera-tiny-q8")
    {
        let m = Model::new(bytes, TOKENIZER).map_err(message).unwrap();
        m.enable_gpu().map_err(message).unwrap();
        for (label, want) in golden["models"][name].as_object().unwrap() {
            if label != "greedy" && !matches!(name, "itera-micro-q4" | "itera-tiny-q8") {
                continue;
            }
            sampled += usize::from(label != "greedy");
            let want: Vec<u64> = serde_json::from_value(want.clone()).unwrap();
            let got = tokens_on_webgpu(&m, &golden_request(&golden, label)).await;
            assert_eq!(got, want, "{name}, {label} on WebGPU");
        }
    }
    assert_eq!(sampled, 4, "two sampled settings on two models");
}

/// A Transformer on WebGPU (rope_kv and attention over the KV cache in WGSL) writes the CPU's
/// tokens: the shipped transformer-micro q8, greedy and sampled, and the odd `test` shape
/// (head size 6, two query heads per kv head, an untied classifier) greedy.
#[wasm_bindgen_test]
async fn a_transformer_on_webgpu_writes_the_cpu_tokens() {
    use itera_core::transformer::TransformerConfig;
    use itera_core::{format, Architecture, Transformer};
    JsFuture::from(gpu_init())
        .await
        .map_err(js_message)
        .expect("WebGPU must be available");
    let odd = TransformerConfig {
        vocab_size: 4096,
        shared_classifier: false,
        ..TransformerConfig::preset("test").unwrap()
    };
    let odd = format::save(&Transformer::init_random(&odd, 9).unwrap()).unwrap();
    let micro: &[u8] = include_bytes!("../../../weights/transformer-micro-q8.safetensors");
    let greedy = serde_json::json!({ "prompt": "Once upon a time", "max_tokens": 48, "temperature": 0.0, "stop_at_end_of_text": false });
    let sampled = serde_json::json!({ "prompt": "Once upon a time", "max_tokens": 48, "temperature": 0.8, "top_p": 0.9, "seed": 3, "stop_at_end_of_text": false });
    for (name, bytes, requests) in [
        ("transformer-micro-q8", micro, vec![&greedy, &sampled]),
        ("the test shape", &odd[..], vec![&greedy]),
    ] {
        let mut m = Model::new(bytes, TOKENIZER).map_err(message).unwrap();
        m.enable_gpu().map_err(message).unwrap();
        for req in requests {
            let want = tokens_on_the_cpu(&mut m, req);
            let got = tokens_on_webgpu(&m, req).await;
            assert_eq!(got, want, "{name}, temperature {} on WebGPU", req["temperature"]);
        }
    }
}

/// A mixed file (itera-micro in q4, its embedding q8, layer 0's in_proj f16, layer 1's
/// out_proj f32) loads in the browser, and WebGPU — each matrix in its own precision — writes
/// the wasm CPU's greedy tokens.
#[wasm_bindgen_test]
async fn a_mixed_precision_model_on_webgpu_writes_the_cpu_tokens() {
    use itera_core::{format, Precision, PrecisionMap};
    JsFuture::from(gpu_init())
        .await
        .map_err(js_message)
        .expect("WebGPU must be available");
    let f32 = file("itera-micro-f32");
    let map = PrecisionMap::from([
        ("embed".to_string(), Precision::Q8),
        ("layers.0.in_proj".to_string(), Precision::F16),
        ("layers.1.out_proj".to_string(), Precision::F32),
    ]);
    let mixed = format::load(f32)
        .unwrap()
        .to_precision_map(Precision::Q4, &map)
        .unwrap();
    let mut m = Model::new(&format::save(&mixed).unwrap(), TOKENIZER)
        .map_err(message)
        .unwrap();
    assert_eq!(
        value(m.info().map_err(message).unwrap())["precision_map"]["embed"],
        "q8"
    );
    m.enable_gpu().map_err(message).unwrap();
    let greedy = serde_json::json!({ "prompt": "Once upon a time", "max_tokens": 48, "temperature": 0.0, "stop_at_end_of_text": false });
    let want = tokens_on_the_cpu(&mut m, &greedy);
    assert_eq!(tokens_on_webgpu(&m, &greedy).await, want, "mixed on WebGPU");
}

/// q3 and q2 on WebGPU at odd shapes: the `test` shape (d_model 12, so every row is one short
/// block; dt_rank 3, d_state 11) with the shipped vocabulary, random weights, in q3, in q2 and
/// mixed (q2 with the embedding q3 and one expert f32), writes the wasm CPU's greedy tokens.
#[wasm_bindgen_test]
async fn q3_and_q2_at_odd_shapes_on_webgpu_write_the_cpu_tokens() {
    use itera_core::{format, Config, Precision, PrecisionMap, Weights};
    JsFuture::from(gpu_init())
        .await
        .map_err(js_message)
        .expect("WebGPU must be available");
    let c = Config {
        vocab_size: 4096,
        ..Config::preset("test").unwrap()
    };
    let w = Weights::init_random(&c, 11).unwrap();
    let mixed = PrecisionMap::from([
        ("embed".to_string(), Precision::Q3),
        ("layers.1.experts.0.w2".to_string(), Precision::F32),
    ]);
    let greedy = serde_json::json!({ "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0.0, "stop_at_end_of_text": false });
    for (label, file) in [
        ("q3", w.to_precision(Precision::Q3)),
        ("q2", w.to_precision(Precision::Q2)),
        ("mixed q2", w.to_precision_map(Precision::Q2, &mixed).unwrap()),
    ] {
        let mut m = Model::new(&format::save(&file).unwrap(), TOKENIZER)
            .map_err(message)
            .unwrap();
        m.enable_gpu().map_err(message).unwrap();
        let want = tokens_on_the_cpu(&mut m, &greedy);
        assert_eq!(tokens_on_webgpu(&m, &greedy).await, want, "{label} on WebGPU");
    }
}

/// One GPU training step on WebGPU against the CPU, plain and distilling: the odd-sized
/// `test` config (a dense and a MoE layer) gives the CPU's CE, KL and every gradient, so
/// every training kernel (shaders/train/) runs in the browser. Tolerance as natively
/// (crates/itera-core/tests/gpu_train.rs): 2e-5 + 2e-3 × the tensor's largest gradient.
#[wasm_bindgen_test]
async fn a_training_step_on_webgpu_gives_the_cpu_loss_and_gradients() {
    use itera_core::gpu::{train::GpuTrainer, Gpu};
    use itera_core::model::{forward, loss, BatchDims, Cache, LossWeights};
    use itera_core::train::StepConfig;
    use itera_core::{Config, Grads, Weights};

    let gpu = Gpu::new().await.expect("WebGPU must be available");
    let c = Config::preset("test").unwrap();
    let w = Weights::init_random(&c, 5).unwrap();
    let teacher = Weights::init_random(&c, 6).unwrap();
    let bd = BatchDims { batch: 2, t: 9 };
    let tokens: Vec<u32> = (0..bd.rows() as u32)
        .map(|i| (i * 7 + 3) % c.vocab_size as u32)
        .collect();
    for beta in [0.0, 0.6] {
        let cfg = StepConfig {
            batch: bd.batch,
            seq_len: bd.t,
            shards: 1,
            loss: LossWeights {
                aux_alpha: 0.01,
                distill_beta: beta,
                temperature: 2.0,
            },
            clip: 1.0,
            weight_decay: 0.01,
        };
        let mut tc = Cache::default();
        forward(&teacher, &tokens, bd, false, &mut tc).unwrap();
        let logits = (beta > 0.0).then_some(tc.logits.as_slice());
        let mut want = Grads::zeros(&w.table);
        let cpu = loss(
            &w,
            &tokens,
            bd,
            logits,
            cfg.loss,
            &mut Cache::default(),
            Some(&mut want),
        )
        .unwrap();
        let mut t = if beta > 0.0 {
            GpuTrainer::with_teacher(&gpu, &w, &teacher, cfg, Some(1)).unwrap()
        } else {
            GpuTrainer::new(&gpu, &w, cfg, Some(1)).unwrap()
        };
        let r = t.step(&gpu, &tokens, 1e-2).await.unwrap();
        assert!(
            (r.loss.ce - cpu.ce).abs() <= 1e-4 * cpu.ce,
            "β {beta}: CE {} vs {}",
            r.loss.ce,
            cpu.ce
        );
        assert!(
            (r.loss.kl - cpu.kl).abs() <= 1e-3 * cpu.kl.max(1e-3),
            "β {beta}: KL {} vs {}",
            r.loss.kl,
            cpu.kl
        );
        let got = t.gradients(&gpu).await.unwrap();
        for (slot, spec) in w.table.specs.iter().enumerate() {
            let (g, x) = (&got[slot], &want.tensors[slot]);
            let tol = 2e-5 + 2e-3 * x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // Written so that NaN fails too: only a value within the tolerance passes.
            let within = |i: usize| (g[i] - x[i]).abs() <= tol;
            let bad = (0..x.len()).find(|&i| !within(i));
            assert!(bad.is_none(), "β {beta}: {} differs at {bad:?}", spec.name);
        }
    }
}

#[wasm_bindgen_test]
async fn webgpu_calls_refuse_overlap_and_bad_requests_with_messages() {
    JsFuture::from(gpu_init()).await.map_err(js_message).unwrap();
    let m = Model::new(file("itera-micro-q8"), TOKENIZER).map_err(message).unwrap();
    let not_enabled = JsFuture::from(m.step_gpu(1)).await.unwrap_err();
    assert!(js_message(not_enabled).contains("enable_gpu"));
    m.enable_gpu().map_err(message).unwrap();
    let bad = JsFuture::from(m.start_gpu(js(&serde_json::json!({"max_tokens": 0}))))
        .await
        .unwrap_err();
    assert!(js_message(bad).contains("max_tokens"));
    let req = serde_json::json!({ "prompt": "A cat", "max_tokens": 40 });
    JsFuture::from(m.start_gpu(js(&req))).await.map_err(js_message).unwrap();
    let (first, second) = (m.step_gpu(8), m.step_gpu(8));
    JsFuture::from(first).await.map_err(js_message).unwrap();
    let busy = JsFuture::from(second).await.unwrap_err();
    assert!(js_message(busy).contains("busy"), "overlapping calls are refused");
}

fn web_sys_log(s: &str) {
    wasm_bindgen_test::console_log!("{s}");
}

#[wasm_bindgen_test]
fn comparison_and_evaluation_run_in_the_browser() {
    let mut reference = Model::new(file("itera-tiny-f32"), TOKENIZER).map_err(message).unwrap();
    let q8 = Model::new(file("itera-tiny-q8"), TOKENIZER).map_err(message).unwrap();
    let req = serde_json::json!({ "prompt": "The cat", "max_tokens": 20, "stop_at_end_of_text": false });
    tokens_on_the_cpu(&mut reference, &req);
    let c = value(
        compare(&reference, &q8, &reference.sequence(), reference.prompt_len())
            .map_err(message)
            .unwrap(),
    );
    assert_eq!(c["positions"], 20);
    assert!(c["top1_agreement"].as_f64().unwrap() > 0.8, "{c}");
    let e = value(q8.eval("One day a dog ran to the park.").map_err(message).unwrap());
    assert!(e["bits_per_byte"].as_f64().unwrap() > 0.5, "{e}");
}

/// The wasm SIMD128 q8 kernel against the portable loop, on shapes that are not multiples of
/// the 32-value group or the 4-lane vector.
#[wasm_bindgen_test]
fn simd_q8_matvec_matches_the_portable_kernel_on_odd_shapes() {
    use itera_core::kernels::{matvec_q8, matvec_q8_portable};
    use itera_core::precision::groups_per_row;
    use itera_core::rng::Pcg32;
    let mut rng = Pcg32::new(3);
    for (rows, cols) in [(1, 1), (3, 31), (7, 33), (13, 77), (5, 128), (2, 4099)] {
        let q: Vec<i8> = (0..rows * cols).map(|_| rng.below(255) as i8).collect();
        let scale: Vec<half::f16> = (0..rows * groups_per_row(cols))
            .map(|_| half::f16::from_f32(rng.next_f32() * 0.02))
            .collect();
        let x: Vec<f32> = (0..cols).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        let (mut simd, mut reference) = (vec![0.0; rows], vec![0.0; rows]);
        matvec_q8(&q, &scale, cols, &x, &mut simd);
        matvec_q8_portable(&q, &scale, cols, &x, &mut reference);
        for (a, b) in simd.iter().zip(&reference) {
            assert!((a - b).abs() <= 1e-5 + 1e-5 * b.abs(), "{rows}×{cols}: {a} vs {b}");
        }
    }
}

/// The wasm SIMD128 q3 / q2 kernels against the portable loop, bit for bit (the same lanes in
/// the same order), on shapes that are not multiples of the 32-value block.
#[wasm_bindgen_test]
fn simd_q3_and_q2_matvecs_equal_the_portable_kernels_bit_for_bit() {
    use itera_core::kernels::{matvec_q2, matvec_q2_portable, matvec_q3, matvec_q3_portable};
    use itera_core::matrix::{Matrix, MatrixData};
    use itera_core::rng::Pcg32;
    use itera_core::Precision;
    let mut rng = Pcg32::new(5);
    for (rows, cols) in [(1, 1), (3, 31), (7, 33), (13, 77), (5, 128), (2, 4099)] {
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
        let x: Vec<f32> = (0..cols).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        let (mut simd, mut reference) = (vec![0.0f32; rows], vec![0.0f32; rows]);
        for p in [Precision::Q3, Precision::Q2] {
            match Matrix::from_f32(rows, cols, w.clone()).to_precision(p).data {
                MatrixData::Q3 { q, scale } => {
                    matvec_q3(&q, &scale, cols, &x, &mut simd);
                    matvec_q3_portable(&q, &scale, cols, &x, &mut reference);
                }
                MatrixData::Q2 { q, scale, min } => {
                    matvec_q2(&q, &scale, &min, cols, &x, &mut simd);
                    matvec_q2_portable(&q, &scale, &min, cols, &x, &mut reference);
                }
                _ => unreachable!(),
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&simd), bits(&reference), "{p} {rows}×{cols}");
        }
    }
}

/// The wasm SIMD128 f32, f16 and q4 kernels against the portable loops, bit for bit (the same
/// 16 lanes in the same order), on shapes with and without a partial last group.
#[wasm_bindgen_test]
fn simd_f32_f16_and_q4_matvecs_equal_the_portable_kernels_bit_for_bit() {
    use itera_core::kernels::{
        matvec_f16, matvec_f16_portable, matvec_f32, matvec_f32_portable, matvec_q4, matvec_q4_portable,
    };
    use itera_core::matrix::{Matrix, MatrixData};
    use itera_core::rng::Pcg32;
    use itera_core::Precision;
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    let mut rng = Pcg32::new(9);
    for (rows, cols) in [(1, 1), (3, 15), (3, 31), (7, 33), (13, 77), (5, 128), (2, 4099)] {
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
        let x: Vec<f32> = (0..cols).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        let (mut simd, mut reference) = (vec![0.0f32; rows], vec![0.0f32; rows]);
        matvec_f32(&w, cols, &x, &mut simd);
        matvec_f32_portable(&w, cols, &x, &mut reference);
        assert_eq!(bits(&simd), bits(&reference), "f32 {rows}×{cols}");
        let h: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
        matvec_f16(&h, cols, &x, &mut simd);
        matvec_f16_portable(&h, cols, &x, &mut reference);
        assert_eq!(bits(&simd), bits(&reference), "f16 {rows}×{cols}");
        let MatrixData::Q4 { q, scale } = Matrix::from_f32(rows, cols, w).to_precision(Precision::Q4).data else {
            unreachable!()
        };
        let xe: Vec<f32> = x.iter().step_by(2).copied().collect();
        let xo: Vec<f32> = x.iter().skip(1).step_by(2).copied().collect();
        matvec_q4(&q, &scale, cols, &xe, &xo, &mut simd);
        matvec_q4_portable(&q, &scale, cols, &xe, &xo, &mut reference);
        assert_eq!(bits(&simd), bits(&reference), "q4 {rows}×{cols}");
    }
}

/// The SIMD128 f16 kernel converts every half as `f16_to_f32` does (normals, subnormals, ±0,
/// ±∞, NaNs): row r of a 65,536 × 16 matrix holds half r in lane r % 16 and zeros elsewhere,
/// so W·1 reads each value back through the vector conversion.
#[wasm_bindgen_test]
fn simd_f16_kernel_converts_every_half_exactly() {
    use itera_core::kernels::{f16_to_f32, matvec_f16};
    const COLS: usize = 16;
    let rows = 1 << 16;
    let mut w = vec![half::f16::ZERO; rows * COLS];
    for r in 0..rows {
        w[r * COLS + r % COLS] = half::f16::from_bits(r as u16);
    }
    let mut y = vec![0.0f32; rows];
    matvec_f16(&w, COLS, &[1.0; COLS], &mut y);
    for (r, got) in y.iter().enumerate() {
        let want = f16_to_f32(half::f16::from_bits(r as u16));
        // −0 comes back as +0 once the other lanes' zeros are added: compare values.
        assert!(
            *got == want || (got.is_nan() && want.is_nan()),
            "half {r:#06x}: {got} vs {want}"
        );
    }
}

#[wasm_bindgen_test]
fn malformed_input_is_a_js_error_with_a_clear_message() {
    let model = file("itera-micro-q8");
    let err = message(Model::new(b"definitely not safetensors", TOKENIZER).err().unwrap());
    assert!(err.contains("safetensors"), "{err}");
    let err = message(Model::new(&model[..model.len() - 100], TOKENIZER).err().unwrap());
    assert!(err.contains("safetensors"), "{err}");
    let err = message(Model::new(model, b"[1, 2]").err().unwrap());
    assert!(err.contains("tokenizer"), "{err}");
    let mut m = Model::new(model, TOKENIZER).map_err(message).unwrap();
    let err = message(
        m.start(js(&serde_json::json!({"max_tokens": 5, "colour": "red"})))
            .err()
            .unwrap(),
    );
    assert!(err.contains("colour"), "{err}");
    let err = message(
        m.start(js(&serde_json::json!({"max_tokens": 5, "top_p": 2})))
            .err()
            .unwrap(),
    );
    assert!(err.contains("top_p"), "{err}");
    let err = message(m.step(1).err().unwrap());
    assert!(err.contains("start"), "{err}");
}

/// The prompt limits as the page meets them, with the heap counted: a prompt of the most tokens
/// accepted generates within the same fixed bound as natively (tests/prompt_memory.rs in the
/// core), and the 65,536-byte prompt of one token a byte is refused with a message.
#[wasm_bindgen_test]
fn the_longest_prompt_runs_in_bounded_memory_and_a_longer_one_is_refused() {
    use itera_core::generate::{MAX_PROMPT_BYTES, MAX_PROMPT_TOKENS};
    let mut m = Model::new(file("itera-tiny-q8"), TOKENIZER).map_err(message).unwrap();
    let mut run = |prompt: String| {
        let req = serde_json::json!({ "prompt": prompt, "max_tokens": 1, "stop_at_end_of_text": false });
        m.start(js(&req)).map_err(message)?;
        let out = value(m.step(1).map_err(message)?);
        Ok::<usize, String>(out["tokens"].as_array().unwrap().len())
    };
    let started = js_sys::Date::now();
    let (peak, generated) = peak_heap::peak_of(|| run("🦀".repeat(MAX_PROMPT_TOKENS / 4)));
    let took = js_sys::Date::now() - started;
    assert_eq!(generated, Ok(1));
    let (refused_peak, refused) = peak_heap::peak_of(|| run("🦀".repeat(MAX_PROMPT_BYTES / 4)));
    let err = refused.unwrap_err();
    assert!(err.contains(&format!("at most {MAX_PROMPT_TOKENS} tokens")), "{err}");
    web_sys_log(&format!(
        "peak heap in wasm: a {MAX_PROMPT_TOKENS}-token prompt {:.1} MiB ({:.1} s); {MAX_PROMPT_BYTES} bytes \
         refused ({err}) {:.1} MiB",
        peak as f64 / (1 << 20) as f64,
        took / 1e3,
        refused_peak as f64 / (1 << 20) as f64
    ));
    for peak in [peak, refused_peak] {
        assert!(peak < peak_heap::BOUND, "peaked at {peak} bytes");
    }
}

/// The wasm SIMD128 scan lanes against the portable loops, bit for bit, forward and backward,
/// on a state size with an 8-lane chunk and a scalar tail (N = 11) and one of two chunks (16).
#[wasm_bindgen_test]
fn simd_scan_matches_the_portable_scan_bit_for_bit() {
    use itera_core::layers::scan::{
        scan_backward, scan_backward_portable, scan_forward, scan_forward_portable, ScanDims,
    };
    use itera_core::rng::Pcg32;
    let mut rng = Pcg32::new(8);
    for n in [11, 16] {
        let (batch, t, di) = (2, 5, 7);
        let d = ScanDims {
            batch,
            t,
            di,
            n,
            bc_stride: 2 * n + 3,
            b_off: 3,
            c_off: 3 + n,
        };
        let mut v = |len: usize, scale: f32| {
            (0..len)
                .map(|_| scale * (rng.next_f32() * 2.0 - 1.0))
                .collect::<Vec<f32>>()
        };
        let rows = batch * t;
        let (u, bc, dy) = (v(rows * di, 1.0), v(rows * d.bc_stride, 1.0), v(rows * di, 1.0));
        let dt: Vec<f32> = v(rows * di, 1.0).iter().map(|x| 0.05 + 0.1 * x.abs()).collect();
        let a: Vec<f32> = v(di * n, 1.0).iter().map(|x| -0.2 - x.abs()).collect();
        let d_skip = v(di, 1.0);
        let forward = |simd: bool| {
            let (mut y, mut h_all, mut h_last) = (
                vec![0.0; rows * di],
                vec![0.0; rows * di * n],
                vec![0.0; batch * di * n],
            );
            let f = if simd { scan_forward } else { scan_forward_portable };
            f(&mut y, Some(&mut h_all), &mut h_last, &u, &dt, &a, &bc, &d_skip, d);
            (y, h_all, h_last)
        };
        let (fast, slow) = (forward(true), forward(false));
        assert!(fast == slow, "N = {n}: forward differs");
        let backward = |simd: bool| {
            let mut g = [
                vec![0.0; rows * di],
                vec![0.0; rows * di],
                vec![0.0; di * n],
                vec![0.0; rows * d.bc_stride],
                vec![0.0; di],
            ];
            let [du, ddt, da, dbc, dds] = &mut g;
            let f = if simd { scan_backward } else { scan_backward_portable };
            f(
                du,
                ddt,
                da,
                dbc,
                dds,
                &dy,
                &u,
                &dt,
                &a,
                &bc,
                &d_skip,
                &fast.1,
                d,
                &mut Default::default(),
            );
            g
        };
        assert!(backward(true) == backward(false), "N = {n}: backward differs");
    }
}
