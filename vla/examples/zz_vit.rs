use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};
use vla_model::{vit::VitModel, VlaConfig};
fn main() {
    tch::set_num_threads(1);
    let cfg = VlaConfig::from_toml_file("/tmp/t64.toml").unwrap();
    let pool = std::env::args().nth(1).unwrap_or("mean".into());
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = VitModel::new(&vs.root().sub("v"), &cfg.vision);
    let head = nn::linear(vs.root().sub("h"), if pool == "flat" { 128 * 16 } else if pool == "kp" { 16 } else { 128 }, 2, Default::default());
    let kp = nn::linear(vs.root().sub("kp"), 128, 8, Default::default());
    let g = Tensor::linspace(-1.0, 1.0, 4, (Kind::Float, Device::Cpu));
    let gx = g.unsqueeze(0).expand([4, 4], false).reshape([1, 16, 1]);
    let gy = g.unsqueeze(1).expand([4, 4], false).reshape([1, 16, 1]);
    let mut opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
    let s = 64i64; let sq = 8;
    for step in 0..300 {
        let xy = Tensor::randint(s - sq, [32, 2], (Kind::Int64, Device::Cpu));
        let imgs = Tensor::zeros([32, 3, s, s], (Kind::Float, Device::Cpu)) - 1.0;
        let v: Vec<i64> = Vec::try_from(xy.flatten(0, 1)).unwrap();
        for i in 0..32usize { let _ = imgs.get(i as i64).get(0).narrow(0, v[2*i+1], sq).narrow(1, v[2*i], sq).fill_(1.0); }
        let y = xy.select(1, 0).gt((s - sq) / 2).to_kind(Kind::Int64);
        let f = vit.forward(&imgs);
        let f = if pool == "flat" { f.flatten(1, 2) } else if pool == "kp" {
            let a = f.apply(&kp).softmax(1, Kind::Float); // [B,16,8]
            Tensor::cat(&[(&a * &gx).sum_dim_intlist(1i64, false, Kind::Float), (&a * &gy).sum_dim_intlist(1i64, false, Kind::Float)], 1)
        } else { f.mean_dim(1i64, false, Kind::Float) };
        let logits = f.apply(&head);
        let loss = logits.cross_entropy_for_logits(&y);
        opt.backward_step(&loss);
        if step % 25 == 0 { println!("{step} loss {:.3} acc {:.2}", loss.double_value(&[]), logits.argmax(-1, false).eq_tensor(&y).to_kind(Kind::Float).mean(Kind::Float).double_value(&[])); }
    }
}
