//! The recurrent decoder agrees with the batch forward: stepping token by token gives the
//! same logits as one prefill over the sequence, for every precision; and a prefill leaves
//! the same state behind as stepping.

use itera_core::model::{decode_step, forward, prefill, BatchDims, Cache, State};
use itera_core::rng::Pcg32;
use itera_core::{Config, Precision, Weights};

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 + 1e-5 * b.abs()
}

fn weights(preset: &str) -> Weights {
    let c = Config::preset(preset).unwrap();
    let mut w = Weights::init_random(&c, 42).unwrap();
    let mut rng = Pcg32::new(43);
    for t in &mut w.tensors {
        t.as_f32_mut()
            .unwrap()
            .iter_mut()
            .for_each(|v| *v += 0.05 * rng.normal());
    }
    w
}

#[test]
fn decode_steps_reproduce_prefill_logits_for_every_precision() {
    let base = weights("test");
    let v = base.config.vocab_size;
    let mut rng = Pcg32::new(1);
    let tokens: Vec<u32> = (0..23).map(|_| rng.below(v as u32)).collect();
    for p in Precision::ALL {
        let w = base.to_precision(p);
        let mut cache = Cache::default();
        forward(
            &w,
            &tokens,
            BatchDims {
                batch: 1,
                t: tokens.len(),
            },
            false,
            &mut cache,
        )
        .unwrap();
        let mut st = State::new(&w);
        for (t, &tok) in tokens.iter().enumerate() {
            let logits = decode_step(&w, &mut st, tok).unwrap();
            let want = &cache.logits[t * v..(t + 1) * v];
            for (i, (a, b)) in logits.iter().zip(want).enumerate() {
                assert!(close(*a, *b), "{p} position {t} logit {i}: decode {a} vs prefill {b}");
            }
        }
    }
}

#[test]
fn prefill_state_continues_like_stepping() {
    let w = weights("test").to_precision(Precision::Q8);
    let tokens = [3u32, 1, 4, 1, 5, 9, 2, 6];
    let mut stepped = State::new(&w);
    for &t in &tokens {
        decode_step(&w, &mut stepped, t).unwrap();
    }
    let mut pre = State::new(&w);
    prefill(&w, &tokens, &mut pre).unwrap();
    assert_eq!(pre.pos, stepped.pos);
    for next in [7u32, 0, 36] {
        let a = decode_step(&w, &mut stepped, next).unwrap().to_vec();
        let b = decode_step(&w, &mut pre, next).unwrap();
        for (x, y) in a.iter().zip(b) {
            assert!(close(*x, *y), "after prefill: {x} vs {y}");
        }
        // Same experts; weights to rounding (GEMM and dot products sum in different orders).
        for (r1, r2) in pre.routing.iter().zip(&stepped.routing) {
            assert_eq!(r1.experts, r2.experts);
            assert!(r1.weights.iter().zip(&r2.weights).all(|(a, b)| close(*a, *b)));
        }
    }
}

#[test]
fn short_prompts_shorter_than_the_conv_window_work() {
    let w = weights("test");
    let mut a = State::new(&w);
    let mut b = State::new(&w);
    prefill(&w, &[5], &mut a).unwrap();
    decode_step(&w, &mut b, 5).unwrap();
    for (x, y) in a.logits().iter().zip(b.logits()) {
        assert!(close(*x, *y));
    }
}

#[test]
fn chunked_prefill_continues_the_state_exactly() {
    use itera_core::model::prefill_with_cache;
    let w = weights("test");
    let v = w.config.vocab_size;
    let mut rng = Pcg32::new(9);
    let tokens: Vec<u32> = (0..23).map(|_| rng.below(v as u32)).collect();
    let mut stepped = State::new(&w);
    let want: Vec<Vec<f32>> = tokens
        .iter()
        .map(|&t| decode_step(&w, &mut stepped, t).unwrap().to_vec())
        .collect();
    // Chunks shorter and longer than the conv window (K−1 = 3).
    let mut st = State::new(&w);
    let mut cache = Cache::default();
    let mut at = 0;
    for len in [5, 1, 2, 15] {
        prefill_with_cache(&w, &tokens[at..at + len], &mut st, &mut cache).unwrap();
        for i in 0..len {
            for (a, b) in cache.logits[i * v..(i + 1) * v].iter().zip(&want[at + i]) {
                assert!(close(*a, *b), "chunk at {at}, position {i}: {a} vs {b}");
            }
        }
        at += len;
    }
    assert_eq!(st.pos, tokens.len());
}
