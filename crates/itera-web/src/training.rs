//! The training job in a browser worker: `TrainingJob` runs itera-core's job (a fine-tune of
//! a loaded model of either family on the visitor's text, or a distillation) on one of three
//! step backends — this worker's CPU, a pool of CPU workers each holding a `ShardWorker`, or
//! WebGPU (the SSM + MoE family only) — and hands events, curves, checkpoints and exports to
//! the page. Everything is written once over the family (`Inner<A>`, `Backend<A>`,
//! `Shard<A>`); the wasm classes hold either family and dispatch. The pool is data-parallel: every step's shards go to
//! the workers, come back as gradients, and are averaged here in shard order, so N workers
//! give the 1-worker step bit for bit (the same wasm code computes every shard).

use std::cell::RefCell;
use std::rc::Rc;

use itera_core::family::Family;
use itera_core::gpu::train::GpuStep;
use itera_core::gpu::Gpu;
use itera_core::lm::AnyWeights;
use itera_core::model::{LossParts, LossWeights};
use itera_core::train::{
    check_step_input, finish_step, Budget, Clock, CpuStep, Event, ExpertLoad, ShardScratch, StepBackend, StepConfig,
    StepReport, TrainSpec, TrainState, LIMITS, MAX_TOKENS_PER_STEP,
};
use itera_core::train::{checkpoint_family, Job};
use itera_core::train::{CorpusBuilder, CorpusSettings, Story};
use itera_core::{format, Architecture, Error, Grads, Itera, Precision, Result, Transformer, Weights};
use js_sys::{Array, Float32Array, Function, Object, Promise, Reflect, Uint32Array, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::engine::{Engine, GenerateRequest};
use crate::model::Model;
use crate::page_job::{PageJob, PreparedText, ResumeText, Source, MAX_PAGE_TEXT_BYTES};
use crate::{from_js, js_error, to_js, with_cell, worker_gpu};
use itera_core::train::{Start, Teacher};

/// The page's fine-tune defaults (`TrainSpec::FINE_TUNE`).
#[wasm_bindgen]
pub fn fine_tune_defaults() -> Result<JsValue, JsError> {
    to_js(&TrainSpec::FINE_TUNE)
}

/// Every setting's accepted range `[{name, min, max}]`, and `max_tokens_per_step`.
#[wasm_bindgen]
pub fn train_limits() -> Result<JsValue, JsError> {
    #[derive(Serialize)]
    struct Limits {
        settings: &'static [itera_core::train::Limit],
        max_tokens_per_step: usize,
        /// The most bytes of text one job trains on (`page_job::MAX_PAGE_TEXT_BYTES`).
        max_text_bytes: usize,
    }
    to_js(&Limits {
        settings: LIMITS,
        max_tokens_per_step: MAX_TOKENS_PER_STEP,
        max_text_bytes: MAX_PAGE_TEXT_BYTES,
    })
}

/// Training settings from the page: the given fields over `defaults` (an unknown field is
/// refused by name).
fn settings_over(value: JsValue, defaults: &TrainSpec) -> Result<TrainSpec, JsError> {
    let given: serde_json::Value = from_js(value, "training settings")?;
    settings_from_json(given, defaults).map_err(js_error)
}

/// `settings_over` after the JS value is read: the JSON layer, which native tests reach.
pub fn settings_from_json(given: serde_json::Value, defaults: &TrainSpec) -> Result<TrainSpec, String> {
    let Some(given) = given.as_object() else {
        return Err("training settings: expected an object of settings".into());
    };
    let mut merged = serde_json::to_value(defaults).map_err(|e| e.to_string())?;
    for (k, v) in given {
        merged[k] = v.clone();
    }
    crate::from_json(merged, "training settings")
}

fn fine_tune_settings(value: JsValue) -> Result<TrainSpec, JsError> {
    settings_over(value, &TrainSpec::FINE_TUNE)
}

fn distill_settings(value: JsValue) -> Result<TrainSpec, JsError> {
    settings_over(value, &TrainSpec::DISTILL)
}

/// The student shapes the page offers: these presets of each family.
const STUDENT_PRESETS: [&str; 2] = ["micro", "tiny"];

/// A fresh student's shape: a family's preset config (no tokenizer yet: the page's is given
/// when the job starts).
#[derive(Serialize)]
struct StudentPreset {
    family: Family,
    preset: &'static str,
    config: serde_json::Value,
}

fn student_presets<A: Architecture>() -> Result<Vec<StudentPreset>> {
    STUDENT_PRESETS
        .iter()
        .map(|&preset| {
            let c = A::preset(preset)?;
            let c = A::with_tokenizer(&c, A::vocab_size(&c), None);
            Ok(StudentPreset {
                family: A::FAMILY,
                preset,
                config: serde_json::to_value(&c).map_err(|e| Error::Metadata(e.to_string()))?,
            })
        })
        .collect()
}

/// The page's distillation defaults (`TrainSpec::DISTILL`), corpus (`CorpusSettings::PAGE`)
/// and fresh students (`[{family, preset, config}]`, both families' micro and tiny presets).
#[wasm_bindgen]
pub fn distill_defaults() -> Result<JsValue, JsError> {
    #[derive(Serialize)]
    struct Defaults {
        settings: TrainSpec,
        corpus: CorpusSettings,
        students: Vec<StudentPreset>,
    }
    let mut students = student_presets::<Itera>().map_err(js_error)?;
    students.extend(student_presets::<Transformer>().map_err(js_error)?);
    to_js(&Defaults {
        settings: TrainSpec::DISTILL,
        corpus: CorpusSettings::PAGE,
        students,
    })
}

/// `{params, active_params, bytes: {f32, f16, q8, q4}}` of a model of `family` ("itera" or
/// "transformer") and shape `config` (the page's student editor): the weight files' sizes,
/// computed without making the model.
#[wasm_bindgen]
pub fn model_size(config: JsValue, family: &str) -> Result<JsValue, JsError> {
    fn size<A: Architecture>(json: &serde_json::Value) -> Result<itera_core::params::ModelSize> {
        let c = A::config_from_json(&json.to_string())?;
        Ok(itera_core::params::ModelSize::of::<A>(&c))
    }
    let json: serde_json::Value = from_js(config, "model shape")?;
    let s = match family.parse::<Family>().map_err(js_error)? {
        Family::Itera => size::<Itera>(&json),
        Family::Transformer => size::<Transformer>(&json),
    };
    to_js(&s.map_err(js_error)?)
}

/// A teacher from the page: `{kind: "model", bytes}` (a weight file of either family) or
/// `{kind: "llama2", checkpoint, tokenizer}` (Uint8Arrays).
fn load_teacher(value: &JsValue) -> Result<Teacher, JsError> {
    let bytes = |name: &str| -> Result<Vec<u8>, JsError> {
        Reflect::get(value, &name.into())
            .ok()
            .and_then(|b| b.dyn_into::<Uint8Array>().ok())
            .map(|b| b.to_vec())
            .ok_or_else(|| js_error(format!("teacher: no {name} (a Uint8Array)")))
    };
    let kind = Reflect::get(value, &"kind".into()).ok().and_then(|k| k.as_string());
    match kind.as_deref() {
        Some("model") => Teacher::model(&bytes("bytes")?).map_err(js_error),
        Some("llama2") => Teacher::llama2(&bytes("checkpoint")?, &bytes("tokenizer")?).map_err(js_error),
        other => Err(js_error(format!(
            "teacher: kind {other:?} is neither \"model\" nor \"llama2\""
        ))),
    }
}

/// Writes a teacher's stories in a corpus worker: story i of the corpus `settings` describe.
#[wasm_bindgen]
pub struct StoryWriter {
    teacher: Teacher,
    tokenizer: itera_core::tokenizer::Tokenizer,
    settings: CorpusSettings,
}

#[wasm_bindgen]
impl StoryWriter {
    /// `teacher` as `TrainingJob.distill` takes it; `settings` = `{tokens, seed, temperature, top_p}`.
    #[wasm_bindgen(constructor)]
    pub fn new(teacher: JsValue, tokenizer_json: &[u8], settings: JsValue) -> Result<StoryWriter, JsError> {
        let settings: CorpusSettings = from_js(settings, "corpus settings")?;
        settings.validate().map_err(js_error)?;
        Ok(StoryWriter {
            teacher: load_teacher(&teacher)?,
            tokenizer: itera_core::tokenizer::Tokenizer::from_json(tokenizer_json).map_err(js_error)?,
            settings,
        })
    }

    /// `{text, tokens}` of story `i`.
    pub fn story(&self, i: u32) -> Result<JsValue, JsError> {
        let story = self
            .teacher
            .teller(&self.tokenizer)
            .story(&self.settings, i as usize)
            .map_err(js_error)?;
        to_js(&story)
    }
}

/// A corpus assembling in the training worker as stories arrive from the writers: in index
/// order, up to the token target (`train::CorpusBuilder`).
#[wasm_bindgen]
pub struct Corpus {
    builder: CorpusBuilder,
}

#[wasm_bindgen]
impl Corpus {
    #[wasm_bindgen(constructor)]
    pub fn new(tokens: u32) -> Corpus {
        Corpus {
            builder: CorpusBuilder::new(tokens as usize),
        }
    }

    pub fn insert(&mut self, i: u32, text: String, tokens: u32) {
        self.builder.insert(
            i as usize,
            Story {
                text,
                tokens: tokens as usize,
            },
        );
    }

    pub fn complete(&self) -> bool {
        self.builder.is_complete()
    }

    /// Teacher tokens of the gap-free stories so far.
    pub fn tokens(&self) -> u32 {
        self.builder.tokens() as u32
    }

    pub fn stories(&self) -> u32 {
        self.builder.stories().count() as u32
    }

    /// The corpus so far, as the job trains on it.
    pub fn text(&self) -> String {
        self.builder.text()
    }
}

/// One text from the page: a paste or a file.
#[derive(Deserialize)]
struct TextSource {
    name: String,
    #[serde(with = "serde_wasm_bindgen::preserve")]
    bytes: Uint8Array,
}

/// `[{name, bytes: Uint8Array}]` from the page, copied into this module's memory.
fn sources(value: &JsValue) -> Result<Vec<(String, Vec<u8>)>, JsError> {
    let list: Vec<TextSource> = serde_wasm_bindgen::from_value(value.clone())
        .map_err(|e| js_error(format!("texts: expected an array of {{name, bytes: Uint8Array}}: {e}")))?;
    Ok(list.into_iter().map(|t| (t.name, t.bytes.to_vec())).collect())
}

fn as_sources(owned: &[(String, Vec<u8>)]) -> Vec<Source<'_>> {
    owned.iter().map(|(name, bytes)| Source { name, bytes }).collect()
}

