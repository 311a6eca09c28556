//! The training job in headless Chromium (wasm-bindgen-test; run by `cargo xtask test`): a
//! fine-tune's steps use the native job's batches and follow its losses
//! (tests/golden/fine-tune-curve.json, written by tests/native_train.rs), a pool of N
//! `ShardWorker`s gives the 1-worker step bit for bit, a checkpoint resumes on the same
//! steps, WebGPU steps follow the CPU's, and bad settings or texts are a `JsError` that names
//! the problem.
//!
//! Tolerances: wasm SIMD128 and native AVX2 round differently, so browser losses follow the
//! native ones within 1e-3 relative (measured: printed by the test); WebGPU's within 2e-2
//! relative, as natively (crates/itera-core/tests/gpu_train.rs).
#![cfg(target_arch = "wasm32")]

mod fine_tune_fixture;

use fine_tune_fixture::{distill_corpus, fnv, spec};
use itera_core::train::TrainSpec;
use itera_core::Config;
use itera_web::gpu_init;
use itera_web::training::{fine_tune_defaults, train_limits, ShardWorker, StoryWriter, TextTokens, TrainingJob};
use js_sys::{Array, Float32Array, Function, Promise, Reflect, Uint32Array, Uint8Array};
use serde_json::Value;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const MICRO_Q8: &[u8] = include_bytes!("../../../weights/itera-micro-q8.safetensors");
const TOKENIZER: &[u8] = include_bytes!("../../../weights/tokenizer.json");
const STORIES: &[u8] = include_bytes!("../../../web/finetune-stories.txt");
const GOLDEN: &str = include_str!("../../../tests/golden/fine-tune-curve.json");
const TINY_Q8: &[u8] = include_bytes!("../../../weights/itera-tiny-q8.safetensors");
const DISTILL_GOLDEN: &str = include_str!("../../../tests/golden/distill-curve.json");
const TRANSFORMER_MICRO_Q8: &[u8] = include_bytes!("../../../weights/transformer-micro-q8.safetensors");
const TRANSFORMER_GOLDEN: &str = include_str!("../../../tests/golden/fine-tune-curve-transformer.json");

fn js(v: &Value) -> JsValue {
    js_sys::JSON::parse(&v.to_string()).unwrap()
}

fn value(v: &JsValue) -> Value {
    serde_json::from_str(&String::from(js_sys::JSON::stringify(v).unwrap())).unwrap()
}

fn message(e: JsError) -> String {
    js_sys::Error::from(JsValue::from(e)).message().into()
}

fn js_message(e: JsValue) -> String {
    js_sys::Error::from(e).message().into()
}

fn texts(bytes: &[u8]) -> JsValue {
    let item = js_sys::Object::new();
    Reflect::set(&item, &"name".into(), &"finetune-stories.txt".into()).unwrap();
    Reflect::set(&item, &"bytes".into(), &Uint8Array::from(bytes)).unwrap();
    Array::of1(&item).into()
}

/// The texts prepared as the page's worker prepares them (cut, held out, tokenized).
fn prepared(texts: JsValue) -> Result<TextTokens, JsError> {
    TextTokens::new(texts, TOKENIZER, None)
}

/// A fine-tune of `base` on `texts`, as the page starts one.
fn fine_tune(base: &[u8], texts: JsValue, settings: JsValue, name: &str) -> Result<TrainingJob, JsError> {
    TrainingJob::new(base, &mut prepared(texts)?, settings, name)
}

fn new_job(spec: &TrainSpec) -> TrainingJob {
    let settings = js(&serde_json::to_value(spec).unwrap());
    fine_tune(MICRO_Q8, texts(STORIES), settings, "itera-micro-q8")
        .map_err(message)
        .unwrap()
}

/// Advances to the end; returns every event and the last checkpoint's bytes.
async fn run(job: &TrainingJob, steps_per_slice: u32) -> (Vec<Value>, Option<Vec<u8>>) {
    let mut events = Vec::new();
    let mut checkpoint = None;
    loop {
        let out = JsFuture::from(job.advance(steps_per_slice, 1e9))
            .await
            .map_err(js_message)
            .unwrap();
        let v = value(&out);
        assert!(v["error"].is_null(), "{}", v["error"]);
        if let Ok(c) = Reflect::get(&out, &"checkpoint".into())
            .unwrap()
            .dyn_into::<Uint8Array>()
        {
            checkpoint = Some(c.to_vec());
        }
        events.extend(v["events"].as_array().unwrap().iter().cloned());
        if events.iter().any(|e| e["type"] == "done") {
            return (events, checkpoint);
        }
    }
}

