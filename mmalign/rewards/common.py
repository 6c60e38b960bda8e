"""What the real reward models share: batching with a progress bar, device and dtype, CLIP-style
pixel preprocessing on tensors, and finding a checkpoint file locally or on the hub."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypedDict

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..weights import WEIGHT_SUFFIXES
from .base import ImageBatch, as_image_batch

# OpenAI CLIP's normalisation, used by PickScore's processor, HPSv2 and the aesthetic MLP.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def pick_device(device: str | torch.device | None) -> torch.device:
    """`None`/"auto": CUDA when there is one, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """A torch dtype from "float32"/"fp16"/"bf16"/a dtype; `None` is float32 (full precision)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
    name = aliases.get(str(dtype), str(dtype))
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"dtype {dtype!r}: use float32, float16 or bfloat16")
    return value


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(images - mean) / std per channel of a [B,3,H,W] batch, in its dtype and device."""
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - m) / s


def clip_pixels(
    images: torch.Tensor,
    size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    centre: Literal["floor", "round"] = "floor",
    interpolation: Literal["bicubic", "bilinear"] = "bicubic",
) -> torch.Tensor:
    """CLIP preprocessing on a [B,3,H,W] batch in [0,1]: bicubic (or `interpolation`) resize
    of the shorter side to `size`, centre crop, normalise. The tensor form of
    CLIPImageProcessor / open_clip's `preprocess_val`, so a batch is processed at once instead
    of image by image through PIL.
    `centre` places the crop when the excess is odd: "floor" as transformers' `center_crop`
    (`excess // 2`), "round" as torchvision's `CenterCrop`, which open_clip and ImageReward use
    (`int(round(excess / 2))`, half to even: an excess of 3 px starts the crop at 2, not 1)."""
    h, w = images.shape[-2:]
    # the long side as both references compute it, `int(size * long / short)` (truncated:
    # transformers' get_resize_output_image_size, torchvision's Resize); rounding made a 4:3
    # image 299 px long instead of 298 and shifted the whole crop
    short, long = min(h, w), max(h, w)
    new_long = max(size, int(size * long / short))
    new_h, new_w = (size, new_long) if h <= w else (new_long, size)
    if (new_h, new_w) != (h, w):
        images = F.interpolate(
            images, size=(new_h, new_w), mode=interpolation, align_corners=False, antialias=True
        ).clamp(0, 1)
    if centre == "round":
        top, left = round((new_h - size) / 2), round((new_w - size) / 2)
    else:
        top, left = (new_h - size) // 2, (new_w - size) // 2
    images = images[..., top : top + size, left : left + size]
    return normalise(images, mean, std)


def squash_pixels(
    images: torch.Tensor,
    size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    interpolation: Literal["bicubic", "bilinear"] = "bicubic",
) -> torch.Tensor:
    """open_clip's `resize_mode="squash"` (SigLIP, DFN) on a [B,3,H,W] batch in [0,1]: both
    sides resized to `size`, aspect ratio not kept, nothing cropped; normalise."""
    if tuple(images.shape[-2:]) != (size, size):
        images = F.interpolate(
            images, size=(size, size), mode=interpolation, align_corners=False, antialias=True
        ).clamp(0, 1)
    return normalise(images, mean, std)


