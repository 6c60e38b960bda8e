"""Caches of values computed from images are not reused across the 16-bit / transparency change.

Review 4 changed how images are read: 16-bit and float greyscale at their bit depth (they were
clipped white) and transparency composited onto white (`schema.to_rgb`; `convert("RGB")`
showed the colour stored under transparent pixels). The pre-encoding cache's version was bumped
for it; the dense weights (`diffusion.dense`, heatmaps of the training pixels) and SmPO's soft
labels (`data.smooth`, `mmalign data smooth`: rewards of the images) are keyed by the data,
scorer and options alone, which the change leaves as they were, so an old cache kept serving
values of the old pixels.
"""

from __future__ import annotations

import io
import json

import numpy as np
import torch
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image
from safetensors.torch import save_file

from mmalign.config import from_dict
from mmalign.data.cache import digest
from mmalign.diffusion import dense as dense_mod
from mmalign.diffusion import smooth as smooth_mod
from mmalign.diffusion.data import PairImages
from mmalign.train.config import DenseConfig

R, LATENT = 32, 4


def _transparent_png(red: int) -> bytes:
    """Half opaque red, half fully transparent over black: white once composited."""
    array = np.zeros((R, R, 4), dtype=np.uint8)
    array[:, : R // 2] = (red, 0, 0, 255)
    buf = io.BytesIO()
    Image.fromarray(array, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


class _Red:
    """Heatmap: the red channel."""

    def dense(self, images, prompts):
        return {"artifact": torch.as_tensor(images)[:, :1].float()}


def test_dense_weights_under_the_key_before_the_change_are_computed_again(tmp_path, monkeypatch):
    n = 3
    rows = Dataset.from_dict({
        "prompt": ["a red half"] * n,
        "chosen": [_transparent_png(200) for _ in range(n)],
        "rejected": [_transparent_png(90) for _ in range(n)],
    })  # fmt: skip
    images = PairImages(rows, R)
    monkeypatch.setattr("mmalign.rewards.get_scorer", lambda *a, **k: _Red())
    spec = from_dict(DenseConfig, {"scorer": "toy:flaws"}, "diffusion.dense")
    right = dense_mod.pair_weights(spec, images, LATENT).weights  # no cache: today's pixels
    # what the code before the change wrote, keyed without a version: stale values stand in
    old = [spec.scorer, spec.map, spec.sides, spec.normalize, LATENT, n, "winner"]
    stale = torch.full_like(right, 0.5)
    save_file({"weights": stale}, str(tmp_path / f"dense-weights-{digest(old)}.safetensors"))
    got = dense_mod.pair_weights(spec, images, LATENT, cache_dir=tmp_path).weights
    torch.testing.assert_close(got, right)  # computed again, not the old file
    again = dense_mod.pair_weights(spec, images, LATENT, cache_dir=tmp_path).weights
    assert torch.equal(again, got)  # and the new cache is reused


class _Brightness:
    # a registered name (its files are checked before get_scorer, patched below, builds it)
    name = "toy:fidelity"

    def __init__(self) -> None:
        self.scored = 0

    def score(self, images, prompts):
        self.scored += len(images)
        return torch.tensor([float(np.asarray(im.convert("L")).mean()) for im in images])


def _pairs() -> Dataset:
    features = Features({"prompt": Value("string"), "chosen": ImageFeature(),
                         "rejected": ImageFeature()})  # fmt: skip
    grey = [(200, 10), (30, 160), (90, 120)]
    return Dataset.from_dict({
        "prompt": [f"p{i}" for i in range(len(grey))],
        "chosen": [Image.new("RGB", (8, 8), (c,) * 3) for c, _ in grey],
        "rejected": [Image.new("RGB", (8, 8), (r,) * 3) for _, r in grey],
    }, features=features)  # fmt: skip


def _age(out, key: str) -> None:
    """Make `out` what the code before the change left: its key without a version, and other
    rewards (standing in for those of the old pixels)."""
    meta = json.loads((out / smooth_mod.REPORT).read_text())
    (out / smooth_mod.REPORT).write_text(json.dumps({**meta, "key": key}))
    stale = {"chosen": torch.zeros(3, dtype=torch.float64),
             "rejected": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)}  # fmt: skip
    torch.save(stale, out / "rewards.pt")


def test_smoothed_output_under_the_key_before_the_change_is_scored_again(tmp_path):
    rows, out = _pairs(), tmp_path / "out"
    first = _Brightness()
    smooth_mod.smooth_dataset(rows, first, out, progress=False)
    right = smooth_mod.load_report(out).labels.label.clone()
    _age(out, f"{rows._fingerprint};{first.name}")  # the CLI's key before the change
    assert not torch.equal(smooth_mod.load_report(out).labels.label, right)
    again = _Brightness()
    report = smooth_mod.smooth_dataset(rows, again, out, progress=False)
    assert again.scored == 2 * len(rows)  # scored again, not the old output reused
    torch.testing.assert_close(report.labels.label, right)
    third = _Brightness()
    smooth_mod.smooth_dataset(rows, third, out, progress=False)
    assert third.scored == 0  # today's output is reused


def test_a_recipes_smoothed_cache_before_the_change_is_scored_again(tmp_path, monkeypatch):
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    scorers: list[_Brightness] = []

    def make(name, **kwargs):
        scorers.append(_Brightness())
        return scorers[-1]

    monkeypatch.setattr("mmalign.rewards.get_scorer", make)

    class Accelerator:
        is_main_process = True

        def wait_for_everyone(self) -> None:
            pass

    rows, spec = _pairs(), {"scorer": "toy:fidelity"}
    first, first_report = smooth_mod.smoothed_rows(rows, spec, Accelerator())
    old_key = f"{rows._fingerprint};toy:fidelity"  # smoothed_rows' key before the change
    folder = tmp_path / "cache" / "smoothed" / digest(old_key)
    if not folder.is_dir():  # the version went into the folder's name: the old one is not read
        first.save_to_disk(str(folder))
        (folder / smooth_mod.REPORT).write_text(json.dumps({"key": old_key, "scorer": "x"}))
    _age(folder, old_key)
    n = len(scorers)
    again, report = smooth_mod.smoothed_rows(rows, spec, Accelerator())
    assert len(scorers) == n + 1 and scorers[-1].scored == 2 * len(rows)
    assert again["label"] == first["label"]
    torch.testing.assert_close(report.labels.label, first_report.labels.label)
