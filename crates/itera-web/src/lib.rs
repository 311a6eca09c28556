//! itera-web: the thin wasm-bindgen API the playground's Web Worker calls.
//!
//! Everything model-related lives in [`engine`] as plain Rust; this file only converts:
//! bytes and JSON strings in, JSON strings out, every error a `JsError` with the core crate's
//! message. Results are JSON (parsed by the worker) rather than JS objects so the API stays
//! small and identical for every caller. A panic would be a bug: the hook prints it to the
//! console instead of an opaque `unreachable`.

pub mod engine;

use engine::{Engine, GenerateRequest};
use wasm_bindgen::prelude::*;

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

/// A loaded model and its tokenizer; holds at most one generation in progress.
#[wasm_bindgen]
pub struct Model {
    engine: Engine,
}

#[wasm_bindgen]
impl Model {
    /// Loads a safetensors weight file (any precision) and the `tokenizer.json` it was trained with.
    #[wasm_bindgen(constructor)]
    pub fn new(model_bytes: &[u8], tokenizer_json: &[u8]) -> Result<Model, JsError> {
        let engine = Engine::load(model_bytes, tokenizer_json).map_err(js_error)?;
        Ok(Model { engine })
    }

    /// JSON: precision, parameter counts, weight bytes, shape, MoE layers.
    pub fn info(&self) -> Result<String, JsError> {
        to_json(&self.engine.info())
    }

    /// Starts a generation from a JSON request (`prompt`, `max_tokens`, `temperature`, `top_k`,
    /// `top_p`, `seed`, `stop_at_end_of_text`); runs the prompt and returns its token count.
    pub fn start(&mut self, request_json: &str) -> Result<u32, JsError> {
        let req: GenerateRequest =
            serde_json::from_str(request_json).map_err(|e| js_error(format!("generation settings: {e}")))?;
        let n = self.engine.start(&req).map_err(js_error)?;
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
