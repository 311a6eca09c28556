//! itera-web: the thin wasm-bindgen API the playground's Web Workers call.
//!
//! Everything model-related lives in plain Rust ([`engine`], [`compare`], [`gpu_engine`], [`page_job`])
//! and is tested natively; the wasm classes only convert: settings and results cross as typed
//! JS values through serde-wasm-bindgen (curves and weights as typed arrays), every error is a
//! `JsError` with the core crate's message. A panic would be a bug: the hook prints it to the
//! console instead of an opaque `unreachable`.
//!
//! - [`model`]: `Model` (a model of either family, or a llama2.c checkpoint: load, streamed
//!   generation on the CPU or WebGPU, eval, the cost of a token) and `compare`;
//! - [`training`]: `TrainingJob` (the training job in a worker, its steps on the CPU, on a
//!   pool of `ShardWorker`s or on WebGPU) and the settings' defaults and limits.

pub mod compare;
pub mod engine;
pub mod gpu_engine;
pub mod model;
pub mod page_job;
pub mod training;

use std::cell::RefCell;
use std::rc::Rc;

use itera_core::gpu::Gpu;
use js_sys::Promise;
use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

pub use model::{compare, generation_defaults, Model};
pub use training::{ShardWorker, TrainingJob};

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

pub(crate) fn js_error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// A Rust value as a plain JS value (objects, not Maps).
pub(crate) fn to_js(value: &impl Serialize) -> Result<JsValue, JsError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(js_error)
}

/// A JS value as a Rust value; `what` names it in the error (unknown or ill-typed fields are
/// named by serde). It passes through a `serde_json::Value` because serde-wasm-bindgen reads
/// only a struct's known fields, which would let `deny_unknown_fields` wave a misspelt
/// setting through.
pub(crate) fn from_js<T: DeserializeOwned>(value: JsValue, what: &str) -> Result<T, JsError> {
    let json: serde_json::Value =
        serde_wasm_bindgen::from_value(value).map_err(|e| js_error(format!("{what}: {e}")))?;
    from_json(json, what).map_err(js_error)
}

/// `from_js` after the JS value is read (native tests reach it): the error names `what` and
/// the path of the field at fault ("generation settings: prompt: invalid type: …").
pub fn from_json<T: DeserializeOwned>(json: serde_json::Value, what: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(json).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("{what}: {}", e.inner())
        } else {
            format!("{what}: {path}: {}", e.inner())
        }
    })
}

thread_local! {
    /// The worker's one WebGPU device, shared by every model and job (None until `gpu_init`).
    static GPU: RefCell<Option<Rc<Gpu>>> = const { RefCell::new(None) };
}

/// The worker's WebGPU device, after `gpu_init` (Rust callers: the tests lose it on purpose).
pub fn worker_device() -> Option<Rc<Gpu>> {
    GPU.with(|g| g.borrow().clone())
}

pub(crate) fn worker_gpu() -> Result<Rc<Gpu>, JsError> {
    worker_device().ok_or_else(|| js_error("WebGPU is not initialised (call gpu_init first)"))
}

/// Opens WebGPU (once per worker, and again after the device was lost or failed); resolves to
/// the adapter's description, rejects with the reason when there is no usable adapter.
#[wasm_bindgen]
pub fn gpu_init() -> Promise {
    future_to_promise(async {
        if let Some(gpu) = worker_device().filter(|g| g.check().is_ok()) {
            return Ok(JsValue::from(gpu.describe()));
        }
        let gpu = Gpu::new().await.map_err(|e| JsValue::from(js_error(e)))?;
        let description = gpu.describe();
        GPU.with(|g| *g.borrow_mut() = Some(Rc::new(gpu)));
        Ok(JsValue::from(description))
    })
}

/// Runs `f` on a shared cell inside a promise; `f` borrows the cell for its whole run (across
/// awaits), so a second call while one is pending finds it taken and is refused with `busy`
/// (never a RefCell panic).
pub(crate) fn with_cell<T, F, Fut>(cell: &Rc<RefCell<T>>, f: F) -> Promise
where
    T: 'static,
    F: FnOnce(Rc<RefCell<T>>) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<JsValue, JsError>> + 'static,
{
    let cell = cell.clone();
    future_to_promise(async move { f(cell).await.map_err(JsValue::from) })
}
