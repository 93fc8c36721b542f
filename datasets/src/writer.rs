//! Recording LeRobot v3.0 datasets.
//!
//! Durability model: frames of the episode being recorded and episodes saved since the
//! last flush live in memory. A flush (every `flush_every_episodes` saved episodes, when the
//! buffered data exceeds `data_files_size_in_mb`, on [`DatasetWriter::finalize`] and on drop)
//! writes one new data file `data/chunk-XXX/file-YYY.parquet` (one row group per episode) and
//! one new episode metadata file, then rewrites `meta/tasks.parquet` (and
//! `meta/subtasks.parquet` when the dataset records sub-tasks), `meta/stats.json` and
//! finally `meta/info.json`, which is the commit point. Every file is written under a
//! temporary name, fsynced and renamed, so a SIGKILL at any moment leaves the dataset as of
//! the last completed flush; [`DatasetWriter::open_resume`] removes whatever an interrupted
//! flush left behind.
//!
//! Video cameras ([`DatasetSpec::video`]): each saved episode is encoded at once (one thread
//! per camera) and kept compressed in memory; a flush writes, per camera, the episodes it
//! holds back to back into new `videos/<key>/chunk-XXX/file-YYY.mp4` files (a new file when
//! one would exceed `video_files_size_in_mb`), under temporary names like every other file,
//! before the commit point.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BinaryArray, FixedSizeListArray, Float32Array, Float64Array, Int64Array,
    ListArray, RecordBatch, StringArray, StructArray,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Fields, Schema};
use image::RgbImage;
use rayon::prelude::*;
use vla_core::{Action, Observation, ACTION_NAMES, STATE_NAMES};

use crate::error::{AtPath, DatasetError, Result};
use crate::format::{
    self, data_schema, format_path, next_chunk_file, read_episodes, read_subtasks, read_tasks,
    write_subtasks, write_tasks, DatasetInfo, FeatureInfo, ACTION_KEY, CODEBASE_VERSION, DATA_DIR,
    DEFAULT_CHUNKS_SIZE, DEFAULT_DATA_FILE_SIZE_IN_MB, DEFAULT_EPISODES_PATH,
    DEFAULT_VIDEO_FILE_SIZE_IN_MB, EPISODES_DIR, IMAGE_PREFIX, INFO_PATH, STATE_KEY, SUBTASKS_PATH,
    SUBTASK_KEY,
};
use crate::stats::{FeatureStats, Stats};
use crate::video::{self, EncodedVideo, VideoCodec, VideoSpec, VIDEOS_DIR};

/// Index of an episode in its dataset.
pub type EpisodeIndex = usize;

/// The cameras of an [`Observation`], in the order of their feature keys.
pub const CAMERAS: [&str; 2] = ["front", "wrist"];

/// Feature key of a camera (`observation.images.<camera>`).
pub fn image_key(camera: &str) -> String {
    format!("{IMAGE_PREFIX}{camera}")
}

/// Size of the camera images, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageSize {
    pub width: u32,
    pub height: u32,
}

impl std::fmt::Display for ImageSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// One camera of a dataset: its name (feature key `observation.images.<name>`) and the size
/// of its images (each camera has its own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CameraSpec {
    pub name: String,
    pub size: ImageSize,
}

impl CameraSpec {
    pub fn new(name: impl Into<String>, size: ImageSize) -> Self {
        CameraSpec {
            name: name.into(),
            size,
        }
    }

    /// Feature key of the camera (`observation.images.<name>`).
    pub fn key(&self) -> String {
        image_key(&self.name)
    }

    /// The cameras of a frame, each at the size of its image: what a dataset made from a
    /// robot's own frames records (`vla dataset from-mcap`, `vla ros record`).
    pub fn of_frame(images: &[(&str, &RgbImage)]) -> Vec<CameraSpec> {
        images
            .iter()
            .map(|(name, img)| {
                let (width, height) = img.dimensions();
                CameraSpec::new(*name, ImageSize { width, height })
            })
            .collect()
    }
}

/// What a new dataset records.
#[derive(Clone, Debug)]
pub struct DatasetSpec {
    pub robot_type: String,
    /// Control rate (frames per second).
    pub fps: u32,
    /// The cameras, each with its own image size (feature keys `observation.images.<name>`).
    pub cameras: Vec<CameraSpec>,
    /// Names of the state vector entries (`observation.state`); their number is the state's.
    pub state_names: Vec<String>,
    /// Names of the action entries (`action`); their number is the action's.
    pub action_names: Vec<String>,
    /// Files per `chunk-XXX` directory.
    pub chunks_size: usize,
    /// A data file is flushed (and a new one started) once it would exceed this size.
    pub data_files_size_in_mb: u64,
    /// Flush after this many saved episodes at the latest.
    pub flush_every_episodes: usize,
    /// Record every frame's sub-task ([`FrameRecord::subtask`]) as the int64 feature
    /// `subtask_index`, an index into `meta/subtasks.parquet` (sentences in first-seen order).
    /// Every frame must then carry one. Off by default: without it the dataset is exactly
    /// what it was before sub-tasks existed.
    pub subtasks: bool,
    /// Store the cameras as video files (`dtype: "video"`, lerobot's layout) encoded this way
    /// instead of PNG images in the data files. `None` (the default): PNG. Video files are
    /// 10-50x smaller but lossy; [`VideoSpec::default`] is lerobot's AV1 setting.
    pub video: Option<VideoSpec>,
}

impl DatasetSpec {
    /// The spec of this stack's robot: [`STATE_NAMES`] state, [`ACTION_NAMES`] actions, front
    /// and wrist cameras, lerobot's default file sizes, a flush every 5 episodes.
    pub fn new(robot_type: impl Into<String>, fps: u32, image_size: ImageSize) -> Self {
        Self::with_features(
            robot_type,
            fps,
            CAMERAS
                .iter()
                .map(|c| CameraSpec::new(*c, image_size))
                .collect(),
            STATE_NAMES.iter().map(|s| s.to_string()).collect(),
            ACTION_NAMES.iter().map(|s| s.to_string()).collect(),
        )
    }

    /// The spec of any robot: these cameras, state and action entries, lerobot's default file
    /// sizes, a flush every 5 episodes.
    pub fn with_features(
        robot_type: impl Into<String>,
        fps: u32,
        cameras: Vec<CameraSpec>,
        state_names: Vec<String>,
        action_names: Vec<String>,
    ) -> Self {
        DatasetSpec {
            robot_type: robot_type.into(),
            fps,
            cameras,
            state_names,
            action_names,
            chunks_size: DEFAULT_CHUNKS_SIZE,
            data_files_size_in_mb: DEFAULT_DATA_FILE_SIZE_IN_MB,
            flush_every_episodes: 5,
            subtasks: false,
            video: None,
        }
    }

