//! Vision-language question/answer data (`vla vqa collect`) in the Hugging Face `datasets`
//! Parquet layout, so `datasets.load_dataset("parquet", data_files=…)` returns PIL images
//! and pyarrow reads it as it is:
//!
//! ```text
//! data/train-00000-of-00001.parquet   one row per question: image, wrist_image
//!                                     (struct<bytes: PNG, path: null>), question, answer,
//!                                     kind, words (list<string>), held_out, scene_seed, scene
//! ```
//!
//! The schema carries the `huggingface` metadata `datasets` writes (the `Image` features are
//! what make it decode the structs). A scene's questions share its images: the image columns
//! are dictionary-encoded, so each PNG is stored once per row group, not once per question.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Int64Array, RecordBatch, StringArray, StructArray,
};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use image::RgbImage;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::{AtPath, DatasetError, Result};
use crate::format::{self, column, column_i64, column_string_lists, column_strings};

/// The one data file, named as `datasets` names a single-shard train split.
pub const DATA_FILE: &str = "data/train-00000-of-00001.parquet";
/// Image columns: the front camera (what pointing answers refer to) and the wrist camera.
pub const IMAGE_COLUMNS: [&str; 2] = ["image", "wrist_image"];
/// Scenes per row group: bounds the writer's memory; images repeat only within one.
const SCENES_PER_ROW_GROUP: usize = 64;

/// Columns in order with their `datasets` feature (`None`: an `Image`).
const FEATURES: [(&str, Option<&str>); 9] = [
    ("image", None),
    ("wrist_image", None),
    ("question", Some("string")),
    ("answer", Some("string")),
    ("kind", Some("string")),
    ("words", Some("list<string>")),
    ("held_out", Some("bool")),
    ("scene_seed", Some("int64")),
    ("scene", Some("int64")),
];

/// The `datasets.Image` storage: `struct<bytes: binary, path: string>`.
fn image_fields() -> Fields {
    vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]
    .into()
}