fn losses(job: &TrainingJob) -> Vec<f32> {
    let h = job.history().map_err(message).unwrap();
    Float32Array::from(Reflect::get(&h, &"loss".into()).unwrap()).to_vec()
}

/// The job draws the native run's batches (their FNV-1a hashes in `golden`).
fn assert_native_batches(job: &TrainingJob, golden: &Value) {
    for (s, want) in golden["batches_fnv1a"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            fnv(&job.batch_tokens(s as u32).unwrap()),
            want.as_str().unwrap(),
            "step {s}'s batch"
        );
    }
}

/// Largest |a − b| / |b| over the steps' loss parts.
fn worst_relative(events: &[Value], golden: &Value) -> f64 {
    let steps: Vec<&Value> = events.iter().filter(|e| e["type"] == "step").collect();
    let want = golden["steps"].as_array().unwrap();
    assert_eq!(steps.len(), want.len());
    let mut worst = 0.0f64;
    for (got, want) in steps.iter().zip(want) {
        for key in ["loss", "ce", "aux"] {
            let (a, b) = (got[key].as_f64().unwrap(), want[key].as_f64().unwrap());
            worst = worst.max((a - b).abs() / b.abs());
        }
    }
    worst
}

#[wasm_bindgen_test]
async fn browser_steps_use_the_native_batches_and_follow_its_losses() {
    let golden: Value = serde_json::from_str(GOLDEN).unwrap();
    let job = new_job(&spec());
    assert_native_batches(&job, &golden);
    let (events, _) = run(&job, 2).await;
    let worst = worst_relative(&events, &golden);
    console_log!("browser vs native losses: worst relative difference {worst:.2e} over 6 steps");
    assert!(worst < 1e-3, "{worst}");
    let evals: Vec<&Value> = events.iter().filter(|e| e["type"] == "eval").collect();
    for (got, want) in evals.iter().zip(golden["evals"].as_array().unwrap()) {
        for (g, w) in got["results"]
            .as_array()
            .unwrap()
            .iter()
            .zip(want["results"].as_array().unwrap())
        {
            let (a, b) = (
                g["bits_per_byte"].as_f64().unwrap(),
                w["bits_per_byte"].as_f64().unwrap(),
            );
            assert!((a - b).abs() < 1e-3 * b, "{}: BPB {a} vs native {b}", w["name"]);
        }
    }
}

/// A pool whose `k` ShardWorkers (holding `teacher`'s weights when the job distils) take the
/// shards round-robin, as the page's workers do.
fn pool(job: &TrainingJob, k: usize, teacher: Option<&[u8]>) -> Function {
    let setup = job.shard_setup().map_err(message).unwrap();
    let mut workers: Vec<ShardWorker> = (0..k)
        .map(|_| {
            ShardWorker::new(setup.clone(), teacher.map(<[u8]>::to_vec))
                .map_err(message)
                .unwrap()
        })
        .collect();
    let compute =
        Closure::<dyn FnMut(Float32Array, Array) -> Promise>::new(move |weights: Float32Array, shards: Array| {
            let weights = weights.to_vec();
            let results: Array = shards
                .iter()
                .enumerate()
                .map(|(i, tokens)| {
                    let tokens = Uint32Array::from(tokens).to_vec();
                    workers[i % k].gradients(&weights, &tokens).map_err(message).unwrap()
                })
                .collect();
            Promise::resolve(&JsValue::from(results))
        });
    compute.into_js_value().unchecked_into()
}

