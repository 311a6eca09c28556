//! A training step's forward and backward allocate nothing once the first step has sized the
//! cache's buffers (activations, their gradients, the backward's working space), for both
//! families: memory is taken once, as llm.c takes it, and not per layer, expert and step.
//! (The output losses keep one vocabulary-sized row per call; the trainer's own buffers are
//! the trainer's.) Its own test binary: the allocation counter is process-wide.

mod peak_heap;

use itera_core::layers::loss::output_losses;
use itera_core::model::{self, BatchDims, LossWeights};
use itera_core::rng::Pcg32;
use itera_core::transformer::{model as transformer, TransformerConfig};
use itera_core::{Architecture, Config, Grads, Transformer, Weights};

fn batch(vocab: usize, bd: BatchDims, seed: u64) -> Vec<u32> {
    let mut rng = Pcg32::new(seed);
    (0..bd.rows()).map(|_| rng.below(vocab as u32)).collect()
}

#[test]
fn forward_and_backward_allocate_nothing_after_the_first_step() {
    let bd = BatchDims { batch: 3, t: 17 };
    let lw = LossWeights::default();

    let c = Config::preset("test").unwrap();
    let w = Weights::init_random(&c, 1).unwrap();
    let mut cache = model::Cache::default();
    let mut grads = Grads::zeros(&w.table);
    let (mut dlogits, mut scratch) = (Vec::new(), model::GradScratch::default());
    // Routing changes with the tokens: each step sends its own counts to each expert.
    let mut step = |seed: u64| {
        let tokens = batch(c.vocab_size, bd, seed);
        model::forward(&w, &tokens, bd, true, &mut cache).unwrap();
        output_losses(&cache.logits, &tokens, bd, c.vocab_size, None, lw, Some(&mut dlogits)).unwrap();
        peak_heap::allocations_of(|| {
            model::forward(&w, &tokens, bd, true, &mut cache).unwrap();
            model::backward(&w, &cache, &dlogits, 0.01, &mut grads, &mut scratch);
        })
        .0
    };
    // The first steps size the buffers (an expert's batch grows to the most rows it is sent).
    for seed in 0..8 {
        step(seed);
    }
    let counts: Vec<usize> = (8..12).map(&mut step).collect();
    assert!(counts.iter().all(|&n| n == 0), "itera allocations per step: {counts:?}");

    let c = TransformerConfig::preset("test").unwrap();
    let w = Transformer::init_random(&c, 1).unwrap();
    let mut cache = transformer::TransformerCache::default();
    let mut grads = Grads::zeros(&w.table);
    let mut scratch = transformer::GradScratch::default();
    let mut step = |seed: u64| {
        let tokens = batch(c.vocab_size, bd, seed);
        transformer::forward(&w, &tokens, bd, true, &mut cache).unwrap();
        output_losses(&cache.logits, &tokens, bd, c.vocab_size, None, lw, Some(&mut dlogits)).unwrap();
        peak_heap::allocations_of(|| {
            transformer::forward(&w, &tokens, bd, true, &mut cache).unwrap();
            transformer::backward(&w, &cache, &dlogits, &mut grads, &mut scratch);
        })
        .0
    };
    step(0);
    let counts: Vec<usize> = (1..4).map(&mut step).collect();
    assert!(
        counts.iter().all(|&n| n == 0),
        "transformer allocations per step: {counts:?}"
    );
}
