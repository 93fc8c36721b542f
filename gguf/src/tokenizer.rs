//! `tokenizer.json` (Hugging Face tokenizers) rebuilt from the `tokenizer.ggml.*` metadata.
//!
//! A GGUF carries the vocabulary, merges and token kinds but no pipeline description. The
//! result follows transformers' GGUF converter (`integrations/gguf/gguf_tokenizer_mapping.py`)
//! exactly, so that the imported directory tokenises as `AutoTokenizer.from_pretrained(...,
//! gguf_file=...)` does: a GPT-2 byte-level BPE, the pre-tokenizer regex picked by
//! `tokenizer.ggml.pre` from the same table (GPT-2's own otherwise, which is what "smollm" gets),
//! control tokens as special added tokens, user-defined ones as plain added tokens.
//! Only byte-level BPE (`tokenizer.ggml.model == "gpt2"`) is supported.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::error::{GgufError, Result};
use crate::reader::GgufFile;

/// llama.cpp's `llama_token_type`: 3 is CONTROL, 4 USER_DEFINED.
const CONTROL: i128 = 3;
const USER_DEFINED: i128 = 4;

const LLAMA3_SPLIT: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
const TEKKEN_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
const GPT4O_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// transformers' `GGUF_PRE_TOKENIZER_SPLITS`: `tokenizer.ggml.pre` → split regex. Names not
/// listed keep GPT-2's byte-level regex.
const PRE_SPLITS: &[(&str, &str)] = &[
    ("llama3", LLAMA3_SPLIT),
    ("llama-v3", LLAMA3_SPLIT),
    ("llama-bpe", LLAMA3_SPLIT),
    ("falcon3", LLAMA3_SPLIT),
    ("falcon-h1", LLAMA3_SPLIT),
    ("pixtral", LLAMA3_SPLIT),
    ("midm-2.0", LLAMA3_SPLIT),
    ("lfm2", LLAMA3_SPLIT),
    ("jina-v5-nano", LLAMA3_SPLIT),
    ("dbrx", LLAMA3_SPLIT),
    ("smaug-bpe", LLAMA3_SPLIT),
    ("tekken", TEKKEN_SPLIT),
    ("qwen2", QWEN2_SPLIT),
    ("deepseek-r1-qwen", QWEN2_SPLIT),
    ("kormo", QWEN2_SPLIT),
    ("f2llmv2", QWEN2_SPLIT),
    ("megrez", QWEN2_SPLIT),
    ("qwen35", QWEN35_SPLIT),
    ("gpt-4o", GPT4O_SPLIT),
    ("llama4", GPT4O_SPLIT),
    ("kanana2", GPT4O_SPLIT),
    ("talkie", GPT4O_SPLIT),
    ("minimax-m2", GPT4O_SPLIT),
];

/// The tokenizer files of the imported directory.
#[derive(Clone, Debug)]
pub struct TokenizerFiles {
    /// `tokenizer.json`.
    pub tokenizer: Value,
    /// `tokenizer_config.json`: special tokens, BOS/EOS flags, chat template.
    pub tokenizer_config: Value,
    /// Tokens in the model vocabulary.
    pub vocab_size: usize,
    /// Added (special or user-defined) tokens.
    pub added_tokens: usize,
}

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves, the other 68 are
/// shifted to U+0100.. so that every byte is a visible character.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut shifted = 0u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let b = b as u32;
        let printable =
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        let code = if printable {
            b
        } else {
            shifted += 1;
            255 + shifted
        };
        *slot = char::from_u32(code).unwrap_or('\0');
    }
    table
}

fn in_alphabet(c: char) -> bool {
    let c = c as u32;
    (0x21..=0x7E).contains(&c)
        || (0xA1..=0xAC).contains(&c)
        || (0xAE..=0xFF).contains(&c)
        || (0x100..0x100 + 68).contains(&c)
}

fn spelled_in_alphabet(token: &str) -> bool {
    token.chars().all(in_alphabet)
}

