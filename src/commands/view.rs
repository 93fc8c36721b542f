//! `vla view`: a window on the cell, the expert acting (instruction and current sub-task
//! overlaid), with the policy's camera images.

use std::path::PathBuf;

use vla_render::{run_viewer, Body, Lighting, ViewerConfig, ViewerDriver, ViewerStep};
use vla_sim::Env;
use vla_tasks::{make_task, parse_suite, Language, Split};

use super::SimOptions;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "pick")]
    suite: String,
    #[arg(long, default_value = "seen")]
    split: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Quit after this many frames (for scripted checks).
    #[arg(long)]
    frames: Option<u64>,
    /// Save a screenshot before quitting.
    #[arg(long)]
    screenshot: Option<PathBuf>,
    #[command(flatten)]
    sim: SimOptions,
}

struct ExpertDriver {
    env: Env,
    seed: u64,
    episode: u64,
    steps: usize,
    status: String,
}

impl ExpertDriver {
    fn restart(&mut self) {
        if let Err(e) = self.env.reset_physics(self.seed.wrapping_add(self.episode)) {
            tracing::error!("reset failed: {e}");
        }
        self.steps = 0;
        self.status = "running".into();
    }
}

impl ViewerDriver for ExpertDriver {
    fn scene(&mut self) -> (Vec<Body>, [f32; 3], Lighting) {
        match self.env.render_scene() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("scene: {e}");
                (Vec::new(), [0.8, 0.8, 0.8], Lighting::default())
            }
        }
    }

    fn step(&mut self) -> ViewerStep {
        let done = self.env.is_done();
        if !done {
            match self
                .env
                .expert_action()
                .and_then(|a| self.env.step_physics(&a))
            {
                Ok((eval, terminated, truncated, _)) => {
                    self.steps += 1;
                    if terminated || truncated {
                        self.status = if eval.success {
                            "SUCCESS".into()
                        } else {
                            "failed".into()
                        };
                    }
                }
                Err(e) => self.status = format!("error: {e}"),
            }
        }
        let cameras = self
            .env
            .camera_views()
            .map(|c| c.to_vec())
            .unwrap_or_default();
        // The expert's sub-task as of its last action (none before the first, or without one).
        let subtask = self
            .env
            .subtask()
            .map(|s| format!("\nexpert sub-task: {s}"))
            .unwrap_or_default();
        ViewerStep {
            poses: self.env.render_poses(),
            cameras,
            overlay: format!(
                "{} | episode {} step {} | {}\n\"{}\"{subtask}\nR: reset  N: next episode",
                self.env.family(),
                self.episode,
                self.steps,
                self.status,
                self.env.instruction()
            ),
            episode_done: self.env.is_done(),
        }
    }

    fn reset(&mut self) {
        self.restart();
    }

    fn next_episode(&mut self) {
        self.episode += 1;
        self.restart();
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let families = parse_suite(&args.suite)?;
    anyhow::ensure!(families.len() == 1, "--suite must name one family");
    let split: Split = args.split.parse()?;
    let lang = Language::builtin()?;
    let config = args.sim.env_config()?;
    let render = config.render.clone();
    let mut env = Env::new(
        make_task(families[0], split, &lang, 0.0, args.seed)?,
        config,
        args.sim.robot()?,
    );
    env.reset_physics(args.seed)?;
    let driver = ExpertDriver {
        env,
        seed: args.seed,
        episode: 0,
        steps: 0,
        status: "running".into(),
    };
    let cfg = ViewerConfig {
        max_frames: args.frames,
        screenshot: args.screenshot,
        render,
        ..ViewerConfig::default()
    };
    run_viewer(Box::new(driver), cfg)?;
    Ok(())
}
