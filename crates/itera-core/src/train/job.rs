//! The training job (SPEC "Training"): ONE loop for the CLI, the browser's workers and the GPU.
//!
//! A job owns the settings, the token stream and held-out texts, the weights and optimiser,
//! and the run's curves; it draws step s's batch from a generator seeded by (seed, s), takes
//! the learning rate from the schedule, runs the step on whichever `StepBackend` it is given,
//! evaluates and checkpoints on its cadence, and stops at the end. It advances in slices (a
//! step count or a time budget), reporting typed `Event`s as they happen, so a caller can
//! pause between slices, show progress, or change backend. Because every step depends only on
//! (state, seed, step), a run cut into any slices — or stopped, checkpointed and resumed —
//! takes the same steps.

use serde::Serialize;

use super::checkpoint::{Checkpoint, DataFingerprint};
use super::data::EvalSet;
use super::history::{Best, EvalPoint, History};
use super::spec::TrainSpec;
use super::step::{check_teacher, StepBackend, TrainState};
use super::summary::{DistillMode, DistilledFrom, TrainingSummary};
use super::trainer::sample_batch;
use crate::error::{Error, Result};
use crate::eval::{eval_model_with, EvalOptions, EvalReport};
use crate::family::Architecture;
use crate::format;
use crate::itera::Itera;
use crate::lm::AnyWeights;
use crate::rng::Pcg32;
use crate::tokenizer::Tokenizer;
use crate::weights::Weights;

/// Seconds on a monotonic clock (there is no clock on bare wasm32: the caller brings one).
pub type Clock = Box<dyn Fn() -> f64>;

/// How much one `advance` may do: at most `steps` steps and, after the first, no step (or
/// evaluation) that starts once `seconds` have passed; with `stop_before_evaluation`, it also
/// ends when an evaluation is next (announced by `Event::Evaluating`), so that a caller that
/// cannot act during a call (the page's worker) can show it and stop before it runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    pub steps: usize,
    pub seconds: f64,
    pub stop_before_evaluation: bool,
}

impl Budget {
    pub fn steps(steps: usize) -> Budget {
        Budget {
            steps,
            seconds: f64::INFINITY,
            stop_before_evaluation: false,
        }
    }

    pub fn seconds(seconds: f64) -> Budget {
        Budget {
            steps: usize::MAX,
            seconds,
            stop_before_evaluation: false,
        }
    }
}

/// When the current `advance` began: on the job's clock, and the session's seconds before it.
#[derive(Clone, Copy)]
struct SliceStart {
    at: f64,
    session_before: f64,
}

/// What a job reports as it advances.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Step `step` (counted from 1) is done.
    Step {
        step: usize,
        loss: f32,
        ce: f32,
        aux: f32,
        kl: f32,
        lr: f32,
        grad_norm: f32,
        /// Tokens per second over this session of the run.
        tokens_per_s: f64,
        /// Seconds spent advancing in this session.
        elapsed_s: f64,
        /// Per MoE layer: the fraction of routed slots each expert received, and the layer's
        /// load-balancing loss (empty where the backend does not report routing).
        expert_load: Vec<Vec<f32>>,
        aux_layers: Vec<f32>,
    },
    /// The evaluation after `step` steps comes next: `sets` held-out sets of at most `tokens`
    /// tokens each (`Budget::stop_before_evaluation` ends the slice here).
    Evaluating { step: usize, sets: usize, tokens: usize },
    /// Held-out bits per byte of every evaluation set after `step` steps.
    Eval { step: usize, results: Vec<EvalResult> },
    /// The weights after `step` steps score the lowest held-out BPB of the judged set (the
    /// first) so far: they are `bytes`, an f32 model file with the run's summary.
    Best {
        step: usize,
        set: String,
        bits_per_byte: f64,
        #[serde(skip)]
        bytes: Vec<u8>,
    },
    /// A checkpoint of the run after `step` steps (`Checkpoint::to_bytes`).
    Checkpoint {
        step: usize,
        #[serde(skip)]
        bytes: Vec<u8>,
    },
    /// The run reached its last step, or stopped early (`stopped_early` says why).
    Done {
        step: usize,
        seconds: f64,
        stopped_early: Option<EarlyStop>,
    },
}

/// Why a run ended before its last step: `patience` evaluations in a row did not lower the
/// judged set's best figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EarlyStop {
    pub patience: usize,
    pub set: String,
    pub best: Best,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalResult {
    pub name: String,
    pub bits_per_byte: f64,
}

