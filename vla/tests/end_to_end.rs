//! Public-API tests: overfitting, checkpoint round trips and checkpoint error reporting.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use vla_model::{
    left_pad, save_run, NormStats, OptimConfig, Policy, TextTokenizer, TrainStep, VlaBatch,
    VlaConfig, VlaModel,
};

const INSTRUCTIONS: [&str; 4] = [
    "pick up the red block",
    "put the blue cube in the bowl",
    "open the drawer",
    "push the green button",
];

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vla-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `n` frames with random images and distinct actions; `same_context` gives every frame the
/// same state and instruction, so only the images tell the frames apart.
fn synthetic(
    n: usize,
    cfg: &VlaConfig,
    tok: &TextTokenizer,
    same_context: bool,
) -> (Tensor, Tensor, Vec<Vec<i64>>, Vec<[f32; 7]>) {
    tch::manual_seed(42);
    let s = cfg.vision.image_size as i64;
    let images = Tensor::randint(256, [n as i64, 2, 3, s, s], (Kind::Uint8, Device::Cpu));
    let state = if same_context {
        Tensor::ones([n as i64, 13], (Kind::Float, Device::Cpu)) * 0.3
    } else {
        Tensor::randn([n as i64, 13], (Kind::Float, Device::Cpu))
    };
    let prompts = (0..n)
        .map(|i| {
            let k = if same_context {
                0
            } else {
                i % INSTRUCTIONS.len()
            };
            tok.encode_prompt(INSTRUCTIONS[k]).unwrap()
        })
        .collect();
    let actions = (0..n)
        .map(|i| {
            let x = i as f32 / n as f32;
            [
                x - 0.5,
                0.4 - x,
                0.8 * x - 0.3,
                -0.6 * x,
                0.1,
                0.9 - x,
                (i % 2) as f32,
            ]
        })
        .collect();
    (images, state, prompts, actions)
}

fn setup(cfg: &VlaConfig) -> (TextTokenizer, NormStats) {
    // One intra-op thread: tests run in parallel on a small shared machine, where libtorch's
    // one-thread-per-core default makes tiny ops crawl.
    tch::set_num_threads(1);
    let tok = TextTokenizer::train_for_instructions(&INSTRUCTIONS, cfg.text.vocab_size).unwrap();
    assert!(tok.vocab_size() <= cfg.text.vocab_size);
    (tok, NormStats::unit(cfg))
}

#[test]
fn tiny_model_overfits_synthetic_frames() {
    let cfg = VlaConfig::test_tiny();
    let (tok, _) = setup(&cfg);
    let (images, state, prompts, actions) = synthetic(6, &cfg, &tok, true);
    let states: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&state).unwrap();
    let stats = NormStats::from_data(&actions, &states, &cfg).unwrap();
    let mut model = VlaModel::new(cfg, stats, Device::Cpu, 0).unwrap();
    let (prompt_ids, prompt_mask) = left_pad(&prompts, tok.pad_id());
    let batch = VlaBatch {
        images: images.shallow_clone(),
        state: Some(state.shallow_clone()),
        prompt_ids: prompt_ids.shallow_clone(),
        prompt_mask: prompt_mask.shallow_clone(),
        action_tokens: model.encode_actions(&actions).unwrap(),
        action_is_pad: None,
        subtask: None,
    };
    let mut trainer = TrainStep::new(
        &mut model,
        OptimConfig {
            lr: 3e-3,
            warmup_steps: 10,
            total_steps: 400,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let first = trainer.step(&model, &batch).unwrap();
    let mut last = first.clone();
    for _ in 0..400 {
        last = trainer.step(&model, &batch).unwrap();
        if last.accuracy >= 1.0 && last.loss < 0.05 {
            break;
        }
    }
    assert!(
        last.loss < first.loss * 0.1,
        "loss {} -> {}",
        first.loss,
        last.loss
    );
    assert_eq!(
        last.accuracy, 1.0,
        "teacher-forced accuracy after {} steps",
        last.step
    );
    eprintln!(
        "overfit: loss {:.3} -> {:.4} in {} steps",
        first.loss,
        last.loss,
        last.step + 1
    );
    // Free-running generation (KV cache) reproduces every target token and action.
    let generated = model
        .generate_action_tokens(&images, Some(&state), &prompt_ids, &prompt_mask)
        .unwrap();
    assert!(
        generated.equal(&batch.action_tokens),
        "{generated} vs {}",
        batch.action_tokens
    );
    let decoded = model
        .generate_actions(&images, Some(&state), &prompt_ids, &prompt_mask)
        .unwrap();
    let half_bin = 2.0 / 256.0 / 2.0; // unit-range stats are [q01, q99] of these actions
    for (got, want) in decoded.iter().zip(&actions) {
        assert_eq!(got[6], want[6]);
        for d in 0..6 {
            let span = model.norm_stats().action.q99[d] - model.norm_stats().action.q01[d];
            let lo = model.norm_stats().action.q01[d];
            let clipped = want[d].clamp(lo, lo + span);
            assert!(
                (got[d] - clipped).abs() <= half_bin * span + 1e-6,
                "dim {d}: {got:?} vs {want:?}"
            );
        }
    }
}

fn saved_run(tag: &str) -> (PathBuf, VlaModel, TextTokenizer) {
    let cfg = VlaConfig::test_tiny();
    let (tok, stats) = setup(&cfg);
    let model = VlaModel::new(cfg, stats, Device::Cpu, 5).unwrap();
    let dir = temp_dir(tag);
    save_run(&dir, &model, &tok).unwrap();
    (dir, model, tok)
}

fn observation(seed: u8) -> vla_core::Observation {
    let img = |k: u8| {
        vla_core::RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x as u8).wrapping_mul(k), (y as u8).wrapping_add(seed), k])
        })
    };
    vla_core::Observation {
        front: img(3),
        wrist: img(7),
        front_depth: None,
        state: [0.1 * seed as f32; 13],
        instruction: INSTRUCTIONS[0].into(),
    }
}

