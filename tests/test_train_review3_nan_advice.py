"""The advice of the NaN-loss error can be followed.

It said "Lower the learning rate or beta, then resume with train.resume_from=latest", but a
resumed run may not change either (train/resume.py RESUMABLE): the resume it advised was
refused as "trained with another recipe", and a resume without the change meets the same NaN
(every draw derives from the step).
"""

from __future__ import annotations

import pytest
import torch
from test_train_review_resume import LinearRecipe, _config

from mmalign.losses import PairScores
from mmalign.train.loop import TrainingError, train


class NaNAtStep5(LinearRecipe):
    calls = 0

    def score(self, model, batch, seeds, *, with_reference):
        NaNAtStep5.calls += 1
        scores = super().score(model, batch, seeds, with_reference=with_reference)
        if NaNAtStep5.calls == 5:
            s = scores["main"]
            return {"main": PairScores(s.chosen * torch.nan, s.rejected)}
        return scores


def test_the_nan_advice_names_a_run_that_is_allowed(tmp_path):
    out = tmp_path / "run"
    NaNAtStep5.calls = 0
    with pytest.raises(TrainingError, match="step 5: the loss is not finite") as err:
        train(_config(out), NaNAtStep5)
    message = str(err.value)
    assert "checkpoint-3" in message
    # the old advice: a resume with a lower learning rate, which the loop refuses
    lower = _config(out, learning_rate=1e-3, resume_from="latest")
    with pytest.raises(TrainingError, match="another recipe"):
        train(lower, LinearRecipe)
    assert "resume_from=latest" not in message
    assert "another output_dir" in message
    # what it advises now: the lower rate from the start, in another output_dir
    result = train(_config(tmp_path / "again", learning_rate=1e-3), LinearRecipe)
    assert result.steps == 6