/// The visitor's texts cut into a corpus and a held-out part and tokenized, once
/// (`page_job::PreparedText`): what the page shows before a fine-tune starts, then what the
/// fine-tune trains on (handing it over empties this object).
#[wasm_bindgen]
pub struct TextTokens {
    text: Option<PreparedText>,
}

#[wasm_bindgen]
impl TextTokens {
    /// `texts` = `[{name, bytes}]`; `on_progress(done, total)` (bytes; optional) is called
    /// after each piece of about 64 KiB. Refuses texts over `train_limits().max_text_bytes`,
    /// not UTF-8, or with no words.
    #[wasm_bindgen(constructor)]
    pub fn new(texts: JsValue, tokenizer_json: &[u8], on_progress: Option<Function>) -> Result<TextTokens, JsError> {
        let owned = sources(&texts)?;
        let tokenizer = itera_core::tokenizer::Tokenizer::from_json(tokenizer_json).map_err(js_error)?;
        let mut progress = |done: usize, total: usize| {
            if let Some(f) = &on_progress {
                // A progress display that fails does not stop the tokenizer.
                let _ = f.call2(&JsValue::NULL, &(done as f64).into(), &(total as f64).into());
            }
        };
        let text = PreparedText::new(tokenizer, &as_sources(&owned), &mut progress).map_err(js_error)?;
        Ok(TextTokens { text: Some(text) })
    }