/// What a job trains on and is judged by.
pub struct JobData {
    pub tokenizer: Tokenizer,
    /// The training text's tokens (`data::encode_corpus`).
    pub stream: Vec<u32>,
    /// Held-out sets scored at each evaluation.
    pub eval_sets: Vec<EvalSet>,
    /// The distillation teacher (required exactly when the spec distils).
    pub teacher: Option<AnyWeights>,
}

/// Where a run's inputs came from, recorded in its summary.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Provenance {
    pub corpus: Option<String>,
    /// The teacher: of the logits when the spec distils, else of the corpus (sequence-level).
    pub teacher: Option<String>,
    /// The model a fine-tune starts from.
    pub base: Option<String>,
}

pub struct Job<A: Architecture = Itera> {
    spec: TrainSpec,
    data: JobData,
    provenance: Provenance,
    /// Host copy of the weights and optimiser; behind `completed` on a device until `sync`.
    state: TrainState<A>,
    history: History,
    /// Steps taken (by any backend).
    completed: usize,
    /// The run stops after this step (the spec's `steps` unless told otherwise).
    end: usize,
    clock: Clock,
    /// Seconds of earlier sessions of this run (from the checkpoint's summary).
    prior_seconds: f64,
    /// Seconds spent in `advance` in this session, and the step count when it began.
    session_seconds: f64,
    session_first_step: usize,
}

/// How a job starts: the three ways the CLI (`--init`, `--config`, `--resume`) and the page (a
/// base model, a fresh student, a saved job) begin one, built by `Job::begin`.
#[allow(clippy::large_enum_variant)]
pub enum Base<'a, A: Architecture = Itera> {
    /// A new run from these weights, with its settings and provenance.
    New(Start<'a, A>, NewRun),
    /// A run's checkpoint: it continues with its own settings and provenance, on the same data.
    Resume(Checkpoint<A>),
}

/// The weights a new run starts from.
pub enum Start<'a, A: Architecture = Itera> {
    /// A model file of the family (any precision; trained in f32): a fine-tune, whose
    /// vocabulary must be the job's tokenizer's.
    File(&'a [u8]),
    /// A fresh model of this shape, its vocabulary the job's tokenizer's, initialised from the
    /// spec's seed.
    Fresh(A::Config),
}

/// What a new run is given beside its weights.
pub struct NewRun {
    pub spec: TrainSpec,
    pub provenance: Provenance,
}

impl<A: Architecture> Job<A> {
    /// A job from `base` on `data`: the one builder of every front end.
    pub fn begin(base: Base<'_, A>, data: JobData, clock: Clock) -> Result<Job<A>> {
        let (start, run) = match base {
            Base::Resume(checkpoint) => return Job::resume(checkpoint, data, clock),
            Base::New(start, run) => (start, run),
        };
        let weights = match start {
            Start::File(bytes) => {
                let w = crate::format::load_as::<A>(bytes)?;
                let (model, tokenizer) = (A::vocab_size(&w.config), data.tokenizer.vocab_size());
                if model != tokenizer {
                    return Err(Error::Tokenizer(format!(
                        "the base model has {model} token ids but the tokenizer has {tokenizer}: it was trained with another tokenizer"
                    )));
                }
                w
            }
            Start::Fresh(config) => {
                let vocab = data.tokenizer.vocab_size();
                let config = A::with_tokenizer(&config, vocab, Some("tokenizer.json".into()));
                A::init_random(&config, run.spec.seed)?
            }
        };
        Job::new(run.spec, &weights, data, run.provenance, clock)
    }

    /// A new run from `base` (any precision; trained in f32, the base itself untouched).
    pub fn new(
        spec: TrainSpec,
        base: &Weights<A>,
        data: JobData,
        provenance: Provenance,
        clock: Clock,
    ) -> Result<Job<A>> {
        spec.validate()?;
        let state = TrainState::new(base, spec.weight_decay as f32);
        Job::start(spec, state, data, provenance, History::default(), 0.0, clock)
    }

    /// Continues the run of `checkpoint` on the same data (refused if the tokens differ).
    pub fn resume(checkpoint: Checkpoint<A>, data: JobData, clock: Clock) -> Result<Job<A>> {
        checkpoint
            .data
            .check_resume(&DataFingerprint::of(&data.stream, &data.tokenizer))?;
        let summary = A::training(&checkpoint.state.weights.config)
            .cloned()
            .unwrap_or_default();
        let provenance = Provenance {
            corpus: summary.corpus,
            teacher: summary.distilled_from.map(|d| d.teacher),
            base: summary.fine_tuned_from,
        };
        Job::start(
            checkpoint.spec,
            checkpoint.state,
            data,
            provenance,
            checkpoint.history,
            summary.seconds,
            clock,
        )
    }

