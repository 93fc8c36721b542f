//! One module per subcommand, plus what they share.

pub mod act;
pub mod ask;
pub mod bench;
pub mod bench_model;
pub mod collect;
pub mod dataset;
pub mod demo;
pub mod eval;
pub mod expert;
pub mod generate;
pub mod import_lm;
pub mod lora;
pub mod render;
pub mod ros;
pub mod tasks;
pub mod train;
pub mod view;
pub mod vqa;

use std::path::PathBuf;

use anyhow::Context;
use vla_sim::{EnvConfig, RobotDescription};

/// Options every simulation command accepts.
#[derive(clap::Args, Clone, Debug)]
pub struct SimOptions {
    /// Environment config (TOML: sim, cameras, render, randomization); defaults otherwise.
    #[arg(long)]
    pub env_config: Option<PathBuf>,
    /// Robot URDF to load instead of the built-in arm.
    #[arg(long)]
    pub urdf: Option<PathBuf>,
    /// Turn on domain randomization (ranges from the config).
    #[arg(long)]
    pub randomize: bool,
    /// Camera resolution (square), overrides the config.
    #[arg(long)]
    pub resolution: Option<u32>,
}

impl SimOptions {
    pub fn env_config(&self) -> anyhow::Result<EnvConfig> {
        let mut config = match &self.env_config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let config: EnvConfig = toml::from_str(&text)
                    .with_context(|| format!("invalid environment config {}", path.display()))?;
                config.sim.validate().map_err(|e| {
                    anyhow::anyhow!("invalid environment config {}: sim: {e}", path.display())
                })?;
                config
            }
            None => EnvConfig::default(),
        };
        if self.randomize {
            config.randomization.enabled = true;
        }
        if let Some(r) = self.resolution {
            anyhow::ensure!(
                (16..=1024).contains(&r),
                "--resolution {r} is out of range 16..=1024"
            );
            config.render.width = r;
            config.render.height = r;
        }
        Ok(config)
    }

    pub fn robot(&self) -> anyhow::Result<RobotDescription> {
        Ok(match &self.urdf {
            Some(path) => RobotDescription::from_file(path, None)?,
            None => RobotDescription::default_arm()?,
        })
    }
}

/// Which words instructions are made of: the built-in vocabulary and splits
/// (`tasks/data/`), or a user's own files in the same format.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LanguageOptions {
    /// Vocabulary file (colours, nouns, templates, sub-task sentences) in the format of
    /// `tasks/data/vocabulary.toml`, instead of the built-in one: test phrasings, synonyms or
    /// colours of your own.
    #[arg(long)]
    pub vocabulary: Option<PathBuf>,
    /// Splits file (what the unseen split holds out) in the format of
    /// `tasks/data/splits.toml`, instead of the built-in one.
    #[arg(long)]
    pub splits: Option<PathBuf>,
}

impl LanguageOptions {
    /// The language these options name; errors name the file and the key at fault.
    pub fn language(&self) -> anyhow::Result<vla_tasks::Language> {
        use vla_tasks::language::{SPLITS_TOML, VOCABULARY_TOML};
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
        };
        let (vocab, vocab_name) = match &self.vocabulary {
            Some(p) => (read(p)?, p.display().to_string()),
            None => (
                VOCABULARY_TOML.to_string(),
                "tasks/data/vocabulary.toml".into(),
            ),
        };
        let (splits, splits_name) = match (&self.splits, &self.vocabulary) {
            (Some(p), _) => (read(p)?, p.display().to_string()),
            (None, None) => (SPLITS_TOML.to_string(), "tasks/data/splits.toml".into()),
            (None, Some(_)) => {
                // The built-in splits' held-out template indices point into the built-in
                // templates, not into the user's: every template of their file is usable.
                // Held-out colours and combinations still apply.
                let mut builtin: vla_tasks::language::Splits = toml::from_str(SPLITS_TOML)?;
                builtin.unseen.templates.clear();
                (
                    toml::to_string(&builtin)?,
                    "tasks/data/splits.toml (without its template indices)".into(),
                )
            }
        };
        Ok(vla_tasks::Language::from_strs(
            &vocab,
            &vocab_name,
            &splits,
            &splits_name,
        )?)
    }
}

