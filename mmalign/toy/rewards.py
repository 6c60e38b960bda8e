"""Programmatic rewards of the toy world: prompt fidelity, style, and a family of users.

All take images [B,3,H,H] in [0,1] (H >= 16) and return [B] in [0,1], higher is better. They
are exact functions of the pixels, which is what lets a test prove that alignment moved a
model the right way. Flaw rewards (heatmaps, dense scores) are in `flaws.py`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch

from ..suggest import did_you_mean
from .analysis import DARK, Reading, as_prompts, broken, read_images
from .render import STYLES, palette_tensor
from .world import COLORS, SHAPES, ToyPrompt

# Shape credit ramps from 0 at this template IoU to 1 at IOU_FULL: renders reach ~0.9 even
# for small shapes, while a shapeless blob or noise stays below the floor.
IOU_FLOOR, IOU_FULL = 0.5, 0.8


def _ramp(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return ((x - lo) / (hi - lo)).clamp(0, 1)


def _matches(r: Reading, prompts: Sequence[ToyPrompt | str]):
    """Per image, whether the read background, fill colour and best shape template are the
    prompt's ([B] bools each), and the prompt's shape index [B]."""
    parsed = as_prompts(prompts, r.bg_index.shape[0])
    dev = r.bg_index.device
    bg = torch.tensor([COLORS.index(p.background) for p in parsed], device=dev)
    color = torch.tensor([COLORS.index(p.color) for p in parsed], device=dev)
    shape = torch.tensor([SHAPES.index(p.shape) for p in parsed], device=dev)
    return r.bg_index == bg, r.fill_index == color, r.ious.argmax(1) == shape, shape


def fidelity_parts(
    images: torch.Tensor, prompts: Sequence[ToyPrompt | str], reading: Reading | None = None
) -> dict[str, torch.Tensor]:
    """The three thirds of `fidelity`: `background`, `color`, `shape`, each [B] in [0,1].

    Each is "right or wrong" times "how cleanly": the background counts when the border's
    median is nearest the prompt's background colour, times the share of border pixels that
    are that colour; the shape colour likewise on the non-dark foreground (so an outline does
    not count against it); the shape kind when the prompt's shape is the best template on the
    shape's bounding box, times a ramp of its IoU. Purity and IoU make noise score near 0.
    """
    r = reading if reading is not None else read_images(images)
    bg_ok, color_ok, best, shape = _matches(r, prompts)
    iou = r.ious.gather(1, shape[:, None])[:, 0]
    whole = ~broken(images)  # a NaN pixel is skipped by every comparison: score the image 0
    return {
        "background": bg_ok * r.border_purity * whole,
        "color": color_ok * r.fill_purity * r.has_shape * whole,
        "shape": best * _ramp(iou, IOU_FLOOR, IOU_FULL) * r.has_shape * whole,
    }


def prompt_checks(
    images: torch.Tensor, prompts: Sequence[ToyPrompt | str], reading: Reading | None = None
) -> dict[str, torch.Tensor]:
    """`fidelity_parts` as pass / fail, each [B] of 0. or 1.: `hue` (the fill's nearest palette
    colour is the prompt's), `shape` (the prompt's shape is the best template), `background`
    (the border's nearest colour is the prompt's); no purity or IoU ramp. A model card's
    prompt-following check."""
    r = reading if reading is not None else read_images(images)
    bg_ok, color_ok, best, _ = _matches(r, prompts)
    return {
        "hue": (color_ok & r.has_shape).float(),
        "shape": (best & r.has_shape).float(),
        "background": bg_ok.float(),
    }


def fidelity(images: torch.Tensor, prompts: Sequence[ToyPrompt | str]) -> torch.Tensor:
    """How well each image follows its prompt, [B] in [0,1]: the mean of `fidelity_parts`.

    Size and position words are not scored: they are left free for user tastes to act on.
    """
    parts = fidelity_parts(images, prompts)
    return (parts["background"] + parts["color"] + parts["shape"]) / 3


def style_score(images: torch.Tensor, style: str = "outlined") -> torch.Tensor:
    """How much each image looks drawn in `style`, [B] in [0,1] (0 without a shape).

    `outlined`: the share of the 1-pixel ring around the shape's fill colour that is dark ink
    (the inner edge of the outline band); `flat`: 1 minus that.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style '{style}'; {did_you_mean(style, STYLES)}")
    r = read_images(images)
    shaped = r.has_shape & ~broken(images)
    outlined = r.outline * shaped
    return outlined if style == "outlined" else (1 - r.outline) * shaped


