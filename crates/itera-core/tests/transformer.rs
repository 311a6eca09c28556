//! The Transformer family: finite-difference checks of its backward (attention with RoPE and
//! grouped-query heads, SwiGLU, norms, the embedding and an untied classifier), decoding
//! and chunked prefill against the batch forward in every precision, weight files with the
//! family in their metadata, the stories260K checkpoint through the family's type, and
//! training through the one job.
//!
//! Tolerances as in `gradients.rs`: central differences with h = 1e-2 on the f32 model pass
//! when |fd − analytic| ≤ 3e-4 + 2e-2·|fd|.

use itera_core::family::Architecture;
use itera_core::layers::ssm::BatchDims;
use itera_core::model::{LossParts, LossWeights};
use itera_core::rng::Pcg32;
use itera_core::transformer::model::{forward, TransformerCache, TransformerState, TransformerWeights};
use itera_core::transformer::TransformerConfig;
use itera_core::{format, Grads, Precision, Transformer, Weights};

const H: f32 = 1e-2;
const ATOL: f32 = 3e-4;
const RTOL: f32 = 2e-2;

/// The test config (odd sizes, 4 query heads over 2 kv heads), every parameter moved off its
/// initial value so norms and residual paths all carry gradient.
fn model(seed: u64, shared_classifier: bool, spread: f32) -> TransformerWeights {
    let c = TransformerConfig {
        shared_classifier,
        ..TransformerConfig::preset("test").unwrap()
    };
    let mut w = Transformer::init_random(&c, seed).unwrap();
    let mut rng = Pcg32::new(seed + 1);
    for t in w.tensors.iter_mut() {
        for v in t.as_f32_mut().unwrap() {
            *v += spread * rng.normal();
        }
    }
    w
}

fn batch(seed: u64, vocab: usize, bd: BatchDims) -> Vec<u32> {
    let mut rng = Pcg32::new(seed);
    (0..bd.rows()).map(|_| rng.below(vocab as u32)).collect()
}

fn loss_of(w: &TransformerWeights, tokens: &[u32], bd: BatchDims, teacher: Option<&[f32]>, lw: LossWeights) -> f32 {
    let mut cache = TransformerCache::default();
    Transformer::loss(w, tokens, bd, teacher, lw, &mut cache, None)
        .unwrap()
        .total
}

/// Every parameter slot, checked at up to 6 coordinates each, under CE and under CE + KL.
#[test]
fn every_backward_matches_finite_differences() {
    let bd = BatchDims { batch: 2, t: 9 };
    for (shared, beta) in [(true, 0.0), (false, 0.4)] {
        let w = model(7, shared, 0.3);
        let v = w.config.vocab_size;
        let tokens = batch(3, v, bd);
        let mut rng = Pcg32::new(11);
        let teacher: Vec<f32> = (0..bd.rows() * v).map(|_| 2.0 * rng.normal()).collect();
        let lw = LossWeights {
            aux_alpha: 0.01,
            distill_beta: beta,
            temperature: 2.0,
        };
        let mut grads = Grads::zeros(&w.table);
        let mut cache = TransformerCache::default();
        Transformer::loss(&w, &tokens, bd, Some(&teacher), lw, &mut cache, Some(&mut grads)).unwrap();
        let mut checked = 0;
        for (slot, spec) in w.specs().iter().enumerate() {
            let n = spec.numel();
            for k in 0..6.min(n) {
                let i = (k * 7919 + slot * 31) % n;
                let mut plus = w.clone();
                plus.tensors[slot].as_f32_mut().unwrap()[i] += H;
                let mut minus = w.clone();
                minus.tensors[slot].as_f32_mut().unwrap()[i] -= H;
                let fd = (loss_of(&plus, &tokens, bd, Some(&teacher), lw)
                    - loss_of(&minus, &tokens, bd, Some(&teacher), lw))
                    / (2.0 * H);
                let analytic = grads.tensors[slot][i];
                assert!(
                    (fd - analytic).abs() <= ATOL + RTOL * fd.abs(),
                    "{} [{i}] (shared {shared}, β {beta}): finite difference {fd}, backward {analytic}",
                    spec.name
                );
                checked += 1;
            }
        }
        assert!(checked > 60, "only {checked} coordinates checked");
    }
}

/// The largest difference between two rows of logits, relative to the row's largest logit
/// (the rows of an untrained model are small and summation order moves the last bits).
fn error(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale
}

