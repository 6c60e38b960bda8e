"""Scorers for the toy world (`mmalign.toy`): exact, programmatic, CPU-fast."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..suggest import did_you_mean
from ..toy.flaws import dense_scores
from ..toy.render import STYLES
from ..toy.rewards import ALL_USERS, USERS, fidelity, style_score, user_reward
from .base import ImageBatch, as_image_batch

# Every toy scorer takes the keyword arguments callers give any scorer (`get_scorer(name,
# device=...)`, as SmPO's `data.smooth.device` does) and ignores them: it has no weights to
# place, and scores on the images' own device.
Ignored = Any


def _no_argument(name: str, argument: str | None) -> None:
    if argument is not None:
        raise ValueError(f"{name} takes no argument, got '{name}:{argument}'; use '{name}'")


class ToyFidelity:
    """`toy:fidelity`: shape colour, shape kind and background each count a third."""

    name = "toy:fidelity"
    ceiling = 1.0  # a perfect image; `eval winrate` also reports the prompts below it

    def __init__(
        self, argument: str | None = None, *, device: Ignored = None, dtype: Ignored = None,
        batch_size: Ignored = None,
    ) -> None:  # fmt: skip
        _no_argument(self.name, argument)

    def score(self, images: ImageBatch, prompts: Sequence[str]) -> torch.Tensor:
        return fidelity(as_image_batch(images), prompts)


class ToyStyle:
    """`toy:style[:<style>]`: how much the image is drawn in a style (default `outlined`)."""

    variants = STYLES

    def __init__(
        self, style: str = "outlined", *, device: Ignored = None, dtype: Ignored = None,
        batch_size: Ignored = None,
    ) -> None:  # fmt: skip
        if style not in STYLES:
            raise ValueError(f"unknown toy style '{style}'; {did_you_mean(style, STYLES)}")
        self.style = style
        self.name = f"toy:style:{style}"

    def score(self, images: ImageBatch, prompts: Sequence[str]) -> torch.Tensor:
        return style_score(as_image_batch(images), self.style)


class ToyUser:
    """`toy:user:<id>`: a toy user's reward, fidelity weighted by their taste: the 5 named
    `USERS` or a member of the PPD family (`t00`-`t127` train, `h00`-`h07` held out)."""

    variants = ALL_USERS
    requires_argument = True

    def __init__(
        self, user_id: str | None = None, *, device: Ignored = None, dtype: Ignored = None,
        batch_size: Ignored = None,
    ) -> None:  # fmt: skip
        if user_id is None:
            named = ", ".join(USERS)
            raise ValueError(
                f"toy:user needs a user: 'toy:user:<id>', <id> in {named}, t00-t127, h00-h07"
            )
        if user_id not in ALL_USERS:
            raise ValueError(f"unknown toy user '{user_id}'; {did_you_mean(user_id, ALL_USERS)}")
        self.user_id = user_id
        self.name = f"toy:user:{user_id}"

    def score(self, images: ImageBatch, prompts: Sequence[str]) -> torch.Tensor:
        return user_reward(as_image_batch(images), prompts, self.user_id)


class ToyFlaws:
    """`toy:flaws`: ImageDoctor's `overall` dense score (alignment, aesthetics, plausibility)."""

    name = "toy:flaws"

    def __init__(
        self, argument: str | None = None, *, device: Ignored = None, dtype: Ignored = None,
        batch_size: Ignored = None,
    ) -> None:  # fmt: skip
        _no_argument(self.name, argument)

    def score(self, images: ImageBatch, prompts: Sequence[str]) -> torch.Tensor:
        return dense_scores(as_image_batch(images), prompts)["overall"]

    def dense(self, images: ImageBatch, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """All four scores [B] and both heatmaps [B,1,H,W], as `dense:<path>` returns them."""
        return dense_scores(as_image_batch(images), prompts)
