"""Read a toy image back: background, shape colour, shape mask, bounding box, shape kind, style.

Everything is vectorised over a batch [B,3,H,W] in [0,1] and uses no prompt, so the same
reading serves fidelity (compare it with the prompt), style, user tastes and flaw heatmaps.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .render import OUTLINE_RGB, SHAPES, palette_tensor, shape_fields
from .world import COLORS, ToyPrompt, as_prompt

FOREGROUND_DISTANCE = 0.25  # RGB distance from the background that makes a pixel foreground
NEAR_COLOR = 0.2  # within this of a palette colour, a pixel "is" that colour (min gap 0.45)
DARK = 0.3  # max channel below this: outline ink (no palette colour is this dark)
MIN_SHAPE_AREA = 200  # a shape covers at least 1/200 of the image (a small one: 1/20)
_HALF_SIZE_STEPS = (0.0, 0.25, 0.5)  # pixels added to a measured half-size, see template_ious


@dataclass
class Reading:
    """What `read_images` found, one entry per image."""

    bg_rgb: torch.Tensor  # [B,3] median of the border pixels
    bg_index: torch.Tensor  # [B] nearest palette colour of bg_rgb
    border_purity: torch.Tensor  # [B] share of border pixels near that palette colour
    foreground: torch.Tensor  # [B,H,W] bool, far from the background
    fill_index: torch.Tensor  # [B] nearest palette colour of the non-dark foreground's median
    fill_purity: torch.Tensor  # [B] share of the non-dark foreground near that colour
    shape_mask: torch.Tensor  # [B,H,W] bool, fill plus the dark ink touching it
    box: torch.Tensor  # [B,4] cx, cy, hx, hy of shape_mask's bounding box, in pixels
    has_shape: torch.Tensor  # [B] bool, a shape-sized set of shape pixels was found
    ious: torch.Tensor  # [B,len(SHAPES)] IoU of each shape's template with shape_mask
    outline: torch.Tensor  # [B] share of the 1-px ring around the fill that is dark


def check_images(images: torch.Tensor) -> torch.Tensor:
    if (
        images.ndim != 4
        or images.shape[1] != 3
        or images.shape[2] != images.shape[3]
        or (images.shape[2] < 16)
    ):
        raise ValueError(f"expected images [B,3,H,H] with H >= 16, got {tuple(images.shape)}")
    return images.float().clamp(0, 1)


def broken(images: torch.Tensor, warn: bool = True) -> torch.Tensor:
    """[B] bool: images with a non-finite pixel (a diverged decoder's output).

    Every toy reward scores such an image 0 and warns (`warn`) with the count: NaN fails every
    comparison, so the pixels would otherwise be skipped and a broken image could score 1.
    """
    bad = ~images.flatten(1).isfinite().all(1)
    if warn and bool(bad.any()):
        warnings.warn(
            f"{int(bad.sum())} of {len(images)} images have NaN or infinite pixels; "
            "the toy rewards score them 0",
            stacklevel=3,
        )
    return bad


def as_prompts(prompts: Sequence[ToyPrompt | str], n: int) -> list[ToyPrompt]:
    if isinstance(prompts, (str, ToyPrompt)):
        raise TypeError("pass a list of prompts, one per image")
    if len(prompts) != n:
        raise ValueError(f"{n} images but {len(prompts)} prompts")
    return [as_prompt(p) for p in prompts]


def color_distance(images: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    """Distance [B,K,H,W] from each pixel to each of K colours [K,3] (or [B,K,3])."""
    rgb = rgb if rgb.ndim == 3 else rgb.expand(images.shape[0], *rgb.shape)
    return torch.linalg.vector_norm(images[:, None] - rgb[:, :, :, None, None], dim=2)


def masked_median(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per image and channel median of `values` [B,C,N] over `mask` [B,N] (0 where empty)."""
    filled = torch.where(mask[:, None], values, torch.full_like(values, float("inf")))
    count = mask.sum(1)
    middle = ((count - 1).clamp(min=0) // 2)[:, None, None].expand(-1, values.shape[1], 1)
    median = filled.sort(dim=2).values.gather(2, middle)[..., 0]
    return torch.where(count[:, None] > 0, median, torch.zeros_like(median))


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return F.max_pool2d(mask[:, None].float(), 2 * radius + 1, 1, radius)[:, 0] > 0


def _grow4(mask: torch.Tensor) -> torch.Tensor:
    """`mask` plus its 4-neighbours: the ring it adds lies within 1 px of the mask."""
    m = F.pad(mask[:, None].float(), (1, 1, 1, 1))[:, 0]
    near = [m[:, 1:-1, :-2], m[:, 1:-1, 2:], m[:, :-2, 1:-1], m[:, 2:, 1:-1]]
    return mask | (torch.stack(near).amax(0) > 0)


def bounding_box(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Box [B,4] (cx, cy, hx, hy in pixels) of each mask and whether it is non-empty.

    Pixel centres lie inside the true shape, so the box of centres is half a pixel short on
    each side: adding it back makes a re-rendered shape match the original on average.
    """
    rows, cols = mask.any(2), mask.any(1)
    idx = torch.arange(mask.shape[1], device=mask.device, dtype=torch.float32)
    big = torch.tensor(1e9, device=mask.device)

    def extent(line: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo = torch.where(line, i, big).amin(1)
        hi = torch.where(line, i, -big).amax(1)
        return lo, hi

    y0, y1 = extent(rows, idx)
    x0, x1 = extent(cols, torch.arange(mask.shape[2], device=mask.device, dtype=torch.float32))
    present = mask.flatten(1).any(1)
    box = torch.stack(
        [(x0 + x1) / 2 + 0.5, (y0 + y1) / 2 + 0.5, (x1 - x0) / 2 + 0.5, (y1 - y0) / 2 + 0.5], 1
    )
    default = torch.tensor([mask.shape[2] / 2, mask.shape[1] / 2, 1.0, 1.0], device=mask.device)
    return torch.where(present[:, None], box, default), present


def template_ious(mask: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """IoU [B,S] of every shape drawn in `box` with `mask`: template matching on the box.

    A shape of half-size r covers 2r-1 to 2r+1 pixel centres, so the box's half-size is up to
    half a pixel short; each template is tried at three half-sizes and keeps its best IoU,
    which is what tells a small circle from a small square.
    """
    best = torch.zeros(mask.shape[0], len(SHAPES), device=mask.device)
    for grow in _HALF_SIZE_STEPS:
        cx, cy, hx, hy = box.unbind(1)
        drawn = shape_fields(cx, cy, hx + grow, hy + grow, mask.shape[-1]) <= 0  # [S,B,H,W]
        inter = (drawn & mask).flatten(2).sum(2).float()
        union = (drawn | mask).flatten(2).sum(2).float().clamp(min=1)
        best = torch.maximum(best, (inter / union).T)
    return best


def read_images(images: torch.Tensor) -> Reading:
    """Analyse a batch of toy-like images [B,3,H,H] in [0,1]."""
    images = check_images(images)
    b, _, h, w = images.shape
    palette = palette_tensor(COLORS, images.device)
    flat = images.flatten(2)
    border = torch.zeros(h, w, dtype=torch.bool, device=images.device)
    border[[0, -1], :] = True
    border[:, [0, -1]] = True
    bg_rgb = masked_median(flat, border.flatten().expand(b, -1))
    bg_index = torch.linalg.vector_norm(bg_rgb[:, None] - palette, dim=2).argmin(1)
    to_bg_palette = color_distance(images, palette[bg_index][:, None])[:, 0]
    border_purity = (to_bg_palette[:, border] < NEAR_COLOR).float().mean(1)

    foreground = color_distance(images, bg_rgb[:, None])[:, 0] > FOREGROUND_DISTANCE
    dark = images.amax(1) < DARK
    ink = foreground & ~dark
    # Outlined shapes: ignore the dark band when reading the colour, unless there is nothing else.
    colored = torch.where(ink.flatten(1).any(1)[:, None, None], ink, foreground)
    fill_rgb = masked_median(flat, colored.flatten(1))
    fill_index = torch.linalg.vector_norm(fill_rgb[:, None] - palette, dim=2).argmin(1)
    near_fill = color_distance(images, palette[fill_index][:, None])[:, 0] < NEAR_COLOR
    fill = colored & near_fill
    # Purity is read on the interior (pixels whose 4 neighbours are coloured too): a 1-px rim
    # blended with the background is how any decoder draws an edge at this resolution, not a
    # wrong colour. Shapes too thin to have an interior fall back to every coloured pixel.
    interior = colored & ~_grow4(~colored)
    interior = torch.where(interior.flatten(1).any(1)[:, None, None], interior, colored)
    fill_purity = (fill & interior).flatten(1).sum(1) / interior.flatten(1).sum(1).clamp(min=1)

    # The outline: how much of the 1-pixel ring around the fill is dark ink.
    ring = _grow4(fill) & ~fill
    outline = (ring & dark).flatten(1).sum(1) / ring.flatten(1).sum(1).clamp(min=1)
    # For outlined shapes the dark ink joins the shape: 2 px at 32x32, but up to 2.3 times that
    # beyond the fill's tip at a triangle's apex. Dark blotches farther away, or any dark pixels
    # when the shape has no outline, must not stretch the bounding box.
    reach = max(2, math.ceil(h / 16 * 2.5))
    ink_joins = (outline > 0.5)[:, None, None]
    shape_mask = fill | (ink_joins & foreground & dark & _dilate(fill, reach))
    box, present = bounding_box(shape_mask)
    # A few stray pixels are not a shape (every template fits a single pixel perfectly).
    big_enough = shape_mask.flatten(1).sum(1) >= h * w / MIN_SHAPE_AREA
    has_shape = present & big_enough & (box[:, 2:] >= 1.5).all(1)
    ious = template_ious(shape_mask, box) * has_shape[:, None]
    return Reading(
        bg_rgb,
        bg_index,
        border_purity,
        foreground,
        fill_index,
        fill_purity,
        shape_mask,
        box,
        has_shape,
        ious,
        outline,
    )


def outline_rgb(device: torch.device | None = None) -> torch.Tensor:
    return torch.tensor(OUTLINE_RGB, dtype=torch.float32, device=device) / 255
