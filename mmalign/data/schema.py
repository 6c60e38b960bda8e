"""The PreferencePair schema: one row = one prompt, a chosen and a rejected output.

Rows live in Hugging Face `datasets` (Arrow/Parquet with `Image` features) so they
stream, shard across processes and push to the Hub unchanged. Every reader in
`mmalign.data` produces these rows and every scorer consumes them.

Fields (`FIELDS` keeps the canonical column order):

- `prompt` (string, required): the text condition (diffusion) or instruction (VLM).
- `chosen`, `rejected` (required): `Image()` for image pairs (`kind="image"`),
  strings for VLM text responses (`kind="text"`).
- `label` (float32, optional): P(chosen is preferred) in [0, 1]; None means 1.
- `image` (VLM input image), `retrieved_image` (Re-Align rDPO visual negative),
  `blind` (BPO: the answer given without the image), `user_id` (PPD), `source`.
- `heatmaps` (dense rewards): `{"chosen": [K, H, W] | None, "rejected": [K, H, W] | None}`
  as nested float32 lists, channels `HEATMAP_CHANNELS`, values in [0, 1] with
  1 = flawed. Nested lists (not `Array3D`) because `Array3D` fixes H and W for the
  whole dataset while RichHF heatmaps follow each image's size; the consumer pools
  them to the latent grid, and `with_format("torch")` turns them into tensors.

`validate_rows` never drops a row silently: every skip is counted by reason in a
`ValidationReport`, or raised with its row index under `strict=True`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from datasets import Dataset, Features, Image, IterableDataset, List, Value
from PIL import Image as PILImage

from mmalign.suggest import did_you_mean

# the report lives in report.py; callers import both names from here too
from .report import SKIP_NOTES as SKIP_NOTES
from .report import ValidationReport

Kind = Literal["image", "text"]

HEATMAP_CHANNELS = ("misalignment", "artifact")  # RichHF / ImageDoctor order
_HEATMAP = List(List(List(Value("float32"))))  # [K, H, W], sizes free per row

REQUIRED = ("prompt", "chosen", "rejected")
OPTIONAL_FEATURES: dict[str, Any] = {
    "label": Value("float32"),
    "image": Image(),
    "retrieved_image": Image(),
    "blind": Value("string"),
    "user_id": Value("string"),
    "heatmaps": {"chosen": _HEATMAP, "rejected": _HEATMAP},
    "source": Value("string"),
}
FIELDS = (*REQUIRED, *OPTIONAL_FEATURES)
IMAGE_FIELDS = ("image", "retrieved_image")  # optional image-valued fields
IMAGE_PLACEHOLDER = "<image>"  # where each image of a VLM prompt goes (vlm_rows, vlm.chat_format)
_ALWAYS = ("label", "source")  # present (maybe null) in every pair dataset


def pair_features(kind: Kind, extra: Iterable[str] = ()) -> Features:
    """Features for `kind` pairs: prompt, chosen, rejected, label, source, plus `extra`.

    Optional fields other than label/source are opt-in so a diffusion dataset
    does not carry empty VLM columns (e.g. `extra=("user_id",)` for PPD).
    """
    if kind not in ("image", "text"):
        raise ValueError(f"kind must be 'image' or 'text', got {kind!r}")
    wanted = set(_ALWAYS) | set(extra)
    unknown = wanted - set(OPTIONAL_FEATURES)
    if unknown:
        name = sorted(unknown)[0]
        raise ValueError(f"unknown pair field {name!r}: {did_you_mean(name, OPTIONAL_FEATURES)}")
    response = Image() if kind == "image" else Value("string")
    spec: dict[str, Any] = {"prompt": Value("string"), "chosen": response, "rejected": response}
    spec.update({k: v for k, v in OPTIONAL_FEATURES.items() if k in wanted})
    return Features(spec)


IMAGE_PAIR_FEATURES = pair_features("image")
TEXT_PAIR_FEATURES = pair_features("text")


def to_pil_image(value: Any) -> PILImage.Image:
    """PIL image from PIL, encoded bytes, a path, `{"bytes", "path"}`, or an array/tensor.

    Arrays may be [3, H, W] or [H, W, 3]; floats are read as [0, 1], which is
    what the toy renderer and diffusion decoders produce.
    """
    if isinstance(value, PILImage.Image):
        return value
    if isinstance(value, Mapping):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, bytes | bytearray):
        image = PILImage.open(io.BytesIO(value))
        image.load()  # decode now: a truncated file must fail here, not in training
        return image
    if isinstance(value, str | Path):
        image = PILImage.open(value)
        image.load()
        return image
    if hasattr(value, "detach"):  # torch tensor, without importing torch here
        value = value.detach().cpu().float().numpy()
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # CHW -> HWC
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float64) * 255), 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return PILImage.fromarray(array)


def grey_unit(image: PILImage.Image) -> np.ndarray | None:
    """[H,W] float64 in [0, 1] for a 16-bit (`I;16*` from a 16-bit PNG or TIFF, `I` from older
    Pillow) or float (`F`) greyscale image, read at its own bit depth; None for other modes.
    `convert("RGB")` clips the first to 0-255 of 65535 (a white image) and float pixels in
    [0, 1] to black. An `I` image whose values all fit 0-255 is 8-bit already (as
    `convert("I")` of an `L` one makes it); values outside 0-65535, or `F` outside [0, 1],
    raise naming the mode."""
    if not (image.mode.startswith("I;16") or image.mode in ("I", "F")):
        return None
    grey = np.asarray(image, dtype=np.float64)
    low, high = (float(grey.min()), float(grey.max())) if grey.size else (0.0, 0.0)
    top = 1.0 if image.mode == "F" else 255.0 if image.mode == "I" and high <= 255 else 65535.0
    if low < 0 or high > top:
        read_as = "floats in [0, 1]" if top == 1 else "16-bit (0-65535)"
        raise ValueError(
            f"a mode-{image.mode} image is read as {read_as}, got values in "
            f"[{low:.3g}, {high:.3g}]: convert it to 8-bit RGB first"
        )
    return grey / top


def to_rgb(image: PILImage.Image) -> PILImage.Image:
    """`image` as 8-bit RGB at its own bit depth (`grey_unit` for 16-bit and float greyscale);
    an image with transparency (RGBA, LA, a palette or RGB with a transparent colour) is
    composited onto white, as transformers' image processors do (`convert("RGB")` shows the
    colour stored under transparent pixels); other modes go through `convert("RGB")` (palette
    and L expanded)."""
    grey = grey_unit(image)
    if grey is not None:
        image = PILImage.fromarray(np.rint(grey * 255.0).astype(np.uint8))  # mode L
    elif {"A", "a"} & set(image.getbands()) or image.info.get("transparency") is not None:
        white = PILImage.new("RGBA", image.size, (255, 255, 255, 255))
        return PILImage.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def decodable(value: Any) -> bool:
    """Whether `to_pil_image` decodes `value` (a truncated or corrupt file does not)."""
    try:
        to_pil_image(value)
    except Exception:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return False
    return True


def _label_ok(label: Any) -> bool:
    if label is None:
        return True
    try:
        x = float(label)
    except (TypeError, ValueError):
        return False
    return not math.isnan(x) and 0.0 <= x <= 1.0


def _heatmaps_ok(heatmaps: Any) -> bool:
    if heatmaps is None:
        return True
    if not isinstance(heatmaps, Mapping) or set(heatmaps) - {"chosen", "rejected"}:
        return False
    for side in heatmaps.values():
        if side is None:
            continue
        try:
            h = np.asarray(side, dtype=np.float32)  # ragged nesting raises here
        except (TypeError, ValueError):
            return False
        if h.ndim != 3 or not np.all(np.isfinite(h)) or h.min() < 0 or h.max() > 1:
            return False
    return True


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _placeholder_mismatch(row: Mapping[str, Any]) -> bool:
    """Whether a VLM prompt's `<image>` placeholders (if any) differ in number from its
    images (`images`, else `image`): the collator could not place them (`make_row`'s rule)."""
    slots = row["prompt"].count(IMAGE_PLACEHOLDER)
    images = row.get("images") or ([row["image"]] if row.get("image") is not None else [])
    return bool(slots) and slots != len(images)


def check_row(row: Mapping[str, Any], kind: Kind) -> str | None:
    """The reason a row is unusable, or None when it is a valid PreferencePair."""
    for name in REQUIRED:
        if _missing(row.get(name)):
            return f"missing_{name}"
    if not isinstance(row["prompt"], str):
        return "bad_type_prompt"
    for name in ("chosen", "rejected"):
        if kind == "text" and not isinstance(row[name], str):
            return f"bad_type_{name}"
        if kind == "image" and not decodable(row[name]):
            return f"undecodable_{name}"
    for name in IMAGE_FIELDS:
        if row.get(name) is not None and not decodable(row[name]):
            return f"undecodable_{name}"
    if not _label_ok(row.get("label")):
        return "bad_label"
    if row.get("blind") is not None and not isinstance(row["blind"], str):
        return "bad_type_blind"
    if kind == "text" and _placeholder_mismatch(row):
        return "image_placeholder_mismatch"
    if not _heatmaps_ok(row.get("heatmaps")):
        return "bad_heatmaps"
    return None


def validate_rows(
    rows: Dataset | IterableDataset | Iterable[Mapping[str, Any]],
    kind: Kind,
    strict: bool = False,
) -> tuple[Dataset | IterableDataset, ValidationReport]:
    """Keep the valid PreferencePair rows; count every skipped row by reason.

    A `Dataset` is filtered in place of its columns (images are checked from their
    encoded bytes, without decoding the whole dataset into memory first). An
    `IterableDataset` is filtered lazily, so its report fills in as it is iterated.
    Any other iterable of dicts (PIL images, bytes, paths or [3,H,W] arrays) is
    checked, normalised and turned into a `Dataset` with `pair_features`.
    `strict=True` raises `ValueError("row <i>: <reason>")` at the first bad row.
    """
    report = ValidationReport()
    if isinstance(rows, Dataset | IterableDataset):
        return _validate_dataset(rows, kind, strict, report), report

    kept: list[dict[str, Any]] = []
    extra: set[str] = set()
    for index, row in enumerate(rows):
        unknown = set(row) - set(FIELDS)
        if unknown:  # a typo would otherwise lose a whole column, not one row
            name = sorted(unknown)[0]
            raise ValueError(f"row {index}: unknown field {name!r}: {did_you_mean(name, FIELDS)}")
        reason = check_row(row, kind)
        if reason is not None:
            report.skip(index, reason, strict=strict)
            continue
        report.keep(index)
        kept.append(_normalise(row, kind))
        extra.update(k for k, v in row.items() if v is not None)
    features = pair_features(kind, extra=extra & set(OPTIONAL_FEATURES))
    columns = {name: [row.get(name) for row in kept] for name in features}
    return Dataset.from_dict(columns, features=features), report


def _normalise(row: Mapping[str, Any], kind: Kind) -> dict[str, Any]:
    """Arrays/tensors become PIL images, ids become strings, labels floats."""
    out = dict(row)
    images = (*IMAGE_FIELDS, "chosen", "rejected") if kind == "image" else IMAGE_FIELDS
    for name in images:
        if out.get(name) is not None and not isinstance(out[name], bytes | str | Mapping):
            out[name] = to_pil_image(out[name])
    if out.get("user_id") is not None:
        out["user_id"] = str(out["user_id"])
    if out.get("label") is not None:
        out["label"] = float(out["label"])
    return out


def _validate_dataset(
    ds: Dataset | IterableDataset, kind: Kind, strict: bool, report: ValidationReport
) -> Dataset | IterableDataset:
    features = ds.features
    if features is not None:
        missing = [name for name in REQUIRED if name not in features]
        if missing:  # a whole column absent is a schema error, not bad rows
            raise ValueError(f"dataset has no column(s) {missing}; columns: {list(features)}")
        expected = Image if kind == "image" else Value
        if not isinstance(features["chosen"], expected):
            held = "text (VLM) pairs" if kind == "image" else "image pairs (diffusion)"
            asked = "image pairs (diffusion)" if kind == "image" else "text (VLM) pairs"
            raise ValueError(f"the data holds {held} ('chosen' is {features['chosen']}), "
                             f"but {asked} were asked for")  # fmt: skip
        # Check images from their bytes; decoding every image up front would both
        # cost memory and crash on the first corrupt one instead of counting it.
        raw = {k: Image(decode=False) for k, f in features.items() if isinstance(f, Image)}
        for name in raw:
            ds = ds.cast_column(name, raw[name])

    def keep(batch: dict[str, list[Any]], indices: list[int]) -> list[bool]:
        out = []
        for j, index in enumerate(indices):
            reason = check_row({k: v[j] for k, v in batch.items()}, kind)
            if reason is None:
                report.keep(index)
            else:
                report.skip(index, reason, strict=strict)
            out.append(reason is None)
        return out

    kwargs = {"load_from_cache_file": False} if isinstance(ds, Dataset) else {}
    ds = ds.filter(keep, batched=True, with_indices=True, **kwargs)  # cache off: always count
    if features is not None:
        for name, feature in features.items():
            if isinstance(feature, Image):
                ds = ds.cast_column(name, feature)
    return ds


def write_pairs(rows: Dataset | Iterable[Mapping[str, Any]], out_dir: str | Path, kind: Kind, *,
                strict: bool = True) -> ValidationReport:  # fmt: skip
    """Validate and save pairs with `save_to_disk`. Strict by default: bad rows are
    a bug in whoever produced them, so writing should fail loudly."""
    ds, report = validate_rows(rows, kind, strict=strict)
    assert isinstance(ds, Dataset)
    ds.save_to_disk(str(out_dir))
    return report


def load_pairs(path: str | Path) -> Dataset:
    """Load pairs saved by `write_pairs` (or any `save_to_disk` PreferencePair dataset); one
    saved from 0 rows is the empty Dataset of its columns (`saved.load_saved`)."""
    from .saved import load_saved

    ds = load_saved(path)
    if not isinstance(ds, Dataset):
        raise ValueError(f"{path} holds a DatasetDict {list(ds)}; load one split folder")
    missing = [name for name in REQUIRED if name not in ds.column_names]
    if missing:
        raise ValueError(f"{path} is not a PreferencePair dataset: no column(s) {missing}")
    return ds
