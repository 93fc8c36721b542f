//! Write → read round trips, resume, crash safety and validation errors on synthetic data.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use vla_core::{Action, Observation, STATE_DIM};
use vla_datasets::{
    validate, Dataset, DatasetError, DatasetSpec, DatasetWriter, FrameRecord, ImageSize, Stats,
};

const W: u32 = 32;
const H: u32 = 24;
const FPS: u32 = 10;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "vla-datasets-{name}-{}-{nanos}",
            std::process::id()
        ));
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn image(ep: usize, t: usize, cam: u8) -> RgbImage {
    RgbImage::from_fn(W, H, |x, y| {
        Rgb([
            (x as usize * 7 + ep * 31 + t) as u8,
            (y as usize * 5 + t * 3) as u8,
            cam.wrapping_mul(97).wrapping_add((x ^ y) as u8),
        ])
    })
}

fn observation(ep: usize, t: usize, task: &str) -> Observation {
    let mut state = [0.0f32; STATE_DIM];
    for (k, s) in state.iter_mut().enumerate() {
        *s = ep as f32 * 100.0 + t as f32 + k as f32 * 0.25;
    }
    Observation {
        front: image(ep, t, 0),
        wrist: image(ep, t, 1),
        front_depth: None,
        state,
        instruction: task.to_string(),
    }
}

fn action(ep: usize, t: usize) -> Action {
    Action::new(
        [0.01 * t as f32, -0.02 * ep as f32, 0.5],
        [0.1, 0.2, -0.3 * t as f32],
        (t % 2) as f32,
    )
}

fn spec() -> DatasetSpec {
    DatasetSpec::new(
        "test_arm",
        FPS,
        ImageSize {
            width: W,
            height: H,
        },
    )
}

/// Record one episode of `len` frames with global episode number `ep`.
fn record(w: &mut DatasetWriter, ep: usize, len: usize, task: &str) -> usize {
    for t in 0..len {
        let obs = observation(ep, t, task);
        w.add_frame(FrameRecord {
            observation: &obs,
            action: action(ep, t),
            timestamp: t as f32 / FPS as f32,
            subtask: None,
        })
        .expect("add_frame");
    }
    w.save_episode(task).expect("save_episode")
}

const TASKS: [&str; 3] = [
    "pick up the red cube",
    "open the drawer",
    "pick up the red cube",
];
const LENGTHS: [usize; 3] = [5, 7, 4];

fn write_three(dir: &Path) {
    let mut w = DatasetWriter::create(dir, spec()).expect("create");
    for (ep, (len, task)) in LENGTHS.iter().zip(TASKS).enumerate() {
        assert_eq!(record(&mut w, ep, *len, task), ep);
    }
    let info = w.finalize().expect("finalize");
    assert_eq!(info.total_episodes, 3);
}

fn check_frame(ds: &Dataset, index: usize, ep: usize, t: usize, task: &str) {
    let f = ds.frame(index).expect("frame");
    assert_eq!(f.index, index);
    assert_eq!(f.episode_index, ep);
    assert_eq!(f.frame_index, t);
    assert_eq!(f.task, task);
    assert_eq!(f.timestamp, t as f32 / FPS as f32);
    let obs = observation(ep, t, task);
    assert_eq!(f.state, obs.state.to_vec());
    assert_eq!(f.action, action(ep, t).0.to_vec());
    assert_eq!(f.images["observation.images.front"], obs.front);
    assert_eq!(f.images["observation.images.wrist"], obs.wrist);
}

