//! Bad input gets a specific typed error — never a panic. Each case below corrupts one thing
//! (a file, a config, a setting, a text) and checks the exact error variant and its context.

use std::collections::HashMap;

use itera_core::eval::eval_itera;
use itera_core::format::{load, save};
use itera_core::generate::{generate, GenerateOptions};
use itera_core::model::{decode_step, forward, BatchDims, Cache, State};
use itera_core::sampling::SamplingSettings;
use itera_core::tokenizer::Tokenizer;
use itera_core::{Config, Error, Precision, Weights};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

fn model(p: Precision) -> Weights {
    Weights::init_random(&Config::preset("test").unwrap(), 1)
        .unwrap()
        .to_precision(p)
}

type Entry = (Dtype, Vec<usize>, Vec<u8>);

/// Re-serialises a valid file after `edit` changes its tensors and/or metadata.
fn rewrite(p: Precision, edit: impl FnOnce(&mut HashMap<String, Entry>, &mut HashMap<String, String>)) -> Vec<u8> {
    let bytes = save(&model(p)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut info = meta.metadata().clone().unwrap();
    let mut tensors: HashMap<String, Entry> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut tensors, &mut info);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, Some(info)).unwrap()
}

fn err(bytes: &[u8]) -> Error {
    load(bytes).expect_err("malformed file must not load")
}

#[test]
fn truncated_file() {
    let bytes = save(&model(Precision::F32)).unwrap();
    assert!(matches!(err(&bytes[..bytes.len() - 7]), Error::Safetensors(_)));
    assert!(matches!(err(&bytes[..5]), Error::Safetensors(_)));
}

#[test]
fn empty_file() {
    assert!(matches!(err(&[]), Error::Safetensors(_)));
}

#[test]
fn wrong_dtype() {
    let bytes = rewrite(Precision::F32, |t, _| {
        let e = t.get_mut("layers.0.in_proj").unwrap();
        e.0 = Dtype::I32; // same byte size, wrong type
    });
    match err(&bytes) {
        Error::DType { name, expected, found } => {
            assert_eq!(
                (name.as_str(), expected.as_str(), found.as_str()),
                ("layers.0.in_proj", "F32", "I32")
            )
        }
        e => panic!("{e}"),
    }
}

#[test]
fn wrong_shape() {
    let bytes = rewrite(Precision::F32, |t, _| {
        let e = t.get_mut("layers.1.x_proj").unwrap();
        e.1 = vec![e.1[1], e.1[0]];
    });
    match err(&bytes) {
        Error::Shape { name, expected, found } => {
            assert_eq!(name, "layers.1.x_proj");
            assert_eq!((expected, found), (vec![25, 24], vec![24, 25]));
        }
        e => panic!("{e}"),
    }
}

#[test]
fn missing_tensor() {
    let bytes = rewrite(Precision::F32, |t, _| {
        t.remove("final_norm");
    });
    assert!(matches!(err(&bytes), Error::MissingTensor { name } if name == "final_norm"));
}

#[test]
fn missing_quantization_scale() {
    let bytes = rewrite(Precision::Q8, |t, _| {
        t.remove("embed.scale");
    });
    assert!(matches!(err(&bytes), Error::MissingTensor { name } if name == "embed.scale"));
    // q2's second group tensor, its minimums.
    let bytes = rewrite(Precision::Q2, |t, _| {
        t.remove("embed.min");
    });
    assert!(matches!(err(&bytes), Error::MissingTensor { name } if name == "embed.min"));
}

#[test]
fn unexpected_tensor() {
    let bytes = rewrite(Precision::F32, |t, _| {
        t.insert("layers.9.in_proj".into(), (Dtype::F32, vec![1], vec![0; 4]));
    });
    assert!(matches!(err(&bytes), Error::UnexpectedTensor { name } if name == "layers.9.in_proj"));
}

#[test]
fn bad_metadata_json() {
    let bytes = rewrite(Precision::F32, |_, m| {
        m.insert("config".into(), "{\"d_model\": 12,".into());
    });
    assert!(matches!(err(&bytes), Error::Metadata(msg) if msg.contains("config JSON")));
}

#[test]
fn missing_metadata_key_and_foreign_format() {
    let bytes = rewrite(Precision::F32, |_, m| {
        m.remove("precision");
    });
    assert!(matches!(err(&bytes), Error::Metadata(msg) if msg.contains("`precision`")));
    let bytes = rewrite(Precision::F32, |_, m| {
        m.insert("format".into(), "pt".into());
    });
    assert!(matches!(err(&bytes), Error::Metadata(msg) if msg.contains("format is `pt`")));
    let bytes = rewrite(Precision::F32, |_, m| {
        m.insert("format_version".into(), "7".into());
    });
    assert!(matches!(err(&bytes), Error::Metadata(msg) if msg.contains("format_version 7")));
}

