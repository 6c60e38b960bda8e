"""RichHF-18K (Liang et al., "Rich Human Feedback for Text-to-Image Generation", CVPR 2024)
read from its released TFRecord files, without TensorFlow.

The release (github.com/google-research-datasets/richhf-18k) is `train.tfrecord` (15,810),
`dev.tfrecord` (995) and `test.tfrecord` (955): one `tf.train.Example` per image with

| feature | type | mmalign |
|---|---|---|
| `filename` | bytes | the Pick-a-Pic v1 image file name (images are not in the release) |
| `aesthetics_score` | float | `aesthetics` |
| `artifact_score` | float | `plausibility` (higher = fewer artifacts) |
| `misalignment_score` | float | `alignment` (higher = better aligned) |
| `overall_score` | float | `overall` |
| `artifact_map` | bytes: PNG, 1 channel, 512 x 512, 0..255 | heatmap channel `artifact` / 255 |
| `misalignment_map` | bytes: PNG, same | heatmap channel `misalignment` / 255 |
| `prompt_misalignment_label` | bytes: "1 0 1 ..." | `token_labels` (0 = misaligned token) |

All scores are "the higher the better" (the release's README). The prompt and the image come
from Pick-a-Pic v1: `images=` is a folder holding `<stem>.png` (or .jpg/.jpeg/.webp) and the
caption as `<stem>.txt` for each record's file name stem. The image is resized (bilinear) to
the heatmaps' 512 x 512 grid when its aspect ratio matches, as RAHF trains at 512 x 512; any
other size is skipped as `heatmap_size_mismatch`.

Every record either becomes a row or is counted in the `ValidationReport` by reason (a missing
feature, a score outside [0, 1], heatmaps of two sizes, an image or caption not found); with
`strict=True` the first bad record raises naming its index, file name and key.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from tqdm.auto import tqdm

from ..config import InputError
from .dense import DENSE_SCORES, DenseRow, score_problem
from .schema import HEATMAP_CHANNELS, ValidationReport
from .tfrecord import Value, parse_example, read_records

SPLITS = {"train": 15810, "dev": 995, "test": 955}
SCORE_FEATURES = {  # RichHF feature -> mmalign score
    "misalignment_score": "alignment",
    "aesthetics_score": "aesthetics",
    "artifact_score": "plausibility",
    "overall_score": "overall",
}
MAP_FEATURES = {"misalignment": "misalignment_map", "artifact": "artifact_map"}
FEATURES = ("filename", *SCORE_FEATURES, *MAP_FEATURES.values(), "prompt_misalignment_label")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class RichHFRecord:
    """One parsed record: labels only (the image and prompt are joined by `RichHFRows`)."""

    index: int
    filename: str
    scores: dict[str, float]
    maps: dict[str, bytes]  # PNG bytes by heatmap channel
    map_size: tuple[int, int]  # (width, height), both maps
    token_labels: list[int]


def _one(features: dict[str, Value], key: str, kind: type) -> Any:
    values = features.get(key)
    if not values:
        raise KeyError(key)
    value = values[0]
    if not isinstance(value, kind):
        raise TypeError(key)
    return value


def parse_record(features: dict[str, Value], index: int) -> RichHFRecord | str:
    """The record, or the reason it is unusable (`missing_<feature>`, `bad_<feature>`,
    `score_out_of_range`, `heatmap_sizes_differ`, `bad_heatmap`)."""
    try:
        filename = _one(features, "filename", bytes).decode("utf-8")
        raw_scores = {name: _one(features, key, float) for key, name in SCORE_FEATURES.items()}
        maps = {c: _one(features, key, bytes) for c, key in MAP_FEATURES.items()}
        labels = _one(features, "prompt_misalignment_label", bytes).decode("utf-8")
    except KeyError as err:
        return f"missing_{err.args[0]}"
    except (TypeError, UnicodeDecodeError) as err:
        return f"bad_{err.args[0] if isinstance(err, TypeError) else 'text'}"
    reason = score_problem(raw_scores)
    if reason is not None:
        return reason
    sizes = set()
    for data in maps.values():
        try:
            with PILImage.open(io.BytesIO(data)) as im:
                sizes.add(im.size)
        except Exception:  # PIL raises many types for bytes that are not an image
            return "bad_heatmap"
    if len(sizes) != 1:
        return "heatmap_sizes_differ"
    try:
        token_labels = [int(t) for t in labels.split()]
    except ValueError:
        return "bad_prompt_misalignment_label"
    return RichHFRecord(index, filename, raw_scores, maps, sizes.pop(), token_labels)


def _decode_map(data: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def tfrecord_path(path: str | Path, split: str | None) -> Path:
    """`path` itself if it is a file, else `<path>/<split>.tfrecord`."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.is_dir():
        raise InputError(f"RichHF-18K: {p} does not exist (a .tfrecord file or its folder)")
    if split is None:
        raise InputError(f"RichHF-18K: {p} is a folder; name a split: {', '.join(SPLITS)}")
    f = p / f"{split}.tfrecord"
    if not f.is_file():
        raise InputError(f"RichHF-18K: no {f.name} in {p} (splits: {', '.join(SPLITS)})")
    return f


