//! Training: AdamW over the parameter table, the learning-rate schedule, batch sampling from a
//! token stream, and a step that splits a batch across threads. The same code trains natively
//! (full runs from `cargo xtask train`) and, single-threaded, in the browser.

mod optim;
mod trainer;

pub use optim::{AdamW, LrSchedule};
pub use trainer::{sample_batch, StepReport, Trainer, TrainerConfig};
