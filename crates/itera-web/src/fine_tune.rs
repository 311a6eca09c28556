//! The page's fine-tune in plain Rust (no JS types, so it is tested natively): a visitor's
//! texts checked and cut into a corpus and a held-out part, the training job on them from a
//! base model, judged on that held-out part and on the built-in eval stories (so forgetting
//! shows), samples and exports from the current weights.

use itera_core::format;
use itera_core::generate::generate;
use itera_core::tokenizer::Tokenizer;
use itera_core::train::{encode_corpus, Checkpoint, Clock, EvalSet, FineTuneText, Job, JobData, Provenance, TrainSpec};
use itera_core::{Error, Precision, Result};
use serde::Serialize;

use crate::engine::GenerateRequest;

/// The page's built-in evaluation stories (also what the Compare tab scores).
pub const BUILTIN_EVAL: &str = include_str!("../../../web/eval-stories.txt");
/// The evaluation sets' names, as the page labels its curves.
pub const YOUR_TEXT: &str = "your text (held out)";
pub const BUILTIN_STORIES: &str = "built-in stories";

/// One text the visitor gave: a paste or a file, as bytes (checked to be UTF-8 here).
pub struct Source<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
}

/// What the page shows about the visitor's text before a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TextInfo {
    pub documents: usize,
    pub heldout_documents: usize,
    pub bytes: usize,
    pub heldout_bytes: usize,
    pub tokens: usize,
    pub heldout_tokens: usize,
}

/// The visitor's texts as strings, each refused by name unless it is UTF-8.
pub fn decode<'a>(sources: &[Source<'a>]) -> Result<Vec<&'a str>> {
    sources
        .iter()
        .map(|s| {
            std::str::from_utf8(s.bytes).map_err(|e| {
                Error::InvalidText(format!(
                    "{} is not UTF-8 text (invalid byte at offset {}): save it as UTF-8 and open it again",
                    s.name,
                    e.valid_up_to()
                ))
            })
        })
        .collect()
}

/// Cuts the texts into corpus + held-out part and counts their tokens.
pub fn inspect(tokenizer: &Tokenizer, texts: &[&str]) -> Result<(FineTuneText, Vec<u32>, TextInfo)> {
    let t = FineTuneText::new(texts)?;
    let stream = encode_corpus(tokenizer, &t.corpus)?;
    let heldout_tokens = if t.heldout.is_empty() {
        0
    } else {
        tokenizer.encode(&t.heldout)?.len()
    };
    let info = TextInfo {
        documents: t.documents,
        heldout_documents: t.heldout_documents,
        bytes: t.bytes,
        heldout_bytes: t.heldout_bytes,
        tokens: stream.len(),
        heldout_tokens,
    };
    Ok((t, stream, info))
}

/// A fine-tune in progress: the job and what the page shows about it.
pub struct FineTune {
    pub job: Job,
    pub text: TextInfo,
    pub base_name: String,
}

/// The job's state for the page.
#[derive(Clone, Debug, Serialize)]
pub struct JobInfo<'a> {
    pub spec: &'a TrainSpec,
    pub text: &'a TextInfo,
    pub base: &'a str,
    pub params: usize,
    pub completed: usize,
    pub end: usize,
    pub done: bool,
    pub seconds: f64,
}

fn job_data(tokenizer: Tokenizer, t: &FineTuneText, stream: Vec<u32>) -> JobData {
    let mut eval_sets = Vec::new();
    if !t.heldout.is_empty() {
        eval_sets.push(EvalSet {
            name: YOUR_TEXT.into(),
            texts: vec![t.heldout.clone()],
        });
    }
    eval_sets.push(EvalSet {
        name: BUILTIN_STORIES.into(),
        texts: vec![BUILTIN_EVAL.into()],
    });
    JobData {
        tokenizer,
        stream,
        eval_sets,
        teacher: None,
    }
}

impl FineTune {
    /// A new fine-tune of `base` (a weight file of any precision, trained in f32; the base
    /// itself is never changed) on the visitor's texts, its held-out figures taken once
    /// before the first step.
    pub fn new(
        base: &[u8],
        tokenizer_json: &[u8],
        sources: &[Source],
        spec: TrainSpec,
        base_name: &str,
        clock: Clock,
    ) -> Result<FineTune> {
        spec.validate()?;
        let weights = format::load(base)?;
        let tokenizer = Tokenizer::from_json(tokenizer_json)?;
        let (t, stream, text) = inspect(&tokenizer, &decode(sources)?)?;
        let provenance = Provenance {
            corpus: Some(format!("{} document(s) given in the page", t.documents)),
            teacher: None,
            base: Some(base_name.into()),
        };
        let mut job = Job::new(spec, &weights, job_data(tokenizer, &t, stream), provenance, clock)?;
        // The base model's figures start the held-out curves (step 0).
        job.evaluate_start()?;
        Ok(FineTune {
            job,
            text,
            base_name: base_name.into(),
        })
    }

    /// Continues a fine-tune from its checkpoint, on the same texts.
    pub fn resume(checkpoint: &[u8], tokenizer_json: &[u8], sources: &[Source], clock: Clock) -> Result<FineTune> {
        let checkpoint = Checkpoint::from_bytes(checkpoint)?;
        let tokenizer = Tokenizer::from_json(tokenizer_json)?;
        let (t, stream, text) = inspect(&tokenizer, &decode(sources)?)?;
        let base_name = checkpoint
            .state
            .weights
            .config
            .training
            .as_ref()
            .and_then(|s| s.fine_tuned_from.clone())
            .unwrap_or_default();
        let job = Job::resume(checkpoint, job_data(tokenizer, &t, stream), clock)?;
        Ok(FineTune { job, text, base_name })
    }

    pub fn info(&self) -> JobInfo<'_> {
        let j = &self.job;
        JobInfo {
            spec: j.spec(),
            text: &self.text,
            base: &self.base_name,
            params: j.state().weights.table.total_params(),
            completed: j.completed(),
            end: j.end(),
            done: j.is_done(),
            seconds: j.seconds(),
        }
    }

    /// A story from the host weights (current once the job is synced).
    pub fn sample(&self, req: &GenerateRequest) -> Result<String> {
        let w = &self.job.state().weights;
        Ok(generate(w, &self.job.data().tokenizer, &req.prompt, req.options()?, |_| true)?.text)
    }

    /// The host weights as a model file in `precision`, the run's summary in its config.
    pub fn export(&self, precision: Precision) -> Result<Vec<u8>> {
        format::save(&self.job.model().to_precision(precision))
    }
}
