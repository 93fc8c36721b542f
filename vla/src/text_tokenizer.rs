//! Text tokenizer: byte-level BPE from the Hugging Face `tokenizers` crate.
//!
//! A small BPE is trained on the task instructions (wrapped in the prompt template) so the
//! text vocabulary — and hence the LM's embedding table — stays tiny. Being byte-level, any
//! string still encodes, word the tokenizer has never seen included. Any HF `tokenizer.json`
//! (e.g. Llama's) also loads, for running with a pretrained LM.

use std::collections::HashSet;
use std::path::Path;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder, TokenizerImpl};

use crate::error::{Result, VlaError};

/// Beginning-of-sequence token of trained tokenizers.
pub const BOS_TOKEN: &str = "<s>";
/// Padding token of trained tokenizers (padded positions are masked anyway).
pub const PAD_TOKEN: &str = "<pad>";
/// End-of-sequence token of trained tokenizers (unused by the VLA, kept for HF parity).
pub const EOS_TOKEN: &str = "</s>";

/// OpenVLA's prompt: `In: What action should the robot take to {instruction}?\nOut:`.
pub fn prompt(instruction: &str) -> String {
    let instruction = instruction
        .trim()
        .trim_end_matches(['.', '?', '!'])
        .to_lowercase();
    format!("In: What action should the robot take to {instruction}?\nOut:")
}

/// The prompt of a question about the images (vision-language data and `vla ask`): the
/// robot's prompt format with the question in place of the action request.
pub fn question_prompt(question: &str) -> String {
    format!("In: {}\nOut:", question.trim().to_lowercase())
}

/// Wrapper with the prompt conventions of the VLA.
#[derive(Clone, Debug)]
pub struct TextTokenizer {
    inner: Tokenizer,
    bos_id: Option<i64>,
    pad_id: i64,
}

fn tok_err(context: &str, e: impl std::fmt::Display) -> VlaError {
    VlaError::Tokenizer(format!("{context}: {e}"))
}

impl TextTokenizer {
    /// Trains a byte-level BPE with at most `vocab_size` ids on `corpus` as given.
    ///
    /// `vocab_size` must leave room for the 256 byte symbols and 3 special tokens.
    pub fn train<S: AsRef<str> + Sync>(corpus: &[S], vocab_size: usize) -> Result<Self> {
        if vocab_size < 256 + 3 {
            return Err(VlaError::Tokenizer(format!(
                "vocab_size {vocab_size} is below the byte-level minimum of 259"
            )));
        }
        let byte_level = ByteLevel::new(false, true, true);
        let mut tk: TokenizerImpl<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel> =
            TokenizerBuilder::new()
                .with_model(BPE::default())
                .with_normalizer(None)
                .with_pre_tokenizer(Some(byte_level))
                .with_post_processor(Some(byte_level))
                .with_decoder(Some(byte_level))
                .build()
                .map_err(|e| tok_err("building tokenizer", e))?;
        let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        let mut trainer = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(vocab_size)
            .min_frequency(1)
            .initial_alphabet(alphabet)
            .special_tokens(
                [BOS_TOKEN, PAD_TOKEN, EOS_TOKEN]
                    .iter()
                    .map(|t| AddedToken::from(t.to_string(), true))
                    .collect(),
            )
            .build();
        tk.train(&mut trainer, corpus.iter().map(|s| s.as_ref()))
            .map_err(|e| tok_err("training", e))?;
        let tokenizer = Self::from_tokenizer(Tokenizer::from(tk));
        tracing::info!(
            vocab = tokenizer.vocab_size(),
            sentences = corpus.len(),
            "trained byte-level BPE"
        );
        Ok(tokenizer)
    }

    /// Trains on every instruction wrapped in the prompt template (what the model sees).
    pub fn train_for_instructions<S: AsRef<str> + Sync>(
        instructions: &[S],
        vocab_size: usize,
    ) -> Result<Self> {
        let corpus: Vec<String> = instructions.iter().map(|s| prompt(s.as_ref())).collect();
        Self::train(&corpus, vocab_size)
    }

    /// Wraps any HF tokenizer; BOS is looked up under its common names.
    pub fn from_tokenizer(inner: Tokenizer) -> Self {
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let bos_id = find(&[BOS_TOKEN, "<|begin_of_text|>", "<bos>", "[CLS]"]).map(i64::from);
        let pad_id = find(&[PAD_TOKEN, "<unk>", "<|end_of_text|>"]).map_or(0, i64::from);
        TextTokenizer {
            inner,
            bos_id,
            pad_id,
        }
    }

