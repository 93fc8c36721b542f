//! Reading LeRobot v3.0 datasets (ours or written by Python lerobot) for training.
//!
//! Bookkeeping columns, states and actions of every frame are loaded into memory at
//! [`Dataset::open`]; images stay on disk as PNG bytes and are read (parquet row selection)
//! and decoded (rayon) per batch. Video cameras stay in their MP4 files: per batch, every
//! (camera, file) is decoded on its own thread, in presentation order, seeking only where the
//! wanted frames are far apart (see [`crate::video`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use arrow_array::{Array, BinaryArray, LargeBinaryArray, RecordBatch, StructArray};
use image::RgbImage;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::PageIndexPolicy;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{AtPath, DatasetError, Result};
use crate::format::{
    self, column_f32, column_i64, flatten_f32, DatasetInfo, EpisodeInfo, ACTION_KEY, STATE_KEY,
    STATS_PATH, SUBTASKS_PATH, SUBTASK_KEY,
};
use crate::stats::{FeatureStats, Stats};
use crate::video::DecoderPool;

/// One frame, images decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// Decoded RGB images by feature key (`observation.images.front`, ...), from PNG or video
    /// cameras alike.
    pub images: BTreeMap<String, RgbImage>,
    /// `observation.state` (empty if the dataset has none).
    pub state: Vec<f32>,
    /// `action` (empty if the dataset has none).
    pub action: Vec<f32>,
    pub task: String,
    pub task_index: usize,
    /// The sub-task sentence (`subtask_index` in `meta/subtasks.parquet`); `None` when the
    /// dataset has no `subtask_index` feature.
    pub subtask: Option<String>,
    pub episode_index: usize,
    pub frame_index: usize,
    /// Global frame index.
    pub index: usize,
    pub timestamp: f32,
}

pub(crate) struct DataFile {
    pub path: PathBuf,
    pub first_index: usize,
    pub num_rows: usize,
    meta: ArrowReaderMetadata,
    image_roots: Vec<usize>,
}

/// An opened dataset.
pub struct Dataset {
    root: PathBuf,
    info: DatasetInfo,
    tasks: Vec<String>,
    /// `Some` when the dataset has the `subtask_index` feature.
    subtasks: Option<Vec<String>>,
    episodes: Vec<EpisodeInfo>,
    stats: Option<Stats>,
    files: Vec<DataFile>,
    /// Every camera (PNG and video), sorted.
    image_keys: Vec<String>,
    /// Cameras stored as PNG in the data files.
    png_keys: Vec<String>,
    /// Cameras stored as video files.
    video_keys: Vec<String>,
    decoders: DecoderPool,
    timestamp: Vec<f32>,
    frame_index: Vec<i64>,
    episode_index: Vec<i64>,
    task_index: Vec<i64>,
    /// Checked against `subtasks` when loaded; empty without the feature.
    subtask_index: Vec<i64>,
    state: Vec<f32>,
    state_dim: usize,
    action: Vec<f32>,
    action_dim: usize,
}

impl Dataset {
    /// Open the dataset at `dir`: checks `codebase_version`, reads `meta/` and the
    /// non-image columns of every data file.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let root = dir.as_ref().to_path_buf();
        let info = DatasetInfo::load(&root)?;
        let info_path = root.join(format::INFO_PATH);
        let tasks = format::read_tasks(&root)?;
        let subtasks = if info.features.contains_key(SUBTASK_KEY) {
            Some(format::read_subtasks(&root)?)
        } else {
            None
        };
        let episodes = format::read_episodes(&root)?;
        let stats = if root.join(STATS_PATH).exists() {
            Some(Stats::load(&root)?)
        } else {
            None
        };
        check_episodes(&root, &info, &tasks, &episodes)?;
        check_video_meta(&root, &info, &episodes)?;
        let image_keys = info.camera_keys();
        let png_keys = info.image_keys();
        let video_keys = info.video_keys();
        let state_dim = info.features.get(STATE_KEY).map_or(0, |f| f.numel());
        let action_dim = info.features.get(ACTION_KEY).map_or(0, |f| f.numel());

