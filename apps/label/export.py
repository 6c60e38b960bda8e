"""Export votes as a Hugging Face dataset: Pick-a-Pic v2 shards or PreferencePair rows.

One row per vote that is not undone and not a skip; skips, votes on gold pairs, "both bad"
answers and (`exclude_flagged`) flagged annotators' votes are counted and reported
(`selection.py`), and `criterion` picks the question whose answer is the label.
Pick-a-Pic: `jpg_0` is the image shown on the left, `label_0`/`label_1` are 1/0 for
a win and 0.5/0.5 for a tie, `user_id` the annotator's pseudonym (`pseudonyms.py`: the
same in every export of the database, not the login name), `created_at` the vote time.
PreferencePair: `chosen` is the preferred image, `label` 1.0 (0.5 for a tie), ready for
`mmalign train` (`data.path=DIR`).

The output folder holds one export and nothing else. A folder that holds anything an export
does not write is refused, and so is an earlier export unless `overwrite`: written over, a
`pairs` export's `state.json` stayed beside a later `pickapic` export's shards and the
loader read the old votes, and a user's own `train-*.parquet` there was deleted. The export
is written to a folder inside `out` first and moved into place once complete, so an export
that fails (an unreadable image) leaves the earlier one as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from mmalign.config import InputError

from .images import load_image, resolve
from .pseudonyms import Pseudonyms
from .selection import select_votes
from .store import Store
from .vlm_pairs import is_vlm

Format = Literal["pickapic", "pairs", "trl"]
# What an export writes: `Dataset.save_to_disk` (pairs, trl) or Pick-a-Pic parquet shards
EXPORT_FILE = re.compile(
    r"state\.json|dataset_info\.json|data-\d{5}-of-\d{5}\.arrow|\w+-\d{5}-of-\d{5}\.parquet"
)
WORKING = ".mmalign-export-"  # the folder in `out` an export is written to before the move


def _listed(paths: list[Path], most: int = 4) -> str:
    names = [p.name for p in paths[:most]]
    return ", ".join(names) + (f", ... ({len(paths)} in all)" if len(paths) > most else "")


def earlier_export(out: str | Path, overwrite: bool) -> list[Path]:
    """What an export into `out` replaces: the files of an earlier export ([] when `out` is
    new or empty; a working folder left by an interrupted export counts). InputError, naming
    `out` and the way out, when `out` is a file, holds anything else (never deleted, and an
    export is not mixed in with it), or holds an earlier export and `overwrite` is False."""
    out = Path(out)
    if not out.exists():
        return []
    if not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder for the export")
    present = sorted(out.iterdir())
    foreign = [
        p for p in present
        if not (p.is_file() and EXPORT_FILE.fullmatch(p.name))
        and not (p.is_dir() and p.name.startswith(WORKING))
    ]  # fmt: skip
    if foreign:
        raise InputError(
            f"--out {out} holds files that are not an export ({_listed(foreign)}); nothing "
            "was written: give a new or empty folder"
        )
    if present and not overwrite:
        raise InputError(
            f"--out {out} already holds an export ({_listed(present)}); nothing was written: "
            "give --overwrite to replace it, or another --out"
        )
    return present


def _image_bytes(root: Path, ref: str) -> bytes:
    load_image(root, ref)  # the same checks as when the image is shown
    return resolve(root, ref).read_bytes()


def export_votes(
    store: Store, image_root: str | Path, out: str | Path, fmt: Format, *, split: str = "train",
    criterion: str | None = None, exclude_flagged: bool = False,
    thresholds: dict[str, Any] | None = None, overwrite: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Write the votes to `out`; returns counts (`rows`, `skipped` by reason). Which votes
    and which question's answer: `selection.select_votes` (gold, both-bad, flagged).
    `out` must be new, empty or hold an earlier export, which is replaced (`overwrite`, the
    default here; `mmalign label export` asks for `--overwrite`): `earlier_export`."""
    out = Path(out)
    earlier = earlier_export(out, overwrite)  # refused before any vote is read
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=WORKING, dir=out))
    try:
        summary = _export(store, image_root, work, fmt, split=split, criterion=criterion,
                          exclude_flagged=exclude_flagged, thresholds=thresholds)  # fmt: skip
        for old in earlier:  # only now: a failed export leaves the earlier one whole
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink(missing_ok=True)
        for new in sorted(work.iterdir()):
            os.replace(new, out / new.name)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    work.rmdir()
    return {**summary, "out": str(out)}