def pad_pixels(
    images: torch.Tensor,
    size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """HPSv2's preprocessing on a [B,3,H,W] batch in [0,1]: bicubic resize of the longer side to
    `size`, the shorter padded with black to a centred square, normalise. The tensor form of the
    `preprocess_val` HPSv2 scores with (`image_transform(..., resize_longest_max=True)`, its
    `ResizeMaxSize`): HPSv2 sees the whole image, where a centre crop cuts a non-square one."""
    h, w = images.shape[-2:]
    scale = size / max(h, w)
    # as ResizeMaxSize: Python's round of each side, on the tensor after ToTensor (no clamp)
    new_h, new_w = round(h * scale), round(w * scale)
    if (new_h, new_w) != (h, w):
        images = F.interpolate(
            images, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True
        )
    # black (0) before normalising, left/top get the smaller half, as ResizeMaxSize's F.pad;
    # a non-square image already `size` long is padded too (the reference leaves it non-square)
    pad_h, pad_w = size - new_h, size - new_w
    images = F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    return normalise(images, mean, std)


def local_file(source: str | Path, filenames: Sequence[str]) -> Path | None:
    """`source` itself if it is a file, the first of `filenames` in it if it is a folder, None
    when it names a hub repo; a local-looking path that does not exist raises."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in filenames:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path} holds no {' or '.join(filenames)}")
    if str(source).startswith((".", "/", "~")) or path.suffix in WEIGHT_SUFFIXES:
        raise FileNotFoundError(f"checkpoint {source} does not exist")
    return None


def resolve_file(
    source: str | Path,
    filename: str,
    *alternatives: str,
    scorer: str = "the scorer",
    what: str = "checkpoint",
) -> Path:
    """A checkpoint file: `local_file(source, [filename, *alternatives])`, else `filename`
    downloaded from the hub repo `source`; offline and not cached, or a failed download,
    raises an `InputError` naming the scorer's `--scorer-path` (rewards/files.py)."""
    local = local_file(source, (filename, *alternatives))
    if local is not None:
        return local
    from huggingface_hub import hf_hub_download

    from ..config import InputError
    from ..hub import hub_cache, hub_errors, offline
    from .files import ScorerFile, require_files

    f = ScorerFile(scorer, "path", what, str(source), hub_file=filename, give="PATH",
                   shown=f"{filename} from {source}")  # fmt: skip
    require_files([f])
    try:
        with hub_errors(source, f.key):  # the cache and offline mode as mmalign reads them now
            return Path(hf_hub_download(str(source), filename, cache_dir=hub_cache(),
                                        local_files_only=offline()))  # fmt: skip
    except InputError:
        raise
    except Exception as err:  # anything else the download meets: one clear message
        raise OSError(
            f"cannot get {filename} from the hub repo '{source}' ({type(err).__name__}: {err});"
            f" without hub access give a local {filename} or a folder holding it: "
            f"{f.option_text}"
        ) from err


class ScorerOptions(TypedDict, total=False):
    """The keyword arguments every model-backed scorer takes besides its own (`BatchedScorer`):
    a scorer's `__init__` declares them as `**options: Unpack[ScorerOptions]`."""

    device: str | torch.device | None
    dtype: str | torch.dtype | None
    batch_size: int


class BatchedScorer:
    """Base of the model-backed scorers: `score` splits the images into chunks of `batch_size`,
    applies CLIP preprocessing (`size`, `mean`, `std`, `fit`, `centre`, set by the subclass) and
    calls `_score_batch` on the model's device and dtype without gradients. A list of PIL images of
    different sizes (Pick-a-Pic mixes 512 and 1024 px) is preprocessed image by image. A
    progress bar shows when there is more than one chunk. Prompts longer than the text encoder
    reads (`max_tokens`) are cut as the reference models cut them, with a warning counting
    them (`_warn_truncated`)."""

    name: str
    size: int
    mean: Sequence[float] = CLIP_MEAN
    std: Sequence[float] = CLIP_STD
    # "crop": `clip_pixels` (CLIP's resize and centre crop); "pad": `pad_pixels` (HPSv2's);
    # "squash": `squash_pixels` (open_clip's resize_mode="squash")
    fit: Literal["crop", "pad", "squash"] = "crop"
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"  # of "crop" and "squash"
    # where an odd crop excess puts the crop: torchvision's rounding (open_clip, ImageReward);
    # PickScore's transformers processor floors
    centre: Literal["floor", "round"] = "round"
    # tokens of a prompt the text encoder reads (its tokenizer cuts the rest); None: no text
    max_tokens: int | None = None

    def __init__(
        self,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 32,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype)
        self.batch_size = batch_size

    def _score_batch(self, pixels: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Scores [B] of preprocessed pixels [B,3,size,size] (in self.dtype, on self.device)."""
        raise NotImplementedError

    def _too_long(self, prompts: list[str]) -> list[str]:
        """Those of `prompts` the scorer's tokenizer cuts to `max_tokens`."""
        return []

    def _warn_truncated(self, prompts: Sequence[str]) -> None:
        """Warn, with a count, when prompts are cut: the reference models cut them silently
        (CLIP at 77 tokens, ImageReward's BERT at 35), so a long prompt is scored on its
        beginning only."""
        distinct = list(dict.fromkeys(str(p) for p in prompts))
        cut = self._too_long(distinct)
        if cut:
            warnings.warn(
                f"{self.name}: {len(cut)} of {len(distinct)} distinct prompts are longer than "
                f"the {self.max_tokens} tokens its text encoder reads and are scored on their "
                f"first {self.max_tokens} tokens only, e.g. {cut[0][:80]!r}",
                stacklevel=3,
            )

    def _pixels(self, images: ImageBatch) -> torch.Tensor:
        # Resizing runs in float32 on the device; the model in self.dtype.
        if isinstance(images, torch.Tensor) or len({im.size for im in images}) == 1:
            batch = as_image_batch(images).to(self.device)
            if self.fit == "pad":
                pixels = pad_pixels(batch, self.size, self.mean, self.std)
            elif self.fit == "squash":
                pixels = squash_pixels(batch, self.size, self.mean, self.std, self.interpolation)
            else:
                pixels = clip_pixels(
                    batch, self.size, self.mean, self.std, self.centre, self.interpolation
                )
            return pixels.to(self.dtype)
        return torch.cat([self._pixels([im]) for im in images])

    @torch.no_grad()
    def score(self, images: ImageBatch, prompts: Sequence[str]) -> torch.Tensor:
        if len(prompts) != len(images):
            raise ValueError(f"{self.name}: {len(images)} images but {len(prompts)} prompts")
        if isinstance(images, torch.Tensor):
            as_image_batch(images[:1])  # shape check before any work
        if len(images) == 0:  # no images, no scores (torch.cat of nothing would fail)
            return torch.empty(0)
        self._warn_truncated(prompts)
        out = []
        n, step = len(images), self.batch_size
        chunks = tqdm(
            range(0, n, step), desc=self.name, unit="batch", disable=n <= step, leave=False
        )
        for start in chunks:
            pixels = self._pixels(images[start : start + step])
            out.append(self._score_batch(pixels, list(prompts[start : start + step])).float())
        return torch.cat(out).cpu()


def reward_head(sizes: Sequence[int]) -> nn.Sequential:
    """The improved-aesthetic-predictor MLP that LAION's aesthetic model and ImageReward both
    use: Linear layers at indices 0, 2, 4, 6, 7, Dropout 0.2, 0.2, 0.1 at 1, 3, 5, no
    activations (so the checkpoints' `layers.<i>` keys load as they are)."""
    d = sizes
    return nn.Sequential(
        nn.Linear(d[0], d[1]), nn.Dropout(0.2),
        nn.Linear(d[1], d[2]), nn.Dropout(0.2),
        nn.Linear(d[2], d[3]), nn.Dropout(0.1),
        nn.Linear(d[3], d[4]),
        nn.Linear(d[4], d[5]),
    )  # fmt: skip


class RewardMLP(nn.Module):
    """`reward_head` under the attribute `layers`, so a checkpoint's `layers.<i>` (aesthetic)
    or `mlp.layers.<i>` (ImageReward) keys load as they are."""

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        self.layers = reward_head(sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