#[wasm_bindgen_test]
async fn n_workers_give_the_one_worker_step_bit_for_bit() {
    let spec = TrainSpec { shards: 4, ..spec() };
    let mut runs = Vec::new();
    for k in [0, 1, 2, 4] {
        let job = new_job(&spec);
        if k > 0 {
            job.use_workers(pool(&job, k, None), k as u32).unwrap();
        }
        run(&job, 3).await;
        let file = JsFuture::from(job.export("f32".into())).await.unwrap();
        // The tensors, not the file: its summary records the seconds each run took.
        let weights = itera_core::format::load(&Uint8Array::from(file).to_vec())
            .unwrap()
            .tensors;
        runs.push((k, losses(&job), weights));
    }
    let (_, want_loss, want_weights) = &runs[0];
    for (k, loss, weights) in &runs[1..] {
        let same_bits = loss.iter().zip(want_loss).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same_bits && loss.len() == 6, "{k} workers: {loss:?} vs {want_loss:?}");
        assert!(weights == want_weights, "{k} workers: the weights differ");
    }
}

#[wasm_bindgen_test]
async fn a_checkpoint_resumes_on_the_same_steps() {
    let straight = new_job(&spec());
    run(&straight, 6).await;
    let first = new_job(&spec());
    // A slice ends before an evaluation: the first at step 3, the second evaluates and
    // checkpoints step 3 (then takes step 4).
    JsFuture::from(first.advance(3, 1e9)).await.unwrap();
    assert_eq!(value(&first.info().unwrap())["completed"], 3);
    let out = JsFuture::from(first.advance(1, 1e9)).await.unwrap();
    let bytes = Uint8Array::from(Reflect::get(&out, &"checkpoint".into()).unwrap()).to_vec();
    let resumed = TrainingJob::resume(&bytes, &mut prepared(texts(STORIES)).unwrap())
        .map_err(message)
        .unwrap();
    assert_eq!(value(&resumed.info().unwrap())["completed"], 3);
    run(&resumed, 2).await;
    let (a, b) = (losses(&straight), losses(&resumed));
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()) && b.len() == 6,
        "{a:?} vs {b:?}"
    );
    // The current weights as a Model for generation, in a quantized precision.
    let model = JsFuture::from(resumed.model("q8".into()))
        .await
        .map_err(js_message)
        .unwrap();
    let info: Function = Reflect::get(&model, &"info".into()).unwrap().dyn_into().unwrap();
    let info = value(&info.call0(&model).unwrap());
    assert_eq!(info["precision"], "q8", "{info}");
    // On other text it is refused.
    let other = texts(b"A different story about a cat who liked to sleep in the sun all day long.");
    let err = message(
        TrainingJob::resume(&bytes, &mut prepared(other).unwrap())
            .err()
            .unwrap(),
    );
    assert!(err.contains("same text"), "{err}");
}

#[wasm_bindgen_test]
async fn webgpu_steps_follow_the_cpu() {
    JsFuture::from(gpu_init())
        .await
        .map_err(js_message)
        .expect("WebGPU (see webdriver.json)");
    let golden: Value = serde_json::from_str(GOLDEN).unwrap();
    let job = new_job(&spec());
    job.use_gpu().map_err(message).unwrap();
    assert!(
        job.backend().unwrap().starts_with("WebGPU"),
        "{}",
        job.backend().unwrap()
    );
    let (events, _) = run(&job, 6).await;
    let worst = worst_relative(&events, &golden);
    console_log!("WebGPU vs native CPU losses: worst relative difference {worst:.2e} over 6 steps");
    assert!(worst < 2e-2, "{worst}");
}

/// WebGPU lost mid-job (the device destroyed, as a driver reset would): the step fails with
/// a GPU error, not a divergence; the job rolls back to the last state read back (the
/// checkpoint at step 3), the CPU takes the rest, and no step is missing from the curves.
/// `gpu_init` then opens a new device instead of handing back the dead one.
#[wasm_bindgen_test]
async fn a_lost_webgpu_device_continues_on_the_cpu() {
    JsFuture::from(gpu_init())
        .await
        .map_err(js_message)
        .expect("WebGPU (see webdriver.json)");
    let golden: Value = serde_json::from_str(GOLDEN).unwrap();
    let job = new_job(&spec());
    job.use_gpu().map_err(message).unwrap();
    // Steps 1–3, then (the slice ends before the evaluation) the evaluation and checkpoint of
    // step 3 and step 4.
    for steps in [4, 1] {
        let out = value(&JsFuture::from(job.advance(steps, 1e9)).await.unwrap());
        assert!(out["error"].is_null(), "{}", out["error"]);
    }
    assert_eq!(value(&job.info().unwrap())["completed"], 4);
    itera_web::worker_device().unwrap().device.destroy();
    let out = value(&JsFuture::from(job.advance(1, 1e9)).await.unwrap());
    assert!(out["error"].as_str().is_some_and(|e| e.contains("GPU")), "{out}");
    assert_eq!(out["diverged"], false);
    assert_eq!(
        job.roll_back().unwrap(),
        3,
        "the checkpoint at step 3 was the last read-back"
    );
    assert!(job.backend().unwrap().contains("CPU"), "{}", job.backend().unwrap());
    let (events, _) = run(&job, 6).await;
    let steps: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "step")
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [4, 5, 6], "the CPU re-runs step 4 and goes on");
    let loss = losses(&job);
    assert_eq!(loss.len(), 6);
    for (got, want) in loss.iter().zip(golden["steps"].as_array().unwrap()) {
        let want = want["loss"].as_f64().unwrap();
        assert!((*got as f64 - want).abs() < 2e-2 * want, "{got} vs {want}");
    }
    let again = JsFuture::from(gpu_init())
        .await
        .map_err(js_message)
        .expect("a new device");
    assert!(itera_web::worker_device().unwrap().check().is_ok(), "{again:?}");
}

