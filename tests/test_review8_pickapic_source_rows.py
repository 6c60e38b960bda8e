"""Review 8: the Pick-a-Pic reader records the row of the split each kept pair came from.

`load_pickapic` counted a kept row with `report.keep()` and no index, so
`report.source_row(i)` was `i`, the position among the kept pairs: once earlier rows were
skipped (a missing caption, a tie dropped) every later message naming a kept row named
another row of the parquet. Kept and skipped rows are now numbered alike: by their index in
the split as read, counted on across its shards in file-name order.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import IterableDataset
from PIL import Image

from mmalign.data.pickapic import load_pickapic, write_pickapic


def _split(folder: Path) -> list[str]:
    """Five rows in three shards of two: row 0 has no caption, row 2 is a tie, so the pairs
    kept under `drop` are the split's rows 1, 3 and 4 (the second and third shards')."""
    bright, dark = Image.new("RGB", (8, 8), (220, 60, 30)), Image.new("RGB", (8, 8), (20, 20, 20))
    rows = [{"prompt": f"p{i}", "chosen": bright, "rejected": dark, "label": 1.0}
            for i in range(5)]  # fmt: skip
    rows[0]["prompt"], rows[2]["label"] = "", 0.5
    paths = write_pickapic(rows, folder, "train", shard_size=2)
    assert len(paths) == 3
    return [r["prompt"] for r in rows]


@pytest.mark.parametrize("streaming", [False, True])
def test_kept_rows_are_named_by_their_row_in_the_split(tmp_path: Path, streaming: bool) -> None:
    prompts = _split(tmp_path / "pp")
    pairs, report = load_pickapic(tmp_path / "pp", "train", streaming=streaming,
                                  cache_dir=tmp_path / "c")  # fmt: skip
    if streaming:  # lazy: the report fills in as the pairs are read
        assert isinstance(pairs, IterableDataset)
        kept = [row["prompt"] for row in pairs]
    else:
        kept = list(pairs["prompt"])
    assert kept == ["p1", "p3", "p4"]
    assert report.examples == {"missing_caption": [0], "tie": [2]}
    sources = [report.source_row(i) for i in range(len(kept))]
    assert sources == [1, 3, 4]  # was [0, 1, 2]
    assert [prompts[s] for s in sources] == kept


def test_ties_kept_and_max_rows_keep_the_numbering(tmp_path: Path) -> None:
    _split(tmp_path / "pp")
    pairs, report = load_pickapic(tmp_path / "pp", "train", tie_policy="half", max_rows=4,
                                  cache_dir=tmp_path / "c")  # fmt: skip
    assert list(pairs["prompt"]) == ["p1", "p2", "p3"]
    assert [report.source_row(i) for i in range(len(pairs))] == [1, 2, 3]
