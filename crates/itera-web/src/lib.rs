//! itera-web: the thin wasm-bindgen API the playground's Web Worker calls.
//!
//! Everything model-related lives in [`engine`] as plain Rust; this file only converts:
//! bytes and JSON strings in, JSON strings out, every error a `JsError` with the core crate's
//! message. Results are JSON (parsed by the worker) rather than JS objects so the API stays
//! small and identical for every caller. A panic would be a bug: the hook prints it to the
//! console instead of an opaque `unreachable`.

pub mod engine;
pub mod gpu_engine;

use std::cell::RefCell;
use std::rc::Rc;

use engine::{Engine, GenerateRequest};
use gpu_engine::GpuEngine;
use itera_core::gpu::Gpu;
use js_sys::Promise;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

fn js_error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

fn to_json(value: &impl serde::Serialize) -> Result<String, JsError> {
    serde_json::to_string(value).map_err(js_error)
}

fn parse_request(request_json: &str) -> Result<GenerateRequest, JsError> {
    serde_json::from_str(request_json).map_err(|e| js_error(format!("generation settings: {e}")))
}

thread_local! {
    /// The worker's one WebGPU device, shared by every model (None until `gpu_init`).
    static GPU: RefCell<Option<Rc<Gpu>>> = const { RefCell::new(None) };
}

/// Opens WebGPU (once per worker); resolves to the adapter's description, rejects with the
/// reason when there is no usable adapter.
#[wasm_bindgen]
pub fn gpu_init() -> Promise {
    future_to_promise(async {
        if let Some(gpu) = GPU.with(|g| g.borrow().clone()) {
            return Ok(JsValue::from(gpu.describe()));
        }
        let gpu = Gpu::new().await.map_err(|e| JsValue::from(js_error(e)))?;
        let description = gpu.describe();
        GPU.with(|g| *g.borrow_mut() = Some(Rc::new(gpu)));
        Ok(JsValue::from(description))
    })
}

/// A loaded model and its tokenizer; holds at most one generation in progress per backend.
#[wasm_bindgen]
pub struct Model {
    engine: Engine,
    /// The same model on WebGPU, after `enable_gpu`. Shared with the pending promise of a
    /// GPU call (the browser delivers read-backs asynchronously).
    gpu: Rc<RefCell<Option<GpuEngine>>>,
}

/// Runs `f` on the model's GPU engine inside a promise; a second call while one is pending
/// is refused with a clear message (never a RefCell panic).
fn with_gpu_engine<F, Fut>(cell: &Rc<RefCell<Option<GpuEngine>>>, f: F) -> Promise
where
    F: FnOnce(Rc<RefCell<Option<GpuEngine>>>) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<JsValue, JsError>> + 'static,
{
    let cell = cell.clone();
    future_to_promise(async move { f(cell).await.map_err(JsValue::from) })
}

/// Borrows the GPU engine for the whole call, across its awaits: that is the point — a second
/// call while this one waits on the GPU finds the borrow taken and is refused.
macro_rules! gpu_engine {
    ($cell:expr, $guard:ident) => {
        let mut $guard = $cell
            .try_borrow_mut()
            .map_err(|_| js_error("the GPU is busy with another request of this model"))?;
        let Some($guard) = $guard.as_mut() else {
            return Err(js_error("WebGPU is not enabled for this model (call enable_gpu first)"));
        };
    };
}

#[wasm_bindgen]
impl Model {
    /// Loads a safetensors weight file (any precision) and the `tokenizer.json` it was trained with.
    #[wasm_bindgen(constructor)]
    pub fn new(model_bytes: &[u8], tokenizer_json: &[u8]) -> Result<Model, JsError> {
        let engine = Engine::load(model_bytes, tokenizer_json).map_err(js_error)?;
        Ok(Model {
            engine,
            gpu: Rc::new(RefCell::new(None)),
        })
    }

    /// JSON: precision, parameter counts, weight bytes, shape, MoE layers.
    pub fn info(&self) -> Result<String, JsError> {
        to_json(&self.engine.info())
    }

