"""Video interop between vla-datasets (Rust) and Python lerobot 0.4.4 (LeRobot v3.0 videos).

Run by `cargo test -p vla-datasets --test video` only when `.venv-lerobot/bin/python`
exists at the workspace root.

    python lerobot_video.py write DIR REF   # SO-100-like video dataset; decoded frames to REF
    python lerobot_video.py read  DIR REF   # load a dataset written by Rust; frames to REF

REF gets what lerobot's own `LeRobotDataset.__getitem__` returns for every frame, in index
order: `REF/frames.bin` (per frame, per camera in sorted key order, H*W*3 RGB bytes, the
float images times 255 rounded) and `REF/frames.json` (cameras, shape, and per frame index,
episode, frame index, timestamp, state, action, task).

Decoding uses lerobot's "pyav" backend (its own `decode_video_frames`): torchcodec needs
FFmpeg's libavdevice/libavfilter, which `make setup` does not install.
"""

import json
import sys
from pathlib import Path

import numpy as np

H, W = 480, 640
FPS = 30
CAMERAS = ("laptop", "phone")
JOINTS = (
    "shoulder_pan",
    "shoulder_lift",
    "elbow_flex",
    "wrist_flex",
    "wrist_roll",
    "gripper",
)
EPISODE_LENGTHS = (10, 9)


def picture(cam: int, ep: int, t: int) -> np.ndarray:
    """A gradient whose blue rises 12 levels per frame, with a bright square that moves 24 px
    per frame, different per camera and episode: a neighbouring frame differs everywhere, so
    an off-by-one frame is clearly farther than the codec's error."""
    y, x = np.mgrid[0:H, 0:W]
    img = np.empty((H, W, 3), np.uint8)
    img[..., 0] = (x * 255 // (W - 1)).astype(np.uint8)
    img[..., 1] = (y * 255 // (H - 1)).astype(np.uint8)
    img[..., 2] = 20 + 60 * cam + 30 * ep + 12 * t
    size = 80
    x0 = (40 + 24 * t + 100 * ep) % (W - size)
    y0 = (60 + 16 * t + 150 * cam) % (H - size)
    img[y0 : y0 + size, x0 : x0 + size] = (255, 255 - 120 * cam, 40 * ep)
    return img


def dump(ds, out: Path) -> None:
    """Every frame as lerobot decodes it, to `out/frames.bin` and `out/frames.json`."""
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted(k for k in ds.meta.camera_keys)
    h, w, _ = ds.meta.features[keys[0]]["shape"]
    frames = []
    with open(out / "frames.bin", "wb") as f:
        for i in range(ds.num_frames):
            item = ds[i]
            for key in keys:
                img = item[key]
                assert tuple(img.shape) == (3, h, w), (key, img.shape)
                hwc = (img.permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
                f.write(np.ascontiguousarray(hwc).tobytes())
            frames.append(
                {
                    "index": int(item["index"]),
                    "episode_index": int(item["episode_index"]),
                    "frame_index": int(item["frame_index"]),
                    "timestamp": float(item["timestamp"]),
                    "state": item["observation.state"].tolist(),
                    "action": item["action"].tolist(),
                    "task": item["task"],
                }
            )
    meta = {"cameras": keys, "height": h, "width": w, "frames": frames}
    (out / "frames.json").write_text(json.dumps(meta))


def write(root: Path, out: Path) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    names = [f"{j}.pos" for j in JOINTS]
    features = {
        "action": {"dtype": "float32", "shape": (6,), "names": names},
        "observation.state": {"dtype": "float32", "shape": (6,), "names": names},
    }
    for cam in CAMERAS:
        features[f"observation.images.{cam}"] = {
            "dtype": "video",
            "shape": (H, W, 3),
            "names": ["height", "width", "channels"],
        }
    ds = LeRobotDataset.create(
        repo_id="local/so100_video",
        fps=FPS,
        root=root,
        robot_type="so100_follower",
        features=features,
        use_videos=True,
        video_backend="pyav",
    )
    for ep, length in enumerate(EPISODE_LENGTHS):
        for t in range(length):
            frame = {
                "observation.state": np.array(
                    [ep * 100 + t + 0.25 * j for j in range(6)], np.float32
                ),
                "action": np.array([-(ep * 100 + t) - 0.5 * j for j in range(6)], np.float32),
                "task": f"grasp the cube {ep}",
            }
            for c, cam in enumerate(CAMERAS):
                frame[f"observation.images.{cam}"] = picture(c, ep, t)
            ds.add_frame(frame)
        ds.save_episode()
    ds.finalize()
    reread = LeRobotDataset("local/so100_video", root=root, video_backend="pyav")
    dump(reread, out)
    print("lerobot video write OK:", reread.num_episodes, "episodes", reread.num_frames, "frames")


def read(root: Path, out: Path) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/rust_video", root=root, video_backend="pyav")
    for key in ds.meta.video_keys:
        info = ds.meta.features[key]
        assert info["dtype"] == "video", info
        assert info["info"]["video.pix_fmt"] == "yuv420p", info["info"]
        for ep in range(ds.num_episodes):
            path = root / ds.meta.get_video_file_path(ep, key)
            assert path.exists(), path
    dump(ds, out)
    print("lerobot video read OK:", ds.num_episodes, "episodes", ds.num_frames, "frames")


if __name__ == "__main__":
    mode, root, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if mode == "write":
        write(root, out)
    elif mode == "read":
        read(root, out)
    else:
        raise SystemExit(f"unknown mode {mode}")
