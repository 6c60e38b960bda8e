"""`dense:<path>`: a trained dense reward head as a scorer.

`score(images, prompts)` is the `overall` score (ImageDoctor, Guo et al. 2025); `dense(images,
prompts)` returns all four scores [B] and both heatmaps [B,1,H,W] on the input images' pixel
grid, in the same layout as the toy world's ground truth (`mmalign.toy.flaws.dense_scores`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...config import InputError
from ...data.dense import DENSE_SCORES
from ...data.schema import HEATMAP_CHANNELS
from ..base import ImageBatch, as_image_batch
from ..common import pick_device, pick_dtype
from ..files import ScorerFile
from .model import DenseRewardModel


def _by_size(images: ImageBatch) -> list[list[int]]:
    """The indices of `images` grouped by size (a tensor is one group). `score` runs each group
    on its own: resizing a mixed batch to one square before the model's own preprocessing
    resized a non-square image twice (bilinear, then the backbone's bicubic), so an image's
    score depended on the sizes beside it."""
    if isinstance(images, torch.Tensor):
        return [list(range(len(images)))]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.size, []).append(i)
    return list(groups.values())


def _sizes(images: ImageBatch) -> set[tuple[int, int]]:
    """The distinct (width, height) of a batch of images (a tensor has one)."""
    if isinstance(images, torch.Tensor):
        return {(int(images.shape[-1]), int(images.shape[-2]))}
    return {im.size for im in images}


def files(path: str | Path | None = None, **_options: object) -> list[ScorerFile]:
    """The head `DenseScorer(path)` loads: a local folder (rewards/files.py)."""
    if path is None:
        raise ValueError("dense needs a checkpoint: 'dense:<path>' (a trained dense head)")
    return [ScorerFile(f"dense:{path}", "path", "dense reward head", str(path), hub=False)]


class DenseScorer:
    """A dense reward head loaded from `path` (its folder, or a training output_dir)."""

    requires_argument = True

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 32,
    ) -> None:
        if path is None:
            raise ValueError("dense needs a checkpoint: 'dense:<path>' (a trained dense head)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = f"dense:{path}"
        self.device, self.dtype = pick_device(device), pick_dtype(dtype)
        self.batch_size = batch_size
        self.model = DenseRewardModel.from_pretrained(path).to(self.device, self.dtype)

    def _batches(self, images: ImageBatch, prompts: Sequence[str]):
        """(pixels on the model's device, ids, mask, the input's (H, W)) per `batch_size`."""
        if len(prompts) != len(images):
            raise ValueError(f"{self.name}: {len(images)} images but {len(prompts)} prompts")
        n, step = len(images), self.batch_size
        bar = tqdm(range(0, n, step), desc=self.name, unit="batch", disable=n <= step, leave=False)
        for start in bar:
            batch = as_image_batch(images[start : start + step])  # one size: see score
            ids, mask = self.model.tokenize(list(prompts[start : start + step]))
            yield (batch.to(self.device, self.dtype), ids.to(self.device), mask.to(self.device),
                   tuple(batch.shape[-2:]))  # fmt: skip

    @torch.no_grad()
    def dense(self, images: ImageBatch, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Scores {alignment, aesthetics, plausibility, overall} [B] and heatmaps
        {misalignment, artifact} [B,1,H,W] in [0,1] (1 = flawed), on the CPU."""
        sizes = _sizes(images)
        if len(sizes) > 1:  # one [B,1,H,W] map per call: each image's own grid must be one
            shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes))
            raise InputError(
                f"{self.name}: dense() maps heatmaps onto the images' own pixel grid, and these "
                f"images have {len(sizes)} sizes ({shown}); "
                "score them size by size or resize them first (score() takes mixed sizes)"
            )
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in (*DENSE_SCORES, *HEATMAP_CHANNELS)}
        for pixels, ids, mask, size in self._batches(images, prompts):
            maps, scores = self.model(pixels, ids, mask)
            maps = maps.float()
            if maps.shape[-2:] != size:
                maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
            for i, key in enumerate(DENSE_SCORES):
                parts[key].append(scores[:, i].float().cpu())
            for i, key in enumerate(HEATMAP_CHANNELS):
                parts[key].append(maps[:, i : i + 1].clamp(0, 1).cpu())
        return {k: torch.cat(v) for k, v in parts.items()}

    @torch.no_grad()
    def score(self, images: ImageBatch, prompts: Sequence[str]) -> torch.Tensor:
        """The `overall` score [B] in [0, 1], as `dense(...)["overall"]` without running the
        heatmap decoder (which it would throw away). Images of several sizes are scored size
        by size, each exactly as it would be alone."""
        if len(prompts) != len(images):
            raise ValueError(f"{self.name}: {len(images)} images but {len(prompts)} prompts")
        overall = DENSE_SCORES.index("overall")
        out = torch.empty(len(images))
        for group in _by_size(images):
            if not group:  # an empty tensor batch: nothing to score
                continue
            part = images if isinstance(images, torch.Tensor) else [images[i] for i in group]
            texts = [prompts[i] for i in group]
            batches = self._batches(part, texts)
            scores = [self.model.scores(px, ids, mask)[:, overall] for px, ids, mask, _ in batches]
            out[group] = torch.cat(scores).float().cpu()
        return out
