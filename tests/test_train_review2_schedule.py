"""The LR schedule across a resume, and the schedule settings, on a one-linear-layer recipe.

- A run resumed with a longer train.max_steps (allowed) made its first step at the rate the
  optimizer had saved: the old schedule's, 0 at the end of a linear or cosine decay. That step
  did not move the weights, and logged lr 0, while the steps after it followed the new schedule.
- lr_scheduler: constant ignored train.warmup_steps without a word (diffusers' `constant` has
  no warmup); a negative warmup_steps was taken too.
"""

from __future__ import annotations

import pytest
from safetensors.torch import load_file
from test_train_review_resume import LinearRecipe, _config, _interrupted_copy, _metrics

from mmalign.config import ConfigError, from_dict
from mmalign.train import Config
from mmalign.train.loop import train

DECAY = {"lr_scheduler": "linear", "warmup_steps": 2, "batch_size": 2}


def _weights(out, step):
    return load_file(str(out / "checkpoints" / f"checkpoint-{step}" / "trainable.safetensors"))


@pytest.mark.parametrize("scheduler", ["linear", "cosine"])
def test_a_longer_resumed_run_steps_at_the_new_schedule(tmp_path, scheduler):
    settings = {**DECAY, "lr_scheduler": scheduler, "checkpoint_every": 1,
                "checkpoint_total_limit": None}  # fmt: skip
    run, ten = tmp_path / "run", tmp_path / "ten"
    train(_config(run, **settings), LinearRecipe)  # 6 steps: the decay ends at 0
    train(_config(run, resume_from="latest", **{**settings, "max_steps": 10}), LinearRecipe)
    train(_config(ten, **{**settings, "max_steps": 10}), LinearRecipe)
    resumed, unbroken = _metrics(run), _metrics(ten)
    for step in (7, 8, 9, 10):  # the 10-step schedule's rates, from the first resumed step on
        assert resumed[step]["lr"] == pytest.approx(unbroken[step]["lr"], rel=1e-12), step
    assert resumed[7]["lr"] > 0
    before, after = _weights(run, 6), _weights(run, 7)
    assert any(not before[k].equal(after[k]) for k in before), "step 7 did not update"


def test_a_resume_under_accumulation_and_warmup_equals_an_unbroken_run(tmp_path):
    settings = {**DECAY, "batch_size": 1, "gradient_accumulation_steps": 2}
    full, part = tmp_path / "full", tmp_path / "part"
    train(_config(full, **settings), LinearRecipe)
    _interrupted_copy(full, part, 3)  # inside the decay, after the warmup's 2 steps
    train(_config(part, resume_from="latest", **settings), LinearRecipe)
    a, b = _metrics(full), _metrics(part)
    assert sorted(b) == [4, 5, 6]
    for step in (4, 5, 6):
        for key in ("loss", "lr", "grad_norm"):
            assert a[step][key] == pytest.approx(b[step][key], abs=1e-7), (step, key)
    final_a, final_b = _weights(full, 6), _weights(part, 6)
    assert all(final_a[k].equal(final_b[k]) for k in final_a)


def _train_section(**train) -> Config:
    raw = {"model": {"name_or_path": "toy:sd"}, "data": {"path": "toy:style", "split": "train"},
           "train": train}  # fmt: skip
    return from_dict(Config, raw)


def test_warmup_with_a_constant_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train\.warmup_steps: 5 is unused by .*constant"):
        _train_section(lr_scheduler="constant", warmup_steps=5)
    with pytest.raises(ConfigError, match=r"train\.warmup_steps must be >= 0"):
        _train_section(warmup_steps=-1)
    for scheduler in ("constant_with_warmup", "linear", "cosine"):
        assert _train_section(lr_scheduler=scheduler, warmup_steps=5).train.warmup_steps == 5
    assert _train_section(lr_scheduler="constant", warmup_steps=0).train.warmup_steps == 0
