"""PreferencePair schema: features, counted validation, strict errors, save/load."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from datasets import Dataset, Image, IterableDataset, Value
from PIL import Image as PILImage

from mmalign.data.schema import (
    IMAGE_PAIR_FEATURES,
    TEXT_PAIR_FEATURES,
    load_pairs,
    pair_features,
    validate_rows,
    write_pairs,
)


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def good(i: int) -> dict:
    return {
        "prompt": f"p{i}",
        "chosen": PILImage.new("RGB", (8, 8), (i, 0, 0)),
        "rejected": png((0, i, 0)),
    }


def test_features() -> None:
    assert list(IMAGE_PAIR_FEATURES) == ["prompt", "chosen", "rejected", "label", "source"]
    assert isinstance(IMAGE_PAIR_FEATURES["chosen"], Image)
    assert TEXT_PAIR_FEATURES["chosen"] == Value("string")
    assert IMAGE_PAIR_FEATURES["label"] == Value("float32")
    full = pair_features("text", extra=("image", "retrieved_image", "blind", "user_id", "heatmaps"))
    assert list(full)[-1] == "source"  # canonical order, not the order asked
    with pytest.raises(ValueError, match="did you mean 'user_id'"):
        pair_features("image", extra=("userid",))
    with pytest.raises(ValueError, match="kind"):
        pair_features("video")  # type: ignore[arg-type]


def test_validate_counts_every_skip_by_reason() -> None:
    rows = [
        good(1),
        {**good(2), "prompt": None},  # 1
        {**good(3), "chosen": b"not an image"},  # 2
        {**good(4), "label": 1.5},  # 3
        {**good(5), "label": float("nan")},  # 4
        {"prompt": "p6", "chosen": png((1, 2, 3))},  # 5: no rejected at all
        {**good(7), "rejected": torch.rand(3, 8, 8), "label": 0.25},  # tensor [3,H,W]: fine
        {**good(8), "label": -0.1},  # 7
        {**good(9), "user_id": 42},
    ]
    ds, report = validate_rows(rows, "image")
    assert (report.total, report.kept) == (9, 3)
    assert report.skipped == {
        "missing_prompt": 1,
        "undecodable_chosen": 1,
        "bad_label": 3,
        "missing_rejected": 1,
    }
    assert report.examples["bad_label"] == [3, 4, 7]
    assert len(ds) == 3 and ds["prompt"] == ["p1", "p7", "p9"]
    assert ds["label"] == [None, 0.25, None]
    assert ds["user_id"] == [None, None, "42"]  # extra column appears because a row had it
    assert isinstance(ds[1]["rejected"], PILImage.Image) and ds[1]["rejected"].size == (8, 8)
    text = str(report)
    assert "read 9, kept 3, skipped 6" in text and "bad_label: 3 (rows 3, 4, 7)" in text


def test_strict_names_row_and_reason() -> None:
    rows = [good(1), good(2), {**good(3), "label": 2.0}]
    with pytest.raises(ValueError, match=r"row 2: bad_label"):
        validate_rows(rows, "image", strict=True)


def test_unknown_field_is_an_error_not_a_lost_column() -> None:
    with pytest.raises(ValueError, match="did you mean 'label'"):
        validate_rows([{**good(1), "lable": 1.0}], "image")


def test_text_pairs_and_heatmaps() -> None:
    heat = np.full((2, 4, 4), 0.5).tolist()
    rows = [
        {
            "prompt": "q",
            "chosen": "yes",
            "rejected": "no",
            "blind": "maybe",
            "image": png((1, 1, 1)),
        },
        {"prompt": "q", "chosen": "yes", "rejected": 3},
        {"prompt": "q", "chosen": "  ", "rejected": "no"},
        {
            "prompt": "q",
            "chosen": "a",
            "rejected": "b",
            "heatmaps": {"chosen": heat, "rejected": None},
        },
        {"prompt": "q", "chosen": "a", "rejected": "b", "heatmaps": {"chosen": [[[2.0]]]}},
        {"prompt": "q", "chosen": "a", "rejected": "b", "image": b"garbage"},
    ]
    ds, report = validate_rows(rows, "text")
    assert report.skipped == {
        "bad_type_rejected": 1,
        "missing_chosen": 1,
        "bad_heatmaps": 1,
        "undecodable_image": 1,
    }
    assert ds["blind"] == ["maybe", None]
    assert np.asarray(ds[1]["heatmaps"]["chosen"]).shape == (2, 4, 4)
    assert ds[0]["image"].size == (8, 8)


def test_validate_dataset_checks_bytes_without_decoding() -> None:
    ds = Dataset.from_dict(
        {
            "prompt": ["a", "b", "c"],
            "chosen": [png((1, 0, 0)), b"broken", png((3, 0, 0))],
            "rejected": [png((0, 1, 0))] * 3,
            "label": [1.0, 1.0, 0.5],
            "source": ["s"] * 3,
        },
        features=pair_features("image"),
    )
    out, report = validate_rows(ds, "image")
    assert (report.total, report.kept, report.skipped) == (3, 2, {"undecodable_chosen": 1})
    assert out["prompt"] == ["a", "c"] and isinstance(out[0]["chosen"], PILImage.Image)
    with pytest.raises(ValueError, match="row 1: undecodable_chosen"):
        validate_rows(ds, "image", strict=True)
    with pytest.raises(ValueError, match=r"holds image pairs \(diffusion\).*text \(VLM\) pairs"):
        validate_rows(ds, "text")


def test_iterable_dataset_report_fills_as_iterated() -> None:
    rows = [{"prompt": "a", "chosen": "x", "rejected": "y", "label": v} for v in (1.0, 7.0, 0.0)]
    stream = IterableDataset.from_generator(lambda: iter(rows), features=TEXT_PAIR_FEATURES)
    out, report = validate_rows(stream, "text")
    assert report.total == 0  # lazy: nothing read yet
    assert [r["label"] for r in out] == [1.0, 0.0]
    assert report.skipped == {"bad_label": 1} and report.examples == {"bad_label": [1]}


def test_write_and_load_pairs(tmp_path) -> None:
    report = write_pairs(
        [good(1), {**good(2), "label": 0.5, "source": "toy"}], tmp_path / "d", "image"
    )
    assert report.kept == 2
    ds = load_pairs(tmp_path / "d")
    assert ds["label"] == [None, 0.5] and ds["source"] == [None, "toy"]
    assert ds[0]["chosen"].getpixel((0, 0)) == (1, 0, 0)
    with pytest.raises(ValueError, match="row 1: missing_prompt"):
        write_pairs([good(1), {**good(2), "prompt": None}], tmp_path / "bad", "image")
    Dataset.from_dict({"x": [1]}).save_to_disk(str(tmp_path / "other"))
    with pytest.raises(ValueError, match="not a PreferencePair"):
        load_pairs(tmp_path / "other")
