//! The GPU training step against the CPU trainer (lavapipe in CI): one step gives the same
//! loss parts and gradients (before clipping) for every tensor, 20 steps of the training job
//! through its one step interface lower the loss the same way on either backend, a non-finite
//! loss stops without touching the weights, and bad input is refused.
//! Tolerances: gradients atol 2e-5 + rtol 2e-3 of the largest gradient of the tensor (f32 sums
//! in another order, exp on the GPU vs the CPU's exp_fast); losses 1e-4 relative.
#![cfg(feature = "gpu")]

mod gpu_common;

use gpu_common::gpu;
use itera_core::config::Config;
use itera_core::error::Error;
use itera_core::gpu::train::{GpuStep, GpuTrainer};
use itera_core::model::{forward, loss, BatchDims, Cache, LossWeights};
use itera_core::rng::Pcg32;
use itera_core::tokenizer::Tokenizer;
use itera_core::train::{sample_batch, Budget, CpuStep, Event, Job, JobData, StepBackend, StepConfig, TrainSpec};
use itera_core::weights::{Grads, Weights};

fn trainer_config(batch: usize, seq_len: usize) -> StepConfig {
    StepConfig {
        batch,
        seq_len,
        shards: 2,
        loss: LossWeights::default(),
        clip: 1.0,
        weight_decay: 0.01,
    }
}

/// A stream with structure a model can learn in a few steps.
fn stream(vocab: usize) -> Vec<u32> {
    let mut rng = Pcg32::new(11);
    let motif: Vec<u32> = (0..9).map(|_| rng.below(vocab as u32)).collect();
    (0..3000)
        .map(|i| {
            if i % 13 == 0 {
                rng.below(vocab as u32)
            } else {
                motif[i % 9]
            }
        })
        .collect()
}

/// The CPU trainer's gradient before clipping: each share's loss gradient weighted by its
/// share of the batch (what train::finish_step averages).
fn cpu_gradients(w: &Weights, tokens: &[u32], cfg: &StepConfig, shares: usize) -> (f32, Grads) {
    let (parts, grads) = cpu_distill_gradients(w, None, tokens, cfg, shares);
    (parts.0, grads)
}

/// `cpu_gradients` with an optional teacher; returns (CE, τ²·KL) and the gradient.
fn cpu_distill_gradients(
    w: &Weights,
    teacher: Option<&Weights>,
    tokens: &[u32],
    cfg: &StepConfig,
    shares: usize,
) -> ((f32, f32), Grads) {
    let seqs = cfg.batch / shares;
    let mut total = Grads::zeros(&w.table);
    let (mut ce, mut kl) = (0.0, 0.0);
    for s in 0..shares {
        let rows = &tokens[s * seqs * cfg.seq_len..(s + 1) * seqs * cfg.seq_len];
        let mut g = Grads::zeros(&w.table);
        let bd = BatchDims {
            batch: seqs,
            t: cfg.seq_len,
        };
        let mut tc = Cache::default();
        let logits = teacher.map(|tw| {
            forward(tw, rows, bd, false, &mut tc).unwrap();
            tc.logits.as_slice()
        });
        let parts = loss(w, rows, bd, logits, cfg.loss, &mut Cache::default(), Some(&mut g)).unwrap();
        let f = seqs as f32 / cfg.batch as f32;
        ce += f * parts.ce;
        kl += f * parts.kl;
        for (acc, x) in total.tensors.iter_mut().zip(&g.tensors) {
            acc.iter_mut().zip(x).for_each(|(a, b)| *a += f * b);
        }
    }
    ((ce, kl), total)
}

/// Every gradient within atol 2e-5 + 2e-3 × the tensor's largest CPU gradient.
fn assert_gradients_match(what: &str, w: &Weights, got: &[Vec<f32>], want: &Grads) {
    for (slot, spec) in w.table.specs.iter().enumerate() {
        let (gg, ww) = (&got[slot], &want.tensors[slot]);
        let scale = ww.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let tol = 2e-5 + 2e-3 * scale;
        // Written so that NaN fails too: only a value within the tolerance passes.
        let within = |i: usize| (gg[i] - ww[i]).abs() <= tol;
        if let Some(i) = (0..ww.len()).find(|&i| !within(i)) {
            panic!(
                "{what} {}[{i}]: GPU {} vs CPU {} (tolerance {tol})",
                spec.name, gg[i], ww[i]
            );
        }
    }
}

