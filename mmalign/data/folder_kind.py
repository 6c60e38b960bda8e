"""What a local folder given as data is, told before anything opens it.

`datasets.load_dataset(folder)` fails on a folder that holds no pairs with its own traceback
(`EmptyDatasetError` for an empty folder, `Unknown split "train"` for a diffusion training
output_dir, `DatasetGenerationError` for a VLM one or a `mmalign data prism-mcts` output),
and a `mmalign toy data --out` folder given instead of its `pairs/` was read as the JSON of
its summary. `folder_problem` names each of these by the key the user gave the path under
(`data.path`, `DATA`) and says what to give instead; `pairs_kind` reads a saved dataset's
schema (no rows) to tell image pairs (diffusion) from text pairs (VLM), and `kind_problem`
says which recipes and commands take the kind a folder holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

PairKind = Literal["image", "text"]
SAVED_MARKERS = ("state.json", "dataset_dict.json")  # what `save_to_disk` writes
RUN_FILE = "mmalign_run.json"  # what `mmalign train` writes in its output_dir

# Where each kind of pairs is trained and diagnosed, for the messages.
TAKEN_BY = {
    "image": "a model.kind: diffusion recipe (e.g. configs/toy/dpo.yaml), or `mmalign data "
    "diagnose DATA --model toy:sd`",
    "text": "a model.kind: vlm recipe (e.g. configs/toy/vlm_dpo.yaml), or `mmalign data "
    "diagnose DATA --model toy:vlm`",
}
NAMED = {"image": "image pairs (diffusion)", "text": "text (VLM) pairs"}
GIVE = (
    "give a folder of pairs (a `save_to_disk` dataset such as a toy build's pairs/, parquet "
    "shards, or a JSON file with its images), a hub id or toy:<kind>"
)


def _is_saved(folder: Path) -> bool:
    return any((folder / name).is_file() for name in SAVED_MARKERS)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _run_problem(folder: Path, key: str, shown: str) -> str:
    run = _read_json(folder / RUN_FILE)
    data = (run.get("config") or {}).get("data") or {}
    trained_on = data.get("path") if isinstance(data, dict) else None
    task = run.get("task") or (run.get("config") or {}).get("model", {}).get("kind")
    what = f"a {task} training run" if isinstance(task, str) else "a training run"
    on = f"the pairs it trained on ({trained_on}), or " if isinstance(trained_on, str) else ""
    return (
        f"{key} {shown} is {what} (an `mmalign train` output_dir: its {RUN_FILE}), not data: "
        f"give {on}{GIVE.removeprefix('give ')}. A run's tuned weights are a model: pass the "
        "folder as a model or adapter instead"
    )


def folder_problem(path: str | Path, key: str) -> str | None:
    """Why the local folder `path` (given under `key`) holds no data to read, or None: an
    empty folder, a training output_dir, or the output folder of `mmalign toy data` or
    `mmalign data prism-mcts` (their pairs are in its `pairs/`). Not a folder: None."""
    folder = Path(path).expanduser()
    if not folder.is_dir() or _is_saved(folder):
        return None
    shown = str(path)
    try:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError:
        return None
    if not entries:
        return f"{key} {shown} is an empty folder: there is no data in it; {GIVE}"
    if (folder / RUN_FILE).is_file():
        return _run_problem(folder, key, shown)
    pairs = folder / "pairs"
    if pairs.is_dir() and _is_saved(pairs):
        if (folder / "search.json").is_file():
            what = "the output folder of `mmalign data prism-mcts`"
        elif "kind" in _read_json(folder / "summary.json"):
            kind = _read_json(folder / "summary.json")["kind"]
            what = f"the output folder of `mmalign toy data {kind}`"
        else:
            what = "a folder whose pairs are in its pairs/"
        return f"{key} {shown} is {what}, not the pairs themselves: give {pairs}"
    return None


def _chosen_kind(features: dict[str, Any]) -> PairKind | None:
    if "jpg_0" in features:  # Pick-a-Pic's columns
        return "image"
    chosen = features.get("chosen")
    if not isinstance(chosen, dict):
        return None
    kind = chosen.get("_type")
    if kind == "Image" or {"bytes", "path"} <= set(chosen):
        return "image"
    if kind == "Value" and chosen.get("dtype") in ("string", "large_string"):
        return "text"
    return None


def pairs_kind(path: str | Path, split: str | None = None) -> PairKind | None:
    """`image` or `text`: what the saved dataset at `path` holds (its `chosen` column, or
    Pick-a-Pic's `jpg_0`), from its schema alone; None where it cannot tell (not a saved
    folder, messages rather than strings, another split)."""
    folder = Path(path).expanduser()
    if (folder / "dataset_dict.json").is_file():
        splits = _read_json(folder / "dataset_dict.json").get("splits") or []
        name = split if split in splits else (splits[0] if len(splits) == 1 else None)
        if name is None:
            return None
        folder = folder / str(name)
    if not (folder / "state.json").is_file():
        return None
    features = _read_json(folder / "dataset_info.json").get("features")
    return _chosen_kind(features) if isinstance(features, dict) else None


def kind_problem(found: PairKind | None, wanted: PairKind, key: str, shown: str,
                 wants: str) -> str | None:  # fmt: skip
    """Why data of kind `found` cannot feed `wants` (e.g. "a model.kind: vlm recipe"), which
    takes `wanted` pairs, or None (the same kind, or not known)."""
    if found is None or found == wanted:
        return None
    return (
        f"{key} {shown} holds {NAMED[found]}, but {wants} takes {NAMED[wanted]}; "
        f"{NAMED[found]} are for {TAKEN_BY[found]}"
    )
