//! `vla bench …`: throughput benchmarks (numbers for reports, never timed tests).

use std::time::Instant;

use serde::Serialize;
use vla_sim::{Env, VecEnv};
use vla_tasks::{make_task, Language, Split};

use super::SimOptions;

#[derive(clap::Subcommand)]
pub enum What {
    /// Env steps per second with 128×128 front + wrist rendering, split physics / rendering.
    Sim(SimArgs),
}

#[derive(clap::Args)]
pub struct SimArgs {
    #[arg(long, default_value_t = 1)]
    envs: usize,
    #[arg(long, default_value_t = 200)]
    steps: usize,
    #[arg(long, default_value = "pick")]
    suite: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sim: SimOptions,
}

#[derive(Serialize)]
struct SimReport {
    envs: usize,
    steps: usize,
    resolution: [u32; 2],
    physics_ms_per_step: f64,
    render_ms_per_frame: f64,
    env_steps_per_s: f64,
    frames_per_minute: f64,
}

pub fn run(what: What) -> anyhow::Result<()> {
    match what {
        What::Sim(a) => sim(a),
    }
}

fn sim(args: SimArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.envs >= 1 && args.steps >= 1,
        "--envs and --steps must be at least 1"
    );
    let family = vla_tasks::parse_suite(&args.suite)?;
    anyhow::ensure!(family.len() == 1, "--suite must name one family");
    let lang = Language::builtin()?;
    let mut config = args.sim.env_config()?;
    config.render_enabled = true;
    let robot = args.sim.robot()?;
    let envs = (0..args.envs)
        .map(|i| {
            Ok(Env::new(
                make_task(family[0], Split::Seen, &lang, 0.0, i as u64)?,
                config.clone(),
                robot.clone(),
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut vec_env = VecEnv::new(envs)?;
    let seeds = VecEnv::seeds(0, args.envs);
    vec_env.reset(&seeds)?;
    let bar = super::progress(args.steps as u64, "bench sim");
    let (mut physics_s, mut render_s) = (0.0, 0.0);
    let start = Instant::now();
    for step in 0..args.steps {
        let actions = vec_env
            .envs
            .iter_mut()
            .map(|e| e.expert_action())
            .collect::<Result<Vec<_>, _>>()?;
        let results = vec_env.step(&actions)?;
        physics_s += vec_env.last_physics_s;
        render_s += vec_env.last_render_s;
        for (i, r) in results.iter().enumerate() {
            if r.terminated || r.truncated {
                vec_env.reset_one(i, seeds[i].wrapping_add(step as u64 + 1))?;
            }
        }
        bar.inc(1);
    }
    let wall = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let env_steps = (args.envs * args.steps) as f64;
    let report = SimReport {
        envs: args.envs,
        steps: args.steps,
        resolution: [config.render.width, config.render.height],
        physics_ms_per_step: 1e3 * physics_s / args.steps as f64,
        render_ms_per_frame: 1e3 * render_s / env_steps,
        env_steps_per_s: env_steps / wall,
        frames_per_minute: 60.0 * env_steps / wall,
    };
    super::print_report(args.json, &report, || {
        format!(
            "{} envs × {} steps at {}×{}: {:.1} env steps/s (physics {:.2} ms per vector step, rendering {:.2} ms per env frame)",
            report.envs, report.steps, report.resolution[0], report.resolution[1], report.env_steps_per_s,
            report.physics_ms_per_step, report.render_ms_per_frame
        )
    })
}