/// The Arrow schema with its `huggingface` metadata, the JSON spelled as `datasets` 4
/// (Python `json.dumps`) writes it.
fn schema() -> (SchemaRef, String) {
    let mut fields = Vec::new();
    let mut features = Vec::new();
    for (name, dtype) in FEATURES {
        let (data_type, feature) = match dtype {
            None => (
                DataType::Struct(image_fields()),
                r#"{"_type": "Image"}"#.to_string(),
            ),
            Some("list<string>") => (
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                r#"{"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"}"#.into(),
            ),
            Some(d) => (
                match d {
                    "string" => DataType::Utf8,
                    "bool" => DataType::Boolean,
                    _ => DataType::Int64,
                },
                format!(r#"{{"dtype": "{d}", "_type": "Value"}}"#),
            ),
        };
        fields.push(Field::new(name, data_type, true));
        features.push(format!("\"{name}\": {feature}"));
    }
    let hf = format!(r#"{{"info": {{"features": {{{}}}}}}}"#, features.join(", "));
    let metadata = std::collections::HashMap::from([("huggingface".to_string(), hf.clone())]);
    (Arc::new(Schema::new_with_metadata(fields, metadata)), hf)
}

/// One question about a scene, as the writer takes it.
#[derive(Clone, Copy, Debug)]
pub struct VqaQuestion<'a> {
    pub question: &'a str,
    pub answer: &'a str,
    /// `colour`, `object`, `point`, `count`, `contains` or `caption`.
    pub kind: &'a str,
    /// Colour names and canonical nouns the pair involves.
    pub words: &'a [String],
    /// Whether it involves a word the robot data's unseen split holds out.
    pub held_out: bool,
}

/// A [`VqaQuestion`] kept until its row group is written.
struct OwnedQuestion {
    question: String,
    answer: String,
    kind: String,
    words: Vec<String>,
    held_out: bool,
}

struct PendingScene {
    pngs: [Vec<u8>; 2],
    seed: u64,
    index: usize,
    questions: Vec<OwnedQuestion>,
}

/// Writes a VQA dataset: scenes stream into a temporary file, renamed into place by
/// [`VqaWriter::finish`], so a crash never leaves a half-written data file behind.
pub struct VqaWriter {
    path: PathBuf,
    tmp: PathBuf,
    schema: SchemaRef,
    writer: Option<ArrowWriter<File>>,
    pending: Vec<PendingScene>,
    rows: usize,
}

impl VqaWriter {
    /// Start a dataset in `dir`, which must not exist or be empty.
    pub fn create(dir: impl AsRef<Path>) -> Result<Self> {
        let root = dir.as_ref().to_path_buf();
        if root.exists() {
            let mut entries = std::fs::read_dir(&root).at(&root)?;
            if entries.next().is_some() {
                return Err(DatasetError::usage(
                    &root,
                    "directory is not empty; choose a new output directory",
                ));
            }
        }
        let path = root.join(DATA_FILE);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        let tmp = format::tmp_path(&path);
        let (schema, hf) = schema();
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(Some(vec![KeyValue::new("huggingface".into(), hf)]));
        for name in IMAGE_COLUMNS {
            // PNG does not compress further; the dictionary stores a scene's image once for
            // all its questions (a row group's images must fit in one dictionary page).
            let col = ColumnPath::new(vec![name.into(), "bytes".into()]);
            props = props
                .set_column_dictionary_enabled(col.clone(), true)
                .set_column_dictionary_page_size_limit(col.clone(), 256 << 20)
                .set_column_statistics_enabled(col.clone(), EnabledStatistics::None)
                .set_column_compression(col, Compression::UNCOMPRESSED);
        }
        let file = File::create(&tmp).at(&tmp)?;
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props.build())).at(&tmp)?;
        Ok(VqaWriter {
            path,
            tmp,
            schema,
            writer: Some(writer),
            pending: Vec::new(),
            rows: 0,
        })
    }

    /// The data file this writer commits to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows (questions) added so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Add a scene's two camera images and its questions.
    pub fn add_scene(
        &mut self,
        front: &RgbImage,
        wrist: &RgbImage,
        scene_seed: u64,
        scene: usize,
        questions: &[VqaQuestion<'_>],
    ) -> Result<()> {
        let (a, b) = rayon::join(|| png(&self.tmp, front), || png(&self.tmp, wrist));
        self.pending.push(PendingScene {
            pngs: [a?, b?],
            seed: scene_seed,
            index: scene,
            questions: questions
                .iter()
                .map(|q| OwnedQuestion {
                    question: q.question.to_string(),
                    answer: q.answer.to_string(),
                    kind: q.kind.to_string(),
                    words: q.words.to_vec(),
                    held_out: q.held_out,
                })
                .collect(),
        });
        self.rows += questions.len();
        if self.pending.len() >= SCENES_PER_ROW_GROUP {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Write the pending scenes as one row group.
    fn write_pending(&mut self) -> Result<()> {
        let rows: Vec<(&PendingScene, &OwnedQuestion)> = self
            .pending
            .iter()
            .flat_map(|s| s.questions.iter().map(move |q| (s, q)))
            .collect();
        if rows.is_empty() {
            self.pending.clear();
            return Ok(());
        }
        let images = |cam: usize| -> ArrayRef {
            let bytes = BinaryArray::from_iter_values(rows.iter().map(|(s, _)| &s.pngs[cam]));
            let n = bytes.len();
            Arc::new(StructArray::new(
                image_fields(),
                vec![Arc::new(bytes), Arc::new(StringArray::new_null(n))],
                None,
            ))
        };
        let strings = |f: fn(&OwnedQuestion) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(_, q)| f(q)),
            ))
        };
        let mut words = ListBuilder::new(StringBuilder::new());
        for (_, q) in &rows {
            for w in &q.words {
                words.values().append_value(w);
            }
            words.append(true);
        }
        let columns: Vec<ArrayRef> = vec![
            images(0),
            images(1),
            strings(|q| q.question.as_str()),
            strings(|q| q.answer.as_str()),
            strings(|q| q.kind.as_str()),
            Arc::new(words.finish()),
            Arc::new(BooleanArray::from(
                rows.iter().map(|(_, q)| q.held_out).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|(s, _)| s.seed as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|(s, _)| s.index as i64),
            )),
        ];
        let batch = RecordBatch::try_new(self.schema.clone(), columns).at(&self.tmp)?;
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| DatasetError::usage(&self.path, "writer already finished"))?;
        writer.write(&batch).at(&self.tmp)?;
        writer.flush().at(&self.tmp)?;
        self.pending.clear();
        Ok(())
    }

    /// Write what is pending, fsync, and rename the file into place. Returns its path.
    pub fn finish(mut self) -> Result<PathBuf> {
        self.write_pending()?;
        let writer = self
            .writer
            .take()
            .ok_or_else(|| DatasetError::usage(&self.path, "writer already finished"))?;
        let file = writer.into_inner().at(&self.tmp)?;
        file.sync_all().at(&self.tmp)?;
        format::commit_tmp(&self.tmp, &self.path)?;
        Ok(self.path.clone())
    }
}

