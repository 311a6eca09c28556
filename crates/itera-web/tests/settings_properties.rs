//! Property tests of the settings the page sends across the wasm boundary, as JSON (the layer
//! under serde-wasm-bindgen): any object of known and unknown fields with values of any JSON
//! type is either accepted — and then every value is in range — or refused with a message
//! that names what is wrong; nothing panics.
#![cfg(not(target_arch = "wasm32"))]

use itera_core::train::{TrainSpec, LIMITS};
use itera_web::engine::{Engine, GenerateRequest};
use itera_web::training::settings_from_json;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Numbers a person or a script might type, and the edges: zero, negatives, fractions,
/// huge, beyond 2^53, the largest f64.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..5000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e3f64..1e3).prop_map(Value::from),
        prop::sample::select(vec![0.0, -0.0, 1e-300, 1e300, f64::MAX, 0.5, 1.0, 9007199254740993.0])
            .prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => number(),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        1 => "[a-z0-9 .🦀]{0,12}".prop_map(Value::from),
        1 => Just(json!([1, 2])),
        1 => Just(json!({"nested": 1})),
    ]
}

/// An object with some of `names` (and now and then a misspelt one) set to arbitrary values.
fn settings(names: &'static [&'static str]) -> impl Strategy<Value = (Value, Vec<String>)> {
    let field = prop_oneof![
        9 => prop::sample::select(names).prop_map(str::to_string),
        1 => "[a-z_]{1,10}",
    ];
    prop::collection::vec((field, value()), 0..6).prop_map(|pairs| {
        let keys = pairs.iter().map(|(k, _)| k.clone()).collect();
        (Value::Object(pairs.into_iter().collect::<Map<_, _>>()), keys)
    })
}

/// Every training setting's name, read from the spec itself (distill included).
fn train_fields() -> &'static [&'static str] {
    let spec = serde_json::to_value(TrainSpec::DISTILL).unwrap();
    let names = spec
        .as_object()
        .unwrap()
        .keys()
        .map(|k| &*k.clone().leak())
        .collect::<Vec<&str>>();
    names.leak()
}

const GENERATE_FIELDS: &[&str] = &[
    "prompt",
    "max_tokens",
    "temperature",
    "top_k",
    "top_p",
    "seed",
    "stop_at_end_of_text",
];

fn micro() -> Engine {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let w = std::fs::read(root.join("weights/itera-micro-q4.safetensors")).unwrap();
    let t = std::fs::read(root.join("weights/tokenizer.json")).unwrap();
    Engine::load(&w, &t).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn training_settings_are_in_range_or_refused_by_name((given, keys) in settings(train_fields())) {
        for defaults in [TrainSpec::FINE_TUNE, TrainSpec::DISTILL] {
            match settings_from_json(given.clone(), &defaults).map_err(|e| e.to_string()).and_then(|s| {
                s.validate().map(|()| s).map_err(|e| e.to_string())
            }) {
                Ok(spec) => {
                    let v = serde_json::to_value(&spec).unwrap();
                    for l in LIMITS.iter().filter(|l| v.get(l.name).is_some()) {
                        let x = v[l.name].as_f64().unwrap();
                        prop_assert!(x.is_finite() && x >= l.min && x <= l.max, "{} = {x}", l.name);
                    }
                }
                Err(e) => prop_assert!(
                    keys.iter().any(|k| e.contains(k.as_str())) || e.contains("training settings"),
                    "{e} (given {given})"
                ),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn generation_settings_run_or_are_refused_by_name((given, keys) in settings(GENERATE_FIELDS)) {
        let mut engine = micro();
        let outcome = itera_web::from_json::<GenerateRequest>(given.clone(), "generation settings")
            .and_then(|mut r| {
                r.max_tokens = r.max_tokens.min(3).max(usize::from(r.max_tokens > 0));
                engine.start(&r).map_err(|e| e.to_string())?;
                engine.step(3).map_err(|e| e.to_string())
            });
        if let Err(e) = outcome {
            prop_assert!(
                keys.iter().any(|k| e.contains(k.as_str())) || e.contains("max_tokens") || e.contains("prompt"),
                "{e} (given {given})"
            );
        }
    }
}
