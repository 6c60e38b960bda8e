"""Render toy prompts to images with coordinate grids; the shape geometry is shared with rewards.

Geometry lives in normalised coordinates (u, v) = (pixel - centre) / half-size, where every
shape's bounding box is exactly [-1, 1]^2. That is what lets the rewards evaluate a shape on
the bounding box of whatever they found in an image (template matching), and re-render the
clean image they think a generated one meant (flaw heatmaps).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .world import PALETTE, SHAPES, ToyPrompt, as_prompt

# Half-size of the shape as a fraction of the image side, and centre offset of a position word.
SIZE_FRACTIONS = {"small": 0.16, "medium": 0.24, "large": 0.32}
POSITION_OFFSET = 0.2
POSITION_DIRECTIONS = {
    "center": (0.0, 0.0),
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "top": (0.0, -1.0),  # image rows grow downwards
    "bottom": (0.0, 1.0),
}
MARGIN = 0.06  # shapes stay this far from the border, so the border shows the background
OUTLINE_RGB = (20, 20, 20)
CROSS_ARM = 0.4  # half-width of the cross's arms, normalised
STYLES = ("flat", "outlined")


def shape_sdf(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Signed distance (normalised units, < 0 inside) of every shape: [len(SHAPES), *u.shape].

    Exact inside each shape, which is where the outline band is measured; the circle is
    Euclidean, the square and cross L-infinity, the triangle the max of its edge distances.
    """
    au, av = u.abs(), v.abs()
    circle = torch.sqrt(u * u + v * v) - 1
    square = torch.maximum(au, av) - 1
    # Upright triangle with apex (0, -1) and base v = 1; the side normals are (+-2, -1)/sqrt(5).
    side = (2 * au - (v + 1)) / 5**0.5
    triangle = torch.maximum(side, v - 1)
    cross = torch.minimum(
        torch.maximum(au - 1, av - CROSS_ARM), torch.maximum(au - CROSS_ARM, av - 1)
    )
    fields = {"circle": circle, "square": square, "triangle": triangle, "cross": cross}
    return torch.stack([fields[name] for name in SHAPES])


def pixel_grid(size: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (x, y), each [size, size], in pixels."""
    r = torch.arange(size, dtype=torch.float32, device=device) + 0.5
    y, x = torch.meshgrid(r, r, indexing="ij")
    return x, y


def shape_fields(
    cx: torch.Tensor, cy: torch.Tensor, hx: torch.Tensor, hy: torch.Tensor, size: int
) -> torch.Tensor:
    """Signed distance in pixels [S,B,H,W] of every shape drawn in each box (pixels)."""
    x, y = pixel_grid(size, cx.device)
    u = (x - cx[:, None, None]) / hx[:, None, None]
    v = (y - cy[:, None, None]) / hy[:, None, None]
    # Back to pixels with the mean half-size: close enough for anisotropic boxes.
    return shape_sdf(u, v) * ((hx + hy) / 2)[None, :, None, None]


def shape_field(
    shapes: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    hx: torch.Tensor,
    hy: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """Signed distance in pixels [B,H,W] of shape index `shapes[b]` drawn in box b."""
    fields = shape_fields(cx, cy, hx, hy, size)
    return fields.gather(0, shapes.long()[None, :, None, None].expand(1, *fields.shape[1:]))[0]


def outline_width(size: int, half: torch.Tensor) -> torch.Tensor:
    """Outline band in pixels: 2 px at 32x32, scaling with the image, but at most a quarter of
    the half-size (and at least 1.1 px so every boundary pixel is dark) so small shapes keep
    their fill colour."""
    return torch.clamp(torch.minimum(torch.full_like(half, size / 16), 0.25 * half), min=1.1)


def paint(
    shapes: torch.Tensor,
    fill: torch.Tensor,
    background: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    hx: torch.Tensor,
    hy: torch.Tensor,
    outlined: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """Paint a batch [B,3,H,W] from explicit geometry (pixels) and colours ([B,3] in [0,1])."""
    dist = shape_field(shapes, cx, cy, hx, hy, size)
    inside = (dist <= 0)[:, None]
    band = outline_width(size, (hx + hy) / 2)
    edge = (inside[:, 0] & (dist > -band[:, None, None]) & outlined[:, None, None])[:, None]
    outline = torch.tensor(OUTLINE_RGB, dtype=torch.float32, device=fill.device) / 255
    img = torch.where(inside, fill[:, :, None, None], background[:, :, None, None])
    return torch.where(edge, outline[None, :, None, None], img)


def palette_tensor(names: Sequence[str], device: torch.device | None = None) -> torch.Tensor:
    return torch.tensor([PALETTE[n] for n in names], dtype=torch.float32, device=device) / 255


def layout(prompt: ToyPrompt, size: int) -> tuple[float, float, float]:
    """Centre (x, y) and half-size of the prompt's shape, in pixels."""
    half = SIZE_FRACTIONS[prompt.size]
    dx, dy = POSITION_DIRECTIONS[prompt.position]
    # Large shapes move less than the nominal offset so they never leave the margin.
    lo, hi = half + MARGIN, 1 - half - MARGIN
    cx = min(max(0.5 + dx * POSITION_OFFSET, lo), hi)
    cy = min(max(0.5 + dy * POSITION_OFFSET, lo), hi)
    return cx * size, cy * size, half * size


def render_batch(
    prompts: Sequence[ToyPrompt | str],
    size: int = 32,
    style: str = "flat",
    seed: int | None = None,
    jitter: torch.Generator | None = None,
) -> torch.Tensor:
    """Render prompts to [B,3,size,size] in [0,1]; exact unless `seed`/`jitter` ask for jitter.

    Jitter moves the centre by up to 3% of the side and scales the half-size by 0.9-1.1, so
    samples used to train the toy diffusion model vary; it never pushes a shape off the image.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style '{style}'; valid: {', '.join(STYLES)}")
    if size < 8:
        raise ValueError(f"image size {size} is too small to draw a shape (need >= 8)")
    parsed = [as_prompt(p) for p in prompts]
    geo = torch.tensor([layout(p, size) for p in parsed], dtype=torch.float32).reshape(-1, 3)
    cx, cy, half = geo.unbind(1)
    if seed is not None and jitter is None:
        jitter = torch.Generator().manual_seed(seed)
    if jitter is not None:
        noise = torch.rand(len(parsed), 3, generator=jitter) * 2 - 1
        half = half * (1 + 0.1 * noise[:, 2])
        cx = (cx + 0.03 * size * noise[:, 0]).clamp(half + 0.03 * size, size - half - 0.03 * size)
        cy = (cy + 0.03 * size * noise[:, 1]).clamp(half + 0.03 * size, size - half - 0.03 * size)
    shapes = torch.tensor([SHAPES.index(p.shape) for p in parsed], dtype=torch.long)
    outlined = torch.full((len(parsed),), style == "outlined")
    return paint(
        shapes,
        palette_tensor([p.color for p in parsed]),
        palette_tensor([p.background for p in parsed]),
        cx,
        cy,
        half,
        half,
        outlined,
        size,
    )


def render(
    prompt: ToyPrompt | str,
    size: int = 32,
    style: str = "flat",
    jitter: torch.Generator | None = None,
) -> torch.Tensor:
    """Render one prompt to [3,size,size] in [0,1]; deterministic without `jitter`."""
    return render_batch([prompt], size=size, style=style, jitter=jitter)[0]