        let mut ds = Dataset {
            root,
            info,
            tasks,
            subtasks,
            episodes,
            stats,
            files: Vec::new(),
            image_keys,
            png_keys,
            video_keys,
            decoders: DecoderPool::default(),
            timestamp: Vec::new(),
            frame_index: Vec::new(),
            episode_index: Vec::new(),
            task_index: Vec::new(),
            subtask_index: Vec::new(),
            state: Vec::new(),
            state_dim,
            action: Vec::new(),
            action_dim,
        };
        let mut file_ids: Vec<(usize, usize)> = ds
            .episodes
            .iter()
            .map(|e| (e.data_chunk_index, e.data_file_index))
            .collect();
        file_ids.dedup();
        let mut sorted = file_ids.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != file_ids.len() {
            return Err(DatasetError::inconsistent(
                ds.root.join(format::EPISODES_DIR),
                "episodes are not stored in data files in episode order",
            ));
        }
        for (chunk, file) in sorted {
            ds.load_file(chunk, file)?;
        }
        if ds.timestamp.len() != ds.info.total_frames {
            return Err(DatasetError::inconsistent(
                &info_path,
                format!(
                    "total_frames = {} but the data files hold {} frames",
                    ds.info.total_frames,
                    ds.timestamp.len()
                ),
            ));
        }
        Ok(ds)
    }

    fn load_file(&mut self, chunk: usize, file: usize) -> Result<()> {
        let path = self.root.join(self.info.data_file(chunk, file));
        let f = File::open(&path).at(&path)?;
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let meta = ArrowReaderMetadata::load(&f, options).at(&path)?;
        let schema = meta.schema().clone();
        format::check_data_schema(&path, &self.info, &schema)?;
        let mut image_roots = Vec::new();
        let mut other_roots = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            if self.png_keys.contains(field.name()) {
                image_roots.push(i);
            } else if field.name() != "task" && !field.name().starts_with("language") {
                other_roots.push(i);
            }
        }
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(f, meta.clone());
        let mask = ProjectionMask::roots(builder.parquet_schema(), other_roots);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(65536)
            .build()
            .at(&path)?;
        let first_index = self.timestamp.len();
        let mut num_rows = 0;
        for batch in reader {
            let batch = batch.at(&path)?;
            let index = column_i64(&path, &batch, "index")?;
            for (row, &ix) in index.iter().enumerate() {
                if ix != (first_index + num_rows + row) as i64 {
                    return Err(DatasetError::inconsistent(
                        &path,
                        format!(
                            "row {} has index {ix}, expected {} (indices must be contiguous)",
                            num_rows + row,
                            first_index + num_rows + row
                        ),
                    ));
                }
            }
            self.timestamp
                .extend(column_f32(&path, &batch, "timestamp")?);
            self.frame_index
                .extend(column_i64(&path, &batch, "frame_index")?);
            self.episode_index
                .extend(column_i64(&path, &batch, "episode_index")?);
            self.task_index
                .extend(column_i64(&path, &batch, "task_index")?);
            if let Some(subtasks) = &self.subtasks {
                let values = column_i64(&path, &batch, SUBTASK_KEY)?;
                if let Some((row, v)) = values
                    .iter()
                    .enumerate()
                    .find(|(_, &v)| v < 0 || v as usize >= subtasks.len())
                {
                    return Err(DatasetError::inconsistent(
                        &path,
                        format!(
                            "row {}: column {SUBTASK_KEY:?} is {v}, but {SUBTASKS_PATH} lists {} sub-tasks",
                            num_rows + row,
                            subtasks.len()
                        ),
                    ));
                }
                self.subtask_index.extend(values);
            }
            for (key, dim, out) in [
                (STATE_KEY, self.state_dim, &mut self.state),
                (ACTION_KEY, self.action_dim, &mut self.action),
            ] {
                if dim == 0 {
                    continue;
                }
                let (values, width) =
                    flatten_f32(&path, key, format::column(&path, &batch, key)?.as_ref())?;
                if width != dim {
                    return Err(DatasetError::schema(
                        &path,
                        format!("column {key:?} has {width} values per row, info.json says {dim}"),
                    ));
                }
                out.extend(values);
            }
            num_rows += batch.num_rows();
        }
        self.files.push(DataFile {
            path,
            first_index,
            num_rows,
            meta,
            image_roots,
        });
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn info(&self) -> &DatasetInfo {
        &self.info
    }

    pub fn fps(&self) -> u32 {
        self.info.fps
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.timestamp.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamp.is_empty()
    }

    pub fn episodes(&self) -> &[EpisodeInfo] {
        &self.episodes
    }

    /// Task strings by task index.
    pub fn tasks(&self) -> &[String] {
        &self.tasks
    }

    /// Sub-task sentences by `subtask_index` (`meta/subtasks.parquet`); empty when the
    /// dataset has no `subtask_index` feature.
    pub fn subtasks(&self) -> &[String] {
        self.subtasks.as_deref().unwrap_or_default()
    }

    /// The `subtask_index` of the frame at global index `frame` (an index into
    /// [`Dataset::subtasks`]); `None` when the dataset has no sub-tasks or `frame` is out of
    /// range.
    pub fn subtask_index(&self, frame: usize) -> Option<usize> {
        self.subtask_index.get(frame).map(|&i| i as usize)
    }

    /// Camera feature keys (PNG and video cameras alike), sorted.
    pub fn image_keys(&self) -> &[String] {
        &self.image_keys
    }

    /// Keys of the cameras stored as video files, sorted.
    pub fn video_keys(&self) -> &[String] {
        &self.video_keys
    }

    /// `meta/stats.json`, if the dataset has one.
    pub fn stats(&self) -> Option<&Stats> {
        self.stats.as_ref()
    }

    pub fn state_dim(&self) -> usize {
        self.state_dim
    }

    pub fn action_dim(&self) -> usize {
        self.action_dim
    }

    /// Global frame indices of the given episodes, in order.
    pub fn episode_frames(&self, episodes: &[usize]) -> Vec<usize> {
        episodes
            .iter()
            .filter_map(|&e| self.episodes.get(e))
            .flat_map(|e| e.dataset_from_index..e.dataset_to_index)
            .collect()
    }

    /// Split episode indices into (train, validation) with a seeded shuffle. With at least two
    /// episodes and `val_fraction > 0`, both sides get at least one episode.
    pub fn split_episodes(&self, val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
        split_episodes(self.episodes.len(), val_fraction, seed)
    }

    /// The frame at global index `index`, images decoded.
    pub fn frame(&self, index: usize) -> Result<Frame> {
        let mut frames = self.frames(&[index])?;
        frames.pop().ok_or_else(|| {
            DatasetError::usage(&self.root, format!("frame {index} could not be read"))
        })
    }

    /// Frames at the given global indices (any order, duplicates allowed), read per file and
    /// decoded in parallel: PNG images per frame, video cameras per (camera, video file), each
    /// file decoded sequentially from one seek per run of nearby frames.
    pub fn frames(&self, indices: &[usize]) -> Result<Vec<Frame>> {
        for &i in indices {
            if i >= self.len() {
                return Err(DatasetError::usage(
                    &self.root,
                    format!("frame index {i} out of range (dataset has {})", self.len()),
                ));
            }
        }
        // Group the wanted rows per file.
        let mut per_file: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &i in indices {
            let f = self.file_of(i);
            per_file
                .entry(f)
                .or_default()
                .push(i - self.files[f].first_index);
        }
        let per_file: Vec<(usize, Vec<usize>)> = per_file
            .into_iter()
            .map(|(f, mut rows)| {
                rows.sort_unstable();
                rows.dedup();
                (f, rows)
            })
            .collect();
        let bytes: Vec<BTreeMap<usize, Vec<Vec<u8>>>> = per_file
            .par_iter()
            .map(|(f, rows)| self.read_image_bytes(*f, rows))
            .collect::<Result<_>>()?;
        let mut png: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
        for (f, map) in per_file.iter().map(|(f, _)| *f).zip(bytes) {
            let first = self.files[f].first_index;
            png.extend(map.into_iter().map(|(row, b)| (first + row, b)));
        }
        let mut videos = self.decode_videos(indices)?;
        // A frame asked for twice gets clones; its last request takes the decoded images.
        let last_use: HashMap<usize, usize> = indices
            .iter()
            .enumerate()
            .map(|(pos, &i)| (i, pos))
            .collect();
        let video_images: Vec<BTreeMap<String, RgbImage>> = indices
            .iter()
            .enumerate()
            .map(|(pos, &i)| {
                let last = last_use.get(&i) == Some(&pos);
                let mut out = BTreeMap::new();
                for (k, key) in self.video_keys.iter().enumerate() {
                    let img = if last {
                        videos.remove(&(i, k))
                    } else {
                        videos.get(&(i, k)).cloned()
                    };
                    if let Some(img) = img {
                        out.insert(key.clone(), img);
                    }
                }
                out
            })
            .collect();
        indices
            .par_iter()
            .zip(video_images)
            .map(|(&i, mut images)| {
                let f = &self.files[self.file_of(i)];
                if self.video_keys.iter().any(|k| !images.contains_key(k)) {
                    return Err(DatasetError::usage(
                        &self.root,
                        format!("frame {i}: a video image was not decoded"),
                    ));
                }
                if let Some(pngs) = png.get(&i) {
                    for (key, bytes) in self.png_keys.iter().zip(pngs) {
                        let img = image::load_from_memory(bytes)
                            .map_err(|e| DatasetError::Image {
                                path: f.path.clone(),
                                detail: format!("frame {i} {key}: {e}"),
                            })?
                            .to_rgb8();
                        images.insert(key.clone(), img);
                    }
                }
                Ok(self.frame_without_images(i, images))
            })
            .collect()
    }

    /// The video images of the frames at `indices`, by (frame, index in `video_keys`): the
    /// wanted times grouped per (camera, video file), each group decoded in time order on
    /// its own thread with a decoder from the pool.
    fn decode_videos(&self, indices: &[usize]) -> Result<HashMap<(usize, usize), RgbImage>> {
        let mut out = HashMap::new();
        if self.video_keys.is_empty() || indices.is_empty() {
            return Ok(out);
        }
        let mut unique = indices.to_vec();
        unique.sort_unstable();
        unique.dedup();
        let mut groups: BTreeMap<(usize, PathBuf), Vec<(f64, usize)>> = BTreeMap::new();
        for (k, key) in self.video_keys.iter().enumerate() {
            for &i in &unique {
                let ep = self.episode_index[i].max(0) as usize;
                let seg = self
                    .episodes
                    .get(ep)
                    .and_then(|e| e.videos.get(key))
                    .ok_or_else(|| {
                        DatasetError::inconsistent(
                            self.root.join(format::EPISODES_DIR),
                            format!("episode {ep} has no videos/{key}/... columns"),
                        )
                    })?;
                let path =
                    self.root
                        .join(self.info.video_file(key, seg.chunk_index, seg.file_index));
                let t = seg.from_timestamp + f64::from(self.timestamp[i]);
                groups.entry((k, path)).or_default().push((t, i));
            }
        }
        let decoded: Vec<Vec<((usize, usize), RgbImage)>> = groups
            .into_par_iter()
            .map(|((k, path), mut wanted)| {
                let key = &self.video_keys[k];
                wanted.sort_by(|a, b| a.0.total_cmp(&b.0));
                let times: Vec<f64> = wanted.iter().map(|w| w.0).collect();
                let shape = &self.info.features[key].shape;
                let mut decoder = self.decoders.take(&path, key)?;
                let mut images = Vec::with_capacity(wanted.len());
                let result = decoder.decode_at(&times, &mut |j, img| {
                    if shape.len() == 3
                        && (shape[0], shape[1]) != (img.height() as usize, img.width() as usize)
                    {
                        return Err(DatasetError::schema(
                            &path,
                            format!(
                                "{key}: decoded frames are {}x{}, info.json declares shape \
                                 {shape:?} (height, width, channel)",
                                img.width(),
                                img.height()
                            ),
                        ));
                    }
                    images.push(((wanted[j].1, k), img));
                    Ok(())
                });
                if result.is_ok() {
                    self.decoders.give_back(decoder);
                }
                result.map(|()| images)
            })
            .collect::<Result<_>>()?;
        out.extend(decoded.into_iter().flatten());
        Ok(out)
    }

    fn frame_without_images(&self, i: usize, images: BTreeMap<String, RgbImage>) -> Frame {
        let task_index = self.task_index[i].max(0) as usize;
        Frame {
            images,
            state: self.state[i * self.state_dim..(i + 1) * self.state_dim].to_vec(),
            action: self.action[i * self.action_dim..(i + 1) * self.action_dim].to_vec(),
            task: self.tasks.get(task_index).cloned().unwrap_or_default(),
            task_index,
            subtask: self
                .subtask_index(i)
                .and_then(|s| self.subtasks().get(s).cloned()),
            episode_index: self.episode_index[i].max(0) as usize,
            frame_index: self.frame_index[i].max(0) as usize,
            index: i,
            timestamp: self.timestamp[i],
        }
    }

    fn file_of(&self, index: usize) -> usize {
        self.files
            .partition_point(|f| f.first_index <= index)
            .saturating_sub(1)
    }

    /// PNG bytes of the image columns for sorted, unique `rows` of file `f`.
    fn read_image_bytes(&self, f: usize, rows: &[usize]) -> Result<BTreeMap<usize, Vec<Vec<u8>>>> {
        let file = &self.files[f];
        let mut out = BTreeMap::new();
        if self.png_keys.is_empty() || rows.is_empty() {
            return Ok(out);
        }
        let handle = File::open(&file.path).at(&file.path)?;
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(handle, file.meta.clone());
        let mask = ProjectionMask::roots(builder.parquet_schema(), file.image_roots.clone());
        let selection =
            RowSelection::from_consecutive_ranges(rows.iter().map(|&r| r..r + 1), file.num_rows);
        let reader = builder
            .with_projection(mask)
            .with_row_selection(selection)
            .with_batch_size(rows.len())
            .build()
            .at(&file.path)?;
        let mut pos = 0;
        for batch in reader {
            let batch = batch.at(&file.path)?;
            let cols = self
                .png_keys
                .iter()
                .map(|k| image_bytes(&file.path, &batch, k))
                .collect::<Result<Vec<_>>>()?;
            for r in 0..batch.num_rows() {
                let row = *rows.get(pos).ok_or_else(|| {
                    DatasetError::inconsistent(&file.path, "parquet returned more rows than asked")
                })?;
                out.insert(row, cols.iter().map(|c| c[r].clone()).collect());
                pos += 1;
            }
        }
        if pos != rows.len() {
            return Err(DatasetError::inconsistent(
                &file.path,
                format!("asked for {} rows, parquet returned {pos}", rows.len()),
            ));
        }
        Ok(out)
    }

    /// Shuffled batches over `indices` (global frame indices, e.g. from
    /// [`Dataset::episode_frames`]), decoded on the calling thread with rayon.
    pub fn batches(&self, indices: &[usize], batch_size: usize, seed: u64) -> BatchIter<'_> {
        let mut order = indices.to_vec();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        BatchIter {
            ds: self,
            order,
            pos: 0,
            batch_size: batch_size.max(1),
        }
    }

    /// Like [`Dataset::batches`], but reading and decoding run on a background thread,
    /// `prefetch` batches ahead of the consumer.
    pub fn prefetch_batches(
        self: &Arc<Self>,
        indices: &[usize],
        batch_size: usize,
        seed: u64,
        prefetch: usize,
    ) -> PrefetchIter {
        let ds = Arc::clone(self);
        let mut order = indices.to_vec();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let (tx, rx) = sync_channel(prefetch.max(1));
        let batch_size = batch_size.max(1);
        let handle = std::thread::spawn(move || {
            for chunk in order.chunks(batch_size) {
                if tx.send(ds.frames(chunk)).is_err() {
                    return;
                }
            }
        });
        PrefetchIter {
            rx: Some(rx),
            handle: Some(handle),
        }
    }

    /// Recompute the statistics of every feature from the data (per episode, then merged,
    /// exactly as the writer does).
    pub fn compute_stats(&self) -> Result<Stats> {
        let mut total = Stats::default();
        for e in &self.episodes {
            let range = e.dataset_from_index..e.dataset_to_index;
            let mut s = Stats::default();
            let f = &mut s.features;
            let n = range.len();
            if self.state_dim > 0 {
                let v = &self.state[range.start * self.state_dim..range.end * self.state_dim];
                f.insert(
                    STATE_KEY.into(),
                    FeatureStats::from_vectors(v, self.state_dim),
                );
            }
            if self.action_dim > 0 {
                let v = &self.action[range.start * self.action_dim..range.end * self.action_dim];
                f.insert(
                    ACTION_KEY.into(),
                    FeatureStats::from_vectors(v, self.action_dim),
                );
            }
            f.insert(
                "timestamp".into(),
                FeatureStats::from_vectors(&self.timestamp[range.clone()], 1),
            );
            let ints = |v: &[i64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
            let index: Vec<f32> = range.clone().map(|i| i as f32).collect();
            f.insert("index".into(), FeatureStats::from_vectors(&index, 1));
            for (key, col) in [
                ("frame_index", &self.frame_index),
                ("episode_index", &self.episode_index),
                ("task_index", &self.task_index),
                (SUBTASK_KEY, &self.subtask_index),
            ] {
                if col.is_empty() {
                    continue; // a dataset without sub-tasks
                }
                f.insert(
                    key.into(),
                    FeatureStats::from_vectors(&ints(&col[range.clone()]), 1),
                );
            }
            let mut hists = vec![[[0u64; 256]; 3]; self.image_keys.len()];
            let all: Vec<usize> = range.collect();
            for chunk in all.chunks(256) {
                for frame in self.frames(chunk)? {
                    for (h, key) in hists.iter_mut().zip(&self.image_keys) {
                        if let Some(img) = frame.images.get(key) {
                            for px in img.pixels() {
                                for c in 0..3 {
                                    h[c][px.0[c] as usize] += 1;
                                }
                            }
                        }
                    }
                }
            }
            for (h, key) in hists.iter().zip(&self.image_keys) {
                f.insert(key.clone(), FeatureStats::from_histograms(h, n as u64));
            }
            total.merge(&s);
        }
        Ok(total)
    }
}

