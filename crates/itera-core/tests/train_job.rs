//! The training job: a run cut into any slices, or checkpointed and resumed, takes the same
//! steps bit for bit; events follow the cadence; a diverging step keeps the last good
//! weights; inputs that cannot train are refused with the reason.

use itera_core::config::Config;
use itera_core::error::Error;
use itera_core::tokenizer::Tokenizer;
use itera_core::train::{
    Budget, Checkpoint, CpuStep, DistillSpec, EvalSet, Event, FineTuneText, Job, JobData, TrainSpec,
};
use itera_core::weights::Weights;

const TOKENIZER: &[u8] = include_bytes!("../../../weights/tokenizer.json");
const STORIES: &str = include_str!("../../../web/finetune-stories.txt");
const EVAL: &str = include_str!("../../../web/eval-stories.txt");

fn spec() -> TrainSpec {
    TrainSpec {
        steps: 12,
        batch: 3,
        seq_len: 20,
        lr: 1e-2,
        min_lr: 1e-3,
        warmup: 2,
        eval_every: 4,
        checkpoint_every: 5,
        shards: 2,
        ..TrainSpec::DEFAULT
    }
}

fn data(text: &str) -> JobData {
    let tokenizer = Tokenizer::from_json(TOKENIZER).unwrap();
    let t = FineTuneText::new(&[text]).unwrap();
    JobData {
        stream: tokenizer.encode(&t.corpus).unwrap(),
        eval_sets: vec![
            EvalSet {
                name: "yours".into(),
                texts: vec![t.heldout.clone()],
            },
            EvalSet {
                name: "stories".into(),
                texts: vec![EVAL.into()],
            },
        ],
        tokenizer,
        teacher: None,
    }
}

fn base() -> Weights {
    let mut c = Config::preset("test").unwrap();
    c.vocab_size = 4096;
    Weights::init_random(&c, 1).unwrap()
}

fn new_job(spec: TrainSpec) -> Job {
    Job::new(spec, &base(), data(STORIES), Default::default(), Box::new(|| 0.0)).unwrap()
}

/// Advances `job` to its end in slices of `slices` steps (cycled); returns every event.
fn run(job: &mut Job, slices: &[usize]) -> Vec<Event> {
    let mut cpu = CpuStep::new(&job.state().weights, job.spec().step_config(), 2);
    let mut events = Vec::new();
    for &n in slices.iter().cycle() {
        if job.is_done() {
            break;
        }
        let mut on_event = |e: Event| {
            events.push(e);
            Ok(())
        };
        pollster_free(job.advance(&mut cpu, Budget::steps(n), &mut on_event)).unwrap();
    }
    events
}

/// CPU steps never wait, so their futures complete on the first poll.
fn pollster_free<T>(f: impl std::future::Future<Output = itera_core::Result<T>>) -> itera_core::Result<T> {
    itera_core::train::ready(f)
}

fn bits(job: &Job) -> (Vec<u8>, Vec<f32>) {
    let cp = job.checkpoint().unwrap();
    let mut weights: Vec<u8> = Vec::new();
    for t in &cp.state.weights.tensors {
        weights.extend(t.as_f32().unwrap().iter().flat_map(|x| x.to_le_bytes()));
    }
    for m in cp.state.opt.m.tensors.iter().chain(&cp.state.opt.v.tensors) {
        weights.extend(m.iter().flat_map(|x| x.to_le_bytes()));
    }
    (weights, cp.history.loss.clone())
}