    /// Why `create` would refuse this spec, if it would: the message names the field.
    fn check(&self) -> std::result::Result<(), String> {
        if self.fps == 0 {
            return Err("fps must be positive".into());
        }
        for (field, names) in [
            ("state_names", &self.state_names),
            ("action_names", &self.action_names),
        ] {
            if names.is_empty() {
                return Err(format!("{field} is empty (at least one entry is needed)"));
            }
        }
        let mut seen = BTreeSet::new();
        for cam in &self.cameras {
            let valid = !cam.name.is_empty()
                && cam
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid {
                return Err(format!(
                    "camera name {:?} must be non-empty ASCII letters, digits, '_', '-' or '.'",
                    cam.name
                ));
            }
            if !seen.insert(cam.name.as_str()) {
                return Err(format!("camera {:?} is listed twice", cam.name));
            }
            if cam.size.width == 0 || cam.size.height == 0 {
                return Err(format!(
                    "{}: image size {} must be positive",
                    cam.key(),
                    cam.size
                ));
            }
            if self.video.is_some() && (cam.size.width % 2 != 0 || cam.size.height % 2 != 0) {
                return Err(format!(
                    "{}: image size {} must be even for yuv420p video (video)",
                    cam.key(),
                    cam.size
                ));
            }
        }
        if let Some(v) = &self.video {
            if v.codec.encoder().is_none() {
                return Err(format!(
                    "video.codec {}: the installed libavcodec has none of its encoders ({}); \
                     available: [{}]",
                    v.codec,
                    v.codec.encoders().join(", "),
                    video::available_encoders().join(", ")
                ));
            }
        }
        Ok(())
    }

    fn features(&self) -> std::collections::BTreeMap<String, FeatureInfo> {
        fn names(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        let mut f = std::collections::BTreeMap::new();
        f.insert(
            STATE_KEY.to_string(),
            FeatureInfo::vector("float32", &names(&self.state_names)),
        );
        f.insert(
            ACTION_KEY.to_string(),
            FeatureInfo::vector("float32", &names(&self.action_names)),
        );
        for cam in &self.cameras {
            let (w, h) = (cam.size.width, cam.size.height);
            let feature = match &self.video {
                Some(v) => FeatureInfo::video(h, w, video::info_block(v.codec, w, h, self.fps)),
                None => FeatureInfo::image(h, w),
            };
            f.insert(cam.key(), feature);
        }
        f.insert("timestamp".into(), FeatureInfo::scalar("float32"));
        for k in ["frame_index", "episode_index", "index", "task_index"] {
            f.insert(k.into(), FeatureInfo::scalar("int64"));
        }
        if self.subtasks {
            f.insert(SUBTASK_KEY.into(), FeatureInfo::scalar("int64"));
        }
        f
    }
}

/// One control step to record.
#[derive(Clone, Copy, Debug)]
pub struct FrameRecord<'a> {
    pub observation: &'a Observation,
    pub action: Action,
    /// Seconds since the start of the episode (normally `frame_index / fps`).
    pub timestamp: f32,
    /// What the expert is doing at this frame (e.g. "put the red cube in the red bin").
    /// Required when the dataset records sub-tasks ([`DatasetSpec::subtasks`]), ignored
    /// otherwise (see [`DatasetWriter::records_subtasks`]).
    pub subtask: Option<&'a str>,
}

/// One frame to record, of any robot: named camera images, state and action vectors (see
/// [`DatasetWriter::add_raw_frame`]).
#[derive(Clone, Copy, Debug)]
pub struct RawFrameRecord<'a> {
    /// One image per camera of the dataset, by camera name (`front` for
    /// `observation.images.front`), in any order.
    pub images: &'a [(&'a str, &'a RgbImage)],
    /// `observation.state`, as many values as the dataset's state names.
    pub state: &'a [f32],
    /// `action`, as many values as the dataset's action names.
    pub action: &'a [f32],
    /// Seconds since the start of the episode (normally `frame_index / fps`).
    pub timestamp: f32,
    /// As [`FrameRecord::subtask`].
    pub subtask: Option<&'a str>,
}

struct RawFrame {
    /// In the order of [`DatasetWriter::cameras`].
    images: Vec<RgbImage>,
    state: Vec<f32>,
    action: Vec<f32>,
    timestamp: f32,
    /// `Some` exactly when the dataset records sub-tasks.
    subtask: Option<String>,
}

struct PendingEpisode {
    episode_index: usize,
    task: String,
    from_index: usize,
    length: usize,
    batch: RecordBatch,
    stats: Stats,
    /// One per video camera (in the order of `DatasetWriter::video_cams`).
    videos: Vec<EncodedVideo>,
    /// Where each video camera's frames went, filled in by the flush.
    segments: BTreeMap<String, format::VideoSegment>,
}

/// Writes a LeRobot v3.0 dataset, episode by episode.
pub struct DatasetWriter {
    root: PathBuf,
    info: DatasetInfo,
    tasks: Vec<String>,
    /// Sub-task sentences by `subtask_index`; `None` when the dataset does not record them.
    subtasks: Option<Vec<String>>,
    stats: Stats,
    schema: Arc<Schema>,
    schema_kv: Vec<parquet::file::metadata::KeyValue>,
    /// Sorted by feature key (the order of the data files' columns).
    cameras: Vec<CameraSpec>,
    /// Feature key of each camera, parallel to `cameras`.
    camera_keys: Vec<String>,
    /// Positions in `cameras` of the cameras stored as video, and how they are encoded.
    video_cams: Vec<usize>,
    video: Option<VideoSpec>,
    /// (chunk, file) of the next video file, per video camera key.
    next_video: BTreeMap<String, (usize, usize)>,
    state_dim: usize,
    action_dim: usize,
    flush_every: usize,
    current: Vec<RawFrame>,
    pending: Vec<PendingEpisode>,
    pending_bytes: usize,
    /// (chunk, file) of the next data file and of the next episode metadata file.
    next_data: (usize, usize),
    next_meta: (usize, usize),
    finalized: bool,
}