/// Builds the tokenizer files; errors name the `tokenizer.*` key at fault. `context_length`
/// becomes `model_max_length`.
pub fn build(file: &GgufFile, context_length: u64) -> Result<TokenizerFiles> {
    let path = file.path();
    let model_key = "tokenizer.ggml.model";
    let model = file.opt_str(model_key)?.ok_or_else(|| {
        GgufError::unsupported(
            path,
            format!("metadata key '{model_key}'"),
            "missing: the file carries no tokenizer",
        )
    })?;
    if model != "gpt2" {
        let kind = match model {
            "llama" => " (SentencePiece)",
            "bert" => " (WordPiece)",
            "t5" => " (Unigram)",
            _ => "",
        };
        return Err(GgufError::unsupported(
            path,
            format!("metadata key '{model_key}'"),
            format!(
                "tokenizer model '{model}'{kind} is not supported; only 'gpt2' (byte-level BPE)"
            ),
        ));
    }

    let tokens_key = "tokenizer.ggml.tokens";
    let tokens = file
        .opt_str_array(tokens_key)?
        .ok_or_else(|| file.key_error(tokens_key, "missing (required)"))?;
    if tokens.is_empty() {
        return Err(file.key_error(tokens_key, "empty vocabulary"));
    }
    let types_key = "tokenizer.ggml.token_type";
    let types = file.opt_int_array(types_key)?.unwrap_or_default();
    if !types.is_empty() && types.len() != tokens.len() {
        return Err(file.key_error(
            types_key,
            format!("{} types for {} tokens", types.len(), tokens.len()),
        ));
    }
    let merges_key = "tokenizer.ggml.merges";
    let merges = file
        .opt_str_array(merges_key)?
        .ok_or_else(|| file.key_error(merges_key, "missing (a byte-level BPE needs its merges)"))?;
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let parts: Vec<&str> = m.split(' ').collect();
            match parts.as_slice() {
                [a, b] => Ok(json!([a, b])),
                _ => Err(file.key_error(
                    merges_key,
                    format!("merge {i} {m:?} is not two tokens separated by one space"),
                )),
            }
        })
        .collect::<Result<Vec<_>>>()?;

    // The vocabulary, each token in the byte alphabet (a later duplicate wins, as in a dict).
    let chars = byte_chars();
    let mut vocab = Map::new();
    let mut ids: HashMap<String, u64> = HashMap::new();
    for (id, token) in tokens.iter().enumerate() {
        let spelled = if spelled_in_alphabet(token) {
            (*token).to_string()
        } else {
            token.bytes().map(|b| chars[usize::from(b)]).collect()
        };
        vocab.insert(spelled.clone(), json!(id));
        ids.insert(spelled, id as u64);
    }

    // Control tokens spelled in the byte alphabet become special added tokens (others are
    // llama.cpp mislabels, skipped as transformers skips them); user-defined tokens that are
    // vocabulary entries become plain added tokens.
    let mut added: Vec<(u64, &str, bool)> = Vec::new();
    for (token, ty) in tokens.iter().zip(types.iter()) {
        if *ty == CONTROL && spelled_in_alphabet(token) {
            if let Some(&id) = ids.get(*token) {
                if !added.iter().any(|a| a.1 == *token) {
                    added.push((id, token, true));
                }
            }
        }
    }
    for (token, ty) in tokens.iter().zip(types.iter()) {
        if *ty == USER_DEFINED {
            if let Some(&id) = ids.get(*token) {
                if !added.iter().any(|a| a.1 == *token) {
                    added.push((id, token, false));
                }
            }
        }
    }

    let special = |key: &str| -> Result<Option<(u64, String)>> {
        let k = format!("tokenizer.ggml.{key}");
        match file.opt_u64(&k)? {
            None => Ok(None),
            Some(id) => tokens
                .get(usize::try_from(id).unwrap_or(usize::MAX))
                .map(|t| Some((id, (*t).to_string())))
                .ok_or_else(|| {
                    file.key_error(
                        &k,
                        format!("token id {id} outside the vocabulary of {}", tokens.len()),
                    )
                }),
        }
    };
    let bos = special("bos_token_id")?;
    let eos = special("eos_token_id")?;
    let unk = special("unknown_token_id")?;
    let pad = special("padding_token_id")?;
    // transformers registers these as special tokens too when the file does not mark them.
    for (id, token) in [&bos, &eos, &unk, &pad].into_iter().flatten() {
        if !added.iter().any(|a| a.1 == token) {
            added.push((*id, token, true));
        }
    }
    added.sort_by_key(|a| a.0);
    let added_json: Vec<Value> = added
        .iter()
        .map(|(id, content, special)| {
            json!({
                "id": id, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": special,
            })
        })
        .collect();

    let pre_key = "tokenizer.ggml.pre";
    let pre = file.opt_str(pre_key)?;
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let pre_tokenizer = match pre.and_then(|p| PRE_SPLITS.iter().find(|(name, _)| *name == p)) {
        Some((_, regex)) => json!({
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                byte_level(false),
            ],
        }),
        None => {
            if let Some(p) = pre.filter(|p| !matches!(*p, "default" | "gpt2" | "gpt-2")) {
                tracing::info!(
                    "{}: {pre_key} '{p}' has no split rule in transformers' GGUF converter; \
                     using GPT-2's byte-level regex as it does",
                    path.display()
                );
            }
            byte_level(true)
        }
    };

    let add_bos = file
        .opt_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(false)
        && bos.is_some();
    let add_eos = file
        .opt_bool("tokenizer.ggml.add_eos_token")?
        .unwrap_or(false)
        && eos.is_some();
    let post_processor = template_processing(
        bos.as_ref().filter(|_| add_bos),
        eos.as_ref().filter(|_| add_eos),
    );

    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_json,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges,
        },
    });
    // What the tokenizers library accepts is the real check (e.g. a merge of unknown tokens).
    let text = tokenizer.to_string();
    text.parse::<tokenizers::Tokenizer>().map_err(|e| {
        GgufError::invalid(
            path,
            "metadata keys 'tokenizer.ggml.*'",
            format!("the rebuilt tokenizer.json is rejected by the tokenizers library: {e}"),
        )
    })?;

    let mut config = Map::new();
    config.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    config.insert("add_bos_token".into(), json!(add_bos));
    config.insert("add_eos_token".into(), json!(add_eos));
    for (name, token) in [
        ("bos_token", &bos),
        ("eos_token", &eos),
        ("unk_token", &unk),
        ("pad_token", &pad),
    ] {
        config.insert(name.into(), json!(token.as_ref().map(|t| &t.1)));
    }
    config.insert("clean_up_tokenization_spaces".into(), json!(false));
    config.insert("model_max_length".into(), json!(context_length));
    if let Some(template) = file.opt_str("tokenizer.chat_template")? {
        config.insert("chat_template".into(), json!(template));
    }

    Ok(TokenizerFiles {
        tokenizer,
        tokenizer_config: Value::Object(config),
        vocab_size: tokens.len(),
        added_tokens: added.len(),
    })
}

