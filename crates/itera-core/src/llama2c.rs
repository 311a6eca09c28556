//! The teacher: a llama2.c checkpoint (Karpathy's `run.c` format) and its `tokenizer.bin`.
//! The checkpoint loads into the Transformer family's type (`Llama2::weights`), so it runs
//! through that family's one forward and KV-cache decoder. Used to sample the training
//! corpus, as a baseline in evaluation, and as a golden test of the whole
//! reading/forward/decoding path.
//!
//! Checkpoint: 7 little-endian i32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
//! vocab_size — negative when the classifier is not shared —, seq_len), then f32 tensors in
//! order token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final,
//! [freq_cis_real, freq_cis_imag], [wcls].

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::family::Architecture;
use crate::transformer::{Transformer, TransformerConfig, TransformerState, TransformerTable, TransformerWeights};
use crate::weights::Weights;

/// The decoding state of a llama2.c model: the Transformer's KV cache.
pub type Llama2State = TransformerState;

#[derive(Clone, Debug, PartialEq)]
pub struct Llama2Config {
    pub dim: usize,
    pub hidden_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab_size: usize,
    pub seq_len: usize,
    pub shared_classifier: bool,
}

impl Llama2Config {
    pub fn head_size(&self) -> usize {
        self.dim / self.n_heads
    }
    pub fn kv_dim(&self) -> usize {
        self.dim * self.n_kv_heads / self.n_heads
    }

    /// f32 values a checkpoint of this header holds after it (weights and the RoPE tables).
    /// Counted in u128: each field is at most 2^20, so no product of three overflows (a usize
    /// would, on wasm32), and the file is checked before anything is allocated.
    pub fn file_floats(&self) -> u128 {
        let [l, d, h, kv, v, hs, t] = [
            self.n_layers,
            self.dim,
            self.hidden_dim,
            self.kv_dim(),
            self.vocab_size,
            self.head_size(),
            self.seq_len,
        ]
        .map(|x| x as u128);
        let per_layer = 2 * d + 2 * d * d + 2 * kv * d + 3 * h * d; // norms, wq wo, wk wv, w1 w2 w3
        let classifier = if self.shared_classifier { 0 } else { v * d };
        v * d + l * per_layer + d + t * hs + classifier // + freq_cis_real/imag
    }
}

/// A llama2.c checkpoint: its header and the Transformer it holds (tensors moved to their
/// `model.py` names, the header's seq_len as `max_seq_len`).
#[derive(Clone, Debug)]
pub struct Llama2 {
    pub config: Llama2Config,
    pub weights: TransformerWeights,
}

/// The largest KV cache a checkpoint may ask for (its `Llama2State`: keys and values of every
/// layer at every position): stories110M at seq_len 1024 needs 75 MB.
pub const MAX_KV_CACHE_BYTES: usize = 1 << 29;

/// `<unk>`, `<s>`, `</s>` and the 256 byte-fallback pieces `<0x00>`..`<0xFF>` (ids 3–258).
const MIN_VOCAB: usize = 3 + 256;

fn bad(msg: impl Into<String>) -> Error {
    Error::Llama2c(msg.into())
}

impl Llama2 {
    /// The config of the 28-byte header at the start of `bytes`, checked for range and shape
    /// (the weights are not looked at).
    pub fn read_header(bytes: &[u8]) -> Result<Llama2Config> {
        let header: Vec<i32> = bytes
            .get(..28)
            .ok_or_else(|| {
                bad(format!(
                    "file of {} bytes is shorter than the 28-byte header",
                    bytes.len()
                ))
            })?
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let field = |i: usize, name: &str| -> Result<usize> {
            let v = if i == 5 {
                header[i].unsigned_abs() as i64
            } else {
                header[i] as i64
            };
            if v <= 0 || v > 1 << 20 {
                return Err(bad(format!("header field {name} = {} is out of range", header[i])));
            }
            Ok(v as usize)
        };
        let config = Llama2Config {
            dim: field(0, "dim")?,
            hidden_dim: field(1, "hidden_dim")?,
            n_layers: field(2, "n_layers")?,
            n_heads: field(3, "n_heads")?,
            n_kv_heads: field(4, "n_kv_heads")?,
            vocab_size: field(5, "vocab_size")?,
            seq_len: field(6, "seq_len")?,
            shared_classifier: header[5] > 0,
        };
        let c = &config;
        if !c.dim.is_multiple_of(c.n_heads)
            || !c.n_heads.is_multiple_of(c.n_kv_heads)
            || !c.head_size().is_multiple_of(2)
        {
            return Err(bad(format!(
                "dim {} / heads {} / kv heads {} do not divide evenly",
                c.dim, c.n_heads, c.n_kv_heads
            )));
        }
        Ok(config)
    }

