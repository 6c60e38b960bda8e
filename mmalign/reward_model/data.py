"""Dense data for the reward head: one spec, the rows, and their tensors.

`open_dense(spec)` accepts
- `toy:flaws` (built on first use with `toy_options`, cached; the `dense/` folder of the set),
  and `toy:flaws:heldout`: a set built from the held-out prompts with another seed (1 unless
  the options say), so evaluation never sees a training prompt or image;
- a RichHF-18K folder (`<split>.tfrecord`, images from `$MMALIGN_RICHHF_IMAGES` or
  `<folder>/images`) or one `.tfrecord` file;
- a `save_to_disk` folder with dense columns (prompt, image, heatmaps, the four scores): a
  Dataset (one split: the one it records, else "train"), or a DatasetDict read at `split`;
- `toy:sd-samples`: toy-sd's own samples of held-out prompts (seed 1, 20 steps, guidance 2.5),
  their ground truth from `mmalign.toy.flaws.dense_scores` (no injected flaws: what the
  model's own images get wrong).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import InputError
from ..data.dense import DENSE_SCORES, DatasetDenseRows, DenseRow, DenseRows, Subset
from ..data.richhf import RichHFRows
from ..data.schema import ValidationReport, to_rgb
from ..toy.cache import TOY_PREFIX, toy_pairs

HELDOUT = {"prompt_split": "heldout", "seed": 1}


def open_dense(
    spec: str,
    split: str | None = "train",
    *,
    toy_options: Mapping[str, Any] | None = None,
    max_samples: int | None = None,
) -> tuple[DenseRows, ValidationReport | None]:
    """The dense rows of `spec` (see the module docstring) and the reader's skip report."""
    report: ValidationReport | None = None
    if spec == "toy:sd-samples":
        rows = toy_sd_rows(int(dict(toy_options or {}).get("n", 256)))
    elif spec.startswith(TOY_PREFIX):
        kind, _, variant = spec[len(TOY_PREFIX) :].partition(":")
        if kind != "flaws" or variant not in ("", "heldout"):
            raise InputError(f"dense data: {spec}: the toy dense set is toy:flaws[:heldout]")
        options = {**(HELDOUT if variant else {}), **dict(toy_options or {})}
        from datasets import load_from_disk

        folder = toy_pairs("flaws", options).parent / "dense"
        rows: DenseRows = DatasetDenseRows(load_from_disk(str(folder)), name=spec)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise InputError(f"dense data: {spec} does not exist (toy:flaws, a RichHF folder, "
                             "a .tfrecord file or a saved dense dataset)")  # fmt: skip
        if path.suffix == ".tfrecord" or any(path.glob("*.tfrecord")):
            folder = path.parent if path.is_file() else path
            images = os.environ.get("MMALIGN_RICHHF_IMAGES") or folder / "images"
            richhf = RichHFRows(path, split, images=images)
            rows, report = richhf, richhf.report
        else:
            rows = DatasetDenseRows(_saved_split(path, split), name=str(path))
    if max_samples is not None:
        rows = Subset(rows, range(min(max_samples, len(rows))))
    return rows, report


def _saved_split(path: Path, split: str | None) -> Any:
    """A `save_to_disk` folder: the Dataset itself when it is split `split` (the split its
    state records, or "train" when it records none: `check_saved_split`, as the pair readers
    do), or the split `split` of a DatasetDict (the DatasetDict itself has no columns)."""
    from datasets import Dataset, load_from_disk

    from ..data.pickapic_files import check_saved_split

    ds = load_from_disk(str(path))
    if isinstance(ds, Dataset):
        if split is not None:  # None: no split asked for, the folder whole
            try:
                check_saved_split(ds, split, path)
            except ValueError as err:
                raise InputError(f"dense data: {err} (`mmalign eval dense`: --split)") from None
        return ds
    if split not in ds:
        from ..suggest import closest

        guess = closest(str(split), list(ds))
        hint = f"; did you mean {guess!r}?" if guess is not None else ""
        raise InputError(f"dense data: {path} has splits {list(ds)}; the split is {split!r}{hint}")
    return ds[split]


def toy_sd_rows(n: int, seed: int = 1, steps: int = 20, guidance: float = 2.5) -> list[DenseRow]:
    """`n` toy-sd samples of held-out prompts with their `dense_scores` ground truth."""
    from ..data.schema import HEATMAP_CHANNELS, to_pil_image
    from ..toy.datasets.sampling import model_images, toy_sd_pipeline
    from ..toy.flaws import dense_scores
    from ..toy.world import sample_prompts

    texts = [p.text for p in sample_prompts(n, "heldout", seed)]
    images = model_images(
        toy_sd_pipeline(None), texts, seed, steps=steps, guidance=guidance, batch_size=64,
        progress=True, desc="toy-sd samples",
    )  # fmt: skip
    truth = dense_scores(images, texts)
    maps = torch.cat([truth[c] for c in HEATMAP_CHANNELS], 1).numpy()
    return [
        DenseRow(
            prompt=text,
            image=to_pil_image(images[i]),
            heatmaps=maps[i],
            scores={k: float(truth[k][i]) for k in DENSE_SCORES},
            name=f"toy-sd[{i}]",
        )
        for i, text in enumerate(texts)
    ]


def image_tensor(image: Any) -> torch.Tensor:
    """A PIL image as float [3,H,W] in [0,1]."""
    array = np.asarray(to_rgb(image), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def pool_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Heatmaps [...,H,W] -> [...,size,size] by area averaging (exact for integer factors)."""
    if maps.shape[-2:] == (size, size):
        return maps
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    out = F.interpolate(flat, size=(size, size), mode="area")
    return out.reshape(*maps.shape[:-2], size, size)


class DenseTensors(torch.utils.data.Dataset):
    """Rows as training tensors: pixels [3,H,W], heatmaps [2,M,M] pooled to the head's map
    size, scores [4] in `DENSE_SCORES` order, and the prompt."""

    def __init__(self, rows: DenseRows, map_size: int) -> None:
        self.rows, self.map_size = rows, map_size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        return {
            "pixels": image_tensor(row.image),
            "heatmaps": pool_maps(torch.from_numpy(row.heatmaps), self.map_size),
            "scores": torch.tensor([row.scores[k] for k in DENSE_SCORES], dtype=torch.float32),
            "prompt": row.prompt,
        }


def collate_dense(items: list[dict[str, Any]]) -> dict[str, Any]:
    sizes = {tuple(it["pixels"].shape) for it in items}
    if len(sizes) > 1:
        raise InputError(f"dense rows in one batch differ in image size: {sorted(sizes)}")
    out: dict[str, Any] = {k: torch.stack([it[k] for it in items]) for k in
                           ("pixels", "heatmaps", "scores")}  # fmt: skip
    out["prompt"] = [it["prompt"] for it in items]
    return out
