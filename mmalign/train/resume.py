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
import os
from dataclasses import MISSING, asdict, fields, is_dataclass
from pathlib import Path
from typing import Any, get_args, get_type_hints

# What a resumed run may change: how long it runs, how it logs, checkpoints and validates, and
# whether the diffusion step is compiled (the same arithmetic up to float rounding, and other
# dropout masks when LoRA dropout is on).
RESUMABLE = (
    "diffusion.compile",
    "train.allow_tf32",  # rounding only, as compile
    "train.ddp_timeout",
    "ppd.encoder_device",  # where the encoder runs; its embeddings are keyed on the weights
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
    """The default of every recipe setting that has one, flattened as `recipe_changes` keys:
    the sections' settings (`train.seed`, `diffusion.renoise.steps`, ...) and the optional
    sections themselves (`ppd`: None). Not the objective terms: a term's arguments are the
    user's, and a missing one means that loss's own default, not anything here."""
    from .config import Config

    def flat(value: Any, key: str) -> dict[str, Any]:
        value = asdict(value) if is_dataclass(value) else value  # type: ignore[arg-type]
        return _flatten(json.loads(json.dumps(value, default=str)), key)

    out: dict[str, Any] = {}
    hints = get_type_hints(Config)
    for section in fields(Config):
        if section.name == "objective":
            continue
        if section.default is not MISSING:
            out.update(flat(section.default, section.name))
        kinds = [t for t in (hints[section.name], *get_args(hints[section.name]))
                 if isinstance(t, type) and is_dataclass(t)]  # fmt: skip
        for f in fields(kinds[0]) if kinds else ():
            if f.default is not MISSING:
                out.update(flat(f.default, f"{section.name}.{f.name}"))
            elif f.default_factory is not MISSING:
                out.update(flat(f.default_factory(), f"{section.name}.{f.name}"))
    return out


def _predates(key: str, value: Any, saved: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """Whether `key` is a setting added to mmalign after the run whose nested recipe is `saved`
    and left at its default: its parent is in `saved`, as a section, without it. A parent that
    is missing (a whole new section) or null (`lora: null` -> a LoRA) does not qualify."""
    node: Any = saved
    for part in key.split(".")[:-1]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return isinstance(node, dict) and key in defaults and defaults[key] == value


def _resumable(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUMABLE)


def _same(old: Any, new: Any) -> bool:
    """Equal settings; a `~/...` text saved before the config expanded it (2026-12-07) equals
    its expansion."""
    if isinstance(old, str) and isinstance(new, str) and old.startswith("~"):
        return os.path.expanduser(old) == new
    return old == new


# What an objective term means when it leaves these keys out (`Objective.from_config`): a
# recipe that writes `weight: 1.0` and one that leaves it out are the same recipe.
TERM_DEFAULTS = {"pair": "main", "weight": 1.0}


def _with_term_defaults(config: dict[str, Any]) -> dict[str, Any]:
    terms = config.get("objective")
    if not isinstance(terms, list):
        return config
    filled = [{**TERM_DEFAULTS, **t} if isinstance(t, dict) else t for t in terms]
    return {**config, "objective": filled}


def recipe_changes(run_file: Path, config: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every setting that differs between the recipe saved in
    `run_file` and `config` (a run's config as a dict), leaving out the resumable keys and
    settings the saved recipe predates that keep their default. Empty when nothing differs or
    when there is no saved recipe to compare with."""
    if not run_file.is_file():
        return []
    saved = json.loads(run_file.read_text()).get("config", {})
    old = _flatten(_with_term_defaults(saved))
    as_stored = json.loads(json.dumps(config, default=str))  # as the file stores it
    new = _flatten(_with_term_defaults(as_stored))
    defaults, unset = _defaults(), object()
    changes = []
    for key in sorted(set(old) | set(new)):
        if _resumable(key) or _same(old.get(key, unset), new.get(key, unset)):
            continue
        # A setting added to mmalign after the run was saved: its default is what ran.
        if key not in old and _predates(key, new[key], saved, defaults):
            continue
        changes.append(f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}")
    return changes
