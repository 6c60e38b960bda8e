"""Chains of PEFT adapter folders: an adapter trained on another adapter merged into its base
(a LoRA run that started from an SFT run's `adapter/`, `VLMRecipe.save`) names that folder as
its base, which may name another in turn, down to the model at the root.

`load_vlm` follows the chain from MODEL and from an adapter given on top of it (`stacked`):
`mmalign chat BASE --adapter DPO` applies DPO's SFT start, merged, between BASE and DPO, the
weights `load_vlm(DPO)` gives. A chain whose start adapters MODEL does not hold is refused,
and a root that is clearly another model than MODEL is warned about (`check_root`).

Where a chain link points: `base_model_name_or_path` in `adapter_config.json` holds the start
adapter's absolute path (PEFT's field, which its own loaders and transformers read as a model
to load from anywhere). `BASE_LINK` beside it holds the same folder relative to the adapter
folder, and wins where it exists: run folders moved or copied together keep their chain.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..config import InputError
from ..hub import looks_local

# a chain of adapter folders each naming the next as its base, followed at most this deep
MAX_ADAPTER_CHAIN = 16
# the start adapter's folder relative to the adapter folder, beside its adapter_config.json
BASE_LINK = "mmalign_base.json"
_WARNED: set[tuple[str, str, str]] = set()  # (root, model, adapter) warned about in this process


def resolve_model(name_or_path: str | Path) -> str:
    """`toy:vlm` names the shipped toy-vlm; anything else is a folder or hub id as given."""
    if str(name_or_path) == "toy:vlm":
        from ..toy.paths import model_path

        return str(model_path("vlm"))
    return str(name_or_path)


def is_adapter(folder: str) -> bool:
    return bool(folder) and (Path(folder) / "adapter_config.json").is_file()


def write_base_link(adapter: str | Path, start: str | Path) -> None:
    """Record `start` (a local adapter folder) relative to the adapter folder `adapter`."""
    rel = os.path.relpath(Path(start).resolve(), Path(adapter).resolve())
    (Path(adapter) / BASE_LINK).write_text(json.dumps({"relative": Path(rel).as_posix()}) + "\n")


def base_of(folder: str) -> str:
    """The model or adapter folder that adapter folder `folder` was trained on: `BASE_LINK`'s
    folder where it exists; else `base_model_name_or_path` as PEFT wrote it (a hub id, or a
    path as the training run spelled it; a relative one that is no folder from here is read
    against the adapter folder); "" where it names none."""
    here = Path(folder)
    try:
        rel = json.loads((here / BASE_LINK).read_text()).get("relative")
    except (OSError, ValueError, AttributeError):  # no link, or not one mmalign wrote
        rel = None
    if isinstance(rel, str) and rel and (here / rel).is_dir():
        return str((here / rel).resolve())
    base = json.loads((here / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        return ""
    base = resolve_model(base)
    path = Path(base).expanduser()
    if not path.is_absolute() and not path.exists() and (here / path).exists():
        return str((here / path).resolve())
    return base


def follow(source: str, name: str | Path) -> tuple[str, list[str]]:
    """(the model at the root, the adapter folders from it up to `source`, innermost first):
    `source` itself where it is no adapter folder. `name`: what the user gave, for messages."""
    chain: list[str] = []
    seen: set[Path] = set()
    while is_adapter(source):
        real = Path(source).resolve()
        if real in seen or len(chain) > MAX_ADAPTER_CHAIN:
            raise ValueError(f"{name}: the adapters' base_model_name_or_path loop")
        seen.add(real)
        chain.insert(0, source)
        source = base_of(source)
    return source, chain


def _same_place(a: str, b: str) -> bool | None:
    """Whether two model names are the same model: None where that cannot be told from the
    names (one a local folder, the other a hub id; or one unknown)."""
    if not a or not b:
        return None
    local_a, local_b = looks_local(a), looks_local(b)
    if local_a and local_b:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    if not local_a and not local_b:
        return a == b
    return None


def check_root(root: str, source: str, adapter: str | Path, adapter_key: str, key: str) -> None:
    """Warn where the model at the root of the given adapter's chain is clearly not `source`,
    the model the user named (both local folders, or both hub ids, and different): the
    adapter loads on `source` as asked (a moved or copied base is the same model under
    another path), but its weights were trained on `root`."""
    if _same_place(root, source) is False and (root, source, str(adapter)) not in _WARNED:
        _WARNED.add((root, source, str(adapter)))  # once: a VLMRef and its load both check
        warnings.warn(
            f"{adapter_key} {adapter} was trained on {root} (the base its adapter_config.json "
            f"records), but {key} is {source}: it is applied on {source} as given; give "
            f"{adapter} alone as the model to load it on {root}",
            stacklevel=4,
        )


def stacked(chain: Sequence[str], start: Sequence[str], adapter: str | Path, adapter_key: str,
            name: str | Path, key: str) -> list[str]:  # fmt: skip
    """The adapters to apply below the given `adapter`: MODEL's own (`chain`) and the start
    adapters the given one was trained on (`start`, innermost first) that MODEL lacks. MODEL's
    adapters must be the first of those starts: an adapter trained from an SFT adapter on
    another adapter is not the model it was trained on, and is refused. An adapter trained
    on a plain model keeps going on MODEL's adapters, as the user asks."""
    if not start:
        return list(chain)
    mine = [Path(a).resolve() for a in chain]
    theirs = [Path(a).resolve() for a in start]
    if theirs[: len(mine)] == mine:
        return [*chain, *start[len(chain) :]]
    raise InputError(
        f"{adapter_key} {adapter} was trained from the adapter {start[-1]} (its "
        f"adapter_config.json's base; {len(start)} adapter(s) down to the model), but {key} "
        f"{name} holds the adapter(s) {', '.join(chain)}, which it was not trained on: give "
        f"{adapter} alone as the model (it loads its start adapters itself), or their base "
        f"model as {key}"
    )