/// Print a report: JSON on stdout with `--json`, else a human summary.
/// `--video CODEC`: camera images as video files (LeRobot's `dtype: "video"`) instead of PNG
/// in the data files; `av1` (lerobot's default, SVT-AV1) or `h264`, crf 30, a key frame
/// every 2 frames.
pub fn parse_video(s: &str) -> Result<vla_datasets::video::VideoSpec, String> {
    let codec = vla_datasets::video::VideoCodec::from_name(s)
        .ok_or_else(|| format!("{s:?}: expected av1 or h264"))?;
    if codec.encoder().is_none() {
        return Err(format!(
            "{s}: the installed FFmpeg has no encoder for it (it has: {})",
            vla_datasets::video::available_encoders().join(", ")
        ));
    }
    Ok(vla_datasets::video::VideoSpec {
        codec,
        ..Default::default()
    })
}

/// Refuse a policy trained on another robot's features where the simulator's front and wrist
/// cameras, 13-number state and end-effector actions are all there is (`what` names the
/// command).
pub fn require_simulator_layout(policy: &vla_model::Policy, what: &str) -> anyhow::Result<()> {
    let f = &policy.model().config().features;
    anyhow::ensure!(
        f.is_simulator_layout(),
        "{what} runs the simulator's front and wrist cameras, 13-number state and end-effector \
         actions; this policy reads {} with a state of {} and acts in {:?} ({} numbers)",
        f.cameras.join(", "),
        f.state_dim(),
        f.action_space,
        f.action_dim()
    );
    Ok(())
}

pub fn print_report<T: serde::Serialize>(
    json: bool,
    report: &T,
    human: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    use std::io::Write;
    let text = if json {
        serde_json::to_string(report)?
    } else {
        human()
    };
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}") {
        // A closed pipe (`vla tasks | head`) is not an error worth a panic.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed} < {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// A progress bar over episodes that shows the running success rate.
pub struct SuccessBar {
    pub bar: indicatif::ProgressBar,
    done: usize,
    successes: usize,
}

impl SuccessBar {
    pub fn new(total: u64, what: &str) -> Self {
        SuccessBar {
            bar: progress(total, what),
            done: 0,
            successes: 0,
        }
    }

    /// Counts one finished episode.
    pub fn finished(&mut self, success: bool) {
        self.done += 1;
        self.successes += success as usize;
        self.bar.inc(1);
        self.bar.set_message(format!(
            "success {:.0} %",
            100.0 * self.successes as f64 / self.done as f64
        ));
    }
}

/// Which episodes to run: the options `vla expert` and `vla collect` share.
#[derive(clap::Args, Clone, Debug)]
pub struct EpisodeOptions {
    /// Task family or `all`.
    #[arg(long, default_value = "all")]
    pub suite: String,
    #[arg(long, default_value = "seen")]
    pub split: String,
    /// Episodes per family.
    #[arg(long, default_value_t = 10)]
    pub episodes: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Parallel environments.
    #[arg(long, default_value_t = 1)]
    pub envs: usize,
    /// Gaussian action noise of the expert (m per step), for data diversity.
    #[arg(long, default_value_t = 0.0)]
    pub noise: f32,
    /// Speed (m per step) of occasional pushes off the expert's path while its fingers are
    /// open, so the data shows recoveries from centimetres off (0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub push: f32,
    #[command(flatten)]
    pub language: LanguageOptions,
}

impl EpisodeOptions {
    /// The expert noise these options ask for.
    pub fn expert_noise(&self) -> vla_tasks::ExpertNoise {
        vla_tasks::ExpertNoise {
            sigma: self.noise,
            push: self.push,
        }
    }