impl DatasetWriter {
    /// Start a new dataset in `dir`, which must not exist or be empty.
    pub fn create(dir: impl AsRef<Path>, spec: DatasetSpec) -> Result<Self> {
        let root = dir.as_ref().to_path_buf();
        if root.exists() {
            let mut entries = std::fs::read_dir(&root).at(&root)?;
            if entries.next().is_some() {
                return Err(DatasetError::usage(
                    &root,
                    "directory is not empty; use DatasetWriter::open_resume to continue a dataset",
                ));
            }
        }
        spec.check()
            .map_err(|detail| DatasetError::usage(&root, detail))?;
        std::fs::create_dir_all(root.join("meta")).at(&root)?;
        let info = DatasetInfo {
            codebase_version: CODEBASE_VERSION.to_string(),
            robot_type: Some(spec.robot_type.clone()),
            total_episodes: 0,
            total_frames: 0,
            total_tasks: 0,
            chunks_size: spec.chunks_size.max(1),
            data_files_size_in_mb: spec.data_files_size_in_mb.max(1),
            video_files_size_in_mb: DEFAULT_VIDEO_FILE_SIZE_IN_MB,
            fps: spec.fps,
            splits: Default::default(),
            data_path: format::DEFAULT_DATA_PATH.to_string(),
            video_path: spec.video.map(|_| video::DEFAULT_VIDEO_PATH.to_string()),
            features: spec.features(),
            extra: Default::default(),
        };
        info.save(&root)?;
        let mut writer = Self::from_parts(
            root,
            info,
            Vec::new(),
            Stats::default(),
            (0, 0),
            (0, 0),
            spec.flush_every_episodes,
        )?;
        if spec.video.is_some() {
            writer.video = spec.video;
        }
        Ok(writer)
    }

    /// Start a new, empty dataset in `dir` that records exactly the features (names and all),
    /// fps, robot type and file sizes of `like`, e.g. a source of `vla dataset merge`. Fails,
    /// naming the feature, when `like` has a feature this writer does not record (anything
    /// beyond cameras, `observation.state`, `action`, the bookkeeping columns and
    /// `subtask_index`). Video cameras are encoded again with their `video.codec` (lerobot's
    /// crf and key frame spacing).
    pub fn create_like(dir: impl AsRef<Path>, like: &DatasetInfo) -> Result<Self> {
        let root = dir.as_ref().to_path_buf();
        if root.exists() && std::fs::read_dir(&root).at(&root)?.next().is_some() {
            return Err(DatasetError::usage(&root, "directory is not empty"));
        }
        for (key, f) in &like.features {
            let known = key == STATE_KEY
                || key == ACTION_KEY
                || key == SUBTASK_KEY
                || format::DEFAULT_FEATURE_KEYS.contains(&key.as_str())
                || (f.is_camera() && key.starts_with(IMAGE_PREFIX));
            if !known {
                return Err(DatasetError::schema(
                    &root,
                    format!(
                        "feature {key:?} (dtype {:?}) is not one this writer records (cameras as \
                         {IMAGE_PREFIX}NAME images, {STATE_KEY}, {ACTION_KEY}, {SUBTASK_KEY})",
                        f.dtype
                    ),
                ));
            }
        }
        std::fs::create_dir_all(root.join("meta")).at(&root)?;
        let info = DatasetInfo {
            codebase_version: CODEBASE_VERSION.to_string(),
            total_episodes: 0,
            total_frames: 0,
            total_tasks: 0,
            splits: Default::default(),
            data_path: format::DEFAULT_DATA_PATH.to_string(),
            video_path: (!like.video_keys().is_empty())
                .then(|| video::DEFAULT_VIDEO_PATH.to_string()),
            ..like.clone()
        };
        let writer = Self::from_parts(root, info, Vec::new(), Stats::default(), (0, 0), (0, 0), 5)?;
        writer.info.save(&writer.root)?;
        Ok(writer)
    }

    /// Continue the dataset in `dir`: new episodes go to new files after the existing ones.
    /// Leftovers of an interrupted flush (temporary files, files not yet committed to
    /// `meta/info.json`) are removed first.
    pub fn open_resume(dir: impl AsRef<Path>) -> Result<Self> {
        let root = dir.as_ref().to_path_buf();
        let info = DatasetInfo::load(&root)?;
        remove_tmp_files(&root)?;
        let info_path = root.join(INFO_PATH);

        let mut tasks = if info.total_tasks == 0 && !root.join(format::TASKS_PATH).exists() {
            Vec::new()
        } else {
            read_tasks(&root)?
        };
        if tasks.len() < info.total_tasks {
            return Err(DatasetError::inconsistent(
                root.join(format::TASKS_PATH),
                format!(
                    "{} tasks but info.json says total_tasks = {}",
                    tasks.len(),
                    info.total_tasks
                ),
            ));
        }
        tasks.truncate(info.total_tasks);
        // Sentences only ever get appended, so the committed indices are a prefix of the list
        // even if an interrupted flush rewrote it with more.
        let subtasks = if !info.features.contains_key(SUBTASK_KEY)
            || (info.total_episodes == 0 && !root.join(SUBTASKS_PATH).exists())
        {
            Vec::new()
        } else {
            read_subtasks(&root)?
        };

        let episodes = if info.total_episodes == 0 {
            read_episodes(&root).unwrap_or_default()
        } else {
            read_episodes(&root)?
        };
        // Rows beyond total_episodes belong to a flush that never reached its commit point.
        let committed: Vec<_> = episodes
            .iter()
            .filter(|e| e.episode_index < info.total_episodes)
            .cloned()
            .collect();
        if committed.len() != info.total_episodes
            || committed
                .iter()
                .enumerate()
                .any(|(i, e)| e.episode_index != i)
        {
            return Err(DatasetError::inconsistent(
                &info_path,
                format!(
                    "total_episodes = {} but the episode metadata holds episodes {:?}",
                    info.total_episodes,
                    committed
                        .iter()
                        .map(|e| e.episode_index)
                        .collect::<Vec<_>>()
                ),
            ));
        }
        let frames: usize = committed.iter().map(|e| e.length).sum();
        if frames != info.total_frames {
            return Err(DatasetError::inconsistent(
                &info_path,
                format!(
                    "total_frames = {} but the episodes hold {frames} frames",
                    info.total_frames
                ),
            ));
        }
        // Remove uncommitted data / episode metadata files.
        let data_used: BTreeSet<(usize, usize)> = committed
            .iter()
            .map(|e| (e.data_chunk_index, e.data_file_index))
            .collect();
        let meta_used: BTreeSet<(usize, usize)> = committed
            .iter()
            .map(|e| (e.meta_chunk_index, e.meta_file_index))
            .collect();
        for (dir, used) in [(DATA_DIR, &data_used), (EPISODES_DIR, &meta_used)] {
            for file in format::nested_parquet_files(&root.join(dir))? {
                if let Some(cf) = format::parse_chunk_file(&file) {
                    if !used.contains(&cf) && cf >= used.last().copied().unwrap_or((0, 0)) {
                        std::fs::remove_file(&file).at(&file)?;
                    }
                }
            }
        }
        // The same for video files, per camera.
        let mut next_video = BTreeMap::new();
        for key in info.video_keys() {
            let used: BTreeSet<(usize, usize)> = committed
                .iter()
                .filter_map(|e| e.videos.get(&key))
                .map(|v| (v.chunk_index, v.file_index))
                .collect();
            let last = used.last().copied().unwrap_or((0, 0));
            for file in format::nested_files(&root.join(VIDEOS_DIR).join(&key), ".mp4")? {
                if let Some(cf) = format::parse_chunk_file(&file) {
                    if !used.contains(&cf) && cf >= last {
                        std::fs::remove_file(&file).at(&file)?;
                    }
                }
            }
            let next = match used.last() {
                Some(&(c, f)) => next_chunk_file(c, f, info.chunks_size),
                None => (0, 0),
            };
            next_video.insert(key, next);
        }
        if episodes.iter().any(|e| {
            e.episode_index >= info.total_episodes
                && meta_used.contains(&(e.meta_chunk_index, e.meta_file_index))
        }) {
            return Err(DatasetError::inconsistent(
                root.join(EPISODES_DIR),
                "an episode metadata file mixes committed and uncommitted episodes",
            ));
        }

        let stats_path = root.join(format::STATS_PATH);
        let mut stats = if info.total_episodes == 0 {
            Stats::default()
        } else {
            Stats::load(&root)?
        };
        let stats_count = stats.get("index").map(|s| s.count as usize);
        if info.total_episodes > 0 && stats_count != Some(info.total_frames) {
            // stats.json was rewritten by a flush that did not commit: recompute it.
            stats = crate::reader::Dataset::open(&root)?.compute_stats()?;
            stats.save(&root)?;
        } else if !stats_path.exists() && info.total_episodes > 0 {
            return Err(DatasetError::Missing {
                path: stats_path,
                what: "stats.json".into(),
            });
        }

        let next = |used: &BTreeSet<(usize, usize)>| match used.last() {
            Some(&(c, f)) => next_chunk_file(c, f, info.chunks_size),
            None => (0, 0),
        };
        let (next_data, next_meta) = (next(&data_used), next(&meta_used));
        let mut writer = Self::from_parts(root, info, tasks, stats, next_data, next_meta, 5)?;
        if let Some(list) = &mut writer.subtasks {
            *list = subtasks;
        }
        writer.next_video.extend(next_video);
        Ok(writer)
    }

