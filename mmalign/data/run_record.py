"""What a training run records of its pairs (`mmalign_run.json`), for every recipe alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .schema import ValidationReport


def pairs_record(
    rows: Any, report: ValidationReport, built: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """What a training run records of its pairs (`mmalign_run.json`), tied pairs apart from
    skipped rows: a tie is an outcome of the labelling, not a row that could not be read.

    `rows`: the rows trained on (a `datasets.Dataset`). `skipped` and `ties` are what reading
    this run's rows saw (after `data.max_samples`): `skipped`, rows left out by reason, ties
    excluded; `ties`: `dropped`, pairs left out because their images tied (a Pick-a-Pic tie
    under the `drop` policy), and `kept`, rows trained on as ties (label 0.5, as read, before
    any smoothing). `build_skipped`, only for toy data (`built`, `toy.build_record.ToyBuild`'s
    `skipped`): what building the toy dataset left out, by reason and ties included, over the
    whole build. It is a key of its own because `data.max_samples` trains on a prefix of the
    build: beside `rows: 4` the build's 40 ties read as this run's."""
    skipped = dict(report.skipped)
    dropped = skipped.pop("tie", 0)
    labels = rows["label"] if "label" in rows.column_names else []
    kept = sum(1 for label in labels if label is not None and float(label) == 0.5)
    record: dict[str, Any] = {"skipped": skipped, "ties": {"dropped": dropped, "kept": kept}}
    if built is not None:
        record["build_skipped"] = dict(built)
    return record
