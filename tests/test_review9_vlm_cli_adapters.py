"""The same adapter given twice, and what `eval vlm` records (review 9, newcomer walkthrough).

`mmalign eval vlm RUN --adapter RUN/adapter` applied the run's adapter twice (`load._sources`
listed it as MODEL's and as the one given on top): benign accuracy 69% where RUN alone gave
85%, with no word. docs/vlm.md says adapters are matched by their fingerprints: one MODEL
already holds (its own, a copy, or one merged into a `merged/` MODEL) is applied once, with a
note. The results JSON of `eval vlm` now records what was evaluated (model, adapter chain,
device, dtype)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_review6_vlm_adapter_start import sft  # noqa: F401  (a random-B adapter on toy-vlm)

from mmalign.cli import main
from mmalign.vlm.adapter_chain import fingerprint, write_merged_record
from mmalign.vlm.load import _sources, load_vlm, merge_adapter


@pytest.fixture(scope="module")
def adapter(sft) -> Path:  # noqa: F811 (the imported fixture, by name)
    """A LoRA adapter on toy-vlm with a random B (not the identity): review 6's `sft`."""
    return Path(sft)


def test_the_adapter_model_holds_given_again_is_applied_once(adapter, capsys):
    source, once = _sources(adapter, None)
    assert once == (str(adapter),)
    assert _sources(adapter, adapter) == (source, once)
    err = capsys.readouterr().err
    assert "applied once" in err and err.count("mmalign: note:") == 1


def test_a_copy_is_the_same_adapter_by_fingerprint(adapter, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(adapter, copy)
    assert fingerprint(copy) == fingerprint(adapter)
    assert _sources(adapter, copy)[1] == (str(adapter),)
    assert _sources(copy, adapter)[1] == (str(copy),)
    assert "applied once" in capsys.readouterr().err


def test_an_adapter_merged_into_model_is_not_applied_again(adapter, tmp_path):
    vlm = load_vlm(adapter)
    assert merge_adapter(vlm)
    merged = tmp_path / "merged"
    vlm.model.save_pretrained(merged)
    write_merged_record(merged, vlm.source, [adapter])
    assert _sources(merged, adapter) == (str(merged), ())


def test_weights_given_twice_are_the_weights_given_once(adapter):
    once = load_vlm(adapter)
    twice = load_vlm(adapter, adapter=adapter)
    assert twice.adapters == once.adapters
    a, b = once.model.state_dict(), twice.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_eval_vlm_records_what_it_evaluated(adapter, tmp_path, capsys):
    out = tmp_path / "eval.json"
    argv = ["eval", "vlm", str(adapter), "--adapter", str(adapter), "--task", "safety",
            "--n", "4", "--out", str(out), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    evaluated = json.loads(out.read_text())["evaluated"]
    assert evaluated["model"] == str(adapter) and evaluated["adapter"] == str(adapter)
    assert evaluated["adapters"] == [
        {"path": str(adapter.resolve()), "fingerprint": fingerprint(adapter)}
    ]
    assert evaluated["device"] == "cpu" and evaluated["dtype"] == "float32"
    assert Path(evaluated["base"], "config.json").is_file()