#[test]
fn slices_and_resumes_do_not_change_the_run() {
    let mut straight = new_job(spec());
    let events = run(&mut straight, &[100]);
    let want = bits(&straight);
    assert_eq!(want.1.len(), 12);

    for slices in [&[1][..], &[2, 3], &[5, 1, 4]] {
        let mut sliced = new_job(spec());
        run(&mut sliced, slices);
        assert!(bits(&sliced) == want, "slices {slices:?}");
    }

    // Stop after 7 steps, keep the checkpoint's bytes, resume in a new job.
    let mut first = new_job(spec());
    first.stop_at(7);
    let events_first = run(&mut first, &[3]);
    let Some(Event::Checkpoint { step: 7, bytes }) = events_first
        .iter()
        .rev()
        .find(|e| matches!(e, Event::Checkpoint { .. }))
        .cloned()
    else {
        panic!("a checkpoint at the stop: {events_first:?}");
    };
    let mut resumed = Job::resume(
        <Checkpoint>::from_bytes(&bytes).unwrap(),
        data(STORIES),
        Box::new(|| 0.0),
    )
    .unwrap();
    assert_eq!(resumed.completed(), 7);
    run(&mut resumed, &[2]);
    assert!(bits(&resumed) == want, "stopped at 7 and resumed");

    // The cadence: evaluations every 4 steps and at the end, checkpoints every 5 and at the end.
    let at = |kind: &str| -> Vec<usize> {
        events
            .iter()
            .filter_map(|e| match (kind, e) {
                ("eval", Event::Eval { step, results }) => {
                    assert_eq!(results.len(), 2);
                    assert!(results
                        .iter()
                        .all(|r| r.bits_per_byte > 0.0 && r.bits_per_byte.is_finite()));
                    Some(*step)
                }
                ("checkpoint", Event::Checkpoint { step, .. }) => Some(*step),
                ("done", Event::Done { step, .. }) => Some(*step),
                _ => None,
            })
            .collect()
    };
    assert_eq!(at("eval"), vec![4, 8, 12]);
    for (i, e) in events.iter().enumerate() {
        if let Event::Eval { step, .. } = e {
            assert!(
                matches!(events[i - 1], Event::Evaluating { step: s, .. } if s == *step),
                "announced"
            );
        }
    }
    assert_eq!(at("checkpoint"), vec![5, 10, 12]);
    assert_eq!(at("done"), vec![12]);
    assert_eq!(straight.history().evals.len(), 6);
}

#[test]
fn training_lowers_the_held_out_bits_per_byte() {
    let mut job = new_job(TrainSpec {
        steps: 30,
        eval_every: 30,
        ..spec()
    });
    let before = job.evaluate().unwrap();
    run(&mut job, &[30]);
    let after = job.evaluate().unwrap();
    assert!(
        after[0].bits_per_byte < before[0].bits_per_byte,
        "{before:?} → {after:?}"
    );
}

#[test]
fn a_diverging_step_keeps_the_last_good_weights() {
    let mut w = base();
    let slot = w.table.index_of("layers.1.in_proj").unwrap();
    w.tensors[slot].as_f32_mut().unwrap()[3] = f32::INFINITY;
    let mut job = Job::new(spec(), &w, data(STORIES), Default::default(), Box::new(|| 0.0)).unwrap();
    let mut cpu = CpuStep::new(&job.state().weights, job.spec().step_config(), 1);
    let before = format!("{:?}", job.state().weights.tensors);
    let r = pollster_free(job.advance(&mut cpu, Budget::steps(3), &mut |_| Ok(())));
    assert!(matches!(r, Err(Error::Diverged { step: 0, .. })), "{r:?}");
    assert_eq!(job.completed(), 0);
    assert_eq!(format!("{:?}", job.state().weights.tensors), before);
}

