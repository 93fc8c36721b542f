//! Full consistency check of a dataset on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{AtPath, DatasetError, Result};
use crate::format::{
    self, check_data_schema, column_i64, DatasetInfo, EpisodeInfo, DATA_DIR, STATS_PATH,
    SUBTASKS_PATH, SUBTASK_KEY, TASKS_PATH,
};
use crate::reader::{check_episodes, check_video_meta};
use crate::stats::Stats;
use crate::video::{VideoDecoder, VIDEOS_DIR};

/// Tolerance on the spacing of timestamps (lerobot's default `tolerance_s`).
pub const TIMESTAMP_TOLERANCE_S: f64 = crate::video::TIMESTAMP_TOLERANCE_S;

/// What [`validate`] checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidationReport {
    pub total_episodes: usize,
    pub total_frames: usize,
    pub total_tasks: usize,
    /// Sub-task sentences in `meta/subtasks.parquet` (0 without the `subtask_index` feature).
    pub total_subtasks: usize,
    /// Data files checked, relative to the dataset root.
    pub data_files: Vec<PathBuf>,
    /// Video files checked, relative to the dataset root.
    pub video_files: Vec<PathBuf>,
    /// Images decoded as a spot check (first frame of every episode; for video cameras its
    /// first and last frame).
    pub images_decoded: usize,
}

/// Check every file of the dataset at `dir` against its metadata: `meta/` files present and
/// readable, `codebase_version`, tasks, episode ranges, and for every data file its schema
/// against `info.json` features, its row count, index contiguity, episode/frame/task indices,
/// sub-task indices against `meta/subtasks.parquet` (when the dataset has the `subtask_index`
/// feature), timestamps spaced 1/fps apart, and that images are embedded and decode to the
/// declared shape. For video cameras: every episode's video file exists, opens, has the
/// declared frame size and enough frames, and its first and last frame of every episode
/// decode at their timestamps. The error names the file, the feature key and the cause.
pub fn validate(dir: impl AsRef<Path>) -> Result<ValidationReport> {
    let root = dir.as_ref();
    let info = DatasetInfo::load(root)?;
    let has_subtasks = info.features.contains_key(SUBTASK_KEY);
    let mut required = vec![TASKS_PATH, STATS_PATH];
    if has_subtasks {
        required.push(SUBTASKS_PATH);
    }
    for rel in required {
        let p = root.join(rel);
        if !p.exists() && info.total_episodes > 0 {
            return Err(DatasetError::Missing {
                path: p,
                what: "required metadata file".into(),
            });
        }
    }
    let tasks = if root.join(TASKS_PATH).exists() {
        format::read_tasks(root)?
    } else {
        Vec::new()
    };
    let subtasks = if has_subtasks && root.join(SUBTASKS_PATH).exists() {
        format::read_subtasks(root)?
    } else {
        Vec::new()
    };
    let stats = if root.join(STATS_PATH).exists() {
        Some(Stats::load(root)?)
    } else {
        None
    };
    let episodes = if info.total_episodes == 0 {
        format::read_episodes(root).unwrap_or_default()
    } else {
        format::read_episodes(root)?
    };
    check_episodes(root, &info, &tasks, &episodes)?;
    check_video_meta(root, &info, &episodes)?;
    if let Some(stats) = &stats {
        for (key, feature) in &info.features {
            if feature.dtype == "string" || info.total_frames == 0 {
                continue;
            }
            if stats.get(key).is_none() {
                return Err(DatasetError::inconsistent(
                    root.join(STATS_PATH),
                    format!("no statistics for feature {key:?}"),
                ));
            }
        }
    }

    // Group episodes per data file.
    let mut per_file: BTreeMap<(usize, usize), Vec<&EpisodeInfo>> = BTreeMap::new();
    for e in &episodes {
        per_file
            .entry((e.data_chunk_index, e.data_file_index))
            .or_default()
            .push(e);
    }
    let mut report = ValidationReport {
        total_episodes: info.total_episodes,
        total_frames: info.total_frames,
        total_tasks: tasks.len(),
        total_subtasks: subtasks.len(),
        data_files: Vec::new(),
        video_files: Vec::new(),
        images_decoded: 0,
    };
    let referenced: BTreeSet<PathBuf> = per_file
        .keys()
        .map(|&(c, f)| root.join(info.data_file(c, f)))
        .collect();
    for file in format::nested_parquet_files(&root.join(DATA_DIR))? {
        if !referenced.contains(&file) {
            return Err(DatasetError::inconsistent(
                &file,
                "data file is not referenced by any episode in meta/episodes",
            ));
        }
    }
    // First and last timestamp of every episode, for the video checks.
    let mut spans: BTreeMap<usize, (f32, f32)> = BTreeMap::new();
    for ((chunk, file), eps) in &per_file {
        let rel = PathBuf::from(info.data_file(*chunk, *file));
        report.images_decoded += check_data_file(
            root,
            &info,
            &rel,
            eps,
            tasks.len(),
            has_subtasks.then_some(subtasks.len()),
            &mut spans,
        )?;
        report.data_files.push(rel);
    }
    for key in info.video_keys() {
        let (files, decoded) = check_videos(root, &info, &key, &episodes, &spans)?;
        report.video_files.extend(files);
        report.images_decoded += decoded;
    }
    Ok(report)
}