    /// Loads a `tokenizer.json`; errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| VlaError::checkpoint(path, format!("cannot read: {e}")))?;
        let inner = Tokenizer::from_bytes(&bytes)
            .map_err(|e| VlaError::checkpoint(path, format!("not a valid tokenizer.json: {e}")))?;
        Ok(Self::from_tokenizer(inner))
    }

    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.inner
            .save(path, true)
            .map_err(|e| VlaError::checkpoint(path, format!("cannot write: {e}")))
    }

    /// Number of ids in use (BPE vocabulary plus added/special tokens).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn bos_id(&self) -> Option<i64> {
        self.bos_id
    }

    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    /// The id that ends a generated sequence (`</s>`, or a pretrained tokenizer's own).
    pub fn eos_id(&self) -> Option<i64> {
        [EOS_TOKEN, "<|end_of_text|>", "<|im_end|>", "<eos>", "[SEP]"]
            .iter()
            .find_map(|n| self.inner.token_to_id(n))
            .map(i64::from)
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Plain text → ids (no special tokens).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| tok_err("encoding", e))?;
        Ok(enc.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    /// `[BOS] + prompt(instruction)` ids, as fed to the model.
    pub fn encode_prompt(&self, instruction: &str) -> Result<Vec<i64>> {
        let mut ids: Vec<i64> = self.bos_id.into_iter().collect();
        ids.extend(self.encode(&prompt(instruction))?);
        Ok(ids)
    }

    /// `[BOS] + question_prompt(question)` ids.
    pub fn encode_question(&self, question: &str) -> Result<Vec<i64>> {
        let mut ids: Vec<i64> = self.bos_id.into_iter().collect();
        ids.extend(self.encode(&question_prompt(question))?);
        Ok(ids)
    }

    /// A sub-task sentence or an answer → ids, as it follows the prompt's `Out:` (one
    /// leading space, lower case; the end token is the model's to add).
    pub fn encode_subtask(&self, subtask: &str) -> Result<Vec<i64>> {
        self.encode(&format!(" {}", subtask.trim().to_lowercase()))
    }

    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids
            .iter()
            .map(|&i| u32::try_from(i).map_err(|_| VlaError::Tokenizer(format!("invalid id {i}"))))
            .collect::<Result<_>>()?;
        self.inner
            .decode(&ids, true)
            .map_err(|e| tok_err("decoding", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTRUCTIONS: [&str; 4] = [
        "pick up the red block",
        "put the blue cube in the bowl",
        "open the drawer",
        "push the green button",
    ];

    #[test]
    fn save_load_round_trip_and_unseen_words() {
        let tok = TextTokenizer::train_for_instructions(&INSTRUCTIONS, 300).unwrap();
        assert!(tok.vocab_size() <= 300 && tok.vocab_size() > 259);
        let dir = std::env::temp_dir().join(format!("vla-tok-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        tok.save(&path).unwrap();
        let loaded = TextTokenizer::from_file(&path).unwrap();
        for s in INSTRUCTIONS {
            let a = tok.encode_prompt(s).unwrap();
            assert_eq!(a, loaded.encode_prompt(s).unwrap());
            assert_eq!(a[0], tok.bos_id().unwrap());
        }
        // Training merged frequent pieces: a seen prompt is much shorter than its bytes.
        let seen = tok.encode(&prompt(INSTRUCTIONS[0])).unwrap();
        assert!(seen.len() * 2 < prompt(INSTRUCTIONS[0]).len(), "{seen:?}");
        // Unseen words (and non-ASCII) still encode, byte-level, and decode back.
        let text = "stack the purple zebra on the pyramide ünïcødé";
        let ids = loaded.encode(text).unwrap();
        assert!(!ids.is_empty());
        assert!(ids.iter().all(|&i| (i as usize) < loaded.vocab_size()));
        assert_eq!(loaded.decode(&ids).unwrap(), text);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn corrupt_tokenizer_file_names_the_file() {
        let dir = std::env::temp_dir().join(format!("vla-tok-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, "{ not json").unwrap();
        let err = TextTokenizer::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
