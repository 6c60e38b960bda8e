"""MMSafe-PO (the BPO paper's data; METHODS.md section 3) into VLM PreferencePair rows.

A record: `id`, `question` (LLaVA format, `<image>` marks the image), `image` (a path
relative to the image folder, or encoded bytes), `chosen` (the safe answer), `rejected`,
`type`, `entity`, `entity_type`. The metadata (`id`, `type`, `entity`, `entity_type`) is kept
as string columns, so evaluations can group by request type; `source` is `mmsafe-po`.
BPO's blind responses are not in the data: `mmalign.vlm.blind` builds them.

The released copy (hub `Downton/MMSafe-PO`) names the question `prompt` and keeps LLaVA-1.5's
template in the text: `prompt` is `"USER: <image>\n... ASSISTANT:"` and each answer starts
with `"ASSISTANT: "`. The collator renders the model's own chat template, so those role tags
are taken off (else every pair trains on "USER:" inside the user turn and an answer that
repeats "ASSISTANT:"); a prompt holding more than one user turn (the dialogues it took from
HH-RLHF) is counted as `multi_turn_prompt`, as the other readers count theirs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .vlm_rows import RecordFormat, SkipRow, make_row, pick

FIELDS = ("id", "question", "image", "chosen", "rejected", "type", "entity", "entity_type")
METADATA = ("id", "type", "entity", "entity_type")
REQUIRED = {"question": ("question", "prompt"), "image": ("image",), "chosen": ("chosen",),
            "rejected": ("rejected",)}  # fmt: skip
SOURCE = "mmsafe-po"
# LLaVA-1.5's role tags as the release writes them ("USER: ... ASSISTANT:", "ASSISTANT: ...")
_USER, _ASSISTANT = re.compile(r"\bUSER:"), re.compile(r"\bASSISTANT:")


def _untemplated_prompt(text: Any) -> Any:
    """The user's words of a `"USER: ... ASSISTANT:"` prompt; other values as given. More
    than one turn is SkipRow("multi_turn_prompt")."""
    if not isinstance(text, str) or not text.lstrip().startswith("USER:"):
        return text
    body = text.strip()[len("USER:") :]
    if body.rstrip().endswith("ASSISTANT:"):
        body = body.rstrip()[: -len("ASSISTANT:")]
    if _USER.search(body) or _ASSISTANT.search(body):
        raise SkipRow("multi_turn_prompt")
    return body.strip()


def _untemplated_answer(text: Any) -> Any:
    if isinstance(text, str) and text.lstrip().startswith("ASSISTANT:"):
        return text.lstrip()[len("ASSISTANT:") :].strip()
    return text


def mmsafe_row(record: Mapping[str, Any], image_root: Path | None) -> dict[str, Any]:
    """One record -> one row (SkipRow with the reason when it is unusable)."""
    if record.get("image") is None:
        raise SkipRow("missing_image")
    meta = {k: record[k] for k in METADATA if record.get(k) is not None}
    question = _untemplated_prompt(pick(record, REQUIRED["question"]))
    return make_row(question, [record["image"]], _untemplated_answer(record.get("chosen")),
                    _untemplated_answer(record.get("rejected")), image_root, source=SOURCE,
                    **meta)  # fmt: skip


# `mmsafe_pairs` converts records already read (a list, a `Dataset`), `read_mmsafe` a file.
FORMAT = RecordFormat("MMSafe-PO", REQUIRED, mmsafe_row)
mmsafe_pairs = FORMAT.pairs
read_mmsafe = FORMAT.read
