//! The page's training jobs in plain Rust (no JS types, so they are tested natively): a
//! fine-tune of a loaded model of either family on the visitor's texts, or a distillation of a
//! teacher (an SSM + MoE model, or a llama2.c checkpoint) into a student of either family (a
//! loaded model, or a fresh one of a preset or custom shape) on stories the teacher wrote,
//! with the visitor's texts if given.
//! Both are judged on the built-in eval stories and on the held-back part of the visitor's
//! texts (so forgetting shows), and sample and export from the current weights.

use itera_core::format;
use itera_core::generate::generate;
use itera_core::tokenizer::{Tokenizer, END_OF_TEXT};
use itera_core::train::{
    encode_corpus, encode_corpus_with, Base, Best, Checkpoint, Clock, EarlyStop, EvalResult, EvalSet, FineTuneText,
    Job, JobData, NewRun, Provenance, Start, Teacher, TrainSpec,
};
use itera_core::{Architecture, Error, Itera, Precision, Result};
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

/// What the page shows about the text a job trains on before it runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
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

/// The most text, in bytes, the page trains on (all the texts of one job together). The
/// training worker holds the text while tokenizing (its bytes, then the corpus cut from it),
/// its ids (4 bytes a token, about one per 3.3 bytes of English) and the model with its
/// optimiser — about 3 bytes of wasm memory per byte of text on top of the model, so 256 MiB
/// at this limit, well inside the 4 GiB a wasm32 memory can reach and the 1–2 GiB a phone's
/// tab gets. Tokenizing it takes about 16 s in the browser (measured: a 48 MiB file read and
/// tokenized in 12 s in headless Chromium on the 2-core development machine, ~4 MB/s), and the
/// saved job keeps a copy of the text in the site's storage (OPFS), whose quota the page checks
/// before starting. Larger texts train with `cargo xtask train --text`.
pub const MAX_PAGE_TEXT_BYTES: usize = 64 << 20;

/// The visitor's texts, cut into a corpus and a held-out part and tokenized: made once when
/// the texts are given (telling its progress), then handed to the job that trains on them.
pub struct PreparedText {
    pub tokenizer: Tokenizer,
    /// The training stream (`FineTuneText::corpus` tokenized).
    pub stream: Vec<u32>,
    /// The held-out documents (`FineTuneText::heldout`).
    pub heldout: String,
    pub info: TextInfo,
}

impl PreparedText {
    /// Cuts and tokenizes `sources`, telling `progress` (bytes done, bytes in all) after each
    /// piece; refuses texts over `MAX_PAGE_TEXT_BYTES`, not UTF-8, or with no words.
    pub fn new(
        tokenizer: Tokenizer,
        sources: &[Source],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<PreparedText> {
        let total: usize = sources.iter().map(|s| s.bytes.len()).sum();
        if total > MAX_PAGE_TEXT_BYTES {
            return Err(Error::InvalidText(format!(
                "{} {} {:.1} MiB of text; the page trains on at most {} MiB (the text, its tokens and the model \
                 share this tab's memory, and a copy is kept in the browser to resume): give less text, or train \
                 on it natively with `cargo xtask train --text FILE`",
                sources.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
                if sources.len() == 1 { "is" } else { "are together" },
                total as f64 / (1 << 20) as f64,
                MAX_PAGE_TEXT_BYTES >> 20
            )));
        }
        let t = FineTuneText::new(&decode(sources)?)?;
        let all = t.corpus.len() + t.heldout.len();
        let stream = encode_corpus_with(&tokenizer, &t.corpus, &mut |done| progress(done, all))?;
        let heldout_tokens = if t.heldout.is_empty() {
            0
        } else {
            let at = t.corpus.len();
            encode_corpus_with(&tokenizer, &t.heldout, &mut |done| progress(at + done, all))?.len()
        };
        let info = TextInfo {
            documents: t.documents,
            heldout_documents: t.heldout_documents,
            bytes: t.bytes,
            heldout_bytes: t.heldout_bytes,
            tokens: stream.len(),
            heldout_tokens,
        };
        Ok(PreparedText {
            tokenizer,
            stream,
            heldout: t.heldout,
            info,
        })
    }

    /// The job's data: the stream, and the held-out part and the built-in stories to judge by.
    fn into_data(self) -> (JobData, TextInfo) {
        let data = JobData {
            eval_sets: eval_sets(&self.heldout),
            tokenizer: self.tokenizer,
            stream: self.stream,
            teacher: None,
        };
        (data, self.info)
    }
}

/// What a resumed job trains on: a fine-tune's prepared texts, or a distillation's corpus,
/// teacher and the visitor's texts.
#[allow(clippy::large_enum_variant)] // one per resume
pub enum ResumeText<'a> {
    FineTune(PreparedText),
    Distill {
        tokenizer: Tokenizer,
        sources: &'a [Source<'a>],
        corpus: &'a str,
        teacher: Teacher,
    },
}

