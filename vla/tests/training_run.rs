//! The training loop end to end on a small dataset written by our LeRobot writer: same seed →
//! same weights, `--resume` continues exactly, metrics and checkpoints are where they should be,
//! and bad config files name the file and field.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use vla_core::{Action, Observation};
use vla_datasets::{DatasetSpec, DatasetWriter, FrameRecord, ImageSize};
use vla_model::tch::Device;
use vla_model::train::data::Subgoal;
use vla_model::train::{self, TrainConfig, TrainEvent, TrainOptions};
use vla_model::VlaConfig;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vla-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// 4 episodes of 6 frames: a coloured square whose position sets the action.
fn write_dataset(dir: &Path) {
    // Closes at t = 3, opens again at t = 5; the end effector moves 5 cm in x per frame.
    let ee_x: Vec<f32> = (0..6).map(|t| t as f32 * 0.05).collect();
    write_dataset_with(dir, &ee_x, &[3, 4]);
}

/// Four episodes whose end effector passes through `ee_x` with the gripper commanded closed
/// at the frames in `closed`.
fn write_dataset_with(dir: &Path, ee_x: &[f32], closed: &[usize]) {
    let spec = DatasetSpec::new(
        "test_arm",
        10,
        ImageSize {
            width: 32,
            height: 32,
        },
    );
    let mut w = DatasetWriter::create(dir, spec).unwrap();
    for ep in 0..4u32 {
        let task = if ep % 2 == 0 {
            "pick up the red cube"
        } else {
            "pick up the blue ball"
        };
        for (t, &ee) in (0u32..).zip(ee_x) {
            let mut img = RgbImage::from_pixel(32, 32, Rgb([120, 90, 60]));
            let x = (ep * 5 + t * 3) % 28;
            for dy in 0..4 {
                for dx in 0..4 {
                    img.put_pixel(x + dx, 10 + dy, Rgb([220, 30, 30]));
                }
            }
            let mut state = [0.0f32; 13];
            state[7] = ee;
            let obs = Observation {
                front: img.clone(),
                wrist: img,
                front_depth: None,
                state,
                instruction: task.into(),
            };
            let v = (x as f32 - 14.0) / 14.0 * 0.02;
            let action = Action::new(
                [v, -v, 0.01],
                [0.0, 0.0, 0.0],
                closed.contains(&(t as usize)) as u8 as f32,
            );
            w.add_frame(FrameRecord {
                observation: &obs,
                action,
                timestamp: t as f32 / 10.0,
                subtask: None,
            })
            .unwrap();
        }
        w.save_episode(task).unwrap();
    }
    w.finalize().unwrap();
}

fn options(data: &Path, out: &Path, steps: usize, resume: bool) -> TrainOptions {
    let mut model = VlaConfig::test_tiny();
    model.vision.image_size = 16;
    let train = TrainConfig {
        steps,
        batch_size: 4,
        val_fraction: 0.25,
        val_every: 2,
        log_every: 1,
        checkpoint_every: 3,
        ..TrainConfig::default()
    };
    TrainOptions {
        data: vec![data.to_path_buf()],
        out: out.to_path_buf(),
        model,
        train,
        device: Device::Cpu,
        resume,
        init: None,
        init_lm: None,
        corpus: vec!["put the red cube in the blue bin".into()],
        questions: Vec::new(),
        cotrain: None,
        until: None,
        dist: None,
        mapping: Default::default(),
    }
}

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

