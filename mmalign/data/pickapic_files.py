"""Where a Pick-a-Pic split lives: parquet shards (directly or under `data/`, as on the hub),
a `save_to_disk` folder, or a hub dataset id; `_load_raw` opens one split of any of them, as a
stream whose info records its row count where asked (`pickapic.load_pickapic` counts one pass)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict, IterableDataset, SplitDict, SplitInfo, load_dataset

from .saved import load_saved  # (a split saved from 0 rows is an empty Dataset, not a crash)

# where a hub id came from, in messages, when the caller names no flag (`prompts.pickapic_key`)
HUB_KEY = "Pick-a-Pic (a local folder or $MMALIGN_PICKAPIC)"


def _parquet_splits(root: Path) -> dict[str, list[str]]:
    """`{split: shards}` from `{split}-00000-of-0000N[-hash].parquet` in root or root/data."""
    splits: dict[str, list[str]] = {}
    for folder in (root, root / "data"):
        for path in sorted(folder.glob("*.parquet")):
            splits.setdefault(path.stem.split("-")[0], []).append(str(path))
    return splits


def is_pickapic_folder(root: str | Path) -> bool:
    """Whether `root` holds Pick-a-Pic parquet shards (a `jpg_0` column), read from one shard's
    schema. `load_dataset(root)` cannot stand in for this: it knows only the split names
    train/test/validation from file names, so `test_unique-*.parquet` or a labeling app's
    `heldout-*` is "Unknown split", and it converts every split before returning one."""
    shards = [s for files in _parquet_splits(Path(root)).values() for s in files]
    return bool(shards) and "jpg_0" in pq.read_schema(shards[0]).names


UNNAMED_SPLIT = "train"  # what `datasets` calls data saved or given without split names


def check_saved_split(ds: Dataset, split: str, where: str | Path) -> None:
    """One saved `Dataset` (not a DatasetDict) is one split: the one its state records, or
    "train" when it records none (`load_dataset` names data files given without splits so).
    Another `split` is a ValueError naming `data.split`, never the whole file in its place."""
    recorded = None if ds.split is None else str(ds.split)
    if recorded is not None and recorded != split:
        raise ValueError(
            f"{where} holds one saved split, {recorded!r}; asked for split {split!r} "
            f"(data.split): set data.split: {recorded}, or give the folder of split {split!r}"
        )
    if recorded is None and split != UNNAMED_SPLIT:
        raise ValueError(
            f"{where} holds one saved dataset that records no split (read as "
            f"{UNNAMED_SPLIT!r}, as `datasets` names data without splits); data.split is "
            f"{split!r}: set data.split: {UNNAMED_SPLIT}, or save the {split!r} rows with "
            "their split (`load_dataset(..., split=...)`, or a DatasetDict)"
        )


def saved_splits(root: Path) -> list[str]:
    """Splits of a `save_to_disk` DatasetDict, or split-named `save_to_disk` folders."""
    if (root / "dataset_dict.json").exists():
        return list(load_saved(str(root)))
    return sorted(p.parent.name for p in root.glob("*/state.json"))


def _stream(ds: Dataset | IterableDataset, split: str, rows: int) -> IterableDataset:
    """`ds` as a stream whose info records the split's `rows`, as a hub card's and a
    non-streaming load's do: how many rows one pass reads (`ValidationReport.pass_rows`)."""
    stream = ds.to_iterable_dataset() if isinstance(ds, Dataset) else ds
    stream.info.splits = SplitDict({split: SplitInfo(split, num_examples=rows)})
    return stream


def _load_raw(
    source: str | Path,
    split: str,
    *,
    streaming: bool,
    columns: list[str] | None = None,
    cache_dir: str | Path | None = None,
    key: str = HUB_KEY,
) -> Dataset | IterableDataset:
    root = Path(source).expanduser()  # `~/pickapic` from a recipe: no shell expanded it
    if not root.exists():  # a hub id; `datasets` itself lists the splits on a typo
        from ..hub import hub_errors, require_one

        require_one(str(source), key, repo_type="dataset")
        with hub_errors(source, key, repo_type="dataset"):
            ds = load_dataset(str(source), split=split, streaming=streaming, cache_dir=cache_dir)
        return ds.select_columns(columns) if columns else ds

    if (root / "state.json").is_file():  # one split saved with `Dataset.save_to_disk`
        ds = load_saved(str(root))
        check_saved_split(ds, split, root)  # never another split in its place
        ds = ds.select_columns(columns) if columns else ds
        return _stream(ds, split, len(ds)) if streaming else ds
    parquet, saved = _parquet_splits(root), saved_splits(root)
    if split not in parquet and split not in saved:
        available = sorted({*parquet, *saved})
        if not available:
            raise ValueError(f"no Pick-a-Pic parquet shards or saved dataset in {root}")
        raise ValueError(f"split {split!r} not found in {root}; available splits: {available}")
    if split in parquet:
        extra = {"columns": columns} if columns else {}
        ds = load_dataset(
            "parquet",
            data_files={split: parquet[split]},
            split=split,
            streaming=streaming,
            cache_dir=None if cache_dir is None else str(cache_dir),
            **extra,
        )
        rows = sum(pq.read_metadata(f).num_rows for f in parquet[split]) if streaming else 0
        return _stream(ds, split, rows) if streaming else ds
    loaded = load_saved(str(root if (root / "dataset_dict.json").exists() else root / split))
    ds = loaded[split] if isinstance(loaded, DatasetDict) else loaded
    ds = ds.select_columns(columns) if columns else ds
    return _stream(ds, split, len(ds)) if streaming else ds