/// The video files of camera `key`: referenced ones exist, open, have the declared size and
/// enough frames, and decode at the first and last frame of each of their episodes; no file
/// in `videos/<key>/` is unreferenced. Returns the files (relative) and the frames decoded.
fn check_videos(
    root: &Path,
    info: &DatasetInfo,
    key: &str,
    episodes: &[EpisodeInfo],
    spans: &BTreeMap<usize, (f32, f32)>,
) -> Result<(Vec<PathBuf>, usize)> {
    let info_path = root.join(format::INFO_PATH);
    let feature = &info.features[key];
    let (height, width) = (feature.shape[0], feature.shape[1]);
    if let Some(block) = feature.extra.get("info") {
        for (field, want) in [("video.height", height), ("video.width", width)] {
            if let Some(v) = block.get(field).and_then(|v| v.as_u64()) {
                if v as usize != want {
                    return Err(DatasetError::schema(
                        &info_path,
                        format!(
                            "feature {key:?}: info.{field} is {v} but its shape is {:?}",
                            feature.shape
                        ),
                    ));
                }
            }
        }
    }
    let fps = f64::from(info.fps.max(1));
    let mut per_file: BTreeMap<(usize, usize), Vec<&EpisodeInfo>> = BTreeMap::new();
    for e in episodes {
        if let Some(seg) = e.videos.get(key) {
            per_file
                .entry((seg.chunk_index, seg.file_index))
                .or_default()
                .push(e);
        }
    }
    let referenced: BTreeSet<PathBuf> = per_file
        .keys()
        .map(|&(c, f)| root.join(info.video_file(key, c, f)))
        .collect();
    let dir = root.join(VIDEOS_DIR).join(key);
    if dir.is_dir() {
        for chunk in std::fs::read_dir(&dir).at(&dir)? {
            let chunk = chunk.at(&dir)?.path();
            if !chunk.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&chunk).at(&chunk)? {
                let file = file.at(&chunk)?.path();
                let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
                if name.is_some_and(|n| n.ends_with(".mp4") && !n.starts_with('.'))
                    && !referenced.contains(&file)
                {
                    return Err(DatasetError::inconsistent(
                        &file,
                        format!(
                            "{key}: video file is not referenced by any episode in meta/episodes"
                        ),
                    ));
                }
            }
        }
    }
    let mut files = Vec::new();
    let mut decoded = 0;
    for ((chunk, file), eps) in &per_file {
        let rel = PathBuf::from(info.video_file(key, *chunk, *file));
        let path = root.join(&rel);
        if !path.exists() {
            let list: Vec<usize> = eps.iter().map(|e| e.episode_index).collect();
            return Err(DatasetError::Missing {
                path,
                what: format!("video file of {key} for episodes {list:?}"),
            });
        }
        let mut decoder = VideoDecoder::open(&path, key)?;
        let probe = decoder.probe().clone();
        if (probe.height as usize, probe.width as usize) != (height, width) {
            return Err(DatasetError::schema(
                &path,
                format!(
                    "{key}: the video is {}x{}, info.json declares shape {:?} (height, width, \
                     channel)",
                    probe.width, probe.height, feature.shape
                ),
            ));
        }
        let mut times = Vec::new();
        for e in eps {
            let Some(seg) = e.videos.get(key) else {
                continue;
            };
            let duration = seg.to_timestamp - seg.from_timestamp;
            if (duration - e.length as f64 / fps).abs() > 1.0 / fps + TIMESTAMP_TOLERANCE_S {
                return Err(DatasetError::inconsistent(
                    root.join(format::EPISODES_DIR),
                    format!(
                        "episode {}: videos/{key}/ spans {:.6}..{:.6} s, {} frames at {} fps \
                         need {:.6} s",
                        e.episode_index,
                        seg.from_timestamp,
                        seg.to_timestamp,
                        e.length,
                        info.fps,
                        e.length as f64 / fps
                    ),
                ));
            }
            let needed = (seg.to_timestamp * fps).round() as i64;
            if probe.frames > 0 && probe.frames < needed {
                return Err(DatasetError::inconsistent(
                    &path,
                    format!(
                        "{key}: the video holds {} frames, episode {} needs {needed} (it ends \
                         at {:.6} s)",
                        probe.frames, e.episode_index, seg.to_timestamp
                    ),
                ));
            }
            let (first, last) = spans
                .get(&e.episode_index)
                .copied()
                .unwrap_or((0.0, (e.length.saturating_sub(1) as f64 / fps) as f32));
            times.push(seg.from_timestamp + f64::from(first));
            if e.length > 1 {
                times.push(seg.from_timestamp + f64::from(last));
            }
        }
        times.sort_by(f64::total_cmp);
        times.dedup();
        decoder.decode_at(&times, &mut |_, img| {
            if (img.height() as usize, img.width() as usize) != (height, width) {
                return Err(DatasetError::schema(
                    &path,
                    format!(
                        "{key}: frames decode to {}x{}, info.json declares shape {:?}",
                        img.width(),
                        img.height(),
                        feature.shape
                    ),
                ));
            }
            decoded += 1;
            Ok(())
        })?;
        files.push(rel);
    }
    Ok((files, decoded))
}