    /// `{documents, heldout_documents, bytes, heldout_bytes, tokens, heldout_tokens}`.
    pub fn info(&self) -> Result<JsValue, JsError> {
        to_js(&self.prepared()?.info)
    }

    /// Whether the texts are still here (not yet handed to a job, even one that then failed).
    pub fn ready(&self) -> bool {
        self.text.is_some()
    }
}

impl TextTokens {
    fn prepared(&self) -> Result<&PreparedText, JsError> {
        self.text
            .as_ref()
            .ok_or_else(|| js_error("these texts were handed to a job already: prepare them again"))
    }

    fn take(&mut self) -> Result<PreparedText, JsError> {
        self.prepared()?;
        Ok(self.text.take().expect("checked"))
    }
}

/// Seconds on the worker's monotonic clock (`performance.now`).
fn now_seconds() -> f64 {
    let global = js_sys::global();
    let perf = Reflect::get(&global, &"performance".into()).ok();
    let now = perf.as_ref().and_then(|p| {
        let f: Function = Reflect::get(p, &"now".into()).ok()?.dyn_into().ok()?;
        f.call0(p).ok()?.as_f64()
    });
    now.unwrap_or_else(js_sys::Date::now) / 1000.0
}

fn clock() -> Clock {
    Box::new(now_seconds)
}

fn js_reason(e: JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// What the page's training needs of a family beyond `Architecture`: its WebGPU step, if it
/// has one.
pub trait PageFamily: Architecture {
    type GpuStep: StepBackend<Self>;
    fn gpu_step(
        gpu: Rc<Gpu>,
        state: &TrainState<Self>,
        config: StepConfig,
        teacher: Option<&AnyWeights>,
    ) -> Result<Self::GpuStep>;
}

impl PageFamily for Itera {
    type GpuStep = GpuStep;
    fn gpu_step(gpu: Rc<Gpu>, state: &TrainState, config: StepConfig, teacher: Option<&AnyWeights>) -> Result<GpuStep> {
        GpuStep::new(gpu, state, config, teacher)
    }
}

/// The Transformer trains on the CPU (this worker or the pool): the GPU training kernels are
/// the SSM + MoE family's (both decode on WebGPU). A value of this type cannot exist.
pub enum NoGpuStep {}

impl StepBackend<Transformer> for NoGpuStep {
    async fn step(
        &mut self,
        _: &mut TrainState<Transformer>,
        _: &[u32],
        _: f32,
        _: Option<&AnyWeights>,
    ) -> Result<StepReport> {
        match *self {}
    }
    async fn sync(&mut self, _: &mut TrainState<Transformer>) -> Result<()> {
        match *self {}
    }
    fn describe(&self) -> String {
        match *self {}
    }
}

impl PageFamily for Transformer {
    type GpuStep = NoGpuStep;
    fn gpu_step(_: Rc<Gpu>, _: &TrainState<Transformer>, _: StepConfig, _: Option<&AnyWeights>) -> Result<NoGpuStep> {
        Err(Error::Gpu(
            "WebGPU training is for SSM + MoE models: a Transformer trains on the CPU workers".into(),
        ))
    }
}

/// Where a job's steps run (one per job, so the size of the variants does not matter).
#[allow(clippy::large_enum_variant)]
enum Backend<A: PageFamily> {
    /// This worker's CPU, one thread.
    Cpu(CpuStep<A>),
    /// CPU workers, each computing shards (`ShardWorker`).
    Pool(PoolStep),
    Gpu(A::GpuStep),
}

impl<A: PageFamily> StepBackend<A> for Backend<A> {
    async fn step(
        &mut self,
        state: &mut TrainState<A>,
        tokens: &[u32],
        lr: f32,
        teacher: Option<&AnyWeights>,
    ) -> Result<StepReport> {
        match self {
            Backend::Cpu(b) => b.step(state, tokens, lr, teacher).await,
            Backend::Pool(b) => b.step(state, tokens, lr, teacher).await,
            Backend::Gpu(b) => b.step(state, tokens, lr, teacher).await,
        }
    }

    async fn sync(&mut self, state: &mut TrainState<A>) -> Result<()> {
        match self {
            Backend::Cpu(b) => b.sync(state).await,
            Backend::Pool(b) => StepBackend::<A>::sync(b, state).await,
            Backend::Gpu(b) => b.sync(state).await,
        }
    }

    fn describe(&self) -> String {
        match self {
            Backend::Cpu(b) => format!("the CPU ({})", b.describe()),
            Backend::Pool(b) => StepBackend::<A>::describe(b),
            Backend::Gpu(b) => format!("WebGPU: {}", b.describe()),
        }
    }
}

/// What a `ShardWorker` needs to compute shards of this job's steps (the config is the
/// family's).
#[derive(Serialize, Deserialize)]
struct ShardSetup {
    family: Family,
    config: serde_json::Value,
    seq_len: usize,
    loss: LossWeights,
}

/// One shard's result, as a `ShardWorker` sends it and `PoolStep` reads it (serde at both ends;
/// the JS between only passes it on, transferring the gradients' buffer).
#[derive(Serialize, Deserialize)]
struct ShardResult {
    loss: LossParts,
    routing: ExpertLoad,
    /// Every parameter's gradient, in table order, flat.
    #[serde(with = "serde_wasm_bindgen::preserve")]
    grads: Float32Array,
}

/// Steps whose shards are computed by a pool of workers through `compute(weights, shards)`
/// (a JS function resolving to one `ShardResult` per shard, in order).
struct PoolStep {
    compute: Function,
    workers: usize,
    config: StepConfig,
    grads: Vec<Grads>,
}

impl PoolStep {
    async fn shard_results<A: Architecture>(
        &mut self,
        w: &Weights<A>,
        tokens: &[u32],
    ) -> Result<(Vec<LossParts>, Vec<ExpertLoad>)> {
        let worker_error = |what: &str, e: JsValue| Error::Worker(format!("{what}: {}", js_reason(e)));
        let weights = Float32Array::from(w.flat_f32()?.as_slice());
        let seq = self.config.seq_len;
        let shards: Array = self
            .config
            .shard_ranges()
            .iter()
            .map(|r| JsValue::from(Uint32Array::from(&tokens[r.start * seq..r.end * seq])))
            .collect();
        let pending = self
            .compute
            .call2(&JsValue::NULL, &weights, &shards)
            .map_err(|e| worker_error("starting the step", e))?;
        let results = JsFuture::from(Promise::resolve(&pending))
            .await
            .map_err(|e| worker_error("computing the step", e))?;
        let results: Array = results
            .dyn_into()
            .map_err(|_| Error::Worker("the pool did not answer with an array".into()))?;
        if results.length() as usize != self.grads.len() {
            return Err(Error::Worker(format!(
                "{} results for {} shards",
                results.length(),
                self.grads.len()
            )));
        }
        let mut losses = Vec::with_capacity(self.grads.len());
        let mut loads = Vec::with_capacity(self.grads.len());
        for (r, g) in results.iter().zip(&mut self.grads) {
            let ShardResult {
                loss,
                routing: load,
                grads: flat,
            } = serde_wasm_bindgen::from_value(r).map_err(|e| Error::Worker(format!("a shard's result: {e}")))?;
            let total: usize = g.tensors.iter().map(Vec::len).sum();
            if flat.length() as usize != total {
                return Err(Error::Worker(format!(
                    "{} gradients for {total} parameters",
                    flat.length()
                )));
            }
            let mut at = 0u32;
            for t in &mut g.tensors {
                let n = t.len() as u32;
                flat.subarray(at, at + n).copy_to(t);
                at += n;
            }
            losses.push(loss);
            loads.push(load);
        }
        Ok((losses, loads))
    }
}

impl<A: Architecture> StepBackend<A> for PoolStep {
    async fn step(
        &mut self,
        state: &mut TrainState<A>,
        tokens: &[u32],
        lr: f32,
        _teacher: Option<&AnyWeights>,
    ) -> Result<StepReport> {
        check_step_input(&state.weights, &self.config, tokens)?;
        let (losses, loads) = self.shard_results(&state.weights, tokens).await?;
        let mut grads: Vec<&mut Grads> = self.grads.iter_mut().collect();
        finish_step(state, &self.config, lr, &losses, &loads, &mut grads)
    }

    async fn sync(&mut self, _state: &mut TrainState<A>) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        match self.workers {
            1 => "1 CPU worker".into(),
            n => format!("{n} CPU workers"),
        }
    }
}

