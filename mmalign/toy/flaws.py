"""Flaws with ground truth, flaw heatmaps for any image, and ImageDoctor-style dense scores.

`inject_flaws` damages clean images and returns exactly which pixels it changed; that is the
training and test data of a dense reward head. `flaw_heatmap` and `dense_scores` need no
ground truth: a pixel is flawed when the clean rendering that the image seems to depict (its
detected colours, shape, box and style) does not explain it, so they work on generated images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .analysis import (
    Reading,
    as_prompts,
    broken,
    check_images,
    color_distance,
    outline_rgb,
    read_images,
)
from .render import SHAPES, paint, palette_tensor, pixel_grid
from .rewards import fidelity_parts
from .world import COLORS, PALETTE, ToyPrompt

FLAW_KINDS = ("blotch", "smear")
CHANGED = 0.05  # a flaw "changed" a pixel when some channel moved by more than this
# Unexplained-pixel heat ramps from 0 to 1 over this RGB distance to the nearest clean pixel.
HEAT_FROM, HEAT_TO = 0.15, 0.35
PLAUSIBLE_AREA = 0.1  # plausibility reaches 0 when this share of the image is flawed


def _generator(seed: int | torch.Generator) -> torch.Generator:
    return seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)


def _blotch(images: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark noisy discs, radius 8-14% of the side, centred in the middle 60% of the image."""
    b, _, size, _ = images.shape
    x, y = pixel_grid(size)
    centre = (0.2 + 0.6 * torch.rand(b, 2, generator=g)) * size
    radius = (0.08 + 0.06 * torch.rand(b, generator=g)) * size
    disc = (x - centre[:, 0, None, None]) ** 2 + (y - centre[:, 1, None, None]) ** 2
    region = (disc <= radius[:, None, None] ** 2)[:, None]
    ink = 0.25 * torch.rand(images.shape, generator=g)
    return torch.where(region, ink, images), region