fn check_data_file(
    root: &Path,
    info: &DatasetInfo,
    rel: &Path,
    episodes: &[&EpisodeInfo],
    num_tasks: usize,
    num_subtasks: Option<usize>,
    spans: &mut BTreeMap<usize, (f32, f32)>,
) -> Result<usize> {
    let path = root.join(rel);
    let f = File::open(&path).at(&path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).at(&path)?;
    let schema = builder.schema().clone();
    check_data_schema(&path, info, &schema)?;
    let expected_rows: usize = episodes.iter().map(|e| e.length).sum();
    let file_rows = builder.metadata().file_metadata().num_rows() as usize;
    if file_rows != expected_rows {
        return Err(DatasetError::inconsistent(
            &path,
            format!(
                "{file_rows} rows but meta/episodes assigns {expected_rows} frames to this file"
            ),
        ));
    }
    let first = episodes.first().map_or(0, |e| e.dataset_from_index);
    let image_keys = info.image_keys();
    let reader = builder.with_batch_size(1024).build().at(&path)?;
    let mut row = 0usize;
    let mut ep = 0usize;
    let mut decoded = 0;
    let mut prev_ts: Option<f32> = None;
    for batch in reader {
        let batch = batch.at(&path)?;
        let index = column_i64(&path, &batch, "index")?;
        let episode_index = column_i64(&path, &batch, "episode_index")?;
        let frame_index = column_i64(&path, &batch, "frame_index")?;
        let task_index = column_i64(&path, &batch, "task_index")?;
        let subtask_index = match num_subtasks {
            Some(_) => column_i64(&path, &batch, SUBTASK_KEY)?,
            None => Vec::new(),
        };
        let timestamp = format::column_f32(&path, &batch, "timestamp")?;
        for r in 0..batch.num_rows() {
            let global = first + row;
            while ep < episodes.len() && global >= episodes[ep].dataset_to_index {
                ep += 1;
            }
            let e = episodes.get(ep).ok_or_else(|| {
                DatasetError::inconsistent(&path, format!("row {row} lies beyond every episode"))
            })?;
            let bad = |what: &str, found: i64, expected: usize| {
                DatasetError::inconsistent(
                    &path,
                    format!("row {row}: {what} is {found}, expected {expected}"),
                )
            };
            if index[r] != global as i64 {
                return Err(bad("index", index[r], global));
            }
            if episode_index[r] != e.episode_index as i64 {
                return Err(bad("episode_index", episode_index[r], e.episode_index));
            }
            let fi = global - e.dataset_from_index;
            if frame_index[r] != fi as i64 {
                return Err(bad("frame_index", frame_index[r], fi));
            }
            if task_index[r] < 0 || task_index[r] as usize >= num_tasks {
                return Err(DatasetError::inconsistent(
                    &path,
                    format!(
                        "row {row}: task_index {} is not a known task",
                        task_index[r]
                    ),
                ));
            }
            if let (Some(n), Some(&s)) = (num_subtasks, subtask_index.get(r)) {
                if s < 0 || s as usize >= n {
                    return Err(DatasetError::inconsistent(
                        &path,
                        format!(
                            "row {row}: column {SUBTASK_KEY:?} is {s}, but {SUBTASKS_PATH} lists {n} sub-tasks"
                        ),
                    ));
                }
            }
            // lerobot's check_timestamps_sync: consecutive frames 1/fps apart (± 1e-4 s).
            if let (true, Some(prev)) = (fi > 0, prev_ts) {
                let dt = f64::from(timestamp[r]) - f64::from(prev);
                if (dt - 1.0 / f64::from(info.fps)).abs() > TIMESTAMP_TOLERANCE_S {
                    return Err(DatasetError::inconsistent(
                        &path,
                        format!(
                            "row {row}: timestamp {} follows {} (expected a step of 1/{} s)",
                            timestamp[r], prev, info.fps
                        ),
                    ));
                }
            }
            prev_ts = Some(timestamp[r]);
            let span = spans
                .entry(e.episode_index)
                .or_insert((timestamp[r], timestamp[r]));
            span.1 = timestamp[r];
            if fi == 0 {
                for key in &image_keys {
                    check_image(&path, &batch, key, r, &info.features[key].shape)?;
                    decoded += 1;
                }
            }
            row += 1;
        }
        for key in &image_keys {
            check_embedded(&path, &batch, key)?;
        }
    }
    Ok(decoded)
}

