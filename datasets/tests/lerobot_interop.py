"""Interop between vla-datasets (Rust) and Python lerobot (LeRobot v3.0).

Run by `cargo test -p vla-datasets --test interop` only when `.venv-lerobot/bin/python`
exists at the workspace root.

    python lerobot_interop.py read  DIR EXPECTED_JSON   # load a dataset written by Rust
    python lerobot_interop.py write DIR                 # create a dataset for Rust to read

Sub-tasks follow lerobot 0.4.4's own convention: an int64 `subtask_index` feature per frame
and `meta/subtasks.parquet` whose pandas index (named `subtask`) holds the sentences, in
`subtask_index` order (`LeRobotDataset.__getitem__` sets `item["subtask"]` from
`meta.subtasks.iloc[subtask_index].name`).
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
    if "subtasks" in expected:
        read_subtasks(root, ds, expected)
    else:
        assert "subtask_index" not in ds.features, list(ds.features)
        assert not (root / "meta" / "subtasks.parquet").exists()
        assert ds.meta.subtasks is None
        assert "subtask" not in ds[0]
    print("lerobot read OK:", ds.num_episodes, "episodes", ds.num_frames, "frames")


def read_subtasks(root: Path, ds, expected: dict) -> None:
    import pandas as pd

    subtasks = pd.read_parquet(root / "meta" / "subtasks.parquet")
    assert subtasks.index.name == "subtask", subtasks.index.name
    assert list(subtasks.index) == expected["subtasks"], list(subtasks.index)
    assert list(subtasks.columns) == ["subtask_index"], list(subtasks.columns)
    assert str(subtasks["subtask_index"].dtype) == "int64", subtasks["subtask_index"].dtype
    assert list(subtasks["subtask_index"]) == list(range(len(expected["subtasks"])))
    sentence_of = {int(i): s for s, i in subtasks["subtask_index"].items()}

    feature = ds.features["subtask_index"]
    assert feature["dtype"] == "int64" and tuple(feature["shape"]) == (1,), feature
    assert ds.meta.subtasks is not None
    assert "subtask_index" in ds.meta.stats, list(ds.meta.stats)
    want_index, want_sentence = expected["frame_subtask_index"], expected["frame_subtask"]
    assert len(want_index) == ds.num_frames == len(want_sentence)
    for i in range(ds.num_frames):
        item = ds[i]
        index = item["subtask_index"]
        assert str(index.dtype) == "torch.int64", index.dtype
        assert index.item() == want_index[i], (i, index.item(), want_index[i])
        assert sentence_of[index.item()] == want_sentence[i], (i, sentence_of[index.item()])
        # lerobot's own lookup.
        assert item["subtask"] == want_sentence[i], (i, item["subtask"])
    print("lerobot read subtasks OK:", len(subtasks), "subtasks")


def write(root: Path) -> None:
    import pandas as pd
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
        "subtask_index": {"dtype": "int64", "shape": (1,), "names": None},
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
                    # Episode 0: a, a, b; episode 1: b, b, a.
                    "subtask_index": np.array([(ep + (t >= 2)) % 2], np.int64),
                    "task": f"python task {ep}",
                }
            )
        ds.save_episode()
    if hasattr(ds, "finalize"):
        ds.finalize()
    # lerobot 0.4.4 reads meta/subtasks.parquet but has no writer for it.
    subtasks = pd.DataFrame(
        {"subtask_index": [0, 1]},
        index=pd.Index(["python subtask a", "python subtask b"], name="subtask"),
    )
    subtasks.to_parquet(root / "meta" / "subtasks.parquet")
    assert LeRobotDataset("local/vla_python_written", root=root)[4]["subtask"] == "python subtask b"
    print("lerobot write OK")


if __name__ == "__main__":
    mode, root = sys.argv[1], Path(sys.argv[2])
    if mode == "read":
        read(root, json.loads(sys.argv[3]))
    elif mode == "write":
        write(root)
    else:
        raise SystemExit(f"unknown mode {mode}")
