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
    /// Dataset write and read throughput (frames/s) with two 128×128 cameras.
    Dataset(DatasetArgs),
    /// ROS 2 bridge: image-in to command-out latency minus model time, drops and backlog.
    Ros(super::ros::BenchArgs),
    /// One closed-loop policy step (encode both cameras, decode all action tokens): latency.
    Policy(super::bench_model::PolicyArgs),
    /// Training throughput (samples/s) of a model config on synthetic batches.
    Train(super::bench_model::TrainArgs),
}

#[derive(clap::Args)]
pub struct DatasetArgs {
    /// Frames to write (episodes of 50 frames).
    #[arg(long, default_value_t = 2000)]
    frames: usize,
    /// Scratch directory (removed afterwards); default: a temporary directory.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sim: SimOptions,
}

#[derive(Serialize)]
struct DatasetReport {
    frames: usize,
    resolution: [u32; 2],
    cameras: usize,
    write_frames_per_s: f64,
    read_sequential_frames_per_s: f64,
    read_shuffled_frames_per_s: f64,
    bytes_per_frame: f64,
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
        What::Dataset(a) => dataset(a),
        What::Ros(a) => super::ros::bench(a),
        What::Policy(a) => super::bench_model::policy(a),
        What::Train(a) => super::bench_model::train(a),
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

/// Write `frames` frames built from real rendered observations (so PNG sizes are realistic),
/// then read them back in order and in shuffled batches.
fn dataset(args: DatasetArgs) -> anyhow::Result<()> {
    use vla_datasets::{Dataset, DatasetSpec, DatasetWriter, FrameRecord, ImageSize};
    anyhow::ensure!(args.frames >= 50, "--frames must be at least 50");
    let lang = Language::builtin()?;
    let mut config = args.sim.env_config()?;
    config.render_enabled = true;
    let robot = args.sim.robot()?;
    let env = Env::new(
        make_task("place", Split::Seen, &lang, 0.0, 0)?,
        config.clone(),
        robot.clone(),
    );
    let mut vec_env = VecEnv::new(vec![env])?;
    // A pool of real observations from one expert episode.
    let mut pool = vec![vec_env.reset_one(0, 1)?];
    while pool.len() < 50 {
        let a = vec_env.envs[0].expert_action()?;
        let r = vec_env.step(&[a])?.remove(0);
        pool.push(r.observation);
        if r.terminated || r.truncated {
            break;
        }
    }
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("vla-bench-dataset-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let size = ImageSize {
        width: config.render.width,
        height: config.render.height,
    };
    let mut writer = DatasetWriter::create(&dir, DatasetSpec::new(robot.name.clone(), 10, size))?;
    let bar = super::progress(args.frames as u64, "write");
    let start = Instant::now();
    for i in 0..args.frames {
        let obs = &pool[i % pool.len()];
        let action = vla_core::Action::new([0.01, 0.0, -0.01], [0.0; 3], (i % 2) as f32);
        writer.add_frame(FrameRecord {
            observation: obs,
            action,
            timestamp: (i % 50) as f32 / 10.0,
            subtask: None,
        })?;
        if i % 50 == 49 {
            writer.save_episode(&pool[0].instruction)?;
        }
        bar.inc(1);
    }
    if writer.current_episode_len() > 0 {
        writer.save_episode(&pool[0].instruction)?;
    }
    writer.finalize()?;
    let write_s = start.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let ds = Dataset::open(&dir)?;
    let all: Vec<usize> = (0..ds.len()).collect();
    let start = Instant::now();
    for chunk in all.chunks(args.batch.max(1)) {
        ds.frames(chunk)?;
    }
    let seq_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for batch in ds.batches(&all, args.batch, 0) {
        batch?;
    }
    let shuffled_s = start.elapsed().as_secs_f64();
    let bytes = super::dataset::dir_size(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let n = args.frames as f64;
    let report = DatasetReport {
        frames: args.frames,
        resolution: [size.width, size.height],
        cameras: 2,
        write_frames_per_s: n / write_s,
        read_sequential_frames_per_s: n / seq_s,
        read_shuffled_frames_per_s: n / shuffled_s,
        bytes_per_frame: bytes as f64 / n,
    };
    super::print_report(args.json, &report, || {
        format!(
            "{} frames, 2 cameras at {}×{}: write {:.0} frames/s, read {:.0} frames/s in order, {:.0} frames/s shuffled (batch {}), {:.1} kB/frame",
            report.frames, size.width, size.height, report.write_frames_per_s, report.read_sequential_frames_per_s,
            report.read_shuffled_frames_per_s, args.batch, report.bytes_per_frame / 1e3
        )
    })
}