def _smear(images: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Drag pixels along a random direction inside a streak (half the side long, 12% wide).

    Each streak pixel becomes the mean of 8 samples up to 30% of the side behind it, like a
    finger dragged through wet paint; the streak is centred near the middle so it usually
    crosses the shape (where nothing changes, nothing is marked).
    """
    b, _, size, _ = images.shape
    x, y = pixel_grid(size)
    centre = (0.35 + 0.3 * torch.rand(b, 2, generator=g)) * size
    angle = math.pi * torch.rand(b, generator=g)
    dx, dy = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    rx, ry = x - centre[:, 0, None, None], y - centre[:, 1, None, None]
    along, across = rx * dx + ry * dy, -rx * dy + ry * dx
    region = ((along.abs() <= 0.25 * size) & (across.abs() <= 0.06 * size))[:, None]
    samples = []
    for t in torch.linspace(0, 0.3 * size, 8).tolist():
        # grid_sample wants x, y in [-1, 1] with pixel centres at (i + 0.5) / size * 2 - 1.
        gx, gy = (x - t * dx) / size * 2 - 1, (y - t * dy) / size * 2 - 1
        grid = torch.stack([gx, gy], -1)
        samples.append(F.grid_sample(images, grid, "bilinear", "border", align_corners=False))
    return torch.where(region, torch.stack(samples).mean(0), images), region


def inject_flaws(
    images: torch.Tensor,
    seed: int | torch.Generator = 0,
    kinds: Sequence[str] = FLAW_KINDS,
    per_image: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Damage each image with `per_image` flaws of random `kinds`; returns (flawed, heatmaps).

    heatmaps [B,1,H,W] is 1 exactly on the pixels the flaws changed, 0 elsewhere.
    """
    unknown = [k for k in kinds if k not in FLAW_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown flaw kinds {unknown}; valid: {', '.join(FLAW_KINDS)}")
    images = check_images(images)
    g = _generator(seed)
    flawed = images.clone()
    makers = {"blotch": _blotch, "smear": _smear}
    for _ in range(per_image):
        pick = torch.randint(len(kinds), (images.shape[0],), generator=g)
        for i, kind in enumerate(kinds):
            damaged, _ = makers[kind](flawed, g)
            flawed = torch.where((pick == i)[:, None, None, None], damaged, flawed)
    # Tiny changes (a smear inside one flat colour) are dropped, so the heatmap is exact:
    # the flawed image differs from the clean one on the marked pixels and nowhere else.
    changed = (flawed - images).abs().amax(1, keepdim=True) > CHANGED
    return torch.where(changed, flawed, images), changed.float()


def _clean_render(
    r: Reading, size: int, shape: torch.Tensor, fill: torch.Tensor, background: torch.Tensor
) -> torch.Tensor:
    """The clean image with the reading's box and style and the given shape and colours."""
    cx, cy, hx, hy = r.box.unbind(1)
    fill = torch.where(r.has_shape[:, None], fill, background)  # no shape: background only
    return paint(shape, fill, background, cx, cy, hx, hy, r.outline > 0.5, size)


def _unexplained(images: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Heat [B,1,H,W]: distance of each pixel to the clean pixels within 1 px of it, ramped.

    The 1-pixel tolerance forgives the staircase where the detected box is off by a pixel.
    """
    b, c, h, w = clean.shape
    near = F.unfold(F.pad(clean, (1, 1, 1, 1), mode="replicate"), 3).view(b, c, 9, h, w)
    dist = torch.linalg.vector_norm(images[:, :, None] - near, dim=1).amin(1, keepdim=True)
    return ((dist - HEAT_FROM) / (HEAT_TO - HEAT_FROM)).clamp(0, 1)


def _prompt_render(images: torch.Tensor, prompts: Sequence[ToyPrompt], r: Reading) -> torch.Tensor:
    dev = images.device
    shape = torch.tensor([SHAPES.index(p.shape) for p in prompts], device=dev)
    fill = palette_tensor([p.color for p in prompts], dev)
    return _clean_render(
        r, images.shape[-1], shape, fill, palette_tensor([p.background for p in prompts], dev)
    )


def flaw_heatmap(images: torch.Tensor, prompts: Sequence[ToyPrompt | str]) -> torch.Tensor:
    """Pixels [B,1,H,W] in [0,1] not explained by the clean rendering of the prompt drawn at
    the detected box and style: artifacts and prompt violations together (`dense_scores`
    separates them)."""
    bad = broken(images)[:, None, None, None]  # a non-finite image is flawed everywhere
    images = check_images(images)
    r = read_images(images)
    heat = _unexplained(images, _prompt_render(images, as_prompts(prompts, len(images)), r))
    return torch.where(bad, 1.0, heat)


def _aesthetics(images: torch.Tensor) -> torch.Tensor:
    """Colour purity: mean over pixels of how close each is to a palette or outline colour.

    Clean flat drawing scores 1; noise, blur and muddy blends score lower.
    """
    dev = images.device
    inks = torch.cat([palette_tensor(list(PALETTE), dev), outline_rgb(dev)[None]])
    nearest = color_distance(images, inks).amin(1)
    return (1 - nearest / 0.25).clamp(0, 1).flatten(1).mean(1)


def dense_scores(
    images: torch.Tensor, prompts: Sequence[ToyPrompt | str]
) -> dict[str, torch.Tensor]:
    """ImageDoctor's four scores [B] in [0,1] and two heatmaps [B,1,H,W] for toy images.

    alignment = fidelity; aesthetics = colour purity (`_aesthetics`); plausibility = 1 minus
    the artifact area, reaching 0 at PLAUSIBLE_AREA of the image; overall = their mean.
    `artifact`: pixels the image's own clean reading (detected colours, shape, box, style)
    does not explain; `misalignment`: pixels that reading explains but the prompt does not.
    """
    images_in = images
    images = check_images(images)
    parsed = as_prompts(prompts, len(images))
    r = read_images(images)
    parts = fidelity_parts(images_in, parsed, r)  # warns about, and zeroes, broken images
    bad = broken(images_in, warn=False)  # fidelity_parts warned about them
    alignment = (parts["background"] + parts["color"] + parts["shape"]) / 3
    palette = palette_tensor(COLORS, images.device)
    own = _clean_render(
        r, images.shape[-1], r.ious.argmax(1), palette[r.fill_index], palette[r.bg_index]
    )
    artifact = _unexplained(images, own)
    misalignment = (_unexplained(images, _prompt_render(images, parsed, r)) - artifact).clamp(0, 1)
    # A non-finite image is all artifact and scores 0 (NaN fails every comparison above).
    artifact = torch.where(bad[:, None, None, None], 1.0, artifact)
    misalignment = torch.where(bad[:, None, None, None], 0.0, misalignment)
    plausibility = (1 - artifact.flatten(1).mean(1) / PLAUSIBLE_AREA).clamp(0, 1)
    aesthetics = torch.where(bad, 0.0, _aesthetics(images))
    return {
        "alignment": alignment,
        "aesthetics": aesthetics,
        "plausibility": plausibility,
        "overall": (alignment + aesthetics + plausibility) / 3,
        "misalignment": misalignment,
        "artifact": artifact,
    }