    /// A writer over `info`, checked to be a dataset it can extend; without any sub-task
    /// sentences yet.
    fn from_parts(
        root: PathBuf,
        info: DatasetInfo,
        tasks: Vec<String>,
        stats: Stats,
        next_data: (usize, usize),
        next_meta: (usize, usize),
        flush_every: usize,
    ) -> Result<Self> {
        let info_path = root.join(INFO_PATH);
        let feature = |key: &str| {
            info.features.get(key).ok_or_else(|| {
                DatasetError::schema(&info_path, format!("feature {key:?} is missing"))
            })
        };
        let state_dim = feature(STATE_KEY)?.numel();
        let action_dim = feature(ACTION_KEY)?.numel();
        let mut cameras = Vec::new();
        let mut video_cams = Vec::new();
        let mut video_codec = None;
        for key in info.camera_keys() {
            let f = feature(&key)?;
            if f.shape.len() != 3 || f.shape[2] != 3 || f.shape[0] == 0 || f.shape[1] == 0 {
                return Err(DatasetError::schema(
                    &info_path,
                    format!(
                        "feature {key:?} must be an RGB image, found dtype {:?} shape {:?}",
                        f.dtype, f.shape
                    ),
                ));
            }
            if f.is_video() {
                video_cams.push(cameras.len());
                // A dataset lerobot started with another codec goes on in the default one.
                video_codec = video_codec.or(f.video_codec().and_then(VideoCodec::from_name));
            }
            let size = ImageSize {
                height: f.shape[0] as u32,
                width: f.shape[1] as u32,
            };
            let name = key.strip_prefix(IMAGE_PREFIX).unwrap_or(&key);
            cameras.push(CameraSpec::new(name, size));
        }
        let camera_keys = info.camera_keys();
        let video = (!video_cams.is_empty()).then(|| {
            let mut spec = VideoSpec::default();
            if let Some(codec) = video_codec.filter(|c| c.encoder().is_some()) {
                spec.codec = codec;
            }
            spec
        });
        let next_video = video_cams
            .iter()
            .map(|&c| (camera_keys[c].clone(), (0, 0)))
            .collect();
        for key in format::DEFAULT_FEATURE_KEYS {
            feature(key)?;
        }
        let subtasks = match info.features.get(SUBTASK_KEY) {
            None => None,
            Some(f) if f.dtype == "int64" && f.shape == [1] => Some(Vec::new()),
            Some(f) => {
                let found = format!("dtype {:?} shape {:?}", f.dtype, f.shape);
                return Err(DatasetError::schema(
                    &info_path,
                    format!("feature {SUBTASK_KEY:?} must be an int64 scalar, found {found}"),
                ));
            }
        };
        let (schema, schema_kv) = data_schema(&info_path, &info)?;
        Ok(DatasetWriter {
            root,
            info,
            tasks,
            subtasks,
            stats,
            schema,
            schema_kv,
            cameras,
            camera_keys,
            video_cams,
            video,
            next_video,
            state_dim,
            action_dim,
            flush_every: flush_every.max(1),
            current: Vec::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            next_data,
            next_meta,
            finalized: false,
        })
    }