/// One family's shard computation (a `ShardWorker`'s).
struct Shard<A: Architecture> {
    weights: Weights<A>,
    teacher: Option<AnyWeights>,
    scratch: ShardScratch<A>,
    seq_len: usize,
    loss: LossWeights,
}

impl<A: Architecture> Shard<A> {
    fn new(s: ShardSetup, teacher: Option<AnyWeights>) -> Result<Shard<A>> {
        let config: A::Config = serde_json::from_value(s.config)
            .map_err(|e| Error::Worker(format!("shard setup: the {} config: {e}", A::FAMILY)))?;
        let weights = A::init_random(&config, 0)?;
        Ok(Shard {
            scratch: ShardScratch::new(&weights),
            weights,
            teacher,
            seq_len: s.seq_len,
            loss: s.loss,
        })
    }

    fn gradients(&mut self, weights: &[f32], tokens: &[u32]) -> Result<JsValue, JsError> {
        self.weights.load_flat(weights).map_err(js_error)?;
        let loss = self
            .scratch
            .gradients(&self.weights, tokens, self.seq_len, self.teacher.as_ref(), self.loss)
            .map_err(js_error)?;
        let grads =
            Float32Array::new_with_length(self.scratch.grads.tensors.iter().map(Vec::len).sum::<usize>() as u32);
        let mut at = 0u32;
        for t in &self.scratch.grads.tensors {
            grads.subarray(at, at + t.len() as u32).copy_from(t);
            at += t.len() as u32;
        }
        to_js(&ShardResult {
            loss,
            routing: self.scratch.expert_load(),
            grads,
        })
    }
}

// One per worker, never moved in a hot path: boxing the larger family's buffers would buy nothing.
#[allow(clippy::large_enum_variant)]
enum AnyShard {
    Itera(Shard<Itera>),
    Transformer(Shard<Transformer>),
}

/// Computes shards of a job's steps in a pool worker: forward, loss and backward of the
/// tokens it is sent, from the weights it is sent (and the teacher's forward, distilling).
#[wasm_bindgen]
pub struct ShardWorker {
    shard: AnyShard,
}

#[wasm_bindgen]
impl ShardWorker {
    /// From `TrainingJob::shard_setup()`; `teacher`: the distillation teacher's weight file
    /// when the job distils logits (`setup.distill`), else null.
    #[wasm_bindgen(constructor)]
    pub fn new(setup: JsValue, teacher: Option<Vec<u8>>) -> Result<ShardWorker, JsError> {
        let s: ShardSetup = from_js(setup, "shard setup")?;
        let teacher = teacher.map(|b| AnyWeights::load(&b)).transpose().map_err(js_error)?;
        if s.loss.distill_beta > 0.0 && teacher.is_none() {
            return Err(js_error("shard setup: the job distils, but no teacher was given"));
        }
        let shard = match s.family {
            Family::Itera => AnyShard::Itera(Shard::new(s, teacher).map_err(js_error)?),
            Family::Transformer => AnyShard::Transformer(Shard::new(s, teacher).map_err(js_error)?),
        };
        Ok(ShardWorker { shard })
    }