    fn start(
        spec: TrainSpec,
        state: TrainState<A>,
        data: JobData,
        provenance: Provenance,
        history: History,
        prior_seconds: f64,
        clock: Clock,
    ) -> Result<Job<A>> {
        let w = &state.weights;
        if data.tokenizer.vocab_size() != A::vocab_size(&w.config) {
            return Err(Error::Tokenizer(format!(
                "the tokenizer has {} ids but the model's vocabulary is {}",
                data.tokenizer.vocab_size(),
                A::vocab_size(&w.config)
            )));
        }
        match (&data.teacher, spec.distill) {
            (Some(t), Some(_)) => check_teacher(w, t)?,
            (None, None) => {}
            (None, Some(_)) => return Err(Error::setting("distill", "set", "a teacher model to distil from")),
            (Some(_), None) => return Err(Error::setting("distill", "not set", "β and T when a teacher is given")),
        }
        let context = A::max_context(&w.config);
        if spec.seq_len > context {
            return Err(Error::setting(
                "seq_len",
                spec.seq_len,
                format!("at most the model's context (max_seq_len {context})"),
            ));
        }
        if data.stream.len() < spec.seq_len {
            return Err(Error::InvalidSetting {
                name: "seq_len",
                value: format!("{} (the training text has {} tokens)", spec.seq_len, data.stream.len()),
                expected: "at most the number of tokens in the training text: give more text or shorter sequences"
                    .into(),
            });
        }
        if spec.patience > 0 && data.eval_sets.is_empty() {
            return Err(Error::setting(
                "patience",
                spec.patience,
                "0 when the run has no held-out text to judge by",
            ));
        }
        let completed = state.opt.step;
        if history.len() != completed {
            return Err(Error::Metadata(format!(
                "the run's curves hold {} steps but its optimiser {completed}",
                history.len()
            )));
        }
        let mut job = Job {
            end: spec.steps,
            spec,
            data,
            provenance,
            state,
            history,
            completed,
            clock,
            prior_seconds,
            session_seconds: 0.0,
            session_first_step: completed,
        };
        // A run that stopped early stays stopped when it is loaded again.
        if job.early_stop().is_some() && job.history.evals.iter().any(|e| e.step == completed) {
            job.end = completed;
        }
        Ok(job)
    }

    pub fn spec(&self) -> &TrainSpec {
        &self.spec
    }

    pub fn data(&self) -> &JobData {
        &self.data
    }

