//! Python lerobot interop; runs only when `.venv-lerobot/bin/python` exists at the
//! workspace root (otherwise the test passes after printing that it was skipped).

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{Rgb, RgbImage};
use vla_core::{Action, Observation, STATE_DIM};
use vla_datasets::{validate, Dataset, DatasetSpec, DatasetWriter, FrameRecord, ImageSize};

fn python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    let py = root.join(".venv-lerobot/bin/python");
    py.exists().then_some(py)
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lerobot_interop.py")
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "vla-datasets-interop-{name}-{}",
        std::process::id()
    ))
}

#[test]
fn lerobot_reads_our_dataset_and_we_read_theirs() {
    let Some(py) = python() else {
        // `make test` creates the venv and sets VLA_REQUIRE_LEROBOT, so CI cannot skip this.
        assert!(
            std::env::var_os("VLA_REQUIRE_LEROBOT").is_none(),
            ".venv-lerobot/bin/python not found (run `make setup`)"
        );
        eprintln!("skipped: .venv-lerobot/bin/python not found");
        return;
    };

    // Rust → Python, without and with sub-tasks.
    let ours = temp("ours");
    rust_to_python(&py, &ours, false);
    let ours_subtasks = temp("ours-subtasks");
    rust_to_python(&py, &ours_subtasks, true);

    // Python → Rust.
    let theirs = temp("theirs");
    let _ = std::fs::remove_dir_all(&theirs);
    let out = Command::new(&py)
        .arg(script())
        .arg("write")
        .arg(&theirs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lerobot could not write a dataset:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    validate(&theirs).unwrap();
    let ds = Dataset::open(&theirs).unwrap();
    assert_eq!(ds.len(), 6);
    assert_eq!(ds.tasks(), ["python task 0", "python task 1"]);
    let f = ds.frame(4).unwrap();
    assert_eq!((f.episode_index, f.frame_index), (1, 1));
    assert_eq!(f.task, "python task 1");
    assert_eq!(f.state, vec![11.0; 13]);
    assert_eq!(f.action, vec![1.0; 7]);
    assert_eq!(
        f.images["observation.images.front"].get_pixel(0, 0).0,
        [10, 10, 10]
    );
    assert_eq!(
        f.images["observation.images.wrist"].get_pixel(3, 3).0,
        [101, 101, 101]
    );
    // Sub-tasks: a `subtask_index` feature and `meta/subtasks.parquet` written by pandas.
    assert_eq!(ds.subtasks(), ["python subtask a", "python subtask b"]);
    let subtasks: Vec<Option<usize>> = (0..ds.len()).map(|i| ds.subtask_index(i)).collect();
    assert_eq!(
        subtasks,
        [0, 0, 1, 1, 1, 0].map(Some),
        "subtask_index per frame"
    );
    assert_eq!(f.subtask.as_deref(), Some("python subtask b"));

    // Python → Rust merge → Python: lerobot's dataset twice, joined by `merge`, loads in
    // lerobot with episodes renumbered and sub-tasks intact.
    let merged = temp("merged");
    let _ = std::fs::remove_dir_all(&merged);
    let report = vla_datasets::merge(&[theirs.clone(), theirs.clone()], &merged, &mut |_, _| {})
        .expect("merge lerobot's dataset with itself");
    assert_eq!((report.episodes, report.frames, report.tasks), (4, 12, 2));
    validate(&merged).unwrap();
    let index = [0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0];
    let sentences = ["python subtask a", "python subtask b"];
    let expected = serde_json::json!({
        "tasks": ["python task 0", "python task 1"],
        "fps": 10,
        "episodes": 4,
        "frames": 12,
        "first_task": "python task 0",
        "first_state": vec![0.0; 13],
        "first_action": vec![0.0; 7],
        "subtasks": sentences,
        "frame_subtask_index": index,
        "frame_subtask": index.map(|i| sentences[i]),
    });
    let out = Command::new(&py)
        .arg(script())
        .arg("read")
        .arg(&merged)
        .arg(expected.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lerobot could not read the merged dataset:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&merged);

    let _ = std::fs::remove_dir_all(&ours);
    let _ = std::fs::remove_dir_all(&ours_subtasks);
    let _ = std::fs::remove_dir_all(&theirs);
}

/// Write a small dataset (two episodes of four frames; with `subtasks`, two sub-tasks per
/// episode) and have `lerobot_interop.py read` load it with `LeRobotDataset` and check it.
fn rust_to_python(py: &Path, dir: &Path, subtasks: bool) {
    let _ = std::fs::remove_dir_all(dir);
    let mut spec = DatasetSpec::new(
        "test_arm",
        10,
        ImageSize {
            width: 32,
            height: 24,
        },
    );
    spec.subtasks = subtasks;
    let mut w = DatasetWriter::create(dir, spec).unwrap();
    let tasks = ["pick up the red cube", "open the drawer"];
    // Per episode: the first two frames, then the last two.
    let sentences = [
        [
            "put the red cube in the red bin",
            "put the blue cube in the blue bin",
        ],
        ["grasp the drawer handle", "put the red cube in the red bin"],
    ];
    let mut first_state = None;
    let mut frame_subtask = Vec::new();
    for (ep, task) in tasks.iter().enumerate() {
        for t in 0..4 {
            let img = RgbImage::from_fn(32, 24, |x, y| Rgb([x as u8 * 8, y as u8 * 10, t * 50]));
            let state: [f32; STATE_DIM] = std::array::from_fn(|k| (ep * 10 + k) as f32 + t as f32);
            first_state.get_or_insert(state);
            let obs = Observation {
                front: img.clone(),
                wrist: img,
                front_depth: None,
                state,
                instruction: task.to_string(),
            };
            let subtask = sentences[ep][t as usize / 2];
            frame_subtask.push(subtask);
            w.add_frame(FrameRecord {
                observation: &obs,
                action: Action([0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 1.0]),
                timestamp: t as f32 / 10.0,
                subtask: subtasks.then_some(subtask),
            })
            .unwrap();
        }
        w.save_episode(task).unwrap();
    }
    w.finalize().unwrap();
    let mut expected = serde_json::json!({
        "tasks": tasks,
        "fps": 10,
        "episodes": 2,
        "frames": 8,
        "first_task": tasks[0],
        "first_state": first_state.unwrap().to_vec(),
        "first_action": [0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 1.0],
    });
    if subtasks {
        let ds = Dataset::open(dir).unwrap();
        let table = [
            "put the red cube in the red bin",
            "put the blue cube in the blue bin",
            "grasp the drawer handle",
        ];
        assert_eq!(ds.subtasks(), table);
        let index: Vec<usize> = frame_subtask
            .iter()
            .map(|s| table.iter().position(|t| t == s).unwrap())
            .collect();
        assert_eq!(index, [0, 0, 1, 1, 2, 2, 0, 0]);
        expected["subtasks"] = serde_json::json!(table);
        expected["frame_subtask_index"] = serde_json::json!(index);
        expected["frame_subtask"] = serde_json::json!(frame_subtask);
    }
    let out = Command::new(py)
        .arg(script())
        .arg("read")
        .arg(dir)
        .arg(expected.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lerobot could not read our dataset (subtasks: {subtasks}):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
}