    /// `{loss: {total, ce, aux, kl}, routing: {counts, aux}, grads: Float32Array}` of one
    /// shard (whole sequences).
    pub fn gradients(&mut self, weights: &[f32], tokens: &[u32]) -> Result<JsValue, JsError> {
        match &mut self.shard {
            AnyShard::Itera(s) => s.gradients(weights, tokens),
            AnyShard::Transformer(s) => s.gradients(weights, tokens),
        }
    }
}

/// One family's job and where its steps run.
struct Inner<A: PageFamily> {
    tune: PageJob<A>,
    backend: Backend<A>,
}

/// What `TrainingJob::advance` resolves to (serialized for the worker).
#[derive(Serialize)]
struct Advance {
    events: Vec<Event>,
    /// The last checkpoint's bytes and new best weights' (Uint8Arrays), or null.
    #[serde(with = "serde_wasm_bindgen::preserve")]
    checkpoint: JsValue,
    #[serde(with = "serde_wasm_bindgen::preserve")]
    best: JsValue,
    /// Events before a failure still reach the page: the error comes with them.
    error: Option<String>,
    diverged: bool,
}

/// What `advance` hands the page: the events in order, the last checkpoint's bytes, and the
/// error that ended the call early, if one did.
struct Advanced {
    events: Vec<Event>,
    checkpoint: Option<Vec<u8>>,
    /// The f32 model file of the best weights, when this slice found new ones.
    best: Option<Vec<u8>>,
    error: Option<Error>,
}

impl<A: PageFamily> Inner<A> {
    fn new(tune: PageJob<A>) -> Inner<A> {
        let backend = Inner::cpu(&tune);
        Inner { tune, backend }
    }

    fn cpu(tune: &PageJob<A>) -> Backend<A> {
        Backend::Cpu(CpuStep::new(
            &tune.job.state().weights,
            tune.job.spec().step_config(),
            1,
        ))
    }

    fn job(&self) -> &Job<A> {
        &self.tune.job
    }

    fn family(&self) -> Family {
        A::FAMILY
    }

    fn shard_setup(&self) -> Result<ShardSetup> {
        let job = self.job();
        Ok(ShardSetup {
            family: A::FAMILY,
            config: serde_json::to_value(&job.state().weights.config).map_err(|e| Error::Worker(e.to_string()))?,
            seq_len: job.spec().seq_len,
            loss: job.spec().loss_weights(),
        })
    }

    fn use_workers(&mut self, compute: Function, workers: u32) {
        let job = self.job();
        let config = job.spec().step_config();
        let grads = config
            .shard_ranges()
            .iter()
            .map(|_| Grads::zeros(&job.state().weights.table))
            .collect();
        self.backend = Backend::Pool(PoolStep {
            compute,
            workers: workers.max(1) as usize,
            config,
            grads,
        });
    }

    fn gpu_step(&self, gpu: Rc<Gpu>) -> Result<A::GpuStep> {
        let job = self.job();
        A::gpu_step(gpu, job.state(), job.spec().step_config(), job.data().teacher.as_ref())
    }

    async fn time_step(&mut self) -> Result<f64, JsError> {
        let job = &self.tune.job;
        let mut scratch = job.state().clone();
        let tokens = job.batch(job.completed()).map_err(js_error)?;
        let lr = job.spec().schedule().at(job.completed());
        let t0 = now_seconds();
        self.backend
            .step(&mut scratch, &tokens, lr, job.data().teacher.as_ref())
            .await
            .map_err(js_error)?;
        let ms = (now_seconds() - t0) * 1000.0;
        if matches!(self.backend, Backend::Gpu(_)) {
            self.backend = Backend::Gpu(self.gpu_step(worker_gpu()?).map_err(js_error)?);
        }
        Ok(ms)
    }

    async fn time_gpu_probe(&self, sequences: u32, seq_len: u32) -> Result<f64, JsError> {
        let job = self.job();
        let full = job.spec().step_config();
        let cfg = StepConfig {
            batch: (sequences as usize).clamp(1, full.batch),
            seq_len: (seq_len as usize).clamp(2, full.seq_len),
            shards: 1,
            ..full
        };
        let tokens: Vec<u32> = job.batch(job.completed()).map_err(js_error)?[..cfg.batch * full.seq_len]
            .chunks(full.seq_len)
            .flat_map(|s| s[..cfg.seq_len].iter().copied())
            .collect();
        let mut scratch = job.state().clone();
        let teacher = job.data().teacher.as_ref();
        let mut probe = A::gpu_step(worker_gpu()?, &scratch, cfg, teacher).map_err(js_error)?;
        let lr = job.spec().schedule().at(job.completed());
        let t0 = now_seconds();
        probe.step(&mut scratch, &tokens, lr, teacher).await.map_err(js_error)?;
        Ok((now_seconds() - t0) * 1000.0)
    }

    async fn advance(&mut self, budget: Budget) -> Advanced {
        let Inner { tune, backend } = self;
        let mut events = Vec::new();
        let mut checkpoint = None;
        let mut best = None;
        let result = tune
            .job
            .advance(backend, budget, &mut |e| {
                match &e {
                    Event::Checkpoint { bytes, .. } => checkpoint = Some(bytes.clone()),
                    Event::Best { bytes, .. } => best = Some(bytes.clone()),
                    _ => {}
                }
                events.push(e);
                Ok(())
            })
            .await;
        Advanced {
            events,
            checkpoint,
            best,
            error: result.err(),
        }
    }

    fn roll_back(&mut self) -> usize {
        let step = self.tune.job.roll_back_to_host_state();
        self.backend = Inner::cpu(&self.tune);
        step
    }