#[test]
fn inputs_that_cannot_train_are_refused_with_the_reason() {
    let err = |r: itera_core::Result<Job>| r.err().expect("refused").to_string();
    let clock = || -> itera_core::train::Clock { Box::new(|| 0.0) };
    // A text shorter than one sequence.
    let e = err(Job::new(
        TrainSpec {
            seq_len: 4000,
            ..spec()
        },
        &base(),
        data("A short story."),
        Default::default(),
        clock(),
    ));
    assert!(e.contains("seq_len") && e.contains("tokens"), "{e}");
    // Settings out of range name the setting.
    let e = err(Job::new(
        TrainSpec { lr: 5.0, ..spec() },
        &base(),
        data(STORIES),
        Default::default(),
        clock(),
    ));
    assert!(e.contains("lr = 5"), "{e}");
    // Distillation without a teacher.
    let with_distill = TrainSpec {
        distill: Some(DistillSpec::DEFAULT),
        ..spec()
    };
    let e = err(Job::new(
        with_distill,
        &base(),
        data(STORIES),
        Default::default(),
        clock(),
    ));
    assert!(e.contains("teacher"), "{e}");
    // A model whose vocabulary is not the tokenizer's.
    let other = Weights::init_random(&Config::preset("test").unwrap(), 1).unwrap();
    let e = err(Job::new(spec(), &other, data(STORIES), Default::default(), clock()));
    assert!(e.contains("tokenizer"), "{e}");
    // A checkpoint resumed on other text.
    let mut job = new_job(spec());
    run(&mut job, &[12]);
    let cp = job.checkpoint().unwrap();
    let e = err(Job::resume(cp.clone(), data(EVAL), clock()));
    assert!(e.contains("same text"), "{e}");
    // ... or with another tokenizer of the same size (two pieces swapped).
    let mut json: serde_json::Value = serde_json::from_slice(TOKENIZER).unwrap();
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    let (a, b) = (vocab["a"].clone(), vocab["b"].clone());
    (vocab["a"], vocab["b"]) = (b, a);
    let mut swapped = data(STORIES);
    swapped.tokenizer = Tokenizer::from_json(json.to_string().as_bytes()).unwrap();
    swapped.stream = swapped
        .tokenizer
        .encode(&FineTuneText::new(&[STORIES]).unwrap().corpus)
        .unwrap();
    let e = err(Job::resume(cp.clone(), swapped, clock()));
    assert!(e.contains("another tokenizer"), "{e}");
    // A checkpoint whose model and optimiser are of different steps.
    let mut torn = cp;
    torn.state.weights.config.training.as_mut().unwrap().steps = 7;
    let e = <Checkpoint>::from_bytes(&torn.to_bytes().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("optimiser is at step 12") && e.contains("summary at step 7"),
        "{e}"
    );
    // Bytes that are not a checkpoint.
    let model = itera_core::format::save(&base()).unwrap();
    let e = <Checkpoint>::from_bytes(&model).unwrap_err().to_string();
    assert!(e.contains("itera-checkpoint"), "{e}");
}

/// A stand-in for a GPU: steps a private copy of the state (as a device holds its own),
/// hands it over on `sync`, and is "lost" when it reaches step `lost_at`.
struct Device {
    inner: CpuStep,
    own: Option<itera_core::train::TrainState>,
    lost_at: usize,
}

impl itera_core::train::StepBackend for Device {
    async fn step(
        &mut self,
        state: &mut itera_core::train::TrainState,
        tokens: &[u32],
        lr: f32,
        teacher: Option<&itera_core::lm::AnyWeights>,
    ) -> itera_core::Result<itera_core::train::StepReport> {
        let own = self.own.get_or_insert_with(|| state.clone());
        if own.opt.step == self.lost_at {
            return Err(Error::Gpu("the device was lost".into()));
        }
        self.inner.step_now(own, tokens, lr, teacher)
    }