impl Drop for VqaWriter {
    /// Not finished (an error, Ctrl-C): nothing is committed, the temporary file goes.
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn png(path: &Path, img: &RgbImage) -> Result<Vec<u8>> {
    crate::writer::encode_png(path, img)
}

// ---------------------------------------------------------------------------------------
// Reading

/// One question with its scene's decoded images.
#[derive(Clone, Debug, PartialEq)]
pub struct VqaRow {
    pub image: RgbImage,
    pub wrist_image: RgbImage,
    pub question: String,
    pub answer: String,
    pub kind: String,
    pub words: Vec<String>,
    pub held_out: bool,
    pub scene_seed: u64,
    pub scene: usize,
}

/// A VQA dataset read whole into memory.
#[derive(Clone, Debug)]
pub struct VqaDataset {
    pub root: PathBuf,
    pub rows: Vec<VqaRow>,
}

/// The Parquet files of `dir/data/` (hidden temporary files excluded), in name order.
pub fn data_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let data = dir.join("data");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&data)
        .at(&data)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "parquet")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DatasetError::Missing {
            path: data,
            what: "no .parquet files".into(),
        });
    }
    Ok(files)
}

/// Whether `dir` holds a VQA dataset: no LeRobot `meta/info.json`, and Parquet files in
/// `data/` with the `huggingface` metadata and question/answer columns.
pub fn is_vqa_dataset(dir: &Path) -> bool {
    if dir.join("meta/info.json").exists() {
        return false;
    }
    let Some(first) = data_files(dir).ok().and_then(|f| f.into_iter().next()) else {
        return false;
    };
    let Ok(builder) = File::open(&first).map(ParquetRecordBatchReaderBuilder::try_new) else {
        return false;
    };
    builder.is_ok_and(|b| {
        let s = b.schema();
        s.metadata.contains_key("huggingface")
            && s.field_with_name("question").is_ok()
            && s.field_with_name("answer").is_ok()
    })
}

fn open_columns(
    path: &Path,
    names: &[&str],
    limit: Option<usize>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let file = File::open(path).at(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).at(path)?;
    let schema = builder.schema().clone();
    for name in names {
        schema
            .field_with_name(name)
            .map_err(|_| DatasetError::schema(path, format!("column {name:?} is missing")))?;
    }
    let mask = ProjectionMask::columns(builder.parquet_schema(), names.iter().copied());
    let mut builder = builder.with_projection(mask).with_batch_size(4096);
    if let Some(n) = limit {
        builder = builder.with_limit(n);
    }
    let mut batches = Vec::new();
    for batch in builder.build().at(path)? {
        batches.push(batch.at(path)?);
    }
    Ok((schema, batches))
}

fn bools(path: &Path, batch: &RecordBatch, name: &str) -> Result<Vec<bool>> {
    let array = column(path, batch, name)?;
    let a = array
        .as_any()
        .downcast_ref::<BooleanArray>()
        .filter(|a| a.null_count() == 0)
        .ok_or_else(|| {
            DatasetError::schema(
                path,
                format!(
                    "column {name:?} has type {} or nulls, expected bool",
                    array.data_type()
                ),
            )
        })?;
    Ok(a.iter().map(|v| v.unwrap_or(false)).collect())
}