/// transformers' `update_post_processor`: `[BOS] $A [EOS]`, and `… [BOS] $B [EOS]` for pairs,
/// with only the tokens the file asks to add.
fn template_processing(bos: Option<&(u64, String)>, eos: Option<&(u64, String)>) -> Value {
    let special =
        |t: &(u64, String), type_id: u32| json!({"SpecialToken": {"id": t.1, "type_id": type_id}});
    let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    for (part, type_id, list) in [("A", 0, &mut single), ("B", 1, &mut pair)] {
        if let Some(b) = bos {
            list.push(special(b, type_id));
        }
        list.push(seq(part, type_id));
        if let Some(e) = eos {
            list.push(special(e, type_id));
        }
    }
    let pair: Vec<Value> = single.iter().cloned().chain(pair).collect();
    let mut special_tokens = Map::new();
    for t in [bos, eos].into_iter().flatten() {
        special_tokens.insert(
            t.1.clone(),
            json!({"id": t.1, "ids": [t.0], "tokens": [t.1]}),
        );
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special_tokens})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Kv, TestGguf};
    use std::path::Path;

    fn strs(v: &[&str]) -> Kv {
        Kv::Array(v.iter().map(|s| Kv::Str((*s).into())).collect())
    }

    /// A byte-level vocabulary: 3 control tokens, the 256 byte characters, a few merges.
    fn with_tokenizer(g: &mut TestGguf) {
        let chars = byte_chars();
        let mut tokens: Vec<String> = vec![
            "<|endoftext|>".into(),
            "<|im_start|>".into(),
            "<|im_end|>".into(),
        ];
        tokens.extend(chars.iter().map(|c| c.to_string()));
        let merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"];
        for m in merges {
            tokens.push(m.replace(' ', ""));
        }
        tokens.push("<think>".into());
        let mut types = vec![3, 3, 3];
        types.extend(std::iter::repeat_n(1, 256 + merges.len()));
        types.push(4);
        let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        g.kv("tokenizer.ggml.model", Kv::Str("gpt2".into()));
        g.kv("tokenizer.ggml.pre", Kv::Str("smollm".into()));
        g.kv("tokenizer.ggml.tokens", strs(&refs));
        g.kv(
            "tokenizer.ggml.token_type",
            Kv::Array(types.into_iter().map(Kv::I32).collect()),
        );
        g.kv("tokenizer.ggml.merges", strs(&merges));
        g.kv("tokenizer.ggml.bos_token_id", Kv::U32(1));
        g.kv("tokenizer.ggml.eos_token_id", Kv::U32(2));
        g.kv("tokenizer.chat_template", Kv::Str("{{ messages }}".into()));
    }

    fn build_of(g: &TestGguf) -> Result<TokenizerFiles> {
        let bytes = g.build();
        let f = GgufFile::parse(Path::new("tok.gguf"), bytes.as_slice(), bytes.len() as u64)?;
        build(&f, 128)
    }

    fn tokenizer(files: &TokenizerFiles) -> tokenizers::Tokenizer {
        files.tokenizer.to_string().parse().unwrap()
    }

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let chars = byte_chars();
        assert_eq!(chars[b' ' as usize], 'Ġ');
        assert_eq!(chars[b'\n' as usize], 'Ċ');
        assert_eq!(chars[b'a' as usize], 'a');
        assert_eq!(chars[0xAD], 'Ń');
        assert!(chars.iter().all(|&c| in_alphabet(c)));
        let mut sorted = chars.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
    }

    #[test]
    fn encodes_with_merges_and_special_tokens() {
        let mut g = TestGguf::new();
        with_tokenizer(&mut g);
        let files = build_of(&g).unwrap();
        let tok = tokenizer(&files);
        let enc = tok
            .encode("<|im_start|>the the thin<think>\n", true)
            .unwrap();
        let pieces: Vec<&str> = enc.get_tokens().iter().map(String::as_str).collect();
        assert_eq!(
            pieces,
            [
                "<|im_start|>",
                "t",
                "he",
                "Ġthe",
                "Ġt",
                "h",
                "in",
                "<think>",
                "Ċ"
            ]
        );
        assert_eq!(enc.get_ids()[0], 1);
        let text = tok.decode(enc.get_ids(), false).unwrap();
        assert_eq!(text, "<|im_start|>the the thin<think>\n");
        assert_eq!(
            tok.decode(enc.get_ids(), true).unwrap(),
            "the the thin<think>\n"
        );
        assert_eq!(files.added_tokens, 4);
        let c = &files.tokenizer_config;
        assert_eq!(c["bos_token"], "<|im_start|>");
        assert_eq!(c["eos_token"], "<|im_end|>");
        assert_eq!(c["pad_token"], Value::Null);
        assert_eq!(c["chat_template"], "{{ messages }}");
        assert_eq!(c["model_max_length"], 128);
        assert_eq!(files.tokenizer["pre_tokenizer"]["type"], "ByteLevel");
    }

    #[test]
    fn add_bos_and_split_regex() {
        let mut g = TestGguf::new();
        with_tokenizer(&mut g);
        g.set("tokenizer.ggml.pre", Kv::Str("llama-bpe".into()));
        g.kv("tokenizer.ggml.add_bos_token", Kv::Bool(true));
        let files = build_of(&g).unwrap();
        assert_eq!(files.tokenizer["pre_tokenizer"]["type"], "Sequence");
        let tok = tokenizer(&files);
        let enc = tok.encode("12345 a", true).unwrap();
        let pieces: Vec<&str> = enc.get_tokens().iter().map(String::as_str).collect();
        // llama3's regex splits digits in threes.
        assert_eq!(pieces, ["<|im_start|>", "1", "2", "3", "4", "5", "Ġa"]);
        assert_eq!(files.tokenizer_config["add_bos_token"], true);
    }

    #[test]
    fn unsupported_and_broken_tokenizers_name_the_key() {
        let mut g = TestGguf::new();
        with_tokenizer(&mut g);
        g.set("tokenizer.ggml.model", Kv::Str("llama".into()));
        let e = build_of(&g).unwrap_err();
        assert!(matches!(e, GgufError::Unsupported { .. }));
        assert!(
            e.to_string().contains(
                "tok.gguf: metadata key 'tokenizer.ggml.model': tokenizer model 'llama' (SentencePiece)"
            ),
            "{e}"
        );

        let e = build_of(&TestGguf::new()).unwrap_err().to_string();
        assert!(e.contains("'tokenizer.ggml.model': missing"), "{e}");

        let mut g = TestGguf::new();
        with_tokenizer(&mut g);
        g.set("tokenizer.ggml.merges", strs(&["Ġ t", "x y"]));
        let e = build_of(&g).unwrap_err().to_string();
        assert!(e.contains("tokenizer") && e.contains("rejected"), "{e}");

        let mut g = TestGguf::new();
        with_tokenizer(&mut g);
        g.set("tokenizer.ggml.merges", strs(&["Ġt he x"]));
        let e = build_of(&g).unwrap_err().to_string();
        assert!(e.contains("'tokenizer.ggml.merges': merge 0"), "{e}");

        let mut g = TestGguf::new();
        with_tokenizer(&mut g);
        g.set("tokenizer.ggml.token_type", Kv::Array(vec![Kv::I32(1)]));
        assert!(build_of(&g)
            .unwrap_err()
            .to_string()
            .contains("1 types for"));

        let mut g = TestGguf::new();
        with_tokenizer(&mut g);
        g.set("tokenizer.ggml.bos_token_id", Kv::U32(100_000));
        assert!(build_of(&g)
            .unwrap_err()
            .to_string()
            .contains("'tokenizer.ggml.bos_token_id'"));
    }

    #[test]
    fn tokens_outside_the_byte_alphabet_are_respelled() {
        let mut g = TestGguf::new();
        with_tokenizer(&mut g);
        // A control token with a space: respelled in the vocabulary, not added (as transformers).
        let mut tokens = vec!["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
        let chars = byte_chars().map(|c| c.to_string());
        tokens.extend(chars.iter().map(String::as_str));
        tokens.push("[ctrl x]");
        let mut types: Vec<Kv> = vec![Kv::I32(3); 3];
        types.extend(std::iter::repeat_n(Kv::I32(1), 256));
        types.push(Kv::I32(3));
        g.set("tokenizer.ggml.tokens", strs(&tokens));
        g.set("tokenizer.ggml.token_type", Kv::Array(types));
        g.set("tokenizer.ggml.merges", strs(&[]));
        let files = build_of(&g).unwrap();
        assert_eq!(files.tokenizer["model"]["vocab"]["[ctrlĠx]"], 259);
        assert_eq!(files.added_tokens, 3);
    }
}