    /// The host copy of the run's weights and optimiser (current after `sync`).
    pub fn state(&self) -> &TrainState<A> {
        &self.state
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Steps taken.
    pub fn completed(&self) -> usize {
        self.completed
    }

    /// The step the run stops after.
    pub fn end(&self) -> usize {
        self.end
    }

    /// The last step is taken and its evaluation done.
    pub fn is_done(&self) -> bool {
        self.completed >= self.end && !self.evaluation_due()
    }

    /// The evaluation after the step just taken has not run yet (it runs first when the job
    /// advances; a checkpoint taken meanwhile is one without it, and a resume runs it).
    pub fn evaluation_due(&self) -> bool {
        let n = self.completed;
        n > 0
            && !self.data.eval_sets.is_empty()
            && (n.is_multiple_of(self.spec.eval_every) || n >= self.end)
            && !self.history.evals.iter().any(|e| e.step == n)
    }

    /// The set whose figure picks the best weights and the early stop: the first one (the
    /// held-out part of the training text where there is one).
    pub fn judged_set(&self) -> Option<&str> {
        self.data.eval_sets.first().map(|s| s.name.as_str())
    }

    /// The lowest figure of the judged set so far (step 0 is the weights the run began from).
    pub fn best(&self) -> Option<Best> {
        self.history.best(self.judged_set()?)
    }

    /// Why the run ended before its last step, once it has (`early_stop` at its end).
    pub fn stopped_early(&self) -> Option<EarlyStop> {
        self.early_stop()
            .filter(|_| self.is_done() && self.completed < self.spec.steps)
    }

    /// Why the run stops early, once `patience` evaluations in a row have not beaten the best.
    pub fn early_stop(&self) -> Option<EarlyStop> {
        let patience = self.spec.patience;
        let best = self.best().filter(|b| patience > 0 && b.evals_since >= patience)?;
        Some(EarlyStop {
            patience,
            set: self.judged_set()?.to_string(),
            best,
        })
    }

    /// Stops the run after `step` (evaluating and checkpointing there) while keeping the
    /// schedule of the spec's `steps`: a long run in pieces.
    pub fn stop_at(&mut self, step: usize) {
        self.end = step.clamp(self.completed, self.spec.steps);
    }

    /// Tokens of step `step`'s batch: windows drawn by the generator (seed, step).
    pub fn batch(&self, step: usize) -> Result<Vec<u32>> {
        let s = &self.spec;
        sample_batch(
            &self.data.stream,
            s.batch,
            s.seq_len,
            &mut Pcg32::with_stream(s.seed, step as u64),
        )
    }

    /// Takes steps on `backend` until the budget is spent or the run is done, reporting each
    /// event to `on_event` as it happens (a checkpoint's bytes, say, while the state is that
    /// step's). An error (a diverged step, a lost device) leaves every completed step in place.
    pub async fn advance<B: StepBackend<A>>(
        &mut self,
        backend: &mut B,
        budget: Budget,
        on_event: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<()> {
        let slice = SliceStart {
            at: (self.clock)(),
            session_before: self.session_seconds,
        };
        let mut taken = 0;
        loop {
            let within = taken == 0 || (self.clock)() - slice.at < budget.seconds;
            let result = if self.evaluation_due() && within {
                self.finish_evaluation(backend, slice, on_event).await
            } else if !self.is_done() && taken < budget.steps && within {
                taken += 1;
                self.one_step(backend, slice, on_event).await
            } else {
                return Ok(());
            };
            self.session_seconds = self.elapsed(slice);
            result?;
            if budget.stop_before_evaluation && self.evaluation_due() {
                return Ok(());
            }
        }
    }

    async fn one_step<B: StepBackend<A>>(
        &mut self,
        backend: &mut B,
        slice: SliceStart,
        on_event: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<()> {
        let step = self.completed;
        let tokens = self.batch(step)?;
        let lr = self.spec.schedule().at(step);
        let report = backend
            .step(&mut self.state, &tokens, lr, self.data.teacher.as_ref())
            .await?;
        self.completed += 1;
        let elapsed = self.elapsed(slice);
        let done = self.completed - self.session_first_step;
        // 0 until the clock has moved (a clock that never moves reads 0, not infinity).
        let tokens_per_s = if elapsed > 0.0 {
            (done * self.spec.tokens_per_step()) as f64 / elapsed
        } else {
            0.0
        };
        self.history.push(&report, tokens_per_s);
        let l = report.loss;
        on_event(Event::Step {
            step: self.completed,
            loss: l.total,
            ce: l.ce,
            aux: l.aux,
            kl: l.kl,
            lr: report.lr,
            grad_norm: report.grad_norm,
            tokens_per_s,
            elapsed_s: elapsed,
            expert_load: report.routing.fractions(A::n_experts(&self.state.weights.config)),
            aux_layers: report.routing.aux.clone(),
        })?;
        if self.evaluation_due() {
            on_event(Event::Evaluating {
                step: self.completed,
                sets: self.data.eval_sets.len(),
                tokens: self.eval_tokens(),
            })?;
            return Ok(());
        }
        self.end_of_step(backend, slice, on_event).await
    }

    /// The evaluation after the step just taken: its figures, the best weights when they
    /// improved, the early stop when patience ran out; then the step's checkpoint and end.
    async fn finish_evaluation<B: StepBackend<A>>(
        &mut self,
        backend: &mut B,
        slice: SliceStart,
        on_event: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<()> {
        let n = self.completed;
        backend.sync(&mut self.state).await?;
        let results = self.evaluate()?;
        self.record_evals(n, &results);
        on_event(Event::Eval { step: n, results })?;
        if let (Some(best), Some(set)) = (self.best(), self.judged_set()) {
            if best.step == n {
                on_event(Event::Best {
                    step: n,
                    set: set.to_string(),
                    bits_per_byte: best.bits_per_byte,
                    bytes: format::save(&self.model())?,
                })?;
            }
        }
        if self.early_stop().is_some() {
            self.end = n;
        }
        self.end_of_step(backend, slice, on_event).await
    }

    /// The checkpoint of step `completed` when one is due, and the run's end when it is last.
    async fn end_of_step<B: StepBackend<A>>(
        &mut self,
        backend: &mut B,
        slice: SliceStart,
        on_event: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<()> {
        let n = self.completed;
        let last = n >= self.end;
        if n.is_multiple_of(self.spec.checkpoint_every) || last {
            backend.sync(&mut self.state).await?;
            self.session_seconds = self.elapsed(slice);
            let bytes = self.checkpoint()?.to_bytes()?;
            on_event(Event::Checkpoint { step: n, bytes })?;
        }
        if last {
            on_event(Event::Done {
                step: n,
                seconds: self.seconds(),
                stopped_early: self.stopped_early(),
            })?;
        }
        Ok(())
    }

    /// Makes the host state current (a device's weights and moments read back).
    pub async fn sync<B: StepBackend<A>>(&mut self, backend: &mut B) -> Result<()> {
        backend.sync(&mut self.state).await
    }

    /// Forgets the steps a device took since the host state was last synced, so that another
    /// backend continues from the host state; returns the step it continues from.
    pub fn roll_back_to_host_state(&mut self) -> usize {
        self.completed = self.state.opt.step;
        self.history.truncate(self.completed);
        self.session_first_step = self.session_first_step.min(self.completed);
        self.completed
    }

    /// Scores a run that has not stepped yet and records it as the evaluation at step 0 (the
    /// curves then start from the base model's figures); does nothing once it has stepped.
    pub fn evaluate_start(&mut self) -> Result<()> {
        if self.completed > 0 || self.history.evals.iter().any(|e| e.step == 0) {
            return Ok(());
        }
        let results = self.evaluate()?;
        self.record_evals(0, &results);
        Ok(())
    }

    fn record_evals(&mut self, step: usize, results: &[EvalResult]) {
        self.history.evals.extend(results.iter().map(|r| EvalPoint {
            step,
            name: r.name.clone(),
            bits_per_byte: r.bits_per_byte,
        }));
    }

    /// Seconds of this session of the run, at the clock's now, for a slice begun at `slice`.
    fn elapsed(&self, slice: SliceStart) -> f64 {
        slice.session_before + ((self.clock)() - slice.at)
    }

    /// Held-out bits per byte of every evaluation set, from the host state.
    pub fn evaluate(&self) -> Result<Vec<EvalResult>> {
        let budget = self.eval_tokens();
        self.data
            .eval_sets
            .iter()
            .map(|set| {
                let mut r = EvalReport::default();
                for text in &set.texts {
                    let left = budget - r.tokens;
                    if left == 0 {
                        break;
                    }
                    let opts = EvalOptions {
                        max_tokens: Some(left),
                        ..EvalOptions::default()
                    };
                    r.merge(&eval_model_with(&self.state.weights, &self.data.tokenizer, text, opts)?);
                }
                Ok(EvalResult {
                    name: set.name.clone(),
                    bits_per_byte: r.bits_per_byte(),
                })
            })
            .collect()
    }

    /// The most tokens each evaluation set is scored on (`TrainSpec::eval_tokens`): its first
    /// ones, the same at every evaluation.
    pub fn eval_tokens(&self) -> usize {
        self.spec.eval_tokens(self.data.eval_sets.len())
    }

    /// Seconds spent stepping over every session of the run.
    pub fn seconds(&self) -> f64 {
        self.prior_seconds + self.session_seconds
    }

    /// How the current weights were made.
    pub fn summary(&self) -> TrainingSummary {
        let s = &self.spec;
        TrainingSummary {
            steps: self.state.opt.step,
            batch: s.batch,
            seq_len: s.seq_len,
            corpus: self.provenance.corpus.clone(),
            corpus_tokens: self.data.stream.len(),
            seconds: self.seconds(),
            seed: s.seed,
            lr: s.lr,
            distilled_from: self.provenance.teacher.clone().map(|teacher| match s.distill {
                Some(d) => DistilledFrom {
                    teacher,
                    mode: DistillMode::Logits,
                    beta: d.beta,
                    temperature: d.temperature,
                },
                None => DistilledFrom {
                    teacher,
                    mode: DistillMode::Sequence,
                    beta: 0.0,
                    temperature: 1.0,
                },
            }),
            fine_tuned_from: self.provenance.base.clone(),
        }
    }

    /// The host state's weights (f32) with the run's summary in their config.
    pub fn model(&self) -> Weights<A> {
        let mut w = self.state.weights.clone();
        *A::training_mut(&mut w.config) = Some(self.summary());
        w
    }

    /// The host state as a checkpoint (sync a device first).
    pub fn checkpoint(&self) -> Result<Checkpoint<A>> {
        let mut state = self.state.clone();
        *A::training_mut(&mut state.weights.config) = Some(self.summary());
        Ok(Checkpoint {
            spec: self.spec.clone(),
            state,
            data: DataFingerprint::of(&self.data.stream, &self.data.tokenizer),
            history: {
                let mut h = self.history.clone();
                h.truncate(self.state.opt.step);
                h
            },
        })
    }
}