#[test]
fn round_trip_preserves_every_value() {
    let tmp = TempDir::new("roundtrip");
    write_three(tmp.path());

    let report = validate(tmp.path()).expect("valid");
    assert_eq!(report.total_episodes, 3);
    assert_eq!(report.total_frames, 16);
    assert_eq!(report.total_tasks, 2);

    let ds = Dataset::open(tmp.path()).expect("open");
    assert_eq!(ds.len(), 16);
    assert_eq!(ds.tasks(), ["pick up the red cube", "open the drawer"]);
    // No sub-tasks unless the spec asks for them.
    assert!(ds.subtasks().is_empty());
    assert_eq!(ds.subtask_index(0), None);
    assert_eq!(ds.frame(0).expect("frame").subtask, None);
    assert_eq!(report.total_subtasks, 0);
    assert!(!tmp.path().join("meta/subtasks.parquet").exists());
    assert_eq!(ds.episodes().len(), 3);
    let mut index = 0;
    for (ep, (len, task)) in LENGTHS.iter().zip(TASKS).enumerate() {
        let e = &ds.episodes()[ep];
        assert_eq!((e.dataset_from_index, e.length), (index, *len));
        assert_eq!(e.tasks, vec![task.to_string()]);
        for t in 0..*len {
            check_frame(&ds, index, ep, t, task);
            index += 1;
        }
    }

    // info.json as lerobot expects it.
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("meta/info.json")).unwrap())
            .unwrap();
    assert_eq!(info["codebase_version"], "v3.0");
    assert_eq!(info["fps"], 10);
    assert_eq!(info["robot_type"], "test_arm");
    assert_eq!(info["splits"]["train"], "0:3");
    assert_eq!(info["video_path"], serde_json::Value::Null);
    assert_eq!(
        info["data_path"],
        "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    );
    let front = &info["features"]["observation.images.front"];
    assert_eq!(front["dtype"], "image");
    assert_eq!(front["shape"], serde_json::json!([H, W, 3]));
    assert_eq!(
        front["names"],
        serde_json::json!(["height", "width", "channel"])
    );
    assert_eq!(
        info["features"]["observation.state"]["shape"],
        serde_json::json!([13])
    );
    assert_eq!(info["features"]["action"]["names"][6], "gripper");
    assert_eq!(info["features"]["timestamp"]["dtype"], "float32");
    assert!(info["features"].get("subtask_index").is_none());

    // Stats: per-channel image stats in [0, 1] with shape [3, 1, 1]; quantiles present.
    let stats = Stats::load(tmp.path()).expect("stats");
    let img = stats.get("observation.images.front").expect("image stats");
    assert_eq!(img.shape, vec![3, 1, 1]);
    assert!(img.max.iter().all(|&v| (0.0..=1.0).contains(&v)));
    let state = stats.get("observation.state").expect("state stats");
    assert_eq!(state.count, 16);
    assert_eq!(state.min[0], 0.0);
    assert_eq!(state.max[0], 203.0);
    assert!(state.q01().is_some() && state.q99().is_some());
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("meta/stats.json")).unwrap())
            .unwrap();
    assert_eq!(
        raw["observation.images.wrist"]["mean"][2][0]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(raw["action"]["count"], serde_json::json!([16]));

    // Recomputing from the data gives the same statistics.
    let recomputed = ds.compute_stats().expect("compute");
    for (key, s) in &stats.features {
        let r = &recomputed.features[key];
        assert_eq!(s.count, r.count, "{key}");
        for (a, b) in s.mean.iter().zip(&r.mean) {
            assert!((a - b).abs() < 1e-6, "{key}: {a} vs {b}");
        }
    }
}

