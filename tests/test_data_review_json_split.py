"""A JSON file holding named splits gives the split asked for, or an error naming the splits
it has: never another split in its place (training on `test` rows because the file had only
those, or evaluating on `train` rows)."""

from __future__ import annotations

import json

import pytest

from mmalign.data.vlm_rows import read_records
from mmalign.vlm.data import open_vlm_pairs

ROW = {"prompt": "q", "chosen": "a", "rejected": "b"}


def test_a_missing_split_is_an_error_not_another_split(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps({"test": [{**ROW, "prompt": "held-out row"}]}))
    with pytest.raises(ValueError, match=r"has splits \['test'\]; asked for split 'train'"):
        open_vlm_pairs(path, "train")
    ds, _ = open_vlm_pairs(path, "test")
    assert ds["prompt"] == ["held-out row"]


def test_generic_wrappers_and_no_split_still_read(tmp_path):
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"data": [ROW], "version": "1.0"}))
    assert read_records(path, split="train") == [ROW]  # `data` names no split
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"train": [ROW], "test": [{**ROW, "prompt": "t"}]}))
    assert read_records(both, split="test")[0]["prompt"] == "t"
    only = tmp_path / "only.json"
    only.write_text(json.dumps({"train": [ROW]}))
    assert read_records(only) == [ROW]  # no split asked: the one list there is


def test_one_record_and_a_record_with_a_list_field(tmp_path):
    """A `.json` file holding one JSONL record whose only list is its own `images` field: one
    record, not the image list read as records ("record 0 is a str"). The same object inside a
    wrapper stays a record, its `images` list never taken for the records."""
    row = {**ROW, "images": ["a.png"]}
    one = tmp_path / "one.json"
    one.write_text(json.dumps(row) + "\n")
    assert read_records(one) == [row]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": [row], "images": ["x.png", "y.png"]}))
    assert read_records(wrapped) == [row]
