"""Open a `save_to_disk` folder as input data, and refuse input that leaves no row to use.

`datasets` writes no arrow shard for a Dataset of 0 rows (its state lists no data files), and
its own `load_from_disk` then fails with an IndexError inside `concat_tables`. `load_saved`
reads such a folder as the empty Dataset of its recorded features instead, so the reader that
opened it can say what is wrong: `require_rows` names the key the user gave the data under,
says it holds 0 rows (and, for a `mmalign data prism-mcts` output, that the search emitted no
pairs), or that validation skipped every row, with the count per reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import InputError


def _state(folder: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def is_empty_saved(folder: str | Path) -> bool:
    """Whether `folder` is one `save_to_disk` split written from 0 rows (no data file)."""
    state = _state(Path(folder))
    return state is not None and state.get("_data_files") == []


def _empty_dataset(folder: Path) -> Any:
    """The 0-row Dataset a folder `is_empty_saved` holds: its recorded features and split."""
    from datasets import Dataset, DatasetInfo

    info = DatasetInfo.from_directory(str(folder))
    features = info.features
    split = (_state(folder) or {}).get("_split")
    if features is None:
        return Dataset.from_dict({}, split=split)
    return Dataset.from_dict({name: [] for name in features}, features=features, split=split)


def load_saved(path: str | Path) -> Any:
    """`datasets.load_from_disk(path)` (a Dataset or a DatasetDict), where a split saved from
    0 rows is read as an empty Dataset with its features rather than crashing."""
    from datasets import DatasetDict, load_from_disk

    root = Path(path)
    if is_empty_saved(root):
        return _empty_dataset(root)
    listing = root / "dataset_dict.json"
    if listing.is_file():
        splits = json.loads(listing.read_text()).get("splits", [])
        if any(is_empty_saved(root / s) for s in splits):  # load each split on its own
            return DatasetDict({s: load_saved(root / s) for s in splits})
    return load_from_disk(str(root))


def _prism_note(folder: Path) -> str:
    """What a `mmalign data prism-mcts --out DIR` run says of its empty `DIR/pairs`."""
    run = folder.parent
    if folder.name != "pairs" or not (run / "search.json").is_file():
        return ""
    try:
        summary = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return ""
    failures = {k: v for k, v in (summary.get("failures") or {}).items() if v}
    why = ", ".join(f"{k} {v}" for k, v in failures.items())
    return (
        f"; it is the output of `mmalign data prism-mcts` (its {run / 'summary.json'}): the "
        f"search of {summary.get('trees', '?')} tree(s) emitted no pairs"
        + (f" (failures: {why})" if why else "")
        + ". Search longer (--iterations), over more requests, or from a policy that closes "
        "its stages, then train on the new pairs"
    )


def require_rows(rows: Any, report: Any, key: str, path: str | Path) -> None:
    """Raise an InputError naming `key` (`data.path`, `DATA`, ...) when `rows`, just opened
    from `path` and validated into `report` (a ValidationReport), holds no row: the source
    held none, or validation skipped every one of them (then each reason with its count)."""
    if len(rows):
        return
    if report is None or not report.total:
        local = Path(str(path)).expanduser()
        raise InputError(f"{key} {path} holds 0 rows: there is nothing to use" + (
            _prism_note(local) if local.is_dir() else ""))  # fmt: skip
    raise InputError(
        f"{key} {path}: validation skipped every one of its {report.total} rows, so none is "
        f"left to use:\n{report}"
    )
