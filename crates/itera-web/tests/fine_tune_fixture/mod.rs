//! The page jobs that tests/golden/fine-tune-curve.json and distill-curve.json record: their
//! settings and the batch fingerprint, shared by the native tests that write the fixtures and
//! the browser test that follows them.
#![allow(dead_code)]

use itera_core::train::TrainSpec;
use serde_json::Value;

/// 6 steps of the page's fine-tune, small batches, two shards.
pub fn spec() -> TrainSpec {
    TrainSpec {
        steps: 6,
        batch: 4,
        seq_len: 32,
        warmup: 2,
        eval_every: 3,
        checkpoint_every: 3,
        shards: 2,
        ..TrainSpec::FINE_TUNE
    }
}

/// FNV-1a 64 of a batch's token ids (little-endian bytes), in hex.
pub fn fnv(tokens: &[u32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tokens.iter().flat_map(|t| t.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The distillation fixture's corpus: itera-tiny q8 writes about 2,000 tokens.
pub fn distill_corpus() -> itera_core::train::CorpusSettings {
    itera_core::train::CorpusSettings {
        tokens: 2_000,
        seed: 3,
        ..itera_core::train::CorpusSettings::PAGE
    }
}

/// 6 steps of the page's distillation, small batches, two shards.
pub fn distill_spec() -> TrainSpec {
    TrainSpec {
        steps: 6,
        batch: 4,
        seq_len: 32,
        warmup: 2,
        eval_every: 3,
        checkpoint_every: 3,
        shards: 2,
        ..TrainSpec::DISTILL
    }
}

/// Equal JSON, numbers to 1e-12 (a decimal read back may land one unit in the last place off).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-12 * x.abs().max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
