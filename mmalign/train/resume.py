"""Resuming only the run a checkpoint belongs to.

A checkpoint holds the trainable weights and optimizer state, not the recipe that made them.
Resumed under a changed recipe (another beta, other data, another model), training would
carry on from weights made by the old one, or, when the old run had already reached
max_steps, not train at all and hand back the old weights as the new recipe's. So the loop
compares the recipe saved beside the checkpoints (`mmalign_run.json`) with the one it is
given and refuses a resume when anything but the keys below differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# What a resumed run may change: how long it runs, how it logs, checkpoints and validates, and
# whether the step is compiled (the same arithmetic up to float rounding).
RESUMABLE = (
    "diffusion.compile",
    "output_dir",
    "train.max_steps",
    "train.resume_from",
    "train.log_every",
    "train.checkpoint_every",
    "train.checkpoint_total_limit",
    "train.trackers",
    "validation",
)


def _flatten(value: Any, key: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {key: value}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(_flatten(v, f"{key}.{k}" if key else str(k)))
    return out


def _defaults() -> dict[str, Any]:
    """Every setting of the sections that have defaults, flattened as `recipe_changes` keys."""
    from dataclasses import MISSING, asdict, fields, is_dataclass

    from .config import Config

    out: dict[str, Any] = {}
    for f in fields(Config):
        if f.default_factory is not MISSING:
            value = f.default_factory()
            value = asdict(value) if is_dataclass(value) else value  # type: ignore[arg-type]
            out.update(_flatten(json.loads(json.dumps(value, default=str)), f.name))
    return out


def _resumable(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUMABLE)


def recipe_changes(run_file: Path, config: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every setting that differs between the recipe saved in
    `run_file` and `config` (a run's config as a dict), leaving out the resumable keys and
    settings the saved recipe predates that keep their default. Empty when nothing differs or
    when there is no saved recipe to compare with."""
    if not run_file.is_file():
        return []
    old = _flatten(json.loads(run_file.read_text()).get("config", {}))
    new = _flatten(json.loads(json.dumps(config, default=str)))  # as the file stores it
    defaults, unset = _defaults(), object()
    changes = []
    for key in sorted(set(old) | set(new)):
        if _resumable(key) or old.get(key) == new.get(key):
            continue
        # A setting added to mmalign after the run was saved: its default is what ran.
        if key not in old and new.get(key) == defaults.get(key, unset):
            continue
        changes.append(f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}")
    return changes
