"""What every VLM preference reader shares: records from JSON / JSONL / a dataset, images
resolved inside an image root, and the rows turned into a `Dataset` the VLM collator reads.

A VLM row (`mmalign.vlm.collate`): `prompt` (`<image>` marks where each image goes, else the
images come first), `image` (one image) or `images` (a list, only when some row shows more
than one), `chosen`, `rejected`, `label`, `source`, and optionally `retrieved_image` (rDPO),
`blind` (BPO) and string metadata columns a format carries (MMSafe-PO's `type`, `entity`, ...).

Images are kept as their original encoded bytes (a JPEG stays a JPEG). An image given as a
path must resolve inside the image root, symlinks followed: `../x.png` or `/etc/x.png` is
refused and counted, never read. Nothing is downloaded: a URL is counted as `remote_image`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, Image, List, Value

from .schema import IMAGE_PLACEHOLDER, ValidationReport

STRING_FIELDS = ("prompt", "chosen", "rejected", "blind", "source")
# keys of a JSON object that name a split (`{"train": [...], "test": [...]}`)
SPLIT_NAMES = frozenset({"train", "test", "validation", "val", "valid", "dev", "eval", "heldout"})


class SkipRow(Exception):
    """A row that cannot be used; `reason` is the count key in the `ValidationReport`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------------------ records