#[test]
fn many_episodes_per_file_and_batches() {
    let tmp = TempDir::new("many");
    let mut w = DatasetWriter::create(tmp.path(), spec()).unwrap();
    w.set_flush_every_episodes(2);
    for ep in 0..5 {
        record(&mut w, ep, 3 + ep, TASKS[ep % 2]);
    }
    w.finalize().unwrap();

    let report = validate(tmp.path()).unwrap();
    assert_eq!(report.data_files.len(), 3);
    let ds = Dataset::open(tmp.path()).unwrap();
    let files: Vec<(usize, usize)> = ds
        .episodes()
        .iter()
        .map(|e| (e.data_chunk_index, e.data_file_index))
        .collect();
    assert_eq!(files, vec![(0, 0), (0, 0), (0, 1), (0, 1), (0, 2)]);
    assert_eq!(ds.len(), 3 + 4 + 5 + 6 + 7);

    // Every frame exactly once across shuffled batches, values intact.
    let all: Vec<usize> = (0..ds.len()).collect();
    let mut seen = Vec::new();
    for batch in ds.batches(&all, 4, 7) {
        let batch = batch.unwrap();
        assert!(batch.len() <= 4);
        for f in batch {
            let e = &ds.episodes()[f.episode_index];
            assert_eq!(f.index, e.dataset_from_index + f.frame_index);
            assert_eq!(
                f.images["observation.images.wrist"],
                image(f.episode_index, f.frame_index, 1)
            );
            seen.push(f.index);
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, all);

    // Episode split: disjoint, complete, deterministic.
    let (train, val) = ds.split_episodes(0.4, 3);
    assert_eq!(val.len(), 2);
    assert_eq!(train.len() + val.len(), 5);
    assert!(train.iter().all(|e| !val.contains(e)));
    assert_eq!(ds.split_episodes(0.4, 3), (train.clone(), val.clone()));
    let val_frames = ds.episode_frames(&val);
    let ds = std::sync::Arc::new(ds);
    let mut n = 0;
    for batch in ds.prefetch_batches(&val_frames, 3, 1, 2) {
        for f in batch.unwrap() {
            assert!(val.contains(&f.episode_index));
            n += 1;
        }
    }
    assert_eq!(n, val_frames.len());
}

#[test]
fn resume_appends_to_new_files() {
    let tmp = TempDir::new("resume");
    write_three(tmp.path());
    let mut w = DatasetWriter::open_resume(tmp.path()).expect("resume");
    assert_eq!(record(&mut w, 3, 6, "open the drawer"), 3);
    assert_eq!(record(&mut w, 4, 2, "stack the blocks"), 4);
    w.finalize().unwrap();

    validate(tmp.path()).expect("valid after resume");
    let ds = Dataset::open(tmp.path()).unwrap();
    assert_eq!(ds.episodes().len(), 5);
    assert_eq!(ds.tasks().len(), 3);
    assert_eq!(ds.episodes()[3].data_file_index, 1);
    check_frame(&ds, 0, 0, 0, TASKS[0]);
    check_frame(&ds, 16, 3, 0, "open the drawer");
    check_frame(&ds, 23, 4, 1, "stack the blocks");
    let f = ds.frame(23).unwrap();
    assert_eq!(f.task_index, 2);
    assert_eq!(
        Stats::load(tmp.path()).unwrap().get("index").unwrap().count,
        24
    );
}

#[test]
fn killed_writer_leaves_only_flushed_episodes() {
    let tmp = TempDir::new("kill");
    let mut w = DatasetWriter::create(tmp.path(), spec()).unwrap();
    w.set_flush_every_episodes(2);
    for (ep, task) in TASKS.iter().enumerate() {
        record(&mut w, ep, 4, task);
    }
    // Half an episode, then "SIGKILL": no destructor runs.
    let obs = observation(3, 0, "x");
    w.add_frame(FrameRecord {
        observation: &obs,
        action: action(3, 0),
        timestamp: 0.0,
        subtask: None,
    })
    .unwrap();
    std::mem::forget(w);
    // A write interrupted between creating its temporary file and renaming it.
    std::fs::write(
        tmp.path().join("data/chunk-000/.file-001.parquet.tmp-999"),
        b"partial",
    )
    .unwrap();

    let report = validate(tmp.path()).expect("valid after kill");
    assert_eq!(report.total_episodes, 2);
    assert_eq!(report.total_frames, 8);
    let ds = Dataset::open(tmp.path()).unwrap();
    check_frame(&ds, 7, 1, 3, TASKS[1]);

    // Resume cleans up and continues.
    let mut w = DatasetWriter::open_resume(tmp.path()).unwrap();
    record(&mut w, 2, 5, "new task");
    w.finalize().unwrap();
    assert!(!tmp
        .path()
        .join("data/chunk-000/.file-001.parquet.tmp-999")
        .exists());
    assert_eq!(validate(tmp.path()).unwrap().total_episodes, 3);
}

#[test]
fn dropped_writer_flushes_saved_episodes_but_not_a_partial_one() {
    let tmp = TempDir::new("drop");
    {
        let mut w = DatasetWriter::create(tmp.path(), spec()).unwrap();
        record(&mut w, 0, 3, TASKS[0]);
        let obs = observation(1, 0, "x");
        w.add_frame(FrameRecord {
            observation: &obs,
            action: action(1, 0),
            timestamp: 0.0,
            subtask: None,
        })
        .unwrap();
    }
    let report = validate(tmp.path()).unwrap();
    assert_eq!((report.total_episodes, report.total_frames), (1, 3));
}

#[test]
fn interrupted_flush_is_rolled_back_on_resume() {
    let tmp = TempDir::new("rollback");
    write_three(tmp.path());
    // Simulate a flush that wrote its data and episode files (and stats) but died before
    // committing info.json: copies of the existing files under the next names.
    let root = tmp.path();
    std::fs::copy(
        root.join("data/chunk-000/file-000.parquet"),
        root.join("data/chunk-000/file-001.parquet"),
    )
    .unwrap();
    let err = validate(root).unwrap_err();
    assert!(
        err.path().ends_with("data/chunk-000/file-001.parquet"),
        "{err}"
    );
    // ... and whose stats.json already counted the uncommitted frames.
    let stats_path = root.join("meta/stats.json");
    let mut stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats_path).unwrap()).unwrap();
    stats["index"]["count"] = serde_json::json!([32]);
    stats["action"]["max"][0] = serde_json::json!(1000.0);
    std::fs::write(&stats_path, stats.to_string()).unwrap();

    let mut w = DatasetWriter::open_resume(root).unwrap();
    record(&mut w, 3, 2, TASKS[1]);
    w.finalize().unwrap();
    assert_eq!(validate(root).unwrap().total_episodes, 4);
    // The orphan was removed and file-001 now holds the resumed episode.
    let ds = Dataset::open(root).unwrap();
    assert_eq!(ds.episodes()[3].data_file_index, 1);
    check_frame(&ds, 17, 3, 1, TASKS[1]);
    // stats.json was recomputed from the committed data before merging the new episode.
    let stats = Stats::load(root).unwrap();
    assert_eq!(stats.get("index").unwrap().count, 18);
    assert!(stats.get("action").unwrap().max[0] < 1.0);
}