/// Decoding token by token and the chunked prefill (over more than one chunk) give the batch
/// forward's logits, in every precision: the KV cache, positions and RoPE agree on all paths.
#[test]
fn decode_and_prefill_match_the_batch_forward_in_every_precision() {
    let base = model(5, true, 0.05);
    let t = 150; // more than one PREFILL_CHUNK (128); the test config is widened to 256 positions
    let c = TransformerConfig {
        max_seq_len: 256,
        ..base.config.clone()
    };
    let base = Weights::<Transformer>::from_f32_tensors(c, base.tensors.iter().map(|x| x.dequantize()).collect());
    let bd = BatchDims { batch: 1, t };
    let tokens = batch(9, base.config.vocab_size, bd);
    let v = base.config.vocab_size;
    for p in Precision::ALL {
        let w = base.to_precision(p);
        let mut cache = TransformerCache::default();
        forward(&w, &tokens, bd, false, &mut cache).unwrap();
        let want = cache.logits.clone();
        let mut st = TransformerState::new(&w);
        let mut worst = 0.0f32;
        for (i, &tok) in tokens.iter().enumerate() {
            let got = Transformer::decode_step(&w, &mut st, tok).unwrap();
            worst = worst.max(error(got, &want[i * v..(i + 1) * v]));
        }
        assert!(
            worst < 1e-4,
            "{p}: decode vs forward, worst error {worst} of the largest logit"
        );
        assert_eq!(
            st.cache_bytes(),
            Transformer::token_cost(&w.config, t).state_bytes as usize
        );

        // A prefill of the first 20 tokens, then one of the rest (crossing a chunk), then a step.
        let mut st = TransformerState::new(&w);
        let mut seen = Vec::new();
        for part in [&tokens[..20], &tokens[20..t - 1]] {
            Transformer::prefill_chunked(&w, part, &mut st, &mut TransformerCache::default(), &mut |_, l| {
                seen.extend_from_slice(l);
                Ok(())
            })
            .unwrap();
        }
        let last = Transformer::decode_step(&w, &mut st, tokens[t - 1]).unwrap().to_vec();
        seen.extend_from_slice(&last);
        let worst = seen
            .chunks_exact(v)
            .zip(want.chunks_exact(v))
            .map(|(a, b)| error(a, b))
            .fold(0.0, f32::max);
        assert!(
            worst < 1e-4,
            "{p}: prefill vs forward, worst error {worst} of the largest logit"
        );
        // The context is bounded by max_seq_len.
        let mut st = TransformerState::new(&w);
        let long = vec![1u32; 257];
        let e = Transformer::prefill_chunked(&w, &long, &mut st, &mut TransformerCache::default(), &mut |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_seq_len"), "{e}");
    }
}

/// save → load keeps every tensor and the config in every precision; the file says its family
/// and uses model.py's names; the itera loader refuses it by name, and the reverse.
#[test]
fn weight_files_carry_the_family_and_model_py_names() {
    let w = model(2, false, 0.3);
    for p in Precision::ALL {
        let q = w.to_precision(p);
        let bytes = format::save(&q).unwrap();
        assert_eq!(format::read_family(&bytes).unwrap(), itera_core::Family::Transformer);
        let back = format::load_as::<Transformer>(&bytes).unwrap();
        assert_eq!(back.config, q.config);
        assert_eq!(back.tensors, q.tensors, "{p}");
        let e = format::load(&bytes).unwrap_err().to_string();
        assert!(e.contains("transformer family"), "{e}");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for name in [
            "tok_embeddings.weight",
            "layers.1.attention.wq.weight",
            "layers.0.attention.wk.weight",
            "layers.0.feed_forward.w2.weight",
            "layers.1.attention_norm.weight",
            "layers.1.ffn_norm.weight",
            "norm.weight",
            "output.weight",
        ] {
            assert!(st.tensor(name).is_ok(), "{name} missing from the {p} file");
        }
    }
    // The config states the norm's ε as model.py does; it is the one every layer uses.
    assert_eq!(
        itera_core::transformer::config::NORM_EPS as f32,
        itera_core::layers::norm::EPS
    );
    // A config whose KV cache could not be held is refused before anything is allocated.
    let huge = TransformerConfig {
        max_seq_len: 1 << 20,
        ..TransformerConfig::preset("tiny").unwrap()
    };
    let e = huge.validate().unwrap_err().to_string();
    assert!(e.contains("max_seq_len") && e.contains("KV cache"), "{e}");
    let itera = Weights::init_random(&itera_core::Config::preset("test").unwrap(), 1).unwrap();
    let bytes = format::save(&itera).unwrap();
    assert_eq!(format::read_family(&bytes).unwrap(), itera_core::Family::Itera);
    let e = format::load_as::<Transformer>(&bytes).unwrap_err().to_string();
    assert!(e.contains("itera family"), "{e}");
}

mod teacher_data;

use teacher_data::teacher_dir;

/// stories260K as a `Transformer`: its greedy story from BOS is the documented one, and its
/// batch forward agrees with decoding.
#[test]
fn stories260k_through_the_family_reproduces_its_golden_text() {
    use itera_core::llama2c::{Llama2, Llama2Tokenizer, BOS};
    let Some(dir) = teacher_dir() else { return };
    let llama = Llama2::from_file(&dir.join("stories260K.bin")).unwrap();
    let tok = Llama2Tokenizer::from_file(&dir.join("tok512.bin"), 512).unwrap();
    let w = llama.weights;
    assert_eq!(w.total_params(), 260_032);
    let want = std::fs::read_to_string(dir.join("greedy-from-bos.txt")).unwrap();
    let mut st = TransformerState::new(&w);
    let (mut token, mut text) = (BOS, Vec::new());
    let mut sequence = vec![BOS];
    for _ in 0..256 {
        let logits = Transformer::decode_step(&w, &mut st, token).unwrap();
        let next = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
            .unwrap() as u32;
        if next == BOS {
            break;
        }
        text.extend_from_slice(tok.decode_piece(token, next));
        sequence.push(next);
        token = next;
    }
    assert_eq!(format!("{}\n", String::from_utf8_lossy(&text)), want);
    // The batch forward of the same sequence predicts the same tokens.
    let bd = BatchDims {
        batch: 1,
        t: sequence.len(),
    };
    let mut cache = TransformerCache::default();
    forward(&w, &sequence, bd, false, &mut cache).unwrap();
    for (i, logits) in cache.logits.chunks_exact(512).enumerate().take(sequence.len() - 1) {
        let argmax = (0..512).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap() as u32;
        assert_eq!(argmax, sequence[i + 1], "position {i}");
    }
}

/// The Transformer trains through the one job's CPU step: the loss falls, and two threads
/// take the same steps as one, bit for bit.
#[test]
fn training_steps_lower_the_loss_and_do_not_depend_on_threads() {
    use itera_core::train::{sample_batch, CpuStep, TrainSpec, TrainState};
    let c = TransformerConfig::preset("test").unwrap();
    let w = Transformer::init_random(&c, 3).unwrap();
    let stream: Vec<u32> = (0..2000).map(|i| [1, 5, 9, 5, 2, 7, 30, 11][i % 8]).collect();
    let spec = TrainSpec {
        steps: 40,
        batch: 4,
        seq_len: 16,
        lr: 1e-2,
        min_lr: 1e-3,
        warmup: 5,
        shards: 2,
        ..TrainSpec::default()
    };
    let run = |threads: usize| {
        let mut state = TrainState::new(&w, spec.weight_decay as f32);
        let mut step = CpuStep::new(&state.weights, spec.step_config(), threads);
        let mut rng = Pcg32::new(1);
        let losses: Vec<LossParts> = (0..spec.steps)
            .map(|s| {
                let b = sample_batch(&stream, 4, 16, &mut rng).unwrap();
                step.step_now(&mut state, &b, spec.schedule().at(s), None).unwrap().loss
            })
            .collect();
        (losses, state.weights.flat_f32().unwrap())
    };
    let (one, w1) = run(1);
    let (two, w2) = run(2);
    assert_eq!(one, two);
    assert_eq!(w1, w2);
    let (first, last) = (one[0].ce, one[one.len() - 1].ce);
    assert!(last < 0.5 * first, "CE went from {first} to {last}");
}

/// FLOPs and state per token from the config: the Transformer's grow with the context, the
/// itera model's do not; at the presets' sizes the parameters match.
#[test]
fn token_costs_are_counted_from_the_config() {
    let t = TransformerConfig::preset("tiny").unwrap();
    let i = itera_core::Config::preset("tiny").unwrap();
    let (t1, t2) = (Transformer::token_cost(&t, 1), Transformer::token_cost(&t, 1001));
    // 2·D per layer per position for the scores and the values, times 2 FLOPs a multiply-add.
    assert_eq!(t2.flops - t1.flops, 2 * 2 * 128 * 4 * 1000);
    // keys and values: 4 layers × 64 × 4 bytes × 2 per position.
    assert_eq!(t2.state_bytes - t1.state_bytes, 4 * 64 * 4 * 2 * 1000);
    let (i1, i2) = (
        itera_core::Itera::token_cost(&i, 1),
        itera_core::Itera::token_cost(&i, 8192),
    );
    assert_eq!(i1, i2);
    assert_eq!(Transformer::active_params(&t), 1_483_904);
}
