"""Interop between vla-datasets (Rust) and Python lerobot (LeRobot v3.0).

Run by `cargo test -p vla-datasets --test interop` only when `.venv-lerobot/bin/python`
exists at the workspace root.

    python lerobot_interop.py read  DIR EXPECTED_JSON   # load a dataset written by Rust
    python lerobot_interop.py write DIR                 # create a dataset for Rust to read
"""

import json
import sys
from pathlib import Path

import numpy as np

H, W = 24, 32
STATE_DIM, ACTION_DIM = 13, 7


def read(root: Path, expected: dict) -> None:
    import pandas as pd
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    tasks = pd.read_parquet(root / "meta" / "tasks.parquet")
    assert tasks.index.name == "task", tasks.index.name
    assert list(tasks.index) == expected["tasks"], list(tasks.index)
    assert list(tasks["task_index"]) == list(range(len(expected["tasks"])))

    ds = LeRobotDataset("local/vla_rust_written", root=root)
    assert ds.fps == expected["fps"], ds.fps
    assert ds.num_episodes == expected["episodes"], ds.num_episodes
    assert ds.num_frames == expected["frames"], ds.num_frames
    for i in [0, ds.num_frames - 1]:
        item = ds[i]
        for cam in ("front", "wrist"):
            img = item[f"observation.images.{cam}"]
            assert tuple(img.shape) == (3, H, W), img.shape
            assert str(img.dtype) == "torch.float32", img.dtype
            assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
        assert tuple(item["observation.state"].shape) == (STATE_DIM,)
        assert str(item["observation.state"].dtype) == "torch.float32"
        assert tuple(item["action"].shape) == (ACTION_DIM,)
        assert item["task"] in expected["tasks"], item["task"]
    first = ds[0]
    assert first["task"] == expected["first_task"], first["task"]
    np.testing.assert_allclose(first["observation.state"].numpy(), expected["first_state"], rtol=1e-6)
    np.testing.assert_allclose(first["action"].numpy(), expected["first_action"], rtol=1e-6)
    stats = ds.meta.stats
    assert stats["observation.images.front"]["mean"].shape == (3, 1, 1)
    assert stats["observation.state"]["q01"].shape == (STATE_DIM,)
    print("lerobot read OK:", ds.num_episodes, "episodes", ds.num_frames, "frames")


def write(root: Path) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        "observation.state": {"dtype": "float32", "shape": (STATE_DIM,), "names": None},
        "action": {"dtype": "float32", "shape": (ACTION_DIM,), "names": None},
        "observation.images.front": {
            "dtype": "image",
            "shape": (H, W, 3),
            "names": ["height", "width", "channel"],
        },
        "observation.images.wrist": {
            "dtype": "image",
            "shape": (H, W, 3),
            "names": ["height", "width", "channel"],
        },
    }
    ds = LeRobotDataset.create(
        repo_id="local/vla_python_written",
        fps=10,
        root=root,
        robot_type="py_arm",
        features=features,
        use_videos=False,
    )
    for ep in range(2):
        for t in range(3):
            ds.add_frame(
                {
                    "observation.state": np.full(STATE_DIM, ep * 10 + t, np.float32),
                    "action": np.full(ACTION_DIM, t, np.float32),
                    "observation.images.front": np.full((H, W, 3), 10 * t, np.uint8),
                    "observation.images.wrist": np.full((H, W, 3), 100 + ep, np.uint8),
                    "task": f"python task {ep}",
                }
            )
        ds.save_episode()
    if hasattr(ds, "finalize"):
        ds.finalize()
    print("lerobot write OK")


if __name__ == "__main__":
    mode, root = sys.argv[1], Path(sys.argv[2])
    if mode == "read":
        read(root, json.loads(sys.argv[3]))
    elif mode == "write":
        write(root)
    else:
        raise SystemExit(f"unknown mode {mode}")
