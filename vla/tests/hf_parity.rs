//! Our Llama and ViT compute what `transformers` computes: random-initialised
//! `LlamaForCausalLM`s (grouped-query attention, tied and untied embeddings, a head width
//! other than hidden / heads) and a `ViTModel`, saved by `save_pretrained`, load into our
//! modules from their own `config.json` and give the same hidden states and logits — full
//! forward and KV-cached decoding — within 1e-4 in f32. Weights are drawn wide (std 0.2, norm
//! gains around 1) so that a wrong layout, epsilon or rotary convention shows far above
//! the tolerance.
//!
//! Runs when `.venv/bin/python` imports `transformers` (`make setup` installs it); with
//! `VLA_REQUIRE_HF` set (as `make test` does) a missing one fails the test instead.

use std::path::{Path, PathBuf};
use std::process::Command;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use vla_model::hf::{llama_config, vit_config, PretrainedLm};
use vla_model::model::vit::VitModel;

const WRITER: &str = r#"
import json, sys, torch
from pathlib import Path
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, ViTConfig, ViTModel

out = Path(sys.argv[1])
torch.manual_seed(0)

def widen(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.2)

LLAMAS = {
    # GQA (4 query heads over 2 key/value heads), tied embeddings, rotary base 1e5.
    "llama_gqa_tied": dict(vocab_size=97, hidden_size=64, intermediate_size=96,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
        max_position_embeddings=64),
    # Plain multi-head, untied head, heads wider than hidden / heads (head_dim set).
    "llama_mha_untied": dict(vocab_size=61, hidden_size=48, intermediate_size=80,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, head_dim=16,
        tie_word_embeddings=False, max_position_embeddings=64),
}
for name, kw in LLAMAS.items():
    model = LlamaForCausalLM(LlamaConfig(**kw)).eval()
    widen(model)
    if kw["tie_word_embeddings"]:
        model.tie_weights()
    d = out / name
    model.save_pretrained(d, safe_serialization=True)
    # A key left out must be read with transformers' default (1e-6 for rms_norm_eps).
    if "rms_norm_eps" not in kw:
        cfg = json.loads((d / "config.json").read_text())
        cfg.pop("rms_norm_eps", None)
        (d / "config.json").write_text(json.dumps(cfg))
    ids = torch.randint(0, kw["vocab_size"], (2, 11))
    with torch.no_grad():
        full = model(ids, output_hidden_states=True)
        prefix = 7
        step = model(ids[:, :prefix], use_cache=True)
        past, steps = step.past_key_values, [step.logits]
        for i in range(prefix, 11):
            step = model(ids[:, i:i + 1], past_key_values=past, use_cache=True)
            past = step.past_key_values
            steps.append(step.logits)
    save_file({
        "input_ids": ids.contiguous(),
        "logits": full.logits.float().contiguous(),
        "last_hidden_state": full.hidden_states[-1].float().contiguous(),
        "cached_logits": torch.cat(steps, 1).float().contiguous(),
    }, d / "expected.safetensors")

vit = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2,
    num_attention_heads=4, intermediate_size=96, num_channels=3)).eval()
widen(vit)
d = out / "vit"
vit.save_pretrained(d, safe_serialization=True)
cfg = json.loads((d / "config.json").read_text())
cfg.pop("layer_norm_eps", None)
(d / "config.json").write_text(json.dumps(cfg))
pixels = torch.randn(2, 3, 32, 32)
with torch.no_grad():
    hidden = vit(pixel_values=pixels).last_hidden_state
save_file({"pixel_values": pixels.contiguous(), "last_hidden_state": hidden.contiguous()},
    d / "expected.safetensors")
print("ok")
"#;

fn python() -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import transformers, safetensors"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some(py);
    }
    assert!(
        std::env::var_os("VLA_REQUIRE_HF").is_none(),
        "VLA_REQUIRE_HF is set but {} cannot import transformers (run `make setup`)",
        py.display()
    );
    eprintln!("skipping: {} cannot import transformers", py.display());
    None
}