/// The Transformer fine-tunes in the page like the SSM + MoE model: the native job's batches
/// and losses (tests/golden/fine-tune-curve-transformer.json), two pool workers bit for bit
/// as one, and WebGPU refused by name (its steps run on the CPU).
#[wasm_bindgen_test]
async fn a_transformer_fine_tunes_as_natively_on_one_worker_or_two() {
    let golden: Value = serde_json::from_str(TRANSFORMER_GOLDEN).unwrap();
    let settings = || js(&serde_json::to_value(spec()).unwrap());
    let new = || {
        fine_tune(TRANSFORMER_MICRO_Q8, texts(STORIES), settings(), "transformer-micro-q8")
            .map_err(message)
            .unwrap()
    };
    let job = new();
    let info = value(&job.info().unwrap());
    assert_eq!(
        (info["family"].as_str(), info["webgpu"].as_bool()),
        (Some("transformer"), Some(false))
    );
    assert_native_batches(&job, &golden);
    let (events, _) = run(&job, 2).await;
    let worst = worst_relative(&events, &golden);
    console_log!("Transformer: browser vs native losses: worst relative difference {worst:.2e} over 6 steps");
    assert!(worst < 1e-3, "{worst}");
    let pooled = new();
    pooled.use_workers(pool(&pooled, 2, None), 2).unwrap();
    run(&pooled, 3).await;
    let (a, b) = (losses(&job), losses(&pooled));
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()) && a.len() == 6,
        "{a:?} vs {b:?}"
    );
    if JsFuture::from(gpu_init()).await.is_ok() {
        let e = message(job.use_gpu().err().expect("refused"));
        assert!(e.contains("WebGPU training is for SSM + MoE models"), "{e}");
    }
    let file = Uint8Array::from(JsFuture::from(job.export("q8".into())).await.unwrap()).to_vec();
    let w = itera_core::format::load_as::<itera_core::Transformer>(&file).unwrap();
    assert_eq!(w.precision, itera_core::Precision::Q8);
}

