"""`mmalign eval dense`'s `--split`: "test" where the data has splits, the data whole where not.

`--split` defaulted to "test" for every data set. A dense dataset saved with
`Dataset.save_to_disk` (no splits: it records none, which `datasets` reads as "train") was then
refused with a message about `data.split` (a training config key), so the plain
`mmalign eval dense --model M --data FOLDER` failed until one passed `--split train`; a
DatasetDict without "test" said only "has splits ['train', 'dev']; the split is 'test'", with
no hint for a mistyped split; toy data ignored `--split` and the report still said "test".
Now (`eval.dense.resolve_split`): an unsplit folder is evaluated whole and the report says so
(`split` null, `read` in words); a DatasetDict (or split-named saved folders, listed by the
Pick-a-Pic reader's `saved_splits`) is read at `--split`, "test" by default, and one lacking
it is an error naming the split, the splits it has and the closest one; toy data refuses a
`--split` it would ignore.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, DatasetDict
from PIL import Image

from mmalign.cli import main
from mmalign.config import InputError
from mmalign.data.dense import DENSE_SCORES
from mmalign.eval.dense import resolve_split


def _dense(n: int, split: str | None = None) -> Dataset:
    """`n` toy-readable rows (toy:flaws scores them) of 16 px, saved with `split` recorded."""
    rows = {
        "prompt": ["a red circle on a blue background"] * n,
        "image": [Image.new("RGB", (16, 16), (200, 0, 0)) for _ in range(n)],
        "heatmaps": [np.zeros((2, 16, 16), np.float32).tolist() for _ in range(n)],
        **{k: [0.1 * (i + 1) for i in range(n)] for k in DENSE_SCORES},
    }
    plain = Dataset.from_dict(rows)
    return Dataset.from_dict(plain.to_dict(), features=plain.features, split=split)


def _eval(data: Path | str, out: Path, *extra: str) -> int:
    args = ["eval", "dense", "--model", "toy:flaws", "--data", str(data), "--out", str(out),
            "--sample", "1", "--device", "cpu", *extra]  # fmt: skip
    return main(args)


def _result(out: Path) -> dict:
    return json.loads((out / "dense_eval.json").read_text())


def test_a_dataset_saved_without_splits_is_evaluated_whole_and_the_report_says_so(tmp_path, capsys):
    _dense(3).save_to_disk(str(tmp_path / "one"))
    assert _eval(tmp_path / "one", tmp_path / "out") == 0
    result = _result(tmp_path / "out")
    assert result["rows"] == 3 and result["split"] is None
    assert result["read"] == "the whole folder: a dataset saved without splits"
    assert "(the whole folder: a dataset saved without splits): 3 images" in capsys.readouterr().out
    page = (tmp_path / "out" / "dense_report.html").read_text()
    assert "the whole folder: a dataset saved without splits" in page


def test_a_dataset_saved_as_one_split_is_that_split(tmp_path):
    _dense(2, "dev").save_to_disk(str(tmp_path / "dev"))
    assert _eval(tmp_path / "dev", tmp_path / "out") == 0
    assert (_result(tmp_path / "out")["split"], _result(tmp_path / "out")["rows"]) == ("dev", 2)
    # a split asked for is still checked against the one the folder holds
    assert _eval(tmp_path / "dev", tmp_path / "out2", "--split", "test") == 2


def test_split_data_is_read_at_test_by_default(tmp_path):
    DatasetDict({"train": _dense(3), "test": _dense(2)}).save_to_disk(str(tmp_path / "dd"))
    assert _eval(tmp_path / "dd", tmp_path / "out") == 0
    assert (_result(tmp_path / "out")["split"], _result(tmp_path / "out")["rows"]) == ("test", 2)
    assert _eval(tmp_path / "dd", tmp_path / "out", "--split", "train") == 0
    assert (_result(tmp_path / "out")["split"], _result(tmp_path / "out")["rows"]) == ("train", 3)
    # split-named save_to_disk folders, as the Pick-a-Pic reader lists them
    _dense(3).save_to_disk(str(tmp_path / "folders" / "train"))
    _dense(4).save_to_disk(str(tmp_path / "folders" / "test"))
    assert _eval(tmp_path / "folders", tmp_path / "out") == 0
    assert (_result(tmp_path / "out")["split"], _result(tmp_path / "out")["rows"]) == ("test", 4)


def test_a_missing_split_names_itself_the_splits_there_and_the_closest(tmp_path, capsys):
    DatasetDict({"train": _dense(3), "dev": _dense(2)}).save_to_disk(str(tmp_path / "dd"))
    assert _eval(tmp_path / "dd", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "no split 'test' (--split's default): its splits are train, dev." in err
    assert "--split" in err and "did you mean" not in err
    assert _eval(tmp_path / "dd", tmp_path / "out", "--split", "dve") == 2
    assert (
        "no split 'dve': its splits are train, dev; did you mean 'dev'?" in capsys.readouterr().err
    )
    assert _eval(tmp_path / "dd", tmp_path / "out", "--split", "dev") == 0
    assert _result(tmp_path / "out")["rows"] == 2


def test_toy_data_refuses_a_split_it_would_ignore(tmp_path, capsys):
    assert _eval("toy:flaws", tmp_path / "out", "--split", "test") == 2
    assert "toy data is built, not split" in capsys.readouterr().err
    assert resolve_split("toy:flaws:heldout", None).split is None


def test_richhf_folders_default_to_test_and_a_file_is_read_whole(tmp_path):
    (tmp_path / "richhf").mkdir()
    for name in ("train", "dev", "test"):
        (tmp_path / "richhf" / f"{name}.tfrecord").write_bytes(b"")
    assert resolve_split(str(tmp_path / "richhf"), None).open_as == "test"
    assert resolve_split(str(tmp_path / "richhf"), "dev").open_as == "dev"
    file = str(tmp_path / "richhf" / "dev.tfrecord")
    assert resolve_split(file, None).split is None
    assert resolve_split(file, "dev").split == "dev"
    with pytest.raises(InputError, match="one file, read whole"):
        resolve_split(file, "test")
