"""Readers for PRISM's released data files (Li et al. 2025): PRISM-CoT (SFT) and PRISM-DPO.

The release (huggingface.co/datasets/andyc03/PRISM-CoT and .../PRISM-DPO, read by the authors'
`utils/formatting.py`) is a folder with `data.json` and `images/`:

- PRISM-CoT: a list of `{"question", "response", "image"}`; `response` is the whole chain of
  thought in the four tagged stages (`mmalign.data.prism_cot`), `image` a file name in
  `images/`. These are single-answer rows for `loss: sft`; PreferencePair needs a rejected
  answer, so `rejected` holds `SFT_ONLY` (a marker, never a real answer) and `source` is
  `prism-cot`: train them only with an objective whose every term is `sft`, which never reads
  `rejected` (the VLM recipe refuses any other loss on rows holding the marker).
- PRISM-DPO: records `{"prompt" (or "question"), "image", "chosen", "rejected", "chosen_score",
  "rejected_score", ...}` (the authors' MCTS pair writer; a JSON list or JSON Lines); the
  scores and terminal flags are kept as string columns, `source` is `prism-dpo`.

An `image` is looked up in `images/` first, then in the folder itself, and must stay inside
the folder (`mmalign.data.vlm_rows`). A record whose response does not parse as the four
stages is kept when `require_format` is False, else skipped and counted as `bad_cot_format`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .prism_cot import parse_stages
from .schema import ValidationReport
from .vlm_rows import SkipRow, collect, make_row, pick, read_records, require_keys, to_dataset

SFT_ONLY = "<sft-only row: PRISM-CoT has no rejected answer>"
KINDS = ("cot", "dpo")
_DPO_EXTRA = ("chosen_score", "rejected_score", "chosen_is_terminal", "rejected_is_terminal")


def _data_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    for name in ("data.json", "data.jsonl"):
        if (path / name).is_file():
            return path / name
    found = sorted(p.name for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
    if len(found) == 1:
        return path / found[0]
    raise FileNotFoundError(
        f"{path}: expected data.json (PRISM's release layout); JSON files here: {found or 'none'}"
    )


def _image(value: Any, root: Path) -> Any:
    """A file name resolves in `root/images` when it is there (the release layout)."""
    if isinstance(value, str) and "://" not in value and (root / "images" / value).is_file():
        return str(Path("images") / value)
    return value


def detect_kind(record: Mapping[str, Any]) -> str:
    if "chosen" in record and "rejected" in record:
        return "dpo"
    if "response" in record:
        return "cot"
    raise ValueError(
        f"not a PRISM-CoT or PRISM-DPO record: keys {sorted(record)[:12]} (PRISM-CoT has "
        "question/response/image, PRISM-DPO prompt/image/chosen/rejected)"
    )


def _row(record: Mapping[str, Any], root: Path, kind: str, require_format: bool) -> dict:
    prompt = pick(record, ("question", "prompt"))
    image = record.get("image")
    images = [] if image is None else [_image(image, root)]
    if kind == "cot":
        response = record.get("response")
        if require_format and isinstance(response, str) and not parse_stages(response).compliant:
            raise SkipRow("bad_cot_format")
        return make_row(prompt, images, response, SFT_ONLY, root, source="prism-cot")
    chosen, rejected = record.get("chosen"), record.get("rejected")
    extra = {k: str(record[k]) for k in _DPO_EXTRA if record.get(k) is not None}
    return make_row(prompt, images, chosen, rejected, root, source="prism-dpo", **extra)


def read_prism_file(
    path: str | Path,
    *,
    kind: str | None = None,
    max_samples: int | None = None,
    require_format: bool = False,
    strict: bool = False,
) -> tuple[Any, ValidationReport]:
    """(PreferencePair `Dataset`, report) from a PRISM-CoT or PRISM-DPO folder (or its JSON
    file); `kind` "cot" / "dpo", or None to tell from the first record."""
    if kind is not None and kind not in KINDS:
        from ..suggest import did_you_mean

        raise ValueError(f"unknown PRISM file kind {kind!r}; {did_you_mean(kind, KINDS)}")
    file = _data_file(Path(path))
    root = file.parent
    records = read_records(file)
    if not records:
        raise ValueError(f"{file}: no records")
    kind = kind or detect_kind(records[0])
    fields = {"prompt": ("question", "prompt")}
    fields.update({"response": ("response",)} if kind == "cot" else
                  {"chosen": ("chosen",), "rejected": ("rejected",)})  # fmt: skip
    records = list(require_keys(records, fields, str(file)))
    report = ValidationReport(name=str(file))
    rows = collect(records, lambda r: _row(r, root, kind, require_format), report,
                   max_samples=max_samples, strict=strict)  # fmt: skip
    return to_dataset(rows, report, str(file)), report