fn image_struct<'a>(
    path: &Path,
    batch: &'a arrow_array::RecordBatch,
    key: &str,
) -> Result<&'a arrow_array::ArrayRef> {
    let col = format::column(path, batch, key)?;
    let s = col
        .as_any()
        .downcast_ref::<arrow_array::StructArray>()
        .ok_or_else(|| DatasetError::schema(path, format!("column {key:?} is not a struct")))?;
    s.column_by_name("bytes")
        .ok_or_else(|| DatasetError::schema(path, format!("column {key:?} has no bytes")))
}

fn check_embedded(path: &Path, batch: &arrow_array::RecordBatch, key: &str) -> Result<()> {
    use arrow_array::Array;
    let bytes = image_struct(path, batch, key)?;
    if bytes.null_count() > 0 {
        return Err(DatasetError::schema(
            path,
            format!("column {key:?} has rows without embedded image bytes"),
        ));
    }
    Ok(())
}

fn check_image(
    path: &Path,
    batch: &arrow_array::RecordBatch,
    key: &str,
    row: usize,
    shape: &[usize],
) -> Result<()> {
    use arrow_array::Array;
    let bytes = image_struct(path, batch, key)?;
    let data: &[u8] = if let Some(b) = bytes.as_any().downcast_ref::<arrow_array::BinaryArray>() {
        b.value(row)
    } else if let Some(b) = bytes
        .as_any()
        .downcast_ref::<arrow_array::LargeBinaryArray>()
    {
        b.value(row)
    } else {
        return Err(DatasetError::schema(
            path,
            format!("column {key:?} bytes are not binary"),
        ));
    };
    let img = image::load_from_memory(data).map_err(|e| DatasetError::Image {
        path: path.to_path_buf(),
        detail: format!("{key} row {row}: {e}"),
    })?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if shape.len() == 3 && (shape[0] != h || shape[1] != w) {
        return Err(DatasetError::schema(
            path,
            format!(
                "{key} row {row} is {w}x{h}, info.json declares shape {shape:?} (height, width, channel)"
            ),
        ));
    }
    Ok(())
}