/// Episode-level train/validation split (see [`Dataset::split_episodes`]).
pub fn split_episodes(
    num_episodes: usize,
    val_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..num_episodes).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let frac = val_fraction.clamp(0.0, 1.0);
    let mut n_val = (num_episodes as f64 * frac).round() as usize;
    if frac > 0.0 && num_episodes >= 2 {
        n_val = n_val.clamp(1, num_episodes - 1);
    }
    let mut val = order[..n_val].to_vec();
    let mut train = order[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    (train, val)
}

fn image_bytes(path: &Path, batch: &RecordBatch, key: &str) -> Result<Vec<Vec<u8>>> {
    let col = format::column(path, batch, key)?;
    let s = col.as_any().downcast_ref::<StructArray>().ok_or_else(|| {
        DatasetError::schema(path, format!("column {key:?} is not an image struct"))
    })?;
    let bytes = s
        .column_by_name("bytes")
        .ok_or_else(|| DatasetError::schema(path, format!("column {key:?} has no \"bytes\"")))?;
    let get = |i: usize| -> Option<Vec<u8>> {
        if bytes.is_null(i) || s.is_null(i) {
            return None;
        }
        if let Some(b) = bytes.as_any().downcast_ref::<BinaryArray>() {
            Some(b.value(i).to_vec())
        } else {
            bytes
                .as_any()
                .downcast_ref::<LargeBinaryArray>()
                .map(|b| b.value(i).to_vec())
        }
    };
    (0..batch.num_rows())
        .map(|i| {
            get(i).ok_or_else(|| {
                DatasetError::schema(
                    path,
                    format!("column {key:?} row {i} has no embedded image bytes"),
                )
            })
        })
        .collect()
}

