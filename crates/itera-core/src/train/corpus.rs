//! Corpora written by a teacher (sequence-level distillation): story i is sampled with its own
//! generator seeded by (seed, i), and stories are kept in index order until the corpus holds
//! the tokens asked for — so a corpus depends only on its settings, not on how many threads or
//! browser workers wrote it, or in what order they finished. `cargo xtask corpus` and the
//! page's Distill tab write corpora this way; the page's grows story by story and resumes from
//! the stories it has.
//!
//! The text is each story followed by `<|endoftext|>` and a newline (the training corpus format).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::generate::{generate, GenerateOptions};
use crate::llama2c::{Llama2, Llama2Tokenizer, BOS};
use crate::lm::AnyWeights;
use crate::sampling::{Sampler, SamplingSettings};
use crate::tokenizer::{Tokenizer, END_OF_TEXT};

/// How a teacher writes a corpus.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusSettings {
    /// Teacher tokens to sample in total (the last story may run past it).
    pub tokens: usize,
    pub seed: u64,
    /// f64 so that settings read as typed (0.9, not 0.8999999761); the sampler takes f32.
    pub temperature: f64,
    pub top_p: f64,
}

impl CorpusSettings {
    /// The command line's sampling (`cargo xtask corpus`): the teacher's own distribution,
    /// nucleus 0.9.
    pub const DEFAULT: CorpusSettings = CorpusSettings {
        tokens: 40_000,
        seed: 0,
        temperature: 1.0,
        top_p: 0.9,
    };

    pub fn validate(&self) -> Result<()> {
        if self.tokens == 0 || self.tokens > MAX_CORPUS_TOKENS {
            return Err(Error::setting(
                "corpus tokens",
                self.tokens,
                "between 1 and 20,000,000 teacher tokens",
            ));
        }
        self.sampling(0).validate()
    }

    /// Story `i`'s sampler settings: its own seed from (seed, i).
    pub fn sampling(&self, i: usize) -> SamplingSettings {
        SamplingSettings {
            temperature: self.temperature as f32,
            top_k: 0,
            top_p: self.top_p as f32,
            seed: story_seed(self.seed, i),
        }
    }
}

impl CorpusSettings {
    /// The page's Distill tab: a corpus written in seconds (20,000 teacher tokens: about 100
    /// stories).
    pub const PAGE: CorpusSettings = CorpusSettings {
        tokens: 20_000,
        ..CorpusSettings::DEFAULT
    };
}

impl Default for CorpusSettings {
    fn default() -> Self {
        CorpusSettings::DEFAULT
    }
}

/// Most teacher tokens in one corpus (bounds the text kept in memory: ~80 MB).
pub const MAX_CORPUS_TOKENS: usize = 20_000_000;

/// The seed of story `i` of a corpus seeded `seed` (a golden-ratio stride, so neighbouring
/// corpus seeds do not share stories).
pub fn story_seed(seed: u64, i: usize) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i as u64)
}

/// One story a teacher wrote, and how many tokens it sampled for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Story {
    pub text: String,
    pub tokens: usize,
}

/// Longest story an itera teacher writes (llama2.c teachers stop at their context length).
pub const MAX_STORY_TOKENS: usize = 512;

/// A model that writes stories: an itera model with its tokenizer, or a llama2.c checkpoint.
pub enum StoryTeller<'a> {
    /// A model of either family with the project's tokenizer.
    Model(&'a AnyWeights, &'a Tokenizer),
    Llama2(&'a Llama2, &'a Llama2Tokenizer),
}