    /// Whether `bytes` start with a llama2.c header (the weights may still be wrong).
    pub fn looks_like_checkpoint(bytes: &[u8]) -> bool {
        Llama2::read_header(bytes).is_ok()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Llama2> {
        let config = Llama2::read_header(bytes)?;
        let c = &config;
        let floats = &bytes[28..];
        if !floats.len().is_multiple_of(4) {
            return Err(bad("data is not a whole number of f32 values"));
        }
        let need = c.file_floats();
        if (floats.len() / 4) as u128 != need {
            return Err(bad(format!(
                "expected {need} f32 values for this header, found {}",
                floats.len() / 4
            )));
        }
        let (l, t, kv) = (c.n_layers as u128, c.seq_len as u128, c.kv_dim() as u128);
        let cache = 2 * 4 * l * t * kv;
        if cache > MAX_KV_CACHE_BYTES as u128 {
            return Err(bad(format!(
                "its KV cache ({n_layers} layers × seq_len {seq_len} × kv_dim {kv_dim}, keys and values) would take \
                 {cache} bytes, more than the {MAX_KV_CACHE_BYTES} this build allows",
                n_layers = c.n_layers,
                seq_len = c.seq_len,
                kv_dim = c.kv_dim(),
            )));
        }
        // The file holds them all, so these products fit a usize.
        let (l, d, h, kv, v) = (c.n_layers, c.dim, c.hidden_dim, c.kv_dim(), c.vocab_size);
        let sizes = [
            v * d,
            l * d,
            l * d * d,
            l * kv * d,
            l * kv * d,
            l * d * d,
            l * d,
            l * h * d,
            l * d * h,
            l * h * d,
            d,
        ];
        let freq = c.seq_len * c.head_size();
        let mut offset = 0;
        let mut take = |n: usize| -> Result<Vec<f32>> {
            let v: Vec<f32> = floats[offset * 4..(offset + n) * 4]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            offset += n;
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(bad(format!("non-finite weight at value {}", offset - n + i)));
            }
            Ok(v)
        };
        // run.c's order: each kind of tensor stacked over the layers.
        let token_embedding = take(sizes[0])?;
        let stacked: Vec<Vec<f32>> = sizes[1..10].iter().map(|&n| take(n)).collect::<Result<_>>()?;
        let rms_final = take(sizes[10])?;
        let _freq_cis = take(freq)?; // RoPE is recomputed; stored tables are unused (as in run.c)
        let wcls = if c.shared_classifier { None } else { Some(take(v * d)?) };

        let tc = TransformerConfig {
            dim: c.dim,
            n_layers: c.n_layers,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            vocab_size: c.vocab_size,
            hidden_dim: c.hidden_dim,
            norm_eps: crate::transformer::config::NORM_EPS,
            max_seq_len: c.seq_len,
            shared_classifier: c.shared_classifier,
            tokenizer: None,
            training: None,
        };
        let table = TransformerTable::new(&tc);
        let mut values: Vec<Vec<f32>> = vec![Vec::new(); table.specs.len()];
        values[table.embed] = token_embedding;
        // The stacked tensors in file order: rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3.
        for (l, p) in table.layers.iter().enumerate() {
            let slots = [
                p.attention_norm,
                p.wq,
                p.wk,
                p.wv,
                p.wo,
                p.ffn_norm,
                p.ffn.w1,
                p.ffn.w2,
                p.ffn.w3,
            ];
            for (slot, all) in slots.into_iter().zip(&stacked) {
                let per_layer = all.len() / c.n_layers;
                values[slot] = all[l * per_layer..(l + 1) * per_layer].to_vec();
            }
        }
        values[table.norm] = rms_final;
        if let (Some(slot), Some(wcls)) = (table.output, wcls) {
            values[slot] = wcls;
        }
        Ok(Llama2 {
            config,
            weights: Weights::from_f32_tensors(tc, values),
        })
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_file(path: &std::path::Path) -> Result<Llama2> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path.display(), e))?;
        Self::from_bytes(&bytes)
    }

    pub fn param_count(&self) -> usize {
        self.weights.total_params()
    }

    /// A fresh decoding state (an empty KV cache).
    pub fn new_state(&self) -> Llama2State {
        Transformer::new_state(&self.weights)
    }

    /// One token at position `st.pos`: appends to the KV cache and returns next-token logits.
    pub fn forward<'s>(&self, st: &'s mut Llama2State, token: u32) -> Result<&'s [f32]> {
        Transformer::decode_step(&self.weights, st, token)
    }
}

