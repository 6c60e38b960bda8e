"""Review 9: `load_pickapic(streaming=True)`'s report describes one pass of the split. Iterated
twice (two epochs), it counted every row twice: read, kept, skipped, ties kept, the example rows
and the rows kept (`source_row`)."""

from __future__ import annotations

from datasets import load_dataset
from PIL import Image

from mmalign.data.pickapic import load_pickapic, write_pickapic


def _rows() -> list[dict]:
    red, blue = Image.new("RGB", (8, 8), (220, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 220))
    out = [{"prompt": f"p{i}", "chosen": red, "rejected": blue} for i in range(7)]
    out[2]["label"] = 0.5  # a tie: kept at label 0.5 under `half`, dropped under `drop`
    out[5]["has_label"] = False  # skipped: no_label
    return out


def _summary(report) -> tuple:
    return (
        report.total,
        report.kept,
        dict(report.skipped),
        report.ties_kept,
        {k: list(v) for k, v in report.examples.items()},
        list(report.kept_rows),
    )


def test_two_epochs_of_a_stream_count_one_pass(tmp_path):
    write_pickapic(_rows(), tmp_path / "pp", "train", shard_size=3)  # three shards
    for ties in ("half", "drop"):
        whole, once = load_pickapic(tmp_path / "pp", "train", tie_policy=ties)
        stream, report = load_pickapic(tmp_path / "pp", "train", tie_policy=ties, streaming=True)
        first = [row["prompt"] for row in stream]
        assert _summary(report) == _summary(once)  # one pass: what the whole split's load says
        second = [row["prompt"] for row in stream]  # a second epoch: the same rows again
        assert second == first == whole["prompt"]
        assert _summary(report) == _summary(once)
        assert report.pass_rows == 7  # the shards' footers, read before any row
    assert (once.total, once.kept, once.skipped) == (7, 5, {"no_label": 1, "tie": 1})


def test_shuffled_epochs_and_a_row_cap_count_one_pass(tmp_path):
    write_pickapic(_rows(), tmp_path / "pp", "train", shard_size=3)
    stream, report = load_pickapic(tmp_path / "pp", "train", tie_policy="half", streaming=True)
    shuffled = stream.shuffle(seed=0, buffer_size=4)
    for epoch in range(3):  # each epoch another shard order
        shuffled.set_epoch(epoch)
        assert len(list(shuffled)) == 6
        assert (report.total, report.kept, report.ties_kept) == (7, 6, 1)
        assert report.skipped == {"no_label": 1}

    capped, three = load_pickapic(tmp_path / "pp", "train", streaming=True, max_rows=3)
    for _ in range(2):
        assert len(list(capped)) == 2  # row 2 is a tie, dropped
        assert (three.total, three.kept, three.skipped) == (3, 2, {"tie": 1})
    assert three.pass_rows == 3


def test_a_saved_split_streamed_twice_counts_one_pass(tmp_path):
    write_pickapic(_rows(), tmp_path / "pp", "validation")
    ds = load_dataset(
        "parquet",
        data_files={"validation": str(tmp_path / "pp" / "*.parquet")},
        split="validation",
        cache_dir=str(tmp_path / "c"),
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    stream, report = load_pickapic(tmp_path / "saved", "validation", streaming=True)
    for _ in range(2):
        assert len(list(stream)) == 5
        assert (report.total, report.kept, report.skipped) == (7, 5, {"no_label": 1, "tie": 1})
    assert report.examples == {"tie": [2], "no_label": [5]}
