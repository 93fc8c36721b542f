//! Rendering throughput: `cargo run --release -p vla-render --example bench [-- STEPS [SCENES] [--shadows] [--msaa]]`.
//! Without SCENES, prints ms per view and per step for 1 and 4 scenes with two 128×128 views
//! each, without and with shadows + MSAA.

use vla_render::{bench, RenderConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let nums: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let steps = nums.first().copied().unwrap_or(100);
    let runs: Vec<(bool, bool, usize)> = match nums.get(1) {
        Some(&scenes) => vec![(flag("--shadows"), flag("--msaa"), scenes)],
        None => vec![
            (false, false, 1),
            (false, false, 4),
            (true, true, 1),
            (true, true, 4),
        ],
    };
    for (shadows, msaa, scenes) in runs {
        let cfg = RenderConfig {
            shadows,
            msaa,
            ..RenderConfig::default()
        };
        let r = bench(cfg, scenes, 2, steps)?;
        println!("shadows={shadows} msaa={msaa}: {r}");
    }
    Ok(())
}