#[wasm_bindgen_test]
fn defaults_and_limits_come_from_the_core() {
    let defaults: TrainSpec = serde_json::from_value(value(&fine_tune_defaults().unwrap())).unwrap();
    assert_eq!(defaults, TrainSpec::FINE_TUNE);
    let limits = value(&train_limits().unwrap());
    let lr = limits["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "lr")
        .unwrap();
    assert_eq!((lr["min"].as_f64(), lr["max"].as_f64()), (Some(1e-7), Some(1.0)));
}

#[wasm_bindgen_test]
fn bad_settings_and_texts_are_js_errors_that_name_the_problem() {
    let with = |patch: Value| {
        let mut s = serde_json::to_value(spec()).unwrap();
        for (k, v) in patch.as_object().unwrap() {
            s[k] = v.clone();
        }
        js(&s)
    };
    let refuse = |base: &[u8], texts: JsValue, settings: JsValue| {
        message(fine_tune(base, texts, settings, "base").err().expect("refused"))
    };
    let cases = [
        (with(serde_json::json!({"lr": 5})), "lr = 5"),
        (with(serde_json::json!({"steps": 0})), "steps"),
        (with(serde_json::json!({"seq_len": "long"})), "invalid type"),
        (with(serde_json::json!({"colour": "red"})), "colour"),
        (with(serde_json::json!({"batch": 1, "shards": 2})), "shards"),
    ];
    for (settings, want) in cases {
        let r = fine_tune(MICRO_Q8, texts(STORIES), settings, "base");
        let e = message(r.err().unwrap_or_else(|| panic!("{want}: accepted")));
        assert!(e.contains(want), "{want}: {e}");
    }
    let ok = || js(&serde_json::to_value(spec()).unwrap());
    let e = refuse(MICRO_Q8, texts(b" \n\n "), ok());
    assert!(e.contains("no words"), "{e}");
    let e = refuse(MICRO_Q8, texts(b"Once \xff upon"), ok());
    assert!(e.contains("not UTF-8"), "{e}");
    let e = refuse(MICRO_Q8, texts(b"Too short."), ok());
    assert!(e.contains("seq_len"), "{e}");
    let e = refuse(b"not a model", texts(STORIES), ok());
    assert!(e.contains("safetensors"), "{e}");
    let e = refuse(MICRO_Q8, JsValue::from("just a string"), ok());
    assert!(e.contains("array"), "{e}");
}

fn tiny_teacher() -> JsValue {
    let t = js_sys::Object::new();
    Reflect::set(&t, &"kind".into(), &"model".into()).unwrap();
    Reflect::set(&t, &"bytes".into(), &Uint8Array::from(TINY_Q8)).unwrap();
    t.into()
}

/// The page's distillation in Chromium: itera-tiny q8 writes the fixture's stories (the same
/// text unless float rounding flips a sampled token: counted and printed), and the logit
/// distillation of a fresh micro student on the fixture's corpus follows `xtask distill`'s
/// steps (tests/golden/distill-curve.json) within 1e-3 relative — on this worker's CPU and,
/// bit for bit the same, on two ShardWorkers holding the teacher.
#[wasm_bindgen_test]
async fn a_distillation_follows_xtask_distill_and_the_teacher_writes_the_same_stories() {
    let golden: Value = serde_json::from_str(DISTILL_GOLDEN).unwrap();
    let settings = js(&serde_json::to_value(distill_corpus()).unwrap());
    let writer = StoryWriter::new(tiny_teacher(), TOKENIZER, settings)
        .map_err(message)
        .unwrap();
    let want = golden["stories"].as_array().unwrap();
    let same = want
        .iter()
        .enumerate()
        .filter(|(i, w)| value(&writer.story(*i as u32).unwrap())["text"] == **w)
        .count();
    console_log!("the teacher wrote {same} of {} stories exactly as natively", want.len());
    assert!(same * 10 >= want.len() * 8, "{same} of {}", want.len());

    let student = js(&serde_json::json!({ "config": Config::preset("micro").unwrap() }));
    let corpus = golden["corpus"].as_str().unwrap();
    let none = JsValue::from(Array::new());
    let make = || {
        TrainingJob::distill(
            student.clone(),
            tiny_teacher(),
            "itera-tiny-q8",
            corpus,
            none.clone(),
            TOKENIZER,
            js(&golden["spec"]),
        )
        .map_err(message)
        .unwrap()
    };
    let job = make();
    assert_eq!(value(&job.info().unwrap())["mode"], "logits");
    let (events, _) = run(&job, 3).await;
    let worst = worst_relative(&events, &golden);
    console_log!("browser vs xtask distill: worst relative difference {worst:.2e} over 6 steps");
    assert!(worst < 1e-3, "{worst}");
    let kl: Vec<f64> = events
        .iter()
        .filter(|e| e["type"] == "step")
        .map(|e| e["kl"].as_f64().unwrap())
        .collect();
    assert!(kl[0] > 0.0 && kl[5] < kl[0], "{kl:?}");

    let pooled = make();
    let setup = pooled.shard_setup().unwrap();
    pooled.use_workers(pool(&pooled, 2, Some(TINY_Q8)), 2).unwrap();
    run(&pooled, 3).await;
    let (a, b) = (losses(&job), losses(&pooled));
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "{a:?} vs {b:?}"
    );
    // A pool that distils needs the teacher.
    let e = message(ShardWorker::new(setup, None).err().unwrap());
    assert!(e.contains("teacher"), "{e}");
}