def _export(
    store: Store, image_root: str | Path, out: Path, fmt: Format, *, split: str,
    criterion: str | None, exclude_flagged: bool, thresholds: dict[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    """`export_votes` into the empty folder `out`."""
    if is_vlm(store):  # VLM response pairs: PreferencePair text rows or TRL's format
        from .vlm_export import export_vlm

        return export_vlm(store, image_root, out, fmt, criterion=criterion,
                          exclude_flagged=exclude_flagged, thresholds=thresholds)  # fmt: skip
    if fmt not in ("pickapic", "pairs"):
        raise ValueError(f"format must be 'pickapic' or 'pairs' for image pairs, got {fmt!r}")
    root = Path(image_root)
    rows = []
    chosen, skipped, info = select_votes(store, criterion=criterion,
                                         exclude_flagged=exclude_flagged,
                                         thresholds=thresholds)  # fmt: skip
    user_id = Pseudonyms(store)
    for v in chosen:
        v = {**v, "user_id": user_id(v["annotator"])}
        images = [_image_bytes(root, v["image_0"]), _image_bytes(root, v["image_1"])]
        left, right = images[v["left_image"]], images[1 - v["left_image"]]
        created = datetime.fromtimestamp(v["created_at"], tz=timezone.utc).replace(tzinfo=None)
        rows.append((v, left, right, created))

    if fmt == "pickapic":
        _write_pickapic(rows, out, split)
    else:
        _write_pairs(rows, out, store.url)
    return {"rows": len(rows), "skipped": dict(skipped), "format": fmt, "out": str(out), **info}


def _write_pickapic(rows: list[Any], out: Path, split: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmalign.data.pickapic import PICKAPIC_SCHEMA, image_uid

    schema = PICKAPIC_SCHEMA.set(
        PICKAPIC_SCHEMA.get_field_index("user_id"), pa.field("user_id", pa.string())
    )  # annotator pseudonyms, not Pick-a-Pic's integer ids
    prompts = Counter(v["prompt"] for v, *_ in rows)
    records = []
    for v, left, right, created in rows:
        l0 = {"left": 1.0, "right": 0.0, "tie": 0.5}[v["choice"]]
        uid_0, uid_1 = image_uid(left), image_uid(right)
        records.append(
            {
                "caption": v["prompt"], "jpg_0": left, "jpg_1": right,
                "label_0": l0, "label_1": 1.0 - l0, "has_label": True,
                "are_different": left != right,
                "best_image_uid": "" if l0 == 0.5 else (uid_0 if l0 > 0.5 else uid_1),
                "image_0_uid": uid_0, "image_1_uid": uid_1,
                "model_0": "unknown", "model_1": "unknown",
                "user_id": v["user_id"], "ranking_id": v["seq"], "created_at": created,
                "num_example_per_prompt": prompts[v["prompt"]],
            }
        )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{split}-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(records, schema=schema), path)


def _write_pairs(rows: list[Any], out: Path, db: str) -> None:
    from mmalign.data.schema import write_pairs

    pairs = []
    for v, left, right, _created in rows:
        chosen, rejected = (right, left) if v["choice"] == "right" else (left, right)
        pairs.append(
            {
                "prompt": v["prompt"],
                "chosen": {"bytes": chosen, "path": None},
                "rejected": {"bytes": rejected, "path": None},
                "label": 0.5 if v["choice"] == "tie" else 1.0,
                "user_id": v["user_id"],
                "source": f"label:{v['vote_id']}",
            }
        )
    write_pairs(pairs, out, "image")
