use std::time::Instant;
use tch::{Device, Kind, Tensor};
use vla_model::*;
fn make(n: i64, tok: &TextTokenizer, model: &VlaModel) -> (VlaBatch, Tensor) {
    let s = model.config().vision.image_size as i64;
    let sq = s / 8;
    let half = ((s - sq) / 2) as f32;
    let xy = Tensor::randint(s - sq, [n, 2], (Kind::Int64, Device::Cpu));
    let imgs = Tensor::zeros([n, 2, 3, s, s], (Kind::Uint8, Device::Cpu));
    let v: Vec<i64> = Vec::try_from(xy.flatten(0, 1)).unwrap();
    let mut actions = vec![];
    for i in 0..n as usize {
        let (x, y) = (v[2 * i], v[2 * i + 1]);
        let _ = imgs.get(i as i64).get(0).get(0).narrow(0, y, sq).narrow(1, x, sq).fill_(255);
        let _ = imgs.get(i as i64).get(1).get(2).narrow(0, x, sq).narrow(1, y, sq).fill_(200);
        actions.push([(x as f32 - half) / half * 0.05, (y as f32 - half) / half * 0.05, 0.0, 0.0, 0.0, 0.01, if x as f32 > half { 1.0 } else { 0.0 }]);
    }
    let prompts: Vec<Vec<i64>> = (0..n).map(|_| tok.encode_prompt("pick up the red block").unwrap()).collect();
    let (ids, mask) = left_pad(&prompts, tok.pad_id());
    (VlaBatch { images: imgs, state: Some(if std::env::var("CHEAT").is_ok() { Tensor::cat(&[xy.to_kind(Kind::Float) / (s as f64), Tensor::zeros([n, 11], (Kind::Float, Device::Cpu))], 1) } else { Tensor::zeros([n, 13], (Kind::Float, Device::Cpu)) }), prompt_ids: ids, prompt_mask: mask, action_tokens: model.encode_actions(&actions).unwrap() }, xy)
}
fn main() {
    tch::set_num_threads(1);
    let steps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let cfg = VlaConfig::from_toml_file(std::env::args().nth(2).unwrap_or(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/tiny.toml").into())).unwrap();
    let lr: f64 = std::env::args().nth(3).and_then(|s| s.parse().ok()).unwrap_or(1e-3);
    let tok = TextTokenizer::train_for_instructions(&["pick up the red block"], 512).unwrap();
    let mut stats = NormStats::unit(&cfg);
    stats.action.q01 = vec![-0.05, -0.05, -0.01, -0.01, -0.01, -0.01, 0.0];
    stats.action.q99 = vec![0.05, 0.05, 0.01, 0.01, 0.01, 0.02, 1.0];
    let mut model = VlaModel::new(cfg, stats, Device::Cpu, 0).unwrap();
    let mut tr = TrainStep::new(&mut model, OptimConfig { lr, warmup_steps: 30, total_steps: steps, ..Default::default() }).unwrap();
    let (test, _) = make(64, &tok, &model);
    println!("img sums {:?}", Vec::<f64>::try_from(test.images.narrow(0,0,3).to_kind(Kind::Double).sum_dim_intlist([1i64,2,3,4].as_slice(), false, Kind::Double)).unwrap());
    let t0 = Instant::now();
    for i in 0..steps {
        let (b, _) = make(16, &tok, &model);
        let st = tr.step(&model, &b).unwrap();
        if i % 25 == 0 || i + 1 == steps {
            let out = tch::no_grad(|| model.forward_train(&test)).unwrap();
            let err = (&out.predicted - &test.action_tokens).abs().to_kind(Kind::Float).mean_dim(0i64, false, Kind::Float);
            println!("step {i} {:.0}s loss {:.3} acc {:.2} | test acc {:.2} mean |bin err| per dim {:?}", t0.elapsed().as_secs_f64(), st.loss, st.accuracy, out.accuracy.double_value(&[]), Vec::<f32>::try_from(err).unwrap().iter().map(|e| (e * 10.0).round() / 10.0).collect::<Vec<_>>());
        }
    }
}
