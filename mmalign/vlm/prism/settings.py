"""What a PRISM search's trees depend on (Li et al. 2025, section 3.2), saved as `search.json`,
and the resume check that compares a rerun's settings with it (`search.py`).

The settings are the search config, batching and seed, a fingerprint of the rows, the judge,
the sampling (temperature, max_new_tokens, batch_size), the device type and dtype the models
run in, and the weights keys (`VLM.weights_key`) of the policy (`model`) and of a VLM judge
(`judge_weights`). All but the weights keys are known from the arguments and the data
(`planned_settings`): `prism-mcts` checks those first, so a rerun refused for its device or
dtype has loaded nothing onto the GPU; then the weights keys, read from the models' files
without loading them (`load.VLMRef`, the key the loaded model gives: a hub model's holds the
commit its config names), so a rerun on other weights is refused before loading too; `Search`
compares every setting once more with the loaded models' keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ...config import InputError
from ...devices import CPU_FLOAT32
from .mcts import MCTSConfig

# What a search.json without a device and dtype was searched with (the policy and judge)
BEFORE_PRECISION = CPU_FLOAT32
# The weights keys, known once the models have loaded, and what a change in one is called
WEIGHTS = {"model": "other weights", "judge_weights": "other judge weights"}
SAMPLING = ("temperature", "max_new_tokens", "batch_size")


def default_trees_per_batch(batch_size: int, children: int) -> int:
    """Trees searched together when not given: one round of expansions fills a generate call."""
    return max(1, batch_size // children)


def _plain(value: Any) -> str:
    """A JSON stand-in for a value `json` cannot write: images, arrays and bytes by a hash of
    their contents (a path-free PIL image has no other identity), anything else by repr
    (its type alone when the repr holds a memory address, which differs every run)."""
    raw = value if isinstance(value, bytes | bytearray) else None
    if raw is None and callable(getattr(value, "tobytes", None)):
        raw = value.tobytes()
    if raw is not None:
        shape = getattr(value, "shape", getattr(value, "size", None))
        mode = getattr(value, "mode", "")
        return f"{type(value).__name__}:{shape}:{mode}:{hashlib.sha256(raw).hexdigest()}"
    text = repr(value)
    return type(value).__name__ if " at 0x" in text else text


def rows_fingerprint(rows: Sequence[Mapping[str, Any]]) -> str:
    """A hash of every row's contents (prompt, images, reference answers, source...): the
    generator sees the prompt and images and a judge may read any field, so other rows of the
    same count must not resume a search."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(dict(row), sort_keys=True, default=_plain).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:20]


def precision_record(precision: Mapping[str, Any]) -> dict[str, str]:
    """{"device": type, "dtype": name} as search.json records it: the device's type (`cuda`,
    not `cuda:0`), the dtype without `torch.`."""
    return {"device": torch.device(str(precision["device"])).type,
            "dtype": str(precision["dtype"]).removeprefix("torch.")}  # fmt: skip


def planned_settings(rows: int, data: str, config: MCTSConfig, *, trees_per_batch: int,
                     seed: int, judge: str, sampling: Mapping[str, Any],
                     precision: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The settings known before any model loads, as search.json holds them (after a JSON
    round trip, so tuples compare equal to the lists read back): `rows` the row count, `data`
    their `rows_fingerprint`, `judge` its name, `sampling` the generator's `SAMPLING` values,
    `precision` the device and dtype the models run in. `Search.settings` adds the weights."""
    mine = {"config": asdict(config), "trees_per_batch": trees_per_batch, "seed": seed,
            "rows": rows, "data": data, "judge": judge,
            **{k: sampling.get(k) for k in SAMPLING}, **precision_record(precision)}  # fmt: skip
    return json.loads(json.dumps(mine, default=str))


def _only_dtype(old: Any, new: Any) -> bool:
    """Whether two weights keys differ in their leading dtype alone (`load_vlm` keys weights
    with the dtype they loaded in): the same weights in another dtype."""
    return (isinstance(old, list) and isinstance(new, list) and len(old) == len(new) > 0
            and old[0] != new[0] and old[1:] == new[1:])  # fmt: skip


def _difference(key: str, saved: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """One differing setting for the resume error: short values shown, the model and data
    (long keys, hashes) named only."""
    if key not in saved:
        return f"{key} (not recorded in search.json: an older search)"
    if key in WEIGHTS:
        old, new = saved[key], now.get(key)
        if _only_dtype(old, new):  # while the search's dtype is the same: say which
            return f"{key} (dtype {old[0]} -> {new[0]})"
        return f"{key} ({WEIGHTS[key]})"
    if key == "data":
        return "data (other rows)"
    if key in BEFORE_PRECISION:  # say how to resume it where it ran
        return f"{key} {saved[key]} -> {now.get(key)} (--{key} {saved[key]} resumes it)"
    if key == "config":
        old, new = saved[key] or {}, now.get(key) or {}
        fields = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
        return "config (" + ", ".join(f"{f} {old.get(f)} -> {new.get(f)}" for f in fields) + ")"
    return f"{key} {saved[key]} -> {now.get(key)}"


def check_resume(out: Path, mine: Mapping[str, Any], later: Collection[str] | None = None) -> bool:
    """Whether `out` holds a saved search; an InputError when its settings differ from `mine`
    (loaded trees would silently mix two searches). `later` None: `mine` is every setting
    (`Search.settings`), all compared. Else `mine` is `planned_settings` and `later` names the
    settings the loaded models give (the weights keys), compared once they have loaded: here
    the saved search need only record them. A change of dtype is named as the dtype alone, not
    also as other weights (a weights key leads with its dtype); a change of judge as the judge
    alone (another judge has other weights, or none)."""
    path = out / "search.json"
    if not path.is_file():
        return False
    # saved before the device and dtype were: CPU float32
    theirs = {**BEFORE_PRECISION, **json.loads(path.read_text())}
    if later is None:
        diff = {k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k)}
    else:
        diff = {k for k in mine if mine[k] != theirs.get(k)}
        diff |= {k for k in later if k not in theirs}
    if "dtype" in diff:
        diff -= {k for k in WEIGHTS if _only_dtype(theirs.get(k), mine.get(k))}
    if "judge" in diff:
        diff.discard("judge_weights")
    if diff:
        raise InputError(
            f"{out} holds a search with other settings: "
            f"{'; '.join(_difference(k, theirs, mine) for k in sorted(diff))}; use a new --out "
            "(or the same settings to resume)"
        )
    return True
