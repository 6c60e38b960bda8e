"""Dense preference scores: the denoising error weighted by (1 - flaw heatmap).

ImageDoctor (Guo et al. 2025, Sec. 4, "dense reward"): a flaw heatmap H of an image, pooled to
the latent grid, weights the per-pixel diffusion loss by (1 - H). For preference losses mmalign
applies that weight to the per-pixel squared error before the C,H,W mean of Diffusion-DPO's
score (Wallace et al. 2024, Eq. 14; METHODS.md section 2):

    score = -mean_{c,h,w}( w[h,w] * (eps_pred - target)[c,h,w]^2 ),   w = 1 - pool(H)

so the flawed regions of the chosen image are not reinforced (by default only the chosen
image is weighted: weighting the rejected one by its own map would stop penalising its flaws).
`sides: paired` (mmalign's option) applies the chosen image's weights to both images' errors:
Diffusion-DPO's margin subtracts the two images' errors pixel by pixel, so content the two
share (a background) cancels only where both carry the same weight; with the chosen side alone
weighted, a flawed cell of the chosen image still pushes the policy away from whatever the
rejected image has there. The mean is
over all positions (not divided by sum(w)): with w = 1 the score is exactly the plain one, and
policy and reference scores share the weights, so DPO's difference stays a like-for-like
comparison. The weights are a function of the image alone: computed once per image and cached
(`DenseWeights`), never per step.

`normalize: true` (mmalign's option, not ImageDoctor's) divides each weighted image's map by its
mean over the latent grid, `w / mean(w)`: the flawed cells still count less than the clean ones,
but the image's total weight stays that of the plain score, so weighting only the chosen image
does not also shrink the chosen side of DPO's margin against the rejected side.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

MapName = Literal["artifact", "misalignment", "both"]
Sides = Literal["chosen", "both", "paired"]


def pool_to_latent(heatmaps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Heatmaps [B,K,H,W] -> [B,K,h,w]: each latent cell the mean of the pixels it covers
    (area pooling; H, W must be multiples of h, w, as a VAE's factor-8 grid is)."""
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [B,K,H,W], got {tuple(heatmaps.shape)}")
    (big_h, big_w), (h, w) = heatmaps.shape[-2:], size
    if big_h % h or big_w % w:
        raise ValueError(f"heatmaps {big_h}x{big_w} do not tile the latent grid {h}x{w}")
    return F.avg_pool2d(heatmaps.float(), (big_h // h, big_w // w))


def weight_map(dense: dict[str, torch.Tensor], map_name: MapName) -> torch.Tensor:
    """The flaw heatmap [B,1,H,W] chosen by `map_name` from a scorer's `.dense()` output
    (`both`: the pixelwise max of the two)."""
    if map_name == "both":
        return torch.maximum(dense["artifact"], dense["misalignment"])
    if map_name not in dense:
        raise ValueError(f"diffusion.dense.map: {map_name!r}; use artifact, misalignment, both")
    return dense[map_name]


def dense_weights(
    heat: torch.Tensor, size: tuple[int, int], normalize: bool = False
) -> torch.Tensor:
    """w = 1 - pool(H), [B,1,h,w] in [0, 1]; `normalize`: w / mean_{h,w}(w), mean 1 per image
    (an image flawed everywhere, w = 0, stays 0)."""
    w = (1 - pool_to_latent(heat.clamp(0, 1), size)).clamp(0, 1)
    if normalize:
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        w = torch.where(mean > 0, w / mean.clamp(min=1e-12), w)
    return w


def weighted_mse(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample `mean_{C,H,W}(weight * (pred - target)^2)` [B]; `weight` [B,1,h,w] or None
    (the plain mean, Diffusion-DPO's score)."""
    err = (pred.float() - target.float()).pow(2)
    if weight is not None:
        err = err * weight.to(err.device, err.dtype)
    return err.mean(dim=(1, 2, 3))


class DenseWeights:
    """Per row of a pair dataset: [2,1,h,w] weights (chosen, rejected), computed once with
    `scorer.dense` over every image and kept; `sides="chosen"` leaves the rejected at 1,
    `"paired"` gives it the chosen image's weights."""

    def __init__(self, weights: torch.Tensor) -> None:
        if weights.ndim != 5 or weights.shape[1] != 2:
            raise ValueError(f"dense weights must be [N,2,1,h,w], got {tuple(weights.shape)}")
        self.weights = weights

    @classmethod
    def compute(
        cls,
        scorer: Any,
        chosen: Sequence[Any],
        rejected: Sequence[Any],
        prompts: Sequence[str],
        size: tuple[int, int],
        *,
        map_name: MapName = "artifact",
        sides: Sides = "chosen",
        batch_size: int = 64,
        normalize: bool = False,
        progress: bool = True,
    ) -> DenseWeights:
        """`chosen`/`rejected`: images (tensors [3,H,W] or PIL) at the training resolution."""
        from tqdm.auto import tqdm

        out = []
        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, desc="dense weights", unit="batch", disable=not progress):
            stop = start + batch_size
            text = list(prompts[start:stop])
            sides_w = []
            for side, images in (("chosen", chosen), ("rejected", rejected)):
                batch = images[start:stop]
                if isinstance(batch, list) and batch and isinstance(batch[0], torch.Tensor):
                    batch = torch.stack(batch)
                if side == "rejected" and sides == "chosen":
                    sides_w.append(torch.ones(len(text), 1, *size))
                    continue
                if side == "rejected" and sides == "paired":
                    sides_w.append(sides_w[0])
                    continue
                heat = weight_map(scorer.dense(batch, text), map_name)
                sides_w.append(dense_weights(heat, size, normalize))
            out.append(torch.stack(sides_w, 1))
        return cls(torch.cat(out))

    def __len__(self) -> int:
        return int(self.weights.shape[0])

    def rows(self, indices: Sequence[int]) -> torch.Tensor:
        """[B,2,1,h,w] for dataset rows `indices`."""
        return self.weights[torch.as_tensor(list(indices), dtype=torch.long)]


def _scorer_key(name: str) -> Any:
    """What identifies a heatmap scorer: the toy's name, or a dense head's weight files
    (`mmalign.weights.weight_files`: a retrained head at the same path is another scorer)."""
    if not name.startswith("dense:"):
        return name
    from ..rewards.dense.model import checkpoint_folder
    from ..weights import weight_files

    return [name, weight_files(checkpoint_folder(name.removeprefix("dense:")))]


def mirrored_pair(images: Any, index: int) -> bool:
    """Whether row `index` of `images` (a `PairImages`) has one image mirrored and not the other:
    `diffusion.random_flip` with one coin per image (SD1.5's, `data.flip_coin`). SDXL's single
    coin per pair, or no flips, never mirrors one image alone."""
    seed = getattr(images, "flip_seed", None)
    if seed is None or getattr(images, "flip_pairs", False):
        return False
    from .data import flip_coin

    return flip_coin(seed, int(index), 0) != flip_coin(seed, int(index), 1)


def pair_weights(
    spec: Any, images: Any, latent_size: int, cache_dir: Path | None = None
) -> DenseWeights:
    """`diffusion.dense` of a recipe (a `DenseConfig`) -> the weights of every row of `images`
    (a `PairImages`: pixels [2,3,R,R] in [-1, 1] at the training resolution and crop),
    computed once at start, one batch of images decoded at a time. With `cache_dir` (the
    pre-encoding cache's folder, which already names the data, resolution and crop) the
    weights are written there as safetensors and read back by later runs and resumes; the
    computation holds the file's lock, so a second run wanting them at once waits and reads
    them. A row with a label below 0.5 (its rejected image won) is weighted with its images
    swapped.
    `sides: paired` on a row whose two images were flipped differently (`mirrored_pair`) puts
    the winner's map mirrored on the other image, so it covers the same content there."""
    from filelock import FileLock
    from safetensors.torch import save_file

    from ..data.cache import digest
    from ..files import make_readable

    if cache_dir is None:
        return DenseWeights(_compute(spec, images, latent_size))
    # "winner": the weights follow the label (_compute); caches written before that are not
    # reused, nor paired ones written before the winner's map followed each image's flip
    # ("mirrored"), nor any written before 16-bit greyscale images were read at their bit depth
    # and transparency composited onto white (schema.to_rgb): other pixels, other heatmaps
    options = (spec.map, spec.sides, spec.normalize, latent_size, len(images), "winner", "rgb2")
    if spec.sides == "paired":
        options += ("mirrored",)
    key = digest([_scorer_key(spec.scorer), *options])
    path = Path(cache_dir) / f"dense-weights-{key}.safetensors"
    cached = _read_cached(path, len(images))
    if cached is not None:  # no lock to read (a cache may sit on a read-only disk)
        return cached
    with FileLock(str(path) + ".lock"):
        cached = _read_cached(path, len(images))  # another run's, written while this one waited
        if cached is not None:
            return cached
        weights = _compute(spec, images, latent_size)
        # written whole, then renamed: a cache is complete or absent
        tmp = path.with_suffix(".tmp")
        save_file({"weights": weights.contiguous()}, str(tmp))
        make_readable(tmp)  # a shared cache: safetensors 0.8 leaves it 0600
        tmp.replace(path)
    return DenseWeights(weights)


def _read_cached(path: Path, rows: int) -> DenseWeights | None:
    """The weights saved at `path` when it holds one map pair per row, else None."""
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    weights = load_file(str(path))["weights"]
    return DenseWeights(weights.float()) if weights.shape[0] == rows else None


def _compute(spec: Any, images: Any, latent_size: int) -> torch.Tensor:
    """The [N,2,1,h,w] weights of every row of `images` with `spec.scorer`'s heatmaps."""
    from tqdm.auto import tqdm

    from ..config import ConfigError
    from ..rewards import get_scorer

    name = spec.scorer
    scorer = get_scorer(name, **({} if name.startswith("toy:") else {"device": spec.device}))
    if not hasattr(scorer, "dense"):
        raise ConfigError(f"diffusion.dense.scorer: {name} gives no heatmaps (toy:flaws, dense:)")
    size, out = (latent_size, latent_size), []
    for start in tqdm(range(0, len(images), spec.batch_size), desc="dense weights", unit="batch"):
        items = [images[i] for i in range(start, min(start + spec.batch_size, len(images)))]
        pixels = torch.stack([it["pixels"] for it in items]).add(1).div(2).clamp(0, 1)
        # A row whose label is below 0.5 says the rejected image won (dpo and smpo train towards
        # it): the image whose flaws must not be reinforced is then the rejected one, so the
        # pair is weighted winner first and its two weight maps put back in column order.
        labels = [float(it.get("label", 1.0)) for it in items]
        swap = torch.tensor([x < 0.5 for x in labels], dtype=torch.bool)
        pixels[swap] = pixels[swap].flip(1)
        weights = DenseWeights.compute(
            scorer, pixels[:, 0], pixels[:, 1], [it["prompt"] for it in items], size,
            map_name=spec.map, sides=spec.sides, batch_size=spec.batch_size,
            normalize=spec.normalize, progress=False,
        ).weights  # fmt: skip
        weights[swap] = weights[swap].flip(1)
        if spec.sides == "paired":  # the winner's map in the other image's own frame
            for k in range(len(items)):
                if mirrored_pair(images, start + k):
                    win = int(bool(swap[k]))
                    weights[k, 1 - win] = weights[k, win].flip(-1)
        out.append(weights)
    return torch.cat(out) if out else torch.ones(0, 2, 1, *size)
