"""RichHF-18K records whose text features are not UTF-8: the skip reason names the feature,
as for every other bad feature (review: both came out as `bad_text`, naming neither key)."""

from __future__ import annotations

import pytest
from test_richhf import GOOD, _example_class, _record

from mmalign.config import InputError
from mmalign.data.richhf import read_records_richhf
from mmalign.data.tfrecord import write_records


def test_non_utf8_text_features_are_named(tmp_path):
    Example = _example_class()
    bad_name = Example.FromString(_record(Example, "aaa.png", GOOD))
    bad_name.features.feature["filename"].bytes_list.value[0] = b"\xe9\xe9.png"
    bad_labels = Example.FromString(_record(Example, "bbb.png", GOOD))
    bad_labels.features.feature["prompt_misalignment_label"].bytes_list.value[0] = b"1 \xff 0"
    records = [_record(Example, "ok.png", GOOD), bad_name.SerializeToString(),
               bad_labels.SerializeToString()]  # fmt: skip
    write_records(tmp_path / "dev.tfrecord", records)
    kept, report = read_records_richhf(tmp_path, "dev")
    assert [r.index for r in kept] == [0]
    assert report.skipped == {"bad_filename": 1, "bad_prompt_misalignment_label": 1}
    assert report.examples == {"bad_filename": [1], "bad_prompt_misalignment_label": [2]}
    with pytest.raises(InputError, match=r"dev.tfrecord: row 1: bad_filename"):
        read_records_richhf(tmp_path, "dev", strict=True)
