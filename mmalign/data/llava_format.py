"""LLaVA conversation-format preference data into VLM PreferencePair rows.

A record: `{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
{"from": "gpt", "value": ...}], ...}` (LLaVA's SFT format) plus a preference, in one of the
layouts the public VLM preference sets use:

- `chosen` / `rejected` (RLHF-V, POVID, HA-DPO style): strings, a turn `{"from": "gpt",
  "value": ...}`, or a list of turns whose last one is the answer. Without `chosen`, the
  conversation's own `gpt` answer is the chosen one;
- `output_1` / `output_2` with `preference` 1 or 2 (LLaVA-RLHF's human preference data);
- RLHF-V's release (hub `openbmb/RLHF-V-Dataset`): no `conversations`, but a `text` column
  holding a JSON object `{"question", "chosen", "rejected"}` and the image in `image`. A
  `text` that is not such an object is counted as `bad_text`.

The prompt is the one human turn (its `<image>` placeholders mark the images); a record with
several human turns is skipped and counted as `multi_turn_prompt`, since the VLM collator
renders one user turn. `image` is a path (relative to the image folder) or a list of paths
for multi-image records; without `<image>` in the prompt the images come first.
"""

from __future__ import annotations

import json
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
REQUIRED = {"conversations": ("conversations", "text")}  # `text`: RLHF-V's JSON object
SOURCE = "llava"
RLHF_V_KEYS = ("question", "chosen", "rejected")


def rlhf_v_text(value: Any) -> dict[str, Any] | None:
    """RLHF-V's `text` (a JSON object with question, chosen, rejected) parsed, else None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) and set(RLHF_V_KEYS) <= set(parsed) else None


def _answer(value: Any) -> Any:
    if isinstance(value, list) and value and all(isinstance(t, Mapping) for t in value):
        value = value[-1]  # a list of turns: the last one answers
    return text_of(value) if isinstance(value, Mapping) else value


def _images(record: Mapping[str, Any]) -> list[Any]:
    image = record.get("image")
    return image if isinstance(image, list) else ([] if image is None else [image])


def llava_row(record: Mapping[str, Any], image_root: Path | None) -> dict[str, Any]:
    turns = record.get("conversations")
    if turns is None and record.get("text") is not None:  # RLHF-V's release
        text = rlhf_v_text(record["text"])
        if text is None:
            raise SkipRow("bad_text")
        return make_row(text["question"], _images(record), text["chosen"], text["rejected"],
                        image_root, source=SOURCE)  # fmt: skip
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
    extra: dict[str, Any] = {"source": SOURCE}
    if record.get("id") is not None:
        extra["id"] = record["id"]
    return make_row(prompt, _images(record), chosen, rejected, image_root, **extra)


# `llava_pairs` converts records already read (a list, a `Dataset`), `read_llava` a file.
FORMAT = RecordFormat("LLaVA-format data", REQUIRED, llava_row)
llava_pairs = FORMAT.pairs
read_llava = FORMAT.read
