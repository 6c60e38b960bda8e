"""The displacement alarm's reference-free baseline (displacement_start.json) records its format
version. One written before label-0 pairs were read preferred side first (no version) is not
compared against: a resumed run re-measures from its first batch and says so."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from mmalign.train.displacement import (
    BASELINE_VERSION,
    DisplacementAlarm,
    DisplacementBaselineWarning,
    DisplacementWarning,
)

ROOT = Path(__file__).resolve().parents[1]
OLD = {"score_chosen": -50.0, "score_rejected": -60.0}  # the format before versions


def test_an_old_baseline_is_not_compared_against(tmp_path):
    start = tmp_path / "displacement_start.json"
    start.write_text(json.dumps(OLD) + "\n")
    alarm = DisplacementAlarm(1.0, start_file=start, resume=True)
    assert alarm.start is None  # the loop re-measures at the resumed step
    with pytest.warns(DisplacementBaselineWarning, match=r"before label-0 .* since step 30"):
        alarm.set_start(-10.0, -12.0, step=30)
    saved = json.loads(start.read_text())
    assert saved == {"version": BASELINE_VERSION, "step": 30, "score_chosen": -10.0,
                     "score_rejected": -12.0}  # fmt: skip
    with pytest.warns(DisplacementWarning, match=r"fell by 2 nats since step 30"):
        out = alarm.update(33, {"main/score_chosen": -12.0, "main/score_rejected": -20.0})
    assert out["displacement/chosen"] == -2.0  # against the new baseline, not the old -50


def test_a_current_baseline_is_read_back_quietly(tmp_path):
    start = tmp_path / "displacement_start.json"
    DisplacementAlarm(1.0, start_file=start).set_start(-10.0, -12.0)
    assert json.loads(start.read_text())["version"] == BASELINE_VERSION
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alarm = DisplacementAlarm(1.0, start_file=start, resume=True)
        assert alarm.start == (-10.0, -12.0) and alarm.start_step == 0
        out = alarm.update(3, {"main/score_chosen": -10.5, "main/score_rejected": -13.0})
    assert out["displacement/chosen"] == -0.5


def test_a_resumed_run_re_measures_from_an_old_baseline(tmp_path):
    from mmalign.cli import main

    out = tmp_path / "run"
    common = ["train", str(ROOT / "configs/toy/vlm_dpo.yaml"), f"output_dir={out}",
              "objective=[{loss: simpo}]", "data.toy.n=64", "train.batch_size=4",
              "train.log_every=3", "train.checkpoint_every=3", "validation.enabled=false",
              "train.trackers=[]"]  # fmt: skip
    assert main([*common, "train.max_steps=3"]) == 0
    (out / "displacement_start.json").write_text(json.dumps(OLD) + "\n")  # as an old run left it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*common, "train.max_steps=6", "train.resume_from=latest"]) == 0
    notes = [str(w.message) for w in caught if w.category is DisplacementBaselineWarning]
    assert len(notes) == 1 and "since step 3" in notes[0]
    start = json.loads((out / "displacement_start.json").read_text())
    assert start["version"] == BASELINE_VERSION and start["step"] == 3
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 6
    moved = last["main/score_chosen"] - start["score_chosen"]
    assert last["displacement/chosen"] == pytest.approx(moved, abs=1e-4)
    assert abs(last["displacement/chosen"]) < 20  # not measured from the old file's -50
