//! Rough CPU timing of a config: one-observation inference (prefill + 7 cached decoding
//! steps), and a training step.
//!
//! `cargo run -p vla-model --example vla_bench -- [config.toml] [threads] [train_batch]` (the dev
//! profile is fine: the time is spent inside libtorch).

use std::time::Instant;

use tch::{Device, Kind, Tensor};
use vla_model::{
    left_pad, NormStats, OptimConfig, TextTokenizer, TrainStep, VlaBatch, VlaConfig, VlaModel,
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/configs/tiny.toml").to_string());
    let threads: i32 = args.get(2).map_or(Ok(2), |s| s.parse())?;
    let train_batch: i64 = args.get(3).map_or(Ok(16), |s| s.parse())?;
    tch::set_num_threads(threads);
    tch::set_num_interop_threads(1);

    let cfg = VlaConfig::from_toml_file(&path)?;
    let tok = TextTokenizer::train_for_instructions(
        &[
            "pick up the red block and place it on the green plate",
            "open the top drawer",
        ],
        cfg.text.vocab_size,
    )?;
    let mut model = VlaModel::new(cfg.clone(), NormStats::unit(&cfg), Device::Cpu, 0)?;
    println!("config {path}: {} parameters", model.num_parameters());

    let s = cfg.vision.image_size as i64;
    let make_batch = |b: i64| -> anyhow::Result<VlaBatch> {
        let prompts: Vec<Vec<i64>> = (0..b)
            .map(|_| tok.encode_prompt("pick up the red block and place it on the green plate"))
            .collect::<Result<_, _>>()?;
        let (ids, mask) = left_pad(&prompts, tok.pad_id());
        let actions: Vec<[f32; 7]> = (0..b)
            .map(|_| [0.1, 0.0, -0.1, 0.0, 0.0, 0.0, 1.0])
            .collect();
        Ok(VlaBatch {
            images: Tensor::randint(256, [b, 2, 3, s, s], (Kind::Uint8, Device::Cpu)),
            state: Some(Tensor::randn([b, 13], (Kind::Float, Device::Cpu))),
            prompt_ids: ids,
            prompt_mask: mask,
            action_tokens: model.encode_actions(&actions)?,
            action_is_pad: None,
            subtask: None,
        })
    };
    let one = make_batch(1)?;
    println!(
        "sequence: {} prefix tokens + {} prompt tokens + 7 actions",
        cfg.num_prefix_tokens(),
        one.prompt_ids.size()[1]
    );

    let time =
        |label: &str, n: usize, f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
            f()?; // warm-up
            let t = Instant::now();
            for _ in 0..n {
                f()?;
            }
            let ms = t.elapsed().as_secs_f64() * 1e3 / n as f64;
            println!("{label}: {ms:.2} ms");
            Ok(ms)
        };
    time("forward (teacher-forced, no grad, B=1)", 20, &mut || {
        tch::no_grad(|| model.forward_train(&one))
            .map(|_| ())
            .map_err(Into::into)
    })?;
    let gen_ms = time("generate 7 action tokens (B=1)", 20, &mut || {
        model
            .generate_action_tokens(
                &one.images,
                one.state.as_ref(),
                &one.prompt_ids,
                &one.prompt_mask,
            )
            .map(|_| ())
            .map_err(Into::into)
    })?;
    println!("  -> {:.0} Hz closed loop (model only)", 1e3 / gen_ms);

    let batch = make_batch(train_batch)?;
    let mut trainer = TrainStep::new(&mut model, OptimConfig::default())?;
    let step_ms = time(&format!("train step (B={train_batch})"), 5, &mut || {
        trainer.step(&model, &batch).map(|_| ()).map_err(Into::into)
    })?;
    println!(
        "  -> {:.1} samples/s, {:.0} samples in 12 min",
        train_batch as f64 * 1e3 / step_ms,
        train_batch as f64 * 1e3 / step_ms * 720.0
    );
    Ok(())
}