fn expect_err_on(dir: &Path, file: &str) -> DatasetError {
    let err = validate(dir).expect_err("validate must fail");
    assert!(
        err.path().ends_with(file),
        "error should name {file}: {err} (path {})",
        err.path().display()
    );
    assert!(
        err.to_string().contains(file),
        "message should name {file}: {err}"
    );
    let open = Dataset::open(dir).err().expect("open must fail");
    assert!(
        open.to_string().contains(file),
        "open error should name {file}: {open}"
    );
    err
}

#[test]
fn truncated_parquet_is_reported_with_its_name() {
    let tmp = TempDir::new("truncated");
    write_three(tmp.path());
    let data = tmp.path().join("data/chunk-000/file-000.parquet");
    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    let err = expect_err_on(tmp.path(), "data/chunk-000/file-000.parquet");
    assert!(matches!(err, DatasetError::Parquet { .. }), "{err}");
}

#[test]
fn missing_meta_files_are_reported() {
    let tmp = TempDir::new("missing");
    write_three(tmp.path());
    std::fs::remove_file(tmp.path().join("meta/tasks.parquet")).unwrap();
    let err = expect_err_on(tmp.path(), "meta/tasks.parquet");
    assert!(matches!(err, DatasetError::Missing { .. }), "{err}");

    std::fs::remove_file(tmp.path().join("meta/info.json")).unwrap();
    let err = expect_err_on(tmp.path(), "meta/info.json");
    assert!(matches!(err, DatasetError::Missing { .. }), "{err}");
}

#[test]
fn wrong_codebase_version_is_rejected() {
    let tmp = TempDir::new("version");
    write_three(tmp.path());
    let path = tmp.path().join("meta/info.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"v3.0\"", "\"v2.1\"")).unwrap();
    let err = expect_err_on(tmp.path(), "meta/info.json");
    assert!(matches!(err, DatasetError::Version { .. }), "{err}");
    assert!(err.to_string().contains("v2.1"));
    assert!(DatasetWriter::open_resume(tmp.path()).is_err());
}

#[test]
fn schema_mismatch_names_the_data_file() {
    let tmp = TempDir::new("schema");
    write_three(tmp.path());
    let path = tmp.path().join("meta/info.json");
    let mut info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    info["features"]["observation.state"]["shape"] = serde_json::json!([12]);
    std::fs::write(&path, serde_json::to_string(&info).unwrap()).unwrap();
    let err = expect_err_on(tmp.path(), "data/chunk-000/file-000.parquet");
    assert!(matches!(err, DatasetError::Schema { .. }), "{err}");
    assert!(err.to_string().contains("observation.state"), "{err}");
}

#[test]
fn writer_rejects_bad_input() {
    let tmp = TempDir::new("input");
    let mut w = DatasetWriter::create(tmp.path(), spec()).unwrap();
    assert!(w.save_episode("nothing recorded").is_err());
    let mut obs = observation(0, 0, "x");
    obs.front = RgbImage::new(8, 8);
    let err = w
        .add_frame(FrameRecord {
            observation: &obs,
            action: action(0, 0),
            timestamp: 0.0,
            subtask: None,
        })
        .unwrap_err();
    assert!(err.to_string().contains("front"), "{err}");
    drop(w);
    // create refuses to overwrite a dataset.
    assert!(DatasetWriter::create(tmp.path(), spec()).is_err());
}

