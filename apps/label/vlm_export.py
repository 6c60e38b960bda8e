"""Export VLM response-pair votes: mmalign `PreferencePair` rows or TRL's VLM DPO format.

Which votes, and which question's answer, as for image pairs (`selection.py`: skips, gold
pairs, flagged annotators, "both bad" are counted and left out). A tie keeps the response
shown on the left as `chosen`, with `label` 0.5.

- `pairs`: a saved dataset of text `PreferencePair` rows: `prompt`, `chosen`, `rejected`
  (the two responses), `image` (the pair's image), `label` (1.0, 0.5 for a tie), `user_id`
  (the annotator's pseudonym, `pseudonyms.py`), `source` = `label:<vote id>`;
- `trl`: a saved dataset in the columns `trl.DPOTrainer` takes for vision models:
  `images` (a list of one image), and conversational `prompt` (one user message: an image
  part where the prompt had `<image>`, else first, then the text), `chosen` and `rejected`
  (one assistant message each), plus `label`.

Both load with `mmalign train configs/toy/vlm_dpo.yaml data=DIR` (`mmalign.vlm.data`
detects the format from the columns).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .images import load_image, resolve
from .pseudonyms import Pseudonyms
from .selection import select_votes
from .store import Store
from .vlm_pairs import all_responses

IMAGE_PLACEHOLDER = "<image>"  # mmalign.data.vlm_rows.IMAGE_PLACEHOLDER


def _image_bytes(root: Path, ref: str) -> bytes:
    load_image(root, ref)  # the same checks as when the image is shown
    return resolve(root, ref).read_bytes()


def _prompt_messages(prompt: str) -> list[dict[str, Any]]:
    pieces = prompt.split(IMAGE_PLACEHOLDER)
    if len(pieces) == 1:
        parts = [{"type": "image", "text": None}, {"type": "text", "text": prompt}]
    else:
        parts = []
        for i, piece in enumerate(pieces):
            if i:
                parts.append({"type": "image", "text": None})
            if piece.strip():
                parts.append({"type": "text", "text": piece.strip()})
    return [{"role": "user", "content": parts}]


def _answer(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def export_vlm(
    store: Store, image_root: str | Path, out: str | Path, fmt: str, *,
    criterion: str | None = None, exclude_flagged: bool = False,
    thresholds: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Write VLM votes to `out` (`pairs` or `trl`); returns counts like `export_votes`."""
    if fmt not in ("pairs", "trl"):
        raise ValueError(f"format must be 'pairs' or 'trl' for VLM response pairs, got {fmt!r}")
    root = Path(image_root)
    votes, skipped, info = select_votes(store, criterion=criterion,
                                        exclude_flagged=exclude_flagged,
                                        thresholds=thresholds)  # fmt: skip
    texts = all_responses(store)
    user_id = Pseudonyms(store)  # the same id as in image-pair exports of this database
    rows = []
    for v in votes:
        shown = (texts[v["pair_id"]][v["left_image"]], texts[v["pair_id"]][1 - v["left_image"]])
        chosen, rejected = (shown[1], shown[0]) if v["choice"] == "right" else shown
        rows.append({
            "prompt": v["prompt"], "chosen": chosen, "rejected": rejected,
            "image": {"bytes": _image_bytes(root, v["image_0"]), "path": None},
            "label": 0.5 if v["choice"] == "tie" else 1.0,
            "user_id": user_id(v["annotator"]), "source": f"label:{v['vote_id']}",
        })  # fmt: skip
    out = Path(out)
    if fmt == "pairs":
        from mmalign.data.schema import write_pairs

        write_pairs(rows, out, "text")
    else:
        _write_trl(rows, out)
    return {"rows": len(rows), "skipped": dict(skipped), "format": fmt, "out": str(out), **info}


def _write_trl(rows: list[dict[str, Any]], out: Path) -> None:
    from datasets import Dataset, Features, Image, List, Value

    part = {"type": Value("string"), "text": Value("string")}
    message = List({"role": Value("string"), "content": List(part)})
    features = Features({"images": List(Image()), "prompt": message, "chosen": message,
                         "rejected": message, "label": Value("float32"),
                         "user_id": Value("string"), "source": Value("string")})  # fmt: skip
    columns: dict[str, list[Any]] = {name: [] for name in features}
    for r in rows:
        columns["images"].append([r["image"]])
        columns["prompt"].append(_prompt_messages(r["prompt"]))
        columns["chosen"].append(_answer(r["chosen"]))
        columns["rejected"].append(_answer(r["rejected"]))
        for name in ("label", "user_id", "source"):
            columns[name].append(r[name])
    Dataset.from_dict(columns, features=features).save_to_disk(str(out))
