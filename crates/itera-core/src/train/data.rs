//! The text a job trains on and the texts it is judged on. The CLI hands over a corpus file as
//! it is (documents separated by `<|endoftext|>`); the page hands over whatever a visitor
//! pasted or opened, which `FineTuneText::new` cuts into documents, keeps a held-out part of,
//! and joins back into a corpus of the same form.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::tokenizer::{Tokenizer, END_OF_TEXT};

/// Texts scored together for one held-out BPB figure (each text scored on its own, as
/// `cargo xtask eval` scores files, then pooled).
#[derive(Clone, Debug, PartialEq)]
pub struct EvalSet {
    pub name: String,
    pub texts: Vec<String>,
}

/// The documents of a visitor's text: split on `<|endoftext|>` when it holds one, otherwise
/// on blank lines; trimmed, empty ones dropped.
pub fn split_documents(text: &str) -> Vec<&str> {
    let docs: Vec<&str> = if text.contains(END_OF_TEXT) {
        text.split(END_OF_TEXT).collect()
    } else {
        text.split("\n\n").flat_map(|d| d.split("\r\n\r\n")).collect()
    };
    docs.into_iter().map(str::trim).filter(|d| !d.is_empty()).collect()
}

/// A visitor's text cut into a training corpus and a held-out part.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FineTuneText {
    /// `<|endoftext|>` before every training document and after the last: the model learns
    /// how stories begin (generation starts after `<|endoftext|>`) and end.
    #[serde(skip)]
    pub corpus: String,
    /// The held-out documents, `<|endoftext|>`-separated (empty when the text is too short
    /// to spare any).
    #[serde(skip)]
    pub heldout: String,
    pub documents: usize,
    pub heldout_documents: usize,
    pub bytes: usize,
    pub heldout_bytes: usize,
}

/// The share of documents held out: one in ten, at least one when there are two or more.
const HELDOUT_EVERY: usize = 10;

impl FineTuneText {
    /// Splits each of `texts` (a paste, or one file each) into documents and holds out the
    /// last tenth of them (rounded up; with a single document, its last tenth from a sentence
    /// boundary on). Refuses texts with no words.
    pub fn new(texts: &[&str]) -> Result<FineTuneText> {
        let docs: Vec<&str> = texts.iter().flat_map(|t| split_documents(t)).collect();
        if docs.is_empty() {
            return Err(Error::EmptyInput("training text (it holds no words)"));
        }
        let (train, held): (Vec<&str>, Vec<&str>) = if docs.len() >= 2 {
            let n = docs.len().div_ceil(HELDOUT_EVERY);
            (docs[..docs.len() - n].to_vec(), docs[docs.len() - n..].to_vec())
        } else {
            match sentence_cut(docs[0]) {
                Some(at) => (vec![docs[0][..at].trim_end()], vec![docs[0][at..].trim_start()]),
                None => (docs.clone(), Vec::new()),
            }
        };
        let mut corpus = String::from(END_OF_TEXT);
        for d in &train {
            corpus.push_str(d);
            corpus.push_str(END_OF_TEXT);
        }
        Ok(FineTuneText {
            corpus,
            heldout: held.join(END_OF_TEXT),
            documents: train.len(),
            heldout_documents: held.len(),
            bytes: train.iter().map(|d| d.len()).sum(),
            heldout_bytes: held.iter().map(|d| d.len()).sum(),
        })
    }
}

/// Where to cut one long document so that about its last tenth is held out: the first
/// sentence end after 90 % of its bytes, if there is one before the end.
fn sentence_cut(doc: &str) -> Option<usize> {
    let from = doc.len() * 9 / HELDOUT_EVERY;
    let rest = doc.get(from..).or_else(|| {
        let b = (from..doc.len()).find(|&i| doc.is_char_boundary(i))?;
        doc.get(b..)
    })?;
    let offset = doc.len() - rest.len();
    let end = rest.find(['.', '!', '?', '\n'])? + 1;
    let at = offset + end;
    (at < doc.len() && !doc[at..].trim().is_empty()).then_some(at)
}

/// The token stream of a corpus, refused when it holds no text.
pub fn encode_corpus(tokenizer: &Tokenizer, corpus: &str) -> Result<Vec<u32>> {
    encode_corpus_with(tokenizer, corpus, &mut |_| {})
}

/// `encode_corpus`, telling `progress` the bytes tokenized so far after each piece.
pub fn encode_corpus_with(tokenizer: &Tokenizer, corpus: &str, progress: &mut dyn FnMut(usize)) -> Result<Vec<u32>> {
    if corpus.split(END_OF_TEXT).all(|d| d.trim().is_empty()) {
        return Err(Error::EmptyInput("training text (it holds no words)"));
    }
    // In pieces (`tokenizer::encode_pieces`): the whole text's ids, the tokenizer's working
    // memory that of one piece.
    let mut ids = Vec::new();
    let mut done = 0;
    for piece in crate::tokenizer::encode_pieces(corpus) {
        ids.extend_from_slice(&tokenizer.encode(piece)?);
        done += piece.len();
        progress(done);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_on_end_of_text_or_blank_lines() {
        assert_eq!(split_documents("a\n\nb\n\n\n c "), vec!["a", "b", "c"]);
        assert_eq!(split_documents("a\n\nb<|endoftext|>c"), vec!["a\n\nb", "c"]);
        assert!(split_documents(" \n\n <|endoftext|>").is_empty());
    }

    #[test]
    fn a_tenth_of_the_documents_is_held_out() {
        let text: Vec<String> = (0..12).map(|i| format!("Story {i}.")).collect();
        let t = FineTuneText::new(&[&text.join("\n\n")]).unwrap();
        assert_eq!((t.documents, t.heldout_documents), (10, 2));
        // Several files: each is split on its own, the documents run on in order.
        let (a, b) = (text[..7].join("\n\n"), text[7..].join("<|endoftext|>"));
        assert_eq!(FineTuneText::new(&[&a, &b]).unwrap(), t);
        assert_eq!(t.heldout, "Story 10.<|endoftext|>Story 11.");
        assert!(t.corpus.starts_with("<|endoftext|>Story 0.<|endoftext|>Story 1."));
        assert!(t.corpus.ends_with("Story 9.<|endoftext|>"));
    }

    #[test]
    fn one_long_document_keeps_its_last_sentences_back() {
        let doc = "The cat sat. ".repeat(20);
        let t = FineTuneText::new(&[&doc]).unwrap();
        assert_eq!((t.documents, t.heldout_documents), (1, 1));
        assert!(t.heldout_bytes > 0 && t.heldout_bytes < doc.len() / 5, "{t:?}");
        // No sentence end: nothing can be held out.
        let t = FineTuneText::new(&["no full stop here at all"]).unwrap();
        assert_eq!(t.heldout_documents, 0);
        assert!(FineTuneText::new(&[" \n\n "]).is_err());
        assert!(FineTuneText::new(&[]).is_err());
        let multibyte = "ü".repeat(50) + ". " + &"ü".repeat(3) + ".";
        FineTuneText::new(&[&multibyte]).unwrap();
    }
}
