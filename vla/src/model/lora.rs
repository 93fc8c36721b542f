//! LoRA's bookkeeping over a whole var store: folding adapters and trainable rows back into
//! plain weights (`vla lora merge`). The adapters themselves are part of
//! [`crate::model::layers::Linear`], the trainable rows of [`crate::model::llama::Llama`].
//!
//! Names follow the layers: `X.weight` is adapted by `X.lora_A.weight` `[r, in]` and
//! `X.lora_B.weight` `[out, r]` (merged: `W + scale · B A`), and an embedding or head
//! `Y.weight` whose rows from the text vocabulary's end on are trained has them in
//! `Y.trainable_tokens_delta`.

use std::collections::HashMap;

use tch::nn::VarStore;
use tch::Tensor;

use crate::error::{Result, VlaError};

/// What [`merge_into`] folded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MergeReport {
    /// Weights that received `scale · B A`.
    pub adapters: usize,
    /// Matrices whose added rows came from a `trainable_tokens_delta`.
    pub trainable_rows: usize,
    /// Tensors copied as they are.
    pub copied: usize,
}

/// Writes into every variable of `dst` (a model without adapters) its merged value from
/// `src` (the same model with them): `W + scale · B A` for adapted weights, the trained
/// rows `text_rows..` for embeddings and heads with a delta, a plain copy otherwise. Every
/// `dst` variable must have a source; every adapter in `src` must be used.
pub fn merge_into(
    src: &VarStore,
    dst: &VarStore,
    scale: f64,
    text_rows: i64,
) -> Result<MergeReport> {
    let from: HashMap<String, Tensor> = src.variables().into_iter().collect();
    let mut report = MergeReport::default();
    let missing = |name: &str| VlaError::Input(format!("merge: no source for `{name}`"));
    tch::no_grad(|| -> Result<()> {
        for (name, var) in dst.variables() {
            let stem = name.strip_suffix(".weight");
            let adapter = stem.and_then(|s| {
                Some((
                    from.get(&format!("{s}.lora_A.weight"))?,
                    from.get(&format!("{s}.lora_B.weight"))?,
                ))
            });
            let delta = stem.and_then(|s| from.get(&format!("{s}.trainable_tokens_delta")));
            let base = from.get(&name).ok_or_else(|| missing(&name))?;
            let mut value = base.copy();
            if let Some((a, b)) = adapter {
                value += b.matmul(a) * scale;
                report.adapters += 1;
            }
            if let Some(delta) = delta {
                value.narrow(0, text_rows, delta.size()[0]).f_copy_(delta)?;
                report.trainable_rows += 1;
            }
            if adapter.is_none() && delta.is_none() {
                report.copied += 1;
            }
            let mut var = var;
            var.f_copy_(&value).map_err(|e| {
                VlaError::Input(format!(
                    "merge: `{name}` does not fit the merged model: {e}"
                ))
            })?;
        }
        Ok(())
    })?;
    let adapters_in_src = from
        .keys()
        .filter(|n| n.ends_with(".lora_A.weight"))
        .count();
    if adapters_in_src != report.adapters {
        return Err(VlaError::Input(format!(
            "merge: {} adapters in the model but {} merged",
            adapters_in_src, report.adapters
        )));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action_tokenizer::NormStats;
    use crate::checkpoint::frozen_names;
    use crate::config::{LoraConfig, VlaConfig, LORA_TARGETS};
    use crate::model::tests::batch;
    use crate::model::VlaModel;
    use crate::train::optim::{OptimConfig, TrainStep};
    use tch::Device;

    fn pair() -> (VlaModel, VlaModel) {
        crate::test_setup();
        let plain_cfg = VlaConfig::test_tiny();
        let stats = NormStats::unit(&plain_cfg);
        let plain = VlaModel::new(plain_cfg.clone(), stats.clone(), Device::Cpu, 5).unwrap();
        let mut cfg = plain_cfg;
        cfg.text.lora = Some(LoraConfig {
            rank: 4,
            alpha: 8.0,
            targets: LORA_TARGETS.iter().map(|t| t.to_string()).collect(),
        });
        let adapted = VlaModel::new(cfg, stats, Device::Cpu, 5).unwrap();
        // The adapted model's base is the plain one's (as an import would make it).
        let plain_vars = plain.var_store().variables();
        tch::no_grad(|| {
            for (name, mut var) in adapted.var_store().variables() {
                if let Some(src) = plain_vars.get(&name) {
                    var.copy_(src);
                }
            }
        });
        adapted.lm.init_trainable_rows().unwrap();
        (plain, adapted)
    }

    /// Action logits on one batch (made once per test: libtorch's generator is global and
    /// other tests draw from it concurrently).
    fn logits(model: &VlaModel, b: &crate::model::VlaBatch) -> Tensor {
        tch::no_grad(|| model.forward_train(b).unwrap().action_logits)
    }

    #[test]
    fn fresh_adapters_change_nothing() {
        let (plain, adapted) = pair();
        let frozen = frozen_names(adapted.var_store());
        assert!(frozen.contains("language_model.model.layers.0.self_attn.q_proj.weight"));
        assert!(frozen.contains("language_model.model.embed_tokens.weight"));
        assert!(!frozen
            .iter()
            .any(|n| n.contains("lora_") || n.contains("delta")));
        assert!(!frozen.iter().any(|n| !n.starts_with("language_model.")));
        let b = batch(&plain, 3);
        let d = (logits(&plain, &b) - logits(&adapted, &b))
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(d, 0.0, "zero-initialised adapters moved the logits by {d}");
    }

    #[test]
    fn training_moves_adapters_only_and_merging_keeps_outputs() {
        let (plain, mut adapted) = pair();
        let frozen = frozen_names(adapted.var_store());
        let before: HashMap<String, Tensor> = adapted
            .var_store()
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        let mut step = TrainStep::new(
            &mut adapted,
            OptimConfig {
                lr: 1e-2,
                warmup_steps: 0,
                ..OptimConfig::default()
            },
        )
        .unwrap();
        let b = batch(&adapted, 3);
        for _ in 0..3 {
            step.step(&adapted, &b).unwrap();
        }
        let after = adapted.var_store().variables();
        for name in &frozen {
            assert!(after[name].equal(&before[name]), "frozen `{name}` moved");
        }
        for name in [
            "language_model.model.layers.1.mlp.down_proj.lora_B.weight",
            "language_model.model.embed_tokens.trainable_tokens_delta",
            "vision_backbone.encoder.layer.0.attention.attention.query.weight",
        ] {
            assert!(!after[name].equal(&before[name]), "`{name}` did not train");
        }

        // Merged weights compute what base + adapters compute.
        let merged = adapted.merged().unwrap();
        assert!(merged.config().text.lora.is_none());
        assert!(frozen_names(merged.var_store()).is_empty());
        let d = (logits(&adapted, &b) - logits(&merged, &b))
            .abs()
            .max()
            .double_value(&[]);
        assert!(d < 1e-4, "merged model differs by {d}");
        // ...and not what the untrained base computes (the test could fail).
        let moved = (logits(&plain, &b) - logits(&merged, &b))
            .abs()
            .max()
            .double_value(&[]);
        assert!(moved > 1e-3, "training changed nothing ({moved})");
        let q = "language_model.model.layers.0.self_attn.q_proj.weight";
        assert!(!merged.var_store().variables()[q].equal(&before[q]));
    }

    /// A pretrained-LM directory of the tiny text config (as `save_pretrained` would write).
    fn write_base(dir: &std::path::Path, seed: i64) {
        use crate::model::llama::Llama;
        std::fs::create_dir_all(dir).unwrap();
        let t = VlaConfig::test_tiny().text;
        tch::manual_seed(seed);
        let vs = VarStore::new(Device::Cpu);
        let _lm = Llama::new(&vs.root(), &t, t.vocab_size, Device::Cpu);
        crate::checkpoint::save_weights(dir.join("model.safetensors"), &vs).unwrap();
        let config = serde_json::json!({
            "model_type": "llama", "vocab_size": t.vocab_size, "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size, "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "num_key_value_heads": t.num_key_value_heads, "rms_norm_eps": t.rms_norm_eps,
            "max_position_embeddings": t.max_position_embeddings,
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    }

    #[test]
    fn lora_run_stores_what_it_trained_and_loads_on_its_base() {
        crate::test_setup();
        let root = std::env::temp_dir().join(format!("vla-lora-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (base, run) = (root.join("base"), root.join("run"));
        write_base(&base, 11);
        let mut cfg = VlaConfig::test_tiny();
        cfg.text.lora = Some(LoraConfig {
            rank: 2,
            alpha: 4.0,
            targets: vec!["q_proj".into(), "v_proj".into()],
        });
        let stats = NormStats::unit(&cfg);
        let mut model = VlaModel::new(cfg, stats, Device::Cpu, 3).unwrap();
        let report = model.import_language_model(&base).unwrap();
        assert_eq!(
            report.resized,
            vec![
                ("language_model.lm_head.weight".to_string(), 300, 556),
                (
                    "language_model.model.embed_tokens.weight".to_string(),
                    300,
                    556
                ),
            ]
        );
        // Train the adapters a little so that the saved run differs from a fresh one.
        let b = batch(&model, 2);
        let mut step = TrainStep::new(&mut model, OptimConfig::default()).unwrap();
        for _ in 0..2 {
            step.step(&model, &b).unwrap();
        }
        let tok = crate::TextTokenizer::train(&["pick up the red can"], 300).unwrap();
        crate::checkpoint::save_run(&run, &model, &tok).unwrap();

        // Only the trained tensors are in the run; the base is referenced by hash.
        let bytes = std::fs::read(run.join("model.safetensors")).unwrap();
        let names = safetensors::SafeTensors::deserialize(&bytes)
            .unwrap()
            .names()
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        assert!(names.iter().any(|n| n.ends_with("q_proj.lora_B.weight")));
        assert!(names.iter().any(|n| n.ends_with("trainable_tokens_delta")));
        assert!(!names.iter().any(|n| n.ends_with("q_proj.weight")));
        let (loaded, _) = crate::checkpoint::load_run(&run, Device::Cpu).unwrap();
        let d = (logits(&model, &b) - logits(&loaded, &b))
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(d, 0.0, "reloaded LoRA run differs by {d}");

        // Other weights under the base's name: refused, naming the file.
        write_base(&base, 12);
        let err = crate::checkpoint::load_run(&run, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("changed since training") && err.contains("model.safetensors"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
