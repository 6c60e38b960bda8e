"""Dense-feedback rows: one image, its prompt, four scores and two flaw heatmaps.

The row every dense reader produces and the dense reward head trains and is evaluated on
(ImageDoctor, Guo et al. 2025; RAHF, Liang et al. CVPR 2024): RichHF-18K (`richhf.py`) and the
toy `flaws` set's `dense/` folder alike.

- `scores`: `DENSE_SCORES` = alignment, aesthetics, plausibility, overall, each in [0, 1],
  higher is better;
- `heatmaps`: float32 [2, H, W] in [0, 1], channels `HEATMAP_CHANNELS` (misalignment,
  artifact), 1 = flawed, on the image's own pixel grid (H, W = the image's height and width).
- `token_labels`: one int per prompt word where the source labels words (RichHF-18K), else
  None.

Rows decode lazily (`DenseRows.__getitem__`): RichHF's 512 x 512 heatmaps as float lists would
take about 2 MB per row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image as PILImage

from .schema import HEATMAP_CHANNELS, to_pil_image, to_rgb

DENSE_SCORES = ("alignment", "aesthetics", "plausibility", "overall")  # ImageDoctor's four


@dataclass
class DenseRow:
    """One decoded dense row; `name` says where it came from (a file name, a row index)."""

    prompt: str
    image: PILImage.Image
    heatmaps: np.ndarray  # float32 [2, H, W]
    scores: dict[str, float]
    name: str = ""
    # RichHF's per-word prompt labels (`richhf.prompt_words` splits the prompt into the words
    # they label, one each); None where the source has none (the toy sets)
    token_labels: list[int] | None = None


class DenseRows(Protocol):
    """A sized, indexable collection of `DenseRow`s (decoded on access)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> DenseRow: ...


def score_problem(scores: Mapping[str, Any]) -> str | None:
    """Why these scores are unusable (a missing or out-of-range one, named), or None."""
    for key in DENSE_SCORES:
        value = scores.get(key)
        if value is None:
            return f"missing_{key}"
        try:
            x = float(value)
        except (TypeError, ValueError):
            return f"bad_{key}"
        if math.isnan(x) or not 0.0 <= x <= 1.0:
            return f"{key}_out_of_range"
    return None


def heatmap_problem(heatmaps: Any, size: tuple[int, int]) -> str | None:
    """Why `heatmaps` cannot go with an image of `size` = (width, height), or None."""
    try:
        h = np.asarray(heatmaps, dtype=np.float32)
    except (TypeError, ValueError):
        return "bad_heatmaps"
    if h.ndim != 3 or h.shape[0] != len(HEATMAP_CHANNELS):
        return "bad_heatmaps"
    if (h.shape[2], h.shape[1]) != tuple(size):
        return "heatmap_size_mismatch"
    if not np.all(np.isfinite(h)) or h.min() < 0 or h.max() > 1:
        return "heatmap_out_of_range"
    return None


class DatasetDenseRows:
    """Dense rows from a `datasets.Dataset` with columns prompt, image, heatmaps and the four
    scores (the toy `flaws` kind's `dense/` folder). Checked when opened: a bad row raises
    naming its index (the toy builder wrote it, so it is a bug, not noise)."""

    def __init__(self, ds: Any, name: str = "dense") -> None:
        missing = [
            c for c in ("prompt", "image", "heatmaps", *DENSE_SCORES) if c not in ds.features
        ]
        if missing:
            raise ValueError(f"{name}: not a dense dataset, no column(s) {missing}")
        self.ds, self.name = ds, name
        for i, row in enumerate(ds.select_columns(list(DENSE_SCORES)).to_list()):
            reason = score_problem(row)
            if reason is not None:
                raise ValueError(f"{name}: row {i}: {reason}")

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> DenseRow:
        row = self.ds[int(index)]
        image = to_rgb(to_pil_image(row["image"]))
        reason = heatmap_problem(row["heatmaps"], image.size)
        if reason is not None:
            raise ValueError(f"{self.name}: row {index}: {reason}")
        return DenseRow(
            prompt=row["prompt"],
            image=image,
            heatmaps=np.asarray(row["heatmaps"], dtype=np.float32),
            scores={k: float(row[k]) for k in DENSE_SCORES},
            name=f"{self.name}[{index}]",
        )


class Subset:
    """Rows `indices` of `rows` (a held-out split of a dense set)."""

    def __init__(self, rows: DenseRows, indices: Sequence[int]) -> None:
        self.rows, self.indices = rows, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> DenseRow:
        return self.rows[self.indices[index]]
