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
    encode_corpus, Base, Checkpoint, Clock, EvalResult, EvalSet, FineTuneText, Job, JobData, NewRun, Provenance, Start,
    Teacher, TrainSpec,
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

/// Cuts the texts into corpus + held-out part and counts their tokens.
pub fn inspect(tokenizer: &Tokenizer, texts: &[&str]) -> Result<(FineTuneText, Vec<u32>, TextInfo)> {
    let t = FineTuneText::new(texts)?;
    let stream = encode_corpus(tokenizer, &t.corpus)?;
    let heldout_tokens = if t.heldout.is_empty() {
        0
    } else {
        encode_corpus(tokenizer, &t.heldout)?.len()
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
    pub fn fine_tune(
        base: &[u8],
        tokenizer_json: &[u8],
        sources: &[Source],
        spec: TrainSpec,
        base_name: &str,
        clock: Clock,
    ) -> Result<Self> {
        spec.validate()?;
        let tokenizer = Tokenizer::from_json(tokenizer_json)?;
        let (t, stream, text) = inspect(&tokenizer, &decode(sources)?)?;
        let provenance = Provenance {
            corpus: Some(format!("{} document(s) given in the page", t.documents)),
            teacher: None,
            base: Some(base_name.into()),
        };
        let data = JobData {
            tokenizer,
            stream,
            eval_sets: eval_sets(&t.heldout),
            teacher: None,
        };
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
    pub fn resume(
        checkpoint: &[u8],
        tokenizer_json: &[u8],
        sources: &[Source],
        distill: Option<(&str, Teacher)>,
        clock: Clock,
    ) -> Result<Self> {
        let checkpoint = Checkpoint::<A>::from_bytes(checkpoint)?;
        let tokenizer = Tokenizer::from_json(tokenizer_json)?;
        let summary = A::training(&checkpoint.state.weights.config)
            .cloned()
            .unwrap_or_default();
        let base_name = summary.fine_tuned_from.clone().unwrap_or_default();
        let Some((corpus, teacher)) = distill else {
            let (t, stream, text) = inspect(&tokenizer, &decode(sources)?)?;
            let data = JobData {
                tokenizer,
                stream,
                eval_sets: eval_sets(&t.heldout),
                teacher: None,
            };
            let job = Job::begin(Base::Resume(checkpoint), data, clock)?;
            return Ok(Self {
                job,
                text,
                base_name,
                teacher: None,
                teacher_name: None,
                teacher_bpb: Vec::new(),
            });
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
