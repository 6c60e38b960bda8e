"""Re-Align (Xing et al., EMNLP 2025) preference JSON into VLM PreferencePair rows.

A record holds an image, the question, the chosen answer y_w, the rejected answer y_l (the
VLM's fill-in conditioned on a retrieved image) and possibly that retrieved ("negative")
image v_l, which the rDPO visual term pairs with y_w. Releases and forks name these keys
differently, so each field accepts the keys below (the first present wins); a file where no
record has a required field is an error naming the field and the accepted keys.

- image: `image`, `image_path`, `img_path`, `img`
- question: `question`, `prompt`, `query`, `instruction`, or the first human turn of LLaVA
  `conversations`
- chosen: `chosen`, `y_w`, `chosen_response`
- rejected: `rejected`, `y_l`, `rejected_response`
- retrieved image (optional): `retrieved_image`, `image_neg`, `negative_image`, `neg_image`,
  `rejected_image`, `retrieved_image_path` (a list: its first image)

`mmalign.vlm.realign` builds such data from a model and an image pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .vlm_rows import (
    RecordFormat,
    SkipRow,
    make_row,
    pick,
)

KEYS: dict[str, tuple[str, ...]] = {
    "image": ("image", "image_path", "img_path", "img"),
    "question": ("question", "prompt", "query", "instruction", "conversations"),
    "chosen": ("chosen", "y_w", "chosen_response"),
    "rejected": ("rejected", "y_l", "rejected_response"),
}
RETRIEVED_KEYS = ("retrieved_image", "image_neg", "negative_image", "neg_image",
                  "rejected_image", "retrieved_image_path")  # fmt: skip
SOURCE = "re-align"


def _question(record: Mapping[str, Any]) -> Any:
    value = pick(record, KEYS["question"])
    if isinstance(value, list):  # LLaVA conversations: the first human turn
        human = [t for t in value if isinstance(t, Mapping)
                 and t.get("from", t.get("role")) in ("human", "user")]  # fmt: skip
        if not human:
            raise SkipRow("missing_question")
        value = human[0].get("value", human[0].get("content"))
    return value


def realign_row(record: Mapping[str, Any], image_root: Path | None) -> dict[str, Any]:
    image = pick(record, KEYS["image"])
    if image is None:
        raise SkipRow("missing_image")
    retrieved = pick(record, RETRIEVED_KEYS)
    if isinstance(retrieved, list):
        retrieved = retrieved[0] if retrieved else None
    extra: dict[str, Any] = {"source": SOURCE, "retrieved_image": retrieved}
    if record.get("id") is not None:
        extra["id"] = record["id"]
    return make_row(_question(record), [image], pick(record, KEYS["chosen"]),
                    pick(record, KEYS["rejected"]), image_root, **extra)  # fmt: skip


# `realign_pairs` converts records already read (a list, a `Dataset`), `read_realign` a file.
FORMAT = RecordFormat("Re-Align", KEYS, realign_row)
realign_pairs = FORMAT.pairs
read_realign = FORMAT.read