/// The PNG bytes of an `Image` struct column, row by row.
fn image_bytes<'a>(path: &Path, batch: &'a RecordBatch, name: &str) -> Result<&'a BinaryArray> {
    let array = column(path, batch, name)?;
    array
        .as_any()
        .downcast_ref::<StructArray>()
        .and_then(|s| s.column_by_name("bytes"))
        .and_then(|b| b.as_any().downcast_ref::<BinaryArray>())
        .ok_or_else(|| {
            DatasetError::schema(
                path,
                format!(
                    "column {name:?} has type {}, expected struct<bytes: binary, path: string>",
                    array.data_type()
                ),
            )
        })
}

impl VqaDataset {
    /// Read every row of every data file, images decoded.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let root = dir.as_ref().to_path_buf();
        let mut rows = Vec::new();
        for path in data_files(&root)? {
            let names: Vec<&str> = FEATURES.iter().map(|f| f.0).collect();
            let (_, batches) = open_columns(&path, &names, None)?;
            for batch in &batches {
                let question = column_strings(&path, batch, "question")?;
                let answer = column_strings(&path, batch, "answer")?;
                let kind = column_strings(&path, batch, "kind")?;
                let words = column_string_lists(&path, batch, "words")?;
                let held_out = bools(&path, batch, "held_out")?;
                let seed = column_i64(&path, batch, "scene_seed")?;
                let scene = column_i64(&path, batch, "scene")?;
                let cams = [
                    image_bytes(&path, batch, IMAGE_COLUMNS[0])?,
                    image_bytes(&path, batch, IMAGE_COLUMNS[1])?,
                ];
                // A scene's rows share their images: decode each once.
                let mut last: [Option<(&[u8], RgbImage)>; 2] = [None, None];
                let mut decode = |cam: usize, i: usize| -> Result<RgbImage> {
                    let name = IMAGE_COLUMNS[cam];
                    if cams[cam].is_null(i) {
                        return Err(DatasetError::schema(
                            &path,
                            format!("column {name:?} row {i} has no image"),
                        ));
                    }
                    let b = cams[cam].value(i);
                    if let Some((_, img)) = last[cam].as_ref().filter(|(prev, _)| *prev == b) {
                        return Ok(img.clone());
                    }
                    let img = image::load_from_memory(b)
                        .map_err(|e| DatasetError::Image {
                            path: path.clone(),
                            detail: format!("column {name:?} row {i}: {e}"),
                        })?
                        .to_rgb8();
                    last[cam] = Some((b, img.clone()));
                    Ok(img)
                };
                for i in 0..batch.num_rows() {
                    let image = decode(0, i)?;
                    let wrist_image = decode(1, i)?;
                    rows.push(VqaRow {
                        image,
                        wrist_image,
                        question: question[i].clone(),
                        answer: answer[i].clone(),
                        kind: kind[i].clone(),
                        words: words[i].clone(),
                        held_out: held_out[i],
                        scene_seed: seed[i] as u64,
                        scene: scene[i] as usize,
                    });
                }
            }
        }
        Ok(VqaDataset { root, rows })
    }
}

/// What `vla dataset info` says about a VQA dataset (read without decoding images).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct VqaSummary {
    pub files: Vec<PathBuf>,
    pub rows: usize,
    pub scenes: usize,
    /// Rows per kind of question.
    pub kinds: BTreeMap<String, usize>,
    /// Rows involving a held-out word.
    pub held_out: usize,
    /// Width and height of the first front image.
    pub image_size: Option<[u32; 2]>,
}

