//! `Model`: a loaded model of either family (or a llama2.c checkpoint opened from disk) for the
//! page's model worker — streamed generation on the CPU or on WebGPU, evaluation, the cost of a
//! token at a position — and `compare` for the Compare tab. Requests and results are plain JS
//! objects (serde-wasm-bindgen).

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Promise;
use wasm_bindgen::prelude::*;

use crate::engine::{self, Engine, GenerateRequest};
use crate::gpu_engine::GpuEngine;
use crate::{from_js, js_error, to_js, with_cell, worker_gpu};

/// A loaded model and its tokenizer; holds at most one generation in progress per backend.
#[wasm_bindgen]
pub struct Model {
    engine: Engine,
    /// The same model on WebGPU, after `enable_gpu`. Shared with the pending promise of a
    /// GPU call (the browser delivers read-backs asynchronously).
    gpu: Rc<RefCell<Option<GpuEngine>>>,
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

fn request(value: JsValue) -> Result<GenerateRequest, JsError> {
    from_js(value, "generation settings")
}

#[wasm_bindgen]
impl Model {
    /// Loads a safetensors weight file (either family, any precision) and the
    /// `tokenizer.json` it was trained with.
    #[wasm_bindgen(constructor)]
    pub fn new(model_bytes: &[u8], tokenizer_json: &[u8]) -> Result<Model, JsError> {
        Ok(Model::from_engine(
            Engine::load(model_bytes, tokenizer_json).map_err(js_error)?,
        ))
    }

    /// A llama2.c checkpoint with its tokenizer.bin (a Transformer on the CPU).
    pub fn llama2(checkpoint: &[u8], tokenizer_bin: &[u8]) -> Result<Model, JsError> {
        Ok(Model::from_engine(
            Engine::llama2(checkpoint, tokenizer_bin).map_err(js_error)?,
        ))
    }

    /// A model of `engine`'s weights (from a training job, say).
    pub(crate) fn from_engine(engine: Engine) -> Model {
        Model {
            engine,
            gpu: Rc::new(RefCell::new(None)),
        }
    }

    /// `{kind, family, description, precision, params, active_params, weight_bytes,
    /// vocab_size, d_model, n_layers, n_heads, n_kv_heads, n_experts, top_k, moe_layers,
    /// max_context, tokenizer, webgpu}` (`engine::ModelInfo`).
    pub fn info(&self) -> Result<JsValue, JsError> {
        to_js(&self.engine.info())
    }

    /// `{flops, state_bytes}` of one decode step at `position`: FLOPs, and the decode state
    /// held there (the SSM's fixed state, or a Transformer's KV cache).
    pub fn token_cost(&self, position: u32) -> Result<JsValue, JsError> {
        to_js(&self.engine.token_cost(position as usize))
    }

    /// Starts a generation from a request `{prompt, max_tokens, temperature, top_k, top_p,
    /// seed, stop_at_end_of_text}`; runs the prompt and returns its token count.
    pub fn start(&mut self, request_value: JsValue) -> Result<u32, JsError> {
        let n = self.engine.start(&request(request_value)?).map_err(js_error)?;
        Ok(n as u32)
    }

    /// Generates up to `n` more tokens: `{text, tokens, pieces, logprobs, routing, done}`.
    pub fn step(&mut self, n: u32) -> Result<JsValue, JsError> {
        let out = self.engine.step(n as usize).map_err(js_error)?;
        to_js(&out)
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
        let gpu = worker_gpu()?;
        let (model, tokenizer) = self.engine.upload(&gpu).map_err(js_error)?;
        let engine = GpuEngine::of(gpu, model, tokenizer);
        let mut slot = self
            .gpu
            .try_borrow_mut()
            .map_err(|_| js_error("the GPU is busy with another request of this model"))?;
        *slot = Some(engine);
        Ok(())
    }

    /// `start` on WebGPU; resolves to the number of prompt tokens.
    #[allow(clippy::await_holding_refcell_ref)] // see gpu_engine!
    pub fn start_gpu(&self, request_value: JsValue) -> Promise {
        let req = request(request_value);
        with_cell(&self.gpu, |cell| async move {
            let req = req?;
            gpu_engine!(cell, engine);
            let n = engine.start(&req).await.map_err(js_error)?;
            Ok(JsValue::from(n as u32))
        })
    }

    /// `step` on WebGPU (up to 64 tokens in one submission); resolves to the same object.
    #[allow(clippy::await_holding_refcell_ref)] // see gpu_engine!
    pub fn step_gpu(&self, n: u32) -> Promise {
        with_cell(&self.gpu, move |cell| async move {
            gpu_engine!(cell, engine);
            let out = engine.step(n as usize).await.map_err(js_error)?;
            to_js(&out)
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

    /// `{documents, tokens, bytes, mean_ce, perplexity, bits_per_byte}` on a text (stories
    /// separated by `<|endoftext|>`).
    pub fn eval(&self, text: &str) -> Result<JsValue, JsError> {
        to_js(&self.engine.eval(text).map_err(js_error)?)
    }
}

/// The Generate tab's defaults and bounds (`engine::GenerationDefaults`), from the core.
#[wasm_bindgen]
pub fn generation_defaults() -> Result<JsValue, JsError> {
    to_js(&engine::generation_defaults())
}

/// Compares `other` with `reference` on one token sequence (predictions for tokens `from..`):
/// `{kl, mean_kl, top1_agreement, routing_agreement, positions}`; the two must share a
/// tokenizer (`info().tokenizer`).
#[wasm_bindgen]
pub fn compare(reference: &Model, other: &Model, tokens: &[u32], from: u32) -> Result<JsValue, JsError> {
    let c = crate::compare::compare(&reference.engine, &other.engine, tokens, from as usize).map_err(js_error)?;
    to_js(&c)
}

/// A model file (either family, any precision) in `precision` (a name of `Precision::ALL`): what
/// the page downloads of a model it holds as an f32 file (a run's best weights).
#[wasm_bindgen]
pub fn convert_model(bytes: &[u8], precision: &str) -> Result<Vec<u8>, JsError> {
    let p: itera_core::Precision = precision.parse().map_err(js_error)?;
    let w = itera_core::lm::AnyWeights::load(bytes).map_err(js_error)?;
    w.to_precision(p).save().map_err(js_error)
}
