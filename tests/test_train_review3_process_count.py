"""A run resumes under the number of processes it was trained with.

The step's pairs are positions `step * global batch + ...` with global batch = batch_size x
processes x accumulation, and train.batch_size may not change on a resume: resumed under
another process count, a run went on at another global batch without an error: a 2-process run of
batch_size 2 resumed in 1 process from checkpoint 3 trained steps 4-6 on positions 6-11 of
the pair stream (pairs steps 2-3 had trained on) instead of 12-23, and under scale_lr at the
2-process learning rate.
"""

from __future__ import annotations

import json

import pytest
from test_train_review_resume import LinearRecipe, _config

from mmalign.train.loop import RUN_FILE, TrainingError, train


def test_a_resume_under_another_process_count_is_refused(tmp_path):
    out = tmp_path / "run"
    train(_config(out, max_steps=3), LinearRecipe)
    run = json.loads((out / RUN_FILE).read_text())
    assert run["processes"] == 1
    run["processes"] = 2  # as `accelerate launch --num_processes 2` writes it
    (out / RUN_FILE).write_text(json.dumps(run))
    with pytest.raises(
        TrainingError, match=r"2 processes \(global batch 4\); this run has 1 \(global batch 2\)"
    ):
        train(_config(out, resume_from="latest"), LinearRecipe)


def test_a_resume_under_the_same_process_count_goes_on(tmp_path):
    out = tmp_path / "run"
    train(_config(out, max_steps=3), LinearRecipe)
    assert train(_config(out, resume_from="latest"), LinearRecipe).steps == 6