#[test]
fn unknown_precision_in_file_and_in_text() {
    let bytes = rewrite(Precision::F32, |_, m| {
        m.insert("precision".into(), "q5".into());
    });
    assert!(matches!(err(&bytes), Error::UnknownPrecision(p) if p == "q5"));
    assert!(matches!("bf16".parse::<Precision>(), Err(Error::UnknownPrecision(_))));
}

#[test]
fn config_does_not_match_tensors() {
    // The metadata says D = 16 but the tensors were written for D = 12.
    let bytes = rewrite(Precision::F32, |_, m| {
        let mut c: serde_json::Value = serde_json::from_str(&m["config"]).unwrap();
        c["d_model"] = 16.into();
        m.insert("config".into(), c.to_string());
    });
    assert!(matches!(err(&bytes), Error::Shape { name, .. } if name == "embed"));
}

#[test]
fn a_config_whose_products_are_absurd_is_refused_before_any_table() {
    // Every field within its bound, but 2^20 layers of 2^20 experts: 2^42 tensors from a file
    // of a few kilobytes. Refused on the counts, before the parameter table is built.
    let bytes = rewrite(Precision::Q8, |_, m| {
        let mut c: serde_json::Value = serde_json::from_str(&m["config"]).unwrap();
        c["n_layers"] = (1 << 20).into();
        c["n_experts"] = (1 << 20).into();
        m.insert("config".into(), c.to_string());
    });
    let e = err(&bytes);
    assert!(matches!(&e, Error::InvalidConfig { field: "shape", .. }), "{e}");
    assert!(e.to_string().contains("65536 tensors"), "{e}");
    // Wide instead of deep: few tensors, 2^40 parameters.
    let c = Config {
        d_model: 1 << 20,
        d_ff: 1 << 20,
        ..Config::preset("test").unwrap()
    };
    assert!(matches!(c.validate(), Err(Error::InvalidConfig { field: "shape", .. })));
}