# --- users ----------------------------------------------------------------------------------

TASTE_WEIGHT = 0.3  # below 1/3: no taste makes up for missing a third of the prompt
_TEMPERATURE = 0.1  # softness of colour membership (palette colours are >= 0.45 apart)


def _liking_colors(liked: tuple[str, ...]) -> Callable[[torch.Tensor, Reading], torch.Tensor]:
    """Taste = mean over the shape's non-dark pixels of their soft membership in `liked`.

    Soft, so a slightly warmer red already scores a little higher for a warm user.
    """

    def taste(images: torch.Tensor, r: Reading) -> torch.Tensor:
        palette = palette_tensor(COLORS, images.device)
        dist = torch.linalg.vector_norm(images[:, None] - palette[None, :, :, None, None], dim=2)
        weights = torch.softmax(-dist / _TEMPERATURE, dim=1)
        member = weights[:, [COLORS.index(c) for c in liked]].sum(1)
        ink = r.shape_mask & (images.amax(1) >= DARK)
        share = (member * ink).flatten(1).sum(1) / ink.flatten(1).sum(1).clamp(min=1)
        return share * r.has_shape  # stray pixels are no shape, as for every other taste

    return taste


def _bigness(images: torch.Tensor, r: Reading) -> torch.Tensor:
    """Linear size sqrt(shape area / image area): ~0.25 small circle, ~0.53 large circle."""
    side = r.shape_mask.flatten(1).float().mean(1).sqrt()
    return _ramp(side, 0.2, 0.6) * r.has_shape


USERS: dict[str, str] = {
    "warm": "likes red, orange and yellow shapes",
    "cool": "likes blue, green and purple shapes",
    "big": "likes large shapes (by foreground area)",
    "small": "likes small shapes (by foreground area)",
    "outline": "likes shapes drawn with a dark outline",
}
_TASTES: dict[str, Callable[[torch.Tensor, Reading], torch.Tensor]] = {
    "warm": _liking_colors(("red", "orange", "yellow")),
    "cool": _liking_colors(("blue", "green", "purple")),
    "big": _bigness,
    "small": lambda images, r: (1 - _bigness(images, r)) * r.has_shape,
    "outline": lambda images, r: r.outline * r.has_shape,
}


# --- a parametric family of users (PPD, Dang et al. CVPR 2025) ---------------------------------

# The family's axes, each read in [-1, 1]. Size and position are the ones toy-sd can draw (its
# captions carry size and position words, and `fidelity` scores neither), so they are the
# tastes a personalised toy-sd can serve; toy-sd never tints or outlines a shape.
TASTE_DIMS = ("warmth", "size", "outline", "horizontal", "vertical")
# Seen in training: many users, so that a user encoder's map from few-shot examples to taste is
# learned from many tastes rather than memorised from a handful (docs/results.md, PPD).
TRAIN_USERS = tuple(f"t{k:02d}" for k in range(128))
HELDOUT_USERS = tuple(f"h{k:02d}" for k in range(8))  # never seen in training
FAMILY_USERS = TRAIN_USERS + HELDOUT_USERS
ALL_USERS = (*USERS, *FAMILY_USERS)
USER_SETS: dict[str, tuple[str, ...]] = {
    "named": tuple(USERS),
    "train": TRAIN_USERS,
    "heldout": HELDOUT_USERS,
}


def tastes_place(user_id: str) -> bool:
    """Whether a user's taste reads where the shape is (the family users do; the named ones
    do not), so their prompts leave position to taste."""
    return user_id in FAMILY_USERS