def read_records(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """The records of a JSON file (a list of objects, `{"data": [...]}`, `{split: [...]}` with
    several splits, or one object: one record) or JSONL file. Errors name the file and, for
    JSONL, the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    head = text.lstrip()[:1]
    lines = [line for line in text.splitlines() if line.strip()]
    # JSON Lines: by suffix, or a .json file whose lines are each one object (common in
    # releases), which json.loads would reject as "Extra data".
    jsonl = path.suffix == ".jsonl" or (head == "{" and len(lines) > 1
                                        and lines[0].rstrip().endswith("}"))  # fmt: skip
    if jsonl:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {number} is not valid JSON ({err.msg})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
            ) from None
        if isinstance(data, Mapping):  # {"data": [...]} / {"train": [...]} wrappers
            # only lists of objects hold records: a record's own list field (`images`) does not
            lists = [v for v in data.values()
                     if isinstance(v, list) and all(isinstance(r, Mapping) for r in v)]  # fmt: skip
            if split is not None and isinstance(data.get(split), list):
                lists = [data[split]]
            elif split is not None:  # another split is never read in place of the one asked
                splits = sorted(k for k, v in data.items()
                                if isinstance(v, list) and k.lower() in SPLIT_NAMES)  # fmt: skip
                if splits:
                    raise ValueError(f"{path} has splits {splits}; asked for split {split!r}")
            if not lists:  # no list of records: the object is one (a one-line JSONL file)
                lists = [[data]]
            if len(lists) != 1:
                raise ValueError(f"{path}: expected a list of records, got an object with keys "
                                 f"{sorted(data)[:10]}")  # fmt: skip
            data = lists[0]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of records, got {type(data).__name__}")
        records = data
    bad = next((i for i, r in enumerate(records) if not isinstance(r, Mapping)), None)
    if bad is not None:
        raise ValueError(f"{path}: record {bad} is a {type(records[bad]).__name__}, not an object")
    return records


def pick(record: Mapping[str, Any], names: Sequence[str]) -> Any:
    """The value of the first of `names` present (and not None) in `record`, else None."""
    for name in names:
        if record.get(name) is not None:
            return record[name]
    return None


def require_keys(records: Iterable[Mapping[str, Any]], fields: Mapping[str, Sequence[str]],
                 where: str) -> Sequence[Mapping[str, Any]]:  # fmt: skip
    """`records` as a sequence (a `Dataset` stays one, read lazily); raises when no record
    has any accepted key of a field: a schema error, not bad rows."""
    if isinstance(records, Dataset):
        keys = set(records.column_names)
    else:
        records = list(records)
        keys = set().union(*(r.keys() for r in records)) if records else set()
    for field, names in fields.items():
        if not keys & set(names):
            raise ValueError(
                f"{where}: no record has the field {field!r} (accepted keys: "
                f"{', '.join(names)}); the records have keys {sorted(keys)[:20]}"
            )
    return records


# ------------------------------------------------------------------------------- images


def _encoded(value: bytes) -> bytes:
    """`value` if it decodes as an image, else SkipRow("undecodable_image")."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(value)) as image:
            image.load()  # a truncated file must fail here, not in training
    except Exception:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBomb...
        raise SkipRow("undecodable_image") from None
    return value


def inside_root(root: Path, name: str) -> Path:
    """`root / name` resolved, or SkipRow("image_outside_root") when it leaves `root`."""
    root = root.resolve()
    target = (root / name).resolve()  # absolute `name` replaces root; symlinks followed
    if not target.is_relative_to(root):
        raise SkipRow("image_outside_root")
    return target


def load_image(value: Any, root: Path | None) -> dict[str, Any]:
    """`{"bytes", "path"}` for an `Image()` column from a path (inside `root`), encoded bytes,
    base64 data URI, `{"bytes", "path"}` dict or PIL image; SkipRow names what went wrong."""
    from PIL import Image as PILImage

    if isinstance(value, PILImage.Image):
        buffer = io.BytesIO()
        value.save(buffer, format=value.format or "PNG")
        return {"bytes": buffer.getvalue(), "path": None}
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return {"bytes": _encoded(bytes(value["bytes"])), "path": value.get("path")}
        value = value.get("path")
    if isinstance(value, bytes | bytearray):
        return {"bytes": _encoded(bytes(value)), "path": None}
    if not isinstance(value, str) or not value.strip():
        raise SkipRow("missing_image")
    if value.startswith("data:image/"):
        try:
            raw = base64.b64decode(value.partition(",")[2], validate=True)
        except (binascii.Error, ValueError):
            raise SkipRow("undecodable_image") from None
        return {"bytes": _encoded(raw), "path": None}
    if "://" in value:
        raise SkipRow("remote_image")  # nothing is downloaded
    if root is None:
        raise SkipRow("image_path_without_root")
    try:
        target = inside_root(root, value)
        if not target.is_file():
            raise SkipRow("missing_image_file")
        raw = target.read_bytes()
    except (OSError, ValueError):  # a NUL byte, a name too long, unreadable: counted, no crash
        raise SkipRow("bad_image_path") from None
    return {"bytes": _encoded(raw), "path": value}


# --------------------------------------------------------------------------------- rows


def text_of(value: Any) -> str | None:
    """A text from a string, a message (`content`/`value`/`text`) or a list of content parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        for key in ("content", "value", "text"):
            if key in value:
                return text_of(value[key])
        return None
    if isinstance(value, list):
        parts = [text_of(v) for v in value if not (isinstance(v, Mapping)
                                                   and v.get("type") == "image")]  # fmt: skip
        return None if any(p is None for p in parts) else " ".join(p for p in parts if p)
    return None


def make_row(prompt: Any, images: Sequence[Any], chosen: Any, rejected: Any,
             root: Path | None, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """A checked VLM row; SkipRow with the reason otherwise. `extra` values that are images
    (`retrieved_image`) are resolved like `images`; the others are kept as given."""
    for name, value in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise SkipRow(f"missing_{name}")
        if not isinstance(value, str):
            raise SkipRow(f"bad_type_{name}")
    if chosen.strip() == rejected.strip():
        raise SkipRow("chosen_equals_rejected")  # a pair that cannot teach anything
    slots = prompt.count(IMAGE_PLACEHOLDER)
    if slots and slots != len(images):
        raise SkipRow("image_placeholder_mismatch")
    row: dict[str, Any] = {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "images": [load_image(image, root) for image in images],
    }
    if extra.get("retrieved_image") is not None:
        extra["retrieved_image"] = load_image(extra["retrieved_image"], root)
    label = extra.pop("label", None)
    if label is not None:
        try:
            label = float(label)
        except (TypeError, ValueError):
            raise SkipRow("bad_label") from None
        if not 0.0 <= label <= 1.0:
            raise SkipRow("bad_label")
    row["label"] = label
    row.update(extra)
    return row


def collect(records: Iterable[Mapping[str, Any]], convert: Callable[[Mapping[str, Any]], dict],
            report: ValidationReport, *, max_samples: int | None = None,
            strict: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """`convert` every record; each SkipRow is counted in `report` (raised under `strict`)."""
    rows = []
    for index, record in enumerate(_limit(records, max_samples)):
        try:
            row = convert(record)
        except SkipRow as skip:
            report.skip(index, skip.reason, strict=strict)
            continue
        report.keep(index)
        rows.append(row)
    return rows


def _limit(records: Iterable[Any], n: int | None) -> Iterator[Any]:
    for index, record in enumerate(records):
        if n is not None and index >= n:
            return
        yield record


def to_dataset(rows: list[dict[str, Any]], report: ValidationReport, where: str) -> Dataset:
    """The kept rows as a `Dataset`; `images` collapses to `image` when no row shows more
    than one. No kept row at all is an error that shows the report (every row was bad)."""
    if not rows:
        raise ValueError(f"{where}: no usable row\n{report}")
    multi = any(len(r["images"]) > 1 for r in rows)
    spec: dict[str, Any] = {name: Value("string") for name in ("prompt", "chosen", "rejected")}
    spec["label"] = Value("float32")
    spec["images" if multi else "image"] = List(Image()) if multi else Image()
    names = dict.fromkeys(k for r in rows for k, v in r.items()
                          if v is not None and k not in ("images", "label"))  # fmt: skip
    for name in names:
        if name not in spec:
            spec[name] = Image() if name == "retrieved_image" else Value("string")
    spec.setdefault("source", Value("string"))
    columns: dict[str, list[Any]] = {name: [] for name in spec}
    for r in rows:
        for name in spec:
            if name == "image":
                columns[name].append(r["images"][0] if r["images"] else None)
            elif name == "images":
                columns[name].append(r["images"])
            else:
                value = r.get(name)
                is_text = isinstance(spec[name], Value) and name != "label"
                columns[name].append(None if value is None else (str(value) if is_text
                                                                 else value))  # fmt: skip
    return Dataset.from_dict(columns, features=Features(spec))


RowConverter = Callable[[Mapping[str, Any], Path | None], dict[str, Any]]


@dataclass(frozen=True)
class RecordFormat:
    """One VLM preference format: the fields its records must have (each with its accepted
    keys), how a record becomes a row (`to_row`, SkipRow for an unusable one) and the name its
    messages carry. Each reader module exposes `pairs` and `read` as `<format>_pairs` and
    `read_<format>`, so the formats differ only in what is theirs."""

    name: str
    fields: Mapping[str, Sequence[str]]
    to_row: RowConverter

    def pairs(self, records: Iterable[Mapping[str, Any]], *, image_root: str | Path | None,
              where: str | None = None, max_samples: int | None = None,
              strict: bool = False) -> tuple[Dataset, ValidationReport]:  # fmt: skip
        """What every reader does: check the keys, convert each record (skips counted by
        reason in the report, raised under `strict`), and build the dataset."""
        where = self.name if where is None else where
        records = require_keys(records, self.fields, where)
        root = None if image_root is None else Path(image_root)
        report = ValidationReport(name=where)
        rows = collect(records, lambda r: self.to_row(r, root), report,
                       max_samples=max_samples, strict=strict)  # fmt: skip
        return to_dataset(rows, report, where), report

    def read(self, path: str | Path, *, image_root: str | Path | None = None,
             max_samples: int | None = None,
             strict: bool = False) -> tuple[Dataset, ValidationReport]:  # fmt: skip
        """A JSON / JSONL file of this format; image paths are relative to `image_root`
        (default: the file's folder) and must stay inside it."""
        path = Path(path)
        return self.pairs(read_records(path), image_root=image_root or path.parent,
                          where=str(path), max_samples=max_samples, strict=strict)  # fmt: skip
