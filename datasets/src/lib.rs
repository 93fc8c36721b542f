//! LeRobot v3.0 datasets: recording ([`DatasetWriter`]), reading for training ([`Dataset`]),
//! normalisation statistics ([`Stats`]) and full consistency checks ([`validate`]).
//!
//! Layout (relative to the dataset root):
//!
//! ```text
//! meta/info.json                               codebase_version "v3.0", features, totals
//! meta/stats.json                              per-feature min/max/mean/std/count/q01..q99
//! meta/tasks.parquet                           task strings (pandas index "task") + task_index
//! meta/subtasks.parquet                        optional: sub-task sentences (pandas index
//!                                              "subtask") + subtask_index, when info.json
//!                                              has the per-frame int64 feature subtask_index
//! meta/episodes/chunk-XXX/file-YYY.parquet     one row per episode (ranges, tasks, stats/...)
//! data/chunk-XXX/file-YYY.parquet              one row per frame, many episodes per file,
//!                                              images embedded as PNG ({bytes, path} structs)
//! videos/KEY/chunk-XXX/file-YYY.mp4            cameras with dtype "video": episodes back to
//!                                              back, found by videos/KEY/from_timestamp in
//!                                              the episode metadata ([`video`])
//! ```
//!
//! [`merge()`] joins datasets (the shards of a sharded collection) into one.
//!
//! [`vqa`] writes and reads the vision-language data of `vla vqa collect` (Hugging Face
//! `datasets` Parquet layout, not LeRobot).

pub mod error;
pub mod format;
pub mod merge;
pub mod reader;
pub mod stats;
pub mod validate;
pub mod video;
pub mod vqa;
pub mod writer;

pub use error::{DatasetError, Result};
pub use format::{DatasetInfo, EpisodeInfo, FeatureInfo, VideoSegment, CODEBASE_VERSION};
pub use merge::{merge, MergeReport, MergedSource};
pub use reader::{split_episodes, BatchIter, Dataset, Frame, PrefetchIter};
pub use stats::{FeatureStats, NormMode, Stats};
pub use validate::{validate, ValidationReport};
pub use video::{available_encoders, VideoCodec, VideoDecoder, VideoSpec};
pub use writer::{
    CameraSpec, DatasetSpec, DatasetWriter, EpisodeIndex, FrameRecord, ImageSize, RawFrameRecord,
    CAMERAS,
};