def user_weights(user_id: str) -> tuple[float, ...]:
    """A family user's taste weights over `TASTE_DIMS`, L1-normalised (|w|_1 = 1).

    A pure function of the id (SHA-256 of `ppd-user:<id>`, one 16-bit number per axis mapped
    to [-1, 1]), so the family is the same on every machine and torch version.
    """
    if user_id not in FAMILY_USERS:
        raise ValueError(f"'{user_id}' is not a family user; {did_you_mean(user_id, FAMILY_USERS)}")
    digest = hashlib.sha256(f"ppd-user:{user_id}".encode()).digest()
    raw = [
        int.from_bytes(digest[2 * i : 2 * i + 2], "big") / 65535 * 2 - 1
        for i in range(len(TASTE_DIMS))
    ]
    norm = sum(abs(w) for w in raw) or 1.0
    return tuple(w / norm for w in raw)


_warm_member = _liking_colors(("red", "orange", "yellow"))
_cool_member = _liking_colors(("blue", "green", "purple"))


POSITION_SPAN = 0.25  # a centre this far from the middle (a fraction of the side) reads +-1


def taste_axes(images: torch.Tensor, r: Reading) -> torch.Tensor:
    """The image on `TASTE_DIMS`, [B, 5] in [-1, 1]: warm minus cool colour membership,
    2 * bigness - 1, 2 * outline share - 1, and the shape's centre right of the middle
    (horizontal) and above it (vertical), each / `POSITION_SPAN` (0 without a shape). The
    world's "on the left" puts a medium shape at -0.8."""
    warmth = _warm_member(images, r) - _cool_member(images, r)
    side = images.shape[-1]
    centre = r.box[:, :2] / side - 0.5
    place = (centre / POSITION_SPAN).clamp(-1, 1) * r.has_shape[:, None]
    axes = [warmth, 2 * _bigness(images, r) - 1, 2 * r.outline - 1, place[:, 0], -place[:, 1]]
    return torch.stack(axes, dim=1)


def _family_taste(user_id: str) -> Callable[[torch.Tensor, Reading], torch.Tensor]:
    w = torch.tensor(user_weights(user_id))

    def taste(images: torch.Tensor, r: Reading) -> torch.Tensor:
        axes = taste_axes(images, r)
        return (0.5 + 0.5 * axes @ w.to(axes)) * r.has_shape

    return taste


def _taste_of(user_id: str) -> Callable[[torch.Tensor, Reading], torch.Tensor]:
    if user_id in _TASTES:
        return _TASTES[user_id]
    if user_id in FAMILY_USERS:
        return _family_taste(user_id)
    raise ValueError(f"unknown toy user '{user_id}'; {did_you_mean(user_id, ALL_USERS)}")


def user_taste(images: torch.Tensor, user_id: str) -> torch.Tensor:
    """The user's taste alone, [B] in [0,1], ignoring the prompt. A family user's taste is
    `0.5 + 0.5 * w . taste_axes(image)` with `w = user_weights(user_id)`."""
    taste = _taste_of(user_id)
    r = read_images(images)
    return taste(images.float().clamp(0, 1), r).nan_to_num(0.0) * ~broken(images)


def user_reward(
    images: torch.Tensor, prompts: Sequence[ToyPrompt | str], user_id: str
) -> torch.Tensor:
    """A user's reward, [B] in [0,1]: fidelity * (1 - TASTE_WEIGHT + TASTE_WEIGHT * taste).

    Multiplying keeps the prompt first (an unfaithful image pleases nobody); among images that
    follow the prompt equally well, the user's taste decides. Any id of `ALL_USERS`.
    """
    taste_fn = _taste_of(user_id)
    r = read_images(images)
    parts = fidelity_parts(images, prompts, r)
    fid = (parts["background"] + parts["color"] + parts["shape"]) / 3
    taste = taste_fn(images.float().clamp(0, 1), r).nan_to_num(0.0)  # broken images: fid 0
    return fid * (1 - TASTE_WEIGHT + TASTE_WEIGHT * taste)
