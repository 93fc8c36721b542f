//! Video features (LeRobot v3.0 `dtype: "video"`): our reader against Python lerobot 0.4.4's
//! own decoding, our writer read back by lerobot, and the errors bad video datasets give.
//!
//! The lerobot tests run when `.venv-lerobot/bin/python` exists at the workspace root and
//! fail (not skip) without it when `VLA_REQUIRE_LEROBOT` is set, as `interop.rs` does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use image::{Rgb, RgbImage};
use serde_json::Value;
use vla_datasets::{
    validate, CameraSpec, Dataset, DatasetSpec, DatasetWriter, ImageSize, RawFrameRecord, VideoSpec,
};

const LAPTOP: &str = "observation.images.laptop";
const PHONE: &str = "observation.images.phone";
/// Codec tolerance: mean absolute difference of two decodings of the same frame, in levels.
const SAME_FRAME_MAD: f64 = 2.0;

fn python() -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .join(".venv-lerobot/bin/python");
    if py.exists() {
        return Some(py);
    }
    // `make test` creates the venv and sets VLA_REQUIRE_LEROBOT, so CI cannot skip these.
    assert!(
        std::env::var_os("VLA_REQUIRE_LEROBOT").is_none(),
        ".venv-lerobot/bin/python not found (run `make setup`)"
    );
    eprintln!("skipped: .venv-lerobot/bin/python not found");
    None
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lerobot_video.py")
}

