"""Pick-a-Pic v2 writer/reader: exact columns, round trip, ties, filters, split errors."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from datasets import DatasetDict, load_dataset
from PIL import Image

from mmalign.data.pickapic import (
    PICKAPIC_COLUMNS,
    PICKAPIC_SCHEMA,
    load_pickapic,
    pickapic_prompts,
    write_pickapic,
)


def rows(n: int, *, label: float | None = None) -> list[dict]:
    """Pairs of flat-colour images, easy to tell apart after JPEG: chosen is bright."""
    out = []
    for i in range(n):
        chosen = Image.new("RGB", (16, 16), (200, 40 + 10 * i, 30))
        rejected = torch.full((3, 16, 16), 0.1)  # [3,H,W] float in [0, 1]
        out.append(
            {
                "prompt": f"prompt {i % 5}",
                "chosen": chosen,
                "rejected": rejected,
                "label": label,
                "user_id": 100 + i,
            }
        )
    return out


def load(tmp_path, split="train", **kw):
    return load_pickapic(tmp_path / "pp", split, cache_dir=tmp_path / "cache", **kw)


def brightness(image: Image.Image) -> float:
    return float(np.asarray(image.convert("RGB"), dtype=np.float32).mean())


def test_writer_exact_columns_types_and_shards(tmp_path) -> None:
    paths = write_pickapic(rows(7), tmp_path / "pp", "train", shard_size=4)
    assert [p.name for p in paths] == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    table = pq.read_table(paths[0])
    assert (
        tuple(table.column_names)
        == PICKAPIC_COLUMNS
        == (
            "caption",
            "jpg_0",
            "jpg_1",
            "label_0",
            "label_1",
            "has_label",
            "are_different",
            "best_image_uid",
            "image_0_uid",
            "image_1_uid",
            "model_0",
            "model_1",
            "user_id",
            "ranking_id",
            "created_at",
            "num_example_per_prompt",
        )
    )
    assert table.schema.equals(PICKAPIC_SCHEMA)
    t = table.to_pylist()
    assert t[0]["jpg_0"][:2] == b"\xff\xd8"  # JPEG
    assert t[0]["best_image_uid"] in (t[0]["image_0_uid"], t[0]["image_1_uid"])
    assert t[0]["num_example_per_prompt"] == 2  # prompts 0 and 5 share "prompt 0"
    # uids come from content: writing again gives the same ones
    again = write_pickapic(rows(7), tmp_path / "pp", "train", shard_size=4, overwrite=True)
    assert pq.read_table(again[0]).column("image_0_uid").to_pylist() == [
        r["image_0_uid"] for r in t
    ]
    with pytest.raises(FileExistsError):
        write_pickapic(rows(1), tmp_path / "pp", "train")


def test_round_trip_and_position_is_randomised(tmp_path) -> None:
    write_pickapic(rows(12), tmp_path / "pp", "train", shard_size=5)
    first_wins = [
        r["label_0"] == 1.0
        for r in load_dataset(
            "parquet", data_dir=str(tmp_path / "pp"), split="train", cache_dir=str(tmp_path / "c")
        )
    ]
    assert 0 < sum(first_wins) < 12  # no "image 0 always wins" bias
    ds, report = load(tmp_path)
    assert (report.total, report.kept, report.skipped) == (12, 12, {})
    assert ds["prompt"] == [r["prompt"] for r in rows(12)]
    assert ds["user_id"] == [str(100 + i) for i in range(12)]
    assert ds["label"] == [1.0] * 12 and set(ds["source"]) == {"pickapic:train"}
    for i, pair in enumerate(ds):
        original = np.asarray(rows(12)[i]["chosen"], dtype=np.float32)
        assert np.abs(np.asarray(pair["chosen"], dtype=np.float32) - original).max() < 8
        assert abs(brightness(pair["rejected"]) - 0.1 * 255) < 3


@pytest.mark.parametrize("policy", ["drop", "half", "random"])
def test_tie_policies(tmp_path, policy: str) -> None:
    data = rows(4) + rows(6, label=0.5)
    write_pickapic(data, tmp_path / "pp", "train")
    ds, report = load(tmp_path, tie_policy=policy, seed=3)
    assert report.total == 10
    if policy == "drop":
        assert report.skipped == {"tie": 6} and len(ds) == 4
        assert report.examples["tie"] == [4, 5, 6, 7, 8]  # at most 5 examples
    elif policy == "half":
        assert len(ds) == 10 and ds["label"] == [1.0] * 4 + [0.5] * 6
    else:
        assert len(ds) == 10 and ds["label"] == [1.0] * 10
        winners = [brightness(p["chosen"]) > 100 for p in ds][4:]
        assert 0 < sum(winners) < 6  # the coin picks both sides...
        again, _ = load(tmp_path, tie_policy=policy, seed=3)
        assert [brightness(p["chosen"]) > 100 for p in again][4:] == winners  # ...reproducibly


def test_filters_and_undecodable_are_counted(tmp_path) -> None:
    data = rows(6)
    data[1]["has_label"] = False
    data[2]["are_different"] = False
    data[3]["chosen"] = b"\xff\xd8 not really a jpeg"
    data[4]["label"] = 1.7  # label_0/label_1 outside [0, 1]
    write_pickapic(data, tmp_path / "pp", "validation")
    ds, report = load(tmp_path, "validation")
    assert report.skipped == {
        "no_label": 1,
        "not_different": 1,
        "undecodable_image": 1,
        "bad_label": 1,
    }
    assert report.examples["undecodable_image"] == [3] and len(ds) == report.kept == 2
    assert "pickapic:validation: read 6, kept 2, skipped 4" in str(report)
    _, lenient = load(tmp_path, "validation", require_different=False)
    assert "not_different" not in lenient.skipped and lenient.kept == 3
    _, first = load(tmp_path, "validation", max_rows=2)
    assert (first.total, first.skipped) == (2, {"no_label": 1})


def test_split_must_exist_and_is_listed(tmp_path) -> None:
    write_pickapic(rows(2), tmp_path / "pp" / "data", "train")  # hub layout: data/
    write_pickapic(rows(2), tmp_path / "pp" / "data", "validation_unique")
    with pytest.raises(ValueError, match=r"available splits: \['train', 'validation_unique'\]"):
        load(tmp_path, "validation")
    with pytest.raises(TypeError):
        load_pickapic(tmp_path / "pp")  # type: ignore[call-arg]  # no default split
    ds, _ = load(tmp_path, "validation_unique")
    assert len(ds) == 2


def test_streaming_saved_dataset_and_prompts(tmp_path) -> None:
    write_pickapic(rows(7, label=0.5)[:2] + rows(5), tmp_path / "pp", "test")
    stream, report = load(tmp_path, "test", streaming=True)
    assert report.total == 0  # lazy until iterated
    pairs = list(stream)
    assert len(pairs) == 5 and isinstance(pairs[0]["chosen"], Image.Image)
    assert (report.total, report.skipped) == (7, {"tie": 2})

    raw = load_dataset("parquet", data_dir=str(tmp_path / "pp"), cache_dir=str(tmp_path / "c"))
    DatasetDict(raw).save_to_disk(str(tmp_path / "saved"))
    ds, rep = load_pickapic(tmp_path / "saved", "test")
    assert len(ds) == 5 and rep.skipped == {"tie": 2}

    prompts = pickapic_prompts(tmp_path / "pp", "test", cache_dir=tmp_path / "cache")
    assert prompts == ["prompt 0", "prompt 1", "prompt 2", "prompt 3", "prompt 4"]
