"""A run resumed from an earlier checkpoint than its newest is refused while later ones exist.

`metrics.jsonl` drops the lines after the checkpoint a run resumes from, but the checkpoints
after it stayed: resumed from checkpoint-3 of a 6-step run with max_steps 4 and
checkpoint_total_limit 1, the loop wrote checkpoint-4, then pruned it as older than the old
run's checkpoint-6, the only one left; `resume_from=latest` then continued the old run's
weights under the new run's metrics. The later checkpoints are another continuation's weights:
the resume is refused, naming them, and nothing is deleted or rewritten.
"""

from __future__ import annotations

import shutil

import pytest
from test_train_review_resume import LinearRecipe, _config

from mmalign.train.checkpoint import checkpoint_state, list_checkpoints
from mmalign.train.loop import TrainingError, train


def test_resuming_an_earlier_checkpoint_is_refused_while_later_ones_exist(tmp_path):
    out = tmp_path / "run"
    train(_config(out, checkpoint_total_limit=2), LinearRecipe)
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-3", "checkpoint-6"]
    metrics = (out / "metrics.jsonl").read_text()
    earlier = out / "checkpoints" / "checkpoint-3"
    with pytest.raises(TrainingError, match="checkpoint-6"):
        train(_config(out, max_steps=4, checkpoint_total_limit=1, resume_from=str(earlier)),
              LinearRecipe)  # fmt: skip
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-3", "checkpoint-6"]
    assert (out / "metrics.jsonl").read_text() == metrics  # nothing rewritten
    shutil.rmtree(out / "checkpoints" / "checkpoint-6")  # as the message says
    train(_config(out, max_steps=4, checkpoint_total_limit=1, resume_from=str(earlier)),
          LinearRecipe)  # fmt: skip
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-4"]
    assert checkpoint_state(list_checkpoints(out)[-1])["step"] == 4


def test_resuming_the_newest_checkpoint_keeps_the_others(tmp_path):
    out = tmp_path / "run"
    train(_config(out, checkpoint_total_limit=None), LinearRecipe)
    train(_config(out, max_steps=9, checkpoint_total_limit=None, resume_from="latest"),
          LinearRecipe)  # fmt: skip
    assert [p.name for p in list_checkpoints(out)] == [
        "checkpoint-3", "checkpoint-6", "checkpoint-9"
    ]  # fmt: skip
