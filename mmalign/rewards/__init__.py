"""Reward scorers behind one interface: `get_scorer("toy:fidelity").score(images, prompts)`.

Names are `<family>[:<scorer>][:<argument>]`; `SCORERS` maps a name without its argument to a
factory called with the argument, if any (a factory may list its arguments in `variants` and
set `requires_argument`). Real models load lazily, so listing names costs no import:

| name | model | argument |
| --- | --- | --- |
| `pickscore` | PickScore_v1 (transformers CLIP) | - |
| `hpsv2[:v2.1/v2.0]` | OpenCLIP ViT-H-14 + HPS checkpoint | version (default v2.1) |
| `imagereward` | ImageReward-v1.0 (BLIP on transformers) | - |
| `clip[:<arch>[:<tag>]]` | OpenCLIP, 100 * cosine | backbone (default ViT-L-14:openai) |
| `aesthetic` | LAION aesthetic MLP on CLIP ViT-L/14 | - |
| `toy:fidelity`, `toy:style[:<style>]`, `toy:user:<id>`, `toy:flaws` | toy world rewards | |
| `dense:<path>` | a trained dense reward head (`rewards/dense`): its overall score | checkpoint |

Keyword arguments of `get_scorer(name, **kwargs)` go to the factory: `path` (a local folder,
file or hub id for the weights), `device`, `dtype`, `batch_size`, and per scorer `processor`
(pickscore), `arch` (hpsv2: an OpenCLIP name or model config JSON), `clip` (aesthetic),
`med_config` and `tokenizer` (imagereward). `files.scorer_files(name, **kwargs)` lists the files
a scorer would load and `files.require_scorer_files` checks them, loading nothing; on the
command line `--scorer-path NAME=PATH` / `NAME:OPTION=PATH` gives them (`files.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import InputError
from ..suggest import did_you_mean
from .base import Scorer, as_image_batch
from .toy import ToyFidelity, ToyFlaws, ToyStyle, ToyUser


def _lazy(module: str, cls: str, **attrs: Any) -> Callable[..., Scorer]:
    """A factory importing its module on first use (transformers, open_clip are heavy)."""

    def factory(*args: Any, **kwargs: Any) -> Scorer:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(*args, **kwargs)

    factory.__doc__ = f"mmalign.rewards.{module}.{cls}"
    factory.files_module = module  # type: ignore[attr-defined]  # its `files`: rewards/files.py
    for key, value in attrs.items():
        setattr(factory, key, value)
    return factory


SCORERS: dict[str, Callable[..., Scorer]] = {
    "pickscore": _lazy("pickscore", "PickScore"),
    "hpsv2": _lazy("hpsv2", "HPSv2", variants=("v2.1", "v2.0")),
    "imagereward": _lazy("imagereward", "ImageRewardScorer"),
    "clip": _lazy("clip", "ClipScore", variants=("ViT-L-14:openai", "ViT-H-14:laion2b_s32b_b79k")),
    "aesthetic": _lazy("aesthetic", "Aesthetic"),
    "toy:fidelity": ToyFidelity,
    "toy:style": ToyStyle,
    "toy:user": ToyUser,
    "toy:flaws": ToyFlaws,
    "dense": _lazy("dense.scorer", "DenseScorer", requires_argument=True),
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


def split_name(name: str) -> tuple[str, str | None]:
    """(registered base, argument or None): the longest registered base that `name` starts
    with, so `toy:style:flat` -> (`toy:style`, `flat`), `clip:ViT-B-32:openai` -> (`clip`,
    `ViT-B-32:openai`)."""
    if name in SCORERS:
        return name, None
    bases = [b for b in SCORERS if name.startswith(b + ":") and len(name) > len(b) + 1]
    if not bases:
        raise InputError(f"unknown scorer '{name}'; {did_you_mean(name, scorer_names())}")
    base = max(bases, key=len)
    return base, name[len(base) + 1 :]


def get_scorer(name: str, **kwargs: Any) -> Scorer:
    """The scorer called `name`, e.g. `toy:fidelity`, `toy:user:warm`, `hpsv2:v2.0`,
    `pickscore` (kwargs: `path=`, `device=`, `dtype=`, ...; see the module docstring)."""
    base, argument = split_name(name)
    factory = SCORERS[base]
    return factory(argument, **kwargs) if argument is not None else factory(**kwargs)