/// A job running in the page, and what the page shows about it.
pub struct PageJob<A: Architecture = Itera> {
    pub job: Job<A>,
    pub text: TextInfo,
    pub base_name: String,
    pub teacher: Option<Teacher>,
    pub teacher_name: Option<String>,
    /// The teacher's bits per byte on each evaluation set (a distillation's target).
    pub teacher_bpb: Vec<EvalResult>,
}

/// The job's state for the page.
#[derive(Clone, Debug, Serialize)]
pub struct JobInfo<'a> {
    /// "fine-tune", "logits" (logit distillation) or "sequence" (sequence-level).
    pub mode: &'static str,
    pub spec: &'a TrainSpec,
    pub text: &'a TextInfo,
    pub base: &'a str,
    pub teacher: Option<&'a str>,
    pub teacher_params: Option<usize>,
    pub teacher_bpb: &'a [EvalResult],
    pub params: usize,
    pub completed: usize,
    pub end: usize,
    pub done: bool,
    pub seconds: f64,
    /// The most tokens each evaluation set is scored on (`TrainSpec::eval_tokens`).
    pub eval_tokens: usize,
    /// The set that picks the best weights, and its best figure so far (step 0: the start).
    pub judged_set: Option<&'a str>,
    pub best: Option<Best>,
    /// Why the run ended before its last step, if it did.
    pub stopped_early: Option<EarlyStop>,
}

fn eval_sets(heldout: &str) -> Vec<EvalSet> {
    let mut sets = Vec::new();
    if !heldout.is_empty() {
        sets.push(EvalSet {
            name: YOUR_TEXT.into(),
            texts: vec![heldout.into()],
        });
    }
    sets.push(EvalSet {
        name: BUILTIN_STORIES.into(),
        texts: vec![BUILTIN_EVAL.into()],
    });
    sets
}

/// The visitor's texts cut into documents and a held-out part (none given: nothing).
fn visitor_text(sources: &[Source]) -> Result<Option<FineTuneText>> {
    if sources.is_empty() {
        return Ok(None);
    }
    Ok(Some(FineTuneText::new(&decode(sources)?)?))
}

/// What a distillation trains on: the teacher's corpus, then the visitor's documents.
fn distill_text(corpus: &str, visitor: Option<&FineTuneText>) -> String {
    let mut text = corpus.to_string();
    if let Some(v) = visitor {
        text.push_str(&v.corpus);
    }
    text
}

fn stories_in(corpus: &str) -> usize {
    corpus.split(END_OF_TEXT).filter(|s| !s.trim().is_empty()).count()
}

/// What a distillation trains on, made once for a new job and again for its resume: the
/// corpus (the teacher's stories) and the visitor's texts as one stream, the held-out sets,
/// and the teacher's bits per byte on them (the figure the student is compared with).
struct DistillData {
    data: JobData,
    text: TextInfo,
    teacher_bpb: Vec<EvalResult>,
    visitor_documents: usize,
}

