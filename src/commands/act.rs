//! `vla act`: one action from a trained policy for an image and an instruction.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use vla_core::Observation;
use vla_model::policy::RawObservation;
use vla_model::Policy;
use vla_sim::{Env, EnvConfig, RobotDescription, VecEnv};
use vla_tasks::{make_task, Language, Split};

use super::train::parse_device;

/// The camera images a command shows the model.
#[derive(clap::Args)]
pub struct Images {
    /// Camera image (PNG or JPEG, any size: resized to the model's), once per camera in the
    /// order of the policy's features (`vla act --json` lists them; the simulator's: front,
    /// then wrist).
    #[arg(long = "image", required = true)]
    images: Vec<PathBuf>,
    /// Wrist camera image of the simulator's layout (a second `--image`); without it the
    /// front image stands in for the wrist.
    #[arg(long)]
    wrist: Option<PathBuf>,
}

impl Images {
    /// The front and wrist images, read.
    pub fn load(&self) -> anyhow::Result<(vla_core::RgbImage, vla_core::RgbImage)> {
        let mut all = self.load_all(2, true)?;
        let wrist = all.pop().context("no wrist image")?;
        let front = all.pop().context("no front image")?;
        Ok((front, wrist))
    }

    /// `cameras` images, read; with `one_for_two`, one image given to a two-camera policy is
    /// shown on both (the simulator's front image standing in for the wrist).
    pub fn load_all(
        &self,
        cameras: usize,
        one_for_two: bool,
    ) -> anyhow::Result<Vec<vla_core::RgbImage>> {
        let mut paths: Vec<&PathBuf> = self.images.iter().collect();
        paths.extend(&self.wrist);
        let mut images = paths
            .iter()
            .map(|p| load_image(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if one_for_two && cameras == 2 && images.len() == 1 {
            images.push(images[0].clone());
        }
        anyhow::ensure!(
            images.len() == cameras,
            "{} images given; the policy reads {cameras} cameras (--image once per camera, in \
             its order)",
            images.len()
        );
        Ok(images)
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Run directory written by `vla train`.
    #[arg(long)]
    ckpt: PathBuf,
    #[command(flatten)]
    images: Images,
    #[arg(long)]
    instruction: String,
    /// Impose the sub-task instead of letting the model say it (models with a plan): the
    /// actions then follow this step, e.g. "put the red cube in the red bin".
    #[arg(long)]
    subtask: Option<String>,
    /// Proprioceptive state, comma-separated in the policy's state order (the simulator's:
    /// see `vla tasks`); default: the training mean.
    /// Values may be negative (`--state -0.1,0.2,…`).
    #[arg(long, allow_hyphen_values = true)]
    state: Option<String>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Write what the grounding heads look at (models with `vision.grounding_heads`): one row
    /// per camera, the model's input and each head's heat map with its soft-argmax marked.
    #[arg(long)]
    grounding_png: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct ActReport {
    instruction: String,
    /// The next step the model said (or was given) before its action; `null` for a model
    /// without a plan.
    subtask: Option<String>,
    /// The action's tokens (a chunked model's: its chunk's first action's).
    tokens: Vec<i64>,
    action: Vec<f32>,
    /// What the action's numbers command (end_effector_delta, joint_positions, other).
    action_space: vla_model::ActionSpace,
    /// The camera features the policy read, in the order the images were given.
    cameras: Vec<String>,
    /// A chunked model's K actions (`action.chunk_size`), `action` first; absent for the
    /// one-action head.
    #[serde(skip_serializing_if = "Option::is_none")]
    chunk: Option<Vec<Vec<f32>>>,
    action_names: Vec<String>,
    latency_ms: f64,
    /// Per camera, per grounding head: the soft-argmax (x, y) in pixels of the model's input.
    #[serde(skip_serializing_if = "Option::is_none")]
    grounding_px: Option<Vec<Vec<[f32; 2]>>>,
}

fn load_image(path: &Path) -> anyhow::Result<vla_core::RgbImage> {
    Ok(image::open(path)
        .with_context(|| format!("cannot read image {}", path.display()))?
        .to_rgb8())
}

fn parse_state(text: &str, dim: usize) -> anyhow::Result<Vec<f32>> {
    let values = text
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f32>()
                .map_err(|e| anyhow::anyhow!("--state: {v:?} is not a number: {e}"))
        })
        .collect::<anyhow::Result<Vec<f32>>>()?;
    anyhow::ensure!(
        values.len() == dim,
        "--state has {} values, the policy's state {dim}",
        values.len()
    );
    anyhow::ensure!(
        values.iter().all(|v| v.is_finite()),
        "--state has a non-finite value"
    );
    Ok(values)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let policy = Policy::load(&args.ckpt, parse_device(&args.device)?)?;
    let features = policy.model().config().features.clone();
    let images = args
        .images
        .load_all(features.cameras.len(), features.is_simulator_layout())?;
    let state = match &args.state {
        Some(s) => parse_state(s, features.state_dim())?,
        None => policy.model().norm_stats().state.mean.clone(),
    };
    let obs = RawObservation { images, state };
    let t = Instant::now();
    let forced = args.subtask.as_deref().map(|s| [s]);
    let mut out = policy.decide(
        &[(&obs, args.instruction.as_str())],
        forced.as_ref().map(|s| &s[..]),
    )?;
    let latency_ms = t.elapsed().as_secs_f64() * 1e3;
    let decision = out.pop().context("the policy returned no action")?;
    if args.subtask.is_some() && decision.subtask.is_none() {
        tracing::warn!("--subtask is ignored: this model does not decode sub-tasks (no plan)");
    }
    let grounding_px = match &args.grounding_png {
        Some(path) => Some(write_grounding_png(&policy, &obs, &args.instruction, path)?),
        None => None,
    };
    let report = ActReport {
        grounding_px,
        instruction: args.instruction,
        subtask: decision.subtask,
        tokens: decision.tokens,
        action: decision.values,
        action_space: features.action_space,
        cameras: features.cameras.clone(),
        chunk: (decision.chunk.len() > 1)
            .then(|| decision.chunk.iter().map(|a| a.0.to_vec()).collect()),
        action_names: features.action_names.clone(),
        latency_ms,
    };
    super::print_report(args.json, &report, || {
        let mut s = match &report.subtask {
            Some(t) => format!("subtask: {t}\n"),
            None => String::new(),
        };
        s += &format!("tokens {:?}\n", report.tokens);
        for (n, v) in report.action_names.iter().zip(&report.action) {
            s += &format!("  {n:8} {v:+.5}\n");
        }
        for (i, a) in report.chunk.iter().flatten().enumerate().skip(1) {
            let values: Vec<String> = a.iter().map(|v| format!("{v:+.5}")).collect();
            s += &format!("  then {i}: {}\n", values.join(" "));
        }
        s + &format!("({:.1} ms)", report.latency_ms)
    })
}

/// The first observation of an episode of `family` (rendered), e.g. for benchmarks.
pub fn first_observation(family: &str, seed: u64) -> anyhow::Result<Observation> {
    let lang = Language::builtin()?;
    let config = EnvConfig {
        render_enabled: true,
        ..EnvConfig::default()
    };
    let env = Env::new(
        make_task(family, Split::Seen, &lang, 0.0, seed)?,
        config,
        RobotDescription::default_arm()?,
    );
    let mut vec_env = VecEnv::new(vec![env])?;
    let mut obs = vec_env.reset(&[seed])?;
    obs.pop().context("the environment returned no observation")
}

/// Draws the grounding heat maps (see `Args::grounding_png`) and returns the soft-argmax
/// points in pixels of the model's input.
fn write_grounding_png(
    policy: &Policy,
    obs: &RawObservation,
    instruction: &str,
    path: &Path,
) -> anyhow::Result<Vec<Vec<[f32; 2]>>> {
    use image::{imageops, Rgb, RgbImage};
    let (maps, coords) = policy.grounding_maps(obs, instruction)?.context(
        "--grounding-png: this model has no grounding heads (vision.grounding_heads = 0)",
    )?;
    let size = policy.model().config().vision.image_size as u32;
    let [cams, heads, gh, gw] = <[i64; 4]>::try_from(maps.size())
        .map_err(|s| anyhow::anyhow!("heat maps of shape {s:?}"))?;
    let maps = Vec::<f32>::try_from(maps.flatten(0, -1))?;
    let coords = Vec::<f32>::try_from(coords.flatten(0, -1))?;
    const PANEL: u32 = 128;
    let mut canvas = RgbImage::new(PANEL * (1 + heads as u32), PANEL * cams as u32);
    let mut points = Vec::new();
    for (c, cam) in obs.images.iter().enumerate().take(cams as usize) {
        let input = imageops::resize(cam, size, size, imageops::FilterType::Triangle);
        let shown = imageops::resize(&input, PANEL, PANEL, imageops::FilterType::Nearest);
        imageops::replace(&mut canvas, &shown, 0, (c as u32 * PANEL) as i64);
        let mut cam_points = Vec::new();
        for h in 0..heads as usize {
            let offset = (c * heads as usize + h) * (gh * gw) as usize;
            let map = &maps[offset..offset + (gh * gw) as usize];
            let peak = map.iter().copied().fold(f32::MIN_POSITIVE, f32::max);
            let mut panel = shown.clone();
            for (x, y, p) in panel.enumerate_pixels_mut() {
                let (mx, my) = (x * gw as u32 / PANEL, y * gh as u32 / PANEL);
                let heat = map[(my * gw as u32 + mx) as usize] / peak;
                let mix = |v: u8, target: f32| (v as f32 * 0.35 + target * 0.65 * heat) as u8;
                *p = Rgb([mix(p[0], 255.0), mix(p[1], 220.0), mix(p[2], 40.0)]);
            }
            // Soft-argmax grid coordinates (-1 = first cell centre) → pixels.
            let at = (c * heads as usize + h) * 2;
            let to_px = |v: f32, cells: i64| {
                ((v + 1.0) / 2.0 * (cells - 1) as f32 + 0.5) * size as f32 / cells as f32
            };
            let (px, py) = (to_px(coords[at], gw), to_px(coords[at + 1], gh));
            cam_points.push([px, py]);
            let scale = PANEL as f32 / size as f32;
            let (cx, cy) = ((px * scale) as i64, (py * scale) as i64);
            for d in -6i64..=6 {
                for (x, y) in [(cx + d, cy), (cx, cy + d)] {
                    if (0..PANEL as i64).contains(&x) && (0..PANEL as i64).contains(&y) {
                        panel.put_pixel(x as u32, y as u32, Rgb([0, 255, 255]));
                    }
                }
            }
            imageops::replace(
                &mut canvas,
                &panel,
                (PANEL * (1 + h as u32)) as i64,
                (c as u32 * PANEL) as i64,
            );
        }
        points.push(cam_points);
    }
    canvas
        .save(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(points)
}