    /// Flush after this many saved episodes at the latest (default 5).
    pub fn set_flush_every_episodes(&mut self, n: usize) {
        self.flush_every = n.max(1);
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `meta/info.json` as last committed.
    pub fn info(&self) -> &DatasetInfo {
        &self.info
    }

    /// Episodes committed to disk (excludes saved episodes waiting for a flush).
    pub fn committed_episodes(&self) -> usize {
        self.info.total_episodes
    }

    /// Whether the dataset records sub-tasks (`subtask_index`): then every frame must carry
    /// one; otherwise [`FrameRecord::subtask`] is ignored.
    pub fn records_subtasks(&self) -> bool {
        self.subtasks.is_some()
    }

    /// Sub-task sentences by `subtask_index`, including those of saved episodes waiting for a
    /// flush (empty when the dataset does not record sub-tasks).
    pub fn subtasks(&self) -> &[String] {
        self.subtasks.as_deref().unwrap_or_default()
    }

    /// Frames recorded so far in the current episode.
    pub fn current_episode_len(&self) -> usize {
        self.current.len()
    }

    /// The dataset's cameras (name and image size), sorted by name: the order of the data
    /// files' image columns.
    pub fn cameras(&self) -> &[CameraSpec] {
        &self.cameras
    }

    /// Number of values of `observation.state`.
    pub fn state_dim(&self) -> usize {
        self.state_dim
    }

    /// Number of values of `action`.
    pub fn action_dim(&self) -> usize {
        self.action_dim
    }

    /// Append a frame of this stack's robot (front and wrist cameras, its state and 7-number
    /// action) to the current episode.
    pub fn add_frame(&mut self, frame: FrameRecord<'_>) -> Result<()> {
        let obs = frame.observation;
        self.add_raw_frame(RawFrameRecord {
            images: &[(CAMERAS[0], &obs.front), (CAMERAS[1], &obs.wrist)],
            state: &obs.state,
            action: &frame.action.0,
            timestamp: frame.timestamp,
            subtask: frame.subtask,
        })
    }

    /// Append a frame of any robot to the current episode: one image per camera (by name, each
    /// of its camera's size), and state and action vectors of the dataset's lengths. Errors
    /// name the feature key and the cause; nothing is appended then.
    pub fn add_raw_frame(&mut self, frame: RawFrameRecord<'_>) -> Result<()> {
        let camera_names = || {
            self.cameras
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some((name, _)) = frame
            .images
            .iter()
            .find(|(name, _)| !self.cameras.iter().any(|c| c.name == *name))
        {
            return Err(DatasetError::usage(
                &self.root,
                format!(
                    "{}: no such camera in the dataset (it records: {})",
                    image_key(name),
                    camera_names()
                ),
            ));
        }
        let mut images = Vec::with_capacity(self.cameras.len());
        for (cam, key) in self.cameras.iter().zip(&self.camera_keys) {
            let mut given = frame.images.iter().filter(|(name, _)| *name == cam.name);
            let img = match (given.next(), given.next()) {
                (Some((_, img)), None) => *img,
                (None, _) => {
                    return Err(DatasetError::usage(
                        &self.root,
                        format!("{key}: the frame has no image for camera {:?}", cam.name),
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err(DatasetError::usage(
                        &self.root,
                        format!("{key}: the frame has two images for camera {:?}", cam.name),
                    ))
                }
            };
            let (width, height) = img.dimensions();
            if (width, height) != (cam.size.width, cam.size.height) {
                return Err(DatasetError::usage(
                    &self.root,
                    format!(
                        "{key}: image is {width}x{height}, the dataset records {}",
                        cam.size
                    ),
                ));
            }
            images.push(img);
        }
        for (key, values, dim) in [
            (STATE_KEY, frame.state, self.state_dim),
            (ACTION_KEY, frame.action, self.action_dim),
        ] {
            if values.len() != dim {
                return Err(DatasetError::usage(
                    &self.root,
                    format!("{key}: {} values, the dataset records {dim}", values.len()),
                ));
            }
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(DatasetError::usage(
                    &self.root,
                    format!("{key}: dimension {i} is not finite"),
                ));
            }
        }
        let subtask = match (self.records_subtasks(), frame.subtask) {
            (false, _) => None,
            (true, Some(s)) => Some(s.to_string()),
            (true, None) => {
                return Err(DatasetError::usage(
                    &self.root,
                    format!(
                        "frame {} has no `subtask`, but the dataset records {SUBTASK_KEY:?} \
                         (every frame needs one)",
                        self.current.len()
                    ),
                ))
            }
        };
        self.current.push(RawFrame {
            images: images.into_iter().cloned().collect(),
            state: frame.state.to_vec(),
            action: frame.action.to_vec(),
            timestamp: frame.timestamp,
            subtask,
        });
        Ok(())
    }

    /// Drop the frames of the current episode (e.g. a failed demonstration).
    pub fn discard_episode(&mut self) {
        self.current.clear();
    }

    /// Close the current episode under the instruction `task`. It reaches disk with the next
    /// flush (at the latest after `flush_every_episodes` episodes).
    pub fn save_episode(&mut self, task: &str) -> Result<EpisodeIndex> {
        if self.current.is_empty() {
            return Err(DatasetError::usage(
                &self.root,
                "save_episode called without frames",
            ));
        }
        let frames = std::mem::take(&mut self.current);
        let episode_index = self.info.total_episodes + self.pending.len();
        let task_index = match self.tasks.iter().position(|t| t == task) {
            Some(i) => i,
            None => {
                self.tasks.push(task.to_string());
                self.tasks.len() - 1
            }
        };
        let subtask_index = self.subtasks.as_mut().map(|list| {
            frames
                .iter()
                .map(|f| {
                    let s = f.subtask.as_deref().unwrap_or_default();
                    let i = match list.iter().position(|t| t == s) {
                        Some(i) => i,
                        None => {
                            list.push(s.to_string());
                            list.len() - 1
                        }
                    };
                    i as i64
                })
                .collect::<Vec<i64>>()
        });
        let from_index =
            self.info.total_frames + self.pending.iter().map(|e| e.length).sum::<usize>();
        let (batch, stats, bytes, videos) = self.episode_batch(
            &frames,
            episode_index,
            task_index,
            subtask_index.as_deref(),
            from_index,
        )?;
        self.pending.push(PendingEpisode {
            episode_index,
            task: task.to_string(),
            from_index,
            length: frames.len(),
            batch,
            stats,
            videos,
            segments: BTreeMap::new(),
        });
        self.pending_bytes += bytes;
        let limit = self.info.data_files_size_in_mb as usize * 1024 * 1024;
        let video_limit = self.info.video_files_size_in_mb as usize * 1024 * 1024;
        let video_bytes = (0..self.video_cams.len())
            .map(|v| {
                self.pending
                    .iter()
                    .map(|e| e.videos[v].bytes)
                    .sum::<usize>()
            })
            .max()
            .unwrap_or(0);
        if self.pending.len() >= self.flush_every
            || self.pending_bytes >= limit
            || video_bytes >= video_limit
        {
            self.flush()?;
        }
        Ok(episode_index)
    }

    /// Encode one episode (PNG in parallel, each video camera on its own thread) and compute
    /// its statistics.
    fn episode_batch(
        &self,
        frames: &[RawFrame],
        episode_index: usize,
        task_index: usize,
        subtask_index: Option<&[i64]>,
        from_index: usize,
    ) -> Result<(RecordBatch, Stats, usize, Vec<EncodedVideo>)> {
        let n = frames.len();
        let png_cams: Vec<usize> = (0..self.cameras.len())
            .filter(|c| !self.video_cams.contains(c))
            .collect();
        let (encoded, videos) = rayon::join(
            || {
                frames
                    .par_iter()
                    .map(|f| -> Result<Vec<Vec<u8>>> {
                        png_cams
                            .iter()
                            .map(|&c| encode_png(&self.root, &f.images[c]))
                            .collect()
                    })
                    .collect::<Result<Vec<Vec<Vec<u8>>>>>()
            },
            || match &self.video {
                Some(spec) => self
                    .video_cams
                    .par_iter()
                    .map(|&c| {
                        let images: Vec<&RgbImage> = frames.iter().map(|f| &f.images[c]).collect();
                        video::encode_episode(
                            &self.root,
                            &self.camera_keys[c],
                            spec,
                            self.info.fps,
                            &images,
                        )
                    })
                    .collect::<Result<Vec<EncodedVideo>>>(),
                None => Ok(Vec::new()),
            },
        );
        let (encoded, videos) = (encoded?, videos?);
        let bytes: usize = encoded
            .iter()
            .map(|e| e.iter().map(Vec::len).sum::<usize>())
            .sum();

        let state: Vec<f32> = frames
            .iter()
            .flat_map(|f| f.state.iter().copied())
            .collect();
        let action: Vec<f32> = frames
            .iter()
            .flat_map(|f| f.action.iter().copied())
            .collect();
        let timestamp: Vec<f32> = frames.iter().map(|f| f.timestamp).collect();
        let frame_index: Vec<i64> = (0..n as i64).collect();
        let index: Vec<i64> = (from_index as i64..(from_index + n) as i64).collect();

        let mut stats = Stats::default();
        let s = &mut stats.features;
        s.insert(
            STATE_KEY.into(),
            FeatureStats::from_vectors(&state, self.state_dim),
        );
        s.insert(
            ACTION_KEY.into(),
            FeatureStats::from_vectors(&action, self.action_dim),
        );
        s.insert(
            "timestamp".into(),
            FeatureStats::from_vectors(&timestamp, 1),
        );
        let as_f32 = |v: &[i64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        s.insert(
            "frame_index".into(),
            FeatureStats::from_vectors(&as_f32(&frame_index), 1),
        );
        s.insert(
            "index".into(),
            FeatureStats::from_vectors(&as_f32(&index), 1),
        );
        s.insert(
            "episode_index".into(),
            FeatureStats::from_vectors(&vec![episode_index as f32; n], 1),
        );
        s.insert(
            "task_index".into(),
            FeatureStats::from_vectors(&vec![task_index as f32; n], 1),
        );
        if let Some(subtask_index) = subtask_index {
            s.insert(
                SUBTASK_KEY.into(),
                FeatureStats::from_vectors(&as_f32(subtask_index), 1),
            );
        }
        let hists: Vec<[[u64; 256]; 3]> = (0..self.cameras.len())
            .into_par_iter()
            .map(|cam| {
                let mut h = [[0u64; 256]; 3];
                for f in frames {
                    for px in f.images[cam].pixels() {
                        for c in 0..3 {
                            h[c][px.0[c] as usize] += 1;
                        }
                    }
                }
                h
            })
            .collect();
        for (key, h) in self.camera_keys.iter().zip(&hists) {
            s.insert(key.clone(), FeatureStats::from_histograms(h, n as u64));
        }

        let path = self.root.join(DATA_DIR);
        let mut columns: Vec<ArrayRef> = Vec::new();
        for field in self.schema.fields() {
            let col: ArrayRef = match field.name().as_str() {
                STATE_KEY => fixed_list_f32(state.clone(), self.state_dim),
                ACTION_KEY => fixed_list_f32(action.clone(), self.action_dim),
                "timestamp" => Arc::new(Float32Array::from(timestamp.clone())),
                "frame_index" => Arc::new(Int64Array::from(frame_index.clone())),
                "episode_index" => Arc::new(Int64Array::from(vec![episode_index as i64; n])),
                "index" => Arc::new(Int64Array::from(index.clone())),
                "task_index" => Arc::new(Int64Array::from(vec![task_index as i64; n])),
                SUBTASK_KEY => match subtask_index {
                    Some(v) => Arc::new(Int64Array::from(v.to_vec())),
                    None => {
                        return Err(DatasetError::schema(
                            &path,
                            format!("no sub-tasks recorded for feature {SUBTASK_KEY:?}"),
                        ))
                    }
                },
                name => match png_cams.iter().position(|&c| self.camera_keys[c] == name) {
                    Some(p) => image_struct(encoded.iter().map(|e| e[p].as_slice())),
                    None => {
                        return Err(DatasetError::schema(
                            &path,
                            format!("the writer cannot fill feature {name:?}"),
                        ))
                    }
                },
            };
            columns.push(col);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns).at(&path)?;
        Ok((
            batch,
            stats,
            bytes + n * 4 * (self.state_dim + self.action_dim + 10),
            videos,
        ))
    }

    /// Write every saved episode to disk now and commit it to `meta/`.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (dc, df) = self.next_data;
        let (mc, mf) = self.next_meta;
        let data_path = self.root.join(self.info.data_file(dc, df));
        let batches: Vec<RecordBatch> = self.pending.iter().map(|e| e.batch.clone()).collect();
        format::write_parquet_atomic(
            &data_path,
            self.schema.clone(),
            &batches,
            self.schema_kv.clone(),
        )?;
        let next_video = self.write_videos()?;

        let meta_path = self.root.join(format_path(DEFAULT_EPISODES_PATH, mc, mf));
        let meta_batch = episodes_batch(&meta_path, &self.pending, (dc, df), (mc, mf))?;
        format::write_parquet_atomic(&meta_path, meta_batch.schema(), &[meta_batch], vec![])?;

        write_tasks(&self.root, &self.tasks)?;
        if let Some(subtasks) = &self.subtasks {
            write_subtasks(&self.root, subtasks)?;
        }
        let mut stats = self.stats.clone();
        for e in &self.pending {
            stats.merge(&e.stats);
        }
        stats.save(&self.root)?;

        let mut info = self.info.clone();
        info.total_episodes += self.pending.len();
        info.total_frames += self.pending.iter().map(|e| e.length).sum::<usize>();
        info.total_tasks = self.tasks.len();
        info.splits = [("train".to_string(), format!("0:{}", info.total_episodes))].into();
        info.save(&self.root)?; // commit point

        self.info = info;
        self.stats = stats;
        self.pending.clear();
        self.pending_bytes = 0;
        self.next_data = next_chunk_file(dc, df, self.info.chunks_size);
        self.next_meta = next_chunk_file(mc, mf, self.info.chunks_size);
        self.next_video = next_video;
        Ok(())
    }

    /// Write the pending episodes' video streams: per camera, as many episodes back to back
    /// into one new file as `video_files_size_in_mb` allows (at least one). Records each
    /// episode's place in `segments`; returns the next (chunk, file) of every camera.
    fn write_videos(&mut self) -> Result<BTreeMap<String, (usize, usize)>> {
        let mut next_video = self.next_video.clone();
        let limit = (self.info.video_files_size_in_mb as usize).max(1) * 1024 * 1024;
        for (v, &c) in self.video_cams.iter().enumerate() {
            let key = self.camera_keys[c].clone();
            let mut next = next_video.get(&key).copied().unwrap_or((0, 0));
            let mut start = 0;
            while start < self.pending.len() {
                let mut end = start + 1;
                let mut size = self.pending[start].videos[v].bytes;
                while end < self.pending.len() && size + self.pending[end].videos[v].bytes <= limit
                {
                    size += self.pending[end].videos[v].bytes;
                    end += 1;
                }
                let path = self.root.join(self.info.video_file(&key, next.0, next.1));
                let streams: Vec<&EncodedVideo> = self.pending[start..end]
                    .iter()
                    .map(|e| &e.videos[v])
                    .collect();
                let ranges = video::write_video_file(&path, &key, self.info.fps, &streams)?;
                for (e, (from, to)) in self.pending[start..end].iter_mut().zip(ranges) {
                    e.segments.insert(
                        key.clone(),
                        format::VideoSegment {
                            chunk_index: next.0,
                            file_index: next.1,
                            from_timestamp: from,
                            to_timestamp: to,
                        },
                    );
                }
                next = next_chunk_file(next.0, next.1, self.info.chunks_size);
                start = end;
            }
            next_video.insert(key, next);
        }
        Ok(next_video)
    }

    /// Flush every saved episode. Frames of an unsaved episode are discarded.
    pub fn finalize(mut self) -> Result<DatasetInfo> {
        self.finalized = true;
        self.current.clear();
        self.flush()?;
        Ok(self.info.clone())
    }
}

impl Drop for DatasetWriter {
    /// Best effort: saved episodes are flushed; an unsaved episode is lost.
    fn drop(&mut self) {
        if !self.finalized {
            let _ = self.flush();
        }
    }
}

/// PNG bytes of an image (errors name `root`).
pub(crate) fn encode_png(root: &Path, img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| DatasetError::Image {
            path: root.to_path_buf(),
            detail: format!("PNG encoding failed: {e}"),
        })?;
    Ok(out)
}

/// A float vector column: `[dim]` lists, or plain floats for a one-number feature (shape
/// `[1]` is `datasets.Value`, not a `Sequence`, in LeRobot's data files).
fn fixed_list_f32(values: Vec<f32>, dim: usize) -> ArrayRef {
    if dim == 1 {
        return Arc::new(Float32Array::from(values));
    }
    Arc::new(FixedSizeListArray::new(
        Arc::new(Field::new("item", DataType::Float32, true)),
        dim as i32,
        Arc::new(Float32Array::from(values)),
        None,
    ))
}

fn image_struct<'a>(pngs: impl Iterator<Item = &'a [u8]>) -> ArrayRef {
    let bytes = BinaryArray::from_iter_values(pngs);
    let n = bytes.len();
    let fields: Fields = vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]
    .into();
    Arc::new(StructArray::new(
        fields,
        vec![Arc::new(bytes), Arc::new(StringArray::new_null(n))],
        None,
    ))
}