/// Every video feature is an RGB image shape and every episode says where its frames are in
/// that feature's video files; errors name the key.
pub(crate) fn check_video_meta(
    root: &Path,
    info: &DatasetInfo,
    episodes: &[EpisodeInfo],
) -> Result<()> {
    let info_path = root.join(format::INFO_PATH);
    for key in info.video_keys() {
        let f = &info.features[&key];
        if f.shape.len() != 3 || f.shape[2] != 3 || f.shape[0] == 0 || f.shape[1] == 0 {
            return Err(DatasetError::schema(
                &info_path,
                format!(
                    "video feature {key:?} has shape {:?}, expected [height, width, 3]",
                    f.shape
                ),
            ));
        }
        if let Some(e) = episodes.iter().find(|e| !e.videos.contains_key(&key)) {
            return Err(DatasetError::inconsistent(
                root.join(format::EPISODES_DIR),
                format!(
                    "episode {} has no videos/{key}/chunk_index (and from_timestamp, ...) \
                     columns, but {key:?} is a video feature",
                    e.episode_index
                ),
            ));
        }
    }
    Ok(())
}

/// Meta-level consistency: episode numbering, ranges, lengths, tasks, totals.
pub(crate) fn check_episodes(
    root: &Path,
    info: &DatasetInfo,
    tasks: &[String],
    episodes: &[EpisodeInfo],
) -> Result<()> {
    let info_path = root.join(format::INFO_PATH);
    let ep_path = root.join(format::EPISODES_DIR);
    if tasks.len() != info.total_tasks {
        return Err(DatasetError::inconsistent(
            root.join(format::TASKS_PATH),
            format!(
                "{} tasks but info.json says total_tasks = {}",
                tasks.len(),
                info.total_tasks
            ),
        ));
    }
    if episodes.len() != info.total_episodes {
        return Err(DatasetError::inconsistent(
            &info_path,
            format!(
                "total_episodes = {} but meta/episodes lists {}",
                info.total_episodes,
                episodes.len()
            ),
        ));
    }
    let mut next_from = 0;
    for (i, e) in episodes.iter().enumerate() {
        if e.episode_index != i {
            return Err(DatasetError::inconsistent(
                &ep_path,
                format!(
                    "episode indices are not 0..{}: found {}",
                    episodes.len(),
                    e.episode_index
                ),
            ));
        }
        if e.dataset_from_index != next_from
            || e.dataset_to_index < e.dataset_from_index
            || e.dataset_to_index - e.dataset_from_index != e.length
        {
            return Err(DatasetError::inconsistent(
                &ep_path,
                format!(
                    "episode {i}: range {}..{} with length {} does not follow the previous episode (ends at {next_from})",
                    e.dataset_from_index, e.dataset_to_index, e.length
                ),
            ));
        }
        next_from = e.dataset_to_index;
        if let Some(t) = e.tasks.iter().find(|t| !tasks.contains(t)) {
            return Err(DatasetError::inconsistent(
                &ep_path,
                format!("episode {i} has task {t:?} which is not in meta/tasks.parquet"),
            ));
        }
    }
    if next_from != info.total_frames {
        return Err(DatasetError::inconsistent(
            &info_path,
            format!(
                "total_frames = {} but the episodes cover {next_from} frames",
                info.total_frames
            ),
        ));
    }
    Ok(())
}

/// Batches of decoded frames, see [`Dataset::batches`].
pub struct BatchIter<'a> {
    ds: &'a Dataset,
    order: Vec<usize>,
    pos: usize,
    batch_size: usize,
}

impl Iterator for BatchIter<'_> {
    type Item = Result<Vec<Frame>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.order.len() {
            return None;
        }
        let end = (self.pos + self.batch_size).min(self.order.len());
        let batch = self.ds.frames(&self.order[self.pos..end]);
        self.pos = end;
        Some(batch)
    }
}

/// Batches decoded ahead on a background thread, see [`Dataset::prefetch_batches`].
pub struct PrefetchIter {
    rx: Option<Receiver<Result<Vec<Frame>>>>,
    handle: Option<JoinHandle<()>>,
}

impl Iterator for PrefetchIter {
    type Item = Result<Vec<Frame>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for PrefetchIter {
    fn drop(&mut self) {
        // Closing the channel stops the producer at its next send.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