impl StoryTeller<'_> {
    /// Story `i` of the corpus `settings` describe.
    pub fn story(&self, settings: &CorpusSettings, i: usize) -> Result<Story> {
        let sampling = settings.sampling(i);
        match *self {
            StoryTeller::Llama2(model, tok) => llama2_story(model, tok, sampling),
            StoryTeller::Model(w, tok) => {
                let opts = GenerateOptions {
                    max_tokens: MAX_STORY_TOKENS,
                    sampling,
                    stop_at_end_of_text: true,
                };
                // An empty prompt starts after <|endoftext|>: the beginning of a story.
                let out = match w {
                    AnyWeights::Itera(w) => generate(w, tok, "", opts, |_| true)?,
                    AnyWeights::Transformer(w) => generate(w, tok, "", opts, |_| true)?,
                };
                // The <|endoftext|> that ended it was sampled too (as a llama2.c BOS is).
                let ended = usize::from(out.tokens.len() < MAX_STORY_TOKENS);
                Ok(Story {
                    text: out.text.trim().to_string(),
                    tokens: out.tokens.len() + ended,
                })
            }
        }
    }
}

/// One story from BOS until the teacher samples BOS again (its story delimiter) or its
/// context is full.
fn llama2_story(model: &Llama2, tok: &Llama2Tokenizer, settings: SamplingSettings) -> Result<Story> {
    let mut sampler = Sampler::new(settings)?;
    let mut st = model.new_state();
    let (mut token, mut bytes, mut tokens) = (BOS, Vec::new(), 0);
    while st.pos < model.config.seq_len {
        let position = st.pos as u32;
        let next = sampler.sample(model.forward(&mut st, token)?, position);
        tokens += 1;
        if next == BOS {
            break;
        }
        bytes.extend_from_slice(tok.decode_piece(token, next));
        token = next;
    }
    Ok(Story {
        text: String::from_utf8_lossy(&bytes).trim().to_string(),
        tokens,
    })
}

/// Stories by index as they arrive, and the corpus they make: the stories from index 0 on,
/// without a gap, until `target` teacher tokens.
#[derive(Clone, Debug, Default)]
pub struct CorpusBuilder {
    target: usize,
    stories: Vec<Option<Story>>,
    /// How many stories from index 0 are in hand without a gap, and their tokens.
    prefix_len: usize,
    prefix_tokens: usize,
}

impl CorpusBuilder {
    pub fn new(target_tokens: usize) -> CorpusBuilder {
        CorpusBuilder {
            target: target_tokens,
            ..CorpusBuilder::default()
        }
    }

    pub fn insert(&mut self, i: usize, story: Story) {
        if self.stories.len() <= i {
            self.stories.resize(i + 1, None);
        }
        self.stories[i] = Some(story);
        while self.prefix_tokens < self.target {
            let Some(Some(s)) = self.stories.get(self.prefix_len) else {
                break;
            };
            self.prefix_tokens += s.tokens;
            self.prefix_len += 1;
        }
    }

    /// Whether the stories in hand already reach the target.
    pub fn is_complete(&self) -> bool {
        self.prefix_tokens >= self.target
    }

    /// Teacher tokens of the corpus so far (the gap-free prefix).
    pub fn tokens(&self) -> usize {
        self.prefix_tokens
    }

    /// The corpus's stories so far, in order.
    pub fn stories(&self) -> impl Iterator<Item = &Story> {
        self.stories[..self.prefix_len].iter().flatten()
    }

    /// The corpus so far as training text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for s in self.stories() {
            out.push_str(&s.text);
            out.push_str(END_OF_TEXT);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn story(n: usize) -> Story {
        Story {
            text: format!("s{n}"),
            tokens: n,
        }
    }

    #[test]
    fn stories_count_in_index_order_whatever_order_they_arrive_in() {
        let mut c = CorpusBuilder::new(10);
        c.insert(1, story(4));
        assert_eq!(c.tokens(), 0, "story 0 is missing");
        c.insert(0, story(3));
        assert_eq!((c.tokens(), c.is_complete()), (7, false));
        c.insert(3, story(9));
        c.insert(2, story(5));
        assert!(c.is_complete());
        assert_eq!(c.text(), "s3<|endoftext|>\ns4<|endoftext|>\ns5<|endoftext|>\n");
    }
}