/// A list column whose rows are `values` (row-major, each row of `shape`) nested as
/// `list<list<...<T>>>`, the way pyarrow stores numpy arrays converted with `.tolist()`.
fn nested_list(rows: usize, values: ArrayRef, shape: &[usize]) -> ArrayRef {
    let mut array = values;
    let mut count: usize = rows * shape.iter().product::<usize>();
    for &dim in shape.iter().rev() {
        count /= dim.max(1);
        let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(dim, count));
        let field = Arc::new(Field::new("item", array.data_type().clone(), true));
        array = Arc::new(ListArray::new(field, offsets, array, None));
    }
    array
}

fn episodes_batch(
    path: &Path,
    episodes: &[PendingEpisode],
    data: (usize, usize),
    meta: (usize, usize),
) -> Result<RecordBatch> {
    let n = episodes.len();
    let int = |f: &dyn Fn(&PendingEpisode) -> usize| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            episodes.iter().map(|e| f(e) as i64),
        ))
    };
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let mut push = |name: String, col: ArrayRef| {
        fields.push(Field::new(name, col.data_type().clone(), true));
        columns.push(col);
    };
    push("episode_index".into(), int(&|e| e.episode_index));
    let tasks = Arc::new(StringArray::from_iter_values(
        episodes.iter().map(|e| e.task.as_str()),
    ));
    push("tasks".into(), nested_list(n, tasks, &[1]));
    push("length".into(), int(&|e| e.length));
    push("data/chunk_index".into(), int(&|_| data.0));
    push("data/file_index".into(), int(&|_| data.1));
    push("dataset_from_index".into(), int(&|e| e.from_index));
    push("dataset_to_index".into(), int(&|e| e.from_index + e.length));
    // Where each video camera's frames are: lerobot's videos/<key>/... columns.
    for key in episodes[0].segments.keys() {
        let mut segments = Vec::with_capacity(n);
        for e in episodes {
            segments.push(*e.segments.get(key).ok_or_else(|| {
                DatasetError::inconsistent(
                    path,
                    format!("episode {} has no video file for {key}", e.episode_index),
                )
            })?);
        }
        let ints = |f: &dyn Fn(&format::VideoSegment) -> usize| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(
                segments.iter().map(|s| f(s) as i64),
            ))
        };
        let floats = |f: &dyn Fn(&format::VideoSegment) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(segments.iter().map(f)))
        };
        push(
            format!("videos/{key}/chunk_index"),
            ints(&|s| s.chunk_index),
        );
        push(format!("videos/{key}/file_index"), ints(&|s| s.file_index));
        push(
            format!("videos/{key}/from_timestamp"),
            floats(&|s| s.from_timestamp),
        );
        push(
            format!("videos/{key}/to_timestamp"),
            floats(&|s| s.to_timestamp),
        );
    }
    // Per-episode statistics, flattened as lerobot does: stats/<feature>/<stat>.
    let keys: Vec<String> = episodes[0].stats.features.keys().cloned().collect();
    for key in &keys {
        let first = &episodes[0].stats.features[key];
        let shape = first.shape.clone();
        let mut stat_names: Vec<&str> = vec!["min", "max", "mean", "std"];
        stat_names.extend(first.quantiles.keys().map(String::as_str));
        for stat in stat_names {
            let mut values = Vec::new();
            for e in episodes {
                let s = e.stats.features.get(key).ok_or_else(|| {
                    DatasetError::inconsistent(path, format!("episode lacks stats for {key:?}"))
                })?;
                let v = match stat {
                    "min" => &s.min,
                    "max" => &s.max,
                    "mean" => &s.mean,
                    "std" => &s.std,
                    q => s.quantiles.get(q).ok_or_else(|| {
                        DatasetError::inconsistent(path, format!("missing {q} for {key:?}"))
                    })?,
                };
                values.extend_from_slice(v);
            }
            push(
                format!("stats/{key}/{stat}"),
                nested_list(n, Arc::new(Float64Array::from(values)), &shape),
            );
        }
        let counts = Int64Array::from_iter_values(
            episodes
                .iter()
                .map(|e| e.stats.features.get(key).map_or(0, |s| s.count as i64)),
        );
        push(
            format!("stats/{key}/count"),
            nested_list(n, Arc::new(counts), &[1]),
        );
    }
    push("meta/episodes/chunk_index".into(), int(&|_| meta.0));
    push("meta/episodes/file_index".into(), int(&|_| meta.1));
    let schema = Arc::new(Schema::new(fields));
    RecordBatch::try_new(schema, columns).at(path)
}