/// llama2.c's `tokenizer.bin`: SentencePiece-style BPE with byte fallback.
#[derive(Clone, Debug)]
pub struct Llama2Tokenizer {
    vocab: Vec<Vec<u8>>,
    scores: Vec<f32>,
    lookup: HashMap<Vec<u8>, u32>,
    /// Bytes in the longest piece: no token covers more of a text.
    longest: usize,
}

pub const BOS: u32 = 1;
pub const EOS: u32 = 2;

impl Llama2Tokenizer {
    /// Parses `tokenizer.bin` for a vocabulary of `vocab_size` (from the checkpoint header).
    pub fn from_bytes(bytes: &[u8], vocab_size: usize) -> Result<Llama2Tokenizer> {
        if vocab_size < MIN_VOCAB {
            return Err(bad(format!(
                "the checkpoint's vocabulary has {vocab_size} tokens; a llama2.c tokenizer has <unk>, <s>, </s> and \
                 the 256 byte pieces, at least {MIN_VOCAB}"
            )));
        }
        let mut at = 4usize; // skips max_token_length
        let mut read = |n: usize| -> Result<&[u8]> {
            let s = bytes
                .get(at..at + n)
                .ok_or_else(|| bad(format!("tokenizer file truncated at byte {at}")))?;
            at += n;
            Ok(s)
        };
        let mut vocab = Vec::with_capacity(vocab_size);
        let mut scores = Vec::with_capacity(vocab_size);
        for _ in 0..vocab_size {
            let score = f32::from_le_bytes(read(4)?.try_into().unwrap_or_default());
            let len = i32::from_le_bytes(read(4)?.try_into().unwrap_or_default());
            let len = usize::try_from(len).map_err(|_| bad(format!("negative token length {len}")))?;
            vocab.push(read(len)?.to_vec());
            scores.push(score);
        }
        if at != bytes.len() {
            return Err(bad(format!(
                "tokenizer.bin holds more than the checkpoint's {vocab_size} tokens ({} bytes left after them): \
                 it belongs to another checkpoint",
                bytes.len() - at
            )));
        }
        let lookup = vocab.iter().enumerate().map(|(i, v)| (v.clone(), i as u32)).collect();
        let longest = vocab.iter().map(Vec::len).max().unwrap_or(1).max(1);
        Ok(Llama2Tokenizer {
            vocab,
            scores,
            lookup,
            longest,
        })
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_file(path: &std::path::Path, vocab_size: usize) -> Result<Llama2Tokenizer> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path.display(), e))?;
        Self::from_bytes(&bytes, vocab_size)
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Encodes like run.c's `encode(text, bos, eos=0)`: optional BOS, a dummy-prefix space
    /// for non-empty text, code points looked up whole or as byte-fallback ids (byte + 3),
    /// then greedy merging of the adjacent pair with the highest score.
    pub fn encode(&self, text: &str, bos: bool) -> Vec<u32> {
        let mut ids = Vec::new();
        if bos {
            ids.push(BOS);
        }
        if !text.is_empty() {
            if let Some(&space) = self.lookup.get(&b" "[..]) {
                ids.push(space);
            }
        }
        let mut buf = [0u8; 4];
        for ch in text.chars() {
            let bytes = ch.encode_utf8(&mut buf).as_bytes();
            match self.lookup.get(bytes) {
                Some(&id) => ids.push(id),
                None => ids.extend(bytes.iter().map(|&b| b as u32 + 3)),
            }
        }
        let start = bos as usize;
        loop {
            let mut best: Option<(f32, usize, u32)> = None;
            for i in start..ids.len().saturating_sub(1) {
                let mut merged = self.vocab[ids[i] as usize].clone();
                merged.extend_from_slice(&self.vocab[ids[i + 1] as usize]);
                if let Some(&id) = self.lookup.get(&merged) {
                    if best.is_none_or(|(s, _, _)| self.scores[id as usize] > s) {
                        best = Some((self.scores[id as usize], i, id));
                    }
                }
            }
            let Some((_, i, id)) = best else { break };
            ids[i] = id;
            ids.remove(i + 1);
        }
        ids
    }

    /// The bytes `token` prints after `prev` (run.c's `decode`): a leading space is dropped
    /// right after BOS, and `<0xHH>` pieces are raw bytes.
    pub fn decode_piece(&self, prev: u32, token: u32) -> &[u8] {
        let Some(piece) = self.vocab.get(token as usize) else {
            return &[];
        };
        let mut piece = piece.as_slice();
        if prev == BOS && piece.first() == Some(&b' ') {
            piece = &piece[1..];
        }
        if piece.len() == 6 && piece.starts_with(b"<0x") && piece[5] == b'>' {
            if let Some(b) = std::str::from_utf8(&piece[3..5])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                return &BYTE_TABLE[b as usize..b as usize + 1];
            }
        }
        piece
    }
}

