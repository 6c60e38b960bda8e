"""Reward scorers behind one interface: `get_scorer("toy:fidelity").score(images, prompts)`.

Names are `<family>:<scorer>[:<argument>]`; `SCORERS` maps the name without the argument to
a factory called with the argument, if any (a factory may list its arguments in `variants`
and set `requires_argument`). Real models (PickScore, HPSv2, ImageReward, CLIP,
aesthetic) register here the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from ..suggest import did_you_mean
from .base import Scorer, as_image_batch
from .toy import ToyFidelity, ToyFlaws, ToyStyle, ToyUser

SCORERS: dict[str, Callable[..., Scorer]] = {
    "toy:fidelity": ToyFidelity,
    "toy:style": ToyStyle,
    "toy:user": ToyUser,
    "toy:flaws": ToyFlaws,
}

__all__ = ["SCORERS", "Scorer", "as_image_batch", "get_scorer", "scorer_names"]


def scorer_names() -> list[str]:
    """Every valid name, arguments spelled out (`toy:user:warm`, ...)."""
    names = []
    for base, factory in SCORERS.items():
        variants = getattr(factory, "variants", ())
        names += [] if getattr(factory, "requires_argument", False) else [base]
        names += [f"{base}:{v}" for v in variants]
    return names


def get_scorer(name: str) -> Scorer:
    """The scorer called `name`, e.g. `toy:fidelity`, `toy:style:flat`, `toy:user:warm`."""
    if name in SCORERS:
        return SCORERS[name]()
    base, _, argument = name.rpartition(":")
    if base in SCORERS and argument:
        return SCORERS[base](argument)
    raise ValueError(f"unknown scorer '{name}'; {did_you_mean(name, scorer_names())}")