fn expected(dir: &Path) -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("expected.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn llama_and_vit_match_transformers() {
    let Some(py) = python() else { return };
    tch::set_num_threads(1);
    let out = std::env::temp_dir().join(format!("vla-hf-parity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let run = Command::new(&py)
        .arg("-c")
        .arg(WRITER)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "writer failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );

    for name in ["llama_gqa_tied", "llama_mha_untied"] {
        let dir = out.join(name);
        let lm = PretrainedLm::load(&dir, Device::Cpu).unwrap();
        let cfg = &lm.config;
        match name {
            "llama_gqa_tied" => {
                assert!(cfg.tie_word_embeddings && cfg.num_key_value_heads == 2);
                assert!(!lm.var_store().variables().contains_key("lm_head.weight"));
            }
            _ => {
                assert_eq!(cfg.rms_norm_eps, 1e-6, "the default of the removed key");
                assert_eq!(cfg.attention_head_dim(), 16);
            }
        }
        let e = expected(&dir);
        let ids = &e["input_ids"];
        let (b, t) = ids.size2().unwrap();
        // Full forward: hidden states after the final norm, and logits.
        let mask = Tensor::ones([b, t], (Kind::Bool, Device::Cpu));
        let mut cache = lm.lm.new_cache();
        let hidden = lm
            .lm
            .forward(&lm.lm.embed(ids, Kind::Float), &mask, &mut cache)
            .unwrap();
        let dh = max_diff(&hidden, &e["last_hidden_state"]);
        let dl = max_diff(&lm.lm.logits(&hidden), &e["logits"]);
        // KV-cached decoding: a 7-token prefix, then one token at a time.
        let mut cache = lm.lm.new_cache();
        let mut steps = Vec::new();
        for (start, len) in [(0, 7)].into_iter().chain((7..t).map(|i| (i, 1))) {
            let part = ids.narrow(1, start, len);
            let h = lm
                .lm
                .forward(
                    &lm.lm.embed(&part, Kind::Float),
                    &mask.narrow(1, start, len),
                    &mut cache,
                )
                .unwrap();
            steps.push(lm.lm.logits(&h));
        }
        let dc = max_diff(&Tensor::cat(&steps, 1), &e["cached_logits"]);
        let scale = e["logits"].abs().max().double_value(&[]);
        eprintln!(
            "{name}: max |Δ| hidden {dh:.2e}, logits {dl:.2e}, cached logits {dc:.2e} (logits up to {scale:.1})"
        );
        assert!(scale > 1.0, "logits this small would hide a mismatch");
        for (what, d) in [("hidden", dh), ("logits", dl), ("cached logits", dc)] {
            assert!(d <= 1e-4, "{name}: {what} differ from transformers by {d}");
        }
        // The single-sequence helper agrees with the batched forward.
        let row: Vec<i64> = Vec::<i64>::try_from(ids.get(1)).unwrap();
        let d1 = max_diff(&lm.logits(&row).unwrap(), &e["logits"].get(1));
        assert!(d1 <= 1e-4, "{name}: PretrainedLm::logits differs by {d1}");
    }

    let dir = out.join("vit");
    let cfg = vit_config(dir.join("config.json")).unwrap();
    assert_eq!(
        cfg.config.layer_norm_eps, 1e-12,
        "the default of the removed key"
    );
    assert!(cfg.ignored.iter().any(|k| k == "hidden_dropout_prob"));
    let vs = VarStore::new(Device::Cpu);
    let vit = VitModel::new(&vs.root(), &cfg.config);
    let report = vla_model::checkpoint::import_weights(
        dir.join("model.safetensors"),
        &vs,
        |n| Some(n.to_string()),
        &[],
    )
    .unwrap();
    assert!(report.missing.is_empty(), "missing {:?}", report.missing);
    // ViTModel's pooler has no counterpart: the VLA reads patch tokens.
    assert!(report.unused.iter().all(|n| n.starts_with("pooler.")));
    let e = expected(&dir);
    let ours = vit.last_hidden_state(&e["pixel_values"]);
    let dv = max_diff(&ours, &e["last_hidden_state"]);
    eprintln!("vit: max |Δ| last_hidden_state {dv:.2e}");
    assert!(dv <= 1e-4, "ViT differs from transformers by {dv}");
    // The VLA's view drops the CLS token and keeps the patch tokens as they are.
    let patches = vit.forward(&e["pixel_values"]);
    assert!(patches.equal(&ours.narrow(1, 1, 16)));

    // Loading a base model with 256 more ids (the action tokens) grows the embeddings.
    let dir = out.join("llama_gqa_tied");
    let cfg = llama_config(dir.join("config.json")).unwrap().config;
    let vs = VarStore::new(Device::Cpu);
    let grown =
        vla_model::model::llama::Llama::new(&vs.root(), &cfg, cfg.vocab_size + 256, Device::Cpu);
    let report = vla_model::checkpoint::import_weights(
        dir.join("model.safetensors"),
        &vs,
        |n| Some(n.to_string()),
        &["model.embed_tokens.weight"],
    )
    .unwrap();
    assert_eq!(
        report.resized,
        vec![(
            "model.embed_tokens.weight".to_string(),
            cfg.vocab_size as i64,
            cfg.vocab_size as i64 + 256
        )]
    );
    let base = PretrainedLm::load(&dir, Device::Cpu).unwrap();
    let v = cfg.vocab_size as i64;
    assert!(grown
        .embed_tokens
        .narrow(0, 0, v)
        .equal(&base.lm.embed_tokens));
    let mean = base.lm.embed_tokens.mean_dim(0, true, Kind::Float);
    let added = grown.embed_tokens.narrow(0, v, 256);
    assert!(max_diff(&added, &mean.expand([256, -1], false)) < 1e-3);
    let _ = std::fs::remove_dir_all(&out);
}