def read_records_richhf(
    path: str | Path,
    split: str | None = None,
    *,
    strict: bool = False,
    max_rows: int | None = None,
    verify: bool = True,
) -> tuple[list[RichHFRecord], ValidationReport]:
    """The label records of one split, and the report of those skipped (and why)."""
    file = tfrecord_path(path, split)
    report = ValidationReport(name=f"RichHF-18K {file.name}")
    out: list[RichHFRecord] = []
    records = read_records(file, verify=verify)
    for index, data in enumerate(tqdm(records, desc=file.name, unit="rec", leave=False)):
        if max_rows is not None and index >= max_rows:
            break
        parsed = parse_record(parse_example(data), index)
        if isinstance(parsed, str):
            report.skip(index, parsed, strict=strict)
            continue
        report.keep()
        out.append(parsed)
    return out, report


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


class RichHFRows:
    """RichHF-18K as dense rows: each label record joined with its Pick-a-Pic image and
    caption from `images` (`<stem>.png` + `<stem>.txt`). Joining is checked when opened
    (image header and caption, not pixels); pixels decode on access."""

    def __init__(
        self,
        path: str | Path,
        split: str | None = None,
        *,
        images: str | Path | None = None,
        strict: bool = False,
        max_rows: int | None = None,
        verify: bool = True,
    ) -> None:
        if images is None:
            raise InputError(
                "RichHF-18K holds no images or prompts: give a folder with <stem>.png and "
                "<stem>.txt (the Pick-a-Pic v1 image and caption) for each record's filename"
            )
        folder = Path(images).expanduser()
        if not folder.is_dir():
            raise InputError(f"RichHF-18K images: {folder} is not a folder")
        records, self.report = read_records_richhf(
            path, split, strict=strict, max_rows=max_rows, verify=verify
        )
        self.items: list[tuple[RichHFRecord, Path, str]] = []
        kept = ValidationReport(name=self.report.name)
        kept.skipped, kept.examples = dict(self.report.skipped), dict(self.report.examples)
        kept.total = self.report.total - self.report.kept
        for record in records:
            stem = Path(record.filename).stem
            image, caption = _find_image(folder, stem), folder / f"{stem}.txt"
            reason = None
            if image is None:
                reason = "image_not_found"
            elif not caption.is_file():
                reason = "prompt_not_found"
            else:
                with PILImage.open(image) as im:
                    w, h = im.size
                mw, mh = record.map_size
                if w * mh != h * mw:  # another aspect ratio: the maps cannot be its pixels
                    reason = "heatmap_size_mismatch"
            if reason is not None:
                if strict:
                    raise InputError(
                        f"{kept.name}: record {record.index} ({record.filename}): {reason}"
                    )
                kept.skip(record.index, reason)
                continue
            kept.keep()
            self.items.append((record, image, caption.read_text().strip()))  # type: ignore[arg-type]
        self.report = kept

    def __len__(self) -> int:
        return len(self.items)

    @property
    def column_names(self) -> list[str]:
        return ["prompt", "image", "heatmaps", *DENSE_SCORES, "filename"]

    def __getitem__(self, index: int) -> DenseRow:
        record, path, prompt = self.items[index]
        image = PILImage.open(path).convert("RGB")
        if image.size != record.map_size:
            image = image.resize(record.map_size, PILImage.Resampling.BILINEAR)
        heatmaps = np.stack([_decode_map(record.maps[c]) for c in HEATMAP_CHANNELS])
        return DenseRow(
            prompt=prompt,
            image=image,
            heatmaps=heatmaps,
            scores={k: record.scores[k] for k in DENSE_SCORES},
            name=record.filename,
        )