#[test]
fn one_step_gives_the_cpu_loss_and_gradients() {
    let Some(g) = gpu() else { return };
    // "test": odd sizes everywhere, a dense layer and a MoE layer; "micro": the shipped shape.
    for (preset, batch, seq_len, micro) in [("test", 4, 13, 2), ("test", 3, 7, 1), ("micro", 2, 24, 2)] {
        let c = Config::preset(preset).unwrap();
        let w = Weights::init_random(&c, 5).unwrap();
        let cfg = trainer_config(batch, seq_len);
        let tokens = sample_batch(&stream(c.vocab_size), batch, seq_len, &mut Pcg32::new(2)).unwrap();
        let (ce, want) = cpu_gradients(&w, &tokens, &cfg, micro);
        let mut t = GpuTrainer::new(&g, &w, cfg, Some(micro)).unwrap();
        let report = t.step_blocking(&g, &tokens, 1e-2).unwrap();
        assert!(
            (report.loss.ce - ce).abs() <= 1e-4 * ce,
            "{preset}: CE {} vs CPU {ce}",
            report.loss.ce
        );
        assert_gradients_match(preset, &w, &t.gradients_blocking(&g).unwrap(), &want);
        eprintln!("{preset}: {} dispatches per step, CE {ce}", t.dispatches_per_step());
    }
}

#[test]
fn a_distillation_step_gives_the_cpu_loss_and_gradients() {
    let Some(g) = gpu() else { return };
    let c = Config::preset("test").unwrap();
    let w = Weights::init_random(&c, 5).unwrap();
    // A teacher of another shape (same vocabulary), as distill runs tiny → micro.
    let tc = Config {
        d_model: 16,
        n_layers: 1,
        ..c.clone()
    };
    let teacher = Weights::init_random(&tc, 8).unwrap();
    let cfg = StepConfig {
        loss: LossWeights {
            aux_alpha: 0.01,
            distill_beta: 0.7,
            temperature: 2.0,
        },
        ..trainer_config(4, 11)
    };
    let tokens = sample_batch(&stream(c.vocab_size), 4, 11, &mut Pcg32::new(3)).unwrap();
    let ((ce, kl), want) = cpu_distill_gradients(&w, Some(&teacher), &tokens, &cfg, 2);
    let mut t = GpuTrainer::with_teacher(&g, &w, &teacher, cfg, Some(2)).unwrap();
    let r = t.step_blocking(&g, &tokens, 1e-2).unwrap();
    assert!((r.loss.ce - ce).abs() <= 1e-4 * ce, "CE {} vs CPU {ce}", r.loss.ce);
    assert!(
        kl > 0.0 && (r.loss.kl - kl).abs() <= 1e-3 * kl,
        "KL {} vs CPU {kl}",
        r.loss.kl
    );
    assert_gradients_match("distill", &w, &t.gradients_blocking(&g).unwrap(), &want);
    // A teacher with another vocabulary is refused before anything runs.
    let other = Weights::init_random(&Config { vocab_size: 40, ..tc }, 1).unwrap();
    assert!(matches!(
        GpuTrainer::with_teacher(&g, &w, &other, cfg, None),
        Err(Error::ShapeMismatch { .. })
    ));
}

/// 20 steps of one training job on `backend`: the CE per step and the final weights.
fn job_run<B: StepBackend>(backend: impl FnOnce(&Job) -> B) -> (Vec<f32>, Weights) {
    let tokenizer = Tokenizer::from_json(include_bytes!("../../../weights/tokenizer.json")).unwrap();
    let mut c = Config::preset("test").unwrap();
    c.vocab_size = tokenizer.vocab_size();
    let spec = TrainSpec {
        steps: 20,
        batch: 4,
        seq_len: 16,
        lr: 1e-2,
        min_lr: 1e-3,
        warmup: 3,
        weight_decay: 0.01,
        shards: 2,
        ..TrainSpec::DEFAULT
    };
    let data = JobData {
        tokenizer,
        stream: stream(c.vocab_size),
        eval_sets: Vec::new(),
        teacher: None,
    };
    let w = Weights::init_random(&c, 3).unwrap();
    let mut job = Job::new(spec, &w, data, Default::default(), Box::new(|| 0.0)).unwrap();
    let mut b = backend(&job);
    let mut ce = Vec::new();
    let mut on_event = |e: Event| {
        if let Event::Step { ce: x, .. } = e {
            ce.push(x);
        }
        Ok(())
    };
    pollster::block_on(job.advance(&mut b, Budget::steps(20), &mut on_event)).unwrap();
    pollster::block_on(job.sync(&mut b)).unwrap();
    (ce, job.state().weights.clone())
}

