//! Tokenizing a text in pieces (`tokenizer::encode_pieces_within`, any window) gives the whole
//! text's ids, for random texts whose windows fall inside words, runs of whitespace and
//! multi-byte characters.

use std::sync::LazyLock;

use itera_core::tokenizer::{encode_pieces_within, Tokenizer};
use proptest::prelude::*;

static TOKENIZER: LazyLock<Tokenizer> =
    LazyLock::new(|| Tokenizer::from_json(include_bytes!("../../../weights/tokenizer.json")).unwrap());

/// Texts made of story words, runs of spaces, tabs and newlines, punctuation and multi-byte
/// characters — or any printable Unicode.
fn texts() -> impl Strategy<Value = String> {
    let parts = prop::sample::select(vec![
        "Once",
        " upon",
        " a",
        " time",
        "Zoë",
        " 🦊",
        "日本の",
        " ",
        "  ",
        "   ",
        "\n",
        "\n\n",
        "\t",
        ",",
        ".",
        "!",
        "«",
        "»",
        "a",
        "the",
        "<|endoftext|>",
    ]);
    prop_oneof![
        prop::collection::vec(parts, 0..160).prop_map(|v| v.concat()),
        "\\PC{0,300}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_pieces_ids_are_the_whole_texts(text in texts(), window in 1usize..96) {
        let pieces: Vec<&str> = encode_pieces_within(&text, window).collect();
        prop_assert_eq!(pieces.concat(), text.clone());
        let mut ids = Vec::new();
        for p in &pieces {
            ids.extend(TOKENIZER.encode(p).unwrap());
        }
        prop_assert_eq!(ids, TOKENIZER.encode(&text).unwrap());
    }
}
