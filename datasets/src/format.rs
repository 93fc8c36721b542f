//! The LeRobot v3.0 on-disk format: paths, `meta/info.json`, feature descriptions, the
//! Hugging Face / pandas parquet metadata, and small arrow/parquet helpers shared by the
//! writer, the reader and the validator.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Float64Array, GenericListArray, Int32Array,
    Int64Array, LargeListArray, LargeStringArray, ListArray, OffsetSizeTrait, RecordBatch,
    StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{AtPath, DatasetError, Result};

/// The only format version this crate reads and writes.
pub const CODEBASE_VERSION: &str = "v3.0";
/// Default number of files per `chunk-XXX` directory (lerobot `DEFAULT_CHUNK_SIZE`).
pub const DEFAULT_CHUNKS_SIZE: usize = 1000;
/// Default maximal size of a data file (lerobot `DEFAULT_DATA_FILE_SIZE_IN_MB`).
pub const DEFAULT_DATA_FILE_SIZE_IN_MB: u64 = 100;
/// Default maximal size of a video file (lerobot `DEFAULT_VIDEO_FILE_SIZE_IN_MB`).
pub const DEFAULT_VIDEO_FILE_SIZE_IN_MB: u64 = 200;
/// Template of data file paths, relative to the dataset root.
pub const DEFAULT_DATA_PATH: &str = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet";
/// Template of episode metadata file paths, relative to the dataset root.
pub const DEFAULT_EPISODES_PATH: &str =
    "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet";
pub const INFO_PATH: &str = "meta/info.json";
pub const STATS_PATH: &str = "meta/stats.json";
pub const TASKS_PATH: &str = "meta/tasks.parquet";
/// Sub-task sentences of the optional [`SUBTASK_KEY`] feature.
pub const SUBTASKS_PATH: &str = "meta/subtasks.parquet";
pub const EPISODES_DIR: &str = "meta/episodes";
pub const DATA_DIR: &str = "data";

/// Feature key of the proprioceptive state.
pub const STATE_KEY: &str = "observation.state";
/// Feature key of the action.
pub const ACTION_KEY: &str = "action";
/// Optional int64 feature: index of the frame's sub-task in `meta/subtasks.parquet`.
pub const SUBTASK_KEY: &str = "subtask_index";
/// Prefix of camera feature keys.
pub const IMAGE_PREFIX: &str = "observation.images.";
/// Per-frame bookkeeping features every LeRobot dataset has (lerobot `DEFAULT_FEATURES`).
pub const DEFAULT_FEATURE_KEYS: [&str; 5] = [
    "timestamp",
    "frame_index",
    "episode_index",
    "index",
    "task_index",
];

/// One entry of `info.json`'s `features`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureInfo {
    /// `"float32"`, `"int64"`, `"image"`, `"video"`, `"string"`, ...
    pub dtype: String,
    pub shape: Vec<usize>,
    /// `null`, a list of names, or (in some older datasets) a dict.
    #[serde(default)]
    pub names: Value,
    /// Anything else (`info` for videos, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl FeatureInfo {
    pub fn vector(dtype: &str, names: &[&str]) -> Self {
        FeatureInfo {
            dtype: dtype.to_string(),
            shape: vec![names.len()],
            names: json!(names),
            extra: Default::default(),
        }
    }

    pub fn scalar(dtype: &str) -> Self {
        FeatureInfo {
            dtype: dtype.to_string(),
            shape: vec![1],
            names: Value::Null,
            extra: Default::default(),
        }
    }

    pub fn image(height: u32, width: u32) -> Self {
        FeatureInfo {
            dtype: "image".to_string(),
            shape: vec![height as usize, width as usize, 3],
            names: json!(["height", "width", "channel"]),
            extra: Default::default(),
        }
    }

    /// A camera stored as video (`videos/...mp4`); `info` is lerobot's block of stream facts
    /// (`video.codec`, `video.pix_fmt`, ...).
    pub fn video(height: u32, width: u32, info: Value) -> Self {
        let mut extra = serde_json::Map::new();
        extra.insert("info".into(), info);
        FeatureInfo {
            dtype: "video".to_string(),
            shape: vec![height as usize, width as usize, 3],
            names: json!(["height", "width", "channels"]),
            extra,
        }
    }

    /// A camera stored as PNG bytes in the data files.
    pub fn is_image(&self) -> bool {
        self.dtype == "image"
    }

    /// A camera stored as video files.
    pub fn is_video(&self) -> bool {
        self.dtype == "video"
    }

    /// A camera, stored either way.
    pub fn is_camera(&self) -> bool {
        self.is_image() || self.is_video()
    }

    /// `info["video.codec"]` of a video feature, if given.
    pub fn video_codec(&self) -> Option<&str> {
        self.extra.get("info")?.get("video.codec")?.as_str()
    }

    /// Number of scalar values of a numeric feature.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// `meta/info.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub codebase_version: String,
    #[serde(default)]
    pub robot_type: Option<String>,
    pub total_episodes: usize,
    pub total_frames: usize,
    pub total_tasks: usize,
    #[serde(default = "default_chunks_size")]
    pub chunks_size: usize,
    #[serde(default = "default_data_mb")]
    pub data_files_size_in_mb: u64,
    #[serde(default = "default_video_mb")]
    pub video_files_size_in_mb: u64,
    pub fps: u32,
    #[serde(default)]
    pub splits: BTreeMap<String, String>,
    pub data_path: String,
    #[serde(default)]
    pub video_path: Option<String>,
    pub features: BTreeMap<String, FeatureInfo>,
    /// Fields this crate does not interpret, kept verbatim when rewriting.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

