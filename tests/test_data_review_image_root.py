"""A VLM PreferencePair dataset from parquet shards or the hub ("pairs" format) reads image
paths inside the data folder only, as the JSON readers do: `../../etc/passwd` or an absolute
path elsewhere is counted as `image_outside_root` and never read; a path inside is read into
the row's bytes, so decoding never depends on the working directory."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from mmalign.data.schema import validate_rows
from mmalign.vlm.data import open_vlm_pairs


def _png(color) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (4, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _text_pairs(images, feature) -> Dataset:
    n = len(images)
    return Dataset.from_dict(
        {"prompt": [f"q{i}" for i in range(n)], "chosen": ["a"] * n, "rejected": ["b"] * n,
         "image": images},
        features=Features({"prompt": Value("string"), "chosen": Value("string"),
                           "rejected": Value("string"), "image": feature}),
    )  # fmt: skip


def test_parquet_pairs_refuse_image_paths_outside_the_folder(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    (root / "img" / "in.png").write_bytes(_png((255, 0, 0)))
    (tmp_path / "outside.png").write_bytes(_png((0, 0, 255)))
    paths = ["img/in.png", str(tmp_path / "outside.png"), "../../../../../../etc/passwd",
             "../outside.png"]  # fmt: skip
    images = [{"bytes": None, "path": p} for p in paths] + [{"bytes": _png((0, 255, 0)),
                                                              "path": None}]  # fmt: skip
    # the table as stored (paths, not bytes): `to_parquet` would embed the files itself
    pq.write_table(_text_pairs(images, Image()).data.table, root / "train.parquet")
    monkeypatch.chdir(tmp_path)  # "img/in.png" is not there: it must resolve in the folder
    ds, report = open_vlm_pairs(root, "train")
    assert report.skipped == {"image_outside_root": 3}
    assert (report.total, report.kept) == (5, 2)
    assert ds["prompt"] == ["q0", "q4"]
    assert [im.getpixel((0, 0)) for im in ds["image"]] == [(255, 0, 0), (0, 255, 0)]
    raw = ds.cast_column("image", Image(decode=False))["image"]
    assert all(r["bytes"] for r in raw)  # read into the rows, not left as paths


def test_path_strings_resolve_in_the_root_and_become_images(tmp_path):
    (tmp_path / "in.png").write_bytes(_png((255, 0, 0)))
    rows = _text_pairs(["in.png", "/etc/passwd", "missing.png"], Value("string"))
    ds, report = validate_rows(rows, "text", image_root=tmp_path)
    assert report.skipped == {"image_outside_root": 1, "missing_image_file": 1}
    assert isinstance(ds.features["image"], Image)
    assert ds[0]["image"].getpixel((0, 0)) == (255, 0, 0)
    _, no_root = validate_rows(rows, "text", image_root=None)
    assert no_root.skipped == {"image_path_without_root": 3}


def test_an_unusable_image_path_is_counted_not_a_crash(tmp_path):
    (tmp_path / "ok.png").write_bytes(_png((255, 0, 0)))
    records = [{"prompt": "<image>q", "chosen": "a", "rejected": "b", "images": [p]}
               for p in ("ok.png", "a\x00b.png", "x" * 5000 + ".png")]  # fmt: skip
    (tmp_path / "pairs.json").write_text(json.dumps(records))
    ds, report = open_vlm_pairs(tmp_path / "pairs.json", format="trl")
    assert len(ds) == 1 and report.skipped == {"bad_image_path": 2}