/// Remove temporary files an interrupted writer left in `meta/` and `data/`.
fn remove_tmp_files(root: &Path) -> Result<()> {
    fn walk(dir: &Path, depth: usize) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(_) => return Ok(()),
        };
        for entry in entries {
            let path = entry.at(dir)?.path();
            if path.is_dir() && depth > 0 {
                walk(&path, depth - 1)?;
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.') && n.contains(".tmp-"))
            {
                std::fs::remove_file(&path).at(&path)?;
            }
        }
        Ok(())
    }
    walk(&root.join("meta"), 3)?;
    walk(&root.join(DATA_DIR), 2)?;
    walk(&root.join(VIDEOS_DIR), 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vla-datasets-writer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn size(width: u32, height: u32) -> ImageSize {
        ImageSize { width, height }
    }

    fn picture(w: u32, h: u32, t: usize) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, t as u8]))
    }

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    /// Three cameras of three sizes, listed out of name order, a 2-number state and a
    /// 6-number action.
    fn spec() -> DatasetSpec {
        DatasetSpec::with_features(
            "other_robot",
            5,
            vec![
                CameraSpec::new("top", size(6, 4)),
                CameraSpec::new("left", size(3, 5)),
                CameraSpec::new("right", size(2, 2)),
            ],
            names("joint_", 2),
            names("v_", 6),
        )
    }

    #[test]
    fn raw_frames_of_any_robot_round_trip_and_validate() {
        let dir = scratch("raw");
        let mut w = DatasetWriter::create(&dir, spec()).expect("create");
        let cams: Vec<&str> = w.cameras().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(cams, ["left", "right", "top"], "sorted like the columns");
        assert_eq!((w.state_dim(), w.action_dim()), (2, 6));
        for t in 0..4 {
            let (top, left, right) = (picture(6, 4, t), picture(3, 5, t + 10), picture(2, 2, t));
            let action: Vec<f32> = (0..6).map(|i| (t * 10 + i) as f32).collect();
            w.add_raw_frame(RawFrameRecord {
                images: &[("top", &top), ("right", &right), ("left", &left)],
                state: &[t as f32, -(t as f32)],
                action: &action,
                timestamp: t as f32 / 5.0,
                subtask: None,
            })
            .expect("add_raw_frame");
        }
        w.save_episode("wave").expect("save");
        w.finalize().expect("finalize");
        crate::validate(&dir).expect("valid");

        let ds = crate::Dataset::open(&dir).expect("open");
        let info = ds.info();
        assert_eq!(info.features["observation.images.top"].shape, [4, 6, 3]);
        assert_eq!(info.features["observation.images.left"].shape, [5, 3, 3]);
        assert_eq!(
            info.features[ACTION_KEY].names,
            serde_json::json!(names("v_", 6))
        );
        let f = ds.frame(2).expect("frame");
        assert_eq!(f.state, [2.0, -2.0]);
        assert_eq!(f.action, [20.0, 21.0, 22.0, 23.0, 24.0, 25.0]);
        assert_eq!(f.images["observation.images.left"], picture(3, 5, 12));
        assert_eq!(f.images["observation.images.top"], picture(6, 4, 2));
        assert_eq!(f.images["observation.images.right"], picture(2, 2, 2));
        // Resuming finds the same cameras and lengths in info.json.
        let w = DatasetWriter::open_resume(&dir).expect("resume");
        assert_eq!(w.cameras().len(), 3);
        assert_eq!((w.state_dim(), w.action_dim()), (2, 6));
        drop(w);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn raw_frame_errors_name_the_key_and_keep_the_episode() {
        let dir = scratch("raw-errors");
        let mut w = DatasetWriter::create(&dir, spec()).expect("create");
        let (top, left, right) = (picture(6, 4, 0), picture(3, 5, 0), picture(2, 2, 0));
        let six = [0.0f32; 6];
        let good = RawFrameRecord {
            images: &[("top", &top), ("left", &left), ("right", &right)],
            state: &[0.0, 1.0],
            action: &six,
            timestamp: 0.0,
            subtask: None,
        };
        w.add_raw_frame(good).expect("a good frame");
        let small = picture(3, 3, 0);
        fn expect_err(w: &mut DatasetWriter, frame: RawFrameRecord<'_>, words: &[&str]) {
            let err = w.add_raw_frame(frame).expect_err("refused").to_string();
            for word in words {
                assert!(err.contains(word), "{word:?} not in {err}");
            }
        }
        let bad_size = [("top", &top), ("left", &small), ("right", &right)];
        expect_err(
            &mut w,
            RawFrameRecord {
                images: &bad_size,
                ..good
            },
            &["observation.images.left", "3x3", "3x5"],
        );
        let missing = [("top", &top), ("left", &left)];
        expect_err(
            &mut w,
            RawFrameRecord {
                images: &missing,
                ..good
            },
            &["observation.images.right", "no image"],
        );
        let unknown = [
            ("top", &top),
            ("left", &left),
            ("right", &right),
            ("x", &top),
        ];
        expect_err(
            &mut w,
            RawFrameRecord {
                images: &unknown,
                ..good
            },
            &["observation.images.x", "left, right, top"],
        );
        expect_err(
            &mut w,
            RawFrameRecord {
                state: &[1.0],
                ..good
            },
            &["observation.state", "1 values", "records 2"],
        );
        expect_err(
            &mut w,
            RawFrameRecord {
                action: &[0.0; 7],
                ..good
            },
            &["action", "7 values", "records 6"],
        );
        expect_err(
            &mut w,
            RawFrameRecord {
                action: &[0.0, 0.0, f32::NAN, 0.0, 0.0, 0.0],
                ..good
            },
            &["action", "dimension 2"],
        );
        assert_eq!(
            w.current_episode_len(),
            1,
            "refused frames are not appended"
        );
        drop(w);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn specs_that_cannot_be_written_are_refused_naming_the_field() {
        fn refused(case: &str, change: impl Fn(&mut DatasetSpec), word: &str) {
            let dir = scratch(&format!("spec-{case}"));
            let mut s = spec();
            change(&mut s);
            let err = DatasetWriter::create(&dir, s).err().expect("refused");
            assert!(err.to_string().contains(word), "{word:?} not in {err}");
            assert!(!dir.join("meta").exists(), "nothing written");
            let _ = std::fs::remove_dir_all(&dir);
        }
        refused("fps", |s| s.fps = 0, "fps");
        refused("actions", |s| s.action_names.clear(), "action_names");
        refused("name", |s| s.cameras[0].name = "a b".into(), "\"a b\"");
        refused(
            "twice",
            |s| s.cameras[1].name = "top".into(),
            "listed twice",
        );
        refused(
            "size",
            |s| s.cameras[2].size = size(0, 2),
            "observation.images.right",
        );
        refused(
            "video-size",
            |s| s.video = Some(VideoSpec::default()),
            "observation.images.left: image size 3x5 must be even",
        );
    }
}
