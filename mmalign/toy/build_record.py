"""What building a toy dataset left out, read back from its summary.json for a training run's
record (`mmalign_run.json`'s `build_skipped`) and its console line.

Shared by every recipe that trains on `toy:<kind>` (diffusion, flow, VLM): the toy package is
below them, so none imports another's copy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..words import plural
from .cache import TOY_PREFIX, toy_data_folder


@dataclass(frozen=True)
class ToyBuild:
    """What building a toy dataset wrote (its summary.json): `rows`, the rows it holds, and
    `skipped`, the candidate pairs it left out, by reason (`tie` for pairs whose rewards tied
    under `ties: drop`, which summary.json keeps apart as `ties.dropped`, `no_visible_flaw`,
    ...). Counted over the whole build: a run's `data.max_samples` takes a prefix of its rows
    afterwards."""

    rows: int
    skipped: dict[str, int]


def toy_build(
    path: str, *, toy_options: Mapping[str, Any] | None = None, model: str | None = None
) -> ToyBuild | None:
    """What building toy dataset `path` wrote and left out (`ToyBuild`); None for other data.
    The dataset is built already (by the recipe's reader, with the same arguments): this only
    reads it."""
    if not path.startswith(TOY_PREFIX):
        return None
    from .datasets import MODEL_KINDS

    kind = path[len(TOY_PREFIX) :]
    # where the reader built it; never built here (a dataset that is not there has no record)
    chosen = model if kind in MODEL_KINDS else None
    summary = toy_data_folder(kind, toy_options or {}, chosen) / "summary.json"
    if not summary.is_file():
        return None
    info = json.loads(summary.read_text())
    left_out = dict(info.get("skipped") or {})
    ties = info.get("ties")
    if isinstance(ties, dict):  # ties written apart from skipped candidates (older: `tie` in it)
        left_out["tie"] = ties.get("dropped", 0)
    skipped = {str(reason): int(n) for reason, n in left_out.items() if n}
    return ToyBuild(rows=int(info.get("rows", 0)), skipped=skipped)


def build_left_out(path: str, built: ToyBuild, max_samples: int | None) -> str:
    """The line saying what building toy dataset `path` left out: counted over the whole
    build, of which a run with `data.max_samples` trains on a prefix only."""
    why = ", ".join(f"{reason}: {n}" for reason, n in sorted(built.skipped.items()))
    line = (
        f"building {path} left out {plural(sum(built.skipped.values()), 'candidate pair')} ({why})"
    )
    if max_samples is not None and max_samples < built.rows:
        line += (
            f" over the whole build; data.max_samples: this run trains on the first "
            f"{max_samples} of its {built.rows} rows"
        )
    return line