#[test]
fn nan_weights() {
    let bytes = rewrite(Precision::F32, |t, _| {
        let e = t.get_mut("layers.1.dt_b").unwrap();
        e.2[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    assert!(matches!(err(&bytes), Error::NonFinite { name, index: 2, .. } if name == "layers.1.dt_b"));
}

#[test]
fn infinite_quantization_scale() {
    let bytes = rewrite(Precision::Q4, |t, _| {
        let e = t.get_mut("layers.0.out_proj.scale").unwrap();
        e.2[0..2].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
    });
    assert!(matches!(err(&bytes), Error::NonFinite { name, index: 0, .. } if name == "layers.0.out_proj.scale"));
}

#[test]
fn top_k_larger_than_experts() {
    let c = Config {
        top_k: 4,
        ..Config::preset("test").unwrap()
    };
    assert!(matches!(
        c.validate(),
        Err(Error::TopKExceedsExperts { top_k: 4, n_experts: 3 })
    ));
    assert!(matches!(
        Weights::init_random(&c, 0),
        Err(Error::TopKExceedsExperts { .. })
    ));
}

#[test]
fn zero_sized_and_absurd_configs() {
    let c = Config {
        d_state: 0,
        ..Config::preset("test").unwrap()
    };
    assert!(matches!(
        c.validate(),
        Err(Error::InvalidConfig { field: "d_state", .. })
    ));
    let c = Config {
        d_model: 1 << 30,
        ..Config::preset("test").unwrap()
    };
    assert!(matches!(
        c.validate(),
        Err(Error::InvalidConfig { field: "d_model", .. })
    ));
    assert!(matches!(Config::preset("giant"), Err(Error::UnknownPreset(_))));
}

#[test]
fn out_of_range_and_empty_tokens() {
    let w = model(Precision::Q8);
    let mut st = State::new(&w);
    assert!(matches!(
        decode_step(&w, &mut st, 37),
        Err(Error::TokenOutOfRange { id: 37, vocab_size: 37 })
    ));
    let mut cache = Cache::default();
    assert!(matches!(
        forward(&w, &[], BatchDims { batch: 1, t: 0 }, false, &mut cache),
        Err(Error::EmptyInput(_))
    ));
    assert!(matches!(
        forward(&w, &[1, 2, 3], BatchDims { batch: 2, t: 2 }, false, &mut cache),
        Err(Error::ShapeMismatch { .. })
    ));
}

fn tokenizer(vocab: usize) -> Tokenizer {
    let text = "Once upon a time there was a cat. The cat sat on a mat and was happy. ".repeat(20);
    Tokenizer::train(std::iter::once(text), vocab).unwrap()
}

#[test]
fn zero_length_evaluation_text() {
    let w = model(Precision::F32);
    let tok = tokenizer(280);
    let w = Weights::init_random(
        &Config {
            vocab_size: tok.vocab_size(),
            ..w.config
        },
        0,
    )
    .unwrap();
    assert!(matches!(eval_itera(&w, &tok, ""), Err(Error::EmptyInput(_))));
    assert!(matches!(
        eval_itera(&w, &tok, " \n<|endoftext|>\n "),
        Err(Error::EmptyInput(_))
    ));
}

#[test]
fn wrong_tokenizer_for_the_model() {
    let w = model(Precision::F32); // vocabulary 37
    let tok = tokenizer(280);
    assert!(matches!(eval_itera(&w, &tok, "a cat"), Err(Error::Tokenizer(msg)) if msg.contains("wrong tokenizer")));
    assert!(matches!(
        Tokenizer::from_json(b"{\"model\": 3}"),
        Err(Error::Tokenizer(_))
    ));
}

/// Found by fuzzing: a syntax error inside "decoder" made the tokenizers crate panic.
#[test]
fn a_tokenizer_json_with_a_syntax_error_in_its_decoder() {
    let json = String::from_utf8(include_bytes!("../../../weights/tokenizer.json").to_vec()).unwrap();
    let at = json.find("\"decoder\"").unwrap();
    let broken = format!(
        "{}\"decoder\": {{\"type\": \"Byte\u{1}Level\"}}, \"x\": {}",
        &json[..at],
        &json[at..]
    );
    let e = Tokenizer::from_json(broken.as_bytes()).err().unwrap().to_string();
    assert!(
        e.contains("not a valid tokenizer.json") && e.contains("control character"),
        "{e}"
    );
}

#[test]
fn a_tokenizer_that_is_not_byte_level_bpe() {
    let shipped: serde_json::Value = serde_json::from_str(&tokenizer(280).to_json().unwrap()).unwrap();
    let refused = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut t = shipped.clone();
        edit(&mut t);
        match Tokenizer::from_json(t.to_string().as_bytes()) {
            Err(Error::Tokenizer(msg)) => msg,
            other => panic!("{:?}", other.map(|_| ())),
        }
    };
    // WordPiece over ASCII pieces: every piece is in the byte-level alphabet, yet the text is not.
    let msg = refused(&|t| {
        let vocab = t["model"]["vocab"].clone();
        t["model"] = serde_json::json!({"type": "WordPiece", "unk_token": "a", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab});
    });
    assert!(msg.contains("not BPE"), "{msg}");
    let msg = refused(&|t| t["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"}));
    assert!(msg.contains("not ByteLevel"), "{msg}");
    let msg = refused(&|t| t["decoder"] = serde_json::Value::Null);
    assert!(msg.contains("not ByteLevel"), "{msg}");
}

#[test]
fn out_of_range_generation_settings() {
    let tok = tokenizer(280);
    let w = Weights::init_random(
        &Config {
            vocab_size: tok.vocab_size(),
            ..Config::preset("test").unwrap()
        },
        0,
    )
    .unwrap();
    let opts = |max_tokens, sampling| GenerateOptions {
        max_tokens,
        sampling,
        stop_at_end_of_text: true,
    };
    let greedy = SamplingSettings::greedy();
    let cases = [
        opts(0, greedy),
        opts(
            10,
            SamplingSettings {
                temperature: -0.5,
                ..greedy
            },
        ),
        opts(
            10,
            SamplingSettings {
                temperature: f32::INFINITY,
                ..greedy
            },
        ),
        opts(
            10,
            SamplingSettings {
                top_p: 0.0,
                ..SamplingSettings::default()
            },
        ),
    ];
    for o in cases {
        assert!(
            matches!(
                generate(&w, &tok, "a cat", o, |_| true),
                Err(Error::InvalidSetting { .. })
            ),
            "{o:?}"
        );
    }
    let huge = "a".repeat(itera_core::generate::MAX_PROMPT_BYTES + 1);
    assert!(matches!(
        generate(&w, &tok, &huge, opts(1, greedy), |_| true),
        Err(Error::InvalidSetting {
            name: "prompt length",
            ..
        })
    ));
}