static BYTE_TABLE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as u8;
        i += 1;
    }
    t
};

/// A llama2.c tokenizer in the one generation loop (`generate::Generation` over the
/// checkpoint's `weights`): a story starts from BOS and ends where the teacher samples BOS;
/// a leading space is dropped right after BOS.
impl crate::tokenizer::Codec for Llama2Tokenizer {
    fn vocab_size(&self) -> usize {
        Llama2Tokenizer::vocab_size(self)
    }

    /// BOS and the prompt. The merge loop is quadratic in the prompt's pieces, so a prompt
    /// that cannot fit the context whatever its merges (BOS, the dummy-prefix space, then at
    /// most `longest` bytes a token) is refused before it is encoded.
    fn story_prompt(&self, prompt: &str, context: usize) -> Result<Vec<u32>> {
        let fewest_tokens = 1 + (prompt.len() + 1).div_ceil(self.longest);
        if fewest_tokens >= context {
            return Err(Error::setting(
                "prompt length",
                format!("{} bytes (at least {fewest_tokens} tokens)", prompt.len()),
                "fewer tokens than the checkpoint's context (seq_len)",
            ));
        }
        let sequence = self.encode(prompt, true);
        crate::generate::check_prompt_tokens(sequence.len() - 1)?;
        Ok(sequence)
    }

    fn end_of_story(&self) -> Option<u32> {
        Some(BOS)
    }

    fn story_start(&self) -> Vec<u32> {
        vec![BOS]
    }

    fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode(text, false))
    }

    fn piece(&self, prev: u32, token: u32) -> Result<&[u8]> {
        Ok(self.decode_piece(prev, token))
    }
}

/// Generates like run.c: starts from BOS + the prompt, runs `steps` forward passes (each
/// yields one token after the prompt), stops early if BOS is sampled, returns the text.
pub fn generate(
    model: &Llama2,
    tok: &Llama2Tokenizer,
    prompt: &str,
    steps: usize,
    sampler: &mut crate::sampling::Sampler,
) -> Result<String> {
    let prompt_ids = tok.encode(prompt, true);
    let steps = steps.min(model.config.seq_len);
    let mut st = model.new_state();
    let mut token = prompt_ids[0];
    let mut bytes = Vec::new();
    for pos in 0..steps {
        let logits = model.forward(&mut st, token)?;
        let next = match prompt_ids.get(pos + 1) {
            Some(&id) => id,
            None => sampler.sample(logits, pos as u32),
        };
        if next == BOS {
            break;
        }
        bytes.extend_from_slice(tok.decode_piece(token, next));
        token = next;
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
