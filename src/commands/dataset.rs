//! `vla dataset …`: inspect, check and look at LeRobot v3.0 datasets.

use std::path::PathBuf;

use serde::Serialize;
use vla_datasets::{validate, Dataset};

#[derive(clap::Subcommand)]
pub enum What {
    /// Episodes, frames, tasks, features, fps and size.
    Info {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check every file against `meta/`; exits non-zero with the reason.
    Validate {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write one episode's camera images (front | wrist) as a GIF.
    ExportGif {
        dir: PathBuf,
        #[arg(long)]
        episode: usize,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Serialize)]
struct Info {
    dir: PathBuf,
    codebase_version: String,
    robot_type: Option<String>,
    episodes: usize,
    frames: usize,
    tasks: usize,
    fps: u32,
    features: Vec<String>,
    size_bytes: u64,
}

pub fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_size(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

pub fn run(what: What) -> anyhow::Result<()> {
    match what {
        What::Info { dir, json } => {
            // Vision-language data (`vla vqa collect`) has no LeRobot `meta/`.
            if vla_datasets::vqa::is_vqa_dataset(&dir) {
                return vqa_info(dir, json);
            }
            let ds = Dataset::open(&dir)?;
            let info = ds.info();
            let report = Info {
                codebase_version: info.codebase_version.clone(),
                robot_type: info.robot_type.clone(),
                episodes: info.total_episodes,
                frames: info.total_frames,
                tasks: info.total_tasks,
                fps: info.fps,
                features: info.features.keys().cloned().collect(),
                size_bytes: dir_size(&dir),
                dir,
            };
            super::print_report(json, &report, || {
                format!(
                    "{}: LeRobot {} ({}), {} episodes, {} frames, {} tasks, {} fps, {:.1} MB\nfeatures: {}",
                    report.dir.display(),
                    report.codebase_version,
                    report.robot_type.as_deref().unwrap_or("?"),
                    report.episodes,
                    report.frames,
                    report.tasks,
                    report.fps,
                    report.size_bytes as f64 / 1e6,
                    report.features.join(", ")
                )
            })
        }
        What::Validate { dir, json } => {
            let r = validate(&dir)?;
            let report = serde_json::json!({
                "dir": dir, "valid": true, "episodes": r.total_episodes, "frames": r.total_frames,
                "tasks": r.total_tasks, "data_files": r.data_files, "images_decoded": r.images_decoded,
            });
            super::print_report(json, &report, || {
                format!(
                    "{}: valid ({} episodes, {} frames, {} data files)",
                    dir.display(),
                    r.total_episodes,
                    r.total_frames,
                    r.data_files.len()
                )
            })
        }
        What::ExportGif { dir, episode, out } => {
            let ds = Dataset::open(&dir)?;
            let ep = ds
                .episodes()
                .iter()
                .find(|e| e.episode_index == episode)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: no episode {episode} (the dataset has {})",
                        dir.display(),
                        ds.episodes().len()
                    )
                })?;
            let indices: Vec<usize> = (ep.dataset_from_index..ep.dataset_to_index).collect();
            let frames = ds.frames(&indices)?;
            let images: Vec<vla_core::RgbImage> = frames
                .iter()
                .filter_map(|f| {
                    let front = f.images.get("observation.images.front")?;
                    let wrist = f.images.get("observation.images.wrist")?;
                    let mut canvas = vla_core::RgbImage::new(
                        front.width() + wrist.width(),
                        front.height().max(wrist.height()),
                    );
                    image::imageops::replace(&mut canvas, front, 0, 0);
                    image::imageops::replace(&mut canvas, wrist, front.width() as i64, 0);
                    Some(canvas)
                })
                .collect();
            anyhow::ensure!(
                !images.is_empty(),
                "{}: episode {episode} has no front/wrist images",
                dir.display()
            );
            vla_sim::record::write_gif(&images, &out, ds.fps() as f32)?;
            println!("{} frames -> {}", images.len(), out.display());
            Ok(())
        }
    }
}

/// `vla dataset info` of a VQA dataset: rows, scenes, kinds of question, held-out share.
fn vqa_info(dir: PathBuf, json: bool) -> anyhow::Result<()> {
    let s = vla_datasets::vqa::summary(&dir)?;
    let report = serde_json::json!({
        "dir": dir, "format": "vqa", "rows": s.rows, "scenes": s.scenes, "kinds": s.kinds,
        "held_out_rows": s.held_out, "held_out_share": s.held_out as f64 / s.rows.max(1) as f64,
        "image_size": s.image_size, "files": s.files, "size_bytes": dir_size(&dir),
    });
    super::print_report(json, &report, || {
        let kinds: Vec<String> = s.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!(
            "{}: vision-language Q&A (Hugging Face parquet), {} questions about {} scenes, \
             {:.0} % with held-out words, {:.1} MB\nkinds: {}",
            dir.display(),
            s.rows,
            s.scenes,
            100.0 * s.held_out as f64 / s.rows.max(1) as f64,
            dir_size(&dir) as f64 / 1e6,
            kinds.join(", ")
        )
    })
}
