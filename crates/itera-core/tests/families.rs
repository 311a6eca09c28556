//! The family abstraction: one test body runs generation, evaluation and a training step
//! through `Architecture` for each family (candle's one-body-per-device pattern), and older
//! files without a `family` key load as itera models.

use itera_core::eval::eval_model;
use itera_core::family::Architecture;
use itera_core::generate::{generate, GenerateOptions};
use itera_core::rng::Pcg32;
use itera_core::sampling::SamplingSettings;
use itera_core::tokenizer::Tokenizer;
use itera_core::train::{sample_batch, CpuStep, TrainSpec, TrainState};
use itera_core::{format, Family, Itera, Transformer};

const STORY: &str = "Once upon a time, a little dog named Max found a red ball in the park. He was very happy.";

fn tokenizer() -> Tokenizer {
    let docs = (0..20).map(|i| format!("{STORY} Day {i}.<|endoftext|>"));
    Tokenizer::train(docs, 300).unwrap()
}

/// Generation, evaluation, one training step and a file round trip, the same code for `A`.
fn through_the_abstraction<A: Architecture>() {
    let tok = tokenizer();
    let config = A::with_tokenizer(&A::preset("test").unwrap(), tok.vocab_size(), None);
    let w = A::init_random(&config, 4).unwrap();

    let opts = GenerateOptions {
        max_tokens: 12,
        sampling: SamplingSettings {
            seed: 3,
            ..SamplingSettings::default()
        },
        stop_at_end_of_text: false,
    };
    let g = generate(&w, &tok, "Once upon", opts, |_| true).unwrap();
    assert_eq!(g.tokens.len(), 12, "{}", A::FAMILY);
    let again = generate(&w, &tok, "Once upon", opts, |_| true).unwrap();
    assert_eq!(g.tokens, again.tokens, "a seed writes one story");

    let report = eval_model(&w, &tok, STORY).unwrap();
    // An untrained model is about uniform: ln(V) nats a token.
    let uniform = (tok.vocab_size() as f64).ln();
    assert!(
        (report.mean_ce() - uniform).abs() < 0.5,
        "{}: {}",
        A::FAMILY,
        report.mean_ce()
    );

    let stream = tok.encode(&STORY.repeat(10)).unwrap();
    let spec = TrainSpec {
        steps: 1,
        batch: 2,
        seq_len: 16,
        warmup: 1,
        shards: 1,
        ..TrainSpec::default()
    };
    let mut state = TrainState::new(&w, spec.weight_decay as f32);
    let mut step = CpuStep::new(&state.weights, spec.step_config(), 1);
    let batch = sample_batch(&stream, 2, 16, &mut Pcg32::new(1)).unwrap();
    let report = step.step_now(&mut state, &batch, 1e-3, None).unwrap();
    assert!(report.loss.ce.is_finite() && report.grad_norm > 0.0);
    assert_ne!(state.weights.tensors, w.tensors, "the step changed the weights");

    let bytes = format::save(&state.weights).unwrap();
    assert_eq!(format::read_family(&bytes).unwrap(), A::FAMILY);
    assert_eq!(format::load_as::<A>(&bytes).unwrap().tensors, state.weights.tensors);
}

#[test]
fn itera_through_the_abstraction() {
    through_the_abstraction::<Itera>();
}

#[test]
fn transformer_through_the_abstraction() {
    through_the_abstraction::<Transformer>();
}

/// The shipped files were written before families existed: no `family` key, read as itera.
#[test]
fn files_without_a_family_are_itera_models() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../weights/itera-micro-q8.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert!(!meta.metadata().as_ref().unwrap().contains_key("family"));
    assert_eq!(format::read_family(&bytes).unwrap(), Family::Itera);
    format::load(&bytes).unwrap();
    let e = format::load_as::<Transformer>(&bytes).unwrap_err().to_string();
    assert!(e.contains("of the itera family"), "{e}");
}