fn default_chunks_size() -> usize {
    DEFAULT_CHUNKS_SIZE
}
fn default_data_mb() -> u64 {
    DEFAULT_DATA_FILE_SIZE_IN_MB
}
fn default_video_mb() -> u64 {
    DEFAULT_VIDEO_FILE_SIZE_IN_MB
}

impl DatasetInfo {
    /// Read and version-check `meta/info.json` of the dataset at `root`.
    pub fn load(root: &Path) -> Result<Self> {
        let path = root.join(INFO_PATH);
        let text = std::fs::read_to_string(&path).at(&path)?;
        let raw: Value = serde_json::from_str(&text).at(&path)?;
        let version = raw
            .get("codebase_version")
            .and_then(Value::as_str)
            .unwrap_or("<missing>")
            .to_string();
        if version != CODEBASE_VERSION {
            return Err(DatasetError::Version {
                path,
                found: version,
                expected: CODEBASE_VERSION.to_string(),
            });
        }
        serde_json::from_value(raw).at(&path)
    }

    pub fn save(&self, root: &Path) -> Result<()> {
        let path = root.join(INFO_PATH);
        let text = serde_json::to_string_pretty(self).at(&path)?;
        write_atomic(&path, text.as_bytes())
    }

    /// Keys of cameras stored as PNG images in the data files (`dtype: "image"`), sorted.
    pub fn image_keys(&self) -> Vec<String> {
        self.features
            .iter()
            .filter(|(_, f)| f.is_image())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Keys of cameras stored as video files (`dtype: "video"`), sorted.
    pub fn video_keys(&self) -> Vec<String> {
        self.features
            .iter()
            .filter(|(_, f)| f.is_video())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Keys of every camera, image or video, sorted.
    pub fn camera_keys(&self) -> Vec<String> {
        self.features
            .iter()
            .filter(|(_, f)| f.is_camera())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Relative path of a data file.
    pub fn data_file(&self, chunk: usize, file: usize) -> String {
        format_path(&self.data_path, chunk, file)
    }

    /// Relative path of the video file of camera `key` (`video_path`, lerobot's default
    /// template when info.json has none).
    pub fn video_file(&self, key: &str, chunk: usize, file: usize) -> String {
        let template = self
            .video_path
            .as_deref()
            .unwrap_or(crate::video::DEFAULT_VIDEO_PATH);
        crate::video::format_video_path(template, key, chunk, file)
    }
}

/// Expand a lerobot path template (`{chunk_index:03d}`, `{file_index:03d}`).
pub fn format_path(template: &str, chunk: usize, file: usize) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let spec = &rest[start + 1..start + len];
        let (name, fmt) = spec.split_once(':').unwrap_or((spec, ""));
        let value = match name {
            "chunk_index" => Some(chunk),
            "file_index" => Some(file),
            _ => None,
        };
        match value {
            Some(v) => {
                let width: usize = fmt
                    .trim_end_matches('d')
                    .trim_start_matches('0')
                    .parse()
                    .unwrap_or(0);
                out.push_str(&format!("{v:0width$}"));
            }
            None => out.push_str(&rest[start..=start + len]),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// Next (chunk, file) pair, rolling over to a new chunk after `chunks_size` files.
pub fn next_chunk_file(chunk: usize, file: usize, chunks_size: usize) -> (usize, usize) {
    if file + 1 >= chunks_size.max(1) {
        (chunk + 1, 0)
    } else {
        (chunk, file + 1)
    }
}

/// Write `bytes` to `path` atomically: temporary file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = File::create(&tmp).at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    commit_tmp(&tmp, path)
}

/// The temporary name a file is written under before being renamed into place.
pub fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Rename a finished temporary file into place and make the rename durable.
pub fn commit_tmp(tmp: &Path, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).at(parent)?;
    }
    std::fs::rename(tmp, path).at(path)?;
    if let Some(parent) = path.parent() {
        // Best effort: persist the directory entry.
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Write record batches (one row group each) to `path` atomically.
pub fn write_parquet_atomic(
    path: &Path,
    schema: SchemaRef,
    batches: &[RecordBatch],
    kv: Vec<KeyValue>,
) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).at(parent)?;
    }
    let tmp = tmp_path(path);
    let result = (|| {
        let file = File::create(&tmp).at(&tmp)?;
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(if kv.is_empty() { None } else { Some(kv) });
        // Encoded images: one per data page (with the offset index, a random-access read
        // touches only the pages of the rows it wants), no dictionary (images never repeat,
        // costly to hash), no statistics, no compression (PNG is already compressed).
        for field in schema.fields() {
            if let DataType::Struct(children) = field.data_type() {
                for child in children
                    .iter()
                    .filter(|c| c.data_type() == &DataType::Binary)
                {
                    let col = ColumnPath::new(vec![field.name().clone(), child.name().clone()]);
                    props = props
                        .set_column_dictionary_enabled(col.clone(), false)
                        .set_column_statistics_enabled(col.clone(), EnabledStatistics::None)
                        .set_column_compression(col.clone(), Compression::UNCOMPRESSED)
                        .set_column_data_page_row_count_limit(col, 1);
                }
            }
        }
        let props = props.build();
        let mut writer = ArrowWriter::try_new(file, schema, Some(props)).at(&tmp)?;
        for batch in batches {
            writer.write(batch).at(&tmp)?;
            writer.flush().at(&tmp)?;
        }
        let file = writer.into_inner().at(&tmp)?;
        file.sync_all().at(&tmp)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    commit_tmp(&tmp, path)
}

/// Read a whole parquet file into record batches.
pub fn read_parquet(path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let file = File::open(path).at(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).at(path)?;
    let schema = builder.schema().clone();
    let reader = builder.with_batch_size(8192).build().at(path)?;
    let mut batches = Vec::new();
    for batch in reader {
        batches.push(batch.at(path)?);
    }
    Ok((schema, batches))
}

/// The Hugging Face `datasets` feature description of a LeRobot feature.
pub fn hf_feature(info: &FeatureInfo) -> Value {
    if info.is_image() {
        json!({"_type": "Image"})
    } else if info.shape == [1] {
        json!({"dtype": info.dtype, "_type": "Value"})
    } else {
        json!({
            "feature": {"dtype": info.dtype, "_type": "Value"},
            "length": info.numel(),
            "_type": "Sequence"
        })
    }
}

/// Arrow type lerobot / `datasets` use to store a feature.
pub fn arrow_type(path: &Path, key: &str, info: &FeatureInfo) -> Result<DataType> {
    let scalar = match info.dtype.as_str() {
        "image" => return Ok(image_struct_type()),
        "float32" => DataType::Float32,
        "float64" => DataType::Float64,
        "int64" => DataType::Int64,
        "int32" => DataType::Int32,
        "bool" => DataType::Boolean,
        "string" => DataType::Utf8,
        other => {
            return Err(DatasetError::schema(
                path,
                format!("feature {key:?} has unsupported dtype {other:?}"),
            ))
        }
    };
    if info.shape == [1] {
        Ok(scalar)
    } else if info.shape.len() == 1 {
        Ok(DataType::FixedSizeList(
            Arc::new(Field::new("item", scalar, true)),
            info.shape[0] as i32,
        ))
    } else {
        Err(DatasetError::schema(
            path,
            format!("feature {key:?} has unsupported shape {:?}", info.shape),
        ))
    }
}

/// The `datasets.Image` storage type: `struct<bytes: binary, path: string>`.
pub fn image_struct_type() -> DataType {
    DataType::Struct(
        vec![
            Field::new("bytes", DataType::Binary, true),
            Field::new("path", DataType::Utf8, true),
        ]
        .into(),
    )
}

/// Arrow schema of the data files for `info`'s features (videos excluded), with the
/// `huggingface` metadata `datasets` uses to decode the image columns.
pub fn data_schema(path: &Path, info: &DatasetInfo) -> Result<(SchemaRef, Vec<KeyValue>)> {
    let mut fields = Vec::new();
    let mut hf = serde_json::Map::new();
    for (key, feature) in data_features(info) {
        fields.push(Field::new(key, arrow_type(path, key, feature)?, true));
        hf.insert(key.clone(), hf_feature(feature));
    }
    let hf_meta = json!({"info": {"features": hf}}).to_string();
    let metadata = std::collections::HashMap::from([("huggingface".to_string(), hf_meta.clone())]);
    let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
    Ok((
        schema,
        vec![KeyValue::new("huggingface".to_string(), hf_meta)],
    ))
}

/// Features stored in the data parquet files, in column order: user features first, then
/// the default bookkeeping features (as lerobot orders them).
pub fn data_features(info: &DatasetInfo) -> Vec<(&String, &FeatureInfo)> {
    let mut out: Vec<(&String, &FeatureInfo)> = info
        .features
        .iter()
        .filter(|(k, f)| f.dtype != "video" && !DEFAULT_FEATURE_KEYS.contains(&k.as_str()))
        .collect();
    for key in DEFAULT_FEATURE_KEYS {
        if let Some((k, f)) = info.features.get_key_value(key) {
            out.push((k, f));
        }
    }
    out
}

/// Whether a column's arrow type can hold a feature (lenient about list flavours and
/// integer/float widths, strict about kind and length).
/// The flat values of a list column whose rows all have the same length, and that length.
fn list_values<O: OffsetSizeTrait>(
    path: &Path,
    name: &str,
    a: &GenericListArray<O>,
) -> Result<(ArrayRef, usize)> {
    let offsets = a.value_offsets();
    let w = if a.is_empty() {
        0
    } else {
        (offsets[1] - offsets[0]).as_usize()
    };
    if offsets.windows(2).any(|o| (o[1] - o[0]).as_usize() != w) {
        return Err(DatasetError::schema(
            path,
            format!("column {name:?} has rows of different lengths"),
        ));
    }
    let start = offsets[0].as_usize();
    let end = offsets[offsets.len() - 1].as_usize();
    Ok((a.values().slice(start, end - start), w))
}

/// Every feature column `info.json` declares must be in a data file's schema, with a
/// compatible type; the error names the file and the column.
pub fn check_data_schema(path: &Path, info: &DatasetInfo, schema: &Schema) -> Result<()> {
    for (key, feature) in data_features(info) {
        let field = schema.field_with_name(key).map_err(|_| {
            DatasetError::schema(path, format!("column {key:?} (from info.json) is missing"))
        })?;
        if !type_compatible(feature, field.data_type()) {
            return Err(DatasetError::schema(
                path,
                format!(
                    "column {key:?} has type {} but info.json declares dtype {} shape {:?}",
                    field.data_type(),
                    feature.dtype,
                    feature.shape
                ),
            ));
        }
    }
    Ok(())
}

pub fn type_compatible(info: &FeatureInfo, dt: &DataType) -> bool {
    fn numeric(dtype: &str, dt: &DataType) -> bool {
        match dtype {
            "float32" | "float64" => matches!(dt, DataType::Float32 | DataType::Float64),
            "int64" | "int32" => matches!(
                dt,
                DataType::Int64 | DataType::Int32 | DataType::UInt32 | DataType::UInt64
            ),
            "bool" => matches!(dt, DataType::Boolean),
            "string" => matches!(dt, DataType::Utf8 | DataType::LargeUtf8),
            _ => false,
        }
    }
    if info.is_image() {
        return match dt {
            DataType::Struct(fields) => fields.iter().any(|f| f.name() == "bytes"),
            _ => false,
        };
    }
    if info.shape == [1] {
        return numeric(&info.dtype, dt)
            || matches!(dt, DataType::FixedSizeList(f, 1) if numeric(&info.dtype, f.data_type()));
    }
    match dt {
        DataType::FixedSizeList(f, n) => {
            *n as usize == info.numel() && numeric(&info.dtype, f.data_type())
        }
        DataType::List(f) | DataType::LargeList(f) => numeric(&info.dtype, f.data_type()),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Column access helpers.

pub fn column<'a>(path: &Path, batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| DatasetError::schema(path, format!("column {name:?} is missing")))
}

/// Integer column as `i64` (accepts every integer width lerobot/pandas produce).
pub fn column_i64(path: &Path, batch: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    array_i64(path, name, column(path, batch, name)?.as_ref())
}

pub fn array_i64(path: &Path, name: &str, array: &dyn Array) -> Result<Vec<i64>> {
    let any = array.as_any();
    let out: Option<Vec<i64>> = if let Some(a) = any.downcast_ref::<Int64Array>() {
        Some(a.iter().map(|v| v.unwrap_or(-1)).collect())
    } else if let Some(a) = any.downcast_ref::<Int32Array>() {
        Some(a.iter().map(|v| v.map(i64::from).unwrap_or(-1)).collect())
    } else if let Some(a) = any.downcast_ref::<UInt64Array>() {
        Some(
            a.iter()
                .map(|v| v.map(|v| v as i64).unwrap_or(-1))
                .collect(),
        )
    } else {
        any.downcast_ref::<UInt32Array>()
            .map(|a| a.iter().map(|v| v.map(i64::from).unwrap_or(-1)).collect())
    };
    let out = out.ok_or_else(|| {
        DatasetError::schema(
            path,
            format!(
                "column {name:?} has type {}, expected an integer",
                array.data_type()
            ),
        )
    })?;
    if array.null_count() > 0 {
        return Err(DatasetError::schema(
            path,
            format!("column {name:?} has null values"),
        ));
    }
    Ok(out)
}

/// Float column as `f64` (video timestamps: `f32` is too coarse for long files).
pub fn column_f64(path: &Path, batch: &RecordBatch, name: &str) -> Result<Vec<f64>> {
    let array = column(path, batch, name)?;
    if array.null_count() > 0 {
        return Err(DatasetError::schema(
            path,
            format!("column {name:?} has null values"),
        ));
    }
    if let Some(a) = array.as_any().downcast_ref::<Float64Array>() {
        return Ok(a.values().to_vec());
    }
    let (values, _) = flatten_f32(path, name, array.as_ref())?;
    Ok(values.into_iter().map(f64::from).collect())
}

/// Float column (scalar or length-1 list) as `f32`.
pub fn column_f32(path: &Path, batch: &RecordBatch, name: &str) -> Result<Vec<f32>> {
    let array = column(path, batch, name)?;
    let (values, _) = flatten_f32(path, name, array.as_ref())?;
    Ok(values)
}

/// A numeric column (scalar, fixed-size list or list) flattened to `f32`, with the
/// per-row length (all rows must have the same length).
pub fn flatten_f32(path: &Path, name: &str, array: &dyn Array) -> Result<(Vec<f32>, usize)> {
    let any = array.as_any();
    let bad = || {
        DatasetError::schema(
            path,
            format!(
                "column {name:?} has type {}, expected float values",
                array.data_type()
            ),
        )
    };
    if array.null_count() > 0 {
        return Err(DatasetError::schema(
            path,
            format!("column {name:?} has null values"),
        ));
    }
    if let Some(a) = any.downcast_ref::<Float32Array>() {
        return Ok((a.values().to_vec(), 1));
    }
    if let Some(a) = any.downcast_ref::<Float64Array>() {
        return Ok((a.values().iter().map(|&v| v as f32).collect(), 1));
    }
    if any.downcast_ref::<Int64Array>().is_some() || any.downcast_ref::<Int32Array>().is_some() {
        let v = array_i64(path, name, array)?;
        return Ok((v.into_iter().map(|x| x as f32).collect(), 1));
    }
    let (child, width): (ArrayRef, usize) =
        if let Some(a) = any.downcast_ref::<FixedSizeListArray>() {
            let w = a.value_length() as usize;
            (a.values().slice(a.offset() * w, a.len() * w), w)
        } else if let Some(a) = any.downcast_ref::<ListArray>() {
            list_values(path, name, a)?
        } else if let Some(a) = any.downcast_ref::<LargeListArray>() {
            list_values(path, name, a)?
        } else {
            return Err(bad());
        };
    let (values, inner) = flatten_f32(path, name, child.as_ref())?;
    if inner != 1 {
        return Err(bad());
    }
    Ok((values, width))
}

/// String column (utf8 or large utf8).
pub fn column_strings(path: &Path, batch: &RecordBatch, name: &str) -> Result<Vec<String>> {
    array_strings(path, name, column(path, batch, name)?.as_ref())
}

pub fn array_strings(path: &Path, name: &str, array: &dyn Array) -> Result<Vec<String>> {
    let any = array.as_any();
    if let Some(a) = any.downcast_ref::<StringArray>() {
        return Ok(a
            .iter()
            .map(|s| s.unwrap_or_default().to_string())
            .collect());
    }
    if let Some(a) = any.downcast_ref::<LargeStringArray>() {
        return Ok(a
            .iter()
            .map(|s| s.unwrap_or_default().to_string())
            .collect());
    }
    Err(DatasetError::schema(
        path,
        format!(
            "column {name:?} has type {}, expected strings",
            array.data_type()
        ),
    ))
}

/// A list-of-strings column (episode `tasks`).
pub fn column_string_lists(
    path: &Path,
    batch: &RecordBatch,
    name: &str,
) -> Result<Vec<Vec<String>>> {
    let array = column(path, batch, name)?;
    let any = array.as_any();
    let mut out = Vec::with_capacity(array.len());
    if let Some(a) = any.downcast_ref::<ListArray>() {
        for i in 0..a.len() {
            out.push(array_strings(path, name, a.value(i).as_ref())?);
        }
    } else if let Some(a) = any.downcast_ref::<LargeListArray>() {
        for i in 0..a.len() {
            out.push(array_strings(path, name, a.value(i).as_ref())?);
        }
    } else {
        // Some converters store a single task string per episode.
        for s in array_strings(path, name, array.as_ref())? {
            out.push(vec![s]);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// meta/tasks.parquet, meta/subtasks.parquet

/// A string table of `meta/`: the strings as the pandas index `name`, their position in the
/// int64 column `index_column` (`tasks.parquet`: `task` / `task_index`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StringTable {
    /// Path relative to the dataset root.
    pub path: &'static str,
    /// Name of the string column (the pandas index).
    pub name: &'static str,
    /// Name of the int64 position column.
    pub index_column: &'static str,
}

/// `meta/tasks.parquet`: task strings (pandas index `task`) and `task_index`.
pub const TASKS_TABLE: StringTable = StringTable {
    path: TASKS_PATH,
    name: "task",
    index_column: "task_index",
};

/// `meta/subtasks.parquet`: sub-task sentences (pandas index `subtask`) and `subtask_index`.
pub const SUBTASKS_TABLE: StringTable = StringTable {
    path: SUBTASKS_PATH,
    name: "subtask",
    index_column: SUBTASK_KEY,
};

impl StringTable {
    /// The pandas metadata that makes `pd.read_parquet` restore `name` as the index, exactly
    /// as `DataFrame({index_column: ...}, index=pd.Index(strings, name=name)).to_parquet()`
    /// does.
    fn pandas_metadata(&self) -> String {
        json!({
            "index_columns": [self.name],
            "column_indexes": [{
                "name": null,
                "field_name": null,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"}
            }],
            "columns": [
                {"name": self.index_column, "field_name": self.index_column,
                 "pandas_type": "int64", "numpy_type": "int64", "metadata": null},
                {"name": self.name, "field_name": self.name, "pandas_type": "unicode",
                 "numpy_type": "object", "metadata": null}
            ],
            "creator": {"library": "pyarrow", "version": "17.0.0"},
            "pandas_version": "2.2.3"
        })
        .to_string()
    }

    /// Write the table (strings in index order) atomically.
    pub fn write(&self, root: &Path, strings: &[String]) -> Result<()> {
        let path = root.join(self.path);
        let pandas = self.pandas_metadata();
        let schema = Arc::new(Schema::new_with_metadata(
            vec![
                Field::new(self.index_column, DataType::Int64, true),
                Field::new(self.name, DataType::Utf8, true),
            ],
            std::collections::HashMap::from([("pandas".to_string(), pandas.clone())]),
        ));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..strings.len() as i64)),
                Arc::new(StringArray::from_iter_values(strings.iter())),
            ],
        )
        .at(&path)?;
        write_parquet_atomic(
            &path,
            schema,
            &[batch],
            vec![KeyValue::new("pandas".to_string(), pandas)],
        )
    }

    /// Read the table: the strings ordered by their index, which must be `0..n`.
    pub fn read(&self, root: &Path) -> Result<Vec<String>> {
        let path = root.join(self.path);
        let (schema, batches) = read_parquet(&path)?;
        let name_col = [self.name, "__index_level_0__"]
            .into_iter()
            .find(|c| schema.field_with_name(c).is_ok())
            .ok_or_else(|| {
                DatasetError::schema(
                    &path,
                    format!("no {:?} column (or pandas index)", self.name),
                )
            })?;
        let mut pairs = Vec::new();
        for batch in &batches {
            let idx = column_i64(&path, batch, self.index_column)?;
            let names = column_strings(&path, batch, name_col)?;
            pairs.extend(idx.into_iter().zip(names));
        }
        pairs.sort_by_key(|(i, _)| *i);
        for (expected, (i, _)) in pairs.iter().enumerate() {
            if *i != expected as i64 {
                return Err(DatasetError::inconsistent(
                    &path,
                    format!("{} values are not 0..{}", self.index_column, pairs.len()),
                ));
            }
        }
        Ok(pairs.into_iter().map(|(_, t)| t).collect())
    }
}

/// Write `meta/tasks.parquet` (task strings in task-index order).
pub fn write_tasks(root: &Path, tasks: &[String]) -> Result<()> {
    TASKS_TABLE.write(root, tasks)
}

/// Read `meta/tasks.parquet`: the task strings indexed by `task_index`.
pub fn read_tasks(root: &Path) -> Result<Vec<String>> {
    TASKS_TABLE.read(root)
}

/// Write `meta/subtasks.parquet` (sub-task sentences in subtask-index order).
pub fn write_subtasks(root: &Path, subtasks: &[String]) -> Result<()> {
    SUBTASKS_TABLE.write(root, subtasks)
}

/// Read `meta/subtasks.parquet`: the sub-task sentences indexed by `subtask_index`.
pub fn read_subtasks(root: &Path) -> Result<Vec<String>> {
    SUBTASKS_TABLE.read(root)
}

// ---------------------------------------------------------------------------------------
// meta/episodes

/// One row of `meta/episodes/*/*.parquet` (the columns this crate uses).
#[derive(Clone, Debug, PartialEq)]
pub struct EpisodeInfo {
    pub episode_index: usize,
    pub tasks: Vec<String>,
    pub length: usize,
    pub data_chunk_index: usize,
    pub data_file_index: usize,
    pub dataset_from_index: usize,
    pub dataset_to_index: usize,
    /// The episode metadata file this row was read from.
    pub meta_chunk_index: usize,
    pub meta_file_index: usize,
    /// Where each video feature's frames of this episode are (`videos/<key>/...` columns),
    /// by feature key; empty for datasets without videos.
    pub videos: BTreeMap<String, VideoSegment>,
}

/// Where an episode lies in the video file of one camera.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VideoSegment {
    pub chunk_index: usize,
    pub file_index: usize,
    /// Presentation time of the episode's first frame in the file, in seconds.
    pub from_timestamp: f64,
    /// End of the episode in the file (`from_timestamp` + its duration), in seconds.
    pub to_timestamp: f64,
}

