"""TRL-style VLM preference data (`trl.DPOTrainer`'s vision format) into PreferencePair rows.

Columns: `prompt`, `chosen`, `rejected` and `images` (a list of images; a single `image`
column is accepted too, and `question` for `prompt`, as RLAIF-V names it). Two layouts, as TRL
documents them:

- standard: `prompt`, `chosen`, `rejected` are strings;
- conversational: lists of messages, e.g. `prompt = [{"role": "user", "content": [{"type":
  "image"}, {"type": "text", "text": "What is shown?"}]}]` and `chosen = [{"role":
  "assistant", "content": [{"type": "text", "text": "A cat."}]}]`. Each `{"type": "image"}`
  part becomes an `<image>` placeholder at its place in the prompt. Without a `prompt`
  column ("implicit prompt"), `chosen` and `rejected` are whole conversations that share
  every message but the last, and the shared messages are the prompt. A row whose two
  conversations differ before their last message is skipped as `prompt_mismatch`; one with no
  message before either answer as `missing_prompt`.

mmalign's collator renders one user turn, so a prompt with a system message or several
turns is skipped and counted as `multi_turn_prompt` rather than silently flattened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .vlm_rows import (
    IMAGE_PLACEHOLDER,
    RecordFormat,
    SkipRow,
    make_row,
    pick,
    text_of,
)

REQUIRED = {"chosen": ("chosen",), "rejected": ("rejected",)}
SOURCE = "trl"


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, Mapping) and "role" in m for m in value)


def prompt_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """One user message -> its text, with `<image>` where each image part is."""
    if len(messages) != 1 or messages[0].get("role") != "user":
        raise SkipRow("multi_turn_prompt")
    content = messages[0].get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise SkipRow("bad_type_prompt")
    parts = []
    for part in content:
        if isinstance(part, Mapping) and part.get("type") == "image":
            parts.append(IMAGE_PLACEHOLDER)
        elif isinstance(part, Mapping) and part.get("type") == "text":
            parts.append(str(part.get("text", "")))
        else:
            raise SkipRow("bad_type_prompt")
    return "\n".join(p for p in parts if p)


def _answer(value: Any, name: str) -> Any:
    if not _is_messages(value):
        return value
    if len(value) != 1 or value[0].get("role") != "assistant":
        raise SkipRow(f"bad_type_{name}")
    return text_of(value[0].get("content"))


def trl_row(record: Mapping[str, Any], image_root: Path | None) -> dict[str, Any]:
    # `question` as RLAIF-V (openbmb/RLAIF-V-Dataset, whose card names this reader) calls it
    prompt = pick(record, ("prompt", "question"))
    chosen, rejected = record.get("chosen"), record.get("rejected")
    if prompt is None and _is_messages(chosen) and _is_messages(rejected):  # implicit prompt
        if len(chosen) < 2 and len(rejected) < 2:  # nothing before either answer
            raise SkipRow("missing_prompt")
        if chosen[:-1] != rejected[:-1]:  # a prompt, but not one both answers share
            raise SkipRow("prompt_mismatch")
        prompt, chosen, rejected = chosen[:-1], chosen[-1:], rejected[-1:]
    if _is_messages(prompt):
        prompt = prompt_text(prompt)
    images = record.get("images")
    if images is None:
        images = [] if record.get("image") is None else [record["image"]]
    if not isinstance(images, list):
        raise SkipRow("bad_type_images")
    return make_row(prompt, images, _answer(chosen, "chosen"), _answer(rejected, "rejected"),
                    image_root, source=SOURCE, label=record.get("label"),
                    blind=record.get("blind"),
                    retrieved_image=record.get("retrieved_image"))  # fmt: skip


# `trl_pairs` converts records already read (a list, a `Dataset`), `read_trl` a file.
FORMAT = RecordFormat("TRL-style data", REQUIRED, trl_row)
trl_pairs = FORMAT.pairs
read_trl = FORMAT.read
