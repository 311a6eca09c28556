//! Byte-level BPE tokenizer (SPEC "Tokenizer"): trained and stored with the Hugging Face
//! `tokenizers` crate as a standard `tokenizer.json`; every Unicode input encodes, and
//! decoding streams valid UTF-8 token by token.

use std::collections::HashMap;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, DecoderWrapper, ModelWrapper, PreTokenizerWrapper};

use crate::error::{Error, Result};

/// The document separator in corpora and the token generation starts from.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Byte-level BPE tokenizer plus each id's raw bytes (for streaming decode).
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    token_bytes: Vec<Vec<u8>>,
    end_of_text: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

/// GPT-2's reversible byte ↔ printable-character map used by byte-level BPE: printable
/// Latin-1 bytes map to themselves, the other 68 bytes to U+0100 onwards, in byte order.
fn byte_to_char() -> [char; 256] {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    let mut map = ['\0'; 256];
    let mut next = 0u32;
    for b in 0..256u32 {
        map[b as usize] = if printable(b) {
            char::from_u32(b).unwrap_or('\0')
        } else {
            next += 1;
            char::from_u32(0xff + next).unwrap_or('\0')
        };
    }
    map
}

/// What a generation needs from a tokenizer — the project's byte-level BPE (`Tokenizer`) or a
/// llama2.c checkpoint's (`Llama2Tokenizer`) — so one generation loop serves both.
pub trait Codec {
    fn vocab_size(&self) -> usize;
    /// The token a story starts from, then the prompt's tokens. A prompt that cannot fit in
    /// `context` tokens may be refused before it is encoded.
    fn story_prompt(&self, prompt: &str, context: usize) -> Result<Vec<u32>>;
    /// The token that ends a story.
    fn end_of_story(&self) -> Option<u32>;
    /// The tokens a story starts from (before its first token is predicted).
    fn story_start(&self) -> Vec<u32>;
    /// The tokens of a text, without the start.
    fn encode_text(&self, text: &str) -> Result<Vec<u32>>;
    /// The bytes `token` prints after `prev`.
    fn piece(&self, prev: u32, token: u32) -> Result<&[u8]>;
    /// The ids of a text of any length, handed out in pieces (the concatenation is
    /// `encode_text(text)`) until `on_ids` returns false; a codec that can cut a long text
    /// does, so memory holds one piece and a caller that has enough stops the work.
    fn encode_long(&self, text: &str, on_ids: &mut dyn FnMut(&[u32]) -> bool) -> Result<()> {
        on_ids(&self.encode_text(text)?);
        Ok(())
    }
}

/// Most bytes the project's tokenizer is handed at once (`encode_pieces`).
pub const ENCODE_WINDOW: usize = 1 << 16;

/// `text` cut into pieces of about `ENCODE_WINDOW` bytes, each ending just before an ASCII space
/// that follows a character other than whitespace — where the byte-level pre-tokenizer starts
/// a pre-token (" word") anyway, and BPE never merges across pre-tokens — so the pieces' ids,
/// one after the other, are the whole text's. A piece ends at the last such point within the
/// window (a stretch with none runs on to the first one after it, or to the end).
pub fn encode_pieces(text: &str) -> impl Iterator<Item = &str> {
    encode_pieces_within(text, ENCODE_WINDOW)
}

/// `encode_pieces` with a window of `window` bytes (at least 1).
pub fn encode_pieces_within(text: &str, window: usize) -> impl Iterator<Item = &str> {
    let window = window.max(1);
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let b = rest.as_bytes();
        let cut_at = |i: &usize| b[*i] == b' ' && !b[*i - 1].is_ascii_whitespace();
        let cut = if b.len() <= window {
            b.len()
        } else {
            (1..=window)
                .rev()
                .find(cut_at)
                .or_else(|| (window + 1..b.len()).find(cut_at))
                .unwrap_or(b.len())
        };
        // A cut is at an ASCII byte, so it is a character boundary.
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

impl Codec for Tokenizer {
    fn vocab_size(&self) -> usize {
        Tokenizer::vocab_size(self)
    }

    /// `<|endoftext|>` (the beginning of a story) and the prompt's tokens.
    fn story_prompt(&self, prompt: &str, _context: usize) -> Result<Vec<u32>> {
        let mut sequence: Vec<u32> = self.end_of_text().into_iter().collect();
        let prompt_tokens = self.encode(prompt)?;
        crate::generate::check_prompt_tokens(prompt_tokens.len())?;
        sequence.extend(prompt_tokens);
        Ok(sequence)
    }

    fn end_of_story(&self) -> Option<u32> {
        self.end_of_text()
    }

    fn story_start(&self) -> Vec<u32> {
        self.end_of_text().into_iter().collect()
    }

    fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        self.encode(text)
    }

    fn piece(&self, _prev: u32, token: u32) -> Result<&[u8]> {
        self.token_bytes(token)
    }

    fn encode_long(&self, text: &str, on_ids: &mut dyn FnMut(&[u32]) -> bool) -> Result<()> {
        for piece in encode_pieces(text) {
            if !on_ids(&self.encode(piece)?) {
                break;
            }
        }
        Ok(())
    }
}