    async fn sync(&mut self, state: &mut itera_core::train::TrainState) -> itera_core::Result<()> {
        if let Some(own) = &self.own {
            *state = own.clone();
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "a device that gets lost".into()
    }
}

/// A device lost at its 8th step (its state last read back after step 5, a checkpoint): the
/// job rolls back to step 5, the CPU re-runs steps 6 and 7 and goes on — the same run, bit for bit, as one
/// on the CPU throughout; no step is lost from the curves.
#[test]
fn a_lost_device_continues_on_the_cpu_from_the_last_state_read_back() {
    let mut straight = new_job(spec());
    run(&mut straight, &[100]);

    let mut job = new_job(spec());
    let cfg = job.spec().step_config();
    let mut device = Device {
        inner: CpuStep::new(&job.state().weights, cfg, 2),
        own: None,
        lost_at: 7,
    };
    let r = pollster_free(job.advance(&mut device, Budget::steps(100), &mut |_| Ok(())));
    assert!(matches!(r, Err(Error::Gpu(_))), "{r:?}");
    assert_eq!(job.completed(), 7);
    assert_eq!(
        job.roll_back_to_host_state(),
        5,
        "the last read-back was the checkpoint at step 5"
    );
    assert_eq!(job.history().len(), 5);
    run(&mut job, &[100]);
    assert!(bits(&job) == bits(&straight));
}

/// Each evaluation is announced (`Evaluating`) and, when asked, ends the slice before it runs,
/// so a caller can show it and stop there; a checkpoint taken in that gap resumes into the
/// same run.
#[test]
fn an_evaluation_is_announced_and_can_end_the_slice() {
    let mut job = new_job(spec());
    let mut cpu = CpuStep::new(&job.state().weights, job.spec().step_config(), 2);
    let mut events = Vec::new();
    let budget = Budget {
        stop_before_evaluation: true,
        ..Budget::steps(100)
    };
    pollster_free(job.advance(&mut cpu, budget, &mut |e| {
        events.push(e);
        Ok(())
    }))
    .unwrap();
    assert_eq!(job.completed(), 4);
    assert!(job.evaluation_due());
    assert!(matches!(
        events.last(),
        Some(Event::Evaluating { step: 4, sets: 2, tokens }) if *tokens == job.eval_tokens()
    ));
    // Stopped here: the checkpoint has no evaluation at step 4; the resumed job runs it first.
    let bytes = job.checkpoint().unwrap().to_bytes().unwrap();
    let mut resumed = Job::resume(
        <Checkpoint>::from_bytes(&bytes).unwrap(),
        data(STORIES),
        Box::new(|| 0.0),
    )
    .unwrap();
    assert!(resumed.evaluation_due());
    let events = run(&mut resumed, &[100]);
    assert!(
        matches!(events.first(), Some(Event::Eval { step: 4, .. })),
        "{:?}",
        events.first()
    );
    let mut straight = new_job(spec());
    run(&mut straight, &[100]);
    assert!(bits(&resumed) == bits(&straight));
    assert_eq!(resumed.history().evals, straight.history().evals);
}

/// The job reports the weights of each new best held-out figure (of the first set) as a model
/// file, and with a patience stops once that many evaluations in a row did not beat it.
#[test]
fn the_best_weights_are_kept_and_patience_stops_the_run() {
    // A learning rate this high lowers the held-out figure, then makes it rise within a few steps.
    let spec = TrainSpec {
        steps: 40,
        lr: 0.1,
        min_lr: 0.1,
        eval_every: 1,
        patience: 2,
        ..spec()
    };
    let mut job = new_job(spec.clone());
    job.evaluate_start().unwrap();
    let events = run(&mut job, &[7]);
    let Some(Event::Done {
        step,
        stopped_early: Some(stop),
        ..
    }) = events.last().cloned()
    else {
        panic!("an early stop: {:?}", events.last());
    };
    assert!(step < spec.steps, "stopped at {step}");
    assert_eq!(job.completed(), step);
    assert!(job.is_done());
    assert_eq!((stop.patience, stop.set.as_str()), (2, "yours"));
    // The figures after the best: exactly `patience` of them, none lower.
    let yours: Vec<_> = job.history().evals.iter().filter(|e| e.name == "yours").collect();
    let at = yours.iter().position(|e| e.step == stop.best.step).unwrap();
    assert_eq!(yours.len() - 1 - at, 2, "{yours:?}");
    assert!(yours.iter().all(|e| e.bits_per_byte >= stop.best.bits_per_byte));
    // Every Best event improved on the last one; the last is the stop's best and its bytes are
    // the weights after that step.
    let bests: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Best {
                step,
                bits_per_byte,
                bytes,
                ..
            } => Some((*step, *bits_per_byte, bytes.clone())),
            _ => None,
        })
        .collect();
    assert!(bests.windows(2).all(|w| w[1].1 < w[0].1 && w[1].0 > w[0].0));
    assert!(stop.best.step > 0, "a step beat the starting weights first");
    {
        let (best_step, bpb, bytes) = bests.last().unwrap();
        assert_eq!((*best_step, *bpb), (stop.best.step, stop.best.bits_per_byte));
        let mut replay = new_job(TrainSpec {
            patience: 0,
            ..spec.clone()
        });
        replay.stop_at(*best_step);
        run(&mut replay, &[100]);
        assert_eq!(
            itera_core::format::load(bytes).unwrap().tensors,
            replay.model().tensors,
            "the best file holds the weights after step {best_step}"
        );
    }
    // Loaded again, the stopped run stays stopped.
    let cp = job.checkpoint().unwrap().to_bytes().unwrap();
    let again = Job::resume(<Checkpoint>::from_bytes(&cp).unwrap(), data(STORIES), Box::new(|| 0.0)).unwrap();
    assert!(again.is_done(), "resumed at {} of {}", again.completed(), again.end());
}

#[test]
fn patience_needs_a_held_out_set() {
    let mut d = data(STORIES);
    d.eval_sets.clear();
    let spec = TrainSpec { patience: 1, ..spec() };
    let Err(e) = Job::new(spec, &base(), d, Default::default(), Box::new(|| 0.0)) else {
        panic!("patience without a held-out set was accepted");
    };
    assert!(e.to_string().contains("patience"), "{e}");
}