#[test]
fn timestamps_off_the_frame_rate_are_reported() {
    let tmp = TempDir::new("timestamps");
    let mut w = DatasetWriter::create(tmp.path(), spec()).unwrap();
    for t in 0..3 {
        let obs = observation(0, t, "x");
        w.add_frame(FrameRecord {
            observation: &obs,
            action: action(0, t),
            timestamp: t as f32 * 0.2, // recorded at 5 Hz, declared 10 fps
            subtask: None,
        })
        .unwrap();
    }
    w.save_episode("x").unwrap();
    w.finalize().unwrap();
    let err = validate(tmp.path()).unwrap_err();
    assert!(
        err.path().ends_with("data/chunk-000/file-000.parquet"),
        "{err}"
    );
    assert!(err.to_string().contains("timestamp"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Sub-tasks (`subtask_index` + `meta/subtasks.parquet`).

const RED: &str = "put the red cube in the red bin";
const BLUE: &str = "put the blue cube in the blue bin";
const GREEN: &str = "put the green cube in the green bin";
const YELLOW: &str = "put the yellow cube in the yellow bin";

fn subtask_spec() -> DatasetSpec {
    DatasetSpec {
        subtasks: true,
        ..spec()
    }
}

/// Record one episode with one frame per entry of `subtasks`.
fn record_subtasks(w: &mut DatasetWriter, ep: usize, task: &str, subtasks: &[&str]) -> usize {
    for (t, subtask) in subtasks.iter().enumerate() {
        let obs = observation(ep, t, task);
        w.add_frame(FrameRecord {
            observation: &obs,
            action: action(ep, t),
            timestamp: t as f32 / FPS as f32,
            subtask: Some(subtask),
        })
        .expect("add_frame");
    }
    w.save_episode(task).expect("save_episode")
}

const SORT: &str = "put every cube in the bin of its colour";
const EP0: [&str; 5] = [RED, RED, RED, BLUE, BLUE];
const EP1: [&str; 6] = [BLUE, BLUE, GREEN, GREEN, GREEN, RED];

fn write_subtask_episodes(dir: &Path) {
    let mut w = DatasetWriter::create(dir, subtask_spec()).expect("create");
    assert!(w.records_subtasks());
    assert_eq!(record_subtasks(&mut w, 0, SORT, &EP0), 0);
    assert_eq!(record_subtasks(&mut w, 1, SORT, &EP1), 1);
    assert_eq!(w.subtasks(), [RED, BLUE, GREEN]);
    w.finalize().expect("finalize");
}

fn check_subtasks(ds: &Dataset, episodes: &[&[&str]]) {
    let mut index = 0;
    for (ep, subtasks) in episodes.iter().enumerate() {
        for (t, subtask) in subtasks.iter().enumerate() {
            let expected = ds.subtasks().iter().position(|s| s == subtask);
            assert_eq!(ds.subtask_index(index), expected, "frame {index}");
            let f = ds.frame(index).expect("frame");
            assert_eq!((f.episode_index, f.frame_index), (ep, t));
            assert_eq!(f.subtask.as_deref(), Some(*subtask), "frame {index}");
            index += 1;
        }
    }
    assert_eq!(index, ds.len());
    assert_eq!(ds.subtask_index(ds.len()), None);
}

#[test]
fn subtasks_round_trip_and_survive_resume() {
    let tmp = TempDir::new("subtasks");
    write_subtask_episodes(tmp.path());

    let report = validate(tmp.path()).expect("valid");
    assert_eq!((report.total_episodes, report.total_frames), (2, 11));
    assert_eq!(report.total_subtasks, 3);
    let ds = Dataset::open(tmp.path()).expect("open");
    assert_eq!(ds.subtasks(), [RED, BLUE, GREEN]);
    check_subtasks(&ds, &[&EP0, &EP1]);
    assert_eq!(ds.subtask_index(5), Some(1));
    // Everything else is as without sub-tasks.
    check_frame(&ds, 7, 1, 2, SORT);

    // info.json declares the feature; stats like the other index columns.
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("meta/info.json")).unwrap())
            .unwrap();
    assert_eq!(
        info["features"]["subtask_index"],
        serde_json::json!({"dtype": "int64", "shape": [1], "names": null})
    );
    assert_eq!(info["total_tasks"], 1);
    let stats = Stats::load(tmp.path()).expect("stats");
    let s = stats.get("subtask_index").expect("subtask_index stats");
    assert_eq!((s.count, s.min[0], s.max[0]), (11, 0.0, 2.0));
    let recomputed = ds.compute_stats().expect("compute");
    let r = recomputed
        .get("subtask_index")
        .expect("recomputed subtask_index stats");
    assert_eq!(r.count, s.count);
    assert!(
        (r.mean[0] - s.mean[0]).abs() < 1e-6,
        "{} vs {}",
        r.mean[0],
        s.mean[0]
    );

    // Resume: the list is restored, old indices stay, new sentences are appended.
    let mut w = DatasetWriter::open_resume(tmp.path()).expect("resume");
    assert!(w.records_subtasks());
    assert_eq!(w.subtasks(), [RED, BLUE, GREEN]);
    let ep2: [&str; 4] = [GREEN, YELLOW, YELLOW, RED];
    assert_eq!(record_subtasks(&mut w, 2, SORT, &ep2), 2);
    w.finalize().expect("finalize");
    assert_eq!(validate(tmp.path()).expect("valid").total_subtasks, 4);
    let ds = Dataset::open(tmp.path()).expect("open");
    assert_eq!(ds.subtasks(), [RED, BLUE, GREEN, YELLOW]);
    check_subtasks(&ds, &[&EP0, &EP1, &ep2]);
    assert_eq!(ds.subtask_index(12), Some(3));
}

#[test]
fn subtask_of_a_dataset_without_them_is_ignored() {
    let tmp = TempDir::new("nosubtasks");
    let mut w = DatasetWriter::create(tmp.path(), spec()).unwrap();
    assert!(!w.records_subtasks());
    record_subtasks(&mut w, 0, SORT, &EP0);
    assert!(w.subtasks().is_empty());
    w.finalize().unwrap();
    validate(tmp.path()).unwrap();
    assert!(!tmp.path().join("meta/subtasks.parquet").exists());
    let ds = Dataset::open(tmp.path()).unwrap();
    assert_eq!((ds.subtasks().len(), ds.subtask_index(0)), (0, None));
    assert_eq!(ds.frame(0).unwrap().subtask, None);
}

#[test]
fn missing_subtasks_table_is_reported() {
    let tmp = TempDir::new("subtasks-missing");
    write_subtask_episodes(tmp.path());
    std::fs::remove_file(tmp.path().join("meta/subtasks.parquet")).unwrap();
    let err = expect_err_on(tmp.path(), "meta/subtasks.parquet");
    assert!(matches!(err, DatasetError::Missing { .. }), "{err}");
    let err = DatasetWriter::open_resume(tmp.path())
        .err()
        .expect("resume must fail");
    assert!(err.path().ends_with("meta/subtasks.parquet"), "{err}");
}

#[test]
fn subtask_index_outside_the_table_is_reported() {
    let tmp = TempDir::new("subtasks-range");
    write_subtask_episodes(tmp.path());
    // A table that lost its last sentence: frames of episode 1 point past its end.
    vla_datasets::format::write_subtasks(tmp.path(), &[RED.to_string(), BLUE.to_string()]).unwrap();
    let err = expect_err_on(tmp.path(), "data/chunk-000/file-000.parquet");
    assert!(matches!(err, DatasetError::Inconsistent { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("subtask_index") && msg.contains("is 2"),
        "{msg}"
    );
    let open = Dataset::open(tmp.path()).err().expect("open must fail");
    assert!(open.to_string().contains("subtask_index"), "{open}");
}

#[test]
fn frame_without_subtask_is_refused_and_saved_episodes_survive() {
    let tmp = TempDir::new("subtasks-refused");
    {
        let mut w = DatasetWriter::create(tmp.path(), subtask_spec()).unwrap();
        record_subtasks(&mut w, 0, SORT, &EP0);
        // Two good frames of episode 1, then one without a sub-task.
        for (t, subtask) in EP1.iter().enumerate().take(2) {
            let obs = observation(1, t, SORT);
            w.add_frame(FrameRecord {
                observation: &obs,
                action: action(1, t),
                timestamp: t as f32 / FPS as f32,
                subtask: Some(subtask),
            })
            .unwrap();
        }
        let obs = observation(1, 2, SORT);
        let err = w
            .add_frame(FrameRecord {
                observation: &obs,
                action: action(1, 2),
                timestamp: 0.2,
                subtask: None,
            })
            .unwrap_err();
        assert!(matches!(err, DatasetError::Usage { .. }), "{err}");
        assert!(err.to_string().contains("subtask"), "{err}");
        // The refusal changed nothing: the episode goes on where it was.
        assert_eq!(w.current_episode_len(), 2);
        for (t, subtask) in EP1.iter().enumerate().skip(2) {
            let obs = observation(1, t, SORT);
            w.add_frame(FrameRecord {
                observation: &obs,
                action: action(1, t),
                timestamp: t as f32 / FPS as f32,
                subtask: Some(subtask),
            })
            .unwrap();
        }
        w.save_episode(SORT).unwrap();
        // Refused again at the start of an episode, then the writer is dropped (not
        // finalized): both saved episodes still reach disk.
        let obs = observation(2, 0, SORT);
        assert!(w
            .add_frame(FrameRecord {
                observation: &obs,
                action: action(2, 0),
                timestamp: 0.0,
                subtask: None,
            })
            .is_err());
    }
    let report = validate(tmp.path()).unwrap();
    assert_eq!((report.total_episodes, report.total_frames), (2, 11));
    let ds = Dataset::open(tmp.path()).unwrap();
    assert_eq!(ds.subtasks(), [RED, BLUE, GREEN]);
    check_subtasks(&ds, &[&EP0, &EP1]);
}

/// Episodes `eps` (global numbers, with their tasks and sub-tasks) written as one dataset.
fn write_episodes(dir: &Path, eps: &[(usize, usize, &str)], subtasks: bool) {
    let mut s = spec();
    s.subtasks = subtasks;
    let mut w = DatasetWriter::create(dir, s).expect("create");
    for &(ep, len, task) in eps {
        for t in 0..len {
            let obs = observation(ep, t, task);
            let step = format!("{task}, step {}", t / 3);
            w.add_frame(FrameRecord {
                observation: &obs,
                action: action(ep, t),
                timestamp: t as f32 / FPS as f32,
                subtask: subtasks.then_some(step.as_str()),
            })
            .expect("add_frame");
        }
        w.save_episode(task).expect("save_episode");
    }
    w.finalize().expect("finalize");
}

#[test]
fn merge_equals_one_recording_of_the_same_episodes() {
    // Two shards with different task sets (the second has a task the first lacks, and
    // shares one), merged, against the same episodes recorded in one go.
    let a_eps = [(0, 5, "pick up the red cube"), (1, 7, "open the drawer")];
    let b_eps = [
        (2, 4, "stack the blocks"),
        (3, 6, "pick up the red cube"),
        (4, 3, "stack the blocks"),
    ];
    let all: Vec<_> = a_eps.iter().chain(&b_eps).copied().collect();
    for subtasks in [false, true] {
        let tmp = TempDir::new("merge");
        let (a, b, one, merged) = (
            tmp.path().join("a"),
            tmp.path().join("b"),
            tmp.path().join("one"),
            tmp.path().join("merged"),
        );
        write_episodes(&a, &a_eps, subtasks);
        write_episodes(&b, &b_eps, subtasks);
        write_episodes(&one, &all, subtasks);
        let mut calls = Vec::new();
        let report = vla_datasets::merge(&[a.clone(), b.clone()], &merged, &mut |done, total| {
            calls.push((done, total))
        })
        .expect("merge");
        assert_eq!(calls.last(), Some(&(5, 5)));
        assert_eq!((report.episodes, report.frames, report.tasks), (5, 25, 3));
        assert_eq!(report.sources[1].first_episode, 2);
        validate(&merged).expect("the merged dataset validates");

        let (m, o) = (
            Dataset::open(&merged).unwrap(),
            Dataset::open(&one).unwrap(),
        );
        assert_eq!(m.tasks(), o.tasks());
        assert_eq!(
            m.tasks(),
            [
                "pick up the red cube",
                "open the drawer",
                "stack the blocks"
            ]
        );
        assert_eq!(m.subtasks(), o.subtasks());
        assert_eq!(m.episodes().len(), 5);
        for i in 0..o.len() {
            assert_eq!(m.frame(i).unwrap(), o.frame(i).unwrap(), "frame {i}");
        }
        // Statistics are recomputed from the frames by the writer's own rule: the same, bit
        // for bit, as the single recording's, and equal to a recomputation from the data.
        let stats = |d: &Path| Stats::load(d).unwrap().to_json();
        assert_eq!(stats(&merged), stats(&one));
        // (Through JSON text, as stats.json went: serde_json's parser may round the last bit.)
        let recomputed: serde_json::Value =
            serde_json::from_str(&m.compute_stats().unwrap().to_json().to_string()).unwrap();
        assert_eq!(recomputed, stats(&merged));
        // Mean and std over all frames are exact, whatever the split into sources.
        let state = m.stats().unwrap().get("observation.state").unwrap();
        let values: Vec<f32> = (0..m.len())
            .flat_map(|i| m.frame(i).unwrap().state)
            .collect();
        let exact = vla_datasets::FeatureStats::from_vectors(&values, STATE_DIM);
        for k in 0..STATE_DIM {
            assert!((state.mean[k] - exact.mean[k]).abs() < 1e-9);
            assert!((state.std[k] - exact.std[k]).abs() < 1e-9);
        }
        assert_eq!(
            (state.min.clone(), state.max.clone()),
            (exact.min, exact.max)
        );
        assert_eq!(state.count, 25);
    }
}

#[test]
fn merge_refuses_what_it_cannot_join_and_leaves_nothing() {
    let tmp = TempDir::new("merge-bad");
    let (a, b, out) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("out"),
    );
    write_episodes(&a, &[(0, 3, "pick up the red cube")], false);
    // Another fps.
    let mut other = spec();
    other.fps = 20;
    let mut w = DatasetWriter::create(&b, other).unwrap();
    record(&mut w, 1, 2, "open the drawer");
    w.finalize().unwrap();
    let err = vla_datasets::merge(&[a.clone(), b.clone()], &out, &mut |_, _| {}).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("fps") && msg.contains("info.json"), "{msg}");
    assert!(!out.exists(), "a refused merge leaves no output");

    // Sub-tasks in one source only: the feature lists differ.
    let c = tmp.path().join("c");
    write_episodes(&c, &[(2, 3, "open the drawer")], true);
    let msg = vla_datasets::merge(&[a.clone(), c], &out, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("feature list") && msg.contains("subtask_index"),
        "{msg}"
    );

    // The output must be new, and not a source.
    std::fs::create_dir_all(out.join("meta")).unwrap();
    let msg = vla_datasets::merge(std::slice::from_ref(&a), &out, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not empty"), "{msg}");
    let msg = vla_datasets::merge(std::slice::from_ref(&a), &a, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not empty") || msg.contains("source"), "{msg}");
    assert!(vla_datasets::merge(&[], &tmp.path().join("none"), &mut |_, _| {}).is_err());
}

/// A one-number state and action (a gripper-only robot, a conveyor's speed): shape `[1]`,
/// stored as plain float columns as LeRobot does, round trips and resumes.
#[test]
fn one_number_state_and_action_round_trip() {
    use vla_datasets::{CameraSpec, RawFrameRecord};
    let dir = TempDir::new("one-number");
    let spec = || {
        DatasetSpec::with_features(
            "conveyor",
            FPS,
            vec![CameraSpec::new(
                "top",
                ImageSize {
                    width: W,
                    height: H,
                },
            )],
            vec!["speed".into()],
            vec!["speed".into()],
        )
    };
    let write = |w: &mut DatasetWriter, ep: usize| {
        for t in 0..4 {
            let img = image(ep, t, 0);
            w.add_raw_frame(RawFrameRecord {
                images: &[("top", &img)],
                state: &[ep as f32 + 0.1 * t as f32],
                action: &[ep as f32 - 0.1 * t as f32],
                timestamp: t as f32 / FPS as f32,
                subtask: None,
            })
            .expect("frame");
        }
        w.save_episode("run the belt").expect("save");
    };
    let mut w = DatasetWriter::create(dir.path(), spec()).expect("create");
    write(&mut w, 0);
    write(&mut w, 1);
    let info = w.finalize().expect("finalize");
    assert_eq!(info.features["observation.state"].shape, [1]);
    let mut w = DatasetWriter::open_resume(dir.path()).expect("resume");
    write(&mut w, 2);
    w.finalize().expect("finalize after resume");
    validate(dir.path()).expect("valid");
    let ds = Dataset::open(dir.path()).expect("open");
    assert_eq!(ds.len(), 12);
    for ep in 0..3 {
        for t in 0..4 {
            let f = ds.frame(ep * 4 + t).expect("frame");
            assert_eq!(f.state, [ep as f32 + 0.1 * t as f32]);
            assert_eq!(f.action, [ep as f32 - 0.1 * t as f32]);
        }
    }
}