fn distill_data(
    tokenizer: Tokenizer,
    corpus: &str,
    sources: &[Source],
    teacher: &Teacher,
    logits: bool,
) -> Result<DistillData> {
    let stories = stories_in(corpus);
    if stories == 0 {
        return Err(Error::EmptyInput("the teacher's corpus (write some stories first)"));
    }
    let visitor = visitor_text(sources)?;
    let stream = encode_corpus(&tokenizer, &distill_text(corpus, visitor.as_ref()))?;
    let heldout = visitor.as_ref().map_or("", |v| v.heldout.as_str());
    let eval_sets = eval_sets(heldout);
    let teacher_bpb = eval_sets
        .iter()
        .map(|s| {
            Ok(EvalResult {
                name: s.name.clone(),
                bits_per_byte: teacher.bits_per_byte(&tokenizer, &s.texts)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let visitor_documents = visitor.as_ref().map_or(0, |v| v.documents);
    let text = TextInfo {
        documents: stories + visitor_documents,
        heldout_documents: visitor.as_ref().map_or(0, |v| v.heldout_documents),
        bytes: corpus.len() + visitor.as_ref().map_or(0, |v| v.bytes),
        heldout_bytes: visitor.as_ref().map_or(0, |v| v.heldout_bytes),
        tokens: stream.len(),
        heldout_tokens: if heldout.is_empty() {
            0
        } else {
            encode_corpus(&tokenizer, heldout)?.len()
        },
    };
    let teacher = if logits { teacher.logits().cloned() } else { None };
    Ok(DistillData {
        data: JobData {
            tokenizer,
            stream,
            eval_sets,
            teacher,
        },
        text,
        teacher_bpb,
        visitor_documents,
    })
}

impl<A: Architecture> PageJob<A> {
    /// A new fine-tune of `base` (a weight file of any precision, trained in f32; the base
    /// itself is never changed) on the visitor's texts, its held-out figures taken once
    /// before the first step.
    pub fn fine_tune(base: &[u8], text: PreparedText, spec: TrainSpec, base_name: &str, clock: Clock) -> Result<Self> {
        spec.validate()?;
        let provenance = Provenance {
            corpus: Some(format!("{} document(s) given in the page", text.info.documents)),
            teacher: None,
            base: Some(base_name.into()),
        };
        let (data, text) = text.into_data();
        let mut job = Job::begin(Base::New(Start::File(base), NewRun { spec, provenance }), data, clock)?;
        // The base model's figures start the held-out curves (step 0).
        job.evaluate_start()?;
        Ok(Self {
            job,
            text,
            base_name: base_name.into(),
            teacher: None,
            teacher_name: None,
            teacher_bpb: Vec::new(),
        })
    }

    /// A new distillation of `teacher` into `student` (a model file named `student_name`, or a
    /// fresh model of a shape) on `corpus` (stories the teacher wrote,
    /// `train::corpus` format) and the visitor's texts if any. A teacher of either family
    /// distils its logits (the spec's `distill`, required); a llama2.c teacher only its text
    /// (the spec must not distil: its tokenizer is not the student's).
    #[allow(clippy::too_many_arguments)]
    pub fn distill(
        student: Start<A>,
        student_name: &str,
        teacher: Teacher,
        teacher_name: &str,
        corpus: &str,
        sources: &[Source],
        tokenizer_json: &[u8],
        spec: TrainSpec,
        clock: Clock,
    ) -> Result<Self> {
        spec.validate()?;
        if spec.distill.is_some() && !teacher.shares_tokenizer() {
            return Err(Error::setting(
                "distill",
                "β and T",
                "none for a llama2.c teacher: its tokenizer is not the student's, so the student learns its stories (sequence-level)",
            ));
        }
        let tokenizer = Tokenizer::from_json(tokenizer_json)?;
        let base_name = match student {
            Start::File(_) => student_name.to_string(),
            Start::Fresh(_) => String::new(),
        };
        let d = distill_data(tokenizer, corpus, sources, &teacher, spec.distill.is_some())?;
        let stories = d.text.documents - d.visitor_documents;
        let provenance = Provenance {
            corpus: Some(format!(
                "{stories} stories written by {teacher_name} in the page{}",
                match d.visitor_documents {
                    0 => String::new(),
                    n => format!(" and {n} of the visitor's documents"),
                }
            )),
            teacher: Some(teacher_name.into()),
            base: (!base_name.is_empty()).then(|| base_name.clone()),
        };
        let mut job = Job::begin(Base::New(student, NewRun { spec, provenance }), d.data, clock)?;
        job.evaluate_start()?;
        Ok(Self {
            job,
            text: d.text,
            base_name,
            teacher: Some(teacher),
            teacher_name: Some(teacher_name.into()),
            teacher_bpb: d.teacher_bpb,
        })
    }

    /// Continues a job from its checkpoint, on the same texts (and, for a distillation, the
    /// same corpus and teacher).
    pub fn resume(checkpoint: &[u8], text: ResumeText, clock: Clock) -> Result<Self> {
        let checkpoint = Checkpoint::<A>::from_bytes(checkpoint)?;
        let summary = A::training(&checkpoint.state.weights.config)
            .cloned()
            .unwrap_or_default();
        let base_name = summary.fine_tuned_from.clone().unwrap_or_default();
        let (tokenizer, sources, corpus, teacher) = match text {
            ResumeText::Distill {
                tokenizer,
                sources,
                corpus,
                teacher,
            } => (tokenizer, sources, corpus, teacher),
            ResumeText::FineTune(text) => {
                let (data, text) = text.into_data();
                let job = Job::begin(Base::Resume(checkpoint), data, clock)?;
                return Ok(Self {
                    job,
                    text,
                    base_name,
                    teacher: None,
                    teacher_name: None,
                    teacher_bpb: Vec::new(),
                });
            }
        };
        let d = distill_data(tokenizer, corpus, sources, &teacher, checkpoint.spec.distill.is_some())?;
        let teacher_name = summary.distilled_from.map(|d| d.teacher);
        let job = Job::begin(Base::Resume(checkpoint), d.data, clock)?;
        Ok(Self {
            job,
            text: d.text,
            base_name,
            teacher: Some(teacher),
            teacher_name,
            teacher_bpb: d.teacher_bpb,
        })
    }

    pub fn info(&self) -> JobInfo<'_> {
        let j = &self.job;
        let mode = match (&self.teacher, j.spec().distill) {
            (None, _) => "fine-tune",
            (Some(_), Some(_)) => "logits",
            (Some(_), None) => "sequence",
        };
        JobInfo {
            mode,
            spec: j.spec(),
            text: &self.text,
            base: &self.base_name,
            teacher: self.teacher_name.as_deref(),
            teacher_params: self.teacher.as_ref().map(Teacher::params),
            teacher_bpb: &self.teacher_bpb,
            params: j.state().weights.total_params(),
            completed: j.completed(),
            end: j.end(),
            done: j.is_done(),
            seconds: j.seconds(),
            eval_tokens: j.eval_tokens(),
            judged_set: j.judged_set(),
            best: j.best(),
            stopped_early: j.stopped_early(),
        }
    }

    /// A story from the host weights (current once the job is synced).
    pub fn sample(&self, req: &GenerateRequest) -> Result<String> {
        let w = &self.job.state().weights;
        Ok(generate(w, &self.job.data().tokenizer, &req.prompt, req.options()?, |_| true)?.text)
    }

    /// The teacher's story for the same request (a distillation's side-by-side sample).
    pub fn teacher_sample(&self, req: &GenerateRequest) -> Result<Option<String>> {
        self.teacher
            .as_ref()
            .map(|t| t.sample(&self.job.data().tokenizer, &req.prompt, req.options()?))
            .transpose()
    }

    /// The host weights as a model file in `precision`, the run's summary in its config.
    pub fn export(&self, precision: Precision) -> Result<Vec<u8>> {
        format::save(&self.job.model().to_precision(precision))
    }
}