    /// Starts a generation from a JSON request (`prompt`, `max_tokens`, `temperature`, `top_k`,
    /// `top_p`, `seed`, `stop_at_end_of_text`); runs the prompt and returns its token count.
    pub fn start(&mut self, request_json: &str) -> Result<u32, JsError> {
        let n = self.engine.start(&parse_request(request_json)?).map_err(js_error)?;
        Ok(n as u32)
    }

    /// Generates up to `n` more tokens; JSON `{text, tokens, logprobs, routing, done}`.
    pub fn step(&mut self, n: u32) -> Result<String, JsError> {
        let out = self.engine.step(n as usize).map_err(js_error)?;
        to_json(&out)
    }

    /// Prompt + generated token ids of the current generation.
    pub fn sequence(&self) -> Vec<u32> {
        self.engine.sequence().0.to_vec()
    }

    /// Index of the first generated token in `sequence()`.
    pub fn prompt_len(&self) -> u32 {
        self.engine.sequence().1 as u32
    }

    /// Uploads this model to the worker's WebGPU device (after `gpu_init`).
    pub fn enable_gpu(&self) -> Result<(), JsError> {
        let gpu = GPU
            .with(|g| g.borrow().clone())
            .ok_or_else(|| js_error("WebGPU is not initialised (call gpu_init first)"))?;
        let engine = GpuEngine::new(gpu, &self.engine.weights, self.engine.tokenizer.clone()).map_err(js_error)?;
        let mut slot = self
            .gpu
            .try_borrow_mut()
            .map_err(|_| js_error("the GPU is busy with another request of this model"))?;
        *slot = Some(engine);
        Ok(())
    }

    /// `start` on WebGPU; resolves to the number of prompt tokens.
    #[allow(clippy::await_holding_refcell_ref)] // see gpu_engine!
    pub fn start_gpu(&self, request_json: &str) -> Promise {
        let req = parse_request(request_json);
        with_gpu_engine(&self.gpu, |cell| async move {
            let req = req?;
            gpu_engine!(cell, engine);
            let n = engine.start(&req).await.map_err(js_error)?;
            Ok(JsValue::from(n as u32))
        })
    }

    /// `step` on WebGPU (up to 64 tokens in one submission); resolves to the same JSON.
    #[allow(clippy::await_holding_refcell_ref)] // see gpu_engine!
    pub fn step_gpu(&self, n: u32) -> Promise {
        with_gpu_engine(&self.gpu, move |cell| async move {
            gpu_engine!(cell, engine);
            let out = engine.step(n as usize).await.map_err(js_error)?;
            Ok(JsValue::from(to_json(&out)?))
        })
    }

    /// Prompt + generated token ids of the current WebGPU generation.
    pub fn gpu_sequence(&self) -> Result<Vec<u32>, JsError> {
        let cell = self.gpu.try_borrow().map_err(|_| js_error("the GPU is busy"))?;
        Ok(cell.as_ref().map(|e| e.sequence().0.to_vec()).unwrap_or_default())
    }

    /// Index of the first generated token in `gpu_sequence()`.
    pub fn gpu_prompt_len(&self) -> Result<u32, JsError> {
        let cell = self.gpu.try_borrow().map_err(|_| js_error("the GPU is busy"))?;
        Ok(cell.as_ref().map_or(0, |e| e.sequence().1 as u32))
    }

    /// Bits per byte and friends on a text (stories separated by `<|endoftext|>`); JSON.
    pub fn eval(&self, text: &str) -> Result<String, JsError> {
        to_json(&self.engine.eval(text).map_err(js_error)?)
    }
}

/// Compares `other` with `reference` on one token sequence (predictions for tokens `from..`):
/// JSON `{kl, mean_kl, top1_agreement, routing_agreement, positions}`.
#[wasm_bindgen]
pub fn compare(reference: &Model, other: &Model, tokens: &[u32], from: u32) -> Result<String, JsError> {
    let c = engine::compare(&reference.engine, &other.engine, tokens, from as usize).map_err(js_error)?;
    to_json(&c)
}