#[test]
fn checkpoint_round_trip_gives_identical_outputs() {
    let (dir, model, tok) = saved_run("roundtrip");
    for f in ["model.safetensors", "config.json", "tokenizer.json"] {
        assert!(dir.join(f).is_file(), "{f} not written");
    }
    let policy = Policy::load(&dir, Device::Cpu).unwrap();
    assert_eq!(policy.model().norm_stats(), model.norm_stats());
    assert_eq!(
        policy.tokenizer().encode_prompt("open the drawer").unwrap(),
        tok.encode_prompt("open the drawer").unwrap()
    );
    let loaded_vars = policy.model().var_store().variables();
    for (name, var) in model.var_store().variables() {
        assert!(
            var.equal(&loaded_vars[&name]),
            "{name} differs after reload"
        );
    }
    let original = Policy::from_parts(model, tok);
    let (o1, o2) = (observation(1), observation(2));
    let a = original
        .act_batch(&[(&o1, "open the drawer"), (&o2, "push the green button")])
        .unwrap();
    let b = policy
        .act_batch(&[(&o1, "open the drawer"), (&o2, "push the green button")])
        .unwrap();
    assert_eq!(a, b);
    // Single and batched inference agree.
    assert_eq!(policy.act(&o2, "push the green button").unwrap(), b[1]);
    std::fs::remove_dir_all(&dir).ok();
}

fn load_err(dir: &Path) -> String {
    match Policy::load(dir, Device::Cpu) {
        Ok(_) => panic!("loading a damaged run succeeded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn damaged_checkpoints_give_errors_naming_the_file() {
    let (dir, _, _) = saved_run("damaged");
    let weights = dir.join("model.safetensors");
    let good = std::fs::read(&weights).unwrap();

    // Truncated weights.
    std::fs::write(&weights, &good[..good.len() / 2]).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );

    // Garbage weights.
    std::fs::write(&weights, b"definitely not safetensors").unwrap();
    let err = load_err(&dir);
    assert!(err.contains("model.safetensors"), "{err}");

    // Missing weights.
    std::fs::remove_file(&weights).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("cannot read"),
        "{err}"
    );
    std::fs::write(&weights, &good).unwrap();

    // Weights of a differently shaped model.
    let mut other_cfg = VlaConfig::test_tiny();
    other_cfg.text.intermediate_size = 48;
    let other = VlaModel::new(
        other_cfg.clone(),
        NormStats::unit(&other_cfg),
        Device::Cpu,
        0,
    )
    .unwrap();
    vla_model::checkpoint::save_weights(&weights, other.var_store()).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("mlp"),
        "{err}"
    );
    std::fs::write(&weights, &good).unwrap();

    // Corrupt config.json.
    let config = dir.join("config.json");
    let good_config = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, &good_config[..good_config.len() / 3]).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("config.json"), "{err}");
    std::fs::write(&config, good_config.replace("\"q01\"", "\"q1\"")).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("config.json") && err.contains("q01"), "{err}");
    std::fs::write(&config, &good_config).unwrap();

    // Missing tokenizer.
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("tokenizer.json"), "{err}");

    std::fs::remove_dir_all(&dir).ok();
}