fn temp(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("vla-datasets-video-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn run_python(py: &Path, mode: &str, root: &Path, out: &Path) {
    let output = Command::new(py)
        .arg(script())
        .arg(mode)
        .arg(root)
        .arg(out)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "lerobot_video.py {mode} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&output.stdout));
}

/// What lerobot decoded: per frame, per camera (sorted keys) an RGB image, and its metadata.
struct Reference {
    cameras: Vec<String>,
    frames: Vec<Value>,
    images: Vec<Vec<RgbImage>>,
}

/// A JSON file, or a test failure naming it.
fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Rewrite `meta/info.json` of the dataset at `root` with `edit`.
fn edit_info(root: &Path, edit: impl FnOnce(&mut Value)) {
    let path = root.join("meta/info.json");
    let mut info = read_json(&path);
    edit(&mut info);
    let text = serde_json::to_string_pretty(&info).expect("a JSON value serialises");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn load_reference(dir: &Path) -> Reference {
    let meta = read_json(&dir.join("frames.json"));
    let cameras: Vec<String> = meta["cameras"]
        .as_array()
        .expect("frames.json: cameras")
        .iter()
        .map(|c| c.as_str().expect("frames.json: camera name").to_string())
        .collect();
    let (h, w) = (
        meta["height"].as_u64().expect("frames.json: height") as u32,
        meta["width"].as_u64().expect("frames.json: width") as u32,
    );
    let frames = meta["frames"]
        .as_array()
        .expect("frames.json: frames")
        .clone();
    let bytes = std::fs::read(dir.join("frames.bin")).expect("lerobot's frames.bin");
    let size = (h * w * 3) as usize;
    assert_eq!(bytes.len(), size * cameras.len() * frames.len());
    let mut chunks = bytes.chunks_exact(size);
    let images = (0..frames.len())
        .map(|_| {
            cameras
                .iter()
                .map(|_| {
                    let raw = chunks.next().expect("frames.bin holds every frame");
                    RgbImage::from_raw(w, h, raw.to_vec()).expect("a whole image")
                })
                .collect()
        })
        .collect();
    Reference {
        cameras,
        frames,
        images,
    }
}

/// Mean absolute difference of two images, in levels (0..255).
fn mad(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("frames.json: a list of numbers")
        .iter()
        .map(|x| x.as_f64().expect("frames.json: a number") as f32)
        .collect()
}

/// Every frame of `ds` against lerobot's decoding of the same dataset: bookkeeping, state and
/// action exactly, images within codec tolerance, and clearly farther from the neighbouring
/// frames of the episode (so an off-by-one frame fails).
fn compare_with_reference(ds: &Dataset, reference: &Reference) {
    assert_eq!(ds.len(), reference.frames.len());
    let all: Vec<usize> = (0..ds.len()).collect();
    let start = Instant::now();
    let frames = ds.frames(&all).expect("read every frame");
    eprintln!(
        "read {} frames x {} video cameras in {:.3} s",
        frames.len(),
        ds.video_keys().len(),
        start.elapsed().as_secs_f64()
    );
    let mut worst = 0.0f64;
    let mut closest_other = f64::INFINITY;
    for (i, (f, want)) in frames.iter().zip(&reference.frames).enumerate() {
        let number = |key: &str| {
            want[key]
                .as_u64()
                .unwrap_or_else(|| panic!("frames.json: {key} is not a count"))
        };
        assert_eq!(f.index as u64, number("index"));
        assert_eq!(f.episode_index as u64, number("episode_index"));
        assert_eq!(f.frame_index as u64, number("frame_index"));
        assert_eq!(f.task, want["task"].as_str().expect("frames.json: task"));
        assert_eq!(f.state, floats(&want["state"]), "frame {i} state");
        assert_eq!(f.action, floats(&want["action"]), "frame {i} action");
        for (c, key) in reference.cameras.iter().enumerate() {
            let ours = &f.images[key];
            let d = mad(ours, &reference.images[i][c]);
            assert!(
                d <= SAME_FRAME_MAD,
                "frame {i} {key}: {d:.3} levels from lerobot's"
            );
            worst = worst.max(d);
            // The neighbours in the same episode.
            for j in [i.wrapping_sub(1), i + 1] {
                let Some(other) = reference.frames.get(j) else {
                    continue;
                };
                if other["episode_index"] != want["episode_index"] {
                    continue;
                }
                let d_other = mad(ours, &reference.images[j][c]);
                closest_other = closest_other.min(d_other);
                assert!(
                    d_other > 3.0 * d.max(0.5),
                    "frame {i} {key}: lerobot's frame {j} is as close ({d_other:.3}) as its \
                     frame {i} ({d:.3})"
                );
            }
        }
    }
    eprintln!(
        "largest difference to lerobot: {worst:.3} levels; nearest neighbour frame: \
         {closest_other:.3} levels"
    );
    // Random access (one frame, then out of order) gives the very same pixels.
    let picks = [ds.len() - 1, 3, 0, ds.len() / 2, 3];
    for (f, &i) in ds.frames(&picks).expect("random access").iter().zip(&picks) {
        assert_eq!(f.index, i);
        assert_eq!(f.images, frames[i].images, "frame {i} read out of order");
    }
    assert_eq!(ds.frame(5).expect("one frame").images, frames[5].images);
}

/// lerobot 0.4.4 records an SO-100-like dataset with two 480x640 cameras as AV1 video (its
/// default codec); we read every frame as lerobot's own `ds[i]` decodes it and validate it.
#[test]
fn reads_lerobot_video_dataset_frame_accurately() {
    let Some(py) = python() else { return };
    let root = temp("lerobot");
    let out = temp("lerobot-ref");
    run_python(&py, "write", &root, &out);
    let reference = load_reference(&out);

    let report = validate(&root).expect("our validate accepts lerobot's video dataset");
    assert_eq!(report.video_files.len(), 2, "{report:?}");
    assert_eq!(
        report.images_decoded,
        2 * 2 * 2,
        "first and last frame, 2 episodes, 2 cameras"
    );

    let ds = Dataset::open(&root).expect("open");
    assert_eq!(ds.image_keys(), [LAPTOP, PHONE]);
    assert_eq!(ds.video_keys(), [LAPTOP, PHONE]);
    assert_eq!((ds.state_dim(), ds.action_dim()), (6, 6));
    assert_eq!(
        ds.info().features["action"].names[0].as_str(),
        Some("shoulder_pan.pos")
    );
    assert_eq!(ds.info().features[LAPTOP].video_codec(), Some("av1"));
    let second = &ds.episodes()[1].videos[LAPTOP];
    assert!(
        second.from_timestamp > 0.3,
        "both episodes share one file: {second:?}"
    );
    compare_with_reference(&ds, &reference);
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&out);
}

fn picture(cam: u32, ep: usize, t: usize, w: u32, h: u32) -> RgbImage {
    // A gradient whose blue rises 12 levels per frame, with a square that moves 12 px per
    // frame: neighbouring frames differ everywhere, not only around the square.
    let (x0, y0) = (
        (20 + 12 * t as u32 + 60 * ep as u32) % (w - 40),
        (30 + 8 * t as u32 + 70 * cam) % (h - 40),
    );
    RgbImage::from_fn(w, h, |x, y| {
        if (x0..x0 + 40).contains(&x) && (y0..y0 + 40).contains(&y) {
            Rgb([250, 250 - 100 * cam as u8, 30 * ep as u8])
        } else {
            Rgb([
                (x * 255 / (w - 1)) as u8,
                (y * 255 / (h - 1)) as u8,
                (40 + 50 * cam + 30 * ep as u32 + 12 * t as u32) as u8,
            ])
        }
    })
}

const W: u32 = 320;
const H: u32 = 240;

fn video_spec() -> DatasetSpec {
    let names = |p: &str| {
        [
            "shoulder_pan",
            "shoulder_lift",
            "elbow_flex",
            "wrist_flex",
            "wrist_roll",
            "gripper",
        ]
        .iter()
        .map(|j| format!("{j}.{p}"))
        .collect::<Vec<_>>()
    };
    let mut spec = DatasetSpec::with_features(
        "so100_follower",
        30,
        vec![
            CameraSpec::new(
                "laptop",
                ImageSize {
                    width: W,
                    height: H,
                },
            ),
            CameraSpec::new(
                "phone",
                ImageSize {
                    width: W,
                    height: H,
                },
            ),
        ],
        names("pos"),
        names("pos"),
    );
    spec.video = Some(VideoSpec::default());
    spec
}

fn record(w: &mut DatasetWriter, ep: usize, len: usize) {
    for t in 0..len {
        let (laptop, phone) = (picture(0, ep, t, W, H), picture(1, ep, t, W, H));
        let state: Vec<f32> = (0..6)
            .map(|j| (ep * 100 + t) as f32 + j as f32 * 0.25)
            .collect();
        let action: Vec<f32> = state.iter().map(|v| -v).collect();
        w.add_raw_frame(RawFrameRecord {
            images: &[("laptop", &laptop), ("phone", &phone)],
            state: &state,
            action: &action,
            timestamp: t as f32 / 30.0,
            subtask: None,
        })
        .expect("add frame");
    }
    w.save_episode(&format!("grasp the cube {ep}"))
        .expect("save episode");
}

/// Episodes 0 and 1 in one flush (one file per camera), then, after a resume that finds the
/// leftovers of an interrupted flush, episode 2 (a second file).
fn write_rust_video_dataset(root: &Path) {
    let mut w = DatasetWriter::create(root, video_spec()).expect("create");
    record(&mut w, 0, 10);
    record(&mut w, 1, 8);
    w.finalize().expect("finalize");
    // An interrupted flush: a temporary file and an mp4 never committed to info.json.
    let dir = root.join("videos").join(LAPTOP).join("chunk-000");
    std::fs::write(dir.join(".file-001.mp4.tmp-1"), b"partial").expect("write a partial file");
    std::fs::copy(dir.join("file-000.mp4"), dir.join("file-001.mp4"))
        .expect("copy an uncommitted video");
    let mut w = DatasetWriter::open_resume(root).expect("resume");
    assert!(
        !dir.join("file-001.mp4").exists(),
        "uncommitted file removed"
    );
    assert!(
        !dir.join(".file-001.mp4.tmp-1").exists(),
        "temporary file removed"
    );
    record(&mut w, 2, 6);
    w.finalize().expect("finalize after resume");
}

/// Our writer's video dataset: lerobot layout and metadata, our reader and validate, frames
/// close to what was recorded.
#[test]
fn writes_video_dataset_in_lerobot_layout() {
    let root = temp("ours");
    write_rust_video_dataset(&root);
    let report = validate(&root).expect("valid");
    assert_eq!(report.video_files.len(), 4, "{report:?}");
    let ds = Dataset::open(&root).expect("open");
    let info = ds.info();
    assert_eq!(
        info.video_path.as_deref(),
        Some(vla_datasets::video::DEFAULT_VIDEO_PATH)
    );
    let f = &info.features[LAPTOP];
    assert_eq!(
        (f.dtype.as_str(), f.shape.as_slice()),
        ("video", &[H as usize, W as usize, 3][..])
    );
    let block = &f.extra["info"];
    assert_eq!(block["video.pix_fmt"], "yuv420p");
    assert_eq!(block["video.height"], H);
    let codec = VideoSpec::default().codec.name();
    assert_eq!(block["video.codec"], codec);
    let segments: Vec<(usize, f64)> = ds
        .episodes()
        .iter()
        .map(|e| (e.videos[PHONE].file_index, e.videos[PHONE].from_timestamp))
        .collect();
    assert_eq!(segments[0], (0, 0.0));
    assert_eq!(segments[1].0, 0);
    assert!((segments[1].1 - 10.0 / 30.0).abs() < 1e-9, "{segments:?}");
    assert_eq!(segments[2], (1, 0.0));
    let mut probe = vla_datasets::VideoDecoder::open(
        &root
            .join("videos")
            .join(PHONE)
            .join("chunk-000/file-000.mp4"),
        PHONE,
    )
    .expect("open the file");
    assert_eq!(probe.probe().codec, codec);
    assert_eq!(probe.probe().frames, 18);
    let mut n = 0;
    probe
        .decode_at(&[0.0, 17.0 / 30.0], &mut |_, _| {
            n += 1;
            Ok(())
        })
        .expect("decode");
    assert_eq!(n, 2);

    let all: Vec<usize> = (0..ds.len()).collect();
    let frames = ds.frames(&all).expect("frames");
    let mut ep_start = 0;
    for (i, f) in frames.iter().enumerate() {
        if f.frame_index == 0 {
            ep_start = i;
        }
        let want = picture(1, f.episode_index, f.frame_index, W, H);
        let d = mad(&f.images[PHONE], &want);
        assert!(d < 6.0, "frame {i}: {d:.2} levels from what was recorded");
        if i > ep_start {
            let prev = picture(1, f.episode_index, f.frame_index - 1, W, H);
            let d_prev = mad(&f.images[PHONE], &prev);
            assert!(
                d_prev > 2.0 * d.max(0.5),
                "frame {i}: {d:.3} levels from its picture but {d_prev:.3} from the previous one"
            );
        }
        assert_eq!(f.state[0], (f.episode_index * 100 + f.frame_index) as f32);
    }

    // `vla dataset merge` of a video dataset with itself: video again, episodes renumbered.
    let merged = temp("merged");
    let report = vla_datasets::merge(&[root.clone(), root.clone()], &merged, &mut |_, _| {})
        .expect("merge video datasets");
    assert_eq!((report.episodes, report.frames), (6, 48));
    validate(&merged).expect("the merged dataset is valid");
    let m = Dataset::open(&merged).expect("open merged");
    assert_eq!(m.video_keys(), [LAPTOP, PHONE]);
    let again = m.frames(&[3, 24 + 3]).expect("merged frames");
    for f in &again {
        assert_eq!(f.frame_index, 3);
        let d = mad(&f.images[LAPTOP], &picture(0, 0, 3, W, H));
        assert!(d < 6.0, "merged frame {}: {d:.2} levels off", f.index);
    }
    let _ = std::fs::remove_dir_all(&merged);
    let _ = std::fs::remove_dir_all(&root);
}

/// The H.264 alternative (libx264): written, validated and read back like AV1.
#[test]
fn h264_video_round_trips() {
    let root = temp("h264");
    let mut spec = video_spec();
    spec.video = Some(VideoSpec {
        codec: vla_datasets::VideoCodec::H264,
        crf: 23,
        gop: 2,
    });
    let mut w = DatasetWriter::create(&root, spec).expect("create");
    record(&mut w, 0, 5);
    record(&mut w, 1, 4);
    w.finalize().expect("finalize");
    validate(&root).expect("valid");
    let ds = Dataset::open(&root).expect("open");
    assert_eq!(ds.info().features[LAPTOP].video_codec(), Some("h264"));
    let all: Vec<usize> = (0..ds.len()).collect();
    for f in ds.frames(&all).expect("frames") {
        let d = mad(
            &f.images[LAPTOP],
            &picture(0, f.episode_index, f.frame_index, W, H),
        );
        assert!(d < 6.0, "frame {}: {d:.2} levels off", f.index);
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// lerobot loads our video dataset, and its frames match ours within codec tolerance.
#[test]
fn lerobot_reads_our_video_dataset() {
    let Some(py) = python() else { return };
    let root = temp("ours-for-lerobot");
    let out = temp("ours-ref");
    write_rust_video_dataset(&root);
    run_python(&py, "read", &root, &out);
    let reference = load_reference(&out);
    assert_eq!(reference.cameras, [LAPTOP, PHONE]);
    let ds = Dataset::open(&root).expect("open");
    compare_with_reference(&ds, &reference);
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&out);
}

/// A video dataset with one camera broken per case, and the words its errors must contain.
fn broken(case: &str, damage: impl Fn(&Path)) -> (String, String) {
    let root = temp(case);
    let mut w = DatasetWriter::create(&root, video_spec()).expect("create");
    record(&mut w, 0, 4);
    w.finalize().expect("finalize");
    validate(&root).expect("valid before the damage");
    damage(&root);
    let validated = validate(&root).expect_err("validate refuses").to_string();
    let read = match Dataset::open(&root) {
        Err(e) => e.to_string(),
        Ok(ds) => ds.frames(&[0, 3]).expect_err("reading refuses").to_string(),
    };
    let _ = std::fs::remove_dir_all(&root);
    (validated, read)
}

#[test]
fn bad_video_datasets_give_errors_naming_file_and_key() {
    let file = format!("videos/{PHONE}/chunk-000/file-000.mp4");
    // A missing mp4.
    let (validated, read) = broken("missing", |root| {
        std::fs::remove_file(root.join(&file)).expect("remove the video");
    });
    for err in [&validated, &read] {
        assert!(err.contains(&file), "{err}");
        assert!(err.contains(PHONE), "{err}");
        assert!(err.contains("missing"), "{err}");
    }
    // info.json says 480x640 while the file holds 320x240.
    let (validated, read) = broken("shape", |root| {
        edit_info(root, |info| {
            info["features"][PHONE]["shape"] = serde_json::json!([480, 640, 3]);
            info["features"][PHONE]["info"]["video.height"] = 480.into();
            info["features"][PHONE]["info"]["video.width"] = 640.into();
        })
    });
    for err in [&validated, &read] {
        assert!(err.contains(&file), "{err}");
        assert!(err.contains(PHONE), "{err}");
        assert!(err.contains("[480, 640, 3]"), "{err}");
    }
    // A file with fewer frames than its episode (another recording's, of 2 frames).
    let (validated, read) = broken("short", |root| {
        let other = temp("short-source");
        let mut w = DatasetWriter::create(&other, video_spec()).expect("create");
        record(&mut w, 0, 2);
        w.finalize().expect("finalize");
        std::fs::copy(other.join(&file), root.join(&file)).expect("copy the short video");
        let _ = std::fs::remove_dir_all(&other);
    });
    assert!(
        validated.contains(&file) && validated.contains(PHONE),
        "{validated}"
    );
    assert!(validated.contains("holds 2 frames"), "{validated}");
    assert!(read.contains(&file) && read.contains(PHONE), "{read}");
    assert!(read.contains("no frame at t = 0.100000 s"), "{read}");
    // info.json's shape disagrees with its own video info block.
    let (validated, _) = broken("info-block", |root| {
        edit_info(root, |info| {
            info["features"][PHONE]["shape"] = serde_json::json!([240, 322, 3]);
        })
    });
    assert!(validated.contains(PHONE), "{validated}");
    assert!(validated.contains("info.json"), "{validated}");
}

/// Encode and decode speed at 480x640 (`cargo test -p vla-datasets --test video -- --ignored
/// --nocapture speed`).
#[test]
#[ignore = "a measurement, not a check"]
fn speed() {
    const N: usize = 300;
    let root = temp("speed");
    let mut spec = video_spec();
    spec.cameras = vec![CameraSpec::new(
        "laptop",
        ImageSize {
            width: 640,
            height: 480,
        },
    )];
    let mut w = DatasetWriter::create(&root, spec).expect("create");
    // Moving content plus camera-like noise (±4 levels, new every frame), which is what makes
    // real footage costlier to code than clean synthetic pictures.
    let pictures: Vec<RgbImage> = (0..N)
        .map(|t| {
            let mut img = picture(0, 0, t, 640, 480);
            for (k, v) in img.iter_mut().enumerate() {
                let h = (k as u64 ^ (t as u64) << 32).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61;
                *v = v.saturating_add(h as u8).saturating_sub(4);
            }
            img
        })
        .collect();
    for (t, img) in pictures.iter().enumerate() {
        w.add_raw_frame(RawFrameRecord {
            images: &[("laptop", img)],
            state: &[0.0; 6],
            action: &[0.0; 6],
            timestamp: t as f32 / 30.0,
            subtask: None,
        })
        .expect("add");
    }
    let start = Instant::now();
    w.save_episode("speed").expect("save");
    w.finalize().expect("finalize");
    let encode = start.elapsed().as_secs_f64();
    let ds = Dataset::open(&root).expect("open");
    let all: Vec<usize> = (0..N).collect();
    let start = Instant::now();
    for chunk in all.chunks(64) {
        ds.frames(chunk).expect("frames");
    }
    let sequential = start.elapsed().as_secs_f64();
    let picks: Vec<usize> = (0..64).map(|i| (i * 7919) % N).collect();
    let start = Instant::now();
    for &i in &picks {
        ds.frame(i).expect("frame");
    }
    let random = start.elapsed().as_secs_f64();
    let size = std::fs::metadata(root.join(format!("videos/{LAPTOP}/chunk-000/file-000.mp4")))
        .expect("file")
        .len();
    eprintln!(
        "480x640 {}: encode {:.0} frames/s (save_episode + flush), sequential decode {:.0} \
         frames/s, random single-frame reads {:.0} frames/s; {} frames in {} kB",
        VideoSpec::default().codec.encoder().unwrap_or("?"),
        N as f64 / encode,
        N as f64 / sequential,
        picks.len() as f64 / random,
        N,
        size / 1024
    );
    let _ = std::fs::remove_dir_all(&root);
}
