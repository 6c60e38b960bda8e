"""`data.smooth` / `mmalign data smooth` with a trained dense head (`dense:<path>`): a head
retrained at the same path is another reward, so its labels are scored again rather than the
old head's being reused from the cache (the key names the head's weight files, as
`diffusion.dense` keys its weights)."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from mmalign.diffusion import smooth as smooth_mod


class Accelerator:
    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass


def grey(level: int):
    return PILImage.fromarray(np.full((8, 8, 3), level, dtype=np.uint8))


def rows() -> Dataset:
    features = Features({"prompt": Value("string"), "chosen": Image(), "rejected": Image()})
    levels = [(200, 10), (30, 160), (90, 120)]
    return Dataset.from_dict(
        {
            "prompt": [f"p{i}" for i in range(len(levels))],
            "chosen": [grey(c) for c, _ in levels],
            "rejected": [grey(r) for _, r in levels],
        },
        features=features,
    )


def fake_head(folder, weights: bytes) -> None:
    """The files `checkpoint_folder` recognises as a dense head (never loaded here)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"mmalign_dense_reward": 1}))
    (folder / "model.safetensors").write_bytes(weights)


def test_a_retrained_dense_head_rescores(tmp_path, monkeypatch):
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    head = tmp_path / "head"
    fake_head(head, b"old")
    loaded = []

    class Head:  # brightness, or its negative once "retrained" (the weight file changed)
        def __init__(self) -> None:
            self.sign = 1.0 if (head / "model.safetensors").read_bytes() == b"old" else -1.0
            loaded.append(self.sign)

        def score(self, images, prompts):
            return torch.tensor([self.sign * float(np.asarray(im).mean()) for im in images])

    import mmalign.rewards as rewards

    monkeypatch.setattr(rewards, "get_scorer", lambda name, **kwargs: Head())
    spec = {"scorer": f"dense:{head}"}
    data = rows()
    first, _ = smooth_mod.smoothed_rows(data, spec, Accelerator())
    assert first["smooth_swapped"] == [False, True, True] and loaded == [1.0]
    again, _ = smooth_mod.smoothed_rows(data, spec, Accelerator())
    assert loaded == [1.0] and again["label"] == first["label"]  # the same head: the cached labels
    fake_head(head, b"retrained")
    stat = (head / "model.safetensors").stat()
    os.utime(head / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    retrained, _ = smooth_mod.smoothed_rows(data, spec, Accelerator())
    assert loaded == [1.0, -1.0]  # scored again with the new head
    assert retrained["smooth_swapped"] == [True, False, False]


def test_the_cli_key_names_the_head_too(tmp_path, monkeypatch):
    head = tmp_path / "head"
    fake_head(head, b"old")
    data = rows()
    calls = []

    class Head:
        name = f"dense:{head}"

        def score(self, images, prompts):
            calls.append(1)
            return torch.tensor([float(np.asarray(im).mean()) for im in images])

    import mmalign.rewards as rewards

    monkeypatch.setattr(rewards, "get_scorer", lambda name, **kwargs: Head())
    out = tmp_path / "out"
    smooth_mod.smooth_dataset(data, f"dense:{head}", out, progress=False)
    smooth_mod.smooth_dataset(data, f"dense:{head}", out, progress=False)
    assert len(calls) == 1  # the whole output reused
    fake_head(head, b"retrained-longer")  # another size: another head
    smooth_mod.smooth_dataset(data, f"dense:{head}", out, progress=False)
    assert len(calls) == 2