    /// Check the options; returns the families and the split.
    pub fn validate(&self) -> anyhow::Result<(Vec<&'static str>, vla_tasks::Split)> {
        let families = vla_tasks::parse_suite(&self.suite)?;
        let split: vla_tasks::Split = self.split.parse()?;
        anyhow::ensure!(self.episodes > 0, "--episodes must be at least 1");
        anyhow::ensure!(
            self.noise.is_finite() && self.noise >= 0.0,
            "--noise must be a finite, non-negative number"
        );
        anyhow::ensure!(
            self.push.is_finite() && (0.0..=0.05).contains(&self.push),
            "--push must be a speed in [0, 0.05] m per step, got {}",
            self.push
        );
        Ok((families, split))
    }
}

/// `--shard i/N`, or `--shard env`: the rank and world size a launcher set (torchrun's
/// RANK/WORLD_SIZE, Slurm's SLURM_PROCID/SLURM_NTASKS, Open MPI's), so every process of
/// `torchrun --nproc-per-node N --no-python vla collect … --shard env` takes its own part.
#[derive(Clone, Copy, Debug)]
pub enum ShardArg {
    Fixed(vla_tasks::runner::Shard),
    Env,
}

impl std::str::FromStr for ShardArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "env" => Ok(ShardArg::Env),
            _ => s.parse().map(ShardArg::Fixed),
        }
    }
}

impl ShardArg {
    /// The shard this process runs; `env` without a launcher's variables is an error.
    pub fn resolve(self) -> anyhow::Result<vla_tasks::runner::Shard> {
        match self {
            ShardArg::Fixed(s) => Ok(s),
            ShardArg::Env => match vla_dist::Rendezvous::from_env()? {
                Some(rv) => Ok(vla_tasks::runner::Shard {
                    index: rv.rank,
                    count: rv.world_size,
                }),
                None => anyhow::bail!(
                    "--shard env: no launcher set WORLD_SIZE (or SLURM_NTASKS, \
                     OMPI_COMM_WORLD_SIZE); give the shard as i/N"
                ),
            },
        }
    }
}

/// Starts `n` ranks of this same command line (plus `extra` arguments) on this machine, as
/// `torchrun --nproc-per-node n` would: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and a free
/// MASTER_PORT in each one's environment, and `--threads cores/n` unless `threads` was given.
/// Waits for all; one rank's failure stops the others and is the error.
pub fn launch_ranks(
    n: usize,
    threads: Option<i32>,
    extra: &[std::ffi::OsString],
) -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("--nproc: no free local port for the rendezvous")?
        .port();
    let exe = std::env::current_exe().context("--nproc: cannot find this executable")?;
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    argv.extend(extra.iter().cloned());
    if threads.is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        argv.extend(["--threads".into(), (cores / n).max(1).to_string().into()]);
    }
    tracing::info!(ranks = n, port, "starting data-parallel workers");
    let mut children = Vec::with_capacity(n);
    for rank in 0..n {
        let child = std::process::Command::new(&exe)
            .args(&argv)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .spawn()
            .with_context(|| format!("--nproc: cannot start rank {rank}"))?;
        children.push(Some(child));
    }
    // Ctrl-C reaches every rank (one process group): they agree on a step, rank 0 writes a
    // checkpoint, and all exit; the launcher only waits for that.
    let _ = ctrlc::set_handler(|| {});
    loop {
        let mut running = 0;
        for rank in 0..n {
            let Some(child) = children[rank].as_mut() else {
                continue;
            };
            match child.try_wait()? {
                None => running += 1,
                Some(status) if status.success() => children[rank] = None,
                Some(status) => {
                    for other in children.iter_mut().flatten() {
                        let _ = other.kill();
                        let _ = other.wait();
                    }
                    anyhow::bail!(
                        "data-parallel rank {rank} of {n} failed ({status}); stopped the other \
                         ranks"
                    );
                }
            }
        }
        if running == 0 {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