/// All `*/*.parquet` files under `dir`, sorted.
pub fn nested_parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    nested_files(dir, ".parquet")
}

/// All `*/*{suffix}` files under `dir` (`chunk-*/file-*.parquet`, `…mp4`), hidden (temporary)
/// ones left out, sorted.
pub fn nested_files(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(DatasetError::io(dir, e)),
    };
    for chunk in entries {
        let chunk = chunk.at(dir)?.path();
        if !chunk.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&chunk).at(&chunk)? {
            let file = file.at(&chunk)?.path();
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| n.ends_with(suffix) && !n.starts_with('.')) {
                out.push(file);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `chunk-XXX/file-YYY.parquet` → (XXX, YYY).
pub fn parse_chunk_file(path: &Path) -> Option<(usize, usize)> {
    let file = path
        .file_stem()?
        .to_str()?
        .strip_prefix("file-")?
        .parse()
        .ok()?;
    let chunk = path
        .parent()?
        .file_name()?
        .to_str()?
        .strip_prefix("chunk-")?
        .parse()
        .ok()?;
    Some((chunk, file))
}

/// Read every episode row, sorted by `episode_index`.
pub fn read_episodes(root: &Path) -> Result<Vec<EpisodeInfo>> {
    let dir = root.join(EPISODES_DIR);
    let files = nested_parquet_files(&dir)?;
    if files.is_empty() {
        return Err(DatasetError::Missing {
            path: dir,
            what: "no episode metadata parquet files".into(),
        });
    }
    let mut out = Vec::new();
    for path in files {
        let (meta_chunk, meta_file) = parse_chunk_file(&path).unwrap_or((0, 0));
        let (schema, batches) = read_parquet(&path)?;
        let video_keys: Vec<String> = schema
            .fields()
            .iter()
            .filter_map(|f| {
                f.name()
                    .strip_prefix("videos/")?
                    .strip_suffix("/chunk_index")
                    .map(str::to_string)
            })
            .collect();
        for batch in &batches {
            // Per video key: chunk index, file index, from and to timestamps of every row.
            let mut videos = Vec::new();
            for key in &video_keys {
                let col = |what: &str| format!("videos/{key}/{what}");
                let ints = (
                    column_i64(&path, batch, &col("chunk_index"))?,
                    column_i64(&path, batch, &col("file_index"))?,
                );
                let times = (
                    column_f64(&path, batch, &col("from_timestamp"))?,
                    column_f64(&path, batch, &col("to_timestamp"))?,
                );
                videos.push((key, ints, times));
            }
            let idx = column_i64(&path, batch, "episode_index")?;
            let tasks = column_string_lists(&path, batch, "tasks")?;
            let length = column_i64(&path, batch, "length")?;
            let chunk = column_i64(&path, batch, "data/chunk_index")?;
            let file = column_i64(&path, batch, "data/file_index")?;
            let from = column_i64(&path, batch, "dataset_from_index")?;
            let to = column_i64(&path, batch, "dataset_to_index")?;
            for i in 0..batch.num_rows() {
                let nonneg = [idx[i], length[i], chunk[i], file[i], from[i], to[i]];
                if nonneg.iter().any(|v| *v < 0) {
                    return Err(DatasetError::inconsistent(
                        &path,
                        format!("row {i} has negative or null indices"),
                    ));
                }
                out.push(EpisodeInfo {
                    episode_index: idx[i] as usize,
                    tasks: tasks[i].clone(),
                    length: length[i] as usize,
                    data_chunk_index: chunk[i] as usize,
                    data_file_index: file[i] as usize,
                    dataset_from_index: from[i] as usize,
                    dataset_to_index: to[i] as usize,
                    meta_chunk_index: meta_chunk,
                    meta_file_index: meta_file,
                    videos: BTreeMap::new(),
                });
                let Some(e) = out.last_mut() else { continue };
                for (key, (chunk, file), (from, to)) in &videos {
                    if chunk[i] < 0 || file[i] < 0 || !(from[i] >= 0.0 && to[i] >= from[i]) {
                        return Err(DatasetError::inconsistent(
                            &path,
                            format!(
                                "row {i}: videos/{key}/... has chunk {}, file {}, timestamps {}..{}",
                                chunk[i], file[i], from[i], to[i]
                            ),
                        ));
                    }
                    e.videos.insert(
                        key.to_string(),
                        VideoSegment {
                            chunk_index: chunk[i] as usize,
                            file_index: file[i] as usize,
                            from_timestamp: from[i],
                            to_timestamp: to[i],
                        },
                    );
                }
            }
        }
    }
    out.sort_by_key(|e| e.episode_index);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_lerobot_templates() {
        assert_eq!(
            format_path(DEFAULT_DATA_PATH, 1, 23),
            "data/chunk-001/file-023.parquet"
        );
        assert_eq!(format_path("a/{chunk_index}/{x}", 7, 0), "a/7/{x}");
        assert_eq!(next_chunk_file(0, 998, 1000), (0, 999));
        assert_eq!(next_chunk_file(0, 999, 1000), (1, 0));
    }
}
