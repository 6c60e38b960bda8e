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

The token labels are per word of the prompt, the words as the release's own matcher splits them
(`match_misalignment_label_to_token` in google-research/richhf_18k): the caption split on space
and `,.?!":;`, empty pieces dropped (`prompt_words`). A record whose label count differs from its
caption's word count is skipped as `token_label_mismatch`: in the release the two always agree
(the matcher asserts it), so a mismatch means the joined caption is not the prompt that was
annotated, and its alignment score and misalignment map would be labels for another prompt.

All scores are "the higher the better" (the release's README). The prompt and the image come
from Pick-a-Pic v1: `images=` is a folder holding `<stem>.png` (or .jpg/.jpeg/.webp) and the
caption as `<stem>.txt` for each record's file name stem. The image is resized (bilinear) to
the heatmaps' 512 x 512 grid when its aspect ratio matches, as RAHF trains at 512 x 512; any
other size is skipped as `heatmap_size_mismatch`.

Every record either becomes a row or is counted in the `ValidationReport` by reason (a record
that is not a tf.train.Example `bad_example`, a missing feature, a score outside [0, 1], a heatmap
that does not fully decode `bad_heatmap`, heatmaps of two sizes, an image or caption not found,
an image that does not open `bad_image`, a caption that is not UTF-8 `bad_prompt`, labels that do
not fit the caption `token_label_mismatch`); with `strict=True` the first bad record raises an
`InputError` naming the file, the record's index and the reason (which names the key). A corrupt
TFRecord *frame* (bad checksum, truncated file) still raises: the records after it cannot be
found.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from tqdm.auto import tqdm

from ..config import InputError
from .dense import DENSE_SCORES, DenseRow, score_problem
from .schema import HEATMAP_CHANNELS, ValidationReport, to_rgb
from .tfrecord import TFRecordError, Value, parse_example, read_records

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
WORD_DELIMITERS = re.compile(r'[,.?!":; ]')  # the release's matcher's delimiters, exactly


@dataclass
class RichHFRecord:
    """One parsed record: labels only (the image and prompt are joined by `RichHFRows`)."""

    index: int
    filename: str
    scores: dict[str, float]
    maps: dict[str, bytes]  # PNG bytes by heatmap channel
    map_size: tuple[int, int]  # (width, height), both maps
    token_labels: list[int]


def prompt_words(prompt: str) -> list[str]:
    """The words RichHF's `prompt_misalignment_label` labels one by one: split on space and
    `,.?!":;` with empty pieces dropped, as the release's own matcher does (so "RichHF-18K: a
    dataset." is 3 words). Tabs and newlines are not delimiters there, so not here either."""
    return [w for w in WORD_DELIMITERS.split(prompt) if w]


def _one(features: dict[str, Value], key: str, kind: type) -> Any:
    values = features.get(key)
    if not values:
        raise KeyError(key)
    value = values[0]
    if not isinstance(value, kind):
        raise TypeError(key)
    return value


def _text(features: dict[str, Value], key: str) -> str:
    """A bytes feature as UTF-8 text; bytes that are not UTF-8 are `bad_<key>` (a `TypeError`
    naming the key, as `_one`'s), so the skip reason says which feature is broken."""
    try:
        return _one(features, key, bytes).decode("utf-8")
    except UnicodeDecodeError as err:
        raise TypeError(key) from err


def parse_record(features: dict[str, Value], index: int) -> RichHFRecord | str:
    """The record, or the reason it is unusable (`missing_<feature>`, `bad_<feature>`,
    `<score>_out_of_range`, `heatmap_sizes_differ`, `bad_heatmap`)."""
    try:
        filename = _text(features, "filename")
        raw_scores = {name: _one(features, key, float) for key, name in SCORE_FEATURES.items()}
        maps = {c: _one(features, key, bytes) for c, key in MAP_FEATURES.items()}
        labels = _text(features, "prompt_misalignment_label")
    except KeyError as err:
        return f"missing_{err.args[0]}"
    except TypeError as err:
        return f"bad_{err.args[0]}"
    reason = score_problem(raw_scores)
    if reason is not None:
        return reason
    sizes = set()
    for data in maps.values():
        try:
            with PILImage.open(io.BytesIO(data)) as im:
                # decode it all: a truncated PNG is skipped here, not left to fail in training
                # with an `OSError` naming no record (the decoded pixels are not kept: memory)
                im.load()
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
        from ..suggest import closest

        present = sorted(q.stem for q in p.glob("*.tfrecord"))
        guess = closest(split, present)
        hint = f"; did you mean {guess!r}?" if guess is not None else ""
        held = f"it holds {', '.join(present)}" if present else "it holds no .tfrecord file"
        raise InputError(
            f"RichHF-18K: no {f.name} in {p} ({held}; the release's splits are "
            f"{', '.join(SPLITS)}){hint}"
        )
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
        try:
            parsed: RichHFRecord | str = parse_record(parse_example(data), index)
        except TFRecordError as err:
            # the framing (and its checksum) is sound but the bytes are not a tf.train.Example
            if strict:
                raise InputError(f"RichHF-18K {file}: row {index}: bad_example ({err})") from err
            parsed = "bad_example"
        if isinstance(parsed, str):
            if strict:
                raise InputError(
                    f"RichHF-18K {file}: row {index}: {parsed} (rerun without strict to skip "
                    "and count such records)"
                )
            report.skip(index, parsed)
            continue
        report.keep(index)  # a later message about this record names its row in the file
        out.append(parsed)
    return out, report


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _join_problem(
    record: RichHFRecord, image: Path | None, caption: Path
) -> tuple[str | None, str]:
    """(why `record` cannot join this image and caption, or None; the caption). Checks the
    image header only (its size against the maps'), the caption's encoding, and that the
    caption has one word per token label."""
    if image is None:
        return "image_not_found", ""
    if not caption.is_file():
        return "prompt_not_found", ""
    try:
        with PILImage.open(image) as im:
            w, h = im.size
    except Exception:  # PIL raises many types for a file that is not an image
        return "bad_image", ""
    mw, mh = record.map_size
    if w * mh != h * mw:  # another aspect ratio: the maps cannot be its pixels
        return "heatmap_size_mismatch", ""
    try:
        prompt = caption.read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError:
        return "bad_prompt", ""
    if len(prompt_words(prompt)) != len(record.token_labels):
        return "token_label_mismatch", ""
    return None, prompt


class RichHFRows:
    """RichHF-18K as dense rows: each label record joined with its Pick-a-Pic image and
    caption from `images` (`<stem>.png` + `<stem>.txt`). Joining is checked when opened
    (image header, caption and its word count against the token labels, not pixels: decoding
    15,810 images would slow every open); pixels decode on access, and an image that fails
    then raises an `InputError` naming the record and the file."""

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
            reason, prompt = _join_problem(record, image, caption)
            if reason is not None:
                if strict:
                    raise InputError(
                        f"{kept.name}: record {record.index} ({record.filename}): {reason}"
                    )
                kept.skip(record.index, reason)
                continue
            kept.keep(record.index)
            self.items.append((record, image, prompt))  # type: ignore[arg-type]
        self.report = kept

    def __len__(self) -> int:
        return len(self.items)

    @property
    def column_names(self) -> list[str]:
        return ["prompt", "image", "heatmaps", *DENSE_SCORES, "token_labels", "filename"]

    def __getitem__(self, index: int) -> DenseRow:
        record, path, prompt = self.items[index]
        try:
            with PILImage.open(path) as im:
                image = to_rgb(im)  # decodes all pixels: a truncated file fails here
        except Exception as err:  # PIL raises many types for a damaged file
            raise InputError(
                f"RichHF-18K: record {record.index} ({record.filename}): image {path} does "
                f"not decode ({type(err).__name__}: {err}); remove or replace it"
            ) from err
        if image.size != record.map_size:
            image = image.resize(record.map_size, PILImage.Resampling.BILINEAR)
        heatmaps = np.stack([_decode_map(record.maps[c]) for c in HEATMAP_CHANNELS])
        return DenseRow(
            prompt=prompt,
            image=image,
            heatmaps=heatmaps,
            scores={k: record.scores[k] for k in DENSE_SCORES},
            name=record.filename,
            token_labels=list(record.token_labels),
        )