    fn history(&self) -> Result<JsValue, JsError> {
        let h = self.job().history();
        let out = Object::new();
        for (name, values) in h.columns() {
            Reflect::set(&out, &name.into(), &Float32Array::from(values.as_slice()))
                .map_err(|_| js_error("history"))?;
        }
        Reflect::set(&out, &"evals".into(), &to_js(&h.evals)?).map_err(|_| js_error("history"))?;
        Ok(out.into())
    }

    /// The device's state read back into the host's (a no-op on the CPU).
    async fn sync(&mut self) -> Result<()> {
        let Inner { tune, backend } = self;
        tune.job.sync(backend).await
    }

    async fn checkpoint(&mut self) -> Result<Vec<u8>> {
        self.sync().await?;
        self.tune.job.checkpoint().and_then(|c| c.to_bytes())
    }

    async fn export(&mut self, p: Precision) -> Result<Vec<u8>> {
        self.sync().await?;
        self.tune.export(p)
    }

    async fn engine(&mut self, p: Precision) -> Result<Engine>
    where
        Weights<A>: Into<AnyWeights>,
    {
        self.sync().await?;
        let weights = self.tune.job.model().to_precision(p);
        Engine::from_weights(weights.into(), self.tune.job.data().tokenizer.clone())
    }

    async fn sample(&mut self, req: &GenerateRequest) -> Result<String> {
        self.sync().await?;
        self.tune.sample(req)
    }
}

/// A job of either family.
#[allow(clippy::large_enum_variant)] // one per job
enum AnyInner {
    Itera(Inner<Itera>),
    Transformer(Inner<Transformer>),
}

/// `$body` with `$i` bound to the family's `Inner`.
macro_rules! each_job {
    ($inner:expr, $i:ident => $body:expr) => {
        match $inner {
            AnyInner::Itera($i) => $body,
            AnyInner::Transformer($i) => $body,
        }
    };
}

/// A training job (a fine-tune or a distillation of either family) running in this worker.
#[wasm_bindgen]
pub struct TrainingJob {
    inner: Rc<RefCell<AnyInner>>,
}

fn busy() -> JsError {
    js_error("the training job is busy (a step or a read-back is running)")
}

/// Borrows the job for a whole async call (across its awaits): a second call meanwhile is
/// refused as busy.
macro_rules! job {
    ($cell:expr, $guard:ident) => {
        let mut $guard = $cell.try_borrow_mut().map_err(|_| busy())?;
    };
}

impl TrainingJob {
    fn of(inner: AnyInner) -> TrainingJob {
        TrainingJob {
            inner: Rc::new(RefCell::new(inner)),
        }
    }

    fn resume_as(family: Family, checkpoint: &[u8], text: ResumeText) -> Result<TrainingJob, JsError> {
        Ok(TrainingJob::of(match family {
            Family::Itera => AnyInner::Itera(Inner::new(
                PageJob::resume(checkpoint, text, clock()).map_err(js_error)?,
            )),
            Family::Transformer => AnyInner::Transformer(Inner::new(
                PageJob::resume(checkpoint, text, clock()).map_err(js_error)?,
            )),
        }))
    }
}

/// A JS object's Uint8Array field.
fn bytes_field(value: &JsValue, name: &str) -> Option<Vec<u8>> {
    Reflect::get(value, &name.into())
        .ok()
        .and_then(|b| b.dyn_into::<Uint8Array>().ok())
        .map(|b| b.to_vec())
}

/// The student's shape, `{family, config}` (family absent: SSM + MoE), for a fresh model.
fn fresh_student<A: Architecture>(student: &JsValue) -> Result<Start<'static, A>, JsError> {
    let config = Reflect::get(student, &"config".into()).map_err(|_| js_error("student: no config"))?;
    let json: serde_json::Value = from_js(config, "student shape")?;
    let config = A::config_from_json(&json.to_string()).map_err(js_error)?;
    Ok(Start::Fresh(config))
}

#[wasm_bindgen]
impl TrainingJob {
    /// A new fine-tune of `base` (weight file bytes of either family, any precision) on the
    /// prepared `text` (taken from it) with `settings` (the fields of `fine_tune_defaults()`),
    /// stepping on this worker's CPU until told otherwise.
    #[wasm_bindgen(constructor)]
    pub fn new(base: &[u8], text: &mut TextTokens, settings: JsValue, base_name: &str) -> Result<TrainingJob, JsError> {
        let spec = fine_tune_settings(settings)?;
        // Settings and base are checked before the texts are taken, so a refusal keeps them.
        spec.validate().map_err(js_error)?;
        let family = format::read_family(base).map_err(js_error)?;
        let text = text.take()?;
        let inner = match family {
            Family::Itera => AnyInner::Itera(Inner::new(
                PageJob::fine_tune(base, text, spec, base_name, clock()).map_err(js_error)?,
            )),
            Family::Transformer => AnyInner::Transformer(Inner::new(
                PageJob::fine_tune(base, text, spec, base_name, clock()).map_err(js_error)?,
            )),
        };
        Ok(TrainingJob::of(inner))
    }

