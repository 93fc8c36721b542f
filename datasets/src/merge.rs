//! Joining LeRobot v3.0 datasets into one (`vla dataset merge`), e.g. the shards of a
//! `vla collect --shard i/N` run.
//!
//! Every frame of every source is read and recorded again by [`DatasetWriter`], so the result
//! is exactly the dataset one recording of the same episodes in the same order would have
//! been: episode and frame indices renumbered, tasks and sub-task sentences in one table
//! (first-seen order, indices remapped), per-episode statistics recomputed from the frames and
//! `meta/stats.json` aggregated from them by the writer's one rule (lerobot's: exact count,
//! min, max, mean and std; count-weighted quantiles). Nothing is taken from the sources'
//! `stats.json`. The new dataset is built beside `out` and renamed into place only when
//! complete, so a failed merge leaves no half dataset.

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Serialize;

use crate::error::{AtPath, DatasetError, Result};
use crate::format::{DatasetInfo, INFO_PATH};
use crate::reader::Dataset;
use crate::writer::{DatasetWriter, RawFrameRecord};

/// Frames read (and decoded) at a time.
const READ_CHUNK: usize = 256;

/// One input of a merge and where its episodes went.
#[derive(Clone, Debug, Serialize)]
pub struct MergedSource {
    pub path: PathBuf,
    pub episodes: usize,
    pub frames: usize,
    /// Index of its first episode in the merged dataset.
    pub first_episode: usize,
}

/// What [`merge`] wrote.
#[derive(Clone, Debug, Serialize)]
pub struct MergeReport {
    pub out: PathBuf,
    pub episodes: usize,
    pub frames: usize,
    pub tasks: usize,
    /// Distinct sub-task sentences, when the datasets record them.
    pub subtasks: Option<usize>,
    pub sources: Vec<MergedSource>,
}

/// Joins `sources` (in this order) into a new dataset at `out`, which must not exist or be an
/// empty directory. The sources must record the same features (same keys, dtypes, shapes and
/// names), fps and robot type; errors name the source and the field. `progress` is called
/// with (episodes done, episodes in all) after every episode.
pub fn merge(
    sources: &[PathBuf],
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<MergeReport> {
    let Some(first_path) = sources.first() else {
        return Err(DatasetError::usage(
            out,
            "nothing to merge: no source dataset given",
        ));
    };
    if out.exists() && std::fs::read_dir(out).at(out)?.next().is_some() {
        return Err(DatasetError::usage(
            out,
            "the merged dataset's directory exists and is not empty",
        ));
    }
    let out_abs = absolute(out);
    for s in sources {
        if absolute(s) == out_abs {
            return Err(DatasetError::usage(s, "a source cannot also be the output"));
        }
    }
    let datasets = sources
        .iter()
        .map(Dataset::open)
        .collect::<Result<Vec<_>>>()?;
    let first = &datasets[0];
    for (path, ds) in sources.iter().zip(&datasets).skip(1) {
        compatible(first_path, first.info(), path, ds.info())?;
    }

    // Build beside `out`, then rename: a merge that fails leaves nothing at `out`.
    let staging = staging_dir(out);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).at(&staging)?;
    }
    let result = write_all(sources, &datasets, &staging, progress);
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if out.exists() {
        std::fs::remove_dir(out).at(out)?; // empty, checked above
    }
    std::fs::rename(&staging, out).at(out)?;
    Ok(MergeReport {
        out: out.to_path_buf(),
        ..report
    })
}

fn write_all(
    sources: &[PathBuf],
    datasets: &[Dataset],
    staging: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<MergeReport> {
    let mut writer = DatasetWriter::create_like(staging, datasets[0].info())?;
    let names: Vec<(String, String)> = writer
        .cameras()
        .iter()
        .map(|c| (c.key(), c.name.clone()))
        .collect();
    let total: usize = datasets.iter().map(|d| d.episodes().len()).sum();
    let mut done = 0;
    let mut report_sources = Vec::with_capacity(sources.len());
    for (path, ds) in sources.iter().zip(datasets) {
        report_sources.push(MergedSource {
            path: path.clone(),
            episodes: ds.episodes().len(),
            frames: ds.len(),
            first_episode: done,
        });
        for episode in ds.episodes() {
            let range: Vec<usize> =
                (episode.dataset_from_index..episode.dataset_to_index).collect();
            let mut task: Option<String> = None;
            for chunk in range.chunks(READ_CHUNK) {
                for frame in ds.frames(chunk)? {
                    match &task {
                        None => task = Some(frame.task.clone()),
                        Some(t) if *t != frame.task => {
                            return Err(DatasetError::inconsistent(
                                path,
                                format!(
                                    "episode {} has frames of two tasks ({t:?} and {:?}); a merged \
                                     episode keeps one task",
                                    episode.episode_index, frame.task
                                ),
                            ))
                        }
                        Some(_) => {}
                    }
                    let images: Vec<(&str, &RgbImage)> = names
                        .iter()
                        .filter_map(|(key, name)| {
                            frame.images.get(key).map(|img| (name.as_str(), img))
                        })
                        .collect();
                    writer
                        .add_raw_frame(RawFrameRecord {
                            images: &images,
                            state: &frame.state,
                            action: &frame.action,
                            timestamp: frame.timestamp,
                            subtask: frame.subtask.as_deref(),
                        })
                        .map_err(|e| {
                            DatasetError::inconsistent(
                                path,
                                format!("episode {}: {e}", episode.episode_index),
                            )
                        })?;
                }
            }
            let task = task.unwrap_or_default();
            writer.save_episode(&task)?;
            done += 1;
            progress(done, total);
        }
    }
    let subtasks = writer.records_subtasks().then(|| writer.subtasks().len());
    let info = writer.finalize()?;
    Ok(MergeReport {
        out: staging.to_path_buf(),
        episodes: info.total_episodes,
        frames: info.total_frames,
        tasks: info.total_tasks,
        subtasks,
        sources: report_sources,
    })
}

/// Why `b` cannot be merged into `a`, if it cannot: the field and both values.
fn compatible(a_path: &Path, a: &DatasetInfo, b_path: &Path, b: &DatasetInfo) -> Result<()> {
    let differ = |field: &str, va: String, vb: String| -> Result<()> {
        if va == vb {
            return Ok(());
        }
        Err(DatasetError::schema(
            b_path.join(INFO_PATH),
            format!(
                "{field} is {vb}, but in {} it is {va}: only datasets of one robot and \
                 recording setup merge",
                a_path.display()
            ),
        ))
    };
    differ("fps", a.fps.to_string(), b.fps.to_string())?;
    differ(
        "robot_type",
        format!("{:?}", a.robot_type),
        format!("{:?}", b.robot_type),
    )?;
    let keys = |i: &DatasetInfo| i.features.keys().cloned().collect::<Vec<_>>().join(", ");
    differ("the feature list", keys(a), keys(b))?;
    for (key, fa) in &a.features {
        if let Some(fb) = b.features.get(key) {
            differ(
                &format!("feature {key:?}"),
                format!("{} {:?} names {}", fa.dtype, fa.shape, fa.names),
                format!("{} {:?} names {}", fb.dtype, fb.shape, fb.names),
            )?;
        }
    }
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| std::path::absolute(p).unwrap_or(p.into()))
}

/// `out`'s sibling where the merge is built.
fn staging_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "merged".into());
    out.with_file_name(format!(".{name}.merging"))
}
