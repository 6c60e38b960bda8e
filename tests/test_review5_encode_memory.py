"""The pre-encoding cache holds the accelerator's memory to one batch at a time.

`precompute` kept every encoded batch of a shard (up to SHARD_ROWS = 4096 rows) where the
encoder returned it, on the accelerator, until the shard was written, and concatenated them
there: for FLUX about 16 GB of T5 embeddings, doubled by the concatenation, out of memory on a
40-48 GB card. Each batch now goes to the CPU as it is added; the shards are the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from PIL import Image

from mmalign.diffusion import encode
from mmalign.diffusion.data import PairImages
from mmalign.diffusion.encode import EncodedPairs, Encoder, precompute
from mmalign.diffusion.load import DiffusionModel, tiny_sd_pipeline


def _rows(n: int) -> Dataset:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 200, 0), (0, 90, 200)]
    return Dataset.from_dict(
        {
            "prompt": [f"a square number {i}" for i in range(n)],
            "chosen": [Image.new("RGB", (32, 32), colours[i % 5]) for i in range(n)],
            "rejected": [Image.new("RGB", (32, 32), colours[(i + 2) % 5]) for i in range(n)],
        }
    )


class _Accelerated(torch.Tensor):
    """A tensor standing for one on the accelerator: `.cpu()` gives a plain CPU tensor."""

    def cpu(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.as_subclass(torch.Tensor).cpu(*args, **kwargs)


class _AcceleratorEncoder(Encoder):
    """The real encoder, its outputs marked as left on the accelerator."""

    def encode(self, batch: dict[str, Any], rows: list[int]) -> dict[str, torch.Tensor]:
        return {k: v.as_subclass(_Accelerated) for k, v in super().encode(batch, rows).items()}


def _shards(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob("shard-*.safetensors"))]


def test_the_shards_hold_what_the_encoder_returns_byte_for_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(encode, "SHARD_ROWS", 4)  # 5 rows in batches of 2: shards of 4 and 1
    model = DiffusionModel(tiny_sd_pipeline(seed=0), "sd", "tiny")
    images = PairImages(_rows(5), 32)
    folder = precompute(Encoder(model), images, tmp_path / "c", "k", batch_size=2, progress=False)
    assert len(_shards(folder)) == 2
    # the same encodings, concatenated as the shards were always written
    encoder, parts = Encoder(model), []
    for start in range(0, 5, 2):
        batch = encode_batch(images, range(start, min(start + 2, 5)))
        parts.append(encoder.encode(batch, list(range(start, min(start + 2, 5)))))
    cached = EncodedPairs(folder)
    for i in range(5):
        batch, at = parts[i // 2], i % 2
        for key, value in cached[i].items():
            assert torch.equal(value, batch[key][at].contiguous()), (i, key)
    # an encoder whose tensors are "on the accelerator" writes the same bytes
    other = precompute(_AcceleratorEncoder(model), images, tmp_path / "d", "k", batch_size=2,
                       progress=False)  # fmt: skip
    assert _shards(other) == _shards(folder)


def encode_batch(images: PairImages, rows: range) -> dict[str, Any]:
    from mmalign.diffusion.data import collate

    return collate([images[i] for i in rows])


def test_each_batch_leaves_the_accelerator_as_it_is_added(tmp_path, monkeypatch):
    monkeypatch.setattr(encode, "SHARD_ROWS", 4)
    model = DiffusionModel(tiny_sd_pipeline(seed=0), "sd", "tiny")
    images = PairImages(_rows(5), 32)
    concatenated: list[type] = []
    real_cat = torch.cat

    def cat(tensors, *args, **kwargs):
        concatenated.extend(type(t) for t in tensors)
        return real_cat(tensors, *args, **kwargs)

    saved: list[dict[str, torch.Tensor]] = []
    real_save = encode.save_file

    def save_file(tensors, path, *args, **kwargs):
        if "shard-" in path:
            saved.append(dict(tensors))
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(encode, "save_file", save_file)
    # the encoder's own concatenations are of plain tensors; only its outputs are marked
    monkeypatch.setattr(torch, "cat", cat)
    precompute(_AcceleratorEncoder(model), images, tmp_path / "c", "k", batch_size=2,
               progress=False)  # fmt: skip
    monkeypatch.setattr(torch, "cat", real_cat)
    assert len(saved) == 2
    # what a shard concatenates is on the CPU already (before: the accelerator's tensors)
    assert concatenated and _Accelerated not in concatenated
    assert all(type(t) is torch.Tensor and t.device.type == "cpu"
               for shard in saved for t in shard.values())  # fmt: skip