    /// A new distillation of `teacher` (`{kind: "model", bytes}` or `{kind: "llama2",
    /// checkpoint, tokenizer}`) into `student` (`{bytes, name}` of a weight file of either
    /// family, or `{family, config}` for a fresh model: family "itera" (the default) or
    /// "transformer", config that family's) on `corpus` (the teacher's stories, as
    /// `Corpus.text()` writes them) and the visitor's `texts` (`[]` for none). A teacher with the
    /// page's tokenizer (either family) distils its logits (β, T from `settings.distill`, default 0.7 and 2); a llama2.c teacher
    /// its stories (sequence-level).
    #[allow(clippy::too_many_arguments)]
    pub fn distill(
        student: JsValue,
        teacher: JsValue,
        teacher_name: &str,
        corpus: &str,
        texts: JsValue,
        tokenizer_json: &[u8],
        settings: JsValue,
    ) -> Result<TrainingJob, JsError> {
        let teacher = load_teacher(&teacher)?;
        let mut spec = distill_settings(settings)?;
        if !teacher.shares_tokenizer() {
            spec.distill = None;
        }
        let owned = sources(&texts)?;
        let sources = as_sources(&owned);
        let student_bytes = bytes_field(&student, "bytes");
        let student_name = Reflect::get(&student, &"name".into())
            .ok()
            .and_then(|n| n.as_string())
            .unwrap_or_default();
        let family = match &student_bytes {
            Some(bytes) => format::read_family(bytes).map_err(js_error)?,
            None => match Reflect::get(&student, &"family".into())
                .ok()
                .and_then(|f| f.as_string())
            {
                Some(f) => f.parse().map_err(js_error)?,
                None => Family::Itera,
            },
        };
        macro_rules! distill_as {
            ($variant:ident) => {{
                let student = match &student_bytes {
                    Some(bytes) => Start::File(bytes),
                    None => fresh_student(&student)?,
                };
                let tune = PageJob::distill(
                    student,
                    &student_name,
                    teacher,
                    teacher_name,
                    corpus,
                    &sources,
                    tokenizer_json,
                    spec,
                    clock(),
                )
                .map_err(js_error)?;
                AnyInner::$variant(Inner::new(tune))
            }};
        }
        let inner = match family {
            Family::Itera => distill_as!(Itera),
            Family::Transformer => distill_as!(Transformer),
        };
        Ok(TrainingJob::of(inner))
    }

    /// Continues a fine-tune from its checkpoint (`checkpoint()`'s bytes, either family) on the
    /// same texts, prepared (and taken from `text`).
    pub fn resume(checkpoint: &[u8], text: &mut TextTokens) -> Result<TrainingJob, JsError> {
        let family = checkpoint_family(checkpoint).map_err(js_error)?;
        let text = ResumeText::FineTune(text.take()?);
        TrainingJob::resume_as(family, checkpoint, text)
    }

    /// Continues a distillation from its checkpoint with the corpus and teacher (as
    /// `TrainingJob.distill` takes it) and the visitor's `texts` it was started with.
    pub fn resume_distill(
        checkpoint: &[u8],
        tokenizer_json: &[u8],
        texts: JsValue,
        corpus: &str,
        teacher: JsValue,
    ) -> Result<TrainingJob, JsError> {
        let owned = sources(&texts)?;
        let sources = as_sources(&owned);
        let text = ResumeText::Distill {
            tokenizer: itera_core::tokenizer::Tokenizer::from_json(tokenizer_json).map_err(js_error)?,
            sources: &sources,
            corpus,
            teacher: load_teacher(&teacher)?,
        };
        TrainingJob::resume_as(checkpoint_family(checkpoint).map_err(js_error)?, checkpoint, text)
    }

    /// `{mode, spec, text, base, params, completed, end, done, seconds, family, webgpu,
    /// backend}`: `webgpu` says whether this family's steps can run on WebGPU.
    pub fn info(&self) -> Result<JsValue, JsError> {
        let inner = self.inner.try_borrow().map_err(|_| busy())?;
        let (info, backend, family) =
            each_job!(&*inner, i => (to_js(&i.tune.info())?, i.backend.describe(), i.family()));
        let set = |k: &str, v: JsValue| {
            Reflect::set(&info, &k.into(), &v)
                .map(drop)
                .map_err(|_| js_error("info"))
        };
        set("backend", backend.into())?;
        set("family", family.as_str().into())?;
        set("webgpu", (family == Family::Itera).into())?;
        Ok(info)
    }

    /// What a `ShardWorker` of this job is built from.
    pub fn shard_setup(&self) -> Result<JsValue, JsError> {
        let inner = self.inner.try_borrow().map_err(|_| busy())?;
        to_js(&each_job!(&*inner, i => i.shard_setup()).map_err(js_error)?)
    }

    /// Steps run on this worker's CPU (one thread).
    pub fn use_cpu(&self) -> Result<(), JsError> {
        let mut inner = self.inner.try_borrow_mut().map_err(|_| busy())?;
        each_job!(&mut *inner, i => i.backend = Inner::cpu(&i.tune));
        Ok(())
    }

    /// Steps run on a pool of `workers` CPU workers: `compute(weights: Float32Array, shards:
    /// Uint32Array[])` resolves to one `{loss, grads: Float32Array}` per shard, in order.
    pub fn use_workers(&self, compute: Function, workers: u32) -> Result<(), JsError> {
        let mut inner = self.inner.try_borrow_mut().map_err(|_| busy())?;
        each_job!(&mut *inner, i => i.use_workers(compute, workers));
        Ok(())
    }

    /// Steps run on this worker's WebGPU device (after `gpu_init`), from the host state; a
    /// Transformer's job is refused (it trains on the CPU).
    pub fn use_gpu(&self) -> Result<(), JsError> {
        let mut inner = self.inner.try_borrow_mut().map_err(|_| busy())?;
        each_job!(&mut *inner, i => {
            let step = i.gpu_step(worker_gpu()?).map_err(js_error)?;
            i.backend = Backend::Gpu(step);
        });
        Ok(())
    }

    /// The tokens of step `step`'s batch (batch × seq_len), as the job draws them.
    pub fn batch_tokens(&self, step: u32) -> Result<Vec<u32>, JsError> {
        let inner = self.inner.try_borrow().map_err(|_| busy())?;
        each_job!(&*inner, i => i.job().batch(step as usize)).map_err(js_error)
    }

    /// Where the steps run ("2 CPU workers", "WebGPU: …").
    pub fn backend(&self) -> Result<String, JsError> {
        let inner = self.inner.try_borrow().map_err(|_| busy())?;
        Ok(each_job!(&*inner, i => i.backend.describe()))
    }

