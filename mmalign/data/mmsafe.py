"""MMSafe-PO (the BPO paper's data; METHODS.md section 3) into VLM PreferencePair rows.

A record: `id`, `question` (LLaVA format, `<image>` marks the image), `image` (a path
relative to the image folder, or encoded bytes), `chosen` (the safe answer), `rejected`,
`type`, `entity`, `entity_type`. The metadata (`id`, `type`, `entity`, `entity_type`) is kept
as string columns, so evaluations can group by request type; `source` is `mmsafe-po`.
BPO's blind responses are not in the data: `mmalign.vlm.blind` builds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from datasets import Dataset

from .schema import ValidationReport
from .vlm_rows import convert_records, make_row, read_records

FIELDS = ("id", "question", "image", "chosen", "rejected", "type", "entity", "entity_type")
METADATA = ("id", "type", "entity", "entity_type")
REQUIRED = {"question": ("question",), "image": ("image",), "chosen": ("chosen",),
            "rejected": ("rejected",)}  # fmt: skip
SOURCE = "mmsafe-po"


def mmsafe_row(record: Mapping[str, Any], image_root: Path | None) -> dict[str, Any]:
    """One record -> one row (SkipRow with the reason when it is unusable)."""
    from .vlm_rows import SkipRow

    if record.get("image") is None:
        raise SkipRow("missing_image")
    meta = {k: record[k] for k in METADATA if record.get(k) is not None}
    return make_row(record.get("question"), [record["image"]], record.get("chosen"),
                    record.get("rejected"), image_root, source=SOURCE, **meta)  # fmt: skip


def mmsafe_pairs(records: Iterable[Mapping[str, Any]], *, image_root: str | Path | None,
                 where: str = "MMSafe-PO", max_samples: int | None = None,
                 strict: bool = False) -> tuple[Dataset, ValidationReport]:  # fmt: skip
    """Rows and the report of every skipped record, by reason."""
    return convert_records(records, REQUIRED, mmsafe_row, image_root=image_root, where=where,
                           max_samples=max_samples, strict=strict)  # fmt: skip


def read_mmsafe(path: str | Path, *, image_root: str | Path | None = None,
                max_samples: int | None = None,
                strict: bool = False) -> tuple[Dataset, ValidationReport]:  # fmt: skip
    """An MMSafe-PO JSON / JSONL file; image paths are relative to `image_root` (default: the
    file's folder) and must stay inside it."""
    path = Path(path)
    return mmsafe_pairs(read_records(path), image_root=image_root or path.parent,
                        where=str(path), max_samples=max_samples, strict=strict)  # fmt: skip
