"""Image files of the pairs: import from datasets, safe lookup, size and decode checks.

Images live as files in one folder (the image root); the database stores only their
file names. `resolve` refuses any reference that leaves the root (absolute paths, `..`,
symlinks pointing out), so a crafted pair row cannot make the server read other files.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from .store import Pair, pair_id_for

MAX_BYTES = 20 * 1024 * 1024  # larger files are refused before decoding
MAX_PIXELS = 4096 * 4096  # a decompression bomb stops at the header
_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}


class ImageError(ValueError):
    """An image that cannot be shown: missing, outside the image folder, too large, corrupt."""


def resolve(root: str | Path, ref: str) -> Path:
    """The file `ref` names under `root`; ImageError when it would leave the folder."""
    if not isinstance(ref, str) or not ref or "\x00" in ref:
        raise ImageError(f"bad image reference {ref!r}")
    base = Path(root).resolve()
    if Path(ref).is_absolute():
        raise ImageError(f"image reference {ref!r} is absolute; it must be inside {base}")
    path = (base / ref).resolve()  # follows symlinks, so a link out of the folder is caught
    if not path.is_relative_to(base):
        raise ImageError(f"image reference {ref!r} leaves the image folder {base}")
    return path


def check_bytes(data: bytes, what: str) -> Image.Image:
    """Decode image bytes with limits; ImageError names `what` and the reason."""
    if len(data) > MAX_BYTES:
        size = len(data) / 2**20
        raise ImageError(f"{what}: {size:.1f} MiB is over the {MAX_BYTES >> 20} MiB limit")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ImageError(f"{what}: {width}x{height} pixels is over the limit ({MAX_PIXELS})")
        if image.format not in _FORMATS:
            raise ImageError(f"{what}: format {image.format} (expected PNG, JPEG or WEBP)")
        image.load()
    except ImageError:
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ...
        raise ImageError(f"{what}: cannot decode the image ({err})") from err
    return image


def load_image(root: str | Path, ref: str) -> Image.Image:
    """A pair image for display, checked (ImageError with a clear reason otherwise)."""
    path = resolve(root, ref)
    if not path.is_file():
        raise ImageError(f"image {ref!r} not found in {Path(root).resolve()}")
    if path.stat().st_size > MAX_BYTES:
        raise ImageError(f"image {ref!r}: over the {MAX_BYTES >> 20} MiB limit")
    from mmalign.data.schema import to_rgb

    # as training reads it (transparency onto white): annotators vote on the pixels that train
    return to_rgb(check_bytes(path.read_bytes(), f"image {ref!r}"))


def save_image(root: str | Path, data: bytes, what: str) -> str:
    """Check and store encoded bytes under a content name; returns the file name."""
    image = check_bytes(data, what)
    name = hashlib.sha256(data).hexdigest()[:32] + _FORMATS[str(image.format)]
    path = Path(root) / name
    if not path.exists():
        tmp = path.with_name(name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return name


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _raw_bytes(value: Any) -> bytes:
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return bytes(value["bytes"])
        if value.get("path"):
            return Path(value["path"]).read_bytes()
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, Image.Image):
        return encode_png(value)
    raise ImageError(f"unsupported image value of type {type(value).__name__}")


SAVED_FILES = ("state.json", "dataset_info.json")


def _rows(source: str, split: str) -> tuple[Any, str]:
    """Rows with `prompt`, `chosen`, `rejected` images (undecoded) and a source tag. A folder
    holding the dataset in `pairs/` (what `mmalign toy data` writes) reads that."""
    from datasets import Image as ImageFeature

    def saved(folder: Path) -> bool:  # a `save_to_disk` dataset
        return folder.is_dir() and any((folder / f).exists() for f in SAVED_FILES)

    path = Path(source).expanduser()
    if not saved(path) and saved(path / "pairs"):  # `mmalign toy data ... --out DIR` writes
        path = path / "pairs"  # DIR/pairs (and its card beside it)
    if saved(path):
        from mmalign.data.schema import load_pairs

        ds = load_pairs(path)
        tag = f"pairs:{path.name}"
    else:  # Pick-a-Pic: parquet shards, a saved Pick-a-Pic folder, or a hub id
        from mmalign.data.pickapic import load_pickapic

        ds, report = load_pickapic(source, split, tie_policy="half")
        print(report)  # every skipped row, counted by reason
        if report.skipped.get("undecodable_image"):
            rows = report.examples["undecodable_image"]
            raise ImageError(f"{source}: undecodable images in Pick-a-Pic rows {rows} ({report})")
        tag = f"pickapic:{split}"
    for name in ("chosen", "rejected"):
        if not isinstance(ds.features.get(name), ImageFeature):
            raise ValueError(f"{source}: column {name!r} is not an image column (text pairs?)")
        ds = ds.cast_column(name, ImageFeature(decode=False))
    return ds, tag


def import_pairs(
    source: str | Path, root: str | Path, *, split: str = "train", limit: int | None = None
) -> Iterator[Pair]:
    """Pairs from a PreferencePair dataset folder or a Pick-a-Pic dataset (folder or hub id).

    Images are checked (size, pixels, decodable) and copied into `root`; a bad image
    stops the import with an ImageError naming its row and column. Which image was
    "chosen" in the source is not kept: annotators judge the pair afresh.
    """
    for pair, _label in import_labeled_pairs(source, root, split=split, limit=limit):
        yield pair


def import_labeled_pairs(
    source: str | Path, root: str | Path, *, split: str = "train", limit: int | None = None
) -> Iterator[tuple[Pair, float | None]]:
    """`import_pairs` with each row's `label` (P(image_0, the source's chosen, is preferred):
    None for 1, 0 when the rejected image won, 0.5 for a tie), for gold answers."""
    Path(root).mkdir(parents=True, exist_ok=True)
    ds, tag = _rows(str(source), split)
    n = len(ds) if limit is None else min(limit, len(ds))
    for i in range(n):
        row = ds[i]
        data = [_raw_bytes(row[name]) for name in ("chosen", "rejected")]
        names = [
            save_image(root, d, f"row {i} column {name!r}")
            for d, name in zip(data, ("chosen", "rejected"), strict=True)
        ]
        label = row.get("label")
        pair = Pair(pair_id_for(row["prompt"], *data), row["prompt"], *names, tag)
        yield pair, None if label is None else float(label)