#[test]
fn twenty_job_steps_lower_the_loss_alike_on_either_backend() {
    let Some(g) = gpu() else { return };
    let g = std::rc::Rc::new(g);
    let (cpu_ce, w_cpu) = job_run(|job| CpuStep::new(&job.state().weights, job.spec().step_config(), 2));
    let (gpu_ce, w_gpu) = job_run(|job| {
        let step = GpuStep::new(g.clone(), job.state(), job.spec().step_config(), None).unwrap();
        assert_eq!(step.trainer.micro, 2, "the job's shards are the GPU's micro-batches");
        step
    });
    eprintln!("CPU CE {cpu_ce:?}\nGPU CE {gpu_ce:?}");
    assert_eq!((cpu_ce.len(), gpu_ce.len()), (20, 20));
    for (step, (a, b)) in cpu_ce.iter().zip(&gpu_ce).enumerate() {
        assert!((a - b).abs() <= 2e-2 * a, "step {step}: CPU {a} vs GPU {b}");
    }
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    assert!(mean(&gpu_ce[15..]) < 0.8 * mean(&gpu_ce[..3]), "GPU CE {gpu_ce:?}");
    // The weights after 20 steps, read back by the job's sync, agree too.
    for (slot, spec) in w_cpu.table.specs.iter().enumerate() {
        let (a, b) = (w_cpu.f32(slot), w_gpu.f32(slot));
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst < 2e-2, "{}: weights differ by {worst}", spec.name);
    }
}

#[test]
fn a_non_finite_loss_stops_before_touching_the_weights() {
    let Some(g) = gpu() else { return };
    let c = Config::preset("test").unwrap();
    let mut w = Weights::init_random(&c, 3).unwrap();
    let slot = w.table.index_of("layers.0.in_proj").unwrap();
    w.tensors[slot].as_f32_mut().unwrap()[0] = f32::NAN;
    let cfg = trainer_config(2, 8);
    let mut t = GpuTrainer::new(&g, &w, cfg, None).unwrap();
    let tokens = sample_batch(&stream(c.vocab_size), 2, 8, &mut Pcg32::new(0)).unwrap();
    assert!(matches!(
        t.step_blocking(&g, &tokens, 1e-2),
        Err(Error::Diverged { step: 0, .. })
    ));
    let after = t.weights_blocking(&g).unwrap();
    assert_eq!(format!("{:?}", after.tensors), format!("{:?}", w.tensors));
    assert_eq!(t.step, 0);
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let Some(g) = gpu() else { return };
    let c = Config::preset("test").unwrap();
    let w = Weights::init_random(&c, 3).unwrap();
    let cfg = trainer_config(2, 8);
    let mut t = GpuTrainer::new(&g, &w, cfg, None).unwrap();
    assert!(matches!(
        t.step_blocking(&g, &[1; 15], 1e-2),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut tokens = vec![1; 16];
    tokens[3] = c.vocab_size as u32;
    assert!(matches!(
        t.step_blocking(&g, &tokens, 1e-2),
        Err(Error::TokenOutOfRange { .. })
    ));
    assert!(GpuTrainer::new(&g, &w, cfg, Some(3)).is_err(), "3 does not divide 2");
    let q8 = w.to_precision(itera_core::Precision::Q8);
    assert!(GpuTrainer::new(&g, &q8, cfg, None).is_err());
    let distill = StepConfig {
        loss: LossWeights {
            distill_beta: 0.5,
            ..LossWeights::default()
        },
        ..cfg
    };
    let err = GpuTrainer::new(&g, &w, distill, None).err().unwrap().to_string();
    assert!(err.contains("distillation"), "{err}");
}

/// The 15m benchmark config (15.1M parameters): its gradients and AdamW's two moments used to
/// share one binding (181 MB, over WebGPU's default 128 MiB); each now has its own buffer of
/// one table (60 MB), so a step runs within the default limits.
#[test]
fn the_15m_config_trains_within_the_default_binding_limit() {
    let Some(g) = gpu() else { return };
    let c = Config::preset("15m").unwrap();
    let w = Weights::init_random(&c, 1).unwrap();
    let table_bytes = w.table.total_params() as u64 * 4;
    let default_limit = wgpu::Limits::default().max_storage_buffer_binding_size;
    assert!(3 * table_bytes > default_limit && table_bytes <= default_limit);
    let cfg = trainer_config(2, 8);
    let mut t = GpuTrainer::new(&g, &w, cfg, None).unwrap();
    let tokens = sample_batch(&stream(c.vocab_size), 2, 8, &mut Pcg32::new(4)).unwrap();
    let r = t.step_blocking(&g, &tokens, 1e-3).unwrap();
    assert!(r.loss.ce.is_finite() && r.grad_norm.is_finite(), "{r:?}");
    eprintln!(
        "15m: one step, CE {} ({} dispatches; device binding limit {} bytes)",
        r.loss.ce,
        t.dispatches_per_step(),
        g.device.limits().max_storage_buffer_binding_size
    );
}
