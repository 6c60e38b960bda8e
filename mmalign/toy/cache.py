"""Toy datasets built on first use and cached by their options (and toy-sd's weights).

`toy:<kind>` in a recipe's `data.path` or a `--data` flag resolves here: every adapter (diffusion,
VLM) and the evaluation take toy data from this one place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import InputError
from ..data.cache import build_once, cache_root, digest
from ..suggest import closest
from ..weights import weight_files

TOY_PREFIX = "toy:"
DEFAULT_SPLIT = "train"  # what a command's `--split` reads when none is given
# What each toy dataset's pairs are (toy.datasets.KINDS): images for the diffusion recipes,
# text answers for the VLM ones. Read to refuse a kind before it is built (toy:pairs samples
# toy-sd for minutes) for a recipe that cannot train on it.
PAIR_KINDS = {
    "pairs": "image", "style": "image", "users": "image", "flaws": "image",
    "vqa": "text", "hallucination": "text", "safety": "text", "prism": "text",
}  # fmt: skip


def toy_pairs_kind(path: str) -> str | None:
    """`image` or `text` for `toy:<kind>[:...]`; None for another name or an unknown kind."""
    if not path.startswith(TOY_PREFIX):
        return None
    return PAIR_KINDS.get(path[len(TOY_PREFIX) :].split(":")[0])


def split_to_read(
    data: str, split: str | None, default: str = DEFAULT_SPLIT, hint: str | None = None
) -> str:
    """The split a command reads of `data` for `--split split` (None: not given): `split`, else
    `default`. Toy data is built, not split: a `--split` given for `toy:<kind>` is refused
    rather than ignored (the command would read the built rows whatever it named). `hint`: the
    command's own way to other toy rows, in place of building them on the held-out prompts."""
    if data.startswith(TOY_PREFIX) and split is not None:
        kind = data[len(TOY_PREFIX) :].split(":")[0]
        hint = hint or (
            "For rows on the held-out toy prompts, build them with `mmalign toy data "
            f"{kind} --set prompt_split=heldout --out DIR` and give DIR/pairs"
        )
        raise InputError(
            f"--split {split}: toy data is built, not split ({data} is built whole on first "
            f"use); leave --split out. {hint}"
        )
    return default if split is None else split


def _resolve(model: Any) -> Any:
    """`toy:sd` / `toy:flow` (as `mmalign sample toy:sd` or `--base toy:flow` name them) as the
    shipped model's folder: the builders load a folder, and the key reads its weight files."""
    if isinstance(model, str) and model in ("toy:sd", "toy:flow"):
        from .paths import model_path

        return str(model_path(model[len(TOY_PREFIX) :]))
    return model


def _with_model(options: Mapping[str, Any], model: str | None) -> dict[str, Any]:
    """A toy builder's options, with the model to sample from when one is given."""
    opts = {**options, "model": model} if model is not None else dict(options)
    if "model" in opts:
        opts["model"] = _resolve(opts["model"])
    return opts


def toy_data_folder(kind: str, options: Mapping[str, Any], model: str | None = None) -> Path:
    """Where toy dataset `kind` built with `options` is cached. Kinds sampled from toy-sd
    (`MODEL_KINDS`) are also keyed by its weight files, so a rebuilt model gets new data, and
    pairs labelled by a trained dense head (`reward: dense:<path>`) by the head's."""
    from .datasets import BUILDERS, MODEL_KINDS

    opts = _with_model(options, model)
    key: list[Any] = [kind, opts]
    version = getattr(BUILDERS.get(kind), "data_version", None)
    if version is not None:  # a builder whose rows changed: its old cached folders go stale
        key.append({"data_version": version})
    if kind in MODEL_KINDS:
        from .paths import model_path

        # the model the builder samples: `model`, else a `model` option, else toy-sd
        source = opts.get("model")
        key.append(weight_files(source if source is not None else model_path("sd"),
                                recursive=True))  # fmt: skip
    reward = opts.get("reward")
    if isinstance(reward, str) and reward.startswith("dense:"):
        # a trained head labels the pairs: one retrained at the same path is another reward
        from ..rewards.dense.model import checkpoint_folder

        key.append({"reward_weights": weight_files(checkpoint_folder(reward[len("dense:") :]))})
    return cache_root() / "toy-data" / f"{kind}-{digest(key)}"


def unknown_kind(kind: str, key: str = "data.path") -> str:
    """The message for toy dataset `kind` (of `toy:<kind>`, given at `key`) that is not one:
    the suggestion carries the prefix, as the user writes it (`toy:pairs`, not `pairs`)."""
    from .datasets import KINDS

    names = [f"{TOY_PREFIX}{k}" for k in KINDS]
    guess = closest(kind, KINDS)  # on the bare kind: the shared prefix would make all close
    hint = f"did you mean '{TOY_PREFIX}{guess}'?" if guess else "valid: " + ", ".join(names)
    return f"{key}: unknown toy dataset '{TOY_PREFIX}{kind}'; {hint}"


def toy_pairs(kind: str, options: Mapping[str, Any], model: str | None = None) -> Path:
    """Build toy dataset `kind` with `options` once; later calls return the cached `pairs/`."""
    from .datasets import KINDS, build_dataset, check_options

    if kind not in KINDS:
        raise ValueError(unknown_kind(kind))
    opts = _with_model(options, model)
    try:  # before anything is built or sampled, naming the recipe's key
        check_options(kind, opts)
    except ValueError as err:
        raise ValueError(f"data.toy: {err}") from None
    folder = toy_data_folder(kind, options, model)

    def build(tmp: Path) -> None:
        print(f"mmalign: building toy dataset '{kind}' {opts} into {folder} (first use)")
        build_dataset(kind, tmp, **opts)
        final_paths(tmp, folder)

    return build_once(folder, build) / "pairs"


def final_paths(tmp: Path, folder: Path) -> None:
    """Rewrite the `paths` of the summary.json built in `tmp` as they will be once `tmp` is
    renamed to `folder` (`build_once`): they named the `.partial` folder, gone by then."""
    file = tmp / "summary.json"
    summary = json.loads(file.read_text()) if file.is_file() else None
    if not isinstance(summary, dict) or not isinstance(summary.get("paths"), dict):
        return
    summary["paths"] = {
        k: str(folder / Path(v).relative_to(tmp)) if Path(v).is_relative_to(tmp) else v
        for k, v in summary["paths"].items()
    }
    file.write_text(json.dumps(summary, indent=2) + "\n")