impl Tokenizer {
    /// Trains byte-level BPE on `texts` to `vocab_size` ids (256 bytes + merges + the
    /// end-of-text special token).
    pub fn train<I, S>(texts: I, vocab_size: usize) -> Result<Tokenizer>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        if vocab_size < 258 {
            return Err(Error::setting(
                "vocab_size",
                vocab_size,
                "at least 258 (256 bytes, 1 merge, end-of-text)",
            ));
        }
        let mut inner = tokenizers::Tokenizer::new(ModelWrapper::BPE(BPE::default()));
        inner.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true))));
        inner.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::new(
            false, true, true,
        ))));
        let trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut trainer = TrainerWrapper::BpeTrainer(trainer);
        inner
            .train(&mut trainer, texts)
            .map_err(|e| Error::Tokenizer(format!("training failed: {e}")))?;
        Self::from_inner(inner)
    }

    /// Loads a `tokenizer.json`.
    pub fn from_json(json: &[u8]) -> Result<Tokenizer> {
        // Read as JSON first: the tokenizers crate panics (an `expect` in its decoder's
        // Deserialize, found by fuzzing) on a syntax error inside "decoder", and from a parsed
        // value there are none left to hit it.
        let invalid = |e: serde_json::Error| Error::Tokenizer(format!("not a valid tokenizer.json: {e}"));
        let value: serde_json::Value = serde_json::from_slice(json).map_err(invalid)?;
        let inner: tokenizers::Tokenizer = serde_json::from_value(value).map_err(invalid)?;
        Self::from_inner(inner)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_file(path: &std::path::Path) -> Result<Tokenizer> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path.display(), e))?;
        Self::from_json(&bytes)
    }

    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(true).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    fn from_inner(inner: tokenizers::Tokenizer) -> Result<Tokenizer> {
        // Token bytes come from the byte-level alphabet below, which is only the text when
        // the model is BPE and the text is split and decoded byte-level (a WordPiece vocabulary
        // of ASCII pieces would pass the alphabet check and decode wrongly).
        use tokenizers::{DecoderWrapper, ModelWrapper, PreTokenizerWrapper};
        if !matches!(inner.get_model(), ModelWrapper::BPE(_)) {
            return Err(Error::Tokenizer(
                "the model is not BPE (expected byte-level BPE)".into(),
            ));
        }
        if !matches!(inner.get_pre_tokenizer(), Some(PreTokenizerWrapper::ByteLevel(_)))
            || !matches!(inner.get_decoder(), Some(DecoderWrapper::ByteLevel(_)))
        {
            return Err(Error::Tokenizer(
                "the pre-tokenizer and decoder are not ByteLevel (expected byte-level BPE)".into(),
            ));
        }
        let char_to_byte: HashMap<char, u8> = byte_to_char().iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        let n = inner.get_vocab_size(true);
        let mut token_bytes = vec![Vec::new(); n];
        for (token, id) in inner.get_vocab(true) {
            let Some(slot) = token_bytes.get_mut(id as usize) else {
                return Err(Error::Tokenizer(format!("token id {id} ≥ vocabulary size {n}")));
            };
            let special = inner.get_added_vocabulary().is_special_token(&token);
            *slot = if special {
                token.into_bytes()
            } else {
                token
                    .chars()
                    .map(|c| char_to_byte.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| Error::Tokenizer(format!("token `{token}` is not byte-level BPE")))?
            };
        }
        let end_of_text = inner.token_to_id(END_OF_TEXT);
        Ok(Tokenizer {
            inner,
            token_bytes,
            end_of_text,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// The `<|endoftext|>` id, if the vocabulary has it.
    pub fn end_of_text(&self) -> Option<u32> {
        self.end_of_text
    }

    /// Token ids of `text` (any Unicode; `<|endoftext|>` becomes its special id).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(format!("encode failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The raw bytes of one token (may be part of a UTF-8 character).
    pub fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .ok_or(Error::TokenOutOfRange {
                id,
                vocab_size: self.vocab_size(),
            })
    }

    /// Decodes a whole sequence (invalid UTF-8, possible only from arbitrary ids, becomes U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Turns a stream of token byte-strings into text without ever splitting a character: bytes
/// of an incomplete UTF-8 sequence are held until the next token completes them; bytes that
/// can never become valid are emitted as U+FFFD.
#[derive(Clone, Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// Adds a token's bytes and returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Invalid bytes: replace and continue after them.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        // An incomplete sequence at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// Flushes what is left at the end of the stream (an incomplete character → U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        let base = [
            "Once upon a time, there was a little girl named Lily. She loved to play outside.",
            "One day, a big dog came to the park. The dog was happy and wanted to play.",
            "Tom said, \"Let's go to the park!\" His mom smiled and said yes.",
        ];
        (0..20)
            .flat_map(|i| base.iter().map(move |s| format!("{s} {i}{END_OF_TEXT}")))
            .collect()
    }

    #[test]
    fn byte_map_is_a_bijection() {
        let m = byte_to_char();
        let set: std::collections::HashSet<char> = m.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'A' as usize], 'A');
    }

    #[test]
    fn round_trips_arbitrary_unicode_and_empty_text() {
        let tok = Tokenizer::train(corpus().into_iter(), 300).unwrap();
        assert!(tok.vocab_size() <= 300 && tok.vocab_size() > 257);
        let eot = tok.end_of_text().expect("end-of-text token");
        for text in [
            "",
            "Once upon a time",
            "héllo wörld ✓ 日本語 🦀🦀 \u{0} \t\n",
            "Lily<|endoftext|>Tom",
            "ﷺ𝔘𝔫𝔦",
        ] {
            let ids = tok.encode(text).unwrap();
            assert_eq!(tok.decode(&ids).unwrap(), text, "{ids:?}");
            if text.contains(END_OF_TEXT) {
                assert!(ids.contains(&eot));
            }
        }
        assert!(tok.encode("").unwrap().is_empty());
    }

    #[test]
    fn stream_decoding_never_splits_a_character() {
        let tok = Tokenizer::train(corpus().into_iter(), 300).unwrap();
        let text = "a🦀b日本é";
        let ids = tok.encode(text).unwrap();
        let mut dec = StreamDecoder::default();
        let mut out = String::new();
        for &id in &ids {
            let piece = dec.push(tok.token_bytes(id).unwrap());
            assert!(!piece.contains(char::REPLACEMENT_CHARACTER));
            out.push_str(&piece);
        }
        out.push_str(&dec.finish());
        assert_eq!(out, text);
        // Byte by byte through a 4-byte character: nothing until it completes.
        let mut dec = StreamDecoder::default();
        let crab = "🦀".as_bytes();
        assert_eq!(dec.push(&crab[..1]), "");
        assert_eq!(dec.push(&crab[1..3]), "");
        assert_eq!(dec.push(&crab[3..]), "🦀");
        // Invalid bytes mid-stream are replaced, the rest survives; a dangling lead byte at
        // the end becomes one replacement character.
        assert_eq!(dec.push(&[b'x', 0xff, b'y', 0xe6]), "x\u{fffd}y");
        assert_eq!(dec.finish(), "\u{fffd}");
    }

    #[test]
    fn saved_json_loads_back_identically() {
        let tok = Tokenizer::train(corpus().into_iter(), 280).unwrap();
        let json = tok.to_json().unwrap();
        let back = Tokenizer::from_json(json.as_bytes()).unwrap();
        let text = "Lily and Tom played.";
        assert_eq!(tok.encode(text).unwrap(), back.encode(text).unwrap());
        assert!(matches!(Tokenizer::from_json(b"{not json"), Err(Error::Tokenizer(_))));
    }
}
