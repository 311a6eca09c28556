//! Training: the job that the CLI, the browser and the GPU path all run (`job`), its settings
//! (`spec`), the step interface and its CPU implementation (`step`, `trainer`), AdamW and the
//! schedule (`optim`), checkpoints as bytes (`checkpoint`), the run's curves (`history`), the
//! training text (`data`), the teacher of a distillation (`teacher`), corpora it writes
//! (`corpus`) and the typed summary a trained model carries (`summary`).

pub mod checkpoint;
pub mod corpus;
pub mod data;
pub mod history;
pub mod job;
mod optim;
pub mod spec;
pub mod step;
pub mod summary;
pub mod teacher;
mod trainer;

pub use checkpoint::{checkpoint_family, Checkpoint, DataFingerprint};
pub use corpus::{CorpusBuilder, CorpusSettings, Story, StoryTeller};
pub use data::{encode_corpus, encode_corpus_with, split_documents, EvalSet, FineTuneText};
pub use history::{Best, EvalPoint, History};
pub use job::{Base, Budget, Clock, EarlyStop, EvalResult, Event, Job, JobData, NewRun, Provenance, Start};
pub use optim::{AdamW, LrSchedule, BETA1, BETA2, EPS};
pub use spec::{DistillSpec, Limit, StepConfig, TrainSpec, LIMITS, MAX_TOKENS_PER_STEP};
pub use step::{check_finite, finish_step, ready, ExpertLoad, ShardScratch, StepBackend, StepReport, TrainState};
pub use summary::{DistillMode, DistilledFrom, TrainingSummary};
pub use teacher::Teacher;
pub use trainer::{check_step_input, sample_batch, CpuStep};
