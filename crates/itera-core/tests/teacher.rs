//! The llama2.c teacher reproduces its documented greedy output from BOS, byte for byte:
//! a check of checkpoint reading, RoPE, grouped-query attention, SwiGLU and the tokenizer.

use itera_core::generate::GenerateOptions;
use itera_core::generate::Generation;
use itera_core::llama2c::{generate, Llama2, Llama2Tokenizer};
use itera_core::sampling::{Sampler, SamplingSettings};

mod teacher_data;

use teacher_data::teacher_dir as data_dir;

#[test]
fn greedy_from_bos_matches_the_documented_output() {
    let Some(dir) = data_dir() else { return };
    let model = Llama2::from_file(&dir.join("stories260K.bin")).unwrap();
    assert_eq!(model.param_count(), 260_032);
    let tok = Llama2Tokenizer::from_file(&dir.join("tok512.bin"), model.config.vocab_size).unwrap();
    let want = std::fs::read_to_string(dir.join("greedy-from-bos.txt")).unwrap();
    let mut sampler = Sampler::new(SamplingSettings::greedy()).unwrap();
    // run.c's default: 256 forward passes from BOS; it prints a newline at the end.
    let got = generate(&model, &tok, "", 256, &mut sampler).unwrap();
    assert_eq!(format!("{got}\n"), want);

    // The same story streamed a token at a time, as the playground generates it.
    let opts = GenerateOptions {
        max_tokens: 256,
        sampling: SamplingSettings::greedy(),
        stop_at_end_of_text: true,
    };
    let mut run = Generation::start(&model.weights, &tok, "", opts).unwrap();
    let mut streamed = String::new();
    while let Some(t) = run.next(&model.weights, &tok).unwrap() {
        assert!(t.logprob <= 0.0);
        streamed.push_str(&t.text);
    }
    streamed.push_str(&run.finish());
    assert_eq!(streamed, got);
    // A tokenizer with more tokens than the checkpoint's vocabulary belongs to another model.
    let bytes = std::fs::read(dir.join("tok512.bin")).unwrap();
    let e = Llama2Tokenizer::from_bytes(&bytes, 300).unwrap_err().to_string();
    assert!(e.contains("another checkpoint"), "{e}");
}

#[test]
fn tokenizer_matches_run_c_conventions() {
    let Some(dir) = data_dir() else { return };
    let tok = Llama2Tokenizer::from_file(&dir.join("tok512.bin"), 512).unwrap();
    let ids = tok.encode("Once upon a time", true);
    assert_eq!(ids[0], 1, "BOS first");
    let text: Vec<u8> = ids
        .windows(2)
        .flat_map(|w| tok.decode_piece(w[0], w[1]).to_vec())
        .collect();
    assert_eq!(String::from_utf8(text).unwrap(), "Once upon a time");
    // A character outside the vocabulary falls back to its UTF-8 bytes (ids byte + 3).
    let ids = tok.encode("日", false);
    assert_eq!(&ids[1..], &[0xe6 + 3, 0x97 + 3, 0xa5 + 3]);
}

#[test]
fn malformed_checkpoints_are_rejected() {
    let Some(dir) = data_dir() else { return };
    let bytes = std::fs::read(dir.join("stories260K.bin")).unwrap();
    for (what, data) in [
        ("header only", bytes[..28].to_vec()),
        ("truncated", bytes[..bytes.len() - 5].to_vec()),
        ("empty", vec![]),
    ] {
        let err = Llama2::from_bytes(&data).unwrap_err();
        assert!(matches!(err, itera_core::Error::Llama2c(_)), "{what}: {err}");
    }
    let mut zero_dim = bytes.clone();
    zero_dim[..4].copy_from_slice(&0i32.to_le_bytes());
    assert!(Llama2::from_bytes(&zero_dim).unwrap_err().to_string().contains("dim"));
}

/// A llama2.c file of the right size for `header` (dim, hidden, layers, heads, kv heads,
/// vocab, seq_len), all weights zero: the loader's own count of the values it expects sizes it.
fn checkpoint_of(header: [i32; 7]) -> Vec<u8> {
    let mut bytes: Vec<u8> = header.iter().flat_map(|h| h.to_le_bytes()).collect();
    let e = Llama2::from_bytes(&bytes).unwrap_err().to_string();
    let need: usize = e
        .split("expected ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{e}"));
    bytes.resize(28 + 4 * need, 0);
    bytes
}

#[test]
fn a_kv_cache_larger_than_the_bound_is_refused_before_it_is_allocated() {
    // 8.8 MB on disk (dim 2, 4096 layers, seq_len 2^20): its cache would need 64 GiB.
    let bytes = checkpoint_of([2, 2, 4096, 1, 1, 512, 1 << 20]);
    assert!(bytes.len() < 10_000_000);
    let e = Llama2::from_bytes(&bytes).unwrap_err().to_string();
    assert!(e.contains("KV cache") && e.contains("68719476736 bytes"), "{e}");
    // The same shape with a short context loads.
    let ok = checkpoint_of([2, 2, 4096, 1, 1, 512, 16]);
    assert_eq!(Llama2::from_bytes(&ok).unwrap().config.n_layers, 4096);
}

#[test]
fn a_vocabulary_without_the_byte_pieces_is_refused() {
    // vocab 1 (with any tokenizer.bin) used to index past the vocabulary when a character fell
    // back to its bytes.
    let bytes = checkpoint_of([2, 2, 1, 1, 1, 1, 16]);
    let model = Llama2::from_bytes(&bytes).unwrap();
    let tokenizer: Vec<u8> = [4i32.to_le_bytes(), 0f32.to_le_bytes(), 1i32.to_le_bytes()]
        .concat()
        .into_iter()
        .chain(*b"a")
        .collect();
    let e = Llama2Tokenizer::from_bytes(&tokenizer, model.config.vocab_size).unwrap_err();
    assert!(e.to_string().contains("at least 259"), "{e}");
}

/// A prompt that cannot fit the checkpoint's context whatever its merges is refused before
/// the (quadratic) encoding runs; one that fits runs.
#[test]
fn a_prompt_longer_than_the_context_can_hold_is_refused_before_it_is_encoded() {
    let model = Llama2::from_bytes(&checkpoint_of([8, 16, 1, 2, 2, 260, 16])).unwrap();
    let mut pieces: Vec<Vec<u8>> = vec![b"<unk>".to_vec(), b"<s>".to_vec(), b"</s>".to_vec()];
    pieces.extend((0..=255u8).map(|b| format!("<0x{b:02X}>").into_bytes()));
    pieces.push(b" ".to_vec());
    let mut bin = 6u32.to_le_bytes().to_vec();
    for p in &pieces {
        bin.extend(0f32.to_le_bytes());
        bin.extend((p.len() as i32).to_le_bytes());
        bin.extend(p);
    }
    let tok = Llama2Tokenizer::from_bytes(&bin, 260).unwrap();
    let opts = GenerateOptions {
        max_tokens: 1,
        sampling: Default::default(),
        stop_at_end_of_text: false,
    };
    // The longest piece is 6 bytes, so 100 bytes need at least 1 + ⌈101 / 6⌉ = 18 tokens.
    let e = Generation::start(&model.weights, &tok, &"a".repeat(100), opts)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("100 bytes (at least 18 tokens)") && e.contains("seq_len"),
        "{e}"
    );
    assert!(Generation::start(&model.weights, &tok, "ab", opts).is_ok());
}
