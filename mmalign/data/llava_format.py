"""LLaVA conversation-format preference data into VLM PreferencePair rows.

A record: `{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
{"from": "gpt", "value": ...}], ...}` (LLaVA's SFT format) plus a preference, in one of the
layouts the public VLM preference sets use:

- `chosen` / `rejected` (RLHF-V, POVID, HA-DPO style): strings, a turn `{"from": "gpt",
  "value": ...}`, or a list of turns whose last one is the answer. Without `chosen`, the
  conversation's own `gpt` answer is the chosen one;
- `output_1` / `output_2` with `preference` 1 or 2 (LLaVA-RLHF's human preference data).

The prompt is the one human turn (its `<image>` placeholders mark the images); a record with
several human turns is skipped and counted as `multi_turn_prompt`, since the VLM collator
renders one user turn. `image` is a path (relative to the image folder) or a list of paths
for multi-image records; without `<image>` in the prompt the images come first.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .vlm_rows import (
    RecordFormat,
    SkipRow,
    make_row,
    text_of,
)

HUMAN = ("human", "user")
REQUIRED = {"conversations": ("conversations",)}
SOURCE = "llava"


def _answer(value: Any) -> Any:
    if isinstance(value, list) and value and all(isinstance(t, Mapping) for t in value):
        value = value[-1]  # a list of turns: the last one answers
    return text_of(value) if isinstance(value, Mapping) else value


def llava_row(record: Mapping[str, Any], image_root: Path | None) -> dict[str, Any]:
    turns = record.get("conversations")
    if not isinstance(turns, list) or not all(isinstance(t, Mapping) for t in turns):
        raise SkipRow("bad_type_conversations")
    human = [t for t in turns if t.get("from", t.get("role")) in HUMAN]
    if not human:
        raise SkipRow("missing_prompt")
    if len(human) > 1:
        raise SkipRow("multi_turn_prompt")
    prompt = text_of(human[0])
    if "output_1" in record or "output_2" in record:
        preference = record.get("preference")
        if preference not in (1, 2, "1", "2"):
            raise SkipRow("bad_preference")
        first, second = _answer(record.get("output_1")), _answer(record.get("output_2"))
        chosen, rejected = (first, second) if int(preference) == 1 else (second, first)
    else:
        chosen = record.get("chosen")
        if chosen is None:
            answers = [t for t in turns if t.get("from", t.get("role")) in ("gpt", "assistant")]
            chosen = answers[-1] if answers else None
        chosen, rejected = _answer(chosen), _answer(record.get("rejected"))
    image = record.get("image")
    images = image if isinstance(image, list) else ([] if image is None else [image])
    extra: dict[str, Any] = {"source": SOURCE}
    if record.get("id") is not None:
        extra["id"] = record["id"]
    return make_row(prompt, images, chosen, rejected, image_root, **extra)


# `llava_pairs` converts records already read (a list, a `Dataset`), `read_llava` a file.
FORMAT = RecordFormat("LLaVA-format data", REQUIRED, llava_row)
llava_pairs = FORMAT.pairs
read_llava = FORMAT.read