/// Count rows, scenes, kinds and held-out rows of the VQA dataset in `dir`.
pub fn summary(dir: &Path) -> Result<VqaSummary> {
    let mut s = VqaSummary::default();
    let mut scenes = BTreeSet::new();
    for path in data_files(dir)? {
        let (_, batches) = open_columns(&path, &["kind", "held_out", "scene"], None)?;
        for batch in &batches {
            for k in column_strings(&path, batch, "kind")? {
                *s.kinds.entry(k).or_default() += 1;
            }
            s.held_out += bools(&path, batch, "held_out")?
                .into_iter()
                .filter(|h| *h)
                .count();
            scenes.extend(column_i64(&path, batch, "scene")?);
            s.rows += batch.num_rows();
        }
        if s.image_size.is_none() {
            let (_, first) = open_columns(&path, &[IMAGE_COLUMNS[0]], Some(1))?;
            if let Some(batch) = first.first().filter(|b| b.num_rows() > 0) {
                let bytes = image_bytes(&path, batch, IMAGE_COLUMNS[0])?;
                let img =
                    image::load_from_memory(bytes.value(0)).map_err(|e| DatasetError::Image {
                        path: path.clone(),
                        detail: format!("column \"image\" row 0: {e}"),
                    })?;
                s.image_size = Some([img.width(), img.height()]);
            }
        }
        s.files.push(path);
    }
    s.scenes = scenes.len();
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_huggingface_metadata_is_spelled_as_datasets_writes_it() {
        let (schema, hf) = schema();
        assert!(hf.starts_with(
            r#"{"info": {"features": {"image": {"_type": "Image"}, "wrist_image": {"_type": "Image"}, "question": {"dtype": "string", "_type": "Value"}, "#
        ));
        assert!(hf.contains(
            r#""words": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"}, "held_out": {"dtype": "bool", "_type": "Value"}, "#
        ));
        assert!(hf.ends_with(r#""scene": {"dtype": "int64", "_type": "Value"}}}}"#));
        let parsed: serde_json::Value = serde_json::from_str(&hf).unwrap();
        assert_eq!(parsed["info"]["features"].as_object().unwrap().len(), 9);
        assert_eq!(schema.fields().len(), 9);
    }

    #[test]
    fn written_rows_read_back_and_a_failed_writer_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("vla-vqa-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let front = RgbImage::from_pixel(8, 6, image::Rgb([200, 10, 10]));
        let wrist = RgbImage::from_pixel(8, 6, image::Rgb([10, 10, 200]));
        let words = vec!["red".to_string(), "cube".to_string()];
        let q = |question, answer, kind| VqaQuestion {
            question,
            answer,
            kind,
            words: &words,
            held_out: kind == "point",
        };
        {
            let mut w = VqaWriter::create(&dir).unwrap();
            w.add_scene(&front, &wrist, 7, 0, &[q("a?", "b", "colour")])
                .unwrap();
            // Dropped unfinished: no data file, no temporary file.
        }
        assert!(!is_vqa_dataset(&dir));
        assert_eq!(std::fs::read_dir(dir.join("data")).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
        let mut w = VqaWriter::create(&dir).unwrap();
        for scene in 0..70 {
            let qs = [q("what?", "red", "colour"), q("where?", "1 2", "point")];
            w.add_scene(&front, &wrist, 1 << 62, scene, &qs).unwrap();
        }
        let path = w.finish().unwrap();
        assert!(path.ends_with(DATA_FILE));
        assert!(is_vqa_dataset(&dir));
        let ds = VqaDataset::open(&dir).unwrap();
        assert_eq!(ds.rows.len(), 140);
        let r = &ds.rows[139];
        assert_eq!((r.scene, r.scene_seed, r.held_out), (69, 1 << 62, true));
        assert_eq!((r.answer.as_str(), r.kind.as_str()), ("1 2", "point"));
        assert_eq!(
            (&r.image, &r.wrist_image, &r.words),
            (&front, &wrist, &words)
        );
        let s = summary(&dir).unwrap();
        assert_eq!((s.rows, s.scenes, s.held_out), (140, 70, 70));
        assert_eq!(s.image_size, Some([8, 6]));
        assert!(
            VqaWriter::create(&dir).is_err(),
            "refuses a non-empty directory"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
