"""Image preference pairs for diffusion training: find the rows, decode and crop the images.

`open_pairs` accepts a `save_to_disk` PreferencePair folder, Pick-a-Pic (parquet shards,
a saved copy or a hub id; the split is always named) or `toy:<kind>`, which builds that toy
dataset on first use and caches it. Rows whose images cannot be decoded are skipped and
counted in the returned `ValidationReport`, never dropped silently.

`PairImages` turns a row into pixels for both images plus what SDXL's micro-conditioning
needs: each image's original size and the crop taken from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, load_dataset, load_from_disk

from ..data.schema import ValidationReport, to_pil_image, validate_rows
from ..hub import hub_errors, require_one
from ..toy.cache import TOY_PREFIX, toy_pairs


def _is_saved(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def open_pairs(
    path: str,
    split: str,
    *,
    toy_options: Mapping[str, Any] | None = None,
    model: str | None = None,
    max_samples: int | None = None,
) -> tuple[Dataset, ValidationReport]:
    """PreferencePair image rows and the report of what was skipped and why."""
    if path.startswith(TOY_PREFIX):
        path = str(toy_pairs(path[len(TOY_PREFIX) :], toy_options or {}, model))
    elif toy_options:
        raise ValueError("data.toy is only for data.path: toy:<kind>")
    local = Path(path)
    if local.is_file():
        raise ValueError(f"data.path {path} is a file; give a dataset folder or a hub id")
    if local.is_dir() and _is_saved(local):
        ds = load_from_disk(str(local))
        if not isinstance(ds, Dataset):
            if split not in ds:
                raise ValueError(f"{path} has splits {list(ds)}; data.split is '{split}'")
            ds = ds[split]
    else:  # parquet shards in a folder, or a hub id
        if not local.exists():
            require_one(path, "data.path", repo_type="dataset")
        with hub_errors(path, "data.path"):
            ds = load_dataset(path, split=split)
    if "jpg_0" in ds.column_names:  # Pick-a-Pic columns: its reader applies the tie policy
        from ..data.pickapic import load_pickapic

        pairs, report = load_pickapic(path, split, max_rows=max_samples)
        assert isinstance(pairs, Dataset)
        return pairs, report
    if max_samples is not None:
        ds = ds.select(range(min(max_samples, len(ds))))
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"{path}: the dataset has columns {ds.column_names} but a diffusion recipe needs "
            f"prompt, chosen and rejected (missing: {', '.join(missing)}); Pick-a-Pic style "
            "data needs caption, jpg_0, jpg_1, label_0, label_1"
        )
    checked, report = validate_rows(ds, "image", strict=False)
    assert isinstance(checked, Dataset)
    return checked, report


def crop_and_resize(
    image, resolution: int
) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """Pixels [3,R,R] in [-1,1], the original (h, w) and the (top, left) of the centre crop
    in the resized image: SDXL's `add_time_ids` are built from these real values."""
    import numpy as np
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    scale = resolution / min(w, h)
    new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0)
    return array.permute(2, 0, 1).contiguous(), (h, w), (top, left)


class PairImages(torch.utils.data.Dataset):
    """Row i -> prompt, pixels [2,3,R,R] (chosen, rejected), time ids [2,6], label."""

    def __init__(self, rows: Dataset, resolution: int):
        self.rows = rows
        self.resolution = resolution
        self.has_label = "label" in rows.column_names

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[int(index)]
        pixels, time_ids = [], []
        for name in ("chosen", "rejected"):
            px, original, crop = crop_and_resize(to_pil_image(row[name]), self.resolution)
            pixels.append(px)
            time_ids.append(torch.tensor([*original, *crop, self.resolution, self.resolution]))
        label = row.get("label") if self.has_label else None
        return {
            "prompt": row["prompt"],
            "pixels": torch.stack(pixels),
            "time_ids": torch.stack(time_ids).float(),
            "label": torch.tensor(1.0 if label is None else float(label)),
        }


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt": [item["prompt"] for item in items]}
    for key in items[0]:
        if key != "prompt":
            out[key] = torch.stack([item[key] for item in items])
    return out


def has_soft_labels(rows: Dataset) -> bool:
    """Whether any label lies strictly between 0 and 1 (then losses receive the labels)."""
    if "label" not in rows.column_names:
        return False
    labels = [x for x in rows["label"] if x is not None]
    return any(0.0 < float(x) < 1.0 for x in labels)
