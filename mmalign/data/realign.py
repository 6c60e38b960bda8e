"""Re-Align (Xing et al., EMNLP 2025) preference JSON into VLM PreferencePair rows.

A record holds an image, the question, the chosen answer y_w, the rejected answer y_l (the
VLM's fill-in conditioned on a retrieved image) and possibly that retrieved ("negative")
image v_l, which the rDPO visual term pairs with y_w. Releases and forks name these keys
differently, so each field accepts the keys below (the first present wins); a file where no
record has a required field is an error naming the field and the accepted keys.

- image: `image`, `image_path`, `img_path`, `img`
- question: `question`, `prompt`, `query`, `instruction`, or the first human turn of LLaVA
  `conversations`; without these, the user turn of a conversational `chosen`
- chosen: `chosen`, `y_w`, `chosen_response`
- rejected: `rejected`, `y_l`, `rejected_response`
- retrieved image (optional): `retrieved_image`, `image_neg`, `negative_image`, `neg_image`,
  `rejected_image`, `retrieved_image_path` (a list: its first image)

The released training file (`train_rdpo.py`) holds `image`, `retrieved_image` and `chosen` /
`rejected` as whole conversations (`[{"role": "user", "content": "<image>\\n..."}, {"role":
"assistant", "content": ...}]`): the shared user turn is the question and each final assistant
turn the answer. Conversations whose user turns differ are counted as `prompt_mismatch`, and
more than one turn before the answer as `multi_turn_prompt` (the collator renders one user
turn). A record with no question at all is counted as `missing_prompt`.

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
    text_of,
)

KEYS: dict[str, tuple[str, ...]] = {
    "image": ("image", "image_path", "img_path", "img"),
    "question": ("question", "prompt", "query", "instruction", "conversations"),
    "chosen": ("chosen", "y_w", "chosen_response"),
    "rejected": ("rejected", "y_l", "rejected_response"),
}
# the question may sit inside a conversational chosen answer, so only these must be present
REQUIRED = {k: v for k, v in KEYS.items() if k != "question"}
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


def _role(turn: Mapping[str, Any]) -> Any:
    return turn.get("role", turn.get("from"))


def _is_conversation(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(t, Mapping) and _role(t) is not None for t in value))  # fmt: skip


def _split(value: Any) -> tuple[Any, Any]:
    """(the text of the one user turn before the answer, the answer) of a conversation."""
    *before, last = value
    if _role(last) not in ("assistant", "gpt"):
        raise SkipRow("missing_answer")
    if len(before) > 1:
        raise SkipRow("multi_turn_prompt")
    question = text_of(before[0]) if before and _role(before[0]) in ("user", "human") else None
    return question, text_of(last)


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
    question, chosen = _question(record), pick(record, KEYS["chosen"])
    rejected = pick(record, KEYS["rejected"])
    if _is_conversation(chosen) and _is_conversation(rejected):  # the released layout
        (asked, chosen), (asked_too, rejected) = _split(chosen), _split(rejected)
        if asked != asked_too:
            raise SkipRow("prompt_mismatch")
        question = asked if question is None else question
    return make_row(question, [image], chosen, rejected, image_root, **extra)


# `realign_pairs` converts records already read (a list, a `Dataset`), `read_realign` a file.
FORMAT = RecordFormat("Re-Align", REQUIRED, realign_row)
realign_pairs = FORMAT.pairs
read_realign = FORMAT.read