    /// Milliseconds of one step on the current backend, taken from the host state on a copy
    /// that is thrown away (a GPU backend is rebuilt from the host state afterwards).
    #[allow(clippy::await_holding_refcell_ref)] // see job!
    pub fn time_step(&self) -> Promise {
        with_cell(&self.inner, |cell| async move {
            job!(cell, inner);
            let ms = each_job!(&mut *inner, i => i.time_step().await)?;
            Ok(JsValue::from(ms))
        })
    }

    /// Milliseconds of one WebGPU step of a small batch (`sequences` × `seq_len` tokens from the
    /// start of the next batch) on a copy of the host state, thrown away with its device
    /// buffers. A full batch never takes less, so when this alone is slower than a full CPU
    /// step, the CPU wins without timing a full (on a software adapter, minutes-long) GPU step.
    #[allow(clippy::await_holding_refcell_ref)] // see job!
    pub fn time_gpu_probe(&self, sequences: u32, seq_len: u32) -> Promise {
        with_cell(&self.inner, move |cell| async move {
            let inner = cell.try_borrow_mut().map_err(|_| busy())?;
            let ms = each_job!(&*inner, i => i.time_gpu_probe(sequences, seq_len).await)?;
            Ok(JsValue::from(ms))
        })
    }

    /// Up to `max_steps` steps, starting none after `max_ms` (and ending before an evaluation);
    /// resolves to `{events, checkpoint, best}` — the events in order (`{type: "step" |
    /// "evaluating" | "eval" | "best" | "checkpoint" | "done", ...}`), the bytes of the last
    /// checkpoint taken and of new best weights (Uint8Arrays, or null).
    #[allow(clippy::await_holding_refcell_ref)] // see job!
    pub fn advance(&self, max_steps: u32, max_ms: f64) -> Promise {
        with_cell(&self.inner, move |cell| async move {
            job!(cell, inner);
            // The slice ends before an evaluation: the page shows it, and Stop stops before it.
            let budget = Budget {
                steps: max_steps.max(1) as usize,
                seconds: max_ms / 1000.0,
                stop_before_evaluation: true,
            };
            let a = each_job!(&mut *inner, i => i.advance(budget).await);
            let bytes = |b: Option<Vec<u8>>| b.map_or(JsValue::NULL, |b| Uint8Array::from(b.as_slice()).into());
            to_js(&Advance {
                events: a.events,
                checkpoint: bytes(a.checkpoint),
                best: bytes(a.best),
                diverged: matches!(a.error, Some(Error::Diverged { .. })),
                error: a.error.map(|e| e.to_string()),
            })
        })
    }

    /// Forgets the steps a device took since its state was last read back (after a WebGPU
    /// failure) and returns the step the run continues from; steps then run on this worker's
    /// CPU until told otherwise.
    pub fn roll_back(&self) -> Result<u32, JsError> {
        let mut inner = self.inner.try_borrow_mut().map_err(|_| busy())?;
        Ok(each_job!(&mut *inner, i => i.roll_back()) as u32)
    }

    /// The run's curves: `{loss, ce, aux, kl, lr, grad_norm, tokens_per_s}` as Float32Arrays
    /// (index i = step i + 1) and `evals: [{step, name, bits_per_byte}]`.
    pub fn history(&self) -> Result<JsValue, JsError> {
        let inner = self.inner.try_borrow().map_err(|_| busy())?;
        each_job!(&*inner, i => i.history())
    }

    /// The run as checkpoint bytes (the device's state read back first).
    #[allow(clippy::await_holding_refcell_ref)] // see job!
    pub fn checkpoint(&self) -> Promise {
        with_cell(&self.inner, |cell| async move {
            job!(cell, inner);
            let bytes = each_job!(&mut *inner, i => i.checkpoint().await).map_err(js_error)?;
            Ok(Uint8Array::from(bytes.as_slice()).into())
        })
    }

    /// The current weights as a model file in `precision` (f32, f16, q8, q4), the run's
    /// summary in its config.
    #[allow(clippy::await_holding_refcell_ref)] // see job!
    pub fn export(&self, precision: String) -> Promise {
        with_cell(&self.inner, move |cell| async move {
            let p: Precision = precision.parse().map_err(js_error)?;
            job!(cell, inner);
            let bytes = each_job!(&mut *inner, i => i.export(p).await).map_err(js_error)?;
            Ok(Uint8Array::from(bytes.as_slice()).into())
        })
    }

    /// A `Model` of the current weights in `precision` (for Generate, Compare, WebGPU): the
    /// job goes on training its own copy.
    #[allow(clippy::await_holding_refcell_ref)] // see job!
    pub fn model(&self, precision: String) -> Promise {
        with_cell(&self.inner, move |cell| async move {
            let p: Precision = precision.parse().map_err(js_error)?;
            job!(cell, inner);
            let engine = each_job!(&mut *inner, i => i.engine(p).await).map_err(js_error)?;
            Ok(Model::from_engine(engine).into())
        })
    }

    /// The teacher's story for a request (a distillation's sample beside the student's), or
    /// null for a fine-tune.
    pub fn teacher_sample(&self, request: JsValue) -> Result<JsValue, JsError> {
        let req: GenerateRequest = from_js(request, "generation settings")?;
        let inner = self.inner.try_borrow().map_err(|_| busy())?;
        Ok(each_job!(&*inner, i => i.tune.teacher_sample(&req))
            .map_err(js_error)?
            .map_or(JsValue::NULL, JsValue::from))
    }

    /// A story from the current weights (a generation request as `Model.start` takes).
    #[allow(clippy::await_holding_refcell_ref)] // see job!
    pub fn sample(&self, request: JsValue) -> Promise {
        let req: Result<GenerateRequest, JsError> = from_js(request, "generation settings");
        with_cell(&self.inner, move |cell| async move {
            let req = req?;
            job!(cell, inner);
            let text = each_job!(&mut *inner, i => i.sample(&req).await).map_err(js_error)?;
            Ok(text.into())
        })
    }
}
