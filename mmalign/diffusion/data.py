"""Image preference pairs for diffusion training: find the rows, decode and crop the images.

`open_pairs` accepts a `save_to_disk` PreferencePair folder, Pick-a-Pic (parquet shards,
a saved copy or a hub id; the split is always named) or `toy:<kind>`, which builds that toy
dataset on first use and caches it. Rows whose images cannot be decoded are skipped and
counted in the returned `ValidationReport`, never dropped silently.

`PairImages` turns a row into pixels for both images plus what SDXL's micro-conditioning
needs: each image's original size and the crop taken from it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, load_dataset

from ..config import InputError
from ..data.folder_kind import folder_problem, kind_problem, pairs_kind
from ..data.pickapic import load_pickapic
from ..data.pickapic_files import check_saved_split, is_pickapic_folder
from ..data.saved import load_saved, require_rows
from ..data.schema import ValidationReport, to_pil_image, to_rgb, validate_rows
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
    tie_policy: str = "drop",
    require_different: bool = True,
    key: str = "data.path",
) -> tuple[Dataset, ValidationReport]:
    """PreferencePair image rows and the report of what was skipped and why; `tie_policy`:
    what Pick-a-Pic-format data does with its ties (`drop` for training, `half` to score
    them, as the evaluation protocol does); `require_different`: whether its rows marked
    `are_different: false` are skipped (and counted) rather than kept (`data.keep_identical`).
    One saved Dataset (not a DatasetDict) is one split, and `split` must be that one
    (`check_saved_split`). `key`: where the user named `path`, for messages (a recipe's
    `data.path`; a command's DATA); no row to use (none held, or every one skipped) raises an
    InputError naming it (`require_rows`)."""
    toy = path.startswith(TOY_PREFIX)  # built for the run, whatever split it is named
    if toy:
        path = str(_toy_pairs_folder(path, toy_options, model))
    elif toy_options:
        raise ValueError("data.toy is only for data.path: toy:<kind>")
    # `~/data` from a recipe or `key=value` (no shell expands it there): the existence check
    # (hub.problem) expands it, so without this the folder was looked up on the hub
    path = os.path.expanduser(path)
    local = Path(path)
    problem = folder_problem(local, key) or kind_problem(
        pairs_kind(local, split), "image", key, path, "a model.kind: diffusion recipe"
    )  # empty, a training run, a toy build's folder instead of its pairs/, or text pairs
    if problem is not None:
        raise InputError(problem)
    if local.is_file():
        raise ValueError(f"{key} {path} is a file; give a dataset folder or a hub id")
    pickapic = local.is_dir() and not _is_saved(local) and is_pickapic_folder(local)
    if not pickapic:  # (Pick-a-Pic shards go straight to their reader, below)
        if local.is_dir() and _is_saved(local):
            ds = load_saved(local)  # (a folder saved from 0 rows: refused below, by key)
            if not isinstance(ds, Dataset):
                if split not in ds:
                    raise ValueError(f"{path} has splits {list(ds)}; data.split is '{split}'")
                ds = ds[split]
            elif not toy:  # one saved split: the one asked for, never the whole file instead
                check_saved_split(ds, split, path)
        else:  # parquet shards in a folder, or a hub id
            if not local.exists():
                require_one(path, key, repo_type="dataset")
            with hub_errors(path, key, repo_type="dataset"):
                ds = load_dataset(path, split=split)
        pickapic = "jpg_0" in ds.column_names
    if pickapic:  # Pick-a-Pic columns: its reader applies the tie policy
        # A local shard folder is not opened with `load_dataset(folder)` first: that knows
        # only the split names train/test/validation from file names (test_unique, or a
        # labeling export's heldout, were "Unknown split") and converts every split first.
        pairs, report = load_pickapic(
            path,
            split,
            max_rows=max_samples,
            tie_policy=tie_policy,  # type: ignore[arg-type]
            require_different=require_different,
        )
        assert isinstance(pairs, Dataset)
        require_rows(pairs, report, key, path)
        return pairs, report
    if max_samples is not None:
        ds = ds.select(range(min(max_samples, len(ds))))
    require_rows(ds, None, key, path)
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"{path}: the dataset has columns {ds.column_names} but a diffusion recipe needs "
            f"prompt, chosen and rejected (missing: {', '.join(missing)}); Pick-a-Pic style "
            "data needs caption, jpg_0, jpg_1, label_0, label_1"
        )
    checked, report = validate_rows(ds, "image", strict=False)
    assert isinstance(checked, Dataset)
    require_rows(checked, report, key, path)
    return checked, report


def _toy_pairs_folder(path: str, toy_options: Mapping[str, Any] | None, model: str | None) -> Path:
    """The `pairs/` folder of toy dataset `path` (`toy:<kind>`), built on first use."""
    from ..toy.datasets import MODEL_KINDS

    kind = path[len(TOY_PREFIX) :]
    # only the kinds that sample a model take one: toy:flaws (rendered) trains as it is
    return toy_pairs(kind, toy_options or {}, model if kind in MODEL_KINDS else None)


RESIZE_FILTERS = ("bilinear", "bicubic", "lanczos", "nearest")


def crop_and_resize(
    image, resolution: int, resize_filter: str = "bilinear", flip: bool = False
) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """Pixels [3,R,R] in [-1,1], the original (h, w) and the (top, left) of the centre crop
    in the resized image: SDXL's `add_time_ids` are built from these real values.

    The geometry is torchvision's `Resize(R)` + `CenterCrop(R)` (short side to R, long side
    `int(R * long / short)`, offsets `round((size - R) / 2)`), with PIL's `resize_filter`:
    bilinear is what Diffusion-DPO's training code and diffusers' script use (Wallace et al.
    2024), so their data is reproduced pixel for pixel. `flip` mirrors the crop left to right
    (torchvision's RandomHorizontalFlip comes after the crop too); the crop's `left` is then
    counted from the mirrored image's left edge, so SDXL's crop condition stays true.
    """
    import numpy as np
    from PIL import Image

    image = to_rgb(image)  # 16-bit greyscale scaled, not clipped to white (schema.to_rgb)
    w, h = image.size
    if w <= h:
        new_w, new_h = resolution, int(resolution * h / w)
    else:
        new_w, new_h = int(resolution * w / h), resolution
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.Resampling[resize_filter.upper()])
    top, left = round((new_h - resolution) / 2), round((new_w - resolution) / 2)
    image = image.crop((left, top, left + resolution, top + resolution))
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        left = new_w - resolution - left
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0)
    return array.permute(2, 0, 1).contiguous(), (h, w), (top, left)


def flip_coin(seed: int, row: int, side: int) -> bool:
    """Whether image `side` (0 chosen, 1 rejected) of `row` is mirrored: a fair coin fixed by
    (run seed, row, side), so the cached and uncached paths, a resumed run and every process of
    a multi-process run see the same pixels. The script draws a new coin at every read."""
    import random

    return random.Random(f"flip-{seed}-{row}-{side}").random() < 0.5


class PairImages(torch.utils.data.Dataset):
    """Row i -> prompt, pixels [2,3,R,R] (chosen, rejected), time ids [2,6], label."""

    def __init__(
        self,
        rows: Dataset,
        resolution: int,
        *,
        resize_filter: str = "bilinear",
        flip_seed: int | None = None,
        flip_pairs: bool = False,
    ):
        if resize_filter not in RESIZE_FILTERS:
            raise ValueError(
                f"resize_filter must be one of {', '.join(RESIZE_FILTERS)}, got {resize_filter!r}"
            )
        self.rows = rows
        self.resolution = resolution
        self.resize_filter = resize_filter
        self.flip_seed = flip_seed  # None: no flips
        # one coin for both images of a pair (diffusers' SDXL script flips them stacked), else
        # one per image (its SD1.5 script runs RandomHorizontalFlip on each)
        self.flip_pairs = flip_pairs
        self.has_label = "label" in rows.column_names

    def describe(self) -> str:
        """What besides the rows decides the pixels (part of the pre-encoding cache's key)."""
        flip = "none" if self.flip_seed is None else f"seed{self.flip_seed}"
        if self.flip_seed is not None and self.flip_pairs:
            flip += "-pairs"
        return f"filter={self.resize_filter};flip={flip}"

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[int(index)]
        pixels, time_ids = [], []
        for side, name in enumerate(("chosen", "rejected")):
            coin = 0 if self.flip_pairs else side
            flip = self.flip_seed is not None and flip_coin(self.flip_seed, int(index), coin)
            try:
                px, original, crop = crop_and_resize(
                    to_pil_image(row[name]), self.resolution, self.resize_filter, flip
                )
            except ValueError as err:  # an image mode it cannot read (`to_rgb`): say which
                raise ValueError(f"row {int(index)}, {name} image: {err}") from err
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
    """Whether any label is not 1 (then losses receive the labels), as the VLM collator does.

    A label is P(chosen is preferred): a hard label 0 says the *rejected* image won, so it
    must reach the loss too (dpo / smpo flip that pair; with a loss that ignores labels such
    data is a ConfigError, `check_hard_labels`) rather than being dropped and the pair
    trained the wrong way round."""
    if "label" not in rows.column_names:
        return False
    labels = [x for x in rows["label"] if x is not None]
    return any(float(x) != 1.0 for x in labels)


def check_hard_labels(rows: Dataset, objective: Any) -> None:
    """A row with label 0 (its rejected image won) trains the right way only through a loss
    that reads labels (dpo, smpo): another (mapo, diffusion_kto) would train it backwards, so
    such data with such a loss is a ConfigError naming both, not a warning."""
    from ..config import ConfigError
    from ..losses import LOSSES

    if "label" not in rows.column_names:
        return
    zeros = sum(x is not None and float(x) == 0.0 for x in rows["label"])
    blind = sorted({t.loss for t in objective.terms if not LOSSES[t.loss].uses_label})
    if zeros and blind:
        raise ConfigError(
            f"{zeros} of {len(rows)} rows have label 0 (the rejected image preferred), and "
            f"loss {', '.join(blind)} ignores labels, so it would train them backwards: swap "
            "chosen and rejected in those rows, or use a loss that reads labels (dpo, smpo)"
        )
