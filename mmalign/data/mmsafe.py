"""MMSafe-PO (the BPO paper's data; METHODS.md section 3) into VLM PreferencePair rows.

A record: `id`, `question` (LLaVA format, `<image>` marks the image), `image` (a path
relative to the image folder, or encoded bytes), `chosen` (the safe answer), `rejected`,
`type`, `entity`, `entity_type`. The metadata (`id`, `type`, `entity`, `entity_type`) is kept
as string columns, so evaluations can group by request type; `source` is `mmsafe-po`.
BPO's blind responses are not in the data: `mmalign.vlm.blind` builds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .vlm_rows import RecordFormat, make_row

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


# `mmsafe_pairs` converts records already read (a list, a `Dataset`), `read_mmsafe` a file.
FORMAT = RecordFormat("MMSafe-PO", REQUIRED, mmsafe_row)
mmsafe_pairs = FORMAT.pairs
read_mmsafe = FORMAT.read