#[test]
fn same_seed_same_run_and_resume_is_exact() {
    vla_model::tch::set_num_threads(1);
    let data = tmp("data");
    write_dataset(&data);
    let mut quiet = |_: TrainEvent<'_>| true;

    let a = tmp("a");
    let sa = train::train(&options(&data, &a, 6, false), &mut quiet).unwrap();
    assert_eq!(sa.steps, 6);
    assert!(sa.final_val.is_some());
    let b = tmp("b");
    train::train(&options(&data, &b, 6, false), &mut quiet).unwrap();
    assert_eq!(
        weights(&a),
        weights(&b),
        "same seed must give the same weights"
    );

    // Stop after step 3 (the callback says stop), then resume to 6.
    let c = tmp("c");
    let mut stop_at_3 =
        |e: TrainEvent<'_>| !matches!(e, TrainEvent::Step { stats, .. } if stats.step + 1 >= 3);
    let sc = train::train(&options(&data, &c, 6, false), &mut stop_at_3).unwrap();
    assert!(sc.interrupted);
    assert_eq!(sc.steps, 3);
    assert_eq!(
        train::latest_checkpoint(&c).unwrap().map(|(s, _)| s),
        Some(3)
    );
    // Without --resume the run directory is protected.
    let err = train::train(&options(&data, &c, 6, false), &mut quiet).unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    let sc = train::train(&options(&data, &c, 6, true), &mut quiet).unwrap();
    assert_eq!((sc.start_step, sc.steps), (3, 6));
    assert_eq!(
        weights(&a),
        weights(&c),
        "resumed run must equal the uninterrupted one"
    );

    let metrics = train::read_metrics(&c).unwrap();
    let train_steps: Vec<u64> = metrics
        .iter()
        .filter(|m| m["kind"] == "train")
        .filter_map(|m| m["step"].as_u64())
        .collect();
    assert_eq!(train_steps, vec![1, 2, 3, 4, 5, 6]);
    assert!(metrics
        .iter()
        .any(|m| m["kind"] == "val" && m["l1"].is_number()));
    // The grounding error is logged per head (the test config has two).
    assert!(metrics.iter().any(|m| m["kind"] == "val"
        && m["target_error_far_cm"].as_array().map(Vec::len) == Some(2)
        && m["target_error_near_cm"].as_array().map(Vec::len) == Some(2)));
    for d in [&data, &a, &b, &c] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Batches assembled ahead on a background thread are the batches the loop would assemble
/// itself: the same losses and weights, also when a prefetching run is stopped (its thread
/// then ends with it) and resumed. Frames memory-mapped from disk (over the memory budget)
/// train the same run as frames in memory.
#[test]
fn prefetched_batches_and_mapped_frames_change_nothing() {
    vla_model::tch::set_num_threads(1);
    let data = tmp("prefetch-data");
    write_dataset(&data);
    let mut quiet = |_: TrainEvent<'_>| true;
    let with = |out: &Path, depth: usize, resume: bool| {
        let mut o = options(&data, out, 6, resume);
        o.train.prefetch = Some(depth);
        o
    };
    let (plain, ahead, stopped) = (tmp("plain"), tmp("ahead"), tmp("stopped"));
    train::train(&with(&plain, 0, false), &mut quiet).unwrap();
    train::train(&with(&ahead, 3, false), &mut quiet).unwrap();
    let losses = |dir: &Path| -> Vec<f64> {
        train::read_metrics(dir)
            .unwrap()
            .iter()
            .filter(|m| m["kind"] == "train")
            .filter_map(|m| m["loss"].as_f64())
            .collect()
    };
    assert_eq!(losses(&plain).len(), 6);
    assert_eq!(losses(&plain), losses(&ahead));
    assert_eq!(
        weights(&plain),
        weights(&ahead),
        "prefetching changed the run"
    );
    let mut stop_at_2 =
        |e: TrainEvent<'_>| !matches!(e, TrainEvent::Step { stats, .. } if stats.step + 1 >= 2);
    let s = train::train(&with(&stopped, 3, false), &mut stop_at_2).unwrap();
    assert!(s.interrupted && s.steps == 2, "{s:?}");
    train::train(&with(&stopped, 3, true), &mut quiet).unwrap();
    assert_eq!(weights(&plain), weights(&stopped));

    let mapped = tmp("mapped");
    let mut o = with(&mapped, 0, false);
    o.train.resident_frames_mb = Some(0);
    let summary = train::train(&o, &mut quiet).unwrap();
    assert!(summary.data.frames_mapped, "a zero budget maps the frames");
    assert_eq!(
        weights(&plain),
        weights(&mapped),
        "mapped frames changed the run"
    );
    for d in [&data, &plain, &ahead, &stopped, &mapped] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A chunked model (`action.chunk_size` 3) through the whole loop: targets of the next
/// frames read from the dataset's episodes, validation, and a checkpoint that loads into a
/// policy executing its chunk.
#[test]
fn a_chunked_model_trains_validates_and_acts_from_its_checkpoint() {
    vla_model::tch::set_num_threads(1);
    let data = tmp("chunk-data");
    write_dataset(&data);
    let out = tmp("chunk");
    let mut opts = options(&data, &out, 3, false);
    opts.model.action.chunk_size = 3;
    let summary = train::train(&opts, &mut |_: TrainEvent<'_>| true).unwrap();
    let val = summary.final_val.expect("validated");
    assert!(val.loss.is_finite() && val.l1.is_finite(), "{val:?}");
    let (_, dir) = train::latest_checkpoint(&out)
        .unwrap()
        .expect("a checkpoint");
    let policy = vla_model::Policy::load(&dir, Device::Cpu).unwrap();
    assert_eq!(policy.model().config().action.chunk_size, 3);
    let obs = Observation {
        front: RgbImage::from_pixel(32, 32, Rgb([120, 90, 60])),
        wrist: RgbImage::from_pixel(32, 32, Rgb([120, 90, 60])),
        front_depth: None,
        state: [0.0; 13],
        instruction: "pick up the red cube".into(),
    };
    let chunk = policy
        .decide(&[(&obs, "pick up the red cube")], None)
        .unwrap()[0]
        .chunk
        .clone();
    assert_eq!(chunk.len(), 3);
    for expected in &chunk {
        assert_eq!(&policy.act(&obs, "pick up the red cube").unwrap(), expected);
    }
    for d in [&data, &out] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn config_errors_name_the_file_and_field() {
    let dir = tmp("cfg");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    let tiny =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/tiny.toml")).unwrap();
    std::fs::write(&path, tiny.replace("batch_size = 32", "batch_size = 0")).unwrap();
    let err = train::load_config_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("bad.toml") && err.contains("train.batch_size"),
        "{err}"
    );
    std::fs::write(
        &path,
        tiny.replace("[train.optim]", "[train.optim]\nlearning_rate = 1.0"),
    )
    .unwrap();
    let err = train::load_config_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("bad.toml") && err.contains("learning_rate"),
        "{err}"
    );
    let (model, train) =
        train::load_config_file(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/tiny.toml")).unwrap();
    assert_eq!(model.vision.image_size, 64);
    assert_eq!(train.batch_size, 32);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missed_grasp_opened_beside_the_object_is_no_release() {
    // Closes at t = 3 (x = 0.15), misses and opens at t = 5 on the spot, closes again at
    // t = 6 (x = 0.16) and opens at the bin at t = 9 (x = 0.40).
    let dir = tmp("retry");
    let ee_x = [0.0, 0.05, 0.10, 0.15, 0.15, 0.15, 0.16, 0.20, 0.30, 0.40];
    write_dataset_with(&dir, &ee_x, &[3, 4, 6, 7, 8]);
    let data = vla_model::train::data::TrainingData::load(
        std::slice::from_ref(&dir),
        &vla_model::FeatureMapping::default(),
        32,
        0.0,
        0,
        &mut |_, _| {},
    )
    .expect("the test dataset loads");
    for i in 0..40 {
        let t = i % 10;
        let grasp = data.target_xy(i, 0).map(|(p, _)| p[0]);
        // The next close, or while closed the end effector that holds (or missed) the object.
        let want = match t {
            0..3 => Some(0.15),
            5 => Some(0.16),
            3 | 4 | 6..9 => Some(ee_x[t]),
            _ => None,
        };
        assert_eq!(grasp, want, "frame {i}: the next close or the held object");
        let release = data.target_xy(i, 1).map(|(p, _)| p[0]);
        assert_eq!(
            release,
            (t < 9).then_some(0.40),
            "frame {i}: the opening at the bin"
        );
        // The subgoal: the object until the grasp that holds (t = 6, the retry included),
        // then the bin.
        let subgoal = Subgoal::Head((t >= 7) as usize);
        assert_eq!(data.subgoal(i), subgoal, "frame {i}: the subgoal");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_subgoal_is_the_next_event_then_hold_after_a_pick_and_none_after_a_release() {
    let ee_x = [0.0, 0.05, 0.10, 0.15, 0.15, 0.15, 0.16, 0.20, 0.30, 0.40];
    // A pick: closes at t = 3 and lifts, never opening. A place: opens at the bin at t = 8.
    // The gate's classes with two heads: 0 and 1 the heads, 2 "hold", -1 no label.
    for (name, closed, want) in [
        (
            "lift",
            &[3usize, 4, 5, 6, 7, 8, 9][..],
            [0i64, 0, 0, 0, 2, 2, 2, 2, 2, 2],
        ),
        (
            "drop",
            &[3, 4, 5, 6, 7][..],
            [0, 0, 0, 0, 1, 1, 1, 1, 1, -1],
        ),
    ] {
        let dir = tmp(name);
        write_dataset_with(&dir, &ee_x, closed);
        let data = vla_model::train::data::TrainingData::load(
            std::slice::from_ref(&dir),
            &vla_model::FeatureMapping::default(),
            32,
            0.0,
            0,
            &mut |_, _| {},
        )
        .expect("the test dataset loads");
        let got: Vec<i64> = (0..10).map(|i| data.subgoal(i).class(2)).collect();
        assert_eq!(got, want, "{name}");
        let labels = Vec::<i64>::try_from(data.subgoal_labels(&[0, 4, 9], 2))
            .expect("the labels are an i64 tensor");
        assert_eq!(labels, [want[0], want[4], want[9]], "{name}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn targets_are_the_next_grasp_the_held_object_and_the_release_after_it() {
    let dir = tmp("targets");
    write_dataset(&dir);
    let data = vla_model::train::data::TrainingData::load(
        std::slice::from_ref(&dir),
        &vla_model::FeatureMapping::default(),
        32,
        0.0,
        0,
        &mut |_, _| {},
    )
    .unwrap();
    let indices: Vec<usize> = (0..24).collect();
    let (xy, mask) = data.target_locations(&indices, 3);
    assert_eq!(xy.size(), [24, 3, 2]);
    let mask = Vec::<f32>::try_from(mask.flatten(0, 1)).unwrap();
    let xy = Vec::<f32>::try_from(xy.flatten(0, 2)).unwrap();
    for i in 0..24 {
        let t = i % 6;
        // Head 0: the gripper closes at t = 3, where ee_x = 0.15; head 1: it opens at t = 5
        // (ee_x = 0.25); head 2 has no target. Frames before each event learn that spot,
        // unless they are within 8 cm of it (ee_x moves 5 cm per frame).
        for (head, event, x) in [(0, 3, 0.15f32), (1, 5, 0.25)] {
            let m = mask[3 * i + head];
            let taught = t + 1 < event;
            assert_eq!(m, if taught { 1.0 } else { 0.0 }, "frame {i} head {head}");
            if taught {
                let at = 6 * i + 2 * head;
                assert!(
                    (xy[at] - x).abs() < 1e-6 && xy[at + 1] == 0.0,
                    "frame {i} head {head}"
                );
            }
        }
        assert_eq!(mask[3 * i + 2], 0.0);
        // While the fingers are closed (t = 3, 4) head 0's object is in them: its heat-map
        // target is the end effector itself (never a regression target: it is near), and
        // after the opening there is no next grasp.
        let held = data.target_xy(i, 0);
        match t {
            0..=2 => assert_eq!(held, Some(([3.0 * 0.05, 0.0], t + 1 < 3)), "frame {i}"),
            3 | 4 => assert_eq!(held, Some(([t as f32 * 0.05, 0.0], false)), "frame {i}"),
            _ => assert_eq!(held, None, "frame {i}"),
        }
    }
    // In the wrist camera: each frame's own view, rebuilt from its end-effector state.
    let mount = vla_model::train::data::GroundingTargets::default().wrist_camera;
    let (px, mask) = data.wrist_target_pixels(&indices, 3, &mount);
    assert_eq!(px.size(), [24, 3, 2]);
    let mask = Vec::<f32>::try_from(mask.flatten(0, 1)).expect("f32 mask");
    let px = Vec::<f32>::try_from(px.flatten(0, 2)).expect("f32 pixels");
    let mut seen = 0;
    for i in 0..24 {
        let t = i % 6;
        let mut state = [0.0f32; 13];
        state[7] = t as f32 * 0.05;
        let view = mount.view(&state).expect("a wrist view from the state");
        // Head 0 aims at the grasp at t = 3 (x = 0.15), then at the held object, where the
        // end effector is, until the opening at t = 5.
        let held = t as f32 * 0.05;
        for (head, event, x) in [(0, 4, if t >= 3 { held } else { 0.15f32 }), (1, 5, 0.25)] {
            if mask[3 * i + head] == 0.0 {
                continue;
            }
            assert!(
                t <= event,
                "frame {i} head {head}: no target after the event"
            );
            let want = view
                .project([x, 0.0, 0.0])
                .expect("a table point in front of the camera");
            let at = 6 * i + 2 * head;
            assert!(
                (px[at] - want[0]).abs() < 1e-5 && (px[at + 1] - want[1]).abs() < 1e-5,
                "frame {i} head {head}: {:?} vs {want:?}",
                &px[at..at + 2]
            );
            assert!(want.iter().all(|v| (0.0..=1.0).contains(v)));
            seen += 1;
        }
        assert_eq!(mask[3 * i + 2], 0.0);
    }
    assert!(seen > 0, "no target in any wrist view");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a rank of [`two_ranks_step_as_one_process`] is to do, passed to the child process.
const DP_ENV: &str = "VLA_TEST_DATA_PARALLEL";

/// DDP's promise on PyTorch's Gloo: two ranks at global batch 4 take the same steps as one
/// process at batch 4 (to the reduction order's rounding), and a two-rank run stopped after
/// step 3 and resumed ends exactly where an uninterrupted one does. The ranks are this test
/// binary started again, one process each as torchrun's workers are (libtorch's generator
/// is process-global).
#[test]
fn two_ranks_step_as_one_process() {
    if let Ok(job) = std::env::var(DP_ENV) {
        return run_rank(&job);
    }
    vla_model::tch::set_num_threads(1);
    let data = tmp("dp-data");
    write_dataset(&data);
    let one = tmp("dp-one");
    train::train(&options(&data, &one, 6, false), &mut |_| true).unwrap();
    let two = tmp("dp-two");
    launch_ranks(&data, &two, None, false);

    // The logged loss is the global batch's, and so is the gradient norm: a sum of the ranks'
    // gradients instead of their mean would pass unseen through Adam but not through this.
    // The norm gets a looser bound: the auxiliary target loss is a mean over each rank's
    // frames that have a target, so unequal counts weigh frames a little differently (as
    // in PyTorch's DDP); the action loss has one term per frame and matches to rounding.
    for (key, tolerance) in [("loss", 1e-5), ("grad_norm", 1e-3)] {
        let series = |dir: &Path| -> Vec<f64> {
            train::read_metrics(dir)
                .unwrap()
                .iter()
                .filter(|m| m["kind"] == "train")
                .filter_map(|m| m[key].as_f64())
                .collect()
        };
        let (s1, s2) = (series(&one), series(&two));
        assert_eq!(s1.len(), 6);
        assert_eq!(s2.len(), 6, "rank 0 alone writes one record per step");
        for (a, b) in s1.iter().zip(&s2) {
            let close = (a - b).abs() <= tolerance * a.abs().max(1.0);
            assert!(close, "{key}: {s1:?} vs {s2:?}");
        }
    }
    let tensors = |dir: &Path| {
        let named =
            vla_model::tch::Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
        named
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (w1, w2) = (tensors(&one), tensors(&two));
    assert_eq!(w1.len(), w2.len());
    let (mut worst, mut sum, mut count) = (0.0f64, 0.0f64, 0i64);
    for ((n1, t1), (n2, t2)) in w1.iter().zip(&w2) {
        assert_eq!(n1, n2);
        let d = (t1 - t2).abs();
        worst = worst.max(d.max().double_value(&[]));
        sum += d.sum(vla_model::tch::Kind::Double).double_value(&[]);
        count += d.numel() as i64;
    }
    let mean = sum / count as f64;
    eprintln!("two ranks vs one process: weight difference max {worst:.2e}, mean {mean:.2e}");
    // Adam divides by the gradient's running RMS, so a weight whose gradient is at rounding
    // level moves by up to the learning rate either way whatever the reduction order: the
    // largest difference is bounded by the summed learning rate, the mean stays far below.
    let mut optim = options(&data, &one, 6, false).train.optim;
    optim.total_steps = 6;
    let lr_sum: f64 = (0..6).map(|s| optim.lr_at(s)).sum();
    assert!(
        worst <= lr_sum,
        "weights differ by up to {worst} (summed lr {lr_sum})"
    );
    assert!(mean <= 1e-6, "weights differ by {mean} on average");

    let resumed = tmp("dp-resumed");
    launch_ranks(&data, &resumed, Some(3), false);
    assert_eq!(
        train::latest_checkpoint(&resumed).unwrap().map(|(s, _)| s),
        Some(3)
    );
    launch_ranks(&data, &resumed, None, true);
    assert_eq!(
        weights(&two),
        weights(&resumed),
        "a resumed two-rank run must equal the uninterrupted one"
    );
}

/// Runs two ranks of a 6-step run into `out` and waits for both.
fn launch_ranks(data: &Path, out: &Path, until: Option<usize>, resume: bool) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let job = serde_json::json!({
        "data": data, "out": out, "until": until, "resume": resume,
    })
    .to_string();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|rank| {
            std::process::Command::new(&exe)
                .args(["two_ranks_step_as_one_process", "--exact", "--nocapture"])
                .env(DP_ENV, &job)
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    for (rank, mut child) in children.into_iter().enumerate() {
        let status = child.wait().unwrap();
        assert!(status.success(), "rank {rank}: {status}");
    }
}

/// One rank: joins the process group the environment names and trains its share.
fn run_rank(job: &str) {
    use vla_model::train::distributed::DataParallel;
    vla_model::tch::set_num_threads(1);
    let job: serde_json::Value = serde_json::from_str(job).unwrap();
    let path = |k: &str| PathBuf::from(job[k].as_str().unwrap());
    let rv = vla_dist::Rendezvous::from_env().unwrap().unwrap();
    let timeout = std::time::Duration::from_secs(120);
    let pg = vla_dist::ProcessGroup::new(&rv, vla_dist::Backend::Gloo, timeout).unwrap();
    let mut opts = options(&path("data"), &path("out"), 6, job["resume"] == true);
    opts.until = job["until"].as_u64().map(|s| s as usize);
    opts.dist = Some(DataParallel::new(pg));
    train::train(&opts, &mut |_| true).unwrap();
}
